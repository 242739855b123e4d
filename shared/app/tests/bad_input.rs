//! Bad input at scale (property tests): whatever arrives at the webhook receiver — any bytes, any
//! headers, a genuine body with any change — it answers a 4xx with a reason, enqueues nothing and
//! never panics. And the Partner Center JSON parsers never panic on any document.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use cosell_app::receiver::{Receiver, WEBHOOK_PATH, router};
use cosell_core::ManualClock;
use cosell_core::fakes::{InMemoryQueue, InMemoryState};
use cosell_core::ports::queue::MessageQueue;
use cosell_core::referral::{Referral, ResourceChangeEvent};
use cosell_partner_center::{VerifierConfig, WebhookVerifier};
use cosell_simulators::partner_center::{Config, SimHandle, Simulator};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use tower::ServiceExt;

/// Cases per property: bounded for CI; `COSELL_FUZZ_CASES` runs longer.
fn cases() -> u32 {
    std::env::var("COSELL_FUZZ_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(400)
}

fn arbitrary_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        "\\PC{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    // Real field names, so that the parsers go deep.
                    Just("id".to_owned()),
                    Just("status".to_owned()),
                    Just("substatus".to_owned()),
                    Just("details".to_owned()),
                    Just("dealValue".to_owned()),
                    Just("customerProfile".to_owned()),
                    Just("team".to_owned()),
                    Just("EventName".to_owned()),
                    Just("ResourceUri".to_owned()),
                    Just("ResourceChangeUtcDate".to_owned()),
                    Just("inviteContext".to_owned()),
                    Just("target".to_owned()),
                    Just("eTag".to_owned()),
                    "[a-zA-Z@.]{1,12}",
                ],
                inner,
                0..6,
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases() * 4, .. ProptestConfig::default() })]

    #[test]
    fn referral_and_event_parsers_never_panic_on_any_document(doc in arbitrary_json()) {
        let text = doc.to_string();
        let _ = serde_json::from_str::<Referral>(&text);
        let _ = Referral::from_json_lenient(doc.clone());
        if let Ok(e) = serde_json::from_str::<ResourceChangeEvent>(&text) {
            let _ = e.referral_id();
        }
    }

    #[test]
    fn parsers_never_panic_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = serde_json::from_slice::<Referral>(&bytes);
        let _ = serde_json::from_slice::<ResourceChangeEvent>(&bytes);
    }
}

struct Rig {
    sim: SimHandle,
    queue: InMemoryQueue,
    app: axum::Router,
}

async fn rig() -> Rig {
    let sim = Simulator::start(Config::default()).await.expect("simulator");
    let verifier =
        WebhookVerifier::new(VerifierConfig::default().trusting(sim.ca_certificate_der(), sim.tls_base_url())).unwrap();
    let queue = InMemoryQueue::new(5);
    let state = InMemoryState::new(ManualClock::new("2026-05-01T00:00:00Z".parse().unwrap()));
    let app = router(Receiver { verifier: Arc::new(verifier), queue: queue.clone(), dedup: state });
    Rig { sim, queue, app }
}

#[derive(Debug, Clone)]
struct Delivery {
    body: Vec<u8>,
    content_type: Option<String>,
    authorization: Option<String>,
    ms_signature: Option<String>,
    algorithm: Option<String>,
    cert_url: u8,
}

fn delivery() -> impl Strategy<Value = Delivery> {
    (
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            arbitrary_json().prop_map(|j| j.to_string().into_bytes())
        ],
        proptest::option::of(prop_oneof![Just("application/json".to_owned()), "[ -~]{0,30}"]),
        proptest::option::of(prop_oneof!["Signature [A-Za-z0-9+/=]{0,80}", "[ -~]{0,40}"]),
        proptest::option::of("[A-Za-z0-9+/=]{0,60}"),
        proptest::option::of(prop_oneof![Just("rsa-sha256".to_owned()), "[ -~]{0,12}"]),
        0u8..4,
    )
        .prop_map(|(body, content_type, authorization, ms_signature, algorithm, cert_url)| Delivery {
            body,
            content_type,
            authorization,
            ms_signature,
            algorithm,
            cert_url,
        })
}

/// Any delivery not signed by the simulator's key gets a 4xx with a reason and enqueues nothing.
#[tokio::test]
async fn any_unsigned_or_forged_delivery_is_refused_with_a_reason_and_enqueues_nothing() {
    let rig = rig().await;
    let mut runner =
        proptest::test_runner::TestRunner::new(ProptestConfig { cases: cases(), ..ProptestConfig::default() });
    let mut statuses = std::collections::BTreeSet::new();
    for _ in 0..cases() {
        let d = delivery().new_tree(&mut runner).expect("case").current();
        let mut req = Request::post(WEBHOOK_PATH);
        if let Some(v) = &d.content_type {
            req = req.header("content-type", v.as_str());
        }
        if let Some(v) = &d.authorization {
            req = req.header("authorization", v.as_str());
        }
        if let Some(v) = &d.ms_signature {
            req = req.header("x-ms-signature", v.as_str());
        }
        if let Some(v) = &d.algorithm {
            req = req.header("x-ms-signature-algorithm", v.as_str());
        }
        match d.cert_url {
            0 => {}
            1 => req = req.header("x-ms-certificate-url", rig.sim.cert_url()),
            2 => req = req.header("x-ms-certificate-url", "https://evil.example/cert.cer"),
            _ => req = req.header("x-ms-certificate-url", "not a url"),
        }
        let Ok(req) = req.body(Body::from(d.body.clone())) else { continue };
        let response = rig.app.clone().oneshot(req).await.expect("the router answers");
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert!((400..500).contains(&status), "{d:?} got {status}");
        assert!(json["error"].is_string(), "{d:?}: a reason is given");
        statuses.insert(status);
    }
    assert!(
        rig.queue.receive(10, Duration::from_secs(1), Duration::ZERO).await.unwrap().is_empty(),
        "nothing enqueued"
    );
    assert!(statuses.len() >= 3, "the cases reach several distinct refusals: {statuses:?}");
}

/// A genuine delivery changed in any way after signing is refused.
#[tokio::test]
async fn a_genuine_body_changed_anywhere_after_signing_is_refused() {
    let rig = rig().await;
    let body = serde_json::json!({
        "EventName": "referral-updated",
        "ResourceUri": "https://api.partnercenter.microsoft.com/engagements/v1/referrals/5dd4dc44-2c1a-4e16-8478-f783ebe815de",
        "ResourceName": "referral", "AuditUri": null,
        "ResourceChangeUtcDate": "2026-05-01T09:18:01.6076542+00:00"
    })
    .to_string()
    .into_bytes();
    let sig = rig.sim.sign(&body);
    let mut runner =
        proptest::test_runner::TestRunner::new(ProptestConfig { cases: cases(), ..ProptestConfig::default() });
    for _ in 0..(cases() / 4) {
        let (at, flip) = (0..body.len(), 1u8..=255).new_tree(&mut runner).expect("case").current();
        let mut changed = body.clone();
        changed[at] ^= flip;
        let req = Request::post(WEBHOOK_PATH)
            .header("content-type", "application/json")
            .header("authorization", format!("Signature {sig}"))
            .header("x-ms-certificate-url", rig.sim.cert_url())
            .header("x-ms-signature-algorithm", "rsa-sha256")
            .body(Body::from(changed))
            .unwrap();
        let status = rig.app.clone().oneshot(req).await.unwrap().status().as_u16();
        assert_eq!(status, 401, "byte {at} ^ {flip}");
    }
    assert!(rig.queue.receive(10, Duration::from_secs(1), Duration::ZERO).await.unwrap().is_empty());
}
