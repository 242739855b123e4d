//! The receiver's Lambda edge: the shared axum router, which `lambda_http` serves for API Gateway
//! HTTP API (payload format 2.0) events. Status codes (401 forged/unsigned, 400 malformed, 413 too
//! large, 415 not JSON, 409 replay, 200 queued/ignored/test, 503 queue down) are the router's.

use std::sync::Arc;

use cosell_app::receiver::{Receiver, router};
use cosell_core::ports::queue::MessageQueue;
use cosell_core::ports::state::DedupStore;
use cosell_partner_center::{VerifierConfig, WebhookVerifier};

/// The verifier's configuration in Lambda: Microsoft's certificate host and organisation, nothing
/// test-only.
pub fn verifier_config() -> VerifierConfig {
    VerifierConfig::default()
}

/// The service `lambda_http::run` serves.
pub fn app<Q, D>(verifier: Arc<WebhookVerifier>, queue: Q, dedup: D) -> axum::Router
where
    Q: MessageQueue + Clone + 'static,
    D: DedupStore + Clone + 'static,
{
    router(Receiver { verifier, queue, dedup })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cosell_core::ManualClock;
    use cosell_core::fakes::{InMemoryQueue, InMemoryState};
    use tower::ServiceExt;

    use super::*;

    struct Rig {
        queue: InMemoryQueue,
        app: axum::Router,
    }

    fn rig() -> Rig {
        let queue = InMemoryQueue::new(5);
        let state = InMemoryState::new(ManualClock::new("2026-05-01T09:18:02Z".parse().unwrap()));
        let verifier = Arc::new(WebhookVerifier::new(verifier_config()).unwrap());
        Rig { app: app(verifier, queue.clone(), state), queue }
    }

    /// What API Gateway hands the function, as `lambda_http` turns it into a request.
    async fn invoke(rig: &Rig, fixture: &str) -> (u16, serde_json::Value) {
        let request = lambda_http::request::from_str(fixture).expect("fixture is an API Gateway v2 event");
        let response = rig.app.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    async fn nothing_queued(rig: &Rig) -> bool {
        rig.queue.receive(10, Duration::from_secs(1), Duration::ZERO).await.unwrap().is_empty()
    }

    #[tokio::test]
    async fn an_unsigned_delivery_is_refused_with_401_and_nothing_is_enqueued() {
        let rig = rig();
        let (status, body) = invoke(&rig, include_str!("fixtures/apigw-v2-unsigned-delivery.json")).await;
        assert_eq!(status, 401, "{body}");
        assert!(nothing_queued(&rig).await);
    }

    #[tokio::test]
    async fn a_delivery_that_is_not_json_is_refused_with_415() {
        let rig = rig();
        let (status, body) = invoke(&rig, include_str!("fixtures/apigw-v2-form-encoded-delivery.json")).await;
        assert_eq!(status, 415, "{body}");
        assert!(nothing_queued(&rig).await);
    }

    #[tokio::test]
    async fn the_health_route_answers_through_api_gateway() {
        let rig = rig();
        let (status, body) = invoke(&rig, include_str!("fixtures/apigw-v2-health.json")).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    }
}
