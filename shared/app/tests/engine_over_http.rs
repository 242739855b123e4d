//! The sync engine through the real HTTP adapters against the wire-faithful simulators: Partner
//! Center (REST + OAuth), and Dynamics 365 or Salesforce. What the in-memory tests prove about the
//! planner, this proves about the protocols: every write the planner emits is one the real APIs
//! accept, and what comes back converges (the next plan is empty).

use std::sync::Arc;

use cosell_core::crm::{
    AccountFields, CloseOutcome, ContactFields, CosellFields, CrmFieldMap, CrmKind, CrmPort, OpportunityFields,
};
use cosell_core::fakes::{CountingBudget, InMemoryState};
use cosell_core::ids::{CrmRef, ReferralId};
use cosell_core::ports::PartnerCenter;
use cosell_core::referral::Lifecycle;
use cosell_core::sync::{SyncConfig, Syncer, entity_name};
use cosell_core::{ManualClock, SystemClock};
use cosell_crm::{AnyCrm, DynamicsConfig, DynamicsCrm, SalesforceAuth, SalesforceConfig, SalesforceCrm};
use cosell_partner_center::{AuthConfig, ClientConfig, PartnerCenterClient, TokenEndpoint, UserCredentials};
use cosell_simulators::partner_center::{
    self as pcsim, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};
use cosell_simulators::{crm_common::ServerHandle, dynamics, salesforce};
use secrecy::SecretString;
use serde_json::json;

struct Stack {
    pc_sim: pcsim::SimHandle,
    _crm_sim: ServerHandle,
    pc: Arc<PartnerCenterClient<CountingBudget>>,
    crm: Arc<AnyCrm<CountingBudget>>,
    syncer: Syncer<Arc<PartnerCenterClient<CountingBudget>>, Arc<AnyCrm<CountingBudget>>, InMemoryState, SystemClock>,
}

async fn stack(kind: CrmKind) -> Stack {
    let pc_sim = pcsim::Simulator::start(pcsim::Config::default()).await.unwrap();
    let auth = AuthConfig {
        token_url: pc_sim.token_url("common"),
        endpoint: TokenEndpoint::V1,
        ..AuthConfig::new(
            DEFAULT_CLIENT_ID,
            SecretString::from(DEFAULT_CLIENT_SECRET),
            UserCredentials::Password {
                username: DEFAULT_USERNAME.into(),
                password: SecretString::from(DEFAULT_PASSWORD),
            },
        )
    };
    let pc_config = ClientConfig {
        referrals_base_url: pc_sim.base_url().to_owned(),
        webhooks_base_url: pc_sim.base_url().to_owned(),
        ..ClientConfig::new(auth)
    };
    let pc = Arc::new(PartnerCenterClient::new(pc_config, CountingBudget::default()).unwrap());
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let (crm_sim, crm, fields): (ServerHandle, AnyCrm<CountingBudget>, CrmFieldMap) = match kind {
        CrmKind::Dynamics => {
            let sim = dynamics::Simulator::start(dynamics::Config::new(clock)).await.unwrap();
            let cfg =
                DynamicsConfig::for_simulator(&sim.base_url(), "cosell-connector", SecretString::from("sim-secret"));
            let fields = cfg.fields.clone();
            // The environment starts bare: the product's installer creates the connector's schema.
            let installer = DynamicsCrm::new(cfg.clone(), CountingBudget::default()).unwrap();
            installer.apply_schema().await.expect("installing the connector's schema");
            (sim, AnyCrm::Dynamics(DynamicsCrm::new(cfg, CountingBudget::default()).unwrap()), fields)
        }
        CrmKind::Salesforce => {
            let mut config = salesforce::Config::new(clock);
            config.multi_currency = true;
            let sim = salesforce::Simulator::start(config).await.unwrap();
            let auth = SalesforceAuth::ClientCredentials {
                client_id: "cosell-connector".into(),
                client_secret: SecretString::from("sim-secret"),
            };
            let mut cfg = SalesforceConfig::new(&sim.base_url(), auth);
            cfg.fields.multi_currency = true;
            let fields = cfg.fields.clone();
            (sim, AnyCrm::Salesforce(SalesforceCrm::new(cfg, CountingBudget::default()).unwrap()), fields)
        }
    };
    let crm = Arc::new(crm);
    let mut config = SyncConfig::defaults(kind);
    config.fields = fields;
    let syncer = Syncer::new(pc.clone(), crm.clone(), InMemoryState::new(SystemClock), SystemClock, config);
    Stack { pc_sim, _crm_sim: crm_sim, pc, crm, syncer }
}

fn crm_ref(kind: CrmKind, id: &str) -> CrmRef {
    CrmRef::parse(entity_name(kind, false), id).unwrap()
}

async fn inbound_cosell_referral_becomes_an_accepted_crm_opportunity(kind: CrmKind) {
    let s = stack(kind).await;
    let (ours, microsoft) = s.pc_sim.create_inbound(json!({ "name": "Contoso Azure migration" })).unwrap();
    assert!(microsoft.is_some(), "a shared inbound referral has Microsoft's side");
    let id = ReferralId::parse(ours["id"].as_str().unwrap()).unwrap();
    // A webhook may name Microsoft's copy: the partner's referral is synced, once.
    let ms_id = ReferralId::parse(microsoft.unwrap()["id"].as_str().unwrap()).unwrap();
    s.syncer.sync_referral(&ms_id).await.unwrap();
    s.syncer.sync_referral(&id).await.unwrap();
    let opp = s.crm.find_opportunity_by_referral(&id).await.unwrap().expect("opportunity created");
    assert_eq!(opp.fields.name.as_deref(), Some("✔ Contoso Azure migration"), "{kind:?}");
    assert_eq!(opp.fields.deal_value, Some(30_000.0));
    assert_eq!(opp.state, cosell_core::crm::DealState::OnHold, "waits on hold until accepted");
    let referral = s.pc.get_referral(&id).await.unwrap();
    assert_eq!(referral.external_reference_id.as_deref(), Some(opp.id.as_str()), "CRM id written back");
    assert!(
        s.syncer.plan_referral(&id).await.unwrap().0.is_empty(),
        "converged: the webhook of our write-back plans nothing"
    );

    // The seller accepts it in the CRM.
    s.crm.set_on_hold(&opp.id, false).await.unwrap();
    s.syncer.sync_crm(&crm_ref(kind, &opp.id)).await.unwrap();
    assert_eq!(s.pc.get_referral(&id).await.unwrap().lifecycle(), Ok(Lifecycle::ActiveAccepted), "{kind:?}");
    assert!(s.syncer.plan_crm(&crm_ref(kind, &opp.id)).await.unwrap().0.is_empty());
}

async fn flagged_opportunity_becomes_a_cosell_engagement_then_updates_and_closes_won(kind: CrmKind) {
    let s = stack(kind).await;
    let account = s
        .crm
        .create_account(&AccountFields {
            name: "Fabrikam".into(),
            postal_code: Some("10115".into()),
            country: Some("DE".into()),
        })
        .await
        .unwrap();
    let contact = s
        .crm
        .create_contact(
            &account.id,
            &ContactFields {
                first_name: Some("Max".into()),
                last_name: "Muster".into(),
                email: Some("max@fabrikam.example".into()),
                phone: None,
            },
        )
        .await
        .unwrap();
    // The port speaks Partner Center codes; the adapter maps them to the CRM's option values.
    let help = "CustomerTechnicalArchitecture".to_owned();
    let opp = s
        .crm
        .create_opportunity(&OpportunityFields {
            name: Some("Fabrikam data platform".into()),
            deal_value: Some(120_000.0),
            currency: Some("USD".into()),
            close_date: "2027-03-31".parse().ok(),
            description: Some("Synapse + Fabric".into()),
            account_id: Some(account.id.clone()),
            contact_id: Some(contact.id.clone()),
            cosell: CosellFields { sync: Some(true), help: Some(vec![help]), ..Default::default() },
            on_hold: None,
        })
        .await
        .unwrap()
        .record;
    s.crm.add_solution(&opp.id, "SOL-6115380-IPC", Some("Contoso Analytics")).await.unwrap();
    let r = crm_ref(kind, &opp.id);
    let out = s.syncer.sync_crm(&r).await.unwrap();
    let id = out.referral_id.expect("referral created");
    let ours = s.pc.get_referral(&id).await.unwrap();
    assert_eq!(ours.external_reference_id.as_deref(), Some(opp.id.as_str()));
    let engagement =
        s.pc.list_referrals(&cosell_core::ports::ReferralQuery::engagement(ours.engagement_id.as_ref().unwrap()), None)
            .await
            .unwrap();
    assert_eq!(engagement.items.len(), 2, "{kind:?}: the partner's referral and the invitation to Microsoft");
    assert!(engagement.items.iter().any(|x| x.targets_microsoft()));
    let back = s.crm.get_opportunity(&opp.id).await.unwrap();
    assert_eq!(back.fields.cosell.referral_id.as_ref(), Some(&id));
    assert_eq!(back.fields.name.as_deref(), Some("✔ Fabrikam data platform"));
    assert!(s.syncer.plan_crm(&r).await.unwrap().0.is_empty(), "{kind:?}: our own CRM write-back plans nothing");

    // The seller raises the value, then wins the deal.
    s.crm
        .update_opportunity(&opp.id, None, &OpportunityFields { deal_value: Some(150_000.0), ..Default::default() })
        .await
        .unwrap();
    s.syncer.sync_crm(&r).await.unwrap();
    assert_eq!(s.pc.get_referral(&id).await.unwrap().details.unwrap().deal_value.map(|v| v.0), Some(150_000.0));
    // A second solution on the shared deal, and nothing else (the change feed reports it as a change
    // of the opportunity when it watches solutions): Partner Center gets it.
    s.crm.add_solution(&opp.id, "SOL-AZ-MIG", Some("Azure Migration")).await.unwrap();
    s.syncer.sync_crm(&r).await.unwrap();
    let solutions = s.pc.get_referral(&id).await.unwrap().details.unwrap().requirements.unwrap().solutions.unwrap();
    let mut ids: Vec<_> = solutions.iter().filter_map(|x| x.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["SOL-6115380-IPC", "SOL-AZ-MIG"], "{kind:?}");
    s.crm.close_opportunity(&opp.id, &CloseOutcome::Won).await.unwrap();
    s.syncer.sync_crm(&r).await.unwrap();
    assert_eq!(s.pc.get_referral(&id).await.unwrap().lifecycle(), Ok(Lifecycle::ClosedWon), "{kind:?}");
    assert!(s.syncer.plan_crm(&r).await.unwrap().0.is_empty());
    assert!(s.syncer.plan_referral(&id).await.unwrap().0.is_empty());
}

#[tokio::test]
async fn dynamics_inbound_cosell_referral_becomes_an_accepted_crm_opportunity() {
    inbound_cosell_referral_becomes_an_accepted_crm_opportunity(CrmKind::Dynamics).await;
}

#[tokio::test]
async fn salesforce_inbound_cosell_referral_becomes_an_accepted_crm_opportunity() {
    inbound_cosell_referral_becomes_an_accepted_crm_opportunity(CrmKind::Salesforce).await;
}

#[tokio::test]
async fn dynamics_flagged_opportunity_becomes_a_cosell_engagement_then_updates_and_closes_won() {
    flagged_opportunity_becomes_a_cosell_engagement_then_updates_and_closes_won(CrmKind::Dynamics).await;
}

#[tokio::test]
async fn salesforce_flagged_opportunity_becomes_a_cosell_engagement_then_updates_and_closes_won() {
    flagged_opportunity_becomes_a_cosell_engagement_then_updates_and_closes_won(CrmKind::Salesforce).await;
}
