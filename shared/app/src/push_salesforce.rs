//! `POST /crm/salesforce/events`: for `cosell run` / `cosell sandbox`, where no EventBridge exists,
//! the receiver takes the Event Relay envelope itself (the Salesforce simulator's change event
//! sink points here) and enqueues it exactly as the stack's rule target does (`template.yaml`,
//! `SalesforceChangeEventsRule`): the whole event as the body, one fixed message group, the
//! deduplication id derived from the body (the queue's content-based deduplication in AWS). The
//! crm-to-pc worker then handles it like a relayed event (`relay`): one work item per record.
//!
//! Only the record ids of an event are used, and the worker reads each record fresh; a forged event
//! costs a read, never a wrong write. The route is still mounted only where push is configured.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use cosell_core::ports::queue::{MessageQueue, OutgoingMessage};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::relay::{RelayedEvent, is_relayed_event};

/// The path the sink posts to.
pub const SALESFORCE_EVENTS_PATH: &str = "/crm/salesforce/events";
/// The message group of every relayed event, as the rule's `SqsParameters.MessageGroupId`.
pub const RELAYED_GROUP: &str = "salesforce-change-events";

/// The queue message the EventBridge target would send for this event.
pub fn relayed_message(body: &str) -> OutgoingMessage {
    OutgoingMessage::new(RELAYED_GROUP, hex::encode(Sha256::digest(body.as_bytes())), body)
}

/// `POST /crm/salesforce/events` onto `queue` (`crm-changes.fifo`).
pub fn salesforce_events_router<Q>(queue: Q) -> Router
where
    Q: MessageQueue + Clone + 'static,
{
    Router::new().route(SALESFORCE_EVENTS_PATH, post(receive::<Q>)).with_state(queue)
}

#[tracing::instrument(name = "salesforce_push", skip_all)]
async fn receive<Q: MessageQueue>(State(queue): State<Q>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => return crate::receiver::unreadable(&rejection),
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "malformed_event", "the body is not UTF-8".into());
    };
    if !is_relayed_event(text) {
        return refuse(StatusCode::BAD_REQUEST, "malformed_event", "the body is not an EventBridge event".into());
    }
    if let Err(e) = RelayedEvent::parse(text) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "malformed_event",
            format!("not a relayed Salesforce change event: {e}"),
        );
    }
    match queue.send(&relayed_message(text)).await {
        Ok(()) => (StatusCode::OK, axum::Json(json!({"status": "queued"}))).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not enqueue a change event; the poll covers it");
            let detail = "the queue is unavailable; the next poll picks the change up".to_owned();
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"error": "temporarily_unavailable", "detail": detail})))
                .into_response()
        }
    }
}

/// Every refusal in the receiver's one JSON shape, `{"error", "detail"}`.
fn refuse(status: StatusCode, error: &str, detail: String) -> Response {
    tracing::warn!(status = status.as_u16(), error, %detail, "change event refused");
    (status, axum::Json(json!({ "error": error, "detail": detail }))).into_response()
}
