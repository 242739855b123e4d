//! `POST /api/data/v9.2/$batch`: multipart/mixed batches with change sets (atomic), `Content-ID`
//! references (`$1` in URLs and `@odata.bind` values) and `Prefer: odata.continue-on-error`.
//! Each inner request counts as one API request (batches don't reduce entitlement consumption).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::api::Req;
use super::response::ApiError;
use super::{API, Db, TableState};

/// One embedded request.
#[derive(Debug)]
struct Part {
    changeset: Option<usize>,
    content_id: Option<String>,
    method: Method,
    url: String,
    headers: HeaderMap,
    body: String,
}

/// A dispatched part, waiting for its body to be read.
#[derive(Debug)]
pub(super) struct Done {
    changeset: Option<usize>,
    content_id: Option<String>,
    response: Response,
}

#[derive(Debug)]
pub(super) struct Batch {
    status: StatusCode,
    parts: Vec<Done>,
}

fn boundary_of(content_type: &str) -> Option<String> {
    content_type.split(';').find_map(|p| p.trim().strip_prefix("boundary=")).map(|b| b.trim_matches('"').to_owned())
}

/// Splits a multipart body into its parts (headers + body text), normalising line ends.
fn split(body: &str, boundary: &str) -> Vec<String> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut current: Option<String> = None;
    for line in body.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line == delimiter || line == format!("{delimiter}--") {
            if let Some(p) = current.take() {
                parts.push(p);
            }
            if line.ends_with("--") {
                break;
            }
            current = Some(String::new());
        } else if let Some(p) = current.as_mut() {
            p.push_str(line);
            p.push('\n');
        }
    }
    parts
}

fn head_and_body(part: &str) -> (HeaderMap, String) {
    let (head, body) = part.split_once("\n\n").unwrap_or((part, ""));
    let mut headers = HeaderMap::new();
    for line in head.lines() {
        if let Some((k, v)) = line.split_once(':')
            && let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(k.trim().as_bytes()), HeaderValue::from_str(v.trim()))
        {
            headers.append(name, value);
        }
    }
    (headers, body.to_owned())
}

fn parse(body: &str, boundary: &str) -> Result<Vec<Part>, String> {
    let mut out = Vec::new();
    for (set_index, raw) in split(body, boundary).into_iter().enumerate() {
        let (headers, inner) = head_and_body(&raw);
        let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        if ct.starts_with("multipart/mixed") {
            let b = boundary_of(&ct).ok_or("change set without a boundary")?;
            for raw in split(&inner, &b) {
                out.push(request(&raw, Some(set_index))?);
            }
        } else {
            out.push(request(&raw, None)?);
        }
    }
    if out.len() > 1000 {
        return Err("a batch may contain at most 1000 requests".into());
    }
    Ok(out)
}

fn request(raw: &str, changeset: Option<usize>) -> Result<Part, String> {
    let (outer, http) = head_and_body(raw);
    let content_id = outer.get("content-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let http = http.trim_start_matches('\n');
    let (line, rest) = http.split_once('\n').unwrap_or((http, ""));
    let mut words = line.split_whitespace();
    let method = words.next().and_then(|m| Method::from_bytes(m.as_bytes()).ok()).ok_or("bad request line")?;
    let url = words.next().ok_or("request line without a URL")?.to_owned();
    if changeset.is_some() && method == Method::GET {
        return Err("GET requests are not allowed inside a change set".into());
    }
    let (headers, body) = head_and_body(&format!("{rest}\n"));
    let (headers, body) = if rest.trim().is_empty() { (HeaderMap::new(), String::new()) } else { (headers, body) };
    Ok(Part { changeset, content_id, method, url, headers, body: body.trim().to_owned() })
}

impl Db {
    pub(super) fn batch(&mut self, req: &Req) -> Result<Batch, ApiError> {
        let ct = req.header("content-type").unwrap_or("");
        let boundary = boundary_of(ct).filter(|_| ct.starts_with("multipart/mixed")).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "0x80048d19",
                "A $batch request must be multipart/mixed with a boundary.",
            )
        })?;
        let text = String::from_utf8_lossy(&req.body).into_owned();
        let parts = parse(&text, &boundary).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "0x80048d19", &e))?;
        let continue_on_error = req.prefer().contains("odata.continue-on-error");
        let mut ids: BTreeMap<String, String> = BTreeMap::new();
        let mut done: Vec<Done> = Vec::new();
        let mut snapshot: Option<(usize, BTreeMap<String, TableStateSnapshot>)> = None;
        let mut failed_set: Option<usize> = None;
        let mut status = StatusCode::OK;
        let now = self.now();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                // The outer request was counted once; every further inner request counts too.
                self.counter.count(now);
            }
            if let Some(set) = part.changeset
                && snapshot.as_ref().is_none_or(|(s, _)| *s != set)
            {
                snapshot = Some((set, self.snapshot()));
            }
            if part.changeset.is_some() && part.changeset == failed_set {
                continue;
            }
            let url = resolve(&part.url, &ids);
            let path_and_query =
                url.split(API).nth(1).map(str::to_owned).unwrap_or_else(|| url.trim_start_matches('/').to_owned());
            let (path, query) = path_and_query.split_once('?').unwrap_or((&path_and_query, ""));
            let body = resolve_binds(&part.body, &ids);
            let inner = Req {
                method: part.method.clone(),
                path: urlencoding::decode(path).map(|p| p.into_owned()).unwrap_or_else(|_| path.to_owned()),
                query: url::form_urlencoded::parse(query.as_bytes()).into_owned().collect(),
                headers: part.headers.clone(),
                body: Bytes::from(body),
            };
            let response = self.dispatch(&inner).unwrap_or_else(IntoResponse::into_response);
            let ok = response.status().is_success();
            if ok
                && let (Some(cid), Some(entity)) = (&part.content_id, response.headers().get("OData-EntityId"))
                && let Ok(entity) = entity.to_str()
            {
                let rel = entity.split(API).nth(1).unwrap_or(entity);
                ids.insert(cid.clone(), format!("/{rel}"));
            }
            if !ok {
                if let (Some(set), Some((snap_set, snap))) = (part.changeset, snapshot.take())
                    && snap_set == set
                {
                    self.restore(snap);
                    failed_set = Some(set);
                    done.retain(|d| d.changeset != Some(set));
                }
                if !continue_on_error {
                    status = response.status();
                    done.push(Done { changeset: part.changeset, content_id: part.content_id.clone(), response });
                    break;
                }
            }
            done.push(Done { changeset: part.changeset, content_id: part.content_id.clone(), response });
        }
        Ok(Batch { status, parts: done })
    }

    fn snapshot(&self) -> BTreeMap<String, TableStateSnapshot> {
        self.tables.iter().map(|(k, t)| (k.clone(), (t.rows.clone(), t.deleted.clone()))).collect()
    }

    fn restore(&mut self, snap: BTreeMap<String, TableStateSnapshot>) {
        for (k, (rows, deleted)) in snap {
            if let Some(t) = self.tables.get_mut(&k) {
                let t: &mut TableState = t;
                t.rows = rows;
                t.deleted = deleted;
            }
        }
    }
}

type TableStateSnapshot = (BTreeMap<String, super::Row>, Vec<(u64, String)>);

fn resolve(url: &str, ids: &BTreeMap<String, String>) -> String {
    if let Some(rest) = url.strip_prefix('$') {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Some(target) = ids.get(&digits) {
            return format!("{target}{}", &rest[digits.len()..]);
        }
    }
    url.to_owned()
}

fn resolve_binds(body: &str, ids: &BTreeMap<String, String>) -> String {
    let Ok(Value::Object(mut o)) = serde_json::from_str::<Value>(body) else { return body.to_owned() };
    for (k, v) in o.iter_mut() {
        if k.ends_with("@odata.bind")
            && let Some(s) = v.as_str()
            && s.starts_with('$')
        {
            *v = Value::String(resolve(s, ids));
        }
    }
    Value::Object(o).to_string()
}

/// Writes the multipart response (after the lock is released, since bodies are read asynchronously).
pub(super) async fn render(batch: Batch) -> Response {
    let outer = format!("batchresponse_{}", uuid::Uuid::new_v4());
    let mut out = String::new();
    let mut open_set: Option<(usize, String)> = None;
    for part in batch.parts {
        let status = part.response.status();
        let headers = part.response.headers().clone();
        let body = axum::body::to_bytes(part.response.into_body(), usize::MAX).await.unwrap_or_default();
        match (part.changeset, &open_set) {
            (Some(set), Some((open, _))) if *open == set => {}
            (Some(set), _) => {
                if let Some((_, b)) = open_set.take() {
                    out.push_str(&format!("--{b}--\r\n"));
                }
                let b = format!("changesetresponse_{}", uuid::Uuid::new_v4());
                out.push_str(&format!("--{outer}\r\nContent-Type: multipart/mixed; boundary={b}\r\n\r\n"));
                open_set = Some((set, b));
            }
            (None, _) => {
                if let Some((_, b)) = open_set.take() {
                    out.push_str(&format!("--{b}--\r\n"));
                }
            }
        }
        let delimiter = open_set.as_ref().map(|(_, b)| b.clone()).unwrap_or_else(|| outer.clone());
        out.push_str(&format!(
            "--{delimiter}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
        ));
        if let Some(cid) = &part.content_id {
            out.push_str(&format!("Content-ID: {cid}\r\n"));
        }
        out.push_str(&format!("\r\nHTTP/1.1 {} {}\r\n", status.as_u16(), status.canonical_reason().unwrap_or("")));
        for (k, v) in &headers {
            if k != header::CONTENT_LENGTH
                && let Ok(v) = v.to_str()
            {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        out.push_str("\r\n");
        out.push_str(&String::from_utf8_lossy(&body));
        out.push_str("\r\n");
    }
    if let Some((_, b)) = open_set.take() {
        out.push_str(&format!("--{b}--\r\n"));
    }
    out.push_str(&format!("--{outer}--\r\n"));
    let mut resp = (batch.status, out).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("multipart/mixed; boundary={outer}")) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp.headers_mut().insert("OData-Version", HeaderValue::from_static("4.0"));
    resp
}
