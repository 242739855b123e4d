//! The row store: a request body checked against the table (column types, `@odata.bind` lookups, the
//! statecode/statuscode machine, required columns), primary and alternate keys, and the writes
//! themselves. Every committed change to a row goes through `insert`, `update` or `delete` here, which
//! stamp `versionnumber` (change tracking) and the row's write log.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::odata::{self, Key, Lit, split_set_key};
use super::response::ApiError;
use super::schema::Table;
use super::{API, Db, Row, WriteLog};

impl Db {
    /// Applies a request body to `values` (create when `existing` is None).
    fn apply(
        &self,
        set: &str,
        values: &mut Map<String, Value>,
        body: &Map<String, Value>,
        creating: bool,
        allow_state: bool,
    ) -> Result<(), ApiError> {
        let def = &self.table(set)?.def;
        let entity = format!("Microsoft.Dynamics.CRM.{}", def.logical);
        for (k, v) in body {
            if let Some(nav) = k.strip_suffix("@odata.bind") {
                let lookup = def.lookup_by_nav(nav).ok_or_else(|| ApiError::bad_property(nav, &entity))?;
                match v {
                    Value::Null => {
                        values.insert(lookup.value_prop.clone(), Value::Null);
                    }
                    Value::String(uri) => {
                        let target = self.resolve_uri(uri, &lookup.target_set)?;
                        values.insert(lookup.value_prop.clone(), Value::String(target));
                    }
                    _ => return Err(ApiError::payload(set, &format!("bad @odata.bind value for {nav}"))),
                }
                continue;
            }
            if k.starts_with('@') || k.contains("@odata.") || k.contains("@OData.") {
                continue;
            }
            if let Some(lookup) = def.lookup_by_nav(k) {
                if v.is_null() {
                    values.insert(lookup.value_prop.clone(), Value::Null);
                    continue;
                }
                return Err(ApiError::payload(set, &format!("use {k}@odata.bind to set a lookup")));
            }
            if k == &def.pk {
                if creating {
                    match v.as_str().filter(|s| odata::is_guid(s)) {
                        Some(_) => continue,
                        None => return Err(ApiError::payload(set, &format!("{k} must be a GUID"))),
                    }
                }
                continue;
            }
            if k == "statecode" || k == "statuscode" {
                if def.states.is_empty() {
                    return Err(ApiError::bad_property(k, &entity));
                }
                continue; // handled by the state machine below
            }
            let ty = def.column(k).ok_or_else(|| ApiError::bad_property(k, &entity))?;
            if !ty.accepts(v) {
                return Err(ApiError::payload(
                    set,
                    &format!(
                        "Cannot convert the literal '{v}' to the expected type '{}' for property '{k}'.",
                        ty.edm()
                    ),
                ));
            }
            values.insert(k.clone(), v.clone());
        }
        // State machine.
        if !def.states.is_empty() {
            let cur_state = values.get("statecode").and_then(Value::as_i64).unwrap_or(def.states[0].0);
            let req_state = body.get("statecode").and_then(Value::as_i64);
            let req_status = body.get("statuscode").and_then(Value::as_i64);
            if def.logical == "opportunity" && !allow_state {
                let non_state = body.keys().any(|k| k != "statecode" && k != "statuscode");
                if cur_state != 0 && !creating && non_state && req_state != Some(0) {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "0x80040203",
                        "Won and lost opportunities are read-only and can't be edited until they are reactivated.",
                    ));
                }
                if matches!(req_state, Some(1 | 2)) {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "0x80040203",
                        "Opportunities are closed with the WinOpportunity and LoseOpportunity actions, not by setting statecode.",
                    ));
                }
            }
            let state = req_state.unwrap_or(if creating { def.states[0].0 } else { cur_state });
            let allowed = def
                .states
                .iter()
                .find(|(s, _)| *s == state)
                .map(|(_, a)| a.clone())
                .ok_or_else(|| ApiError::payload(set, &format!("{state} is not a valid statecode")))?;
            let cur_status = values.get("statuscode").and_then(Value::as_i64);
            let status = match req_status {
                Some(s) => s,
                None if req_state.is_none() && !creating => cur_status.unwrap_or(allowed[0]),
                None => allowed[0],
            };
            if !allowed.contains(&status) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "0x8004431a",
                    &format!("{status} is not a valid status code for state code {state} on {}", def.logical),
                ));
            }
            values.insert("statecode".into(), json!(state));
            values.insert("statuscode".into(), json!(status));
        }
        if creating {
            for r in &def.required {
                if values.get(r).is_none_or(|v| v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty())) {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "0x80044331",
                        &format!(
                            "A validation error occurred. The value of '{r}' on record of type '{}' is required.",
                            def.logical
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    pub(super) fn resolve_uri(&self, uri: &str, target_set: &str) -> Result<String, ApiError> {
        let rel = uri.split(API).nth(1).unwrap_or(uri).trim_start_matches('/');
        let (set, key) =
            split_set_key(rel).ok_or_else(|| ApiError::payload(target_set, &format!("bad bind URI `{uri}`")))?;
        if set != target_set {
            return Err(ApiError::payload(target_set, &format!("bind URI `{uri}` does not point to {target_set}")));
        }
        let key = key.ok_or_else(|| ApiError::payload(target_set, "bind URI without a key"))?;
        let t = self.table(set)?;
        let parsed = odata::parse_key(key, &t.def.pk).map_err(|e| ApiError::payload(set, &e))?;
        self.find_key(set, &parsed)?.ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "0x80040217",
                &format!("{} With Id = {key} Does Not Exist", t.def.logical),
            )
        })
    }

    pub(super) fn find_key(&self, set: &str, key: &Key) -> Result<Option<String>, ApiError> {
        let t = self.table(set)?;
        match key {
            Key::Id(id) => Ok(t.rows.get(id).map(|r| r.id.clone())),
            Key::Alternate(parts) => {
                let names: Vec<String> = parts.iter().map(|(n, _)| n.clone()).collect();
                let defined = t.def.alt_keys.iter().any(|k| {
                    let mut a = k.clone();
                    let mut b = names.clone();
                    a.sort();
                    b.sort();
                    a == b
                });
                if !defined {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "0x80060888",
                        &format!("The key in the request URI is not valid for resource '{}'.", t.def.logical),
                    ));
                }
                Ok(t.rows
                    .values()
                    .filter(|r| {
                        parts.iter().all(|(n, l)| {
                            let want = odata::lit_to_json(l);
                            match (r.values.get(n), &want) {
                                (Some(Value::String(a)), Value::String(b)) => a == b,
                                (Some(a), b) => a == b,
                                (None, _) => false,
                            }
                        })
                    })
                    .min_by_key(|r| r.seq)
                    .map(|r| r.id.clone()))
            }
        }
    }

    pub(super) fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    fn stamp(&mut self, values: &mut Map<String, Value>, user: &str) -> u64 {
        let v = self.next_version();
        let now = self.now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        values.insert("modifiedon".into(), json!(now));
        values.insert("versionnumber".into(), json!(v));
        values.insert("_modifiedby_value".into(), json!(user));
        v
    }

    fn computed(def: &Table, values: &mut Map<String, Value>) {
        if def.fullname {
            let first = values.get("firstname").and_then(Value::as_str).unwrap_or("");
            let last = values.get("lastname").and_then(Value::as_str).unwrap_or("");
            let full = format!("{first} {last}").trim().to_owned();
            values.insert("fullname".into(), json!(full));
        }
    }

    /// Creates a row; `body` may carry the primary key.
    pub(super) fn insert(&mut self, set: &str, body: Map<String, Value>, user: &str) -> Result<String, ApiError> {
        let def = self.table(set)?.def.clone();
        let id = match body.get(&def.pk).and_then(Value::as_str) {
            Some(id) => id.to_ascii_lowercase(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        if self.table(set)?.rows.contains_key(&id) {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "0x80040237",
                "A record with matching key values already exists.",
            ));
        }
        let mut values = Map::new();
        self.apply(set, &mut values, &body, true, true)?;
        for key in &def.alt_keys {
            let parts: Vec<(String, Lit)> = key
                .iter()
                .filter_map(|c| values.get(c).and_then(Value::as_str).map(|v| (c.clone(), Lit::Str(v.to_owned()))))
                .collect();
            if parts.len() == key.len() && self.find_key(set, &Key::Alternate(parts))?.is_some() {
                return Err(ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "0x80040237",
                    "A record with matching key values already exists.",
                ));
            }
        }
        if def.money
            && values.get("_transactioncurrencyid_value").is_none_or(Value::is_null)
            && let Some(base) = self.base_currency()
        {
            values.insert("_transactioncurrencyid_value".into(), json!(base));
        }
        Self::computed(&def, &mut values);
        let now = self.now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        values.insert("createdon".into(), json!(now));
        values.insert("_createdby_value".into(), json!(user));
        values.insert("_ownerid_value".into(), json!(user));
        let version = self.stamp(&mut values, user);
        values.insert(def.pk.clone(), json!(id));
        self.seq += 1;
        let writes = WriteLog::new(self.now(), user);
        let row = Row { id: id.clone(), seq: self.seq, version, values, writes };
        if let Some(t) = self.tables.get_mut(set) {
            t.rows.insert(id.clone(), row);
        }
        Ok(id)
    }

    pub(super) fn update(
        &mut self,
        set: &str,
        id: &str,
        body: &Map<String, Value>,
        user: &str,
        allow_state: bool,
    ) -> Result<(), ApiError> {
        let def = self.table(set)?.def.clone();
        let mut values = self
            .table(set)?
            .rows
            .get(id)
            .map(|r| r.values.clone())
            .ok_or_else(|| ApiError::row_missing(&def.logical, id))?;
        // Alternate-key columns and the primary key are not rewritten by an update.
        let mut body = body.clone();
        body.remove(&def.pk);
        self.apply(set, &mut values, &body, false, allow_state)?;
        Self::computed(&def, &mut values);
        let version = self.stamp(&mut values, user);
        let at = self.now();
        if let Some(row) = self.tables.get_mut(set).and_then(|t| t.rows.get_mut(id)) {
            row.values = values;
            row.version = version;
            row.writes.push(at, user);
        }
        Ok(())
    }

    pub(super) fn delete(&mut self, set: &str, id: &str) -> Result<(), ApiError> {
        let def = self.table(set)?.def.clone();
        let v = self.next_version();
        let t = self.tables.get_mut(set).ok_or_else(|| ApiError::not_found_resource(set))?;
        t.rows.remove(id).ok_or_else(|| ApiError::row_missing(&def.logical, id))?;
        t.deleted.push((v, id.to_owned()));
        Ok(())
    }

    pub(super) fn render(&self, set: &str, id: &str, select: Option<&[String]>) -> Option<Value> {
        let t = self.tables.get(set)?;
        let row = t.rows.get(id)?;
        let mut out = Map::new();
        out.insert("@odata.etag".into(), json!(format!("W/\"{}\"", row.version)));
        match select {
            Some(cols) => {
                for c in cols {
                    out.insert(c.clone(), row.values.get(c).cloned().unwrap_or(Value::Null));
                }
                out.insert(t.def.pk.clone(), json!(row.id));
            }
            None => {
                for (k, v) in &row.values {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        Some(Value::Object(out))
    }
}
