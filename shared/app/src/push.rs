//! CRM changes pushed to the receiver: `POST /crm/dataverse`, a Dataverse webhook (a
//! `serviceendpoint` with contract 8 and an async post-operation step per table, registered by
//! `cosell crm push enable` or the webhook-registration function).
//!
//! Like the Partner Center route it only checks, parses and enqueues: it makes no CRM call, so it
//! answers within milliseconds, far inside Dataverse's 60 s timeout. It puts on `crm-changes.fifo`
//! the same [`WorkItem::Crm`] the poller sends for a record (group = the CRM record), so the worker
//! reads the record fresh and plans from the snapshot: the push only says *which* record changed.
//! The poll stays as the safety net for pushes that never come (Dataverse retries a delivery once,
//! and a failed asynchronous job is not re-driven).
//!
//! Protocol facts this relies on (MicrosoftDocs/powerapps-docs, `developer/data-platform/`):
//! - `use-webhooks.md`: the body is the JSON-serialised `RemoteExecutionContext` (`MessageName`,
//!   `PrimaryEntityName`, `PrimaryEntityId`, `Depth`, `InitiatingUserId`, `OperationId`,
//!   `OperationCreatedOn` as `"\/Date(<ms>[±hhmm])\/"`, `PostEntityImages` as `{key, value}`
//!   pairs, lookups as `EntityReference` objects with `Id` and `LogicalName`); over 256 KB the
//!   header `x-ms-dynamics-msg-size-exceeded` is sent and `InputParameters`, `ParentContext` and
//!   the images are removed, `PrimaryEntityId`/`PrimaryEntityName` remain. Any 2xx is success;
//!   Dataverse retries once on 502, 503 and 504 only.
//! - `register-web-hook.md`: with the HttpHeader authentication the endpoint receives the
//!   registered key/value pairs as request headers, and "it is the responsibility of the
//!   endpoint" to reject requests whose keys do not match.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use cosell_core::ids::CrmRef;
use cosell_core::ports::queue::MessageQueue;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::work::{Arrival, WorkItem};

/// The path Dataverse posts to.
pub const DATAVERSE_PATH: &str = "/crm/dataverse";
/// The HttpHeader key that carries the shared secret (registered in the endpoint's `authvalue`).
pub const SECRET_HEADER: &str = "x-cosell-webhook-key";
/// A second registered header: the connector's application user id (from `WhoAmI` at
/// registration), so that the receiver, which has no CRM credentials, can drop our own writes. It is
/// trusted only on a delivery whose secret matched: both come from the same registration.
pub const APP_USER_HEADER: &str = "x-cosell-app-user";
/// Sent by Dataverse when the context was over 256 KB and trimmed.
pub const SIZE_EXCEEDED_HEADER: &str = "x-ms-dynamics-msg-size-exceeded";
/// The post-image alias the registration asks for on the solution-row table's steps: it carries the
/// row's opportunity lookup, which names the opportunity to sync.
pub const OPPORTUNITY_IMAGE: &str = "CosellOpportunity";

/// What the Dataverse route needs.
#[derive(Debug)]
pub struct DataverseReceiver<Q> {
    /// The shared secret of the registered endpoint.
    pub secret: Arc<SecretString>,
    /// The connector's application user, when known here (configuration); otherwise taken from the
    /// registered [`APP_USER_HEADER`].
    pub app_user_id: Option<String>,
    /// `crm-changes.fifo`.
    pub queue: Q,
}

impl<Q: Clone> Clone for DataverseReceiver<Q> {
    fn clone(&self) -> Self {
        Self { secret: self.secret.clone(), app_user_id: self.app_user_id.clone(), queue: self.queue.clone() }
    }
}

/// `POST /crm/dataverse`; merge it into the receiver's router.
pub fn dataverse_router<Q>(receiver: DataverseReceiver<Q>) -> Router
where
    Q: MessageQueue + Clone + 'static,
{
    Router::new().route(DATAVERSE_PATH, post(receive_dataverse::<Q>)).with_state(receiver)
}

/// A generated shared secret: 32 random bytes as hex (header-safe, 256 bits).
pub fn generate_secret() -> SecretString {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    SecretString::from(hex::encode(bytes))
}

/// Equal secrets, compared in constant time: both sides are hashed to 32 bytes first, so neither
/// the content nor the length of the expected secret leaks through timing.
pub fn secret_matches(expected: &SecretString, given: Option<&str>) -> bool {
    let Some(given) = given else { return false };
    let a = Sha256::digest(expected.expose_secret().as_bytes());
    let b = Sha256::digest(given.as_bytes());
    bool::from(a.ct_eq(&b))
}

/// The parts of a `RemoteExecutionContext` the route uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecutionContext {
    pub message_name: String,
    pub primary_entity_name: String,
    pub primary_entity_id: String,
    #[serde(default)]
    pub depth: Option<i64>,
    #[serde(default)]
    pub initiating_user_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub operation_id: Option<String>,
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub operation_created_on: Option<String>,
    #[serde(default)]
    pub post_entity_images: Option<Vec<KeyValue>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KeyValue {
    pub key: String,
    #[serde(default)]
    pub value: Value,
}

impl ExecutionContext {
    /// `"\/Date(1506409448000-0700)\/"` (WCF JSON): milliseconds since the epoch in UTC; the offset
    /// only says where the server was.
    pub fn created_on(&self) -> Option<DateTime<Utc>> {
        let raw = self.operation_created_on.as_deref()?;
        let inner = raw.split_once("Date(")?.1;
        let end = inner.char_indices().skip(1).find(|(_, c)| !c.is_ascii_digit()).map_or(inner.len(), |(i, _)| i);
        DateTime::from_timestamp_millis(inner[..end].parse().ok()?)
    }

    /// The opportunity a related row (a solution row) points to, from the registered post-image.
    fn imaged_opportunity(&self) -> Option<String> {
        let images = self.post_entity_images.as_ref()?;
        let image = images.iter().find(|i| i.key == OPPORTUNITY_IMAGE)?;
        image.value.get("Attributes")?.as_array()?.iter().find_map(|a| {
            let v = a.get("value")?;
            (v.get("LogicalName")?.as_str()? == "opportunity").then(|| v.get("Id")?.as_str().map(str::to_owned))?
        })
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn refuse(status: StatusCode, error: &str, detail: impl Into<String>) -> Response {
    let detail = detail.into();
    tracing::warn!(status = status.as_u16(), error, %detail, "Dataverse delivery refused");
    answer(status, json!({ "error": error, "detail": detail }))
}

#[tracing::instrument(name = "dataverse_push", skip_all, fields(entity, record, message))]
async fn receive_dataverse<Q: MessageQueue>(
    State(r): State<DataverseReceiver<Q>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => return crate::receiver::unreadable(&rejection),
    };
    let given = headers.get(SECRET_HEADER).and_then(|v| v.to_str().ok());
    if !secret_matches(&r.secret, given) {
        let why = if given.is_some() { "the webhook key does not match" } else { "no webhook key header" };
        return refuse(StatusCode::UNAUTHORIZED, "unauthenticated", format!("{why} ({SECRET_HEADER})"));
    }
    let context: ExecutionContext = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "malformed_context",
                format!("the body is not a Dataverse RemoteExecutionContext: {e}"),
            );
        }
    };
    let span = tracing::Span::current();
    span.record("entity", context.primary_entity_name.as_str());
    span.record("record", context.primary_entity_id.as_str());
    span.record("message", context.message_name.as_str());
    let trimmed = headers.contains_key(SIZE_EXCEEDED_HEADER);
    let app_user =
        r.app_user_id.clone().or_else(|| headers.get(APP_USER_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned));
    // Our own writes (the sync writing back its result) come back as deliveries too; the link
    // already holds what we wrote, so they are not work.
    if let (Some(me), Some(by)) = (app_user.as_deref(), context.initiating_user_id.as_deref())
        && me.eq_ignore_ascii_case(by)
    {
        tracing::debug!(depth = context.depth, "own write ignored");
        return answer(StatusCode::OK, json!({ "status": "ignored", "reason": "the connector's own write" }));
    }
    if !matches!(context.message_name.as_str(), "Create" | "Update") {
        tracing::info!("message not handled; ignored");
        return answer(StatusCode::OK, json!({ "status": "ignored", "reason": "message not handled" }));
    }
    let (entity, id) = match context.primary_entity_name.as_str() {
        e @ ("opportunity" | "lead") => (e.to_owned(), context.primary_entity_id.clone()),
        other => match context.imaged_opportunity() {
            Some(opportunity) => ("opportunity".to_owned(), opportunity),
            None => {
                // A related row whose image was trimmed (or never registered): the poll's solution
                // feed covers it.
                tracing::info!(entity = other, trimmed, "related row without its opportunity image; left to the poll");
                return answer(
                    StatusCode::OK,
                    json!({ "status": "ignored", "reason": "no opportunity named; the poll covers it" }),
                );
            }
        },
    };
    let record = match CrmRef::parse(entity, id.to_ascii_lowercase()) {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "bad_record_id", e.to_string()),
    };
    // One message per pushed change: two deliveries of one change (the retry, a duplicate) carry
    // the same operation, so the queue's deduplication keeps one; two changes are two operations.
    let change = context
        .operation_id
        .clone()
        .or_else(|| context.correlation_id.clone())
        .unwrap_or_else(|| hex::encode(&Sha256::digest(&body)[..16]));
    let item = WorkItem::crm_change(record.clone(), format!("push:{change}"), Arrival::Push, context.created_on());
    if let Err(e) = r.queue.send(&item.to_message()).await {
        tracing::error!(error = %e, "could not enqueue; Dataverse retries once on 503, then the poll covers it");
        let mut response = answer(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": "temporarily_unavailable" }));
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return response;
    }
    tracing::info!(depth = context.depth, trimmed, "queued");
    answer(StatusCode::ACCEPTED, json!({ "status": "queued", "record": record.key() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wcf_date_of_the_operation_is_read_in_utc() {
        let c: ExecutionContext = serde_json::from_value(json!({
            "MessageName": "Update", "PrimaryEntityName": "contact", "PrimaryEntityId": "x",
            "OperationCreatedOn": "/Date(1506409448000-0700)/"}))
        .unwrap();
        assert_eq!(c.created_on().unwrap().to_rfc3339(), "2017-09-26T07:04:08+00:00");
    }

    #[test]
    fn secrets_match_only_when_equal() {
        let s = SecretString::from("abc".to_owned());
        assert!(secret_matches(&s, Some("abc")));
        assert!(!secret_matches(&s, Some("abd")));
        assert!(!secret_matches(&s, Some("")));
        assert!(!secret_matches(&s, None));
        assert_ne!(generate_secret().expose_secret(), generate_secret().expose_secret());
        assert_eq!(generate_secret().expose_secret().len(), 64);
    }
}
