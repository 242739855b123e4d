//! The simulator's wire protocol, exercised with a plain HTTP client and JSON written by hand from
//! `reference/partner-center-api.md` — not with our own client — so that the shapes are proved
//! independently of it.

use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use cosell_simulators::partner_center::{
    Config, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME, Fault, FaultKind, SimHandle,
    SimUser, Simulator,
};
use serde_json::{Value, json};

async fn sim() -> SimHandle {
    let config = Config {
        delivery_backoff: std::time::Duration::from_millis(5),
        delivery_backoff_max: std::time::Duration::from_millis(40),
        ..Config::default()
    };
    Simulator::start(config).await.expect("simulator starts")
}

/// A v1 ROPC token, as in the referral-api-authentication doc sample.
async fn token(sim: &SimHandle, resource: &str) -> String {
    let resp = reqwest::Client::new()
        .post(sim.token_url("common"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=password&scope=openid&client_id={DEFAULT_CLIENT_ID}&client_secret={DEFAULT_CLIENT_SECRET}&username={}&password={DEFAULT_PASSWORD}&resource={}",
            DEFAULT_USERNAME.replace('@', "%40"),
            resource.replace(':', "%3A").replace('/', "%2F")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    // v1 responses write numbers as strings.
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], "3600");
    assert_eq!(body["resource"], resource);
    assert!(body["refresh_token"].is_string());
    body["access_token"].as_str().unwrap().to_owned()
}

fn minimal_create_body(name: &str) -> Value {
    // Reference §1.10 "Minimal create bodies".
    json!({ "name": name, "type": "Independent", "qualification": "SalesQualified",
      "customerProfile": { "name": "Contoso Customer", "address": { "addressLine1": "1 Way", "city": "Redmond", "state": "WA", "postalCode": "98052", "country": "US" },
                           "team": [{ "firstName": "Sue", "lastName": "Smith", "phoneNumber": "1234567890", "email": "sue@contoso.example" }] },
      "consent": { "consentToToShareInfoWithOthers": true, "consentToContact": true, "consentToShareReferralWithMicrosoftSellers": false },
      "details": { "notes": "n", "dealValue": 50000, "currency": "USD", "closingDateTime": "2025-11-14T00:00:00Z",
                   "requirements": { "solutions": [{ "type": "Name", "id": "SOL-15974-MQF" }] } },
      "team": [{ "firstName": "John", "lastName": "Doe", "phoneNumber": "1231231234", "email": "john@partner.example" }],
      "target": [] })
}

async fn create(http: &reqwest::Client, sim: &SimHandle, tok: &str, body: &Value) -> reqwest::Response {
    http.post(format!("{}/v1.0/engagements/referrals", sim.base_url()))
        .bearer_auth(tok)
        .header("content-type", "application/json")
        .header("client-request-id", "7d6b0c8e-0000-4000-8000-000000000001")
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn create_get_patch_follow_the_documented_shapes_and_status_codes() {
    let sim = sim().await;
    let tok = token(&sim, "https://api.partner.microsoft.com").await;
    let http = reqwest::Client::new();

    let resp = create(&http, &sim, &tok, &minimal_create_body("Contoso deal [Private]")).await;
    assert_eq!(resp.status(), 200, "swagger: POST returns 200 with the Referral");
    assert_eq!(resp.headers()["client-request-id"], "7d6b0c8e-0000-4000-8000-000000000001");
    assert!(resp.headers().contains_key("request-id"));
    let created: Value = resp.json().await.unwrap();
    assert!(created["@odata.context"].as_str().unwrap().ends_with("/v1.0/$metadata#Referrals/$entity"));
    let id = created["id"].as_str().unwrap().to_owned();
    let etag = created["eTag"].as_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "eTag includes literal quotes: {etag}");
    assert_eq!((created["status"].as_str(), created["substatus"].as_str()), (Some("Active"), Some("Accepted")));
    assert_eq!(created["direction"], "Outgoing");
    assert_eq!(created["acceptedDateTime"], created["createdDateTime"]);
    assert!(created["engagementId"].is_string());
    assert_eq!(created["consent"]["consentToToShareInfoWithOthers"], true);
    assert_eq!(created["links"]["self"]["method"], "GET");
    assert!(created["trackingInfo"].as_object().unwrap().contains_key("microsoftMsxId"));
    let ts = created["createdDateTime"].as_str().unwrap();
    assert!(ts.ends_with('Z') && ts.len() == "2025-03-07T05:08:23.8101440Z".len(), "7 fractional digits: {ts}");

    // GET by id, ETag header equals the body's eTag.
    let resp =
        http.get(format!("{}/v1.0/engagements/referrals/{id}", sim.base_url())).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["etag"].to_str().unwrap(), etag);

    // PATCH without Prefer: 204, empty.
    let patch = json!([{"op": "replace", "path": "/details/dealValue", "value": "10000"}]);
    let resp = http
        .patch(format!("{}/v1.0/engagements/referrals/{id}", sim.base_url()))
        .bearer_auth(&tok)
        .header("If-Match", &etag)
        .header("content-type", "application/json")
        .body(patch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    // (hyper never writes Content-Length on a 204, whatever the docs' capture shows.)
    assert_eq!(resp.bytes().await.unwrap().len(), 0);

    // The old eTag is stale now: 412 preconditionFailed with the Partner API error body.
    let resp = http
        .patch(format!("{}/v1.0/engagements/referrals/{id}", sim.base_url()))
        .bearer_auth(&tok)
        .header("If-Match", &etag)
        .header("content-type", "application/json")
        .body(json!([{"op": "replace", "path": "/details/notes", "value": "x"}]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 412);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "preconditionFailed");
    assert!(err["error"]["message"].is_string());

    // With Prefer: return=representation → 200 and the updated referral (doc's Won sample).
    let resp = http
        .patch(format!("{}/v1.0/engagements/referrals/{id}", sim.base_url()))
        .bearer_auth(&tok)
        .header("Prefer", "return=representation")
        .header("content-type", "application/json")
        .body(json!([{"op":"replace","path":"/status","value":"Closed"},{"op":"replace","path":"/substatus","value":"Won"}]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let won: Value = resp.json().await.unwrap();
    assert_eq!(won["substatus"], "Won");
    assert_eq!(won["details"]["dealValue"], "10000", "the value is stored as sent");
    assert!(won["closedDateTime"].is_string());

    // Terminal: any further write is a 400 invalidRequest.
    let resp = http
        .patch(format!("{}/v1.0/engagements/referrals/{id}", sim.base_url()))
        .bearer_auth(&tok)
        .header("content-type", "application/json")
        .body(json!([{"op": "replace", "path": "/details/notes", "value": "again"}]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "invalidRequest");

    // remove is not an accepted op.
    let (other, _) = {
        let r: Value = create(&http, &sim, &tok, &minimal_create_body("other")).await.json().await.unwrap();
        (r["id"].as_str().unwrap().to_owned(), ())
    };
    let resp = http
        .patch(format!("{}/v1.0/engagements/referrals/{other}", sim.base_url()))
        .bearer_auth(&tok)
        .header("content-type", "application/json")
        .body(json!([{"op": "remove", "path": "/details/notes"}]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // Unknown id: 404 itemNotFound.
    let resp =
        http.get(format!("{}/v1.0/engagements/referrals/nope", sim.base_url())).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "itemNotFound");
}

#[tokio::test]
async fn listing_250_referrals_takes_three_pages_via_next_link() {
    let sim = sim().await;
    let tok = token(&sim, "https://api.partner.microsoft.com").await;
    let http = reqwest::Client::new();
    for i in 0..250 {
        assert_eq!(create(&http, &sim, &tok, &minimal_create_body(&format!("deal {i}"))).await.status(), 200);
    }
    let mut url = format!("{}/v1.0/engagements/referrals", sim.base_url());
    let mut sizes = Vec::new();
    let mut ids = std::collections::HashSet::new();
    loop {
        let page: Value = http.get(&url).bearer_auth(&tok).send().await.unwrap().json().await.unwrap();
        assert_eq!(page["@odata.count"], 250);
        assert!(page["@odata.context"].as_str().unwrap().ends_with("$metadata#Referrals"));
        let values = page["value"].as_array().unwrap();
        sizes.push(values.len());
        ids.extend(values.iter().map(|v| v["id"].as_str().unwrap().to_owned()));
        match page.get("@odata.nextLink").and_then(Value::as_str) {
            Some(next) => {
                assert!(next.contains("$skiptoken="), "opaque skip token: {next}");
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(sizes, vec![100, 100, 50]);
    assert_eq!(ids.len(), 250);

    // $top lowers the page size; $filter narrows (doc example syntax).
    let q = format!(
        "{}/v1.0/engagements/referrals?$top=10&$filter=customerProfile/address/country eq 'US' and direction eq 'Outgoing'",
        sim.base_url()
    );
    let page: Value = http.get(&q).bearer_auth(&tok).send().await.unwrap().json().await.unwrap();
    assert_eq!(page["value"].as_array().unwrap().len(), 10);
    assert_eq!(page["@odata.count"], 250);
    let page: Value = http
        .get(format!("{}/v1.0/engagements/referrals?$filter=direction eq 'Incoming'", sim.base_url()))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["value"].as_array().unwrap().len(), 0);
    assert!(page.get("@odata.nextLink").is_none());
    let resp = http
        .get(format!("{}/v1.0/engagements/referrals?$filter=contains(name,'x')", sim.base_url()))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn auth_failures_throttling_and_roles_use_documented_statuses() {
    let sim = sim().await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1.0/engagements/referrals", sim.base_url());
    // No token → 401.
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    // A Webhooks-API token is for the wrong audience → 401.
    let wrong = token(&sim, "https://api.partnercenter.microsoft.com").await;
    assert_eq!(http.get(&url).bearer_auth(&wrong).send().await.unwrap().status(), 401);
    // A user without a Referrals role → 403 accessDenied.
    let resp = http
        .post(format!("{}/_sim/users", sim.base_url()))
        .json(&SimUser::new("sales@partner.example", "pw", &["Sales agent"]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let body = format!(
        "grant_type=password&client_id={DEFAULT_CLIENT_ID}&client_secret={DEFAULT_CLIENT_SECRET}&username=sales%40partner.example&password=pw&resource=https%3A%2F%2Fapi.partner.microsoft.com"
    );
    let t: Value = http
        .post(sim.token_url("common"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = http.get(&url).bearer_auth(t["access_token"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "accessDenied");
    // Wrong password → AADSTS50126 invalid_grant.
    let resp = http
        .post(sim.token_url_v2("common"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=password&client_id={DEFAULT_CLIENT_ID}&client_secret={DEFAULT_CLIENT_SECRET}&username=x&password=y&scope=https%3A%2F%2Fapi.partner.microsoft.com%2F.default"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"], "invalid_grant");
    assert_eq!(err["error_codes"][0], 50126);

    // Throttling: 429 with Retry-After and the documented sample body.
    let tok = token(&sim, "https://api.partner.microsoft.com").await;
    sim.inject(Fault {
        kind: FaultKind::Throttle { retry_after_secs: 57 },
        count: 1,
        path_prefix: None,
        method: None,
        after: 0,
    });
    let resp = http.get(&url).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "57");
    assert_eq!(resp.json::<Value>().await.unwrap()["message"], "Rate limit is exceeded. Try again in 57 seconds.");
    // The fault was for one call only.
    assert_eq!(http.get(&url).bearer_auth(&tok).send().await.unwrap().status(), 200);
    // 503 via the control API.
    let resp = http
        .post(format!("{}/_sim/faults", sim.base_url()))
        .json(&json!({"kind": "status", "status": 503, "retry_after_secs": 3, "count": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = http.get(&url).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "3");
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "serviceNotAvailable");
}

#[tokio::test]
async fn an_access_token_expired_mid_run_is_refused_with_the_documented_401() {
    let sim = sim().await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1.0/engagements/referrals", sim.base_url());
    let tok = token(&sim, "https://api.partner.microsoft.com").await;
    // Two calls go through, then every token issued so far expires (and refresh tokens are revoked).
    let resp = http
        .post(format!("{}/_sim/faults", sim.base_url()))
        .json(&json!({"kind": "expire_tokens", "revoke_refresh_tokens": true, "after": 2,
                      "path_prefix": "/v1.0/engagements/referrals"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    for _ in 0..2 {
        assert_eq!(http.get(&url).bearer_auth(&tok).send().await.unwrap().status(), 200);
    }
    let resp = http.get(&url).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer error=\"invalid_token\"");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");
    assert_eq!(body["error"]["message"], "The access token has expired.");
    // The fault is spent: a new token works.
    let fresh = token(&sim, "https://api.partner.microsoft.com").await;
    assert_eq!(http.get(&url).bearer_auth(&fresh).send().await.unwrap().status(), 200);
    let faults: Value = http.get(format!("{}/_sim/faults", sim.base_url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(faults, json!([]));
}

type Captured = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// A webhook receiver on loopback that records what it gets and answers `status`.
async fn receiver(status: u16) -> (String, Captured) {
    let captured: Captured = Arc::default();
    let c = captured.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let c = c.clone();
            async move {
                c.lock().unwrap().push((headers, body));
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), captured)
}

async fn wait_for<F: Fn() -> bool>(what: &str, f: F) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn webhook_registration_validation_event_and_signed_delivery_match_the_docs() {
    let sim = sim().await;
    let http = reqwest::Client::new();
    let tok = token(&sim, "https://api.partnercenter.microsoft.com").await;
    let reg_url = format!("{}/webhooks/v1/registration", sim.base_url());
    let (hook, captured) = receiver(200).await;

    assert_eq!(http.get(&reg_url).bearer_auth(&tok).send().await.unwrap().status(), 404);
    let events: Value =
        http.get(format!("{reg_url}/events")).bearer_auth(&tok).send().await.unwrap().json().await.unwrap();
    assert!(events.as_array().unwrap().iter().any(|e| e == "related-referral-updated"));

    // The connectors' registration body (reference §2.6), PascalCase.
    let body = json!({ "WebhookUrl": hook, "WebhookEvents": ["referral-created","referral-updated","related-referral-created","related-referral-updated","test-created"] });
    let resp = http.post(&reg_url).bearer_auth(&tok).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let created: Value = resp.json().await.unwrap();
    assert!(created["SubscriberId"].is_string());
    assert_eq!(created["WebhookUrl"], hook.as_str());
    // Second POST conflicts; PUT overwrites (camelCase accepted too).
    assert_eq!(http.post(&reg_url).bearer_auth(&tok).json(&body).send().await.unwrap().status(), 409);
    let put = json!({ "webhookUrl": hook, "webhookEvents": ["referral-created","referral-updated","test-created"], "signatureTokenToMsSignatureHeader": true });
    assert_eq!(http.put(&reg_url).bearer_auth(&tok).json(&put).send().await.unwrap().status(), 200);
    let shown: Value = http.get(&reg_url).bearer_auth(&tok).send().await.unwrap().json().await.unwrap();
    assert_eq!(shown["SignatureTokenToMsSignatureHeader"], true);
    assert_eq!(shown["WebhookEvents"].as_array().unwrap().len(), 3);

    // Validation event: 200 {correlationId}, delivered, status completed with responseCode OK.
    let resp = http.post(format!("{reg_url}/validationEvents")).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let correlation = resp.json::<Value>().await.unwrap()["correlationId"].as_str().unwrap().to_owned();
    wait_for("test-created delivery", || !captured.lock().unwrap().is_empty()).await;
    let (headers, body) = captured.lock().unwrap()[0].clone();
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["EventName"], "test-created");
    assert_eq!(event["ResourceName"], "test");
    assert!(
        event["ResourceUri"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/webhooks/v1/registration/validationEvents/{correlation}"))
    );
    assert!(event.as_object().unwrap().contains_key("AuditUri"));
    assert!(event["ResourceChangeUtcDate"].as_str().unwrap().ends_with("+00:00"));
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-ms-signature-algorithm"], "rsa-sha256");
    assert!(headers["x-ms-certificate-url"].to_str().unwrap().starts_with("https://"));
    assert!(headers["x-ms-signature"].to_str().unwrap().starts_with("Signature "), "flag moves the signature");
    assert!(!headers.contains_key("authorization"));
    // The signature is genuine: same as signing the exact body.
    assert_eq!(headers["x-ms-signature"].to_str().unwrap(), format!("Signature {}", sim.sign(body.as_bytes())));

    let status: Value = http
        .get(format!("{reg_url}/validationEvents/{correlation}"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "completed");
    assert_eq!(status["callbackUrl"], hook.as_str());
    assert_eq!(status["results"][0]["responseCode"], "OK");
    assert_eq!(status["results"][0]["systemError"], false);

    // 2 validation events per minute.
    assert_eq!(http.post(format!("{reg_url}/validationEvents")).bearer_auth(&tok).send().await.unwrap().status(), 200);
    let resp = http.post(format!("{reg_url}/validationEvents")).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));

    // The certificate is served over HTTPS from the simulator's own CA.
    let tls = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&sim.ca_certificate_der()).unwrap()])
        .build()
        .unwrap();
    let cert = tls.get(sim.cert_url()).send().await.unwrap();
    assert_eq!(cert.status(), 200);
    assert_eq!(cert.bytes().await.unwrap().as_ref(), sim.signing_certificate_der().as_slice());
}

#[tokio::test]
async fn failed_deliveries_are_retried_ten_times_and_dropped_ones_never_sent() {
    let sim = sim().await;
    let http = reqwest::Client::new();
    let tok = token(&sim, "https://api.partnercenter.microsoft.com").await;
    let (hook, captured) = receiver(500).await;
    let body = json!({ "WebhookUrl": hook, "WebhookEvents": ["referral-created", "referral-updated"] });
    http.post(format!("{}/webhooks/v1/registration", sim.base_url()))
        .bearer_auth(&tok)
        .json(&body)
        .send()
        .await
        .unwrap();
    let pc = token(&sim, "https://api.partner.microsoft.com").await;
    create(&http, &sim, &pc, &minimal_create_body("a")).await;
    wait_for("ten attempts", || sim.deliveries().first().is_some_and(|d| d.finished)).await;
    let d = &sim.deliveries()[0];
    assert_eq!(d.attempts.len(), 10);
    assert!(!d.delivered);
    assert_eq!(captured.lock().unwrap().len(), 10);
    // Default placement of the signature is the Authorization header.
    assert!(captured.lock().unwrap()[0].0["authorization"].to_str().unwrap().starts_with("Signature "));

    sim.inject(Fault { kind: FaultKind::DropDeliveries, count: 1, path_prefix: None, method: None, after: 0 });
    create(&http, &sim, &pc, &minimal_create_body("b")).await;
    let log: Value =
        http.get(format!("{}/_sim/deliveries", sim.base_url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(log[1]["dropped"], true);
    assert_eq!(log[1]["attempts"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn inbound_co_sell_referral_expires_after_fourteen_days_and_emits_events() {
    let sim = sim().await;
    let http = reqwest::Client::new();
    let tok = token(&sim, "https://api.partnercenter.microsoft.com").await;
    let (hook, captured) = receiver(200).await;
    let body = json!({ "WebhookUrl": hook, "WebhookEvents": ["referral-created","referral-updated","related-referral-created","related-referral-updated"] });
    http.post(format!("{}/webhooks/v1/registration", sim.base_url()))
        .bearer_auth(&tok)
        .json(&body)
        .send()
        .await
        .unwrap();

    let resp = http
        .post(format!("{}/_sim/referrals/inbound", sim.base_url()))
        .json(&json!({"name": "From Microsoft"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let out: Value = resp.json().await.unwrap();
    let referral = &out["referral"];
    assert_eq!((referral["status"].as_str(), referral["substatus"].as_str()), (Some("New"), Some("Pending")));
    assert_eq!(referral["direction"], "Incoming");
    assert_eq!(referral["inviteContext"]["invitedBy"]["organizationId"], "msft");
    let id = referral["id"].as_str().unwrap().to_owned();
    let ms_id = out["microsoftReferral"]["id"].as_str().unwrap().to_owned();
    assert_eq!(out["microsoftReferral"]["engagementId"], referral["engagementId"]);

    // The Microsoft seller updates its side: the partner hears related-referral-updated.
    let resp = http
        .post(format!("{}/_sim/referrals/{ms_id}/update", sim.base_url()))
        .json(&json!({"dealValue": 45000, "notes": "bigger"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let resp =
        http.post(format!("{}/_sim/clock/advance", sim.base_url())).json(&json!({"days": 14})).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let pc = token(&sim, "https://api.partner.microsoft.com").await;
    let got: Value = http
        .get(format!("{}/v1.0/engagements/referrals/{id}", sim.base_url()))
        .bearer_auth(&pc)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((got["status"].as_str(), got["substatus"].as_str()), (Some("Closed"), Some("Expired")));
    wait_for("three deliveries", || captured.lock().unwrap().len() >= 3).await;
    let names: Vec<String> = captured
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| serde_json::from_str::<Value>(b).unwrap()["EventName"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"referral-created".to_owned()));
    assert!(names.contains(&"related-referral-updated".to_owned()));
    assert!(names.contains(&"referral-updated".to_owned()), "expiry is an update: {names:?}");
}

#[tokio::test]
async fn put_media_type_select_and_v2_refresh_follow_the_reference() {
    let sim = sim().await;
    let http = reqwest::Client::new();
    // v2 token: numbers are numbers, and the refresh grant works.
    let form = |extra: &str| {
        format!(
            "client_id={DEFAULT_CLIENT_ID}&client_secret={DEFAULT_CLIENT_SECRET}&scope=https%3A%2F%2Fapi.partner.microsoft.com%2F.default%20offline_access&{extra}"
        )
    };
    let t: Value = http
        .post(sim.token_url_v2("tenant-id"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&format!(
            "grant_type=password&username={}&password={DEFAULT_PASSWORD}",
            DEFAULT_USERNAME.replace('@', "%40")
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(t["expires_in"], 3600);
    let refreshed: Value = http
        .post(sim.token_url_v2("tenant-id"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&format!("grant_type=refresh_token&refresh_token={}", t["refresh_token"].as_str().unwrap())))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tok = refreshed["access_token"].as_str().unwrap().to_owned();

    // A create that is not JSON: 415.
    let resp = http
        .post(format!("{}/v1.0/engagements/referrals", sim.base_url()))
        .bearer_auth(&tok)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);

    let created: Value = create(&http, &sim, &tok, &minimal_create_body("put me")).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    let url = format!("{}/v1.0/engagements/referrals/{id}", sim.base_url());
    // PUT (obsolete) needs If-Match and a body without links.
    let mut body = created.clone();
    body.as_object_mut().unwrap().remove("links");
    body["name"] = json!("renamed");
    let resp = http.put(&url).bearer_auth(&tok).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 400, "PUT without If-Match is refused");
    let resp = http
        .put(&url)
        .bearer_auth(&tok)
        .header("If-Match", created["eTag"].as_str().unwrap())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let put: Value = resp.json().await.unwrap();
    assert_eq!(put["name"], "renamed");
    assert_eq!(put["id"], created["id"]);
    assert_ne!(put["eTag"], created["eTag"]);
    assert!(put["links"]["self"].is_object(), "server-owned links come back");

    // $select projects the listed properties.
    let page: Value = http
        .get(format!("{}/v1.0/engagements/referrals?$select=id,status", sim.base_url()))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first = page["value"][0].as_object().unwrap();
    assert_eq!(first.len(), 2);
    assert!(first.contains_key("id") && first.contains_key("status"));
}

#[tokio::test]
async fn top_can_cap_the_result_instead_of_sizing_pages() {
    let config = Config { top_is_page_size: false, page_size: 4, ..Config::default() };
    let sim = Simulator::start(config).await.unwrap();
    let tok = token(&sim, "https://api.partner.microsoft.com").await;
    let http = reqwest::Client::new();
    for i in 0..10 {
        create(&http, &sim, &tok, &minimal_create_body(&format!("d{i}"))).await;
    }
    let mut url = format!("{}/v1.0/engagements/referrals?$top=6", sim.base_url());
    let mut sizes = Vec::new();
    loop {
        let page: Value = http.get(&url).bearer_auth(&tok).send().await.unwrap().json().await.unwrap();
        sizes.push(page["value"].as_array().unwrap().len());
        match page["@odata.nextLink"].as_str() {
            Some(n) => url = n.to_owned(),
            None => break,
        }
    }
    assert_eq!(sizes, vec![4, 2], "6 results in pages of 4");
}

#[tokio::test]
async fn registration_edge_cases_answer_with_csp_error_bodies() {
    let sim = sim().await;
    let http = reqwest::Client::new();
    let tok = token(&sim, "https://api.partnercenter.microsoft.com").await;
    let reg_url = format!("{}/webhooks/v1/registration", sim.base_url());
    // Validation events need a registration that includes test-created.
    let resp = http.post(format!("{reg_url}/validationEvents")).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(err["description"].as_str().unwrap().contains("test-created"));
    assert!(err.get("code").is_some() && err.get("source").is_some());
    // Unknown event names and relative URLs are refused.
    let bad = json!({"WebhookUrl": "https://x.example/hook", "WebhookEvents": ["referral-deleted"]});
    assert_eq!(http.post(&reg_url).bearer_auth(&tok).json(&bad).send().await.unwrap().status(), 400);
    let bad = json!({"WebhookUrl": "/hook", "WebhookEvents": ["referral-created"]});
    assert_eq!(http.post(&reg_url).bearer_auth(&tok).json(&bad).send().await.unwrap().status(), 400);
    // DELETE is a simulator extension: 204, then 404.
    let ok = json!({"WebhookUrl": "https://x.example/hook", "WebhookEvents": ["referral-created"]});
    assert_eq!(http.post(&reg_url).bearer_auth(&tok).json(&ok).send().await.unwrap().status(), 200);
    assert_eq!(http.delete(&reg_url).bearer_auth(&tok).send().await.unwrap().status(), 204);
    assert_eq!(http.delete(&reg_url).bearer_auth(&tok).send().await.unwrap().status(), 404);
    // Unsupported $orderby is a Referrals API 400.
    let pc = token(&sim, "https://api.partner.microsoft.com").await;
    let resp = http
        .get(format!("{}/v1.0/engagements/referrals?$orderby=name", sim.base_url()))
        .bearer_auth(&pc)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "invalidRequest");
}

#[tokio::test]
async fn inbound_referrals_can_be_seeded_without_http_and_are_validated() {
    let sim = sim().await;
    let (lead, ms) = sim
        .create_inbound(json!({"type": "Independent", "qualification": "MarketingQualified", "name": "A lead"}))
        .unwrap();
    assert!(ms.is_none(), "an Independent lead has no Microsoft side");
    assert_eq!(lead["qualification"], "MarketingQualified");
    assert_eq!(sim.referral(lead["id"].as_str().unwrap()).unwrap()["name"], "A lead");
    assert!(sim.create_inbound(json!({"id": "has space"})).is_err());
    let resp = reqwest::Client::new()
        .post(format!("{}/_sim/referrals/inbound", sim.base_url()))
        .json(&json!({"details": "not an object"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}
