//! Contract tests: our client against the Partner Center simulator, for every operation and error path.

use cosell_core::budget::{Api, ApiBudget, BudgetError};
use cosell_core::fakes::CountingBudget;
use cosell_core::ids::ReferralId;
use cosell_core::ports::{PartnerCenter, PartnerCenterError, ReferralQuery};
use cosell_core::referral::patch::ops;
use cosell_core::referral::{
    Address, Consent, CustomerProfile, DealKind, Lifecycle, PatchOp, Referral, ReferralDetails, ReferralRequirements,
    ReferralType, SolutionTag, SolutionType,
};
use cosell_partner_center::{
    AuthConfig, ClientConfig, PartnerCenterClient, TokenEndpoint, UserCredentials, WebhookRegistration,
};
use cosell_simulators::partner_center::{
    Config, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME, Fault, FaultKind, SimHandle,
    SimUser, Simulator,
};
use secrecy::SecretString;
use serde_json::{Value, json};

async fn sim() -> SimHandle {
    let config = Config {
        delivery_backoff: std::time::Duration::from_millis(5),
        delivery_backoff_max: std::time::Duration::from_millis(20),
        ..Config::default()
    };
    Simulator::start(config).await.expect("simulator starts")
}

fn auth(sim: &SimHandle, user: UserCredentials) -> AuthConfig {
    AuthConfig {
        token_url: sim.token_url("common"),
        endpoint: TokenEndpoint::V1,
        ..AuthConfig::new(DEFAULT_CLIENT_ID, SecretString::from(DEFAULT_CLIENT_SECRET), user)
    }
}

fn password(user: &str, pw: &str) -> UserCredentials {
    UserCredentials::Password { username: user.to_owned(), password: SecretString::from(pw.to_owned()) }
}

fn client_with<B: ApiBudget>(sim: &SimHandle, user: UserCredentials, budget: B) -> PartnerCenterClient<B> {
    let config = ClientConfig {
        referrals_base_url: sim.base_url().to_owned(),
        webhooks_base_url: sim.base_url().to_owned(),
        ..ClientConfig::new(auth(sim, user))
    };
    PartnerCenterClient::new(config, budget).expect("client builds")
}

fn client(sim: &SimHandle) -> (PartnerCenterClient<CountingBudget>, CountingBudget) {
    let budget = CountingBudget::default();
    (client_with(sim, password(DEFAULT_USERNAME, DEFAULT_PASSWORD), budget.clone()), budget)
}

fn deal(name: &str) -> Referral {
    Referral {
        name: Some(name.to_owned()),
        referral_type: Some(ReferralType::Independent),
        customer_profile: Some(CustomerProfile {
            name: Some("Fabrikam Inc".into()),
            address: Some(Address {
                country: Some("US".into()),
                postal_code: Some("98004".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        consent: Some(Consent {
            consent_to_share_info_with_others: Some(true),
            consent_to_contact: Some(true),
            consent_to_share_referral_with_microsoft_sellers: Some(false),
            ..Default::default()
        }),
        details: Some(ReferralDetails {
            notes: Some("first".into()),
            deal_value: Some(cosell_core::referral::LenientNumber(30000.0)),
            currency: Some("USD".into()),
            requirements: Some(ReferralRequirements {
                solutions: Some(vec![SolutionTag {
                    id: Some("SOL-6115380-IPC".into()),
                    solution_type: Some(SolutionType::Name),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn id_of(r: &Referral) -> ReferralId {
    r.id.clone().expect("server assigned an id")
}

async fn control(sim: &SimHandle, path: &str, body: Value) -> Value {
    let resp = reqwest::Client::new().post(format!("{}/_sim/{path}", sim.base_url())).json(&body).send().await.unwrap();
    assert!(resp.status().is_success(), "control {path}: {}", resp.status());
    resp.json().await.unwrap_or(Value::Null)
}

#[tokio::test]
async fn inbound_referral_patched_accepted_and_won_moves_only_through_allowed_states() {
    let sim = sim().await;
    let (pc, _) = client(&sim);
    let created = control(&sim, "referrals/inbound", json!({"name": "From Microsoft"})).await;
    let id = ReferralId::parse(created["referral"]["id"].as_str().unwrap()).unwrap();

    let mut states = Vec::new();
    let r = pc.get_referral(&id).await.unwrap();
    states.push(r.lifecycle().unwrap());
    assert_eq!(r.deal_kind(), DealKind::CoSell);

    // Patch the value, guarded by the eTag: stays New/Pending, eTag changes.
    let r2 = pc.patch_referral(&id, &[PatchOp::replace("/details/dealValue", 45000)], r.etag.as_ref()).await.unwrap();
    states.push(r2.lifecycle().unwrap());
    assert_ne!(r2.etag, r.etag);
    assert_eq!(r2.details.as_ref().unwrap().deal_value.unwrap().0, 45000.0);

    // The stale eTag now conflicts.
    let stale = pc.patch_referral(&id, &[PatchOp::replace("/details/notes", "x")], r.etag.as_ref()).await;
    assert!(matches!(stale, Err(PartnerCenterError::Conflict(_))), "{stale:?}");

    // Accept.
    let r3 = pc.patch_referral(&id, &ops::accept(), r2.etag.as_ref()).await.unwrap();
    states.push(r3.lifecycle().unwrap());
    assert!(r3.accepted_date_time.is_some());

    // Back to New is not allowed by the table.
    let back = pc.patch_referral(&id, &ops::move_to(Lifecycle::NewPending), None).await;
    assert!(matches!(back, Err(PartnerCenterError::Invalid { ref code, .. }) if code == "invalidRequest"), "{back:?}");

    // Close Won.
    let r4 = pc.patch_referral(&id, &ops::move_to(Lifecycle::ClosedWon), r3.etag.as_ref()).await.unwrap();
    states.push(r4.lifecycle().unwrap());
    assert!(r4.closed_date_time.is_some());
    assert_eq!(
        states,
        vec![Lifecycle::NewPending, Lifecycle::NewPending, Lifecycle::ActiveAccepted, Lifecycle::ClosedWon]
    );

    // Terminal: the documented 400 invalidRequest for any later write.
    let after = pc.patch_referral(&id, &[PatchOp::replace("/details/notes", "reopen?")], r4.etag.as_ref()).await;
    match after {
        Err(PartnerCenterError::Invalid { code, message }) => {
            assert_eq!(code, "invalidRequest");
            assert!(message.contains("Closed/Won"), "{message}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(pc.get_referral(&id).await.unwrap().lifecycle().unwrap(), Lifecycle::ClosedWon);
}

#[tokio::test]
async fn co_sell_create_joins_an_engagement_and_microsoft_acceptance_is_visible() {
    let sim = sim().await;
    let (pc, _) = client(&sim);
    let mut invitation = deal("Invitation");
    invitation.invite_context = Some(cosell_core::referral::InviteContext {
        notes: Some("Need a PoC".into()),
        assistance_request_code: Some(cosell_core::referral::AssistanceRequestCode::ProofOfConceptOrDemo),
        ..Default::default()
    });
    let both = pc.create_co_sell(&deal("Own"), &invitation).await.unwrap();
    assert_eq!(both.own.lifecycle().unwrap(), Lifecycle::ActiveAccepted, "outgoing deals land Active/Accepted");
    assert_eq!(both.microsoft.lifecycle().unwrap(), Lifecycle::NewPending, "Microsoft has to decide");
    assert_eq!(both.own.engagement_id, both.microsoft.engagement_id);
    assert!(both.microsoft.targets_microsoft());
    assert_eq!(both.microsoft.deal_kind(), DealKind::CoSell);

    let related = pc.related_referrals(both.own.engagement_id.as_ref().unwrap()).await.unwrap();
    assert_eq!(related.len(), 2);

    // The Microsoft seller accepts the invitation in the simulator.
    control(&sim, &format!("referrals/{}/accept", id_of(&both.microsoft)), json!({})).await;
    let ms = pc.get_referral(&id_of(&both.microsoft)).await.unwrap();
    assert_eq!(ms.lifecycle().unwrap(), Lifecycle::ActiveAccepted);

    let own = pc.patch_referral(&id_of(&both.own), &ops::move_to(Lifecycle::ClosedWon), both.own.etag.as_ref()).await;
    assert_eq!(own.unwrap().lifecycle().unwrap(), Lifecycle::ClosedWon);
    let again = pc.patch_referral(&id_of(&both.own), &ops::move_to(Lifecycle::ClosedLost), None).await;
    assert!(matches!(again, Err(PartnerCenterError::Invalid { .. })));
}

#[tokio::test]
async fn listing_250_referrals_follows_next_link_over_three_pages_and_charges_each_call() {
    let sim = sim().await;
    let (pc, budget) = client(&sim);
    for i in 0..250 {
        pc.create_referral(&deal(&format!("deal {i}"))).await.unwrap();
    }
    assert_eq!(budget.calls(Api::PartnerCenter), 250);

    let mut pages = 0;
    let mut next: Option<String> = None;
    let mut seen = std::collections::HashSet::new();
    loop {
        let page = PartnerCenter::list_referrals(&pc, &ReferralQuery::default(), next.as_deref()).await.unwrap();
        pages += 1;
        seen.extend(page.items.iter().map(id_of));
        match page.next {
            // The simulator writes the documentation's link form (`/v1.0/referrals?$skiptoken=`),
            // which only works if followed verbatim.
            Some(n) => {
                assert!(n.contains("/v1.0/referrals?$skiptoken="), "{n}");
                next = Some(n);
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 250);
    assert_eq!(budget.calls(Api::PartnerCenter), 253, "every call is charged");
    assert_eq!(budget.calls(Api::PartnerCenter), sim.api_calls());

    let all = pc.list_all(&ReferralQuery { top: Some(100), ..ReferralQuery::default() }).await.unwrap();
    assert_eq!(all.len(), 250);
    let filtered = pc
        .list_all(&ReferralQuery {
            filter: Some("status eq 'Active' and customerProfile/address/country eq 'US'".into()),
            orderby: Some("createdDateTime desc".into()),
            top: Some(50),
        })
        .await
        .unwrap();
    assert_eq!(filtered.len(), 250);
    assert_eq!(filtered[0].name.as_deref(), Some("deal 249"), "desc order");
    let bad = pc.list_referrals(&ReferralQuery::filter("startswith(name,'x')"), None).await;
    assert!(matches!(bad, Err(PartnerCenterError::Invalid { .. })));
}

#[tokio::test]
async fn http_failures_map_to_typed_errors() {
    let sim = sim().await;
    let (pc, _) = client(&sim);
    let missing = pc.get_referral(&ReferralId::parse("does-not-exist").unwrap()).await;
    assert!(matches!(missing, Err(PartnerCenterError::NotFound(_))), "{missing:?}");

    let mut no_country = deal("x");
    no_country.customer_profile.as_mut().unwrap().address.as_mut().unwrap().country = Some("USA".into());
    let invalid = pc.create_referral(&no_country).await;
    assert!(
        matches!(invalid, Err(PartnerCenterError::Invalid { ref code, .. }) if code == "invalidRequest"),
        "{invalid:?}"
    );

    sim.inject(Fault {
        kind: FaultKind::Throttle { retry_after_secs: 7 },
        count: 1,
        path_prefix: None,
        method: None,
        after: 0,
    });
    let throttled = pc.list_referrals(&ReferralQuery::default(), None).await;
    assert!(
        matches!(throttled, Err(PartnerCenterError::Throttled { retry_after: Some(d) }) if d.as_secs() == 7),
        "{throttled:?}"
    );

    sim.inject(Fault {
        kind: FaultKind::Status { status: 503, retry_after_secs: Some(2) },
        count: 1,
        path_prefix: None,
        method: None,
        after: 0,
    });
    let unavailable = pc.list_referrals(&ReferralQuery::default(), None).await;
    assert!(matches!(unavailable, Err(PartnerCenterError::Throttled { .. })), "{unavailable:?}");

    sim.inject(Fault {
        kind: FaultKind::Status { status: 500, retry_after_secs: None },
        count: 1,
        path_prefix: Some("/v1.0/engagements/referrals".into()),
        method: Some("POST".into()),
        after: 0,
    });
    let transient = pc.create_referral(&deal("y")).await;
    assert!(matches!(transient, Err(ref e @ PartnerCenterError::Transient(_)) if e.is_retryable()), "{transient:?}");

    // 503 without Retry-After: repeated within the call, so a short outage costs no queue round trip.
    sim.inject(Fault {
        kind: FaultKind::Status { status: 503, retry_after_secs: None },
        count: 2,
        path_prefix: None,
        method: None,
        after: 0,
    });
    let calls = sim.api_calls();
    assert!(pc.list_referrals(&ReferralQuery::default(), None).await.is_ok());
    assert_eq!(sim.api_calls() - calls, 3, "two refused attempts and the one that succeeded");

    // A slow answer still succeeds.
    sim.inject(Fault { kind: FaultKind::Slow { delay_ms: 150 }, count: 1, path_prefix: None, method: None, after: 0 });
    let started = std::time::Instant::now();
    assert!(pc.list_referrals(&ReferralQuery::default(), None).await.is_ok());
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
}

#[tokio::test]
async fn permission_and_credential_problems_say_what_to_fix() {
    let sim = sim().await;
    // No Referrals role → MissingRole naming Referrals admin (R17).
    sim.upsert_user(SimUser::new("sales@partner.example", "pw", &["Sales agent"]));
    let pc = client_with(&sim, password("sales@partner.example", "pw"), CountingBudget::default());
    let err = pc.get_referral(&ReferralId::parse("x").unwrap()).await.unwrap_err();
    assert!(matches!(err, PartnerCenterError::MissingRole { role: "Referrals admin", .. }), "{err:?}");
    assert!(err.to_string().contains("Referrals admin"));

    // Expired password.
    let mut expired = SimUser::new("old@partner.example", "pw", &["Referrals admin"]);
    expired.password_expired = true;
    sim.upsert_user(expired);
    let pc = client_with(&sim, password("old@partner.example", "pw"), CountingBudget::default());
    let err = pc.get_referral(&ReferralId::parse("x").unwrap()).await.unwrap_err();
    assert!(matches!(err, PartnerCenterError::CredentialsExpired(ref m) if m.contains("password")), "{err:?}");

    // Wrong password: not "expired", just unauthenticated.
    let pc = client_with(&sim, password(DEFAULT_USERNAME, "wrong"), CountingBudget::default());
    let err = pc.get_referral(&ReferralId::parse("x").unwrap()).await.unwrap_err();
    assert!(matches!(err, PartnerCenterError::Unauthenticated(_)), "{err:?}");

    // Refresh-token credentials: work until Entra expires the refresh token.
    let rt = raw_refresh_token(&sim).await;
    let pc = client_with(&sim, UserCredentials::RefreshToken(SecretString::from(rt)), CountingBudget::default());
    pc.list_referrals(&ReferralQuery::default(), None).await.unwrap();
    control(&sim, "auth/expire-refresh-tokens", json!({})).await;
    control(&sim, "auth/expire-access-tokens", json!({})).await;
    let err = pc.list_referrals(&ReferralQuery::default(), None).await.unwrap_err();
    assert!(matches!(err, PartnerCenterError::CredentialsExpired(ref m) if m.contains("refresh token")), "{err:?}");
}

async fn raw_refresh_token(sim: &SimHandle) -> String {
    let body = format!(
        "grant_type=password&client_id={DEFAULT_CLIENT_ID}&client_secret={DEFAULT_CLIENT_SECRET}&username={}&password={DEFAULT_PASSWORD}&resource=https%3A%2F%2Fapi.partner.microsoft.com",
        DEFAULT_USERNAME.replace('@', "%40")
    );
    let v: Value = reqwest::Client::new()
        .post(sim.token_url("common"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["refresh_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn tokens_are_cached_per_api_and_renewed_after_a_401() {
    let sim = sim().await;
    let (pc, budget) = client(&sim);
    for _ in 0..3 {
        pc.list_referrals(&ReferralQuery::default(), None).await.unwrap();
    }
    assert_eq!(sim.tokens_issued(), 1, "one token serves every Referrals API call");
    pc.webhook_events().await.unwrap();
    assert_eq!(sim.tokens_issued(), 2, "the Webhooks API needs its own audience");

    // The service stops accepting the cached token: one 401, then a refreshed token and success.
    control(&sim, "auth/expire-access-tokens", json!({})).await;
    let before = budget.calls(Api::PartnerCenter);
    pc.list_referrals(&ReferralQuery::default(), None).await.unwrap();
    assert_eq!(sim.tokens_issued(), 3);
    assert_eq!(budget.calls(Api::PartnerCenter) - before, 2, "the retried call is charged too");

    // The password grant backs up an expired refresh token.
    control(&sim, "auth/expire-refresh-tokens", json!({})).await;
    control(&sim, "auth/expire-access-tokens", json!({})).await;
    pc.list_referrals(&ReferralQuery::default(), None).await.unwrap();
}

#[derive(Debug, Clone, Default)]
struct RefusingBudget;

impl ApiBudget for RefusingBudget {
    async fn charge(&self, api: Api, _calls: u64) -> Result<(), BudgetError> {
        Err(BudgetError::Exhausted { api, used: 10_000, cap: 10_000, resets_at: chrono::Utc::now() })
    }
}

#[tokio::test]
async fn an_exhausted_budget_stops_the_call_before_it_is_made() {
    let sim = sim().await;
    let pc = client_with(&sim, password(DEFAULT_USERNAME, DEFAULT_PASSWORD), RefusingBudget);
    let err = pc.create_referral(&deal("x")).await.unwrap_err();
    assert!(matches!(err, PartnerCenterError::Budget(BudgetError::Exhausted { .. })), "{err:?}");
    assert_eq!(sim.api_calls(), 0);
}

#[tokio::test]
async fn webhook_registration_is_created_then_left_alone_then_overwritten() {
    let sim = sim().await;
    let (pc, _) = client(&sim);
    assert_eq!(pc.get_registration().await.unwrap(), None);
    let events = pc.webhook_events().await.unwrap();
    assert!(events.iter().any(|e| e == "referral-updated"));

    let reg = WebhookRegistration::for_connector("https://receiver.example/hook", true);
    let (created, wrote) = pc.ensure_registration(&reg).await.unwrap();
    assert!(wrote);
    assert!(created.subscriber_id.is_some());
    assert_eq!(created.webhook_events.len(), 5);
    let (_, wrote) = pc.ensure_registration(&reg).await.unwrap();
    assert!(!wrote, "identical registration is not rewritten");
    let dup = pc.create_registration(&reg).await;
    assert!(matches!(dup, Err(PartnerCenterError::AlreadyExists(_))), "{dup:?}");

    let moved = WebhookRegistration::for_connector("https://receiver.example/other", true);
    let (updated, wrote) = pc.ensure_registration(&moved).await.unwrap();
    assert!(wrote);
    assert_eq!(updated.webhook_url, "https://receiver.example/other");
    let shown = pc.get_registration().await.unwrap().unwrap();
    assert_eq!(shown.webhook_url, "https://receiver.example/other");
    assert_eq!(shown.signature_token_to_ms_signature_header, Some(true));
}

#[tokio::test]
async fn validation_event_delivery_status_is_readable() {
    let sim = sim().await;
    let (pc, _) = client(&sim);
    // No receiver listens on this port: every attempt fails, and the status says so.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", dead.local_addr().unwrap());
    drop(dead);
    pc.ensure_registration(&WebhookRegistration::for_connector(url, false)).await.unwrap();
    let correlation = pc.send_validation_event().await.unwrap();
    let mut status = pc.validation_event(&correlation).await.unwrap();
    for _ in 0..200 {
        if status.status.as_deref() != Some("pending") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        status = pc.validation_event(&correlation).await.unwrap();
    }
    assert_eq!(status.correlation_id, correlation);
    assert_eq!(status.status.as_deref(), Some("failed"));
    assert_eq!(status.results.len(), 10, "ten attempts");
    assert_eq!(status.results[0].system_error, Some(true));
    let missing = pc.validation_event("nope").await;
    assert!(matches!(missing, Err(PartnerCenterError::NotFound(_))));
}

#[tokio::test]
async fn webhooks_api_can_use_an_app_only_token() {
    let sim = sim().await;
    let config = ClientConfig {
        referrals_base_url: sim.base_url().to_owned(),
        webhooks_base_url: sim.base_url().to_owned(),
        webhooks_app_only: true,
        // A user that could not sign in: proves the webhook calls do not need one.
        ..ClientConfig::new(auth(&sim, password("nobody@partner.example", "nope")))
    };
    let pc = PartnerCenterClient::new(config, CountingBudget::default()).unwrap();
    let reg = WebhookRegistration::for_connector("https://receiver.example/hook", false);
    let (_, wrote) = pc.ensure_registration(&reg).await.unwrap();
    assert!(wrote);
    assert_eq!(sim.tokens_issued(), 1);
    // The Referrals API still needs the user, and says so.
    let err = pc.list_referrals(&ReferralQuery::default(), None).await.unwrap_err();
    assert!(matches!(err, PartnerCenterError::Unauthenticated(_)), "{err:?}");
}
