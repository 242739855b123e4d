//! `POST composite`: up to 25 subrequests in one API call, `@{ref.path}` references to earlier
//! results, the outer `Sforce-Call-Options`, and `allOrNone` (roll back and `PROCESSING_HALTED`).

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::response::{Out, SfError};
use super::{Org, Record};

impl Org {
    pub(super) fn composite(&mut self, body: Option<&Value>, outer: &HeaderMap, version: &str) -> Result<Out, SfError> {
        let body = body.ok_or_else(|| {
            SfError::new(StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR", "composite request without a body")
        })?;
        let all_or_none = body.get("allOrNone").and_then(Value::as_bool).unwrap_or(false);
        let subs = body.get("compositeRequest").and_then(Value::as_array).cloned().ok_or_else(|| {
            SfError::new(StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR", "compositeRequest is required")
        })?;
        if subs.len() > 25 {
            return Err(SfError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_BATCH_REQUEST",
                "A composite request may have up to 25 subrequests",
            ));
        }
        type Snapshot = (BTreeMap<String, (u64, Record)>, BTreeMap<String, (u64, Record, DateTime<Utc>)>);
        // Only an all-or-none request can need rolling back (a copy of every table per call made
        // composite reads O(records) each).
        let snapshot: BTreeMap<String, Snapshot> = if all_or_none {
            self.tables.iter().map(|(k, t)| (k.clone(), (t.rows.clone(), t.recycle.clone()))).collect()
        } else {
            BTreeMap::new()
        };
        let mut results: Vec<Value> = Vec::new();
        let mut refs: BTreeMap<String, Value> = BTreeMap::new();
        let mut failed = false;
        let halted = || json!([{"errorCode": "PROCESSING_HALTED", "message": "The transaction was rolled back since another operation in the same transaction failed."}]);
        for sub in &subs {
            let reference = sub.get("referenceId").and_then(Value::as_str).unwrap_or("").to_owned();
            if failed && all_or_none {
                results.push(
                    json!({"body": halted(), "httpHeaders": {}, "httpStatusCode": 400, "referenceId": reference}),
                );
                continue;
            }
            let method = sub
                .get("method")
                .and_then(Value::as_str)
                .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
                .unwrap_or(Method::GET);
            let url = resolve_refs(sub.get("url").and_then(Value::as_str).unwrap_or(""), &refs);
            let sub_body = sub.get("body").map(|b| resolve_refs_value(b, &refs));
            let mut headers = HeaderMap::new();
            // Subrequests run under the outer request's call options (they show in `changeOrigin`).
            if let Some(v) = outer.get("sforce-call-options") {
                headers.insert("sforce-call-options", v.clone());
            }
            if let Some(h) = sub.get("httpHeaders").and_then(Value::as_object) {
                for (k, v) in h {
                    if let (Ok(name), Some(Ok(val))) =
                        (axum::http::HeaderName::from_bytes(k.as_bytes()), v.as_str().map(HeaderValue::from_str))
                    {
                        headers.insert(name, val);
                    }
                }
            }
            let (path, q) = url.split_once('?').unwrap_or((url.as_str(), ""));
            let rest = path.split_once(&format!("/{version}/")).map(|(_, r)| r.to_owned()).or_else(|| {
                path.strip_prefix("/services/data/").and_then(|p| p.split_once('/')).map(|(_, r)| r.to_owned())
            });
            let query: BTreeMap<String, String> = url::form_urlencoded::parse(q.as_bytes()).into_owned().collect();
            let out = match (rest, url.contains("@{")) {
                (_, true) => Out::json(
                    StatusCode::BAD_REQUEST,
                    json!([{"errorCode": "PROCESSING_HALTED", "message": "Invalid reference specified. A referenced subrequest failed or does not exist."}]),
                ),
                (Some(rest), false) => self.handle(&method, &rest, &query, &headers, sub_body.as_ref(), version),
                (None, false) => {
                    Out::err(SfError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "The requested resource does not exist"))
                }
            };
            if !out.status.is_success() {
                failed = true;
            }
            if let Some(b) = &out.body {
                refs.insert(reference.clone(), b.clone());
            }
            let hdrs: Map<String, Value> = out.headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            results.push(json!({"body": out.body, "httpHeaders": hdrs, "httpStatusCode": out.status.as_u16(), "referenceId": reference}));
        }
        if failed && all_or_none {
            for (k, (rows, recycle)) in snapshot {
                if let Some(t) = self.tables.get_mut(&k) {
                    t.rows = rows;
                    t.recycle = recycle;
                }
            }
            for r in &mut results {
                if r["httpStatusCode"].as_u64().is_some_and(|s| s < 300) {
                    r["body"] = halted();
                    r["httpStatusCode"] = json!(400);
                }
            }
        }
        Ok(Out::json(StatusCode::OK, json!({"compositeResponse": results})))
    }
}

/// Replaces `@{ref.path}` with values from earlier subrequest results.
fn resolve_refs(s: &str, refs: &BTreeMap<String, Value>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("@{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[i..]);
            return out;
        };
        let path = &after[..end];
        match lookup_ref(path, refs) {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[i..i + 3 + end]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn lookup_ref(path: &str, refs: &BTreeMap<String, Value>) -> Option<String> {
    let mut parts = path.split('.');
    let mut v = refs.get(parts.next()?)?;
    for p in parts {
        v = match p.split_once('[') {
            Some((name, idx)) => v.get(name)?.get(idx.trim_end_matches(']').parse::<usize>().ok()?)?,
            None => v.get(p)?,
        };
    }
    Some(match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

fn resolve_refs_value(v: &Value, refs: &BTreeMap<String, Value>) -> Value {
    match v {
        Value::String(s) => Value::String(resolve_refs(s, refs)),
        Value::Array(a) => Value::Array(a.iter().map(|x| resolve_refs_value(x, refs)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), resolve_refs_value(x, refs))).collect()),
        other => other.clone(),
    }
}
