//! Scenario tests of the engine (planner + executor) over the in-memory ports: every requirement
//! R3–R10, the seeds' scenarios, every failure of the troubleshooting page, API-call counts, crashes
//! after each step, and property tests of convergence, echo suppression and event order.
//!
//! This file holds the world the scenarios run in (the in-memory ports, the syncer, a manual clock) and
//! the seeds they share; the scenarios live in one file per family of the planner, plus API-call
//! counts, crashes and retries, and the property tests.

mod calls;
mod etag;
mod inbound;
mod outbound;
mod pair;
mod properties;
mod retries;
mod stage;
mod validation;

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

async fn shared_pair(w: &World, help: bool) -> (crate::crm::OpportunityRecord, String) {
    let o = seed_outbound(w, Some("US"), help, 1);
    w.sync_crm(&o.id).await.unwrap();
    let ours = w.pc.all().into_iter().find(|r| !r.targets_microsoft()).unwrap();
    (o, rid(&ours))
}
