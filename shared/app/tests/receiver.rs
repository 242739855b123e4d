//! The webhook receiver as Partner Center sees it: HTTP requests with genuine signatures from the
//! simulator (certificate fetched over real HTTPS from its test CA), and forged, unsigned, oversized,
//! mistyped and replayed ones. Every rejection enqueues nothing.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use cosell_app::receiver::{Receiver, WEBHOOK_PATH, router};
use cosell_app::work::WorkItem;
use cosell_core::ManualClock;
use cosell_core::fakes::{InMemoryQueue, InMemoryState};
use cosell_core::ports::queue::MessageQueue;
use cosell_partner_center::{VerifierConfig, WebhookVerifier};
use cosell_simulators::partner_center::{Config, SimHandle, Simulator};
use serde_json::json;
use tower::ServiceExt;

struct Rig {
    sim: SimHandle,
    queue: InMemoryQueue,
    state: InMemoryState,
    app: axum::Router,
}

async fn rig() -> Rig {
    let sim = Simulator::start(Config::default()).await.expect("simulator");
    let verifier =
        WebhookVerifier::new(VerifierConfig::default().trusting(sim.ca_certificate_der(), sim.tls_base_url())).unwrap();
    let queue = InMemoryQueue::new(5);
    let state = InMemoryState::new(ManualClock::new("2026-05-01T00:00:00Z".parse().unwrap()));
    let app = router(Receiver { verifier: Arc::new(verifier), queue: queue.clone(), dedup: state.clone() });
    Rig { sim, queue, state, app }
}

fn event(name: &str, id: &str) -> Vec<u8> {
    json!({
        "EventName": name,
        "ResourceUri": format!("https://api.partnercenter.microsoft.com/engagements/v1/referrals/{id}"),
        "ResourceName": "referral",
        "AuditUri": null,
        "ResourceChangeUtcDate": "2026-05-01T09:18:01.6076542+00:00"
    })
    .to_string()
    .into_bytes()
}

fn request(rig: &Rig, body: Vec<u8>, signature: Option<String>, content_type: &str) -> Request<Body> {
    let mut b = Request::post(WEBHOOK_PATH)
        .header("content-type", content_type)
        .header("x-ms-certificate-url", rig.sim.cert_url())
        .header("x-ms-signature-algorithm", "rsa-sha256");
    if let Some(sig) = signature {
        b = b.header("authorization", format!("Signature {sig}"));
    }
    b.body(Body::from(body)).unwrap()
}

async fn send(rig: &Rig, req: Request<Body>) -> (StatusCode, serde_json::Value) {
    let response = rig.app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

async fn queued(rig: &Rig) -> Vec<WorkItem> {
    rig.queue
        .receive(10, Duration::from_secs(30), Duration::ZERO)
        .await
        .unwrap()
        .into_iter()
        .map(|m| WorkItem::parse(&m.body).unwrap())
        .collect()
}

#[tokio::test]
async fn a_genuine_referral_event_is_queued_once_and_its_replay_refused() {
    let rig = rig().await;
    let body = event("referral-updated", "5dd4dc44-2c1a-4e16-8478-f783ebe815de");
    let sig = rig.sim.sign(&body);
    let (status, json) = send(&rig, request(&rig, body.clone(), Some(sig.clone()), "application/json")).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["status"], "queued");
    // The same signed delivery again: a replay.
    let (status, json) = send(&rig, request(&rig, body, Some(sig), "application/json")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{json}");
    let items = queued(&rig).await;
    assert_eq!(items.len(), 1);
    assert!(
        matches!(&items[0], WorkItem::Referral { id, source, .. } if id.as_str() == "5dd4dc44-2c1a-4e16-8478-f783ebe815de" && source == "referral-updated")
    );
}

#[tokio::test]
async fn forged_unsigned_oversized_and_mistyped_deliveries_are_refused_and_queue_nothing() {
    let rig = rig().await;
    let body = event("referral-created", "r-1");
    let sig = rig.sim.sign(&body);
    let mut tampered = body.clone();
    let last = tampered.len() - 2;
    tampered[last] ^= 1;
    let cases = [
        ("tampered", request(&rig, tampered, Some(sig.clone()), "application/json"), StatusCode::UNAUTHORIZED),
        ("unsigned", request(&rig, body.clone(), None, "application/json"), StatusCode::UNAUTHORIZED),
        (
            "forged",
            request(&rig, body.clone(), Some(rig.sim.sign(b"something else")), "application/json"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "content type",
            request(&rig, body.clone(), Some(sig.clone()), "text/plain"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "oversized",
            request(&rig, vec![b' '; 2 * 1024 * 1024], Some(sig.clone()), "application/json"),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (what, req, expected) in cases {
        let (status, json) = send(&rig, req).await;
        assert_eq!(status, expected, "{what}: {json}");
        assert!(json["error"].is_string(), "{what}: a reason is given");
    }
    let not_json = b"not json at all".to_vec();
    let (status, _) =
        send(&rig, request(&rig, not_json.clone(), Some(rig.sim.sign(&not_json)), "application/json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "signed but not an event");
    assert!(queued(&rig).await.is_empty());
    assert_eq!(rig.state.dedup_keys(), 0, "no claim left behind");
}

#[tokio::test]
async fn a_body_over_the_buffer_limit_is_refused_with_the_same_json_as_every_other_refusal() {
    let rig = rig().await;
    for size in [2 * 1024 * 1024 + 1, 3 * 1024 * 1024] {
        let body = vec![b' '; size];
        let sig = rig.sim.sign(&body);
        let response = rig.app.clone().oneshot(request(&rig, body, Some(sig), "application/json")).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{size} bytes");
        assert_eq!(
            response.headers().get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{size} bytes"
        );
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON body");
        assert_eq!(json["error"], "body_too_large", "{json}");
        assert!(json["detail"].as_str().is_some_and(|d| !d.is_empty()), "{json}");
    }
    assert!(queued(&rig).await.is_empty());
}

#[tokio::test]
async fn the_crm_push_routes_refuse_an_oversized_body_with_the_same_json_too() {
    use cosell_app::push::{DATAVERSE_PATH, DataverseReceiver, dataverse_router};
    use cosell_app::push_salesforce::{SALESFORCE_EVENTS_PATH, salesforce_events_router};
    let queue = InMemoryQueue::new(5);
    let app = dataverse_router(DataverseReceiver {
        secret: Arc::new(secrecy::SecretString::from("k".repeat(32))),
        app_user_id: None,
        queue: queue.clone(),
    })
    .merge(salesforce_events_router(queue.clone()));
    for path in [DATAVERSE_PATH, SALESFORCE_EVENTS_PATH] {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(vec![b' '; 2 * 1024 * 1024 + 1]))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON body");
        assert_eq!(json["error"], "body_too_large", "{path}: {json}");
        assert!(json["detail"].as_str().is_some_and(|d| !d.is_empty()), "{path}: {json}");
    }
    // A malformed relayed event is refused in the same shape, with a detail.
    let request = Request::post(SALESFORCE_EVENTS_PATH).body(Body::from("not an event")).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert!(json["error"].is_string() && json["detail"].is_string(), "{json}");
    assert!(queue.receive(10, Duration::from_secs(1), Duration::ZERO).await.unwrap().is_empty());
}

#[tokio::test]
async fn test_and_unknown_events_are_acknowledged_without_queueing() {
    let rig = rig().await;
    for (name, expected) in [("test-created", "test event received"), ("customer-created", "ignored")] {
        let body = event(name, "x");
        let (status, json) =
            send(&rig, request(&rig, body.clone(), Some(rig.sim.sign(&body)), "application/json")).await;
        assert_eq!((status, json["status"].as_str()), (StatusCode::OK, Some(expected)), "{name}");
    }
    assert!(queued(&rig).await.is_empty());
}
