//! The webhook receiver (R1): verify, check for a replay, enqueue, answer — and nothing else. It
//! makes no Partner Center or CRM call, so it answers in milliseconds and never loses a delivery to
//! a slow downstream.
//!
//! An axum `Router`, so that the same code serves API Gateway through `lambda_http` and a plain
//! local server in `cosell run` / `cosell sandbox`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cosell_core::ports::queue::MessageQueue;
use cosell_core::ports::state::DedupStore;
use cosell_core::referral::EventName;
use cosell_partner_center::webhook::WebhookVerifier;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::work::WorkItem;

/// The path Partner Center posts to.
pub const WEBHOOK_PATH: &str = "/webhook";

/// How long a delivery's body is remembered to refuse a replay of it.
pub const REPLAY_WINDOW_HOURS: i64 = 72;

/// What the receiver needs.
#[derive(Debug)]
pub struct Receiver<Q, D> {
    pub verifier: Arc<WebhookVerifier>,
    /// `pc-events.fifo`.
    pub queue: Q,
    pub dedup: D,
}

impl<Q: Clone, D: Clone> Clone for Receiver<Q, D> {
    fn clone(&self) -> Self {
        Self { verifier: self.verifier.clone(), queue: self.queue.clone(), dedup: self.dedup.clone() }
    }
}

/// `POST /webhook` and `GET /health`.
pub fn router<Q, D>(receiver: Receiver<Q, D>) -> Router
where
    Q: MessageQueue + Clone + 'static,
    D: DedupStore + Clone + 'static,
{
    Router::new()
        .route(WEBHOOK_PATH, post(receive::<Q, D>))
        .route("/health", get(|| async { (StatusCode::OK, axum::Json(json!({ "status": "ok" }))) }))
        .with_state(receiver)
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// A body axum refuses to buffer (over its 2 MiB limit, or cut off): the same JSON refusal as every
/// other bad delivery on every route of the receiver, not axum's plain-text one.
pub(crate) fn unreadable(rejection: &BytesRejection) -> Response {
    let status = rejection.status();
    let error = if status == StatusCode::PAYLOAD_TOO_LARGE { "body_too_large" } else { "unreadable_body" };
    tracing::warn!(reason = error, status = status.as_u16(), "delivery rejected");
    answer(status, json!({ "error": error, "detail": rejection.body_text() }))
}

#[tracing::instrument(name = "webhook", skip_all, fields(event, referral))]
async fn receive<Q: MessageQueue, D: DedupStore>(
    State(r): State<Receiver<Q, D>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => return unreadable(&rejection),
    };
    let delivered = match r.verifier.verify(&headers, &body).await {
        Ok(d) => d,
        Err(rejection) => {
            tracing::warn!(
                reason = rejection.reason(),
                status = rejection.status(),
                bytes = body.len(),
                "delivery rejected"
            );
            let status = StatusCode::from_u16(rejection.status()).unwrap_or(StatusCode::BAD_REQUEST);
            return answer(status, json!({ "error": rejection.reason(), "detail": rejection.to_string() }));
        }
    };
    let event = delivered.event;
    tracing::Span::current().record("event", event.event_name.as_str());
    match &event.event_name {
        EventName::TestCreated => {
            tracing::info!("test event received");
            return answer(StatusCode::OK, json!({ "status": "test event received" }));
        }
        name if !name.is_referral_event() => {
            tracing::info!(event = name.as_str(), "event ignored: the connector does not handle it");
            return answer(StatusCode::OK, json!({ "status": "ignored", "event": name.as_str() }));
        }
        _ => {}
    }
    let id = match event.referral_id() {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e, "signed delivery without a usable referral id");
            return answer(StatusCode::BAD_REQUEST, json!({ "error": "no_referral_id", "detail": e.to_string() }));
        }
    };
    tracing::Span::current().record("referral", id.as_str());
    // A genuine body seen before is a replay (or a redelivery of one we already queued).
    let key = format!("delivery#{}", hex::encode(Sha256::digest(&body)));
    match r.dedup.claim(&key, chrono::Duration::hours(REPLAY_WINDOW_HOURS)).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("replayed delivery refused");
            return answer(
                StatusCode::CONFLICT,
                json!({ "error": "replayed_delivery", "detail": "this delivery was already received" }),
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "dedup store unavailable");
            return unavailable();
        }
    }
    let item = WorkItem::referral(id.clone(), event.event_name.as_str(), Some(event.resource_change_utc_date.0));
    if let Err(e) = r.queue.send(&item.to_message()).await {
        tracing::error!(error = %e, "could not enqueue; Partner Center will retry");
        // Give the claim back so that Partner Center's retry is not taken for a replay.
        if let Err(e) = r.dedup.release(&key).await {
            tracing::error!(error = %e, "could not release the delivery claim");
        }
        return unavailable();
    }
    tracing::info!("queued");
    answer(StatusCode::OK, json!({ "status": "queued", "referral": id.as_str() }))
}

fn unavailable() -> Response {
    let mut response = answer(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": "temporarily_unavailable" }));
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}
