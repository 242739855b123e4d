//! Salesforce-specific behaviour of the Salesforce adapter against the simulator.

mod harness;

use cosell_core::ReferralId;
use cosell_core::budget::Api;
use cosell_core::crm::{
    ChangeKind, CosellFields, CrmError, CrmPort, DealState, LeadFields, OpportunityFields, OpportunityKey,
};
use cosell_crm::{SalesforceAuth, SalesforceConfig, SalesforceCrm};
use harness::{Harness, SalesforceHarness, sim};
use secrecy::SecretString;
use serde_json::json;

fn fixture(name: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../simulators/tests/clients/fixtures");
    std::fs::read_to_string(dir.join(name)).unwrap()
}

fn synced(name: &str) -> OpportunityFields {
    OpportunityFields {
        name: Some(name.into()),
        close_date: chrono::NaiveDate::from_ymd_opt(2026, 9, 30),
        cosell: CosellFields { sync: Some(true), ..Default::default() },
        ..Default::default()
    }
}

#[tokio::test]
async fn jwt_bearer_authentication_uses_the_instance_url_and_identity() {
    let h =
        SalesforceHarness::with_config(|c| c.jwt_public_key_pem = Some(fixture("jwt-test-public.pem")), |_| {}).await;
    let auth = SalesforceAuth::JwtBearer {
        client_id: "cosell-connector".into(),
        username: "integration@cosell.example".into(),
        private_key_pem: SecretString::from(fixture("jwt-test-key.pem")),
        audience: "https://login.salesforce.com".into(),
    };
    let crm = SalesforceCrm::new(SalesforceConfig::new(&h.base_url(), auth), h.budget.clone()).unwrap();
    let me = crm.whoami().await.unwrap();
    assert_eq!(me.user_id, cosell_simulators::salesforce::INTEGRATION_USER_ID);
    assert_eq!(me.organization_id.as_deref(), Some(cosell_simulators::salesforce::ORG_ID));
    assert!(crm.find_opportunity_by_referral(&ReferralId::parse("r").unwrap()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_jwt_signed_with_another_key_is_refused() {
    let h =
        SalesforceHarness::with_config(|c| c.jwt_public_key_pem = Some(fixture("jwt-test-public.pem")), |_| {}).await;
    let other = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
    let pem = rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&other, rsa::pkcs8::LineEnding::LF).unwrap().to_string();
    let auth = SalesforceAuth::JwtBearer {
        client_id: "cosell-connector".into(),
        username: "integration@cosell.example".into(),
        private_key_pem: SecretString::from(pem),
        audience: "https://login.salesforce.com".into(),
    };
    let crm = SalesforceCrm::new(SalesforceConfig::new(&h.base_url(), auth), h.budget.clone()).unwrap();
    match crm.whoami().await {
        Err(CrmError::Unauthorized(m)) => assert!(m.contains("invalid_grant"), "{m}"),
        other => panic!("expected Unauthorized, got {other:?}"),
    }
}

#[tokio::test]
async fn writes_carry_the_call_options_client_id() {
    let h = SalesforceHarness::start().await;
    h.crm.create_opportunity(&synced("A")).await.unwrap();
    let journal = sim(&format!("{}/_sim/journal", h.base_url()), reqwest::Method::GET, None).await;
    let entries = journal.as_array().unwrap();
    assert!(!entries.is_empty());
    assert!(entries.iter().all(|e| e["call_options"] == "client=cosell-connector"), "{journal}");
}

#[tokio::test]
async fn the_org_request_limit_is_a_limit_exceeded_error() {
    // Bare: installing the schema would spend the one call.
    let h = SalesforceHarness::bare(|c| c.daily_api_limit = 1, |_| {}).await;
    h.crm.get_opportunity(SalesforceHarness::MISSING_ID).await.unwrap_err();
    match h.crm.get_opportunity(SalesforceHarness::MISSING_ID).await {
        Err(CrmError::LimitExceeded { message, .. }) => assert!(message.contains("TotalRequests"), "{message}"),
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
}

#[tokio::test]
async fn a_single_currency_org_gets_no_currency_iso_code() {
    let h = SalesforceHarness::with_config(|c| c.multi_currency = false, |c| c.fields.multi_currency = false).await;
    let mut f = synced("A");
    f.currency = Some("EUR".into());
    let rec = h.crm.create_opportunity(&f).await.unwrap().record;
    assert_eq!(rec.fields.currency, None);
    let row = sim(&format!("{}/_sim/records/Opportunity/{}", h.base_url(), rec.id), reqwest::Method::GET, None).await;
    assert!(row.get("CurrencyIsoCode").is_none(), "{row}");
}

#[tokio::test]
async fn with_leads_enabled_an_idle_poll_is_still_one_composite_call() {
    let h = SalesforceHarness::with_config(|_| {}, |c| c.fields.feed_leads = true).await;
    let lead = LeadFields {
        last_name: Some("Hopper".into()),
        company: Some("Fabrikam".into()),
        cosell: CosellFields {
            sync: Some(true),
            referral_id: Some(ReferralId::parse("lead-1").unwrap()),
            ..Default::default()
        },
        ..Default::default()
    };
    let lead_id = h.crm.create_lead(&lead).await.unwrap().record.id;
    let opp_id = h.crm.create_opportunity(&synced("A")).await.unwrap().record.id;
    let first = h.crm.changes(None).await.unwrap();
    let kinds: Vec<(ChangeKind, &str)> = first.changes.iter().map(|c| (c.kind, c.record.id())).collect();
    assert_eq!(kinds, [(ChangeKind::Opportunity, opp_id.as_str()), (ChangeKind::Lead, lead_id.as_str())]);
    let before = (h.api_calls().await, h.budget.calls(Api::Salesforce));
    let idle = h.crm.changes(Some(&first.next)).await.unwrap();
    assert!(idle.changes.is_empty());
    assert_eq!((h.api_calls().await - before.0, h.budget.calls(Api::Salesforce) - before.1), (1, 1));
}

#[tokio::test]
async fn configured_stage_names_drive_hold_and_close() {
    let h = SalesforceHarness::with_config(
        |_| {},
        |c| {
            c.fields.stage_active = "Qualification".into();
            c.fields.stage_on_hold = "Needs Analysis".into();
        },
    )
    .await;
    let created = h.crm.create_opportunity(&synced("A")).await.unwrap().record;
    assert_eq!(created.stage.as_deref(), Some("Qualification"));
    let held = h.crm.set_on_hold(&created.id, true).await.unwrap();
    assert_eq!((held.state, held.stage.as_deref()), (DealState::OnHold, Some("Needs Analysis")));
    // A seller closes the deal in the CRM: the stage table derives IsClosed/IsWon.
    let url = format!("{}/_sim/records/Opportunity/{}", h.base_url(), created.id);
    sim(&url, reqwest::Method::PATCH, Some(json!({"StageName": "Closed Lost"}))).await;
    assert_eq!(h.crm.get_opportunity(&created.id).await.unwrap().state, DealState::Lost);
}

#[tokio::test]
async fn long_names_are_cut_to_the_120_characters_salesforce_allows() {
    let h = SalesforceHarness::start().await;
    let rec = h.crm.create_opportunity(&synced(&"x".repeat(300))).await.unwrap().record;
    assert_eq!(rec.fields.name.map(|n| n.len()), Some(120));
}

#[tokio::test]
async fn a_misnamed_field_is_reported_by_name() {
    // The org holds the schema as installed; the connector's configuration misspells one field.
    let h = SalesforceHarness::start().await;
    let mut config = h.config.clone();
    config.fields.cosell.audit = "Audti__c".into();
    let crm = SalesforceCrm::new(config, h.budget.clone()).unwrap();
    let mut f = synced("A");
    f.cosell.audit = Some("x".into());
    match crm.create_opportunity(&f).await {
        Err(CrmError::Invalid { field, .. }) => assert_eq!(field.as_deref(), Some("Audti__c")),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn demo_data_is_a_synced_opportunity_with_a_solution_and_a_contact() {
    let h = SalesforceHarness::with_config(|c| c.seed_demo = true, |_| {}).await;
    let batch = h.crm.changes(None).await.unwrap();
    assert_eq!(batch.changes.len(), 1, "only the shared opportunity carries the sync flag");
    let opp = h.crm.get_opportunity(batch.changes[0].record.id()).await.unwrap();
    assert_eq!(opp.fields.currency.as_deref(), Some("EUR"));
    assert_eq!(opp.fields.cosell.help.as_deref(), Some(&["CustomerTechnicalArchitecture".to_owned()][..]));
    assert_eq!(h.crm.list_solutions(&opp.id).await.unwrap()[0].solution_id, "SOL-CONTOSO-CLOUD");
    let account = h.crm.load_opportunity(OpportunityKey::Id(&opp.id)).await.unwrap().and_then(|d| d.account);
    let account = account.expect("the demo opportunity's account");
    assert_eq!(opp.fields.account_id.as_deref(), Some(account.id.as_str()));
    let customer = h.crm.find_customer(&account.fields, Some("ada@contoso.example")).await.unwrap();
    assert!(customer.contact.is_some(), "the account's contact");
}

#[tokio::test]
async fn api_calls_go_to_the_instance_url_of_the_token_response_not_the_login_host() {
    let h = SalesforceHarness::start().await;
    // A login host that only issues tokens (pointing at the simulator as the instance) and serves no API.
    let form =
        [("grant_type", "client_credentials"), ("client_id", "cosell-connector"), ("client_secret", "sim-secret")];
    let token: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/services/oauth2/token", h.base_url()))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let login = axum::Router::new().route(
        "/services/oauth2/token",
        axum::routing::post(move || {
            let token = token.clone();
            async move { axum::Json(token) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let login_url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, login).await });
    let auth = SalesforceAuth::ClientCredentials {
        client_id: "cosell-connector".into(),
        client_secret: SecretString::from("x"),
    };
    let crm = SalesforceCrm::new(SalesforceConfig::new(&login_url, auth), h.budget.clone()).unwrap();
    let before = h.api_calls().await;
    assert!(crm.find_opportunity_by_referral(&ReferralId::parse("r").unwrap()).await.unwrap().is_none());
    assert_eq!(h.api_calls().await - before, 1, "the call reached the instance");
    server.abort();
}
