//! The webhook verifier against genuine deliveries from the simulator (its certificate fetched over
//! real HTTPS from its own test CA) and against forged, tampered, unsigned, wrong-host,
//! wrong-algorithm, oversized and mistyped ones.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use cosell_core::referral::EventName;
use cosell_partner_center::webhook::{self, SignatureHeader};
use cosell_partner_center::{Rejection, VerifierConfig, WebhookVerifier};
use cosell_simulators::partner_center::{Config, SimHandle, Simulator};
use cosell_simulators::support::pki::TestCa;
use serde_json::json;

async fn sim() -> SimHandle {
    let config = Config { delivery_backoff: std::time::Duration::from_millis(5), ..Config::default() };
    Simulator::start(config).await.expect("simulator starts")
}

fn verifier_config(sim: &SimHandle) -> VerifierConfig {
    VerifierConfig::default().trusting(sim.ca_certificate_der(), sim.tls_base_url())
}

fn verifier(sim: &SimHandle) -> WebhookVerifier {
    WebhookVerifier::new(verifier_config(sim)).unwrap()
}

fn body() -> Vec<u8> {
    json!({
        "EventName": "referral-updated",
        "ResourceUri": "https://api.partnercenter.microsoft.com/engagements/v1/referrals/5dd4dc44-2c1a-4e16-8478-f783ebe815de",
        "ResourceName": "referral",
        "AuditUri": null,
        "ResourceChangeUtcDate": "2025-03-07T09:18:01.6076542+00:00"
    })
    .to_string()
    .into_bytes()
}

fn signed_headers(sim: &SimHandle, signature_b64: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("authorization", HeaderValue::from_str(&format!("Signature {signature_b64}")).unwrap());
    h.insert("x-ms-certificate-url", HeaderValue::from_str(&sim.cert_url()).unwrap());
    h.insert("x-ms-signature-algorithm", HeaderValue::from_static("rsa-sha256"));
    h
}

#[tokio::test]
async fn a_genuine_delivery_is_accepted_and_one_changed_byte_is_rejected() {
    let sim = sim().await;
    let v = verifier(&sim);
    let body = body();
    let headers = signed_headers(&sim, &sim.sign(&body));

    let ok = v.verify(&headers, &body).await.unwrap();
    assert_eq!(ok.event.event_name, EventName::ReferralUpdated);
    assert_eq!(ok.event.referral_id().unwrap().as_str(), "5dd4dc44-2c1a-4e16-8478-f783ebe815de");
    assert_eq!(ok.signature_header, SignatureHeader::Authorization);

    for i in [0, body.len() / 2, body.len() - 1] {
        let mut tampered = body.clone();
        tampered[i] ^= 0x01;
        let err = v.verify(&headers, &tampered).await.unwrap_err();
        assert_eq!(err, Rejection::BadSignature, "byte {i}");
        assert_eq!(err.status(), 401);
    }
    // Re-serialising the JSON (same data, different bytes) also fails: the raw body is what is signed.
    let reserialised = serde_json::to_vec_pretty(&serde_json::from_slice::<serde_json::Value>(&body).unwrap()).unwrap();
    assert_eq!(v.verify(&headers, &reserialised).await.unwrap_err(), Rejection::BadSignature);

    assert_eq!(sim.certificate_downloads(), 1, "the certificate is fetched once and cached");
}

#[tokio::test]
async fn forged_unsigned_wrong_host_wrong_algorithm_oversized_and_mistyped_deliveries_are_rejected() {
    let sim = sim().await;
    let v = verifier(&sim);
    let body = body();

    // Forged: signed by another "Microsoft Corporation" key, pointing at the genuine certificate.
    let forger = TestCa::generate("Forger Root", "Microsoft Corporation").unwrap();
    let forged_key =
        forger.issue_rsa_signer("pcnotifications-dispatch.microsoft.com", "Microsoft Corporation").unwrap();
    use base64::Engine as _;
    let forged_sig = base64::engine::general_purpose::STANDARD.encode(forged_key.sign(&body).unwrap());
    let err = v.verify(&signed_headers(&sim, &forged_sig), &body).await.unwrap_err();
    assert_eq!((err.reason(), err.status()), ("bad_signature", 401));

    // Unsigned.
    let mut unsigned = signed_headers(&sim, "x");
    unsigned.remove("authorization");
    let err = v.verify(&unsigned, &body).await.unwrap_err();
    assert_eq!((err.reason(), err.status()), ("missing_signature", 401));

    // Certificate on a host that is not allowed, or over plain http.
    let mut wrong_host = signed_headers(&sim, &sim.sign(&body));
    wrong_host.insert(
        "x-ms-certificate-url",
        HeaderValue::from_static("https://evil.example/cert/pcnotifications-dispatch.microsoft.com.cer"),
    );
    let err = v.verify(&wrong_host, &body).await.unwrap_err();
    assert_eq!((err.reason(), err.status()), ("certificate_url_not_allowed", 401));
    let mut plain_http = signed_headers(&sim, &sim.sign(&body));
    let http_url = sim.cert_url().replacen("https://", "http://", 1);
    plain_http.insert("x-ms-certificate-url", HeaderValue::from_str(&http_url).unwrap());
    assert_eq!(v.verify(&plain_http, &body).await.unwrap_err().reason(), "certificate_url_not_allowed");

    // Wrong algorithm.
    let mut sha1 = signed_headers(&sim, &sim.sign(&body));
    sha1.insert("x-ms-signature-algorithm", HeaderValue::from_static("rsa-sha1"));
    let err = v.verify(&sha1, &body).await.unwrap_err();
    assert_eq!((err.reason(), err.status()), ("unsupported_algorithm", 401));

    // Oversized (checked before any certificate fetch).
    let big = vec![b' '; webhook::DEFAULT_MAX_BODY_BYTES + 1];
    let err = v.verify(&signed_headers(&sim, &sim.sign(&big)), &big).await.unwrap_err();
    assert_eq!((err.reason(), err.status()), ("body_too_large", 413));

    // Wrong content type.
    let mut form = signed_headers(&sim, &sim.sign(&body));
    form.insert("content-type", HeaderValue::from_static("application/x-www-form-urlencoded"));
    let err = v.verify(&form, &body).await.unwrap_err();
    assert_eq!((err.reason(), err.status()), ("wrong_content_type", 415));

    // Garbage in the signature header.
    let err = v.verify(&signed_headers(&sim, "not*base64"), &body).await.unwrap_err();
    assert_eq!((err.reason(), err.status()), ("malformed_signature", 400));

    // Genuinely signed, but not an event.
    let junk = b"[1,2,3]".to_vec();
    let err = v.verify(&signed_headers(&sim, &sim.sign(&junk)), &junk).await.unwrap_err();
    assert_eq!((err.reason(), err.status()), ("malformed_body", 400));
}

#[tokio::test]
async fn trust_roots_organisation_and_tls_are_all_enforced() {
    let sim = sim().await;
    let body = body();
    let headers = signed_headers(&sim, &sim.sign(&body));

    // Without the test CA among its TLS roots the verifier cannot fetch the certificate (real TLS
    // checks apply): the delivery cannot be authenticated.
    let no_tls_root =
        WebhookVerifier::new(VerifierConfig { extra_tls_roots: vec![], ..verifier_config(&sim) }).unwrap();
    let err = no_tls_root.verify(&headers, &body).await.unwrap_err();
    assert_eq!((err.reason(), err.status()), ("certificate_unavailable", 401));

    // A signing certificate that does not chain to the configured anchors.
    let other = TestCa::generate("Other Root", "Microsoft Corporation").unwrap();
    let untrusted = WebhookVerifier::new(VerifierConfig {
        trust_anchors: vec![other.cert_der().to_vec()],
        ..verifier_config(&sim)
    })
    .unwrap();
    assert_eq!(untrusted.verify(&headers, &body).await.unwrap_err(), Rejection::CertificateUntrusted);

    // The organisation must match.
    let contoso =
        WebhookVerifier::new(VerifierConfig { organization: "Contoso Ltd".into(), ..verifier_config(&sim) }).unwrap();
    let err = contoso.verify(&headers, &body).await.unwrap_err();
    assert!(matches!(err, Rejection::WrongOrganization { field: "issuer", .. }), "{err:?}");

    // The pure function gives the same verdicts with a certificate in hand.
    let cert = webhook::SigningCertificate::parse(&sim.signing_certificate_der()).unwrap();
    assert!(webhook::verify(&headers, &body, &cert).is_ok());
    assert_eq!(
        webhook::verify_with(&headers, &body, &cert, "Microsoft Corporation", 16).unwrap_err().reason(),
        "body_too_large"
    );
    let mut tampered = body.clone();
    tampered[10] ^= 0x20;
    assert_eq!(webhook::verify(&headers, &tampered, &cert).unwrap_err(), Rejection::BadSignature);
}

type Verdicts = Arc<Mutex<Vec<Result<EventName, (&'static str, u16)>>>>;

/// A receiver that verifies each delivery, as the webhook-receiver Lambda will.
async fn verifying_receiver(v: Arc<WebhookVerifier>) -> (String, Verdicts) {
    let verdicts: Verdicts = Arc::default();
    let seen = verdicts.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (v, seen) = (v.clone(), seen.clone());
            async move {
                match v.verify(&headers, &body).await {
                    Ok(d) => {
                        seen.lock().unwrap().push(Ok(d.event.event_name));
                        StatusCode::OK
                    }
                    Err(r) => {
                        seen.lock().unwrap().push(Err((r.reason(), r.status())));
                        StatusCode::from_u16(r.status()).unwrap_or(StatusCode::UNAUTHORIZED)
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), verdicts)
}

#[tokio::test]
async fn real_deliveries_from_the_simulator_verify_in_both_signature_placements() {
    let sim = sim().await;
    let v = Arc::new(verifier(&sim));
    let (hook, verdicts) = verifying_receiver(v).await;
    let http = reqwest::Client::new();
    for ms_header in [false, true] {
        let reg = json!({"WebhookUrl": hook, "WebhookEvents": ["referral-created", "referral-updated"],
                         "SignatureTokenToMsSignatureHeader": ms_header});
        let resp = http
            .put(format!("{}/webhooks/v1/registration", sim.base_url()))
            .bearer_auth(webhooks_token(&sim).await)
            .json(&reg)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let resp = http
            .post(format!("{}/_sim/referrals/inbound", sim.base_url()))
            .json(&json!({"name": format!("ms_header={ms_header}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    // The receiver records its verdict before it answers, and the simulator records the delivery
    // after the answer: wait for both.
    for _ in 0..500 {
        let finished = sim.deliveries().iter().filter(|d| d.delivered).count();
        if verdicts.lock().unwrap().len() >= 2 && finished >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let got = verdicts.lock().unwrap().clone();
    assert_eq!(got, vec![Ok(EventName::ReferralCreated), Ok(EventName::ReferralCreated)]);
    assert!(sim.deliveries().iter().all(|d| d.delivered && d.attempts.len() == 1), "{:#?}", sim.deliveries());
    assert_eq!(sim.certificate_downloads(), 1);
}

async fn webhooks_token(sim: &SimHandle) -> String {
    use cosell_simulators::partner_center::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET};
    let v: serde_json::Value = reqwest::Client::new()
        .post(sim.token_url_v2("common"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_id={DEFAULT_CLIENT_ID}&client_secret={DEFAULT_CLIENT_SECRET}&scope=https%3A%2F%2Fapi.partnercenter.microsoft.com%2F.default"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_failing_signature_refetches_the_certificate_at_most_once_per_interval() {
    let sim = sim().await;
    let body = body();
    let good = signed_headers(&sim, &sim.sign(&body));
    let mut tampered = body.clone();
    tampered[5] ^= 0x01;

    // Default interval (10 minutes): a burst of bad deliveries costs no extra download.
    let v = verifier(&sim);
    v.verify(&good, &body).await.unwrap();
    for _ in 0..3 {
        assert_eq!(v.verify(&good, &tampered).await.unwrap_err(), Rejection::BadSignature);
    }
    assert_eq!(sim.certificate_downloads(), 1);

    // With no interval, a failure looks again once (a rotated certificate would be picked up).
    let eager =
        WebhookVerifier::new(VerifierConfig { refetch_interval: std::time::Duration::ZERO, ..verifier_config(&sim) })
            .unwrap();
    eager.verify(&good, &body).await.unwrap();
    assert_eq!(eager.verify(&good, &tampered).await.unwrap_err(), Rejection::BadSignature);
    assert_eq!(sim.certificate_downloads(), 3);
    // And genuine deliveries still pass from the cache.
    eager.verify(&good, &body).await.unwrap();
    assert_eq!(sim.certificate_downloads(), 3);
}
