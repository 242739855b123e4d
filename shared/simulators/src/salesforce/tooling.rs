//! The Tooling API of the simulated org: `CustomField` and `CustomObject` created with `FullName` +
//! `Metadata`, read back by id or with `tooling/query`, deleted by id.
//!
//! Routes, under `/services/data/vXX.X/tooling/`: `query?q=` (SOQL over `CustomField` / `CustomObject`),
//! `sobjects/CustomField` and `sobjects/CustomObject` (POST), `sobjects/{type}/{id}` (GET, DELETE).
//!
//! The contract, from Salesforce's documentation:
//! - **[D]** Tooling API Reference, "CustomField" (API 28.0+): REST methods Query, GET, POST, PATCH;
//!   `DeveloperName` is the name without `__c` ("the internal name for the custom field CF__c is CF");
//!   `TableEnumOrId` is "the enum (for example, Account) or ID of the object this field is on";
//!   `NamespacePrefix`; `Metadata` (`CustomFieldMetadata`: label, type, length, visibleLines, defaultValue,
//!   externalId, unique, required, referenceTo, relationshipName, deleteConstraint, valueSet, …) and
//!   `FullName` — "Query this field only if the query result contains no more than one record.
//!   Otherwise, an error is returned."
//! - **[D]** Metadata API, "Metadata": `fullName` of a field names its object, e.g.
//!   `MyCustomObject__c.MyCustomField__c`; "The __c suffix must be appended to custom object names and
//!   custom field names".
//! - **[D]** Tooling API Reference, "CustomObject" (API 31.0+): `DeveloperName` ("the internal name for
//!   the custom object CO__c is CO"), `NamespacePrefix`, `Metadata`, `FullName`. Its page lists the REST
//!   methods Query and GET only; **[L]** creating one with `POST tooling/sobjects/CustomObject` and
//!   `{"FullName": "X__c", "Metadata": {label, pluralLabel, nameField {type, label}, deploymentStatus,
//!   sharingModel}}` is what public integrations do (e.g. the simstudioai/sim Salesforce tools, the
//!   `salesforcer` R package's tests use the same metadata with the Metadata API), and the simulator
//!   accepts it. DELETE of both is inferred **[I]** from the sObject REST convention.
//! - Creating metadata needs "Customize Application" (see `permissions.rs`); the new field is visible to
//!   no one until FLS grants it.
//!
//! Inferred **[I]**: the error codes of a duplicate (`DUPLICATE_DEVELOPER_NAME`) and of invalid metadata
//! (`FIELD_INTEGRITY_EXCEPTION` naming what is wrong), and the query answer's shape (`size`,
//! `totalSize`, `done`, `queryLocator`, `entityTypeName`, `records`).

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::permissions::valid_developer_name;
use super::response::{Out, SfError};
use super::schema::{Field, Object, Ty};
use super::{Org, Table, sf_time, soql};

/// Custom fields and objects created through the Tooling API.
#[derive(Debug, Default)]
pub(super) struct MetadataStore {
    fields: BTreeMap<String, CustomField>,
    objects: BTreeMap<String, CustomObject>,
    seq: u64,
    /// Whether the seller already shared the demo deal (`demo.rs`).
    pub(super) demo_shared: bool,
}

#[derive(Debug, Clone)]
struct CustomField {
    id: String,
    /// The object's API name.
    object: String,
    /// The field's API name (`X__c`).
    name: String,
    metadata: Value,
    created: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct CustomObject {
    id: String,
    name: String,
    metadata: Value,
    created: DateTime<Utc>,
    /// The next number of an auto-number name field.
    next_number: u64,
}

impl MetadataStore {
    fn next_id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}SIM{:09}AAA", self.seq)
    }
}

fn invalid(message: &str) -> SfError {
    SfError::new(StatusCode::BAD_REQUEST, "FIELD_INTEGRITY_EXCEPTION", message)
}

/// The simulator's field type for a `CustomFieldMetadata`, after checking what Salesforce requires of
/// that type.
fn field_type(full_name: &str, m: &Map<String, Value>) -> Result<Ty, SfError> {
    let ty = m.get("type").and_then(Value::as_str).ok_or_else(|| invalid(&format!("{full_name}: type is required")))?;
    let num = |k: &str| m.get(k).and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())));
    let has_values = || {
        m.get("valueSet")
            .and_then(|v| v.pointer("/valueSetDefinition/value"))
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    let need = |ok: bool, what: &str| {
        if ok { Ok(()) } else { Err(invalid(&format!("{full_name}: {ty} fields require {what}"))) }
    };
    Ok(match ty {
        "Checkbox" => {
            need(m.get("defaultValue").is_some_and(|v| !v.is_null()), "a defaultValue")?;
            Ty::Bool
        }
        "Text" => {
            need(num("length").is_some_and(|l| (1..=255).contains(&l)), "a length from 1 to 255")?;
            Ty::Text
        }
        "TextArea" | "Url" | "Email" | "Phone" => Ty::Text,
        "LongTextArea" | "Html" => {
            need(num("length").is_some_and(|l| (256..=131_072).contains(&l)), "a length from 256 to 131072")?;
            need(num("visibleLines").is_some(), "visibleLines")?;
            Ty::Text
        }
        "Picklist" => {
            need(has_values(), "a valueSet with values")?;
            Ty::Picklist
        }
        "MultiselectPicklist" => {
            need(has_values(), "a valueSet with values")?;
            need(num("visibleLines").is_some(), "visibleLines")?;
            Ty::MultiPicklist
        }
        "Number" | "Percent" => Ty::Double,
        "Currency" => Ty::Currency,
        "Date" => Ty::Date,
        "DateTime" => Ty::DateTime,
        "Lookup" | "MasterDetail" => {
            let to = m.get("referenceTo").and_then(Value::as_str).filter(|s| !s.is_empty());
            need(to.is_some(), "referenceTo")?;
            need(
                m.get("relationshipName").and_then(Value::as_str).is_some_and(valid_developer_name),
                "a relationshipName",
            )?;
            // Field types hold `&'static str` targets: a created lookup's target lives as long as the org.
            Ty::Reference(Box::leak(to.unwrap_or_default().to_owned().into_boxed_str()))
        }
        other => return Err(invalid(&format!("{full_name}: the simulator does not support field type {other}"))),
    })
}

/// A custom name (`X__c`) checked as Salesforce checks it.
fn custom_name(full: &str) -> Result<&str, SfError> {
    let base = full
        .strip_suffix("__c")
        .ok_or_else(|| invalid(&format!("{full}: the name of a custom field or object must end with __c")))?;
    if !valid_developer_name(base) || base.len() > 40 {
        return Err(invalid(&format!(
            "{full}: invalid API name (letters, digits and single underscores, starting with a letter, at most 40 characters)"
        )));
    }
    Ok(base)
}

impl Org {
    /// Dispatches `/services/data/vXX.X/tooling/{rest}`.
    pub(super) fn tooling(
        &mut self,
        method: &Method,
        segs: &[&str],
        query: &BTreeMap<String, String>,
        body: Option<&Value>,
        version: &str,
    ) -> Result<Out, SfError> {
        self.require("PermissionsViewSetup")?;
        match (method.clone(), segs) {
            (Method::GET, ["query"]) => self.tooling_query(query.get("q").map(String::as_str).unwrap_or(""), version),
            (Method::POST, ["sobjects", "CustomField"]) => self.create_custom_field(body, version),
            (Method::POST, ["sobjects", "CustomObject"]) => self.create_custom_object(body, version),
            (Method::GET, ["sobjects", kind @ ("CustomField" | "CustomObject"), id]) => {
                let row = self.tooling_rows(kind, version).into_iter().find(|r| r["Id"] == *id);
                row.map(|r| Out::json(StatusCode::OK, r)).ok_or_else(SfError::not_found)
            }
            (Method::DELETE, ["sobjects", "CustomField", id]) => self.delete_custom_field(id),
            (Method::DELETE, ["sobjects", "CustomObject", id]) => self.delete_custom_object(id),
            _ => Err(SfError::not_found()),
        }
    }

    fn tooling_body(body: Option<&Value>) -> Result<(&str, &Map<String, Value>), SfError> {
        let body = body.and_then(Value::as_object).ok_or_else(|| {
            SfError::new(StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR", "the request body must be a JSON object")
        })?;
        let full = body.get("FullName").and_then(Value::as_str).ok_or_else(|| {
            SfError::new(StatusCode::BAD_REQUEST, "REQUIRED_FIELD_MISSING", "Required fields are missing: [FullName]")
                .field("FullName")
        })?;
        let meta = body.get("Metadata").and_then(Value::as_object).ok_or_else(|| {
            SfError::new(StatusCode::BAD_REQUEST, "REQUIRED_FIELD_MISSING", "Required fields are missing: [Metadata]")
                .field("Metadata")
        })?;
        if meta.get("label").and_then(Value::as_str).is_none_or(|l| l.trim().is_empty()) {
            return Err(invalid(&format!("{full}: label is required")));
        }
        Ok((full, meta))
    }

    fn created(id: &str) -> Out {
        Out::json(StatusCode::CREATED, json!({"id": id, "success": true, "errors": [], "warnings": [], "infos": []}))
    }

    fn create_custom_field(&mut self, body: Option<&Value>, _version: &str) -> Result<Out, SfError> {
        self.require("PermissionsCustomizeApplication")?;
        let (full, meta) = Self::tooling_body(body)?;
        let (object, name) = full
            .split_once('.')
            .ok_or_else(|| invalid(&format!("{full}: the FullName of a field is Object.Field__c")))?;
        custom_name(name)?;
        let def = self
            .object(object)
            .map_err(|_| invalid(&format!("{full}: there is no object named {object}")))?
            .def
            .clone();
        if def.field(name).is_some() {
            return Err(SfError::new(
                StatusCode::BAD_REQUEST,
                "DUPLICATE_DEVELOPER_NAME",
                &format!("There is already a field named {name} on {}.", def.name),
            ));
        }
        let ty = field_type(full, meta)?;
        if let Ty::Reference(to) = ty
            && self.object(to).is_err()
        {
            return Err(invalid(&format!("{full}: referenceTo names no object: {to}")));
        }
        let flag = |k: &str| meta.get(k).is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true"));
        let field = Field {
            name: name.to_owned(),
            ty,
            writable: true,
            required: flag("required"),
            external_id: flag("externalId"),
        };
        let id = self.meta.next_id("00N");
        let mut metadata = meta.clone();
        metadata.insert("fullName".into(), json!(full));
        let now = self.now();
        self.meta.fields.insert(
            id.clone(),
            CustomField {
                id: id.clone(),
                object: def.name.clone(),
                name: name.to_owned(),
                metadata: Value::Object(metadata),
                created: now,
            },
        );
        if let Some(t) = self.tables.get_mut(&def.name) {
            t.def.fields.push(field);
        }
        self.share_demo_when_ready();
        Ok(Self::created(&id))
    }

    /// The values of a custom picklist created through the Tooling API (`valueSet.valueSetDefinition`),
    /// in their order, as `describe` lists them (`picklistValues`).
    pub(super) fn custom_picklist_values(&self, object: &str, field: &str) -> Vec<String> {
        self.meta
            .fields
            .values()
            .find(|f| f.object == object && f.name == field)
            .and_then(|f| f.metadata.pointer("/valueSet/valueSetDefinition/value")?.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.get("fullName").and_then(Value::as_str).map(str::to_owned))
            .collect()
    }

    fn create_custom_object(&mut self, body: Option<&Value>, _version: &str) -> Result<Out, SfError> {
        self.require("PermissionsCustomizeApplication")?;
        let (full, meta) = Self::tooling_body(body)?;
        custom_name(full)?;
        if self.object(full).is_ok() {
            return Err(SfError::new(
                StatusCode::BAD_REQUEST,
                "DUPLICATE_DEVELOPER_NAME",
                &format!("The object name '{full}' is already used by another object."),
            ));
        }
        for k in ["pluralLabel", "deploymentStatus", "sharingModel"] {
            if meta.get(k).and_then(Value::as_str).is_none() {
                return Err(invalid(&format!("{full}: {k} is required")));
            }
        }
        let name_type = meta.get("nameField").and_then(|n| n.get("type")).and_then(Value::as_str);
        if !matches!(name_type, Some("Text" | "AutoNumber"))
            || meta.get("nameField").and_then(|n| n.get("label")).is_none()
        {
            return Err(invalid(&format!("{full}: nameField needs a label and the type Text or AutoNumber")));
        }
        let id = self.meta.next_id("01I");
        let prefix = format!("a{:02}", self.meta.objects.len());
        let mut metadata = meta.clone();
        metadata.insert("fullName".into(), json!(full));
        let f = |name: &str, ty: Ty, writable: bool| Field {
            name: name.into(),
            ty,
            writable,
            required: false,
            external_id: false,
        };
        let fields = vec![
            f("Id", Ty::Id, false),
            f("IsDeleted", Ty::Bool, false),
            f("CreatedDate", Ty::DateTime, false),
            f("CreatedById", Ty::Reference("User"), false),
            f("LastModifiedDate", Ty::DateTime, false),
            f("LastModifiedById", Ty::Reference("User"), false),
            f("SystemModstamp", Ty::DateTime, false),
            f("OwnerId", Ty::Reference("User"), true),
            f("Name", Ty::Text, name_type == Some("Text")),
        ];
        let def = Object { name: full.to_owned(), prefix, fields, writable: true };
        self.tables.insert(full.to_owned(), Table { def, rows: BTreeMap::new(), recycle: BTreeMap::new() });
        let now = self.now();
        self.meta.objects.insert(
            id.clone(),
            CustomObject {
                id: id.clone(),
                name: full.to_owned(),
                metadata: Value::Object(metadata),
                created: now,
                next_number: 1,
            },
        );
        Ok(Self::created(&id))
    }

    /// The `Name` of a new record of a custom object that was not given one: the next auto-number, or
    /// (Text name field) the record id, as the API leaves it **[I]**. `None` for other objects.
    pub(super) fn default_name(&mut self, object: &str, id: &str) -> Option<String> {
        let o = self.meta.objects.values_mut().find(|o| o.name.eq_ignore_ascii_case(object))?;
        match o.metadata.pointer("/nameField/type").and_then(Value::as_str) {
            Some("AutoNumber") => {
                let format = o.metadata.pointer("/nameField/displayFormat").and_then(Value::as_str).unwrap_or("{0}");
                let n = o.next_number;
                o.next_number += 1;
                Some(auto_number(format, n))
            }
            _ => Some(id.to_owned()),
        }
    }

    fn delete_custom_field(&mut self, id: &str) -> Result<Out, SfError> {
        self.require("PermissionsCustomizeApplication")?;
        let f = self.meta.fields.remove(id).ok_or_else(SfError::not_found)?;
        if let Some(t) = self.tables.get_mut(&f.object) {
            t.def.fields.retain(|x| !x.name.eq_ignore_ascii_case(&f.name));
            for (_, r) in t.rows.values_mut() {
                r.remove(&f.name);
            }
        }
        self.drop_permissions_on(&f.object, Some(&f.name));
        Ok(Out::empty(StatusCode::NO_CONTENT))
    }

    fn delete_custom_object(&mut self, id: &str) -> Result<Out, SfError> {
        self.require("PermissionsCustomizeApplication")?;
        let o = self.meta.objects.get(id).cloned().ok_or_else(SfError::not_found)?;
        self.meta.objects.remove(id);
        self.meta.fields.retain(|_, f| f.object != o.name);
        self.tables.remove(&o.name);
        self.drop_permissions_on(&o.name, None);
        Ok(Out::empty(StatusCode::NO_CONTENT))
    }

    /// The Tooling records of one type, as `tooling/query` and GET by id return them.
    fn tooling_rows(&self, kind: &str, version: &str) -> Vec<Value> {
        let attributes =
            |id: &str| json!({"type": kind, "url": format!("/services/data/{version}/tooling/sobjects/{kind}/{id}")});
        match kind {
            "CustomField" => self
                .meta
                .fields
                .values()
                .map(|f| {
                    let table = self.meta.objects.values().find(|o| o.name == f.object).map(|o| o.id.clone());
                    json!({"attributes": attributes(&f.id), "Id": f.id,
                        "DeveloperName": f.name.trim_end_matches("__c"), "NamespacePrefix": null,
                        "TableEnumOrId": table.unwrap_or_else(|| f.object.clone()), "ManageableState": "unmanaged",
                        "FullName": format!("{}.{}", f.object, f.name), "Metadata": f.metadata,
                        "CreatedDate": sf_time(f.created), "LastModifiedDate": sf_time(f.created)})
                })
                .collect(),
            "CustomObject" => self
                .meta
                .objects
                .values()
                .map(|o| {
                    json!({"attributes": attributes(&o.id), "Id": o.id,
                        "DeveloperName": o.name.trim_end_matches("__c"), "NamespacePrefix": null,
                        "ManageableState": "unmanaged", "SharingModel": o.metadata.get("sharingModel"),
                        "FullName": o.name, "Metadata": o.metadata,
                        "CreatedDate": sf_time(o.created), "LastModifiedDate": sf_time(o.created)})
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    fn tooling_query(&self, q: &str, version: &str) -> Result<Out, SfError> {
        let parsed = soql::parse(q).map_err(|e| SfError::new(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", &e))?;
        let kind = ["CustomField", "CustomObject"]
            .into_iter()
            .find(|k| k.eq_ignore_ascii_case(&parsed.object))
            .ok_or_else(|| {
                SfError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_TYPE",
                    &format!("sObject type '{}' is not supported.", parsed.object),
                )
            })?;
        let columns: &[&str] = match kind {
            "CustomField" => &[
                "Id",
                "DeveloperName",
                "NamespacePrefix",
                "TableEnumOrId",
                "ManageableState",
                "FullName",
                "Metadata",
                "CreatedDate",
                "LastModifiedDate",
            ],
            _ => &[
                "Id",
                "DeveloperName",
                "NamespacePrefix",
                "ManageableState",
                "SharingModel",
                "FullName",
                "Metadata",
                "CreatedDate",
                "LastModifiedDate",
            ],
        };
        let canon = |f: &str| columns.iter().find(|c| c.eq_ignore_ascii_case(f)).map(|c| c.to_string());
        let mut named = parsed.fields.clone();
        if let Some(c) = &parsed.filter {
            c.fields(&mut named);
        }
        named.extend(parsed.order.iter().map(|(f, _, _)| f.clone()));
        if let Some(bad) = named.iter().find(|f| canon(f).is_none()) {
            return Err(SfError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                &format!("\n{bad}\n^\nERROR at Row:1:Column:1\nNo such column '{bad}' on entity '{kind}'."),
            ));
        }
        let mut rows: Vec<Value> = self
            .tooling_rows(kind, version)
            .into_iter()
            .filter(|r| parsed.filter.as_ref().is_none_or(|c| c.eval(&|f| canon(f).and_then(|k| r.get(&k)))))
            .collect();
        if let Some(o) = parsed.offset {
            rows = rows.into_iter().skip(o).collect();
        }
        if let Some(l) = parsed.limit {
            rows.truncate(l);
        }
        let heavy =
            parsed.fields.iter().any(|f| f.eq_ignore_ascii_case("Metadata") || f.eq_ignore_ascii_case("FullName"));
        if heavy && rows.len() > 1 {
            return Err(SfError::new(
                StatusCode::BAD_REQUEST,
                "MALFORMED_QUERY",
                &format!(
                    "When retrieving results with Metadata or FullName fields, the query qualifications must specify no more than one row for retrieval. Result size: {}",
                    rows.len()
                ),
            ));
        }
        let size = rows.len();
        let records: Vec<Value> = if parsed.count_only {
            Vec::new()
        } else {
            rows.iter()
                .map(|r| {
                    let mut out = Map::new();
                    out.insert("attributes".into(), r["attributes"].clone());
                    for f in &parsed.fields {
                        let k = canon(f).unwrap_or_default();
                        out.insert(k.clone(), r.get(&k).cloned().unwrap_or(Value::Null));
                    }
                    Value::Object(out)
                })
                .collect()
        };
        Ok(Out::json(
            StatusCode::OK,
            json!({"size": size, "totalSize": size, "done": true, "queryLocator": null, "entityTypeName": kind, "records": records}),
        ))
    }
}

/// An auto-number `displayFormat` such as `SOL-{00000}` applied to `n`.
fn auto_number(format: &str, n: u64) -> String {
    match (format.find('{'), format.find('}')) {
        (Some(a), Some(b)) if b > a => {
            let width = format[a + 1..b].len();
            format!("{}{n:0width$}{}", &format[..a], &format[b + 1..])
        }
        _ => format!("{format}{n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_numbers_follow_the_display_format() {
        assert_eq!(auto_number("SOL-{00000}", 42), "SOL-00042");
        assert_eq!(auto_number("{0}", 7), "7");
    }

    #[test]
    fn field_metadata_is_checked_per_type() {
        let m = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(field_type("O.F__c", &m(json!({"type": "Checkbox", "defaultValue": false}))).unwrap(), Ty::Bool);
        assert!(field_type("O.F__c", &m(json!({"type": "Checkbox"}))).unwrap_err().message.contains("defaultValue"));
        assert!(field_type("O.F__c", &m(json!({"type": "Text", "length": 300}))).is_err());
        let picklist = json!({"type": "MultiselectPicklist", "visibleLines": 4,
            "valueSet": {"valueSetDefinition": {"value": [{"fullName": "A", "label": "A"}]}}});
        assert_eq!(field_type("O.F__c", &m(picklist)).unwrap(), Ty::MultiPicklist);
        assert!(field_type("O.F__c", &m(json!({"type": "Picklist"}))).is_err());
        assert!(custom_name("Bad__Name__c").is_err());
        assert_eq!(custom_name("Good_Name__c").unwrap(), "Good_Name");
    }
}
