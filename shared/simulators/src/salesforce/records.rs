//! sObject records: a body checked against the object (fields, types, references, restricted
//! picklists, required fields, stage-derived fields), create, read (`fields=`), update with
//! `If-Unmodified-Since`, upsert and read by external id, and delete into the recycle bin. Every
//! committed change to a record goes through `create`, `update` or `delete` here, which stamp
//! `SystemModstamp` and the record's write log.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::response::{Out, SfError};
use super::schema::{self, Object, Ty};
use super::{INTEGRATION_USER_ID, Org, Record, WriteLog, sf_time, soql};

impl Org {
    /// Validates and applies `body` onto `rec`.
    fn apply(&self, def: &Object, rec: &mut Record, body: &Map<String, Value>, as_user: bool) -> Result<(), SfError> {
        for (k, v) in body {
            if k == "attributes" {
                continue;
            }
            let field = def.field(k).ok_or_else(|| {
                SfError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD",
                    &format!("No such column '{k}' on sobject of type {}", def.name),
                )
                .field(k)
            })?;
            if field.name == "Id" {
                return Err(SfError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD",
                    "The Id field should not be specified in the sobject data.",
                )
                .field("Id"));
            }
            if !field.writable && !as_user {
                return Err(SfError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    &format!("Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.", field.name),
                )
                .field(&field.name));
            }
            if !field.ty.accepts(v) {
                return Err(SfError::new(
                    StatusCode::BAD_REQUEST,
                    "JSON_PARSER_ERROR",
                    &format!("Cannot deserialize instance of {:?} from {v} for field {}", field.ty, field.name),
                )
                .field(&field.name));
            }
            if let (Ty::Reference(target), Value::String(id)) = (field.ty, v) {
                let ok = match self.any_record(id) {
                    Some((obj, _)) => obj == target,
                    None => false,
                };
                if !ok {
                    return Err(SfError::new(
                        StatusCode::BAD_REQUEST,
                        "INVALID_CROSS_REFERENCE_KEY",
                        &format!("invalid cross reference id: {}", field.name),
                    )
                    .field(&field.name));
                }
            }
            if field.name == "CurrencyIsoCode" && !v.as_str().is_some_and(|c| schema::CURRENCIES.contains(&c)) {
                return Err(SfError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    &format!(
                        "Currency ISO Code: bad value for restricted picklist field: {}",
                        v.as_str().unwrap_or("null")
                    ),
                )
                .field("CurrencyIsoCode"));
            }
            if def.name == "Opportunity"
                && field.name == "StageName"
                && !schema::STAGES.iter().any(|s| Some(s.0) == v.as_str())
            {
                return Err(SfError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    &format!("Stage: bad value for restricted picklist field: {}", v.as_str().unwrap_or("null")),
                )
                .field("StageName"));
            }
            if def.name == "Lead"
                && field.name == "Status"
                && !schema::LEAD_STATUSES.iter().any(|s| Some(*s) == v.as_str())
            {
                return Err(SfError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    &format!("Lead Status: bad value for restricted picklist field: {}", v.as_str().unwrap_or("null")),
                )
                .field("Status"));
            }
            rec.insert(field.name.clone(), v.clone());
        }
        let missing: Vec<String> = def
            .fields
            .iter()
            .filter(|f| {
                f.required
                    && rec.get(&f.name).is_none_or(|v| v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty()))
            })
            .map(|f| f.name.clone())
            .collect();
        if !missing.is_empty() {
            let mut e = SfError::new(
                StatusCode::BAD_REQUEST,
                "REQUIRED_FIELD_MISSING",
                &format!("Required fields are missing: [{}]", missing.join(", ")),
            );
            e.fields = missing;
            return Err(e);
        }
        if def.name == "Opportunity" {
            let stage =
                rec.get("StageName").and_then(Value::as_str).and_then(|s| schema::STAGES.iter().find(|x| x.0 == s));
            if let Some((_, closed, won, prob, forecast)) = stage {
                let stage_changed = body.keys().any(|k| k.eq_ignore_ascii_case("StageName"));
                rec.insert("IsClosed".into(), json!(closed));
                rec.insert("IsWon".into(), json!(won));
                rec.insert("ForecastCategoryName".into(), json!(forecast));
                if stage_changed && !body.keys().any(|k| k.eq_ignore_ascii_case("Probability")) {
                    rec.insert("Probability".into(), json!(prob));
                }
            }
        }
        if def.name == "Lead" {
            rec.entry("IsConverted").or_insert(json!(false));
        }
        Ok(())
    }

    fn stamp(&mut self, rec: &mut Record, user: &str) {
        let t = sf_time(self.modstamp());
        rec.insert("LastModifiedDate".into(), json!(t));
        rec.insert("SystemModstamp".into(), json!(t));
        rec.insert("LastModifiedById".into(), json!(user));
    }

    pub(super) fn create(
        &mut self,
        object: &str,
        body: &Map<String, Value>,
        user: &str,
        as_user: bool,
    ) -> Result<String, SfError> {
        let def = self.object(object)?.def.clone();
        if !def.writable {
            return Err(SfError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_TYPE_FOR_OPERATION",
                &format!("entity type {} does not support insert", def.name),
            ));
        }
        let mut rec = Record::new();
        if def.name == "Microsoft_Solution__c" && !body.keys().any(|k| k.eq_ignore_ascii_case("Name")) {
            rec.insert("Name".into(), json!(format!("SOL-{:05}", self.seq + 1)));
        }
        self.apply(&def, &mut rec, body, as_user)?;
        for f in def.fields.iter().filter(|f| f.external_id) {
            if let Some(v) = rec.get(&f.name).filter(|v| !v.is_null()) {
                let dup = self.object(&def.name)?.rows.values().any(|(_, r)| r.get(&f.name) == Some(v));
                if dup {
                    return Err(SfError::new(
                        StatusCode::BAD_REQUEST,
                        "DUPLICATE_VALUE",
                        &format!("duplicate value found: {} duplicates value on record with id", f.name),
                    )
                    .field(&f.name));
                }
            }
        }
        let id = self.new_id(&def.name);
        let now = sf_time(self.now());
        rec.insert("Id".into(), json!(id));
        rec.insert("IsDeleted".into(), json!(false));
        rec.insert("CreatedDate".into(), json!(now));
        rec.insert("CreatedById".into(), json!(user));
        rec.entry("OwnerId").or_insert(json!(user));
        self.stamp(&mut rec, user);
        self.writes.insert(id.clone(), WriteLog::new(self.now(), user));
        let seq = self.seq;
        if let Some(t) = self.tables.get_mut(&def.name) {
            t.rows.insert(id.clone(), (seq, rec));
        }
        Ok(id)
    }

    pub(super) fn update(
        &mut self,
        object: &str,
        id: &str,
        body: &Map<String, Value>,
        user: &str,
        as_user: bool,
    ) -> Result<(), SfError> {
        let def = self.object(object)?.def.clone();
        let (_, mut rec) = self.object(object)?.rows.get(id).cloned().ok_or_else(SfError::not_found)?;
        self.apply(&def, &mut rec, body, as_user)?;
        self.stamp(&mut rec, user);
        let at = self.now();
        self.writes.entry(id.to_owned()).or_insert_with(|| WriteLog::new(at, user)).push(at, user);
        if let Some((_, r)) = self.tables.get_mut(&def.name).and_then(|t| t.rows.get_mut(id)) {
            *r = rec;
        }
        Ok(())
    }

    pub(super) fn render(&self, object: &str, id: &str, fields: Option<&[String]>, version: &str) -> Option<Value> {
        let t = self.object(object).ok()?;
        let rec = t.rows.get(id).map(|(_, r)| r).or_else(|| t.recycle.get(id).map(|(_, r, _)| r))?;
        let mut out = Map::new();
        out.insert(
            "attributes".into(),
            json!({"type": t.def.name, "url": format!("/services/data/{version}/sobjects/{}/{id}", t.def.name)}),
        );
        match fields {
            Some(fs) => {
                for f in fs {
                    let name = t.def.field(f).map(|x| x.name.clone()).unwrap_or_else(|| f.clone());
                    out.insert(name.clone(), rec.get(&name).cloned().unwrap_or(Value::Null));
                }
            }
            None => {
                for field in &t.def.fields {
                    out.insert(field.name.clone(), rec.get(&field.name).cloned().unwrap_or(Value::Null));
                }
            }
        }
        Some(Value::Object(out))
    }

    pub(super) fn check_fields(def: &Object, fields: &[String]) -> Result<Vec<String>, SfError> {
        fields
            .iter()
            .map(|f| {
                def.field(f).map(|x| x.name.clone()).ok_or_else(|| {
                    SfError::new(
                        StatusCode::BAD_REQUEST,
                        "INVALID_FIELD",
                        &format!("\n{f}\n^\nERROR at Row:1:Column:1\nNo such column '{f}' on entity '{}'.", def.name),
                    )
                })
            })
            .collect()
    }

    pub(super) fn get(
        &self,
        object: &str,
        id: &str,
        query: &BTreeMap<String, String>,
        version: &str,
    ) -> Result<Out, SfError> {
        let def = self.object(object)?.def.clone();
        let id = self.find_id(object, id).ok_or_else(SfError::not_found)?;
        let fields = match query.get("fields") {
            Some(f) => Some(Self::check_fields(&def, &f.split(',').map(|s| s.trim().to_owned()).collect::<Vec<_>>())?),
            None => None,
        };
        let v = self.render(object, &id, fields.as_deref(), version).ok_or_else(SfError::not_found)?;
        Ok(Out::json(StatusCode::OK, v))
    }

    pub(super) fn patch(
        &mut self,
        object: &str,
        id: &str,
        headers: &HeaderMap,
        body: Option<&Value>,
    ) -> Result<Out, SfError> {
        let id = self.find_id(object, id).ok_or_else(SfError::not_found)?;
        if let Some(since) = headers.get("if-unmodified-since").and_then(|v| v.to_str().ok()) {
            let since = DateTime::parse_from_rfc2822(since)
                .map_err(|_| {
                    SfError::new(
                        StatusCode::BAD_REQUEST,
                        "INVALID_HEADER_TYPE",
                        "If-Unmodified-Since is not a valid HTTP date",
                    )
                })?
                .with_timezone(&Utc);
            let modified = self.object(object)?.rows[&id]
                .1
                .get("LastModifiedDate")
                .and_then(Value::as_str)
                .and_then(soql::parse_sf_datetime);
            if modified.is_some_and(|m| m.timestamp() > since.timestamp()) {
                return Err(SfError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "PRECONDITION_FAILED",
                    "The record was modified after the If-Unmodified-Since date.",
                ));
            }
        }
        let body = body.and_then(Value::as_object).cloned().unwrap_or_default();
        self.update(object, &id, &body, INTEGRATION_USER_ID, false)?;
        Ok(Out::empty(StatusCode::NO_CONTENT))
    }

    pub(super) fn delete(&mut self, object: &str, id: &str) -> Result<Out, SfError> {
        let id = self.find_id(object, id).ok_or_else(SfError::not_found)?;
        let name = self.object(object)?.def.name.clone();
        let now = self.now();
        let stamp = sf_time(self.modstamp());
        if let Some(t) = self.tables.get_mut(&name)
            && let Some((seq, mut rec)) = t.rows.remove(&id)
        {
            rec.insert("IsDeleted".into(), json!(true));
            rec.insert("SystemModstamp".into(), json!(stamp));
            t.recycle.insert(id, (seq, rec, now));
        }
        Ok(Out::empty(StatusCode::NO_CONTENT))
    }

    pub(super) fn by_external_id(&self, object: &str, field: &str, value: &str) -> Result<String, SfError> {
        let t = self.object(object)?;
        let f = t.def.field(field).filter(|f| f.external_id || f.name == "Id").ok_or_else(|| {
            SfError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!("Provided external ID field does not exist or is not accessible: {field}"),
            )
        })?;
        let matches: Vec<&String> = t
            .rows
            .iter()
            .filter(|(_, (_, r))| r.get(&f.name).and_then(Value::as_str) == Some(value))
            .map(|(id, _)| id)
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(SfError::not_found()),
            _ => Err(SfError::new(
                StatusCode::MULTIPLE_CHOICES,
                "MULTIPLE_CHOICES",
                "More than one record matches the external id",
            )),
        }
    }

    pub(super) fn upsert(
        &mut self,
        object: &str,
        field: &str,
        value: &str,
        query: &BTreeMap<String, String>,
        body: Option<&Value>,
    ) -> Result<Out, SfError> {
        let def = self.object(object)?.def.clone();
        let f = def.field(field).filter(|f| f.external_id).cloned().ok_or_else(|| {
            SfError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!("Provided external ID field does not exist or is not accessible: {field}"),
            )
        })?;
        let mut body = body.and_then(Value::as_object).cloned().unwrap_or_default();
        if body.keys().any(|k| k.eq_ignore_ascii_case(&f.name) || k == "Id") {
            return Err(SfError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                &format!("The field {} cannot be specified in both the URL and the request body", f.name),
            )
            .field(&f.name));
        }
        match self.by_external_id(object, field, value) {
            Ok(id) => {
                self.update(object, &id, &body, INTEGRATION_USER_ID, false)?;
                Ok(Out::json(StatusCode::OK, json!({"id": id, "success": true, "errors": [], "created": false})))
            }
            Err(e) if e.status == StatusCode::NOT_FOUND => {
                if query.get("updateOnly").is_some_and(|v| v == "true") {
                    return Err(SfError::not_found());
                }
                body.insert(f.name.clone(), json!(value));
                let id = self.create(object, &body, INTEGRATION_USER_ID, false)?;
                Ok(Out::json(StatusCode::CREATED, json!({"id": id, "success": true, "errors": [], "created": true})))
            }
            Err(e) => Err(e),
        }
    }
}
