//! The Web API entry (`/api/data/v9.2/…`): the request as the handlers see it, bearer-token
//! check, the daily API counter and fault injection (`gate`), and the routing of a path to
//! `WhoAmI`, `{set}/$count`, queries, records and actions (`dispatch`, which `$batch` parts reuse).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::odata::split_set_key;
use super::response::{ApiError, empty, odata_json, stale};
use super::{API, APP_USER_ID, BUSINESS_UNIT_ID, Db, ORGANIZATION_ID, batch};
use crate::crm_common::{FaultKind, Shared, hang, lock};

pub(super) struct Req {
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) query: BTreeMap<String, String>,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

impl Req {
    pub(super) fn prefer(&self) -> String {
        self.headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",")
    }
    pub(super) fn select(&self) -> Option<Vec<String>> {
        self.query.get("$select").map(|s| s.split(',').map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()).collect())
    }
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub(super) async fn api(
    State(state): State<Shared<Db>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let decoded = urlencoding::decode(uri.path()).map(|p| p.into_owned()).unwrap_or_else(|_| uri.path().to_owned());
    let path = decoded.strip_prefix(API).unwrap_or("").to_owned();
    let query: BTreeMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let req = Req { method, path, query, headers, body };
    let is_batch = req.method == Method::POST && req.path == "$batch";
    let (resp, batch, hang_ms) = {
        let mut db = lock(&state);
        match db.gate(&req) {
            Err(e) => (Some(e.into_response()), None, None),
            Ok(hang_ms) if is_batch => match db.batch(&req) {
                Ok(b) => (None, Some(b), hang_ms),
                Err(e) => (Some(e.into_response()), None, hang_ms),
            },
            Ok(hang_ms) => (Some(db.dispatch(&req).unwrap_or_else(IntoResponse::into_response)), None, hang_ms),
        }
    };
    let resp = match (resp, batch) {
        (_, Some(b)) => batch::render(b).await,
        (Some(r), None) => r,
        (None, None) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    if let Some(ms) = hang_ms {
        hang(ms).await;
    }
    resp
}

impl Db {
    /// Authentication, API counting, fault injection. Returns a post-processing delay when a `Hang`
    /// fault applies.
    pub(super) fn gate(&mut self, req: &Req) -> Result<Option<u64>, ApiError> {
        let bearer = req.header("authorization").and_then(|h| h.strip_prefix("Bearer ")).map(str::to_owned);
        let now = self.now();
        match bearer.as_ref().and_then(|t| self.tokens.get(t)) {
            None => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "0x80072560",
                    "RequestIsNotAuthenticated: the bearer token is missing or invalid.",
                ));
            }
            Some(exp) if *exp <= now => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "0x80072561",
                    "ExpiredAuthTicket: the access token has expired.",
                ));
            }
            Some(_) => {}
        }
        let today = self.counter.count(now);
        if today > self.config.daily_api_limit {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "0x80072322",
                &format!(
                    "Number of requests exceeded the limit of {} over time window of 86400 seconds.",
                    self.config.daily_api_limit
                ),
            );
            e.retry_after = Some(3600);
            return Err(e);
        }
        match self.faults.take(req.method.as_str(), &req.path) {
            None => Ok(None),
            Some(FaultKind::Throttle { retry_after }) => {
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "0x80072322",
                    "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
                );
                e.retry_after = Some(retry_after);
                Err(e)
            }
            Some(FaultKind::Unavailable) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "0x80040216",
                "The service is temporarily unavailable.",
            )),
            Some(FaultKind::Hang { millis }) => Ok(Some(millis)),
            Some(FaultKind::ExpireTokens) => {
                self.tokens.clear();
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "0x80072561",
                    "ExpiredAuthTicket: the access token has expired.",
                ))
            }
            Some(FaultKind::ExpireDeltaTokens) => {
                self.delta_floor = self.next_version();
                Ok(None)
            }
            Some(FaultKind::Forbid { privilege }) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "0x80040220",
                &format!(
                    "Principal user (Id={APP_USER_ID}, type=8, roleCount=1, privilegeCount=412, accessMode=4), is missing {privilege} privilege on OTC=3 for entity '{}'.",
                    req.path.split(['(', '?', '/']).next().unwrap_or("")
                ),
            )),
        }
    }

    pub(super) fn dispatch(&mut self, req: &Req) -> Result<Response, ApiError> {
        let path = req.path.trim_end_matches('/');
        if let Some(r) = self.metadata_write(req, path) {
            return r;
        }
        if let Some(r) = self.metadata_read(req, path) {
            return r;
        }
        match (req.method.clone(), path) {
            (Method::GET, "WhoAmI" | "WhoAmI()") => Ok(odata_json(json!({
                "@odata.context": format!("{}{API}$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse", self.base_url),
                "BusinessUnitId": BUSINESS_UNIT_ID, "UserId": APP_USER_ID, "OrganizationId": ORGANIZATION_ID}))),
            (Method::POST, "WinOpportunity") => self.close(req, true),
            (Method::POST, "LoseOpportunity") => self.close(req, false),
            _ if path.ends_with("/$count") => {
                let set = path.trim_end_matches("/$count");
                let n = self.table(set)?.rows.len();
                let mut resp = (StatusCode::OK, n.to_string()).into_response();
                resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                Ok(resp)
            }
            _ if path.contains(")/") => self.property(req, path),
            _ => {
                let (set, key) = split_set_key(path).ok_or_else(|| ApiError::not_found_resource(path))?;
                let set = set.to_owned();
                self.table(&set)?;
                match (req.method.clone(), key) {
                    (Method::GET, None) => self.query(req, &set),
                    (Method::POST, None) => self.create(req, &set),
                    (Method::GET, Some(k)) => {
                        // The query options are parsed before the row is looked up.
                        self.check_select(&set, req.select().as_deref())?;
                        let id = self.resolve(&set, k)?;
                        let id = id.ok_or_else(|| ApiError::row_missing(&self.tables[&set].def.logical, k))?;
                        self.respond_row(req, &set, &id, StatusCode::OK)
                    }
                    (Method::PATCH, Some(k)) => self.patch(req, &set, k),
                    (Method::DELETE, Some(k)) => {
                        let id = self.resolve(&set, k)?;
                        let id = id.ok_or_else(|| ApiError::row_missing(&self.tables[&set].def.logical, k))?;
                        if let Some(m) = req.header("if-match").filter(|m| *m != "*") {
                            let v = self.tables[&set].rows[&id].version;
                            if m != format!("W/\"{v}\"") {
                                return Err(stale());
                            }
                        }
                        self.delete(&set, &id)?;
                        Ok(empty(StatusCode::NO_CONTENT))
                    }
                    _ => Err(ApiError::new(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "0x80060888",
                        "The HTTP method is not supported for this resource.",
                    )),
                }
            }
        }
    }
}
