//! The receiver's Lambda edge: the shared axum routers, which `lambda_http` serves for API Gateway
//! HTTP API (payload format 2.0) events.
//!
//! - `POST /webhook`, `GET /health` ([`cosell_app::receiver::router`]): status codes 401
//!   forged/unsigned, 400 malformed, 413 too large, 415 not JSON, 409 replay, 200
//!   queued/ignored/test, 503 queue down.
//! - `POST /crm/dataverse` ([`cosell_app::push::dataverse_router`]), with the stack's Dynamics push
//!   on: 401 without the shared key, 202 queued to `crm-changes.fifo`, 200 ignored (our own write,
//!   another message), 400 not a `RemoteExecutionContext`, 503 queue down. With push off the route
//!   is not served (404), and nothing of the CRM secret is read.

use std::sync::Arc;

use axum::http::StatusCode;
use cosell_app::push::{DATAVERSE_PATH, DataverseReceiver, dataverse_router};
use cosell_app::receiver::{Receiver, router};
use cosell_core::ports::queue::MessageQueue;
use cosell_core::ports::state::DedupStore;
use cosell_partner_center::{VerifierConfig, WebhookVerifier};
use secrecy::SecretString;
use serde_json::json;

/// The verifier's configuration in Lambda: Microsoft's certificate host and organisation, nothing
/// test-only.
pub fn verifier_config() -> VerifierConfig {
    VerifierConfig::default()
}

/// The Dataverse route, as the stack configures it (`DynamicsPush`).
#[derive(Debug)]
pub enum DataversePush<Q> {
    /// Push off: no route.
    Off,
    /// Push on: deliveries carrying `key` are enqueued to `queue` (`crm-changes.fifo`).
    On { key: SecretString, queue: Q },
    /// Push on, but the key could not be read at init (the reason is logged then). Deliveries get
    /// 503: Dataverse retries once, then the poll finds the change. The Partner Center route is
    /// unaffected, which is why this is not an init failure.
    Unavailable,
}

impl<Q> DataversePush<Q> {
    /// From what `cosell_lambda::push::receiver_key` read: `None` is push off.
    pub fn from_key<E: std::fmt::Display>(key: Option<Result<SecretString, E>>, queue: Q) -> Self {
        match key {
            None => DataversePush::Off,
            Some(Ok(key)) => DataversePush::On { key, queue },
            Some(Err(e)) => {
                tracing::error!(error = %e, "Dynamics push is on but the webhook key is unusable: /crm/dataverse answers 503");
                DataversePush::Unavailable
            }
        }
    }
}

/// The service `lambda_http::run` serves.
pub fn app<Q, D, C>(verifier: Arc<WebhookVerifier>, queue: Q, dedup: D, dataverse: DataversePush<C>) -> axum::Router
where
    Q: MessageQueue + Clone + 'static,
    D: DedupStore + Clone + 'static,
    C: MessageQueue + Clone + 'static,
{
    let partner_center = router(Receiver { verifier, queue, dedup });
    match dataverse {
        DataversePush::Off => partner_center,
        // The application user is not known here (no CRM call): the registration sends it as a
        // header, trusted only on a delivery whose key matched.
        DataversePush::On { key, queue } => partner_center.merge(dataverse_router(DataverseReceiver {
            secret: Arc::new(key),
            app_user_id: None,
            queue,
        })),
        DataversePush::Unavailable => partner_center.route(
            DATAVERSE_PATH,
            axum::routing::post(|| async {
                tracing::warn!("Dataverse delivery refused: the webhook key could not be read at start");
                // Nothing about the cause: the route is public.
                (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "error": "temporarily_unavailable" })))
            }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cosell_core::ManualClock;
    use cosell_core::fakes::{InMemoryQueue, InMemoryState};
    use lambda_http::request::LambdaRequest;
    use lambda_http::{Adapter, Context, LambdaEvent};
    use tower::ServiceExt;

    use super::*;

    /// The key the Dataverse fixtures' genuine deliveries carry.
    const KEY: &str = "9c4b2e7a1f3d5c6b8a0e2d4f6a8c0b1d3e5f7a9c1b3d5e7f9a1c3e5b7d9f1a3c";
    /// The opportunity they name.
    const OPPORTUNITY: &str = "b1e2c3d4-5f60-4a7b-8c9d-0e1f2a3b4c5d";

    struct Rig {
        pc_events: InMemoryQueue,
        crm_changes: InMemoryQueue,
        app: axum::Router,
    }

    fn rig_with(push: fn(InMemoryQueue) -> DataversePush<InMemoryQueue>) -> Rig {
        let pc_events = InMemoryQueue::new(5);
        let crm_changes = InMemoryQueue::new(5);
        let state = InMemoryState::new(ManualClock::new("2026-05-01T09:18:02Z".parse().unwrap()));
        let verifier = Arc::new(WebhookVerifier::new(verifier_config()).unwrap());
        Rig { app: app(verifier, pc_events.clone(), state, push(crm_changes.clone())), pc_events, crm_changes }
    }

    fn rig() -> Rig {
        rig_with(|_| DataversePush::Off)
    }

    fn push_rig() -> Rig {
        rig_with(|queue| DataversePush::from_key(Some(Ok::<_, String>(SecretString::from(KEY.to_owned()))), queue))
    }

    /// What Lambda does with an API Gateway event: the invocation's payload, through the adapter
    /// `lambda_http::run` wraps the router in, to the response API Gateway receives.
    async fn invoke(rig: &Rig, fixture: &str) -> (u16, serde_json::Value) {
        let payload: LambdaRequest = serde_json::from_str(fixture).expect("fixture is an API Gateway v2 event");
        let event = LambdaEvent::new(payload, Context::default());
        let response = Adapter::from(rig.app.clone()).oneshot(event).await.unwrap();
        let response = serde_json::to_value(&response).unwrap();
        let status = response["statusCode"].as_u64().expect("an API Gateway v2 response") as u16;
        let body = response["body"].as_str().and_then(|b| serde_json::from_str(b).ok()).unwrap_or_default();
        (status, body)
    }

    async fn queued(queue: &InMemoryQueue) -> Vec<cosell_core::ports::queue::ReceivedMessage> {
        queue.receive(10, Duration::from_secs(1), Duration::ZERO).await.unwrap()
    }

    #[tokio::test]
    async fn an_unsigned_delivery_is_refused_with_401_and_nothing_is_enqueued() {
        let rig = rig();
        let (status, body) = invoke(&rig, include_str!("fixtures/apigw-v2-unsigned-delivery.json")).await;
        assert_eq!(status, 401, "{body}");
        assert!(queued(&rig.pc_events).await.is_empty());
    }

    #[tokio::test]
    async fn a_delivery_that_is_not_json_is_refused_with_415() {
        let rig = rig();
        let (status, body) = invoke(&rig, include_str!("fixtures/apigw-v2-form-encoded-delivery.json")).await;
        assert_eq!(status, 415, "{body}");
        assert!(queued(&rig.pc_events).await.is_empty());
    }

    #[tokio::test]
    async fn the_health_route_answers_through_api_gateway() {
        let rig = rig();
        let (status, body) = invoke(&rig, include_str!("fixtures/apigw-v2-health.json")).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    }

    #[tokio::test]
    async fn a_dataverse_delivery_with_a_forged_key_is_refused_with_401_and_nothing_is_enqueued() {
        let rig = push_rig();
        let (status, body) = invoke(&rig, include_str!("fixtures/apigw-v2-dataverse-forged.json")).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("unauthenticated")), "{body}");
        assert!(queued(&rig.crm_changes).await.is_empty());
    }

    #[tokio::test]
    async fn a_genuine_dataverse_delivery_enqueues_the_opportunity_to_crm_changes() {
        let rig = push_rig();
        let (status, body) = invoke(&rig, include_str!("fixtures/apigw-v2-dataverse-delivery.json")).await;
        assert_eq!((status, body["status"].as_str()), (202, Some("queued")), "{body}");
        let messages = queued(&rig.crm_changes).await;
        assert_eq!(messages.len(), 1);
        let item: serde_json::Value = serde_json::from_str(&messages[0].body).unwrap();
        assert_eq!(
            (
                item["kind"].as_str(),
                item["record"]["entity"].as_str(),
                item["record"]["id"].as_str(),
                item["via"].as_str()
            ),
            (Some("crm"), Some("opportunity"), Some(OPPORTUNITY), Some("push"))
        );
        // One group per CRM record, so two changes of the record are synced in order.
        assert!(messages[0].group_id.contains(OPPORTUNITY), "{}", messages[0].group_id);
        // A Dataverse delivery is CRM work, never Partner Center work.
        assert!(queued(&rig.pc_events).await.is_empty());
    }

    #[tokio::test]
    async fn the_connectors_own_write_is_acknowledged_and_not_enqueued() {
        let rig = push_rig();
        let (status, body) = invoke(&rig, include_str!("fixtures/apigw-v2-dataverse-own-write.json")).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("ignored")), "{body}");
        assert!(queued(&rig.crm_changes).await.is_empty());
    }

    #[tokio::test]
    async fn with_push_off_the_dataverse_route_is_not_served() {
        let rig = rig();
        let (status, _) = invoke(&rig, include_str!("fixtures/apigw-v2-dataverse-delivery.json")).await;
        assert_eq!(status, 404);
        assert!(queued(&rig.crm_changes).await.is_empty());
    }

    #[tokio::test]
    async fn an_unreadable_key_makes_dataverse_deliveries_503_and_leaves_partner_center_served() {
        let rig = rig_with(|queue| {
            DataversePush::from_key(Some(Err("secret arn:crm: the secret has no string value")), queue)
        });
        let (status, body) = invoke(&rig, include_str!("fixtures/apigw-v2-dataverse-delivery.json")).await;
        assert_eq!(status, 503, "{body}");
        // The public answer says nothing about the secret.
        assert!(!body.to_string().contains("arn:crm"), "{body}");
        assert!(queued(&rig.crm_changes).await.is_empty());
        let (status, body) = invoke(&rig, include_str!("fixtures/apigw-v2-unsigned-delivery.json")).await;
        assert_eq!(status, 401, "the Partner Center route still verifies: {body}");
    }
}
