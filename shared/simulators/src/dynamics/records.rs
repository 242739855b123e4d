//! The record endpoints: `POST {set}` (with deep insert), `GET|PATCH|DELETE {set}({key})` by primary or
//! alternate key (`If-Match`, `If-None-Match`, upsert, `Prefer: return=representation`), single
//! columns and lookup `$ref`s (`…/{column}`, `…/{nav}/$ref`), and the `WinOpportunity` and
//! `LoseOpportunity` actions.

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::api::Req;
use super::odata::{self, Key, split_set_key};
use super::response::{ApiError, empty, odata_json, stale, with_status};
use super::{API, APP_USER_ID, Db};

impl Db {
    /// Deep insert: a lookup given as an object creates that row first and binds it; a collection
    /// given as an array creates its rows after this one, bound to it. All or nothing: on an error
    /// every row created so far is removed again.
    fn insert_deep(&mut self, set: &str, body: Map<String, Value>, user: &str) -> Result<String, ApiError> {
        let mut created = Vec::new();
        match self.insert_nested(set, body, user, &mut created) {
            Ok(id) => Ok(id),
            Err(e) => {
                for (set, id) in created {
                    if let Some(t) = self.tables.get_mut(&set) {
                        t.rows.remove(&id);
                    }
                }
                Err(e)
            }
        }
    }

    fn insert_nested(
        &mut self,
        set: &str,
        body: Map<String, Value>,
        user: &str,
        created: &mut Vec<(String, String)>,
    ) -> Result<String, ApiError> {
        let def = self.table(set)?.def.clone();
        let mut flat = Map::new();
        let mut children = Vec::new();
        for (k, v) in body {
            if let (Some(l), Value::Object(nested)) = (def.lookup_by_nav(&k), &v) {
                let id = self.insert_nested(&l.target_set, nested.clone(), user, created)?;
                flat.insert(format!("{k}@odata.bind"), json!(format!("/{}({id})", l.target_set)));
            } else if let Some(c) = def.collection(&k) {
                let items = v.as_array().cloned().ok_or_else(|| {
                    ApiError::payload(set, &format!("the collection-valued navigation property {k} takes an array"))
                })?;
                children.push((c.clone(), items));
            } else {
                flat.insert(k, v);
            }
        }
        let id = self.insert(set, flat, user)?;
        created.push((set.to_owned(), id.clone()));
        for (c, items) in children {
            for item in items {
                let Value::Object(mut m) = item else {
                    return Err(ApiError::payload(&c.child_set, &format!("the items of {} must be objects", c.nav)));
                };
                m.insert(format!("{}@odata.bind", c.child_lookup), json!(format!("/{set}({id})")));
                self.insert_nested(&c.child_set, m, user, created)?;
            }
        }
        Ok(id)
    }

    /// `PUT|DELETE /{set}({key})/{column}` (one column) and `PUT|DELETE /{set}({key})/{nav}/$ref` (a lookup).
    pub(super) fn property(&mut self, req: &Req, path: &str) -> Result<Response, ApiError> {
        let i = path.find(")/").ok_or_else(|| ApiError::not_found_resource(path))?;
        let (record, rest) = (&path[..=i], &path[i + 2..]);
        let (set, key) = split_set_key(record).ok_or_else(|| ApiError::not_found_resource(path))?;
        let key = key.ok_or_else(|| ApiError::not_found_resource(path))?;
        let set = set.to_owned();
        let logical = self.table(&set)?.def.logical.clone();
        let id = self.resolve(&set, key)?.ok_or_else(|| ApiError::row_missing(&logical, key))?;
        let mut body = Map::new();
        match (req.method.clone(), rest.strip_suffix("/$ref")) {
            (Method::PUT, Some(nav)) => {
                let v = Self::body(req, &set)?;
                let target = v
                    .get("@odata.id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::payload(&set, "@odata.id is required"))?;
                let target = if target.starts_with('/') || target.contains(API) {
                    target.to_owned()
                } else {
                    format!("/{target}")
                };
                body.insert(format!("{nav}@odata.bind"), json!(target));
            }
            (Method::DELETE, Some(nav)) => {
                body.insert(nav.to_owned(), Value::Null);
            }
            (Method::PUT, None) => {
                let v = Self::body(req, &set)?;
                body.insert(rest.to_owned(), v.get("value").cloned().unwrap_or(Value::Null));
            }
            (Method::DELETE, None) => {
                body.insert(rest.to_owned(), Value::Null);
            }
            (Method::GET, None) => {
                self.check_select(&set, Some(&[rest.to_owned()]))?;
                let v = self.tables[&set].rows[&id].values.get(rest).cloned().unwrap_or(Value::Null);
                return Ok(odata_json(json!({
                    "@odata.context": format!("{}{API}$metadata#{set}({id})/{rest}", self.base_url), "value": v})));
            }
            _ => {
                return Err(ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "0x80060888",
                    "The HTTP method is not supported for this resource.",
                ));
            }
        }
        self.update(&set, &id, &body, APP_USER_ID, false)?;
        Ok(empty(StatusCode::NO_CONTENT))
    }

    pub(super) fn resolve(&self, set: &str, key: &str) -> Result<Option<String>, ApiError> {
        let t = self.table(set)?;
        let parsed =
            odata::parse_key(key, &t.def.pk).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "0x80060888", &e))?;
        self.find_key(set, &parsed)
    }

    pub(super) fn body(req: &Req, set: &str) -> Result<Map<String, Value>, ApiError> {
        match serde_json::from_slice::<Value>(&req.body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(ApiError::payload(set, "the body must be a JSON object")),
            Err(e) => Err(ApiError::payload(set, &format!("invalid JSON: {e}"))),
        }
    }

    pub(super) fn respond_row(&self, req: &Req, set: &str, id: &str, status: StatusCode) -> Result<Response, ApiError> {
        let select = req.select();
        self.check_select(set, select.as_deref())?;
        // `$expand` is ignored on PATCH (crm-apis.md A6).
        let expands = if req.method == Method::PATCH { Vec::new() } else { self.expands(req, set)? };
        let mut v =
            self.render_expanded(set, id, select.as_deref(), &expands).ok_or_else(|| ApiError::row_missing(set, id))?;
        let sel = select.map(|s| format!("({})", s.join(","))).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            let mut with_ctx = Map::new();
            with_ctx
                .insert("@odata.context".into(), json!(format!("{}{API}$metadata#{set}{sel}/$entity", self.base_url)));
            with_ctx.extend(std::mem::take(o));
            *o = with_ctx;
        }
        let etag = v.get("@odata.etag").and_then(Value::as_str).unwrap_or("").to_owned();
        let mut resp = with_status(status, odata_json(v));
        if let Ok(h) = HeaderValue::from_str(&etag) {
            resp.headers_mut().insert(header::ETAG, h);
        }
        Ok(resp)
    }

    fn written(
        &self,
        req: &Req,
        set: &str,
        id: &str,
        created: bool,
        key_url: Option<String>,
    ) -> Result<Response, ApiError> {
        if req.prefer().contains("return=representation") {
            let mut resp =
                self.respond_row(req, set, id, if created { StatusCode::CREATED } else { StatusCode::OK })?;
            resp.headers_mut().insert("Preference-Applied", HeaderValue::from_static("return=representation"));
            return Ok(resp);
        }
        let mut resp = empty(StatusCode::NO_CONTENT);
        let url = key_url.unwrap_or_else(|| format!("{}{API}{set}({id})", self.base_url));
        if let Ok(h) = HeaderValue::from_str(&url) {
            resp.headers_mut().insert("OData-EntityId", h);
        }
        Ok(resp)
    }

    pub(super) fn create(&mut self, req: &Req, set: &str) -> Result<Response, ApiError> {
        let body = Self::body(req, set)?;
        self.check_select(set, req.select().as_deref())?;
        self.expands(req, set)?;
        let mut body_no_state = body.clone();
        if set == "opportunities" && matches!(body.get("statecode").and_then(Value::as_i64), Some(1 | 2)) {
            body_no_state.remove("statecode");
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "0x80040203",
                "An opportunity cannot be created closed.",
            ));
        }
        let id = self.insert_deep(set, body_no_state, APP_USER_ID)?;
        self.written(req, set, &id, true, None)
    }

    pub(super) fn patch(&mut self, req: &Req, set: &str, key: &str) -> Result<Response, ApiError> {
        let body = Self::body(req, set)?;
        let def = self.table(set)?.def.clone();
        let parsed =
            odata::parse_key(key, &def.pk).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "0x80060888", &e))?;
        let existing = self.find_key(set, &parsed)?;
        let if_match = req.header("if-match");
        let if_none = req.header("if-none-match").filter(|v| *v != "null");
        match existing {
            Some(id) => {
                if if_none == Some("*") {
                    return Err(ApiError::new(
                        StatusCode::PRECONDITION_FAILED,
                        "0x80040237",
                        "A record with matching key values already exists.",
                    ));
                }
                if let Some(m) = if_match.filter(|m| *m != "*") {
                    let v = self.tables[set].rows[&id].version;
                    if m != format!("W/\"{v}\"") {
                        return Err(stale());
                    }
                }
                let mut body = body;
                if let Key::Alternate(parts) = &parsed {
                    for (n, _) in parts {
                        body.remove(n);
                    }
                }
                self.update(set, &id, &body, APP_USER_ID, false)?;
                self.written(req, set, &id, false, Some(format!("{}{API}{set}({key})", self.base_url)))
            }
            None => {
                if if_match.is_some() {
                    return Err(ApiError::row_missing(&def.logical, key));
                }
                let mut body = body;
                match &parsed {
                    Key::Id(id) => {
                        body.insert(def.pk.clone(), json!(id));
                    }
                    Key::Alternate(parts) => {
                        for (n, l) in parts {
                            body.entry(n.clone()).or_insert_with(|| odata::lit_to_json(l));
                        }
                    }
                }
                let id = self.insert(set, body, APP_USER_ID)?;
                self.written(req, set, &id, true, Some(format!("{}{API}{set}({key})", self.base_url)))
            }
        }
    }

    pub(super) fn close(&mut self, req: &Req, won: bool) -> Result<Response, ApiError> {
        let body = Self::body(req, "opportunityclose")?;
        let status = body.get("Status").and_then(Value::as_i64).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "0x80040203",
                "Required parameter 'Status' is missing or not an Int32.",
            )
        })?;
        let close = body.get("OpportunityClose").and_then(Value::as_object).cloned().ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "0x80040203", "Required parameter 'OpportunityClose' is missing.")
        })?;
        let bind = close.get("opportunityid@odata.bind").and_then(Value::as_str).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "0x80040203",
                "OpportunityClose.opportunityid@odata.bind is required.",
            )
        })?;
        let opp = self.resolve_uri(bind, "opportunities")?;
        let (state, allowed): (i64, &[i64]) = if won { (1, &[3]) } else { (2, &[4, 5]) };
        if !allowed.contains(&status) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "0x8004431a",
                &format!("{status} is not a valid status code for state code {state} on opportunity"),
            ));
        }
        let cur = self.tables["opportunities"].rows[&opp].values.get("statecode").and_then(Value::as_i64).unwrap_or(0);
        if cur != 0 {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "0x80040203", "The opportunity is already closed."));
        }
        let mut close_body = close.clone();
        close_body.remove("opportunityid@odata.bind");
        let mut activity = close_body.clone();
        activity.insert("opportunityid@odata.bind".into(), json!(bind));
        self.insert("opportunitycloses", activity, APP_USER_ID)?;
        let today = self.now().date_naive().to_string();
        let est = self.tables["opportunities"].rows[&opp].values.get("estimatedvalue").cloned().unwrap_or(Value::Null);
        let mut patch = Map::new();
        patch.insert("statecode".into(), json!(state));
        patch.insert("statuscode".into(), json!(status));
        patch.insert("actualclosedate".into(), json!(today));
        patch.insert("actualvalue".into(), close.get("actualrevenue").cloned().unwrap_or(est));
        self.update("opportunities", &opp, &patch, APP_USER_ID, true)?;
        Ok(empty(StatusCode::NO_CONTENT))
    }
}
