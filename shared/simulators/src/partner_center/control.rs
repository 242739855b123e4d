//! The control API under `/_sim/`: tests and demos act as the Microsoft seller (inbound referrals,
//! accepting or declining co-sell invitations, updates, closing, Microsoft CRM ids), inject faults,
//! move the clock, manage users and tokens, and read the delivery log. Not part of Partner Center.
//!
//! | method + path | body | effect |
//! |---|---|---|
//! | `GET /_sim/referrals` | – | every stored referral |
//! | `POST /_sim/referrals/inbound` | partial referral (defaults fill the rest) | Microsoft refers a deal: the partner's referral New/Pending (Incoming, invited by `msft`), plus Microsoft's side when `Shared`; 201 `{referral, microsoftReferral}` |
//! | `POST /_sim/referrals/{id}/accept` | – | Active/Accepted (e.g. Microsoft accepts a co-sell invitation) |
//! | `POST /_sim/referrals/{id}/decline` | `{reason?}` | Closed/Declined |
//! | `POST /_sim/referrals/{id}/update` | `{dealValue?, closingDateTime?, notes?, currency?}` | seller update |
//! | `POST /_sim/referrals/{id}/close` | `{outcome: "won"\|"lost", reason?}` | Closed/Won or Closed/Lost |
//! | `POST /_sim/referrals/{id}/msx` | `{microsoftMsxId}` | sets `trackingInfo.microsoftMsxId` |
//! | `POST /_sim/referrals/{id}/patch` | JSON Patch array | any change, under the transition rules |
//! | `GET/POST/DELETE /_sim/faults` | [`super::Fault`] | list / add / clear injected faults |
//! | `GET /_sim/clock`, `POST /_sim/clock/advance` | `{seconds?, days?}` | read / move business time (runs expiry) |
//! | `POST /_sim/expire` | – | run the 14-day expiry now |
//! | `GET /_sim/deliveries` | – | webhook delivery log with every attempt |
//! | `POST /_sim/users` | [`super::SimUser`] | add or replace a user (roles, expired password) |
//! | `POST /_sim/auth/expire-refresh-tokens`, `…/expire-access-tokens` | – | force the credential paths |
//!
//! Every referral change made here emits the same webhook events as one made through the API.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Duration;
use cosell_core::referral::{EventName, PatchOp};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::store::{Owner, microsoft_org};
use super::{Fault, Sim, SimUser, delivery};

pub(crate) fn router() -> Router<Arc<Sim>> {
    Router::new()
        .route("/referrals", get(all_referrals))
        .route("/referrals/inbound", post(inbound))
        .route("/referrals/{id}/accept", post(accept))
        .route("/referrals/{id}/decline", post(decline))
        .route("/referrals/{id}/update", post(update))
        .route("/referrals/{id}/close", post(close))
        .route("/referrals/{id}/msx", post(set_msx))
        .route("/referrals/{id}/patch", post(raw_patch))
        .route("/faults", get(list_faults).post(add_fault).delete(clear_faults))
        .route("/clock", get(clock))
        .route("/clock/advance", post(advance_clock))
        .route("/expire", post(run_expiry))
        .route("/deliveries", get(deliveries))
        .route("/users", post(upsert_user))
        .route("/auth/expire-refresh-tokens", post(expire_refresh_tokens))
        .route("/auth/expire-access-tokens", post(expire_access_tokens))
}

fn failure(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": {"code": "invalidRequest", "message": message}}))).into_response()
}

async fn all_referrals(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let docs: Vec<Value> = sim.lock().referrals.all().map(|s| s.doc.clone()).collect();
    Json(Value::Array(docs))
}

/// A Microsoft seller refers a customer to the partner: the partner's referral lands New/Pending
/// (Incoming, invited by `msft`), with Microsoft's own side of the engagement beside it when Shared.
/// The body is a (partial) referral; defaults make a complete co-sell opportunity.
async fn inbound(State(sim): State<Arc<Sim>>, Json(body): Json<Value>) -> Response {
    match create_inbound(&sim, body) {
        Ok((referral, microsoft)) => {
            (StatusCode::CREATED, Json(json!({"referral": referral, "microsoftReferral": microsoft}))).into_response()
        }
        Err(message) => failure(StatusCode::BAD_REQUEST, &message),
    }
}

/// See [`inbound`]. Returns the partner's referral and Microsoft's side (when `Shared`).
pub(crate) fn create_inbound(sim: &Arc<Sim>, body: Value) -> Result<(Value, Option<Value>), String> {
    let Value::Object(fields) = body else { return Err("body must be a JSON object".into()) };
    let now = sim.clock.now();
    let at = |t: chrono::DateTime<chrono::Utc>| json!(cosell_core::referral::WireTime(t).to_wire());
    let engagement = uuid::Uuid::new_v4().to_string();
    let partner = &sim.config.partner;
    let mut doc: Map<String, Value> = json!({
        "name": "Inbound co-sell opportunity",
        "type": "Shared",
        "qualification": "SalesQualified",
        "customerProfile": {"name": "Fabrikam Inc", "size": "51to250employees",
            "address": {"addressLine1": "1 Main St", "city": "Bellevue", "state": "WA", "postalCode": "98004", "country": "US"},
            "team": [{"firstName": "Sue", "lastName": "Smith", "phoneNumber": "4255550100", "email": "sue@fabrikam.example"}]},
        "consent": {"consentToToShareInfoWithOthers": true, "consentToContact": true, "consentToShareReferralWithMicrosoftSellers": true},
        "details": {"notes": "Customer needs help with an Azure migration", "dealValue": 30000, "currency": "USD",
            "closingDateTime": at(now + Duration::days(60)),
            "requirements": {"solutions": [{"id": "SOL-6115380-IPC", "type": "Name"}]}},
        "team": [{"firstName": "Mia", "lastName": "Seller", "email": "mia@microsoft.example"}],
        "inviteContext": {"notes": "Please engage", "invitedBy": microsoft_org(), "assistanceRequestCode": "GeneralOrOther"},
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    doc.extend(fields);
    let shared = doc.get("type").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("Shared"));
    doc.insert("engagementId".into(), json!(engagement));
    doc.insert("organizationId".into(), json!(partner.organization_id));
    doc.insert("organizationName".into(), json!(partner.organization_name));
    doc.insert("mpnId".into(), json!(partner.mpn_id));
    doc.insert("direction".into(), json!("Incoming"));
    doc.insert("status".into(), json!("New"));
    doc.insert("substatus".into(), json!("Pending"));
    doc.insert("createdDateTime".into(), at(now));
    doc.insert("updatedDateTime".into(), at(now));
    doc.insert("expirationDateTime".into(), at(now + sim.config.expiry));
    doc.insert("target".into(), json!([{"type": "BusinessProfileLocation", "id": partner.organization_id}]));
    // Whatever the caller overrode must still be a referral the API could return.
    serde_json::from_value::<cosell_core::referral::Referral>(Value::Object(doc.clone()))
        .map_err(|e| format!("not a valid referral: {e}"))?;
    let mut inner = sim.lock();
    let microsoft = shared.then(|| {
        let mut ms = doc.clone();
        ms.remove("id");
        ms.insert("organizationId".into(), json!("msft"));
        ms.insert("organizationName".into(), json!("Microsoft"));
        ms.insert("direction".into(), json!("Outgoing"));
        ms.insert("status".into(), json!("Active"));
        ms.insert("substatus".into(), json!("Accepted"));
        ms.insert("acceptedDateTime".into(), at(now));
        ms.insert("expirationDateTime".into(), Value::Null);
        inner.referrals.insert(ms, Owner::Microsoft, &sim.base_url)
    });
    let created = inner.referrals.insert(doc, Owner::Partner, &sim.base_url);
    drop(inner);
    if let Some(id) = created.get("id").and_then(Value::as_str) {
        delivery::emit(sim, EventName::ReferralCreated, id);
    }
    Ok((created, microsoft))
}

/// Applies `ops` as the service itself (no eTag, no read-only check, transition rules enforced).
fn act(sim: &Arc<Sim>, id: &str, ops: &[PatchOp]) -> Response {
    let now = sim.clock.now();
    let result = sim.lock().referrals.patch(id, ops, None, now, false);
    match result {
        Ok((doc, ev)) => {
            delivery::emit(sim, ev.name, &ev.referral_id);
            (StatusCode::OK, Json(doc)).into_response()
        }
        Err(f) => f.into_response(),
    }
}

async fn accept(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> Response {
    act(&sim, &id, &cosell_core::referral::patch::ops::accept())
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Reason {
    #[serde(default)]
    reason: Option<String>,
}

async fn decline(State(sim): State<Arc<Sim>>, Path(id): Path<String>, body: Option<Json<Reason>>) -> Response {
    let reason = body.and_then(|b| b.0.reason).unwrap_or_else(|| "Declined by the Microsoft seller".into());
    act(&sim, &id, &cosell_core::referral::patch::ops::decline(&reason))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SellerUpdate {
    deal_value: Option<f64>,
    closing_date_time: Option<String>,
    notes: Option<String>,
    currency: Option<String>,
}

async fn update(State(sim): State<Arc<Sim>>, Path(id): Path<String>, Json(u): Json<SellerUpdate>) -> Response {
    let mut ops = Vec::new();
    if let Some(v) = u.deal_value {
        ops.push(PatchOp::add("/details/dealValue", v));
    }
    if let Some(v) = u.closing_date_time {
        ops.push(PatchOp::add("/details/closingDateTime", v));
    }
    if let Some(v) = u.notes {
        ops.push(PatchOp::add("/details/notes", v));
    }
    if let Some(v) = u.currency {
        ops.push(PatchOp::add("/details/currency", v));
    }
    if ops.is_empty() {
        return failure(
            StatusCode::BAD_REQUEST,
            "nothing to update: give dealValue, closingDateTime, notes or currency",
        );
    }
    act(&sim, &id, &ops)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Close {
    /// `won` or `lost`.
    outcome: String,
    #[serde(default)]
    reason: Option<String>,
}

async fn close(State(sim): State<Arc<Sim>>, Path(id): Path<String>, Json(c): Json<Close>) -> Response {
    let to = match c.outcome.to_ascii_lowercase().as_str() {
        "won" => cosell_core::referral::Lifecycle::ClosedWon,
        "lost" => cosell_core::referral::Lifecycle::ClosedLost,
        other => return failure(StatusCode::BAD_REQUEST, &format!("outcome must be won or lost, not {other:?}")),
    };
    let mut ops = cosell_core::referral::patch::ops::move_to(to);
    if let Some(r) = c.reason {
        ops.push(PatchOp::add("/statusReason", r));
    }
    act(&sim, &id, &ops)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Msx {
    microsoft_msx_id: String,
}

async fn set_msx(State(sim): State<Arc<Sim>>, Path(id): Path<String>, Json(m): Json<Msx>) -> Response {
    act(&sim, &id, &[PatchOp::add("/trackingInfo/microsoftMsxId", m.microsoft_msx_id)])
}

async fn raw_patch(State(sim): State<Arc<Sim>>, Path(id): Path<String>, Json(ops): Json<Vec<PatchOp>>) -> Response {
    act(&sim, &id, &ops)
}

async fn list_faults(State(sim): State<Arc<Sim>>) -> Json<Vec<Fault>> {
    Json(sim.lock().faults.clone())
}

async fn add_fault(State(sim): State<Arc<Sim>>, Json(fault): Json<Fault>) -> StatusCode {
    sim.lock().faults.push(fault);
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.lock().faults.clear();
    StatusCode::NO_CONTENT
}

async fn clock(State(sim): State<Arc<Sim>>) -> Json<Value> {
    Json(json!({"now": sim.clock.now()}))
}

#[derive(Debug, Deserialize)]
struct Advance {
    #[serde(default)]
    seconds: i64,
    #[serde(default)]
    days: i64,
}

async fn advance_clock(State(sim): State<Arc<Sim>>, Json(a): Json<Advance>) -> Json<Value> {
    sim.clock.advance(Duration::seconds(a.seconds) + Duration::days(a.days));
    sim.run_expiry();
    Json(json!({"now": sim.clock.now()}))
}

async fn run_expiry(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.run_expiry();
    StatusCode::NO_CONTENT
}

async fn deliveries(State(sim): State<Arc<Sim>>) -> Json<Value> {
    Json(json!(sim.lock().deliveries))
}

async fn upsert_user(State(sim): State<Arc<Sim>>, Json(user): Json<SimUser>) -> StatusCode {
    sim.lock().auth.upsert_user(user);
    StatusCode::NO_CONTENT
}

async fn expire_refresh_tokens(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let n = sim.lock().auth.expire_refresh_tokens();
    Json(json!({"expired": n}))
}

async fn expire_access_tokens(State(sim): State<Arc<Sim>>) -> StatusCode {
    let now = sim.clock.now();
    sim.lock().auth.expire_access_tokens(now);
    StatusCode::NO_CONTENT
}
