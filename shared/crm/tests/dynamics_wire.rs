//! Dataverse-specific behaviour of the Dynamics adapter against the simulator.

mod harness;

use std::time::Duration;

use cosell_core::ReferralId;
use cosell_core::budget::Api;
use cosell_core::crm::{ChangeKind, CosellFields, CrmError, CrmPort, LeadFields, OpportunityFields, OpportunityKey};
use cosell_crm::{DynamicsConfig, DynamicsCrm};
use harness::{DynamicsHarness, Harness, sim};
use secrecy::SecretString;
use serde_json::json;

fn synced(name: &str, referral: &str) -> OpportunityFields {
    OpportunityFields {
        name: Some(name.into()),
        cosell: CosellFields {
            sync: Some(true),
            referral_id: Some(ReferralId::parse(referral).unwrap()),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn an_expired_delta_link_restarts_the_feed_with_a_full_snapshot() {
    let h = DynamicsHarness::start().await;
    let a = h.crm.create_opportunity(&synced("A", "ref-a")).await.unwrap().record.id;
    let first = h.crm.changes(None).await.unwrap();
    assert_eq!(first.changes.len(), 1);
    h.fault(json!({"kind": "expire_delta_tokens"})).await;
    let b = h.crm.create_opportunity(&synced("B", "ref-b")).await.unwrap().record.id;
    let resync = h.crm.changes(Some(&first.next)).await.unwrap();
    assert!(resync.full_resync);
    let mut ids: Vec<&str> = resync.changes.iter().map(|c| c.record.id()).collect();
    ids.sort();
    let mut want = vec![a.as_str(), b.as_str()];
    want.sort();
    assert_eq!(ids, want);
    let idle = h.crm.changes(Some(&resync.next)).await.unwrap();
    assert!(idle.changes.is_empty() && !idle.full_resync);
}

#[tokio::test]
async fn change_tracking_tokens_older_than_the_retention_expire() {
    let h = DynamicsHarness::start().await;
    h.crm.create_opportunity(&synced("A", "ref-a")).await.unwrap();
    let first = h.crm.changes(None).await.unwrap();
    h.clock.advance(chrono::Duration::days(8));
    let later = h.crm.changes(Some(&first.next)).await.unwrap();
    assert!(later.full_resync);
    assert_eq!(later.changes.len(), 1);
}

#[tokio::test]
async fn deletes_come_through_the_change_feed() {
    let h = DynamicsHarness::start().await;
    let id = h.crm.create_opportunity(&synced("A", "ref-a")).await.unwrap().record.id;
    let first = h.crm.changes(None).await.unwrap();
    let url = format!("{}/_sim/records/opportunities/{id}", h.base_url());
    sim(&url, reqwest::Method::DELETE, None).await;
    let next = h.crm.changes(Some(&first.next)).await.unwrap();
    assert_eq!(next.changes.len(), 1);
    assert!(next.changes[0].deleted);
    assert_eq!(next.changes[0].record.id(), id);
}

#[tokio::test]
async fn with_leads_enabled_the_feed_also_reports_synced_leads() {
    let h = DynamicsHarness::with_config(|_| {}).await;
    let mut cfg = DynamicsConfig::for_simulator(&h.base_url(), "cosell-connector", SecretString::from("sim-secret"));
    cfg.fields.feed_leads = true;
    let crm = DynamicsCrm::new(cfg, h.budget.clone()).unwrap();
    let lead = LeadFields {
        topic: Some("T".into()),
        last_name: Some("L".into()),
        cosell: CosellFields { sync: Some(true), ..Default::default() },
        ..Default::default()
    };
    let id = crm.create_lead(&lead).await.unwrap().record.id;
    let batch = crm.changes(None).await.unwrap();
    assert_eq!(batch.changes.len(), 1);
    assert_eq!(batch.changes[0].kind, ChangeKind::Lead);
    assert_eq!(batch.changes[0].record.id(), id);
    assert_eq!(batch.changes[0].record.entity(), "lead");
}

#[tokio::test]
async fn a_429_carries_the_retry_after_delay() {
    let h = DynamicsHarness::start().await;
    h.fault(json!({"kind": "throttle", "retry_after": 7})).await;
    match h.crm.whoami().await {
        Err(CrmError::Throttled { retry_after }) => assert_eq!(retry_after, Some(Duration::from_secs(7))),
        other => panic!("expected Throttled, got {other:?}"),
    }
    assert_eq!(h.crm.whoami().await.unwrap().user_id, cosell_simulators::dynamics::APP_USER_ID);
}

#[tokio::test]
async fn the_daily_request_limit_throttles_for_an_hour() {
    // A bare environment (an install would spend the day's two calls): the first two calls are
    // answered (a 400 for the missing columns), the third is refused by the daily limit.
    let h = DynamicsHarness::bare_with_config(|c| c.daily_api_limit = 2).await;
    let _ = h.crm.find_opportunity_by_referral(&ReferralId::parse("r1").unwrap()).await;
    let _ = h.crm.find_opportunity_by_referral(&ReferralId::parse("r2").unwrap()).await;
    match h.crm.find_opportunity_by_referral(&ReferralId::parse("r3").unwrap()).await {
        Err(CrmError::Throttled { retry_after }) => assert_eq!(retry_after, Some(Duration::from_secs(3600))),
        other => panic!("expected Throttled, got {other:?}"),
    }
}

#[tokio::test]
async fn a_wrong_client_secret_is_reported_with_the_entra_error() {
    let h = DynamicsHarness::start().await;
    let cfg = DynamicsConfig::for_simulator(&h.base_url(), "cosell-connector", SecretString::from("wrong"));
    let crm = DynamicsCrm::new(cfg, h.budget.clone()).unwrap();
    match crm.whoami().await {
        Err(CrmError::Unauthorized(m)) => assert!(m.contains("AADSTS7000215") && !m.contains("wrong"), "{m}"),
        other => panic!("expected Unauthorized, got {other:?}"),
    }
}

#[tokio::test]
async fn the_currency_table_is_read_once_and_cached() {
    let h = DynamicsHarness::start().await;
    let mut f = synced("A", "ref-a");
    f.currency = Some("GBP".into());
    h.crm.create_opportunity(&f).await.unwrap();
    let after_first = h.budget.calls(Api::Dataverse);
    assert_eq!(after_first, 2, "currency lookup + create");
    let mut g = synced("B", "ref-b");
    g.currency = Some("gbp".into());
    let b = h.crm.create_opportunity(&g).await.unwrap().record;
    assert_eq!(h.budget.calls(Api::Dataverse) - after_first, 1);
    assert_eq!(b.fields.currency.as_deref(), Some("GBP"));
}

#[tokio::test]
async fn closed_opportunities_are_read_only_until_reopened() {
    let h = DynamicsHarness::start().await;
    let id = h.crm.create_opportunity(&synced("A", "ref-a")).await.unwrap().record.id;
    h.crm.close_opportunity(&id, &cosell_core::crm::CloseOutcome::Won).await.unwrap();
    let edit = OpportunityFields { description: Some("late edit".into()), ..Default::default() };
    assert!(matches!(h.crm.update_opportunity(&id, None, &edit).await, Err(CrmError::Invalid { .. })));
    let row = sim(&format!("{}/_sim/records/opportunities/{id}", h.base_url()), reqwest::Method::GET, None).await;
    assert_eq!((row["statecode"].as_i64(), row["statuscode"].as_i64()), (Some(1), Some(3)));
    let closes = sim(&format!("{}/_sim/records/opportunitycloses", h.base_url()), reqwest::Method::GET, None).await;
    assert_eq!(closes["value"][0]["_opportunityid_value"], id.as_str());
}

#[tokio::test]
async fn configured_column_names_are_the_ones_written_and_read() {
    let h = DynamicsHarness::with_config(|c| {
        c.extra_columns.insert("opportunities".into(), vec![("contoso_dealvalue".into(), "money".into())]);
    })
    .await;
    let mut cfg = DynamicsConfig::for_simulator(&h.base_url(), "cosell-connector", SecretString::from("sim-secret"));
    cfg.fields = serde_json::from_value(json!({"crm": "dynamics", "deal_value": "contoso_dealvalue"})).unwrap();
    let crm = DynamicsCrm::new(cfg, h.budget.clone()).unwrap();
    let mut f = synced("A", "ref-a");
    f.deal_value = Some(42.0);
    let rec = crm.create_opportunity(&f).await.unwrap().record;
    assert_eq!(rec.fields.deal_value, Some(42.0));
    let row = sim(&format!("{}/_sim/records/opportunities/{}", h.base_url(), rec.id), reqwest::Method::GET, None).await;
    assert_eq!(row["contoso_dealvalue"], 42.0);
    assert!(row.get("estimatedvalue").is_none_or(|v| v.is_null()), "{row}");
}

#[tokio::test]
async fn a_misnamed_column_is_reported_by_name() {
    let h = DynamicsHarness::start().await;
    let mut cfg = DynamicsConfig::for_simulator(&h.base_url(), "cosell-connector", SecretString::from("sim-secret"));
    cfg.fields.cosell.audit = "cosell_audti".into();
    let crm = DynamicsCrm::new(cfg, h.budget.clone()).unwrap();
    match crm.get_opportunity(DynamicsHarness::MISSING_ID).await {
        Err(CrmError::Invalid { field, .. }) => assert_eq!(field.as_deref(), Some("cosell_audti")),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn an_adapter_shared_behind_an_arc_is_still_a_port() {
    async fn who<P: CrmPort>(p: &P) -> String {
        p.whoami().await.unwrap().user_id
    }
    let h = DynamicsHarness::start().await;
    let shared = std::sync::Arc::new(h.crm);
    assert_eq!(who(&shared).await, cosell_simulators::dynamics::APP_USER_ID);
    assert_eq!(who(&shared.clone()).await, cosell_simulators::dynamics::APP_USER_ID);
}

#[tokio::test]
async fn demo_data_is_a_synced_opportunity_with_a_solution_and_a_contact() {
    let h = DynamicsHarness::with_config(|c| c.seed_demo = true).await;
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
