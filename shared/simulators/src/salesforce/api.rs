//! The REST entry (`/services/data/…`): the versions list, the session check, the daily API counter
//! and fault injection (`gate`), and the routing of a path to queries, records, composite, describe
//! and limits (`handle`, shared by top-level calls and composite subrequests, which journals writes).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

use super::response::{Out, SfError, respond};
use super::{INTEGRATION_USER_ID, JournalEntry, Org};
use crate::crm_common::{FaultKind, Shared, hang, lock};

impl Org {
    pub(super) fn handle(
        &mut self,
        method: &Method,
        rest: &str,
        query: &BTreeMap<String, String>,
        headers: &HeaderMap,
        body: Option<&Value>,
        version: &str,
    ) -> Out {
        let segs: Vec<String> = rest
            .trim_matches('/')
            .split('/')
            .map(|s| urlencoding::decode(s).map(|c| c.into_owned()).unwrap_or_else(|_| s.to_owned()))
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        if *method != Method::GET {
            self.journal.push(JournalEntry {
                method: method.to_string(),
                path: rest.to_owned(),
                call_options: headers.get("sforce-call-options").and_then(|v| v.to_str().ok()).map(str::to_owned),
            });
        }
        let result = match (method.clone(), segs.as_slice()) {
            (Method::GET, [kind @ ("query" | "queryAll")]) => {
                self.query(query.get("q").map(String::as_str).unwrap_or(""), headers, version, *kind == "queryAll")
            }
            (Method::GET, ["sobjects", object, "updated"]) => self.replication(object, query, false),
            (Method::GET, ["sobjects", object, "deleted"]) => self.replication(object, query, true),
            (Method::GET, ["query" | "queryAll", locator]) => self.more(locator, version),
            (Method::GET, ["limits"]) => {
                let today = self.counter.stats(self.config.daily_api_limit).api_calls_today;
                let max = self.config.daily_api_limit;
                Ok(Out::json(
                    StatusCode::OK,
                    json!({"DailyApiRequests": {"Max": max, "Remaining": max.saturating_sub(today)}}),
                ))
            }
            (Method::POST, ["composite"]) => self.composite(body, headers, version),
            (Method::POST, ["sobjects", object]) => {
                let body = body.and_then(Value::as_object).cloned().unwrap_or_default();
                self.create(object, &body, INTEGRATION_USER_ID, false).map(|id| {
                    let mut out = Out::json(StatusCode::CREATED, json!({"id": id, "success": true, "errors": []}));
                    out.headers.push(("Location".into(), format!("/services/data/{version}/sobjects/{object}/{id}")));
                    out
                })
            }
            (Method::GET, ["sobjects"]) => Ok(self.describe_global()),
            (Method::GET, ["sobjects", object, "describe"]) => self.describe(object),
            (Method::GET, ["sobjects", object, id]) => self.get(object, id, query, version),
            (Method::PATCH, ["sobjects", object, id]) => self.patch(object, id, headers, body),
            (Method::DELETE, ["sobjects", object, id]) => self.delete(object, id),
            (Method::GET, ["sobjects", object, field, value]) => {
                self.by_external_id(object, field, value).and_then(|id| self.get(object, &id, query, version))
            }
            (Method::PATCH, ["sobjects", object, field, value]) => self.upsert(object, field, value, query, body),
            _ => Err(SfError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "The requested resource does not exist")),
        };
        result.unwrap_or_else(Out::err)
    }

    /// Session check, API counting and fault injection for `/services/data/vXX.X/…`.
    fn gate(&mut self, method: &Method, path: &str, headers: &HeaderMap) -> Result<Option<u64>, SfError> {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("OAuth ")));
        let now = self.now();
        if bearer.and_then(|t| self.sessions.get(t)).is_none_or(|exp| *exp <= now) {
            return Err(SfError::new(StatusCode::UNAUTHORIZED, "INVALID_SESSION_ID", "Session expired or invalid"));
        }
        let today = self.counter.count(now);
        if today > self.config.daily_api_limit {
            return Err(SfError::new(StatusCode::FORBIDDEN, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."));
        }
        match self.faults.take(method.as_str(), path) {
            None | Some(FaultKind::ExpireDeltaTokens) => Ok(None),
            Some(FaultKind::Throttle { .. }) => {
                Err(SfError::new(StatusCode::FORBIDDEN, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."))
            }
            Some(FaultKind::Unavailable) => Err(SfError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVER_UNAVAILABLE",
                "Server is temporarily unavailable",
            )),
            Some(FaultKind::Hang { millis }) => Ok(Some(millis)),
            Some(FaultKind::ExpireTokens) => {
                self.sessions.clear();
                Err(SfError::new(StatusCode::UNAUTHORIZED, "INVALID_SESSION_ID", "Session expired or invalid"))
            }
            Some(FaultKind::Forbid { privilege }) => Err(SfError::new(
                StatusCode::FORBIDDEN,
                "INSUFFICIENT_ACCESS_OR_READONLY",
                &format!(
                    "insufficient access rights on object: the integration user lacks the \"{privilege}\" permission"
                ),
            )),
        }
    }
}

pub(super) async fn versions(State(state): State<Shared<Org>>) -> Response {
    let org = lock(&state);
    let list: Vec<Value> = (58..=66).map(|v| json!({"label": format!("v{v}.0"), "url": format!("/services/data/v{v}.0"), "version": format!("{v}.0")})).collect();
    respond(&org, Out::json(StatusCode::OK, Value::Array(list)))
}

pub(super) async fn api(
    State(state): State<Shared<Org>>,
    Path((version, _rest)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let prefix = format!("/services/data/{version}/");
    let rest = uri.path().strip_prefix(&prefix).unwrap_or("").to_owned();
    let query: BTreeMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let valid_version = version.strip_prefix('v').and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v >= 20.0);
    let (resp, hang_ms) = {
        let mut org = lock(&state);
        if !valid_version {
            let out =
                Out::err(SfError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "The requested resource does not exist"));
            return respond(&org, out);
        }
        match org.gate(&method, &rest, &headers) {
            Err(e) => (respond(&org, Out::err(e)), None),
            Ok(h) => {
                let parsed = if body.is_empty() { Ok(None) } else { serde_json::from_slice::<Value>(&body).map(Some) };
                let out = match parsed {
                    Ok(b) => {
                        let method = match query.get("_HttpMethod") {
                            Some(m) if method == Method::POST => Method::from_bytes(m.as_bytes()).unwrap_or(method),
                            _ => method,
                        };
                        org.handle(&method, &rest, &query, &headers, b.as_ref(), &version)
                    }
                    Err(e) => Out::err(SfError::new(
                        StatusCode::BAD_REQUEST,
                        "JSON_PARSER_ERROR",
                        &format!("Unexpected character: {e}"),
                    )),
                };
                (respond(&org, out), h)
            }
        }
    };
    if let Some(ms) = hang_ms {
        hang(ms).await;
    }
    resp
}
