//! What the REST API answers with: errors as `[{"message","errorCode","fields"}]` (`SfError`), the
//! result of an internal dispatch (`Out`, shared by top-level calls and composite subrequests), and the
//! `Sforce-Limit-Info` header every response carries.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Org;

/// A Salesforce error: status + `[{"message","errorCode","fields"}]`.
#[derive(Debug, Clone)]
pub(super) struct SfError {
    pub(super) status: StatusCode,
    pub(super) code: String,
    pub(super) message: String,
    pub(super) fields: Vec<String>,
}

impl SfError {
    pub(super) fn new(status: StatusCode, code: &str, message: &str) -> Self {
        Self { status, code: code.into(), message: message.into(), fields: Vec::new() }
    }
    pub(super) fn field(mut self, f: &str) -> Self {
        self.fields.push(f.into());
        self
    }
    pub(super) fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", "The requested resource does not exist")
    }
    pub(super) fn body(&self) -> Value {
        let mut e = json!({"message": self.message, "errorCode": self.code});
        if !self.fields.is_empty() {
            e["fields"] = json!(self.fields);
        }
        json!([e])
    }
}

/// What an internal dispatch produces.
pub(super) struct Out {
    pub(super) status: StatusCode,
    pub(super) body: Option<Value>,
    pub(super) headers: Vec<(String, String)>,
}

impl Out {
    pub(super) fn json(status: StatusCode, body: Value) -> Self {
        Self { status, body: Some(body), headers: Vec::new() }
    }
    pub(super) fn empty(status: StatusCode) -> Self {
        Self { status, body: None, headers: Vec::new() }
    }
    pub(super) fn err(e: SfError) -> Self {
        Self::json(e.status, e.body())
    }
}

pub(super) fn respond(org: &Org, out: Out) -> Response {
    let mut resp = match out.body {
        Some(b) => (out.status, axum::Json(b)).into_response(),
        None => out.status.into_response(),
    };
    let h = resp.headers_mut();
    for (k, v) in out.headers {
        if let (Ok(name), Ok(val)) = (axum::http::HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&v)) {
            h.insert(name, val);
        }
    }
    let usage = org.counter.stats(org.config.daily_api_limit);
    if let Ok(v) = HeaderValue::from_str(&format!("api-usage={}/{}", usage.api_calls_today, usage.daily_limit)) {
        h.insert("Sforce-Limit-Info", v);
    }
    resp
}

impl Out {
    pub(super) fn into_axum(self) -> Response {
        match self.body {
            Some(b) => (self.status, axum::Json(b)).into_response(),
            None => self.status.into_response(),
        }
    }
}
