//! HTTP surface: routes, the Referrals API, the Webhooks API, the certificate, fault injection and the
//! response headers the service sends.

// Handlers short-circuit with a ready `Response` as the error; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use cosell_core::referral::{EventName, PatchOp, PatchOpKind};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::auth::{self, TokenProblem};
use super::store::ApiFailure;
use super::{
    CERT_PATH, FaultKind, NextLinkStyle, REFERRALS_RESOURCE, Registration, Sim, WEBHOOKS_RESOURCE, control, delivery,
    odata,
};

pub(crate) fn router(sim: Arc<Sim>) -> Router {
    let apis = Router::new()
        .route("/v1.0/engagements/referrals", get(list_referrals).post(create_referral))
        .route("/v1.0/engagements/referrals/{id}", get(get_referral).patch(patch_referral).put(put_referral))
        // The documentation's own nextLink omits `/engagements`; serve it so such links work.
        .route("/v1.0/referrals", get(list_referrals))
        .route(
            "/webhooks/v1/registration",
            get(get_registration).post(create_registration).put(update_registration).delete(delete_registration),
        )
        .route("/webhooks/v1/registration/events", get(list_events))
        .route("/webhooks/v1/registration/validationEvents", post(send_validation_event))
        .route("/webhooks/v1/registration/validationEvents/{correlation_id}", get(get_validation_event))
        .layer(middleware::from_fn_with_state(sim.clone(), faults_and_headers));
    Router::new()
        .merge(apis)
        .route("/{tenant}/oauth2/token", post(auth::token_v1))
        .route("/{tenant}/oauth2/v2.0/token", post(auth::token_v2))
        .route(CERT_PATH, get(certificate))
        .nest("/_sim", control::router())
        .with_state(sim)
}

// ---------------------------------------------------------------------------------------------
// Errors

/// The Partner API error body (reference §1.11).
fn pc_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(json!({"error": {"code": code, "message": message, "target": "referral"}}))).into_response()
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        match self {
            ApiFailure::Invalid(m) => pc_error(StatusCode::BAD_REQUEST, "invalidRequest", &m),
            ApiFailure::NotFound(m) => pc_error(StatusCode::NOT_FOUND, "itemNotFound", &m),
            ApiFailure::Precondition(m) => pc_error(StatusCode::PRECONDITION_FAILED, "preconditionFailed", &m),
        }
    }
}

/// The CSP-style error body the Webhooks API uses (reference §1.11, contrast note).
fn csp_error(status: StatusCode, code: u32, description: &str) -> Response {
    (status, axum::Json(json!({"code": code, "description": description, "data": [], "source": "PartnerFD"})))
        .into_response()
}

fn auth_failure(problem: &TokenProblem, pc_style: bool) -> Response {
    let mut resp = if pc_style {
        pc_error(StatusCode::UNAUTHORIZED, "unauthenticated", &problem.message())
    } else {
        csp_error(StatusCode::UNAUTHORIZED, 401, &problem.message())
    };
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
    resp
}

const REFERRAL_ROLES: [&str; 2] = ["Referrals admin", "Referrals user"];
const WEBHOOK_ROLES: [&str; 6] =
    ["Referrals admin", "Global admin", "Admin agent", "Billing admin", "Sales agent", "Helpdesk agent"];

/// Checks the bearer token and the user's roles for the Referrals API.
fn authorize_referrals(sim: &Sim, headers: &HeaderMap) -> Result<(), Response> {
    if !sim.config.require_auth {
        return Ok(());
    }
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let token = auth::check_bearer(sim, bearer, REFERRALS_RESOURCE).map_err(|p| auth_failure(&p, true))?;
    let Some(user) = token.user else {
        return Err(pc_error(
            StatusCode::FORBIDDEN,
            "accessDenied",
            "App-only authentication is not supported by the Referrals API; use App+User authentication.",
        ));
    };
    let roles = sim.lock().auth.roles_of(&user);
    if roles.iter().any(|r| REFERRAL_ROLES.iter().any(|ok| ok.eq_ignore_ascii_case(r))) {
        Ok(())
    } else {
        Err(pc_error(
            StatusCode::FORBIDDEN,
            "accessDenied",
            &format!("User {user} does not have the Referrals admin or Referrals user role in Partner Center."),
        ))
    }
}

fn authorize_webhooks(sim: &Sim, headers: &HeaderMap) -> Result<(), Response> {
    if !sim.config.require_auth {
        return Ok(());
    }
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let token = auth::check_bearer(sim, bearer, WEBHOOKS_RESOURCE).map_err(|p| auth_failure(&p, false))?;
    let Some(user) = token.user else { return Ok(()) };
    let roles = sim.lock().auth.roles_of(&user);
    if roles.iter().any(|r| WEBHOOK_ROLES.iter().any(|ok| ok.eq_ignore_ascii_case(r))) {
        Ok(())
    } else {
        Err(csp_error(
            StatusCode::FORBIDDEN,
            403,
            &format!("User {user} does not have a role allowed to manage webhooks (e.g. Referrals admin)."),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Faults and common headers

async fn faults_and_headers(State(sim): State<Arc<Sim>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let client_request_id = req.headers().get("client-request-id").cloned();
    let correlation = req.headers().get("ms-correlationid").cloned();
    let ms_request_id = req.headers().get("ms-requestid").cloned();
    let fault = {
        let mut inner = sim.lock();
        inner.api_calls += 1;
        let hit = inner.faults.iter().position(|f| {
            f.kind != FaultKind::DropDeliveries
                && f.count > 0
                && f.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
                && f.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
        });
        let hit = hit.filter(|&i| {
            let fault = &mut inner.faults[i];
            if fault.after > 0 {
                fault.after -= 1;
                false
            } else {
                true
            }
        });
        hit.map(|i| {
            inner.faults[i].count -= 1;
            let kind = inner.faults[i].kind.clone();
            if inner.faults[i].count == 0 {
                inner.faults.remove(i);
            }
            kind
        })
    };
    let mut resp = match fault {
        Some(FaultKind::Throttle { retry_after_secs }) => {
            let mut r = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({"statusCode": 429, "message": format!("Rate limit is exceeded. Try again in {retry_after_secs} seconds.")})),
            )
                .into_response();
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            r
        }
        Some(FaultKind::Status { status, retry_after_secs }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let code =
                if status == StatusCode::SERVICE_UNAVAILABLE { "serviceNotAvailable" } else { "generalException" };
            let mut r = pc_error(status, code, "Simulated failure.");
            if let Some(s) = retry_after_secs {
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
            }
            r
        }
        Some(FaultKind::Slow { delay_ms }) => {
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
            next.run(req).await
        }
        Some(FaultKind::ExpireTokens { revoke_refresh_tokens }) => {
            {
                let now = sim.clock.now();
                let mut inner = sim.lock();
                inner.auth.expire_access_tokens(now);
                if revoke_refresh_tokens {
                    inner.auth.expire_refresh_tokens();
                }
            }
            next.run(req).await
        }
        Some(FaultKind::DropDeliveries) | None => next.run(req).await,
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        h.insert("request-id", v);
    }
    if let Some(v) = client_request_id {
        h.insert("client-request-id", v);
    }
    if let Some(v) = correlation {
        h.insert("ms-correlationid", v);
    }
    if let Some(v) = ms_request_id {
        h.insert("ms-requestid", v);
    }
    resp
}

// ---------------------------------------------------------------------------------------------
// Referrals API

#[derive(Debug, Serialize, Deserialize)]
struct SkipToken {
    f: Option<String>,
    o: Option<String>,
    sel: Option<String>,
    top: usize,
    skip: usize,
    /// When `$top` caps the result (see `Config::top_is_page_size`): index past the last item.
    #[serde(default)]
    end: Option<usize>,
}

fn single(sim: &Sim, status: StatusCode, doc: &Value) -> Response {
    let mut out = Map::new();
    out.insert("@odata.context".into(), json!(format!("{}/v1.0/$metadata#Referrals/$entity", sim.base_url)));
    if let Value::Object(m) = doc {
        out.extend(m.clone());
    }
    let mut resp = (status, axum::Json(Value::Object(out))).into_response();
    if let Some(tag) = doc.get("eTag").and_then(Value::as_str).and_then(|t| HeaderValue::from_str(t).ok()) {
        resp.headers_mut().insert(header::ETAG, tag);
    }
    resp
}

fn require_json(headers: &HeaderMap) -> Result<(), Response> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if ct.to_ascii_lowercase().starts_with("application/json")
        || ct.to_ascii_lowercase().starts_with("application/json-patch+json")
    {
        Ok(())
    } else {
        Err(pc_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalidRequest", "Content-Type must be application/json."))
    }
}

fn parse_json(body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|e| {
        pc_error(StatusCode::BAD_REQUEST, "invalidRequest", &format!("The request body is not valid JSON: {e}"))
    })
}

fn if_match(headers: &HeaderMap) -> Option<String> {
    headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

async fn list_referrals(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = authorize_referrals(&sim, &headers) {
        return r;
    }
    let param = |name: &str| params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    let page_max = sim.config.page_size.clamp(1, 100);
    let token = match param("$skiptoken") {
        Some(raw) => {
            let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(raw.as_bytes())
                .ok()
                .and_then(|b| serde_json::from_slice::<SkipToken>(&b).ok());
            match decoded {
                Some(t) => t,
                None => return pc_error(StatusCode::BAD_REQUEST, "invalidRequest", "The $skiptoken is invalid."),
            }
        }
        None => {
            let requested = param("$top").map(|t| t.parse::<usize>());
            let top = match requested {
                None => page_max,
                Some(Ok(t)) if t >= 1 => t.min(page_max),
                Some(_) => {
                    return pc_error(StatusCode::BAD_REQUEST, "invalidRequest", "$top must be a positive integer.");
                }
            };
            let skip = match param("$skip").map(|t| t.parse::<usize>()) {
                None => 0,
                Some(Ok(s)) => s,
                Some(Err(_)) => {
                    return pc_error(StatusCode::BAD_REQUEST, "invalidRequest", "$skip must be an integer.");
                }
            };
            let end = match requested {
                Some(Ok(t)) if !sim.config.top_is_page_size => Some(skip.saturating_add(t)),
                _ => None,
            };
            SkipToken { f: param("$filter"), o: param("$orderby"), sel: param("$select"), top, skip, end }
        }
    };
    let filter = match token.f.as_deref().map(odata::parse).transpose() {
        Ok(f) => f,
        Err(e) => return pc_error(StatusCode::BAD_REQUEST, "invalidRequest", &format!("Invalid $filter: {e}")),
    };
    let (total, end, page) = {
        let guard = sim.lock();
        let items = match guard.referrals.query(filter.as_ref(), token.o.as_deref()) {
            Ok(items) => items,
            Err(f) => return f.into_response(),
        };
        let total = items.len();
        let end = token.end.unwrap_or(total).min(total);
        let page: Vec<Value> = items
            .into_iter()
            .take(end)
            .skip(token.skip)
            .take(token.top)
            .map(|doc| project(doc.clone(), token.sel.as_deref()))
            .collect();
        (total, end, page)
    };
    let mut out = Map::new();
    out.insert("@odata.context".into(), json!(format!("{}/v1.0/$metadata#Referrals", sim.base_url)));
    out.insert("@odata.count".into(), json!(total));
    out.insert("value".into(), Value::Array(page));
    let next_skip = token.skip + token.top;
    if next_skip < end {
        let next = SkipToken { skip: next_skip, ..token };
        let raw =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&next).unwrap_or_default());
        let path = match sim.config.next_link_style {
            NextLinkStyle::Documented => "/v1.0/referrals",
            NextLinkStyle::Engagements => "/v1.0/engagements/referrals",
        };
        out.insert("@odata.nextLink".into(), json!(format!("{}{path}?$skiptoken={raw}", sim.base_url)));
    }
    (StatusCode::OK, axum::Json(Value::Object(out))).into_response()
}

fn project(doc: Value, select: Option<&str>) -> Value {
    let Some(select) = select else { return doc };
    let fields: Vec<&str> = select.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    match doc {
        Value::Object(m) => {
            Value::Object(m.into_iter().filter(|(k, _)| fields.iter().any(|f| f.eq_ignore_ascii_case(k))).collect())
        }
        other => other,
    }
}

async fn get_referral(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = authorize_referrals(&sim, &headers) {
        return r;
    }
    let doc = sim.lock().referrals.get(&id).map(|s| s.doc.clone());
    match doc {
        Some(doc) => single(&sim, StatusCode::OK, &doc),
        None => ApiFailure::NotFound(format!("Referral {id} was not found.")).into_response(),
    }
}

async fn create_referral(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorize_referrals(&sim, &headers).and_then(|()| require_json(&headers)) {
        return r;
    }
    let body = match parse_json(&body) {
        Ok(mut v) => {
            if let Value::Object(m) = &mut v {
                m.remove("@odata.context");
            }
            v
        }
        Err(r) => return r,
    };
    let now = sim.clock.now();
    let result = sim.lock().referrals.create(body, &sim.config.partner, &sim.base_url, now, sim.config.expiry);
    match result {
        Ok((doc, ev)) => {
            delivery::emit(&sim, ev.name, &ev.referral_id);
            let status = StatusCode::from_u16(sim.config.create_status).unwrap_or(StatusCode::OK);
            single(&sim, status, &doc)
        }
        Err(f) => f.into_response(),
    }
}

/// Parses a JSON Patch body: an array of `replace`/`add` operations.
fn parse_patch(body: &Value) -> Result<Vec<PatchOp>, Response> {
    let bad = |m: &str| pc_error(StatusCode::BAD_REQUEST, "invalidRequest", m);
    let ops = body.as_array().ok_or_else(|| bad("The request body must be a JSON Patch array."))?;
    if ops.is_empty() {
        return Err(bad("The JSON Patch document is empty."));
    }
    ops.iter()
        .map(|op| {
            let kind = op.get("op").and_then(Value::as_str).unwrap_or_default();
            let kind = match kind.to_ascii_lowercase().as_str() {
                "replace" => PatchOpKind::Replace,
                "add" => PatchOpKind::Add,
                other => return Err(bad(&format!("Patch operation {other:?} is not supported; use replace or add."))),
            };
            let path = op.get("path").and_then(Value::as_str).ok_or_else(|| bad("Every operation needs a path."))?;
            let value = op.get("value").cloned().ok_or_else(|| bad("Every operation needs a value."))?;
            Ok(PatchOp { op: kind, path: path.to_owned(), value })
        })
        .collect()
}

async fn patch_referral(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize_referrals(&sim, &headers).and_then(|()| require_json(&headers)) {
        return r;
    }
    let ops = match parse_json(&body).and_then(|v| parse_patch(&v)) {
        Ok(ops) => ops,
        Err(r) => return r,
    };
    let now = sim.clock.now();
    let result = sim.lock().referrals.patch(&id, &ops, if_match(&headers).as_deref(), now, true);
    match result {
        Ok((doc, ev)) => {
            delivery::emit(&sim, ev.name, &ev.referral_id);
            let representation = headers
                .get_all("prefer")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.to_ascii_lowercase().contains("return=representation"));
            if representation {
                single(&sim, StatusCode::OK, &doc)
            } else {
                let mut r = StatusCode::NO_CONTENT.into_response();
                if let Some(tag) = doc.get("eTag").and_then(Value::as_str).and_then(|t| HeaderValue::from_str(t).ok()) {
                    r.headers_mut().insert(header::ETAG, tag);
                }
                r
            }
        }
        Err(f) => f.into_response(),
    }
}

async fn put_referral(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize_referrals(&sim, &headers).and_then(|()| require_json(&headers)) {
        return r;
    }
    let body = match parse_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let now = sim.clock.now();
    let result = sim.lock().referrals.replace(&id, body, if_match(&headers).as_deref(), now);
    match result {
        Ok((doc, ev)) => {
            delivery::emit(&sim, ev.name, &ev.referral_id);
            single(&sim, StatusCode::OK, &doc)
        }
        Err(f) => f.into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Webhooks API

/// Event names this tenant may register for (reference §2.3).
pub(crate) const SUPPORTED_EVENTS: [&str; 9] = [
    "referral-created",
    "referral-updated",
    "related-referral-created",
    "related-referral-updated",
    "test-created",
    "subscription-updated",
    "usagerecords-thresholdExceeded",
    "invoice-ready",
    "azure-fraud-event-detected",
];

async fn list_events(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize_webhooks(&sim, &headers) {
        return r;
    }
    (StatusCode::OK, axum::Json(json!(SUPPORTED_EVENTS))).into_response()
}

fn registration_body(reg: &Registration, full: bool) -> Value {
    let mut v = json!({
        "SubscriberId": reg.subscriber_id,
        "WebhookUrl": reg.webhook_url,
        "WebhookEvents": reg.webhook_events,
    });
    if full {
        v["SignatureTokenToMsSignatureHeader"] = json!(reg.signature_token_to_ms_signature_header);
        v["LastModifiedTimestamp"] = json!(reg.last_modified_timestamp);
    }
    v
}

/// Reads a registration request; property names are case-insensitive (docs PascalCase, swagger camelCase).
fn parse_registration(sim: &Sim, body: &Bytes, subscriber_id: String) -> Result<Registration, Response> {
    let bad = |m: &str| csp_error(StatusCode::BAD_REQUEST, 400, m);
    let v: Value =
        serde_json::from_slice(body).map_err(|e| bad(&format!("The request body is not valid JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| bad("The request body must be a JSON object."))?;
    let field = |name: &str| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v);
    let url = field("WebhookUrl").and_then(Value::as_str).ok_or_else(|| bad("WebhookUrl is required."))?;
    let parsed = url::Url::parse(url).map_err(|_| bad("WebhookUrl must be an absolute URL."))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(bad("WebhookUrl must be an http(s) URL."));
    }
    let events: Vec<String> = field("WebhookEvents")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    if events.is_empty() {
        return Err(bad("WebhookEvents must list at least one event."));
    }
    if let Some(unknown) = events.iter().find(|e| !SUPPORTED_EVENTS.iter().any(|s| s.eq_ignore_ascii_case(e))) {
        return Err(bad(&format!("Event {unknown} is not supported.")));
    }
    let ms_header = field("SignatureTokenToMsSignatureHeader").and_then(Value::as_bool).unwrap_or(false);
    Ok(Registration {
        subscriber_id,
        webhook_url: url.to_owned(),
        webhook_events: events,
        signature_token_to_ms_signature_header: ms_header,
        last_modified_timestamp: sim.clock.now(),
    })
}

async fn get_registration(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize_webhooks(&sim, &headers) {
        return r;
    }
    match sim.lock().registration.clone() {
        Some(reg) => (StatusCode::OK, axum::Json(registration_body(&reg, true))).into_response(),
        None => csp_error(StatusCode::NOT_FOUND, 404, "No webhook registration exists for this partner."),
    }
}

async fn create_registration(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorize_webhooks(&sim, &headers) {
        return r;
    }
    if sim.lock().registration.is_some() {
        return csp_error(StatusCode::CONFLICT, 409, "A webhook registration already exists; use PUT to update it.");
    }
    let reg = match parse_registration(&sim, &body, sim.config.partner.organization_id.clone()) {
        Ok(r) => r,
        Err(r) => return r,
    };
    sim.lock().registration = Some(reg.clone());
    (StatusCode::OK, axum::Json(registration_body(&reg, false))).into_response()
}

async fn update_registration(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorize_webhooks(&sim, &headers) {
        return r;
    }
    let reg = match parse_registration(&sim, &body, sim.config.partner.organization_id.clone()) {
        Ok(r) => r,
        Err(r) => return r,
    };
    sim.lock().registration = Some(reg.clone());
    (StatusCode::OK, axum::Json(registration_body(&reg, false))).into_response()
}

/// Not in any Microsoft source ([GAP]); offered as a clearly-marked simulator extension.
async fn delete_registration(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize_webhooks(&sim, &headers) {
        return r;
    }
    match sim.lock().registration.take() {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => csp_error(StatusCode::NOT_FOUND, 404, "No webhook registration exists for this partner."),
    }
}

async fn send_validation_event(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize_webhooks(&sim, &headers) {
        return r;
    }
    let now = sim.clock.now();
    {
        let mut inner = sim.lock();
        let subscribed = inner
            .registration
            .as_ref()
            .is_some_and(|r| r.webhook_events.iter().any(|e| e.eq_ignore_ascii_case(EventName::TestCreated.as_str())));
        if !subscribed {
            return csp_error(StatusCode::BAD_REQUEST, 400, "The registration must include the test-created event.");
        }
        let window = chrono::Duration::minutes(1);
        while inner.validation_posts.front().is_some_and(|t| *t + window <= now) {
            inner.validation_posts.pop_front();
        }
        if inner.validation_posts.len() >= sim.config.validation_events_per_minute {
            let wait = inner.validation_posts.front().map(|t| (*t + window - now).num_seconds().max(1)).unwrap_or(60);
            let mut r =
                csp_error(StatusCode::TOO_MANY_REQUESTS, 429, "Too many validation events; 2 per minute are allowed.");
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
            return r;
        }
        inner.validation_posts.push_back(now);
    }
    let correlation_id = uuid::Uuid::new_v4().to_string();
    delivery::emit_test(&sim, &correlation_id);
    (StatusCode::OK, axum::Json(json!({"correlationId": correlation_id}))).into_response()
}

async fn get_validation_event(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(correlation_id): Path<String>,
) -> Response {
    if let Err(r) = authorize_webhooks(&sim, &headers) {
        return r;
    }
    let record = sim.lock().deliveries.iter().find(|d| d.correlation_id.as_deref() == Some(&correlation_id)).cloned();
    let Some(rec) = record else {
        return csp_error(StatusCode::NOT_FOUND, 404, "No validation event with this correlation id.");
    };
    let status = if rec.delivered {
        "completed"
    } else if rec.finished {
        "failed"
    } else {
        "pending"
    };
    let results: Vec<Value> = rec
        .attempts
        .iter()
        .map(|a| {
            let code = a
                .status
                .and_then(|s| StatusCode::from_u16(s).ok())
                .map(|s| s.canonical_reason().map(|r| r.replace(' ', "")).unwrap_or_else(|| s.as_str().to_owned()))
                .unwrap_or_default();
            json!({
                "responseCode": code,
                "responseMessage": a.error.clone().unwrap_or_default(),
                "systemError": a.status.is_none(),
                "dateTimeUtc": a.at.format("%Y-%m-%dT%H:%M:%S%.f").to_string(),
            })
        })
        .collect();
    (
        StatusCode::OK,
        axum::Json(json!({
            "correlationId": correlation_id,
            "partnerId": sim.config.partner.organization_id,
            "status": status,
            "callbackUrl": rec.url,
            "results": results,
        })),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Certificate

async fn certificate(State(sim): State<Arc<Sim>>) -> Response {
    sim.lock().certificate_downloads += 1;
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/pkix-cert")], sim.signer.cert_der.to_vec()).into_response()
}
