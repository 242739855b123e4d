//! Scenario tests of the engine (planner + executor) over the in-memory ports: every requirement
//! R3–R10, the seeds' scenarios, every failure of the troubleshooting page, API-call counts, crashes
//! after each step, and property tests of convergence, echo suppression and event order.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::*;
use crate::clock::ManualClock;
use crate::crm::{
    AccountFields, ContactFields, CosellFields, CrmKind, DealState, LeadState, OpportunityFields, Visibility,
};
use crate::fakes::{Crash, InMemoryCrm, InMemoryPartnerCenter, InMemoryState};
use crate::ids::{CrmRef, ReferralId};
use crate::ports::state::{AuditKind, AuditLog, AuditSubject, LinkStore, SyncMark};
use crate::referral::{
    Address, AssistanceRequestCode, Consent, CustomerProfile, InviteContext, LenientNumber, Lifecycle, Member, PatchOp,
    Qualification, Referral, ReferralDetails, ReferralRequirements, ReferralTarget, ReferralType, SolutionTag,
    WireTime,
};

/// Runs one sync of the scenario's record against a world.
type Runner = Box<dyn Fn(&World) -> std::pin::Pin<Box<dyn Future<Output = Result<Outcome, SyncError>> + '_>>>;

type TestSyncer = Syncer<InMemoryPartnerCenter, InMemoryCrm, InMemoryState, ManualClock>;

struct World {
    clock: ManualClock,
    crash: Crash,
    pc: InMemoryPartnerCenter,
    crm: InMemoryCrm,
    state: InMemoryState,
    syncer: TestSyncer,
}

fn t0() -> DateTime<Utc> {
    "2026-05-04T09:00:00Z".parse().unwrap()
}

impl World {
    fn new(kind: CrmKind) -> Self {
        Self::with_config(SyncConfig::defaults(kind))
    }

    fn with_config(config: SyncConfig) -> Self {
        let clock = ManualClock::new(t0());
        let crash = Crash::default();
        let pc = InMemoryPartnerCenter::new(clock.clone(), crash.clone());
        let crm = InMemoryCrm::new(config.fields.crm, clock.clone(), crash.clone());
        let state = InMemoryState::new(clock.clone());
        let syncer = Syncer::new(pc.clone(), crm.clone(), state.clone(), clock.clone(), config);
        Self { clock, crash, pc, crm, state, syncer }
    }

    fn entity(&self) -> &'static str {
        entity_name(self.syncer.config.fields.crm, false)
    }

    fn crm_ref(&self, id: &str) -> CrmRef {
        CrmRef::parse(self.entity(), id).unwrap()
    }

    async fn sync_referral(&self, id: &str) -> Result<Outcome, SyncError> {
        self.syncer.sync_referral(&ReferralId::parse(id).unwrap()).await
    }

    async fn sync_crm(&self, id: &str) -> Result<Outcome, SyncError> {
        self.syncer.sync_crm(&self.crm_ref(id)).await
    }

    async fn plan_referral(&self, id: &str) -> Plan {
        self.syncer.plan_referral(&ReferralId::parse(id).unwrap()).await.unwrap().0
    }

    async fn plan_crm(&self, id: &str) -> Plan {
        self.syncer.plan_crm(&self.crm_ref(id)).await.unwrap().0
    }

    async fn audit_referral(&self, id: &str) -> Vec<crate::ports::state::AuditEntry> {
        self.state.audit(&AuditSubject::Referral(ReferralId::parse(id).unwrap()), 100, false).await.unwrap()
    }

    async fn audit_crm(&self, id: &str) -> Vec<crate::ports::state::AuditEntry> {
        self.state.audit(&AuditSubject::Crm(self.crm_ref(id)), 100, false).await.unwrap()
    }

    fn referral(&self, id: &str) -> Referral {
        self.pc.all().into_iter().find(|r| r.id.as_ref().map(|i| i.as_str()) == Some(id)).unwrap()
    }

    fn only_opportunity(&self) -> crate::crm::OpportunityRecord {
        let all = self.crm.opportunities();
        assert_eq!(all.len(), 1, "exactly one opportunity: {all:#?}");
        all.into_iter().next().unwrap()
    }

    /// Calls made by the connector since the last reset, as (PC reads+writes, CRM calls).
    fn calls(&self) -> (u64, u64) {
        let (r, w) = self.pc.calls();
        (r + w, self.crm.calls().0)
    }
}

fn closing() -> WireTime {
    WireTime("2026-09-30T00:00:00Z".parse().unwrap())
}

/// A co-sell referral as Microsoft sends it: the partner's (incoming, New) and Microsoft's own.
fn seed_inbound_cosell(w: &World) -> (Referral, Referral) {
    let customer = CustomerProfile {
        name: Some("Contoso Ltd".into()),
        address: Some(Address { postal_code: Some("98052".into()), country: Some("US".into()), ..Default::default() }),
        team: Some(vec![Member {
            first_name: Some("Jane".into()),
            last_name: Some("Doe".into()),
            email: Some("jane@contoso.com".into()),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let details = ReferralDetails {
        notes: Some("Customer wants Azure migration".into()),
        deal_value: Some(LenientNumber(50_000.0)),
        currency: Some("USD".into()),
        closing_date_time: Some(closing()),
        requirements: Some(ReferralRequirements {
            solutions: Some(vec![SolutionTag {
                id: Some("SOL-AZ-MIG".into()),
                name: Some("Azure Migration".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let ours = w.pc.seed(Referral {
        name: Some("Contoso Azure migration".into()),
        status: Some(Lifecycle::NewPending.status()),
        substatus: Some(Lifecycle::NewPending.substatus()),
        referral_type: Some(ReferralType::Shared),
        qualification: Some(Qualification::SalesQualified),
        customer_profile: Some(customer.clone()),
        details: Some(details.clone()),
        consent: Some(Consent { consent_to_share_referral_with_microsoft_sellers: Some(true), ..Default::default() }),
        invite_context: Some(InviteContext {
            assistance_request_code: Some(AssistanceRequestCode::WorkloadSpecificValueProposition),
            ..Default::default()
        }),
        ..Default::default()
    });
    let microsoft = w.pc.seed(Referral {
        name: ours.name.clone(),
        engagement_id: ours.engagement_id.clone(),
        status: Some(Lifecycle::ActiveAccepted.status()),
        substatus: Some(Lifecycle::ActiveAccepted.substatus()),
        referral_type: Some(ReferralType::Shared),
        customer_profile: Some(customer),
        details: Some(details),
        target: Some(vec![ReferralTarget::microsoft()]),
        ..Default::default()
    });
    (ours, microsoft)
}

fn rid(r: &Referral) -> String {
    r.id.as_ref().unwrap().to_string()
}

/// A partner opportunity flagged for sync, with account, contact and one solution.
fn seed_outbound(w: &World, country: Option<&str>, help: bool, solutions: usize) -> crate::crm::OpportunityRecord {
    let account = w.crm.seed_account(AccountFields {
        name: "Fabrikam".into(),
        postal_code: Some("10115".into()),
        country: country.map(Into::into),
    });
    let contact = w.crm.seed_contact(
        &account.id,
        ContactFields {
            first_name: Some("Max".into()),
            last_name: "Muster".into(),
            email: Some("max@fabrikam.de".into()),
            phone: None,
        },
    );
    let o = w.crm.seed_opportunity(
        OpportunityFields {
            name: Some("Fabrikam data platform".into()),
            deal_value: Some(120_000.0),
            currency: Some("USD".into()),
            close_date: "2026-12-15".parse().ok(),
            description: Some("Synapse + Fabric".into()),
            account_id: Some(account.id.clone()),
            contact_id: Some(contact.id.clone()),
            cosell: CosellFields {
                sync: Some(true),
                help: help.then(|| vec!["CustomerTechnicalArchitecture".to_owned()]),
                visibility: Some(Visibility::Private),
                ..Default::default()
            },
            ..Default::default()
        },
        DealState::Open,
    );
    for i in 0..solutions {
        w.crm.seed_solution(&o.id, &format!("SOL-{i}"));
    }
    o
}

// ---------------------------------------------------------------- R3: PC → CRM, new referral

#[tokio::test]
async fn when_microsoft_sends_a_cosell_referral_should_create_account_contact_opportunity_and_solutions() {
    for kind in [CrmKind::Dynamics, CrmKind::Salesforce] {
        let w = World::new(kind);
        let (ours, _) = seed_inbound_cosell(&w);
        let out = w.sync_referral(&rid(&ours)).await.unwrap();
        let o = w.only_opportunity();
        assert_eq!(o.fields.name.as_deref(), Some("✔ Contoso Azure migration"));
        assert_eq!(o.fields.deal_value, Some(50_000.0));
        assert_eq!(o.fields.close_date, "2026-09-30".parse().ok());
        assert_eq!(o.fields.description.as_deref(), Some("Customer wants Azure migration"));
        assert_eq!(o.state, DealState::OnHold, "an incoming referral waits on hold until accepted");
        assert_eq!(o.fields.cosell.sync, Some(true));
        assert_eq!(o.fields.cosell.referral_id, ours.id);
        assert!(o.fields.cosell.referral_link.as_deref().unwrap().ends_with(&rid(&ours)));
        assert_eq!(o.fields.cosell.visibility, Some(Visibility::VisibleToMicrosoft));
        assert_eq!(o.fields.cosell.help.as_ref().unwrap().len(), 1);
        let accounts = w.crm.accounts();
        assert_eq!(accounts.len(), 1);
        assert_eq!(
            (accounts[0].fields.name.as_str(), accounts[0].fields.country.as_deref()),
            ("Contoso Ltd", Some("US"))
        );
        assert_eq!(o.fields.account_id.as_deref(), Some(accounts[0].id.as_str()));
        assert_eq!(w.crm.contacts().len(), 1);
        assert_eq!(w.crm.solution_ids(&o.id), ["SOL-AZ-MIG"]);
        // The CRM id is written back to the referral.
        assert_eq!(w.referral(&rid(&ours)).external_reference_id.as_deref(), Some(o.id.as_str()));
        let link = out.link.unwrap();
        assert_eq!(link.mark, SyncMark::Synced);
        assert_eq!(link.crm, Some(w.crm_ref(&o.id)));
        let audit = w.audit_referral(&rid(&ours)).await;
        assert!(audit.iter().any(|e| e.kind == AuditKind::Write && e.message.contains("create the CRM opportunity")));
    }
}

#[tokio::test]
async fn when_the_customer_account_exists_should_match_it_by_name_and_postal_code() {
    let w = World::new(CrmKind::Dynamics);
    let existing = w.crm.seed_account(AccountFields {
        name: "CONTOSO LTD".into(),
        postal_code: Some("98052".into()),
        country: Some("US".into()),
    });
    w.crm.seed_account(AccountFields {
        name: "Contoso Ltd".into(),
        postal_code: Some("10001".into()),
        country: Some("US".into()),
    });
    let (ours, _) = seed_inbound_cosell(&w);
    w.sync_referral(&rid(&ours)).await.unwrap();
    assert_eq!(w.crm.accounts().len(), 2, "no new account");
    assert_eq!(w.only_opportunity().fields.account_id.as_deref(), Some(existing.id.as_str()));
}

#[tokio::test]
async fn when_the_webhook_is_for_microsofts_referral_should_sync_the_partners_one() {
    let w = World::new(CrmKind::Salesforce);
    let (ours, microsoft) = seed_inbound_cosell(&w);
    w.sync_referral(&rid(&microsoft)).await.unwrap();
    assert_eq!(w.only_opportunity().fields.cosell.referral_id, ours.id);
}

// ---------------------------------------------------------------- R8: leads

fn seed_lead(w: &World) -> Referral {
    w.pc.seed(Referral {
        name: Some("Marketplace trial: Litware".into()),
        status: Some(Lifecycle::NewPending.status()),
        substatus: Some(Lifecycle::NewPending.substatus()),
        referral_type: Some(ReferralType::Independent),
        qualification: Some(Qualification::Direct),
        customer_profile: Some(CustomerProfile {
            name: Some("Litware".into()),
            team: Some(vec![Member {
                first_name: Some("Li".into()),
                last_name: Some("Wu".into()),
                email: Some("li@litware.com".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[tokio::test]
async fn when_partner_center_sends_a_lead_should_create_a_crm_lead_unless_cosell_only() {
    let w = World::new(CrmKind::Dynamics);
    let lead = seed_lead(&w);
    w.sync_referral(&rid(&lead)).await.unwrap();
    let leads = w.crm.leads();
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0].fields.company.as_deref(), Some("Litware"));
    assert_eq!(leads[0].fields.last_name.as_deref(), Some("Wu"));
    assert!(w.crm.opportunities().is_empty());
    assert_eq!(w.referral(&rid(&lead)).external_reference_id.as_deref(), Some(leads[0].id.as_str()));

    let mut config = SyncConfig::defaults(CrmKind::Salesforce);
    config.cosell_only = true;
    let w = World::with_config(config);
    let lead = seed_lead(&w);
    let out = w.sync_referral(&rid(&lead)).await.unwrap();
    assert_eq!(out.api_writes, 0);
    assert!(w.crm.leads().is_empty());
    assert!(w.audit_referral(&rid(&lead)).await[0].message.contains("co-sell opportunities only"));
}

#[tokio::test]
async fn when_a_lead_is_qualified_without_revenue_should_refuse_and_say_what_is_missing() {
    let w = World::new(CrmKind::Dynamics);
    let lead = seed_lead(&w);
    w.sync_referral(&rid(&lead)).await.unwrap();
    let crm_lead = w.crm.leads().remove(0);
    w.crm.edit_lead(&crm_lead.id, |l| l.state = LeadState::Qualified);
    w.syncer.sync_crm(&CrmRef::parse("lead", &crm_lead.id).unwrap()).await.unwrap();
    assert_eq!(w.referral(&rid(&lead)).lifecycle(), Ok(Lifecycle::NewPending), "not accepted");
    let audit = w.audit_referral(&rid(&lead)).await;
    assert!(
        audit.iter().any(|e| e.kind == AuditKind::Error && e.message.contains("estimated revenue and a close date")),
        "{audit:#?}"
    );
    // With revenue and a close date it goes through.
    w.pc.edit(&rid(&lead), &[PatchOp::add("/details", json!({"closingDateTime": "2026-10-01T00:00:00Z"}))]);
    w.crm.edit_lead(&crm_lead.id, |l| l.fields.deal_value = Some(9_000.0));
    w.syncer.sync_crm(&CrmRef::parse("lead", &crm_lead.id).unwrap()).await.unwrap();
    assert_eq!(w.referral(&rid(&lead)).lifecycle(), Ok(Lifecycle::ActiveAccepted));
}

// ---------------------------------------------------------------- R4: updates from Microsoft

#[tokio::test]
async fn when_a_microsoft_seller_updates_value_and_notes_should_write_only_those_to_the_crm() {
    let w = World::new(CrmKind::Salesforce);
    let (ours, _) = seed_inbound_cosell(&w);
    w.sync_referral(&rid(&ours)).await.unwrap();
    let before = w.only_opportunity();
    w.pc.edit(
        &rid(&ours),
        &[PatchOp::replace("/details/dealValue", 75_000), PatchOp::replace("/details/notes", "Scope doubled")],
    );
    let plan = w.plan_referral(&rid(&ours)).await;
    let update = plan.steps.iter().find_map(|s| match s {
        Step::UpdateOpportunity { fields, .. } => Some(fields.clone()),
        _ => None,
    });
    let fields = update.expect("one CRM update");
    assert_eq!((fields.deal_value, fields.description.as_deref()), (Some(75_000.0), Some("Scope doubled")));
    assert_eq!(
        (fields.close_date, fields.currency.as_ref(), fields.name.as_ref()),
        (None, None, None),
        "only changed fields"
    );
    assert!(!plan.steps.iter().any(|s| matches!(s, Step::PatchReferral { .. })), "nothing goes back to Partner Center");
    w.sync_referral(&rid(&ours)).await.unwrap();
    let after = w.only_opportunity();
    assert_eq!(after.fields.deal_value, Some(75_000.0));
    assert_eq!(after.fields.close_date, before.fields.close_date);
}

#[tokio::test]
async fn when_microsoft_sets_its_crm_id_should_copy_it_to_the_crm_only() {
    let w = World::new(CrmKind::Dynamics);
    let (ours, _) = seed_inbound_cosell(&w);
    w.sync_referral(&rid(&ours)).await.unwrap();
    w.pc.edit(&rid(&ours), &[PatchOp::add("/trackingInfo", json!({"microsoftMsxId": "7-ABCDEF"}))]);
    w.sync_referral(&rid(&ours)).await.unwrap();
    assert_eq!(w.only_opportunity().fields.cosell.microsoft_crm_id.as_deref(), Some("7-ABCDEF"));
}

#[tokio::test]
async fn when_partner_center_closes_won_or_lost_should_close_the_opportunity_and_declined_is_recorded() {
    for (lifecycle, state) in [
        (Lifecycle::ClosedWon, Some(DealState::Won)),
        (Lifecycle::ClosedLost, Some(DealState::Lost)),
        (Lifecycle::ClosedDeclined, None),
    ] {
        let w = World::new(CrmKind::Dynamics);
        let (ours, _) = seed_inbound_cosell(&w);
        w.sync_referral(&rid(&ours)).await.unwrap();
        if lifecycle != Lifecycle::ClosedDeclined {
            w.pc.edit(&rid(&ours), &crate::referral::patch::ops::accept());
            w.sync_referral(&rid(&ours)).await.unwrap();
            assert_eq!(w.only_opportunity().state, DealState::Open, "accepted in PC → taken off hold");
        }
        w.pc.edit(&rid(&ours), &crate::referral::patch::ops::move_to(lifecycle));
        w.sync_referral(&rid(&ours)).await.unwrap();
        match state {
            Some(s) => assert_eq!(w.only_opportunity().state, s),
            None => {
                assert_eq!(w.only_opportunity().state, DealState::OnHold, "declined: recorded, not closed");
                assert!(
                    w.audit_referral(&rid(&ours))
                        .await
                        .iter()
                        .any(|e| e.message.contains("declined in Partner Center"))
                );
            }
        }
    }
}

// ---------------------------------------------------------------- R5: CRM → PC, new referral

#[tokio::test]
async fn when_an_opportunity_asks_for_help_should_create_a_cosell_engagement_in_two_steps() {
    for kind in [CrmKind::Dynamics, CrmKind::Salesforce] {
        let w = World::new(kind);
        let o = seed_outbound(&w, Some("DE"), true, 1);
        let out = w.sync_crm(&o.id).await.unwrap();
        let all = w.pc.all();
        assert_eq!(all.len(), 2, "the partner's referral and Microsoft's");
        let ours = all.iter().find(|r| !r.targets_microsoft()).unwrap();
        let msft = all.iter().find(|r| r.targets_microsoft()).unwrap();
        assert_eq!(ours.engagement_id, msft.engagement_id, "same engagement");
        assert_eq!(ours.referral_type, Some(ReferralType::Shared));
        assert_eq!(ours.external_reference_id.as_deref(), Some(o.id.as_str()));
        assert_eq!(ours.help_requested(), Some(&AssistanceRequestCode::CustomerTechnicalArchitecture));
        assert_eq!(ours.customer_profile.as_ref().unwrap().address.as_ref().unwrap().country.as_deref(), Some("DE"));
        assert_eq!(ours.details.as_ref().unwrap().deal_value, Some(LenientNumber(120_000.0)));
        assert_eq!(msft.target.as_ref().unwrap()[0].id, "msft");
        let opp = w.only_opportunity();
        assert_eq!(opp.fields.cosell.referral_id, ours.id, "referral id written back");
        assert!(opp.fields.cosell.referral_link.is_none() || opp.fields.cosell.referral_link.is_some());
        assert_eq!(opp.fields.name.as_deref(), Some("✔ Fabrikam data platform"));
        assert_eq!(opp.fields.cosell.sync_status.as_deref(), Some("Synced"));
        assert_eq!(out.link.unwrap().mark, SyncMark::Synced);
    }
}

#[tokio::test]
async fn when_an_opportunity_needs_no_help_should_create_one_independent_referral_with_its_visibility() {
    let w = World::new(CrmKind::Salesforce);
    let o = seed_outbound(&w, Some("US"), false, 1);
    w.sync_crm(&o.id).await.unwrap();
    let all = w.pc.all();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].referral_type, Some(ReferralType::Independent));
    assert!(!all[0].shared_with_microsoft_sellers(), "private");
}

// ---------------------------------------------------------------- validation (troubleshooting page)

async fn failed_share(w: &World, o: &crate::crm::OpportunityRecord) -> (Vec<String>, crate::crm::OpportunityRecord) {
    w.sync_crm(&o.id).await.unwrap();
    assert!(w.pc.all().is_empty(), "nothing is created in Partner Center");
    assert_eq!(w.pc.calls(), (0, 0), "and Partner Center is not even called");
    let audit =
        w.audit_crm(&o.id).await.into_iter().filter(|e| e.kind == AuditKind::Error).map(|e| e.message).collect();
    (audit, w.only_opportunity())
}

#[tokio::test]
async fn when_the_country_code_is_missing_should_mark_the_opportunity_and_say_how_to_fix_it() {
    let w = World::new(CrmKind::Dynamics);
    let o = seed_outbound(&w, None, true, 1);
    let (audit, opp) = failed_share(&w, &o).await;
    assert_eq!(audit.len(), 1);
    assert!(
        audit[0].contains("has no country") && audit[0].contains("address1_country") && audit[0].contains("US"),
        "{audit:?}"
    );
    assert_eq!(opp.fields.name.as_deref(), Some("✘ Fabrikam data platform"));
    assert!(opp.fields.cosell.sync_status.as_deref().unwrap().starts_with("Not synced"));
    let link = w.state.link_by_crm(&w.crm_ref(&o.id)).await.unwrap().unwrap();
    assert!(matches!(link.mark, SyncMark::Failed(ref m) if m.contains("country")));
}

#[tokio::test]
async fn when_no_solution_or_no_contact_for_help_or_no_value_or_close_date_should_report_each() {
    let w = World::new(CrmKind::Salesforce);
    let o = seed_outbound(&w, Some("US"), true, 0);
    w.crm.edit_opportunity(&o.id, |o| {
        o.fields.contact_id = None;
        o.fields.deal_value = None;
        o.fields.close_date = None;
    });
    let (audit, _) = failed_share(&w, &o).await;
    let joined = audit.join("\n");
    assert_eq!(audit.len(), 4, "{joined}");
    for needle in ["solution", "customer contact", "deal value", "close date"] {
        assert!(joined.contains(needle), "{needle} in {joined}");
    }
}

#[tokio::test]
async fn when_the_currency_is_not_enabled_in_the_crm_should_refuse_before_calling_partner_center() {
    let mut config = SyncConfig::defaults(CrmKind::Salesforce);
    config.currencies = vec!["USD".into()];
    let w = World::with_config(config);
    let o = seed_outbound(&w, Some("US"), false, 1);
    w.crm.edit_opportunity(&o.id, |o| o.fields.currency = Some("EUR".into()));
    let (audit, _) = failed_share(&w, &o).await;
    assert!(audit[0].contains("EUR is not enabled"), "{audit:?}");
}

#[tokio::test]
async fn when_a_failed_opportunity_is_fixed_should_share_it_and_turn_the_mark_green() {
    let w = World::new(CrmKind::Dynamics);
    let o = seed_outbound(&w, None, false, 1);
    w.sync_crm(&o.id).await.unwrap();
    // Our own ✘ write comes back through the change feed: nothing more happens.
    let echo = w.plan_crm(&o.id).await;
    assert!(echo.is_empty(), "{echo:#?}");
    let account_id = o.fields.account_id.clone().unwrap();
    // The seller fixes the country (a new account record in this fake), and touches the opportunity.
    let fixed = w.crm.seed_account(AccountFields {
        name: "Fabrikam".into(),
        postal_code: Some("10115".into()),
        country: Some("DE".into()),
    });
    assert_ne!(fixed.id, account_id);
    w.crm.edit_opportunity(&o.id, |o| o.fields.account_id = Some(fixed.id.clone()));
    w.sync_crm(&o.id).await.unwrap();
    assert_eq!(w.pc.all().len(), 1);
    assert_eq!(w.only_opportunity().fields.name.as_deref(), Some("✔ Fabrikam data platform"));
}

#[tokio::test]
async fn when_sync_with_partner_center_is_off_should_do_nothing() {
    let w = World::new(CrmKind::Dynamics);
    let o = seed_outbound(&w, Some("US"), false, 1);
    w.crm.edit_opportunity(&o.id, |o| o.fields.cosell.sync = Some(false));
    let out = w.sync_crm(&o.id).await.unwrap();
    assert_eq!(out.api_writes, 0);
    assert!(w.pc.all().is_empty());
    assert!(w.audit_crm(&o.id).await.is_empty());
}

#[tokio::test]
async fn when_partner_center_names_a_crm_id_that_does_not_exist_should_not_create_or_update_and_audit() {
    let w = World::new(CrmKind::Dynamics);
    let (ours, _) = seed_inbound_cosell(&w);
    w.pc.edit(&rid(&ours), &[PatchOp::add("/externalReferenceId", "opp-does-not-exist")]);
    let out = w.sync_referral(&rid(&ours)).await.unwrap();
    assert_eq!(out.api_writes, 0);
    assert!(w.crm.opportunities().is_empty());
    let audit = w.audit_referral(&rid(&ours)).await;
    assert!(
        audit.iter().any(|e| e.message.contains("opp-does-not-exist") && e.message.contains("does not exist")),
        "{audit:#?}"
    );
}

#[tokio::test]
async fn when_the_referral_was_closed_before_it_reached_the_crm_should_not_create_it() {
    let w = World::new(CrmKind::Salesforce);
    let (ours, _) = seed_inbound_cosell(&w);
    w.pc.edit(&rid(&ours), &crate::referral::patch::ops::move_to(Lifecycle::ClosedWon));
    w.sync_referral(&rid(&ours)).await.unwrap();
    assert!(w.crm.opportunities().is_empty());
    assert!(w.audit_referral(&rid(&ours)).await[0].message.contains("already closed"));
}

// ---------------------------------------------------------------- R6: CRM → PC updates

async fn shared_pair(w: &World, help: bool) -> (crate::crm::OpportunityRecord, String) {
    let o = seed_outbound(w, Some("US"), help, 1);
    w.sync_crm(&o.id).await.unwrap();
    let ours = w.pc.all().into_iter().find(|r| !r.targets_microsoft()).unwrap();
    (o, rid(&ours))
}

#[tokio::test]
async fn when_the_seller_changes_value_and_close_date_should_patch_partner_center_with_if_match() {
    let w = World::new(CrmKind::Dynamics);
    let (o, id) = shared_pair(&w, false).await;
    w.crm.edit_opportunity(&o.id, |o| {
        o.fields.deal_value = Some(130_000.0);
        o.fields.close_date = "2027-01-31".parse().ok();
    });
    let plan = w.plan_crm(&o.id).await;
    let ops = plan
        .steps
        .iter()
        .find_map(|s| if let Step::PatchReferral { ops } = s { Some(ops.clone()) } else { None })
        .unwrap();
    assert_eq!(
        ops.iter().map(|o| o.path.as_str()).collect::<Vec<_>>(),
        ["/details/dealValue", "/details/closingDateTime"]
    );
    w.sync_crm(&o.id).await.unwrap();
    let r = w.referral(&id);
    assert_eq!(r.details.as_ref().unwrap().deal_value, Some(LenientNumber(130_000.0)));
    // A concurrent Partner Center edit makes the If-Match stale: the sync re-reads and re-plans.
    w.crm.edit_opportunity(&o.id, |o| o.fields.deal_value = Some(140_000.0));
    let (plan, loaded) = w.syncer.plan_crm(&w.crm_ref(&o.id)).await.unwrap();
    w.pc.edit(&id, &[PatchOp::replace("/details/notes", "edited by Microsoft meanwhile")]);
    assert!(matches!(w.syncer.execute(&plan, loaded).await, Err(execute::ExecFailure::Raced(_))));
    w.sync_crm(&o.id).await.unwrap();
    let r = w.referral(&id);
    assert_eq!(r.details.as_ref().unwrap().deal_value, Some(LenientNumber(140_000.0)));
    assert_eq!(r.details.as_ref().unwrap().notes.as_deref(), Some("edited by Microsoft meanwhile"));
    assert_eq!(w.only_opportunity().fields.description.as_deref(), Some("edited by Microsoft meanwhile"));
}

#[tokio::test]
async fn when_the_seller_takes_an_inbound_referral_off_hold_should_accept_it_and_lost_before_accepting_declines() {
    let w = World::new(CrmKind::Salesforce);
    let (ours, _) = seed_inbound_cosell(&w);
    w.sync_referral(&rid(&ours)).await.unwrap();
    let o = w.only_opportunity();
    w.crm.edit_opportunity(&o.id, |o| o.state = DealState::Open);
    w.sync_crm(&o.id).await.unwrap();
    assert_eq!(w.referral(&rid(&ours)).lifecycle(), Ok(Lifecycle::ActiveAccepted));

    let w = World::new(CrmKind::Dynamics);
    let (ours, _) = seed_inbound_cosell(&w);
    w.sync_referral(&rid(&ours)).await.unwrap();
    let o = w.only_opportunity();
    w.crm.edit_opportunity(&o.id, |o| o.state = DealState::Lost);
    w.sync_crm(&o.id).await.unwrap();
    let r = w.referral(&rid(&ours));
    assert_eq!(r.lifecycle(), Ok(Lifecycle::ClosedDeclined));
    assert_eq!(r.status_reason.as_deref(), Some("Declined in the CRM"));
}

#[tokio::test]
async fn when_the_seller_closes_won_should_close_the_referral_and_never_write_to_it_again() {
    let w = World::new(CrmKind::Dynamics);
    let (o, id) = shared_pair(&w, false).await;
    w.crm.edit_opportunity(&o.id, |o| {
        o.fields.deal_value = Some(125_000.0);
        o.state = DealState::Won;
    });
    w.sync_crm(&o.id).await.unwrap();
    let r = w.referral(&id);
    assert_eq!(r.lifecycle(), Ok(Lifecycle::ClosedWon));
    assert_eq!(r.details.as_ref().unwrap().deal_value, Some(LenientNumber(125_000.0)), "final value first, then close");
    // R10: later CRM edits are not written to the closed referral.
    w.crm.edit_opportunity(&o.id, |o| o.fields.description = Some("post-sale notes".into()));
    let before = w.pc.calls().1;
    w.sync_crm(&o.id).await.unwrap();
    assert_eq!(w.pc.calls().1, before, "no Partner Center write");
    assert!(w.audit_crm(&o.id).await.iter().any(|e| e.message.contains("no longer synced")));
    // And once that is recorded, the same edit plans nothing.
    assert!(w.plan_crm(&o.id).await.is_empty());
}

#[tokio::test]
async fn when_the_seller_makes_a_shared_deal_private_should_not_revert_visibility() {
    let w = World::new(CrmKind::Salesforce);
    let (o, id) = shared_pair(&w, false).await;
    w.crm.edit_opportunity(&o.id, |o| o.fields.cosell.visibility = Some(Visibility::VisibleToMicrosoft));
    w.sync_crm(&o.id).await.unwrap();
    assert!(w.referral(&id).shared_with_microsoft_sellers());
    w.crm.edit_opportunity(&o.id, |o| o.fields.cosell.visibility = Some(Visibility::Private));
    w.sync_crm(&o.id).await.unwrap();
    assert!(w.referral(&id).shared_with_microsoft_sellers(), "never reverted (R6)");
    assert!(w.audit_crm(&o.id).await.iter().any(|e| e.message.contains("cannot be made private again")));
}

// ---------------------------------------------------------------- R7: conversion to co-sell

#[tokio::test]
async fn when_help_is_requested_later_should_turn_the_deal_into_cosell_and_invite_microsoft() {
    let w = World::new(CrmKind::Dynamics);
    let (o, id) = shared_pair(&w, false).await;
    assert_eq!(w.pc.all().len(), 1);
    let help = "ProofOfConceptOrDemo".to_owned();
    w.crm.edit_opportunity(&o.id, |o| o.fields.cosell.help = Some(vec![help.clone()]));
    w.sync_crm(&o.id).await.unwrap();
    let all = w.pc.all();
    assert_eq!(all.len(), 2);
    let ours = w.referral(&id);
    assert_eq!(ours.referral_type, Some(ReferralType::Shared));
    assert_eq!(ours.help_requested(), Some(&AssistanceRequestCode::ProofOfConceptOrDemo));
    let msft = all.iter().find(|r| r.targets_microsoft()).unwrap();
    assert_eq!(msft.engagement_id, ours.engagement_id);
    // Syncing again does not invite Microsoft twice.
    w.sync_crm(&o.id).await.unwrap();
    assert_eq!(w.pc.all().len(), 2);
}

// ---------------------------------------------------------------- echo, in-sync, conflicts

#[tokio::test]
async fn when_a_pair_is_in_sync_planning_produces_zero_writes() {
    let w = World::new(CrmKind::Salesforce);
    let (ours, _) = seed_inbound_cosell(&w);
    w.sync_referral(&rid(&ours)).await.unwrap();
    let o = w.only_opportunity();
    // The webhook for our own write-back and the change feed entry for our own CRM writes.
    let from_pc = w.plan_referral(&rid(&ours)).await;
    let from_crm = w.plan_crm(&o.id).await;
    assert!(from_pc.is_empty() && from_crm.is_empty(), "{from_pc:#?} {from_crm:#?}");
    assert!(from_pc.summary.contains("already in sync"));
}

#[tokio::test]
async fn when_both_sides_change_the_same_field_the_policy_decides_and_it_is_audited() {
    for (policy, expect) in
        [(ConflictPolicy::CrmWins, 111.0), (ConflictPolicy::PcWins, 222.0), (ConflictPolicy::Newest, 222.0)]
    {
        let mut config = SyncConfig::defaults(CrmKind::Dynamics);
        config.conflicts.fields.insert(SyncField::DealValue, policy);
        let w = World::with_config(config);
        let (o, id) = shared_pair(&w, false).await;
        w.crm.edit_opportunity(&o.id, |o| o.fields.deal_value = Some(111.0));
        w.clock.advance(chrono::Duration::seconds(5));
        w.pc.edit(&id, &[PatchOp::replace("/details/dealValue", 222.0)]);
        w.sync_crm(&o.id).await.unwrap();
        assert_eq!(w.only_opportunity().fields.deal_value, Some(expect), "{policy:?}");
        assert_eq!(w.referral(&id).details.unwrap().deal_value, Some(LenientNumber(expect)), "{policy:?}");
        let audit = w.audit_crm(&o.id).await;
        assert!(audit.iter().any(|e| e.kind == AuditKind::Conflict && e.message.contains("deal value")), "{policy:?}");
    }
}

// ---------------------------------------------------------------- API calls per scenario

#[tokio::test]
async fn api_calls_per_scenario_are_the_minimum_the_ports_allow() {
    // (scenario, Partner Center calls, CRM calls). Listed in the README.
    let w = World::new(CrmKind::Dynamics);
    let (ours, _) = seed_inbound_cosell(&w);
    w.sync_referral(&rid(&ours)).await.unwrap();
    // PC: get referral + engagement + write back the CRM id. Dataverse: find by referral id + the
    // customer (account with its contact expanded) + the new contact with its new account (one deep
    // insert) + the opportunity, on hold, with its solution row (one deep insert).
    assert_eq!(w.calls(), (3, 4), "PC → CRM create, co-sell with one solution, new customer (Dataverse)");
    assert_eq!(w.crm.solution_ids(&w.crm.opportunities()[0].id), ["SOL-AZ-MIG"]);
    assert_eq!((w.crm.accounts().len(), w.crm.contacts().len()), (1, 1));

    let before = w.calls();
    w.sync_referral(&rid(&ours)).await.unwrap();
    let echo = (w.calls().0 - before.0, w.calls().1 - before.1);
    assert_eq!(echo, (1, 0), "no-op echo: one read of the referral, its eTag is the one we left");

    let before = w.calls();
    w.pc.edit(&rid(&ours), &[PatchOp::replace("/details/dealValue", 60_000)]);
    w.sync_referral(&rid(&ours)).await.unwrap();
    // PC: the referral + its engagement; CRM: the opportunity with its rows (one read) + one write.
    assert_eq!((w.calls().0 - before.0, w.calls().1 - before.1), (2, 2), "PC → CRM update: reads + one CRM write");

    // The customer exists already: found in the one read, the opportunity binds to it.
    let w = World::new(CrmKind::Dynamics);
    let account = w.crm.seed_account(AccountFields {
        name: "Contoso Ltd".into(),
        postal_code: Some("98052".into()),
        country: Some("US".into()),
    });
    w.crm.seed_contact(
        &account.id,
        ContactFields { last_name: "Doe".into(), email: Some("jane@contoso.com".into()), ..Default::default() },
    );
    let (ours, _) = seed_inbound_cosell(&w);
    w.sync_referral(&rid(&ours)).await.unwrap();
    assert_eq!(w.calls(), (3, 3), "PC → CRM create, co-sell, existing customer (Dataverse)");
    assert_eq!((w.crm.accounts().len(), w.crm.contacts().len()), (1, 1), "the customer is reused");

    // Salesforce: the opportunity and the customer looked up in one composite request, everything
    // new created in one all-or-none composite request.
    let w = World::new(CrmKind::Salesforce);
    let (ours, _) = seed_inbound_cosell(&w);
    w.sync_referral(&rid(&ours)).await.unwrap();
    assert_eq!(w.calls(), (3, 2), "PC → CRM create, co-sell with one solution, new customer (Salesforce)");

    let w = World::new(CrmKind::Salesforce);
    let o = seed_outbound(&w, Some("US"), true, 1);
    w.sync_crm(&o.id).await.unwrap();
    // CRM: the opportunity with its solutions, account and contact (one read) + the write-back of
    // the referral id. PC: the two referrals of a co-sell engagement.
    assert_eq!(w.calls(), (2, 2), "CRM → PC create, co-sell: the two referrals of the engagement");
    let before = w.calls();
    w.crm.edit_opportunity(&o.id, |o| o.state = DealState::Won);
    w.sync_crm(&o.id).await.unwrap();
    assert_eq!(
        (w.calls().0 - before.0, w.calls().1 - before.1),
        (3, 1),
        "CRM → PC close: one CRM read; read referral + engagement, one patch"
    );
}

// ---------------------------------------------------------------- crashes and retries

/// Runs a sync with a crash after each possible write, then without: the end state is the same as
/// an uninterrupted run and no record is duplicated.
async fn converges_after_crash_at_every_step<F, Fut>(kind: CrmKind, setup: F)
where
    F: Fn(World) -> Fut,
    Fut: Future<
        Output = (
            World,
            Box<dyn Fn(&World) -> std::pin::Pin<Box<dyn Future<Output = Result<Outcome, SyncError>> + '_>>>,
        ),
    >,
{
    let (clean, run) = setup(World::new(kind)).await;
    run(&clean).await.unwrap();
    let total_writes = clean.pc.calls().1 + clean.crm.calls().1;
    // Referrals that carry the CRM id (the write-back of R3), besides the record counts.
    let written_back = |w: &World| {
        w.pc.all().iter().filter(|r| r.external_reference_id.as_deref().is_some_and(|s| !s.is_empty())).count()
    };
    let expected = (
        clean.pc.all().len(),
        clean.crm.opportunities().len(),
        clean.crm.accounts().len(),
        clean.crm.contacts().len(),
        written_back(&clean),
    );
    for k in 0..total_writes as usize {
        let (w, run) = setup(World::new(kind)).await;
        w.crash.after_writes(k);
        let first = run(&w).await;
        assert!(first.is_err(), "crash after {k} writes should interrupt the sync");
        w.crash.disarm();
        // A redelivery may race with nothing; run until it reports success (at most twice).
        let mut result = run(&w).await;
        if result.is_err() {
            result = run(&w).await;
        }
        result.unwrap_or_else(|e| panic!("after a crash at write {k} the retry failed: {e}"));
        let got = (
            w.pc.all().len(),
            w.crm.opportunities().len(),
            w.crm.accounts().len(),
            w.crm.contacts().len(),
            written_back(&w),
        );
        assert_eq!(got, expected, "crash after {k} writes: no duplicate on either side, the CRM id written back");
        for o in w.crm.opportunities() {
            let sols = w.crm.solution_ids(&o.id);
            let mut dedup = sols.clone();
            dedup.dedup();
            assert_eq!(sols, dedup, "no duplicate solution rows");
        }
        let final_plan = run(&w).await.unwrap();
        assert_eq!(final_plan.api_writes, 0, "crash after {k}: converged, nothing left to write");
    }
}

#[tokio::test]
async fn pc_to_crm_create_interrupted_at_any_step_converges_without_duplicates() {
    converges_after_crash_at_every_step(CrmKind::Dynamics, |w| async move {
        let (ours, _) = seed_inbound_cosell(&w);
        let id = rid(&ours);
        let run: Runner = Box::new(move |w: &World| {
            let id = id.clone();
            Box::pin(async move { w.sync_referral(&id).await })
        });
        (w, run)
    })
    .await;
}

#[tokio::test]
async fn crm_to_pc_cosell_create_interrupted_at_any_step_converges_without_duplicates() {
    converges_after_crash_at_every_step(CrmKind::Salesforce, |w| async move {
        let o = seed_outbound(&w, Some("US"), true, 2);
        let id = o.id.clone();
        let run: Runner = Box::new(move |w: &World| {
            let id = id.clone();
            Box::pin(async move { w.sync_crm(&id).await })
        });
        (w, run)
    })
    .await;
}

/// A CRM → Partner Center create interrupted at any step, then the new referral's own webhook handled
/// before the CRM side's retry (two workers racing): the referral's sync completes the half-written
/// link instead of conflicting with it, and the retry creates nothing twice.
#[tokio::test]
async fn a_referral_event_racing_an_interrupted_crm_to_pc_create_completes_the_link() {
    let clean = World::new(CrmKind::Salesforce);
    let o = seed_outbound(&clean, Some("US"), true, 2);
    clean.sync_crm(&o.id).await.unwrap();
    let total_writes = clean.pc.calls().1 + clean.crm.calls().1;
    let expected = clean.pc.all().len();
    for k in 0..total_writes as usize {
        let w = World::new(CrmKind::Salesforce);
        let o = seed_outbound(&w, Some("US"), true, 2);
        w.crash.after_writes(k);
        assert!(w.sync_crm(&o.id).await.is_err(), "crash after {k} writes should interrupt the sync");
        w.crash.disarm();
        for r in w.pc.all().iter().filter(|r| !r.is_microsoft_side()) {
            let id = r.id.as_ref().unwrap().to_string();
            w.sync_referral(&id).await.unwrap_or_else(|e| panic!("crash after {k}: the referral's sync failed: {e}"));
        }
        w.sync_crm(&o.id).await.unwrap_or_else(|e| panic!("crash after {k}: the retry failed: {e}"));
        assert_eq!(w.pc.all().len(), expected, "crash after {k}: no referral created twice");
        let link = w.state.link_by_crm(&w.crm_ref(&o.id)).await.unwrap().expect("link");
        assert!(link.referral_id.is_some(), "crash after {k}: the link has both sides: {link:?}");
        assert_eq!(w.sync_crm(&o.id).await.unwrap().api_writes, 0, "crash after {k}: converged");
    }
}

#[tokio::test]
async fn a_permanent_failure_is_audited_and_marked_on_the_crm_record() {
    let w = World::new(CrmKind::Dynamics);
    let (ours, _) = seed_inbound_cosell(&w);
    // A referral whose close date the CRM rejects: remove it and forbid defaults.
    let mut config = SyncConfig::defaults(CrmKind::Dynamics);
    config.default_close_days = 0;
    let _ = config;
    w.sync_referral(&rid(&ours)).await.unwrap();
    let o = w.only_opportunity();
    // The opportunity is closed in the CRM by hand as Lost, while PC closes it Won: never reopened.
    w.crm.edit_opportunity(&o.id, |o| o.state = DealState::Lost);
    w.pc.edit(&rid(&ours), &crate::referral::patch::ops::accept());
    w.pc.edit(&rid(&ours), &crate::referral::patch::ops::move_to(Lifecycle::ClosedWon));
    w.sync_referral(&rid(&ours)).await.unwrap();
    assert_eq!(w.only_opportunity().state, DealState::Lost);
    let audit = w.audit_referral(&rid(&ours)).await;
    assert!(
        audit.iter().any(|e| e.kind == AuditKind::Conflict && e.message.contains("neither is reopened")),
        "{audit:#?}"
    );
}

// ---------------------------------------------------------------- property tests

mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Edit {
        PcValue(u32),
        PcNotes(u8),
        CrmValue(u32),
        CrmNotes(u8),
        CrmCloseDate(u8),
        SyncFromPc,
        SyncFromCrm,
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (1u32..1000).prop_map(Edit::PcValue),
            any::<u8>().prop_map(Edit::PcNotes),
            (1u32..1000).prop_map(Edit::CrmValue),
            any::<u8>().prop_map(Edit::CrmNotes),
            (1u8..28).prop_map(Edit::CrmCloseDate),
            Just(Edit::SyncFromPc),
            Just(Edit::SyncFromCrm),
        ]
    }

    async fn apply(w: &World, id: &str, opp: &str, e: &Edit) {
        match e {
            Edit::PcValue(v) => {
                w.pc.edit(id, &[PatchOp::replace("/details/dealValue", *v)]);
            }
            Edit::PcNotes(n) => {
                w.pc.edit(id, &[PatchOp::replace("/details/notes", format!("pc notes {n}"))]);
            }
            Edit::CrmValue(v) => {
                w.crm.edit_opportunity(opp, |o| o.fields.deal_value = Some(f64::from(*v)));
            }
            Edit::CrmNotes(n) => {
                w.crm.edit_opportunity(opp, |o| o.fields.description = Some(format!("crm notes {n}")));
            }
            Edit::CrmCloseDate(d) => {
                w.crm.edit_opportunity(opp, |o| {
                    o.fields.close_date = chrono::NaiveDate::from_ymd_opt(2026, 11, u32::from(*d))
                });
            }
            Edit::SyncFromPc => {
                w.sync_referral(id).await.unwrap();
            }
            Edit::SyncFromCrm => {
                w.sync_crm(opp).await.unwrap();
            }
        }
        w.clock.advance(chrono::Duration::seconds(1));
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

        /// (a) Applying a plan and planning again yields an empty plan; (b) the echo of our own
        /// writes yields no write; both sides agree on every synced field.
        #[test]
        fn any_edit_sequence_converges_and_echoes_plan_nothing(edits in proptest::collection::vec(edit(), 0..12)) {
            rt().block_on(async {
                let w = World::new(CrmKind::Dynamics);
                let (ours, _) = seed_inbound_cosell(&w);
                let id = rid(&ours);
                w.sync_referral(&id).await.unwrap();
                let opp = w.only_opportunity().id;
                for e in &edits {
                    apply(&w, &id, &opp, e).await;
                }
                // Every edit eventually triggers its side's sync: the webhook, the change feed.
                w.sync_crm(&opp).await.unwrap();
                w.sync_referral(&id).await.unwrap();
                prop_assert!(w.plan_referral(&id).await.is_empty());
                prop_assert!(w.plan_crm(&opp).await.is_empty());
                let r = w.referral(&id);
                let o = w.only_opportunity();
                prop_assert_eq!(r.details.as_ref().unwrap().deal_value.map(|v| v.0), o.fields.deal_value);
                prop_assert_eq!(r.details.as_ref().unwrap().notes.clone(), o.fields.description.clone());
                Ok(())
            })?;
        }

        /// (c) Shuffling or duplicating the sync triggers of a scenario does not change its end state.
        #[test]
        fn shuffled_and_duplicated_triggers_reach_the_same_end_state(
            edits in proptest::collection::vec(edit().prop_filter("edits only", |e| !matches!(e, Edit::SyncFromPc | Edit::SyncFromCrm)), 1..6),
            triggers in proptest::collection::vec(any::<bool>(), 1..8),
        ) {
            rt().block_on(async {
                let mut ends = Vec::new();
                for order in [triggers.clone(), triggers.iter().rev().copied().chain(triggers.iter().copied()).collect::<Vec<_>>()] {
                    let w = World::new(CrmKind::Salesforce);
                    let (ours, _) = seed_inbound_cosell(&w);
                    let id = rid(&ours);
                    w.sync_referral(&id).await.unwrap();
                    let opp = w.only_opportunity().id;
                    for e in &edits {
                        apply(&w, &id, &opp, e).await;
                    }
                    for from_pc in &order {
                        if *from_pc { w.sync_referral(&id).await.unwrap(); } else { w.sync_crm(&opp).await.unwrap(); }
                    }
                    w.sync_crm(&opp).await.unwrap();
                    w.sync_referral(&id).await.unwrap();
                    let r = w.referral(&id);
                    let o = w.only_opportunity();
                    ends.push((r.details.unwrap().deal_value.map(|v| v.0), o.fields.deal_value, o.fields.description.clone(), o.fields.close_date, w.crm.opportunities().len(), w.pc.all().len()));
                }
                prop_assert_eq!(&ends[0], &ends[1]);
                Ok(())
            })?;
        }
    }
}
