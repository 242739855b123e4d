//! Applies a plan through the ports, and the `Syncer` that loads, plans, executes and retries.
//!
//! Idempotency (DESIGN.md §2): CRM creates are keyed by the referral id (the port guarantees no
//! duplicate); accounts and contacts are found before they are created; solutions already linked are
//! not linked again; a referral is created only after the link records the intent, and a retry with
//! that intent adopts the referral a crashed attempt created; link writes are conditional on their
//! version. A plan interrupted at any step and run again (from a fresh load) converges.

use std::future::Future;

use chrono::Utc;
use serde_json::json;

use crate::clock::Clock;
use crate::crm::{
    AccountRecord, ContactRecord, CrmError, CrmKind, CrmPort, Customer, DealState, NewOpportunity, OpportunityDetails,
    OpportunityKey,
};
use crate::ids::{CrmRef, ReferralId};
use crate::ports::partner_center::{PartnerCenter, PartnerCenterError, ReferralQuery};
use crate::ports::state::{AuditEntry, AuditKind, AuditLog, Link, LinkStore, StateError, SyncMark};
use crate::referral::{EngagementId, PatchOp, Referral};

use super::config::{SyncConfig, SyncField};
pub use super::error::SyncError;
use super::plan::{CrmSide, Plan, Step, SyncInput, link_extra, plan};
use super::view::{CrmSnapshot, DealView, with_mark};

/// What a completed sync did.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub summary: String,
    /// Writes to Partner Center and the CRM.
    pub api_writes: usize,
    pub link: Option<Link>,
    pub referral_id: Option<ReferralId>,
    pub crm: Option<CrmRef>,
}

/// The state a plan was made from: what the executor starts with.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub link: Option<Link>,
    pub referral: Option<Referral>,
    pub microsoft: Option<Referral>,
    pub crm: Option<CrmSnapshot>,
    /// Partner Center names this CRM id, which does not exist (R9).
    pub missing_crm_id: Option<String>,
    /// The customer a new opportunity would get, when the CRM found it along with the (absent)
    /// opportunity in the same call.
    pub customer: Option<Customer>,
    /// The CRM record's link records a Partner Center create still in flight (crm-to-pc): that worker
    /// completes the pair; a referral event meanwhile has nothing to do.
    pub create_in_flight: bool,
    /// The referral (and Microsoft's) are the link's copy of the last sync, not a read: a patch
    /// Partner Center refuses is planned again from a fresh read (`link_extra::LAST_SEEN`).
    pub from_link: bool,
}

impl Loaded {
    pub fn input<'a>(&'a self, config: &'a SyncConfig, now: chrono::DateTime<Utc>) -> SyncInput<'a> {
        SyncInput {
            config,
            now,
            link: self.link.as_ref(),
            referral: self.referral.as_ref(),
            microsoft: self.microsoft.as_ref(),
            crm: match (&self.crm, &self.missing_crm_id) {
                (Some(s), _) => CrmSide::Found(s),
                (None, Some(id)) => CrmSide::Missing(id),
                (None, None) => CrmSide::Absent,
            },
        }
    }

    /// What [`Syncer::record_failure`] reads (the link, the CRM snapshot, the referral's id), without
    /// the referrals themselves.
    fn failure_subject(&self) -> Loaded {
        Loaded {
            link: self.link.clone(),
            crm: self.crm.clone(),
            referral: self.referral_id().map(|id| Referral { id: Some(id), ..Referral::default() }),
            ..Loaded::default()
        }
    }

    pub fn referral_id(&self) -> Option<ReferralId> {
        self.referral
            .as_ref()
            .and_then(|r| r.id.clone())
            .or_else(|| self.link.as_ref().and_then(|l| l.referral_id.clone()))
    }
}

/// The CRM entity name of a record, as used in state keys and queue groups.
pub fn entity_name(kind: CrmKind, lead: bool) -> &'static str {
    match (kind, lead) {
        (CrmKind::Dynamics, false) => "opportunity",
        (CrmKind::Dynamics, true) => "lead",
        (CrmKind::Salesforce, false) => "Opportunity",
        (CrmKind::Salesforce, true) => "Lead",
    }
}

/// Loads, plans and executes syncs through the ports.
#[derive(Debug, Clone)]
pub struct Syncer<P, C, S, K> {
    pub pc: P,
    pub crm: C,
    pub state: S,
    pub clock: K,
    pub config: SyncConfig,
}

/// How many times a sync re-plans after losing a race (a conditional write that conflicted).
const MAX_ATTEMPTS: usize = 3;

impl<P: PartnerCenter, C: CrmPort, S: LinkStore + AuditLog, K: Clock> Syncer<P, C, S, K> {
    pub fn new(pc: P, crm: C, state: S, clock: K, config: SyncConfig) -> Self {
        Self { pc, crm, state, clock, config }
    }

    fn crm_ref(&self, snapshot: &CrmSnapshot) -> Result<CrmRef, SyncError> {
        CrmRef::parse(entity_name(self.config.fields.crm, snapshot.is_lead()), snapshot.id())
            .map_err(|e| SyncError::Permanent { reason: format!("bad CRM id: {e}") })
    }

    /// The partner's referral and Microsoft's of the same engagement, starting from either.
    async fn engagement(&self, referral: Referral) -> Result<(Option<Referral>, Option<Referral>), SyncError> {
        let shared =
            referral.referral_type == Some(crate::referral::ReferralType::Shared) || referral.is_microsoft_side();
        let Some(engagement) = referral.engagement_id.clone().filter(|_| shared) else {
            return Ok((Some(referral), None));
        };
        let page = self.pc.list_referrals(&ReferralQuery::engagement(&engagement), None).await?;
        let microsoft = page.items.iter().find(|r| r.is_microsoft_side()).cloned();
        let ours = if referral.is_microsoft_side() {
            page.items.into_iter().find(|r| !r.is_microsoft_side())
        } else {
            Some(referral)
        };
        Ok((ours, microsoft))
    }

    async fn crm_snapshot_opportunity(&self, id: &str) -> Result<Option<CrmSnapshot>, SyncError> {
        Ok(self.crm.load_opportunity(OpportunityKey::Id(id)).await?.map(opportunity_snapshot))
    }

    async fn crm_snapshot(&self, crm: &CrmRef) -> Result<Option<CrmSnapshot>, SyncError> {
        if crm.entity().eq_ignore_ascii_case("lead") {
            match self.crm.get_lead(crm.id()).await {
                Ok(l) => Ok(Some(CrmSnapshot::Lead(l))),
                Err(CrmError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            }
        } else {
            self.crm_snapshot_opportunity(crm.id()).await
        }
    }

    /// Everything needed to plan the sync of a referral (a webhook, a reconciliation difference).
    pub async fn load_referral(&self, id: &ReferralId) -> Result<Loaded, SyncError> {
        let referral = self.pc.get_referral(id).await?;
        self.load_from_referral(id, referral).await
    }

    async fn load_from_referral(&self, id: &ReferralId, referral: Referral) -> Result<Loaded, SyncError> {
        let (ours, microsoft) = self.engagement(referral).await?;
        let Some(ours) = ours else {
            return Ok(Loaded { microsoft, ..Loaded::default() });
        };
        let our_id = ours.id.clone().unwrap_or_else(|| id.clone());
        let link = self.state.link_by_referral(&our_id).await?;
        let mut loaded = Loaded { link: link.clone(), referral: Some(ours), microsoft, ..Loaded::default() };
        let referral = loaded.referral.as_ref().expect("set above");
        if let Some(crm) = link.as_ref().and_then(|l| l.crm.clone()) {
            loaded.crm = self.crm_snapshot(&crm).await?;
            if loaded.crm.is_none() {
                loaded.missing_crm_id = Some(crm.id().to_owned());
            }
        } else if let Some(ext) = referral.external_reference_id.clone().filter(|s| !s.trim().is_empty()) {
            // R9: Partner Center names a CRM record; use it if it exists, else never create one.
            let lead = referral.category().is_lead();
            let found = if lead {
                match self.crm.get_lead(&ext).await {
                    Ok(l) => Some(CrmSnapshot::Lead(l)),
                    Err(CrmError::NotFound { .. }) => None,
                    Err(e) => return Err(e.into()),
                }
            } else {
                self.crm_snapshot_opportunity(&ext).await?
            };
            match found {
                Some(s) => loaded.crm = Some(s),
                None => loaded.missing_crm_id = Some(ext),
            }
        } else if referral.category().is_lead() {
            loaded.crm = self.crm.find_lead_by_referral(&our_id).await?.map(CrmSnapshot::Lead);
        } else {
            // Should there be no opportunity yet, the create needs its customer: ask in the same call.
            let (account, contact) = super::plan::customer_of(referral, &self.config);
            let email = contact.as_ref().and_then(|c| c.email.as_deref());
            let (found, customer) =
                self.crm.load_opportunity_or_customer(&our_id, account.as_ref().map(|a| (a, email))).await?;
            loaded.crm = found.map(opportunity_snapshot);
            loaded.customer = customer;
        }
        // A CRM → Partner Center create still in flight (or interrupted) left the CRM side's link
        // without this referral, with its intent: the crm-to-pc worker (or its retry) completes the
        // pair, Microsoft's side included. Planning here would conflict with that link on every
        // attempt until then, spending the message's receives (found by the chaos test: such
        // messages were dead-lettered).
        if loaded.link.is_none()
            && let Some(snapshot) = &loaded.crm
            && let Some(half) = self.state.link_by_crm(&self.crm_ref(snapshot)?).await?
            && half.referral_id.as_ref().is_none_or(|r| r == &our_id)
            && half.extra.contains_key(link_extra::INTENT)
        {
            loaded.create_in_flight = true;
            loaded.link = Some(half);
        }
        Ok(loaded)
    }

    /// Everything needed to plan the sync of a CRM record (a change-feed entry), the referral read.
    pub async fn load_crm(&self, crm: &CrmRef) -> Result<Loaded, SyncError> {
        self.load_crm_from(crm, false).await
    }

    /// With `copy`, a linked pair takes the referral from the link's copy of the last sync: no
    /// Partner Center call, and a patch planned from it carries that eTag in `If-Match`, so that a
    /// referral changed since is refused (412) rather than overwritten.
    async fn load_crm_from(&self, crm: &CrmRef, copy: bool) -> Result<Loaded, SyncError> {
        let link = self.state.link_by_crm(crm).await?;
        let snapshot = self.crm_snapshot(crm).await?;
        let mut loaded = Loaded { link: link.clone(), crm: snapshot, ..Loaded::default() };
        let referral_id = link
            .as_ref()
            .and_then(|l| l.referral_id.clone())
            .or_else(|| loaded.crm.as_ref().and_then(|s| s.referral_id().cloned()));
        if let Some(id) = referral_id {
            // Only for a pair whose CRM record is here: anything else (a deleted record, a create in
            // flight) is decided from the referral as it is.
            let seen = (link.as_ref())
                .filter(|l| copy && loaded.crm.is_some() && l.crm.is_some() && link_extra::intent(l).is_none())
                .and_then(link_extra::last_seen);
            match seen {
                Some((ours, microsoft)) => {
                    (loaded.referral, loaded.microsoft, loaded.from_link) = (Some(ours), microsoft, true);
                }
                None => match self.pc.get_referral(&id).await {
                    Ok(r) => (loaded.referral, loaded.microsoft) = self.engagement(r).await?,
                    Err(PartnerCenterError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                },
            }
            if loaded.link.is_none() {
                loaded.link = self.state.link_by_referral(&id).await?;
            }
        }
        Ok(loaded)
    }

    /// What a sync of this referral would do now, without doing it (`cosell plan`).
    pub async fn plan_referral(&self, id: &ReferralId) -> Result<(Plan, Loaded), SyncError> {
        let loaded = self.load_referral(id).await?;
        Ok((plan(&loaded.input(&self.config, self.clock.now())), loaded))
    }

    pub async fn plan_crm(&self, crm: &CrmRef) -> Result<(Plan, Loaded), SyncError> {
        let loaded = self.load_crm(crm).await?;
        Ok((plan(&loaded.input(&self.config, self.clock.now())), loaded))
    }

    /// Syncs a referral: load, plan, execute; re-plans after a lost race.
    ///
    /// Fast path: when the partner's referral still has the eTag our last sync left, nothing changed
    /// on the Partner Center side (the webhook is the echo of our own write, or a duplicate), and
    /// changes on the CRM side arrive through the change feed: one call, no CRM read.
    pub async fn sync_referral(&self, id: &ReferralId) -> Result<Outcome, SyncError> {
        let subject = (Some(id.clone()), None);
        let referral = match self.pc.get_referral(id).await {
            Ok(r) => r,
            Err(e) => {
                let e = SyncError::from(e);
                // Blocked (credentials, roles, budget) is audited too: an operator must act, and the
                // audit trail is where `cosell audit` and the status page show it.
                if matches!(e, SyncError::Permanent { .. } | SyncError::Blocked { .. }) {
                    self.audit_failure(subject.0, subject.1, &e).await;
                }
                return Err(e);
            }
        };
        if !referral.is_microsoft_side()
            && let Some(link) = self.state.link_by_referral(id).await?
        {
            let unchanged = link.crm.is_some()
                && referral.etag.is_some()
                && link.pc_etag.as_deref() == referral.etag.as_ref().map(|e| e.as_str());
            if unchanged {
                return Ok(Outcome {
                    summary: "already in sync: the referral has not changed since our last sync".into(),
                    api_writes: 0,
                    referral_id: Some(id.clone()),
                    crm: link.crm.clone(),
                    link: Some(link),
                });
            }
        }
        let first = std::sync::Mutex::new(Some(referral));
        self.with_retries(
            || async {
                let prefetched = first.lock().unwrap_or_else(|e| e.into_inner()).take();
                match prefetched {
                    Some(r) => self.load_from_referral(id, r).await,
                    None => self.load_referral(id).await,
                }
            },
            subject,
            MAX_ATTEMPTS,
        )
        .await
    }

    /// Syncs a CRM record.
    ///
    /// A linked pair is planned first from the link's copy of the referral: an update is one PATCH
    /// with `If-Match`, no read. Should the referral have changed since (a Microsoft seller's edit,
    /// a close), Partner Center answers 412 and the next attempt reads the referral and plans again,
    /// so the edit is merged and a closed referral is not written (R10). That first attempt is
    /// extra: as many attempts read as before.
    pub async fn sync_crm(&self, crm: &CrmRef) -> Result<Outcome, SyncError> {
        let copy = std::sync::atomic::AtomicBool::new(true);
        let load = || self.load_crm_from(crm, copy.swap(false, std::sync::atomic::Ordering::Relaxed));
        self.with_retries(load, (None, Some(crm.clone())), MAX_ATTEMPTS + 1).await
    }

    async fn with_retries<F, Fut>(
        &self,
        load: F,
        subject: (Option<ReferralId>, Option<CrmRef>),
        attempts: usize,
    ) -> Result<Outcome, SyncError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Loaded, SyncError>>,
    {
        let mut last = None;
        for _ in 0..attempts {
            let loaded = match load().await {
                Ok(l) => l,
                Err(e @ (SyncError::Permanent { .. } | SyncError::Blocked { .. })) => {
                    // Nothing was read to mark; the audit trail still says why.
                    self.audit_failure(subject.0.clone(), subject.1.clone(), &e).await;
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            if loaded.create_in_flight {
                return Ok(Outcome {
                    summary: "a Partner Center create for this CRM record is in progress: its worker completes the \
                              link"
                        .into(),
                    api_writes: 0,
                    referral_id: loaded.referral_id(),
                    crm: loaded.link.as_ref().and_then(|l| l.crm.clone()),
                    link: loaded.link,
                });
            }
            let plan = plan(&loaded.input(&self.config, self.clock.now()));
            // What a failure is recorded against, kept aside: a copy of everything loaded (both
            // referrals included) cost every sync a fifth of its time in the engine benchmark.
            let subject_of_failure = loaded.failure_subject();
            match self.execute(&plan, loaded).await {
                Ok(outcome) => return Ok(outcome),
                Err(Raced(reason)) => last = Some(reason),
                Err(Failed(e @ SyncError::Permanent { .. })) => {
                    self.record_failure(&subject_of_failure, &e).await;
                    return Err(e);
                }
                Err(Failed(e @ SyncError::Blocked { .. })) => {
                    let referral = subject_of_failure.referral_id().or_else(|| subject.0.clone());
                    self.audit_failure(referral, subject.1.clone(), &e).await;
                    return Err(e);
                }
                Err(Failed(e)) => return Err(e),
            }
        }
        Err(SyncError::Retry { after: None, reason: last.unwrap_or_else(|| "concurrent changes".into()) })
    }

    async fn audit_failure(&self, referral_id: Option<ReferralId>, crm: Option<CrmRef>, error: &SyncError) {
        if referral_id.is_none() && crm.is_none() {
            return;
        }
        let entry = AuditEntry {
            at: self.clock.now(),
            referral_id,
            crm,
            kind: AuditKind::Error,
            message: format!("Sync failed: {error}"),
            detail: json!({ "error": error.to_string() }),
        };
        if let Err(e) = self.state.append_audit(&entry).await {
            tracing::warn!(error = %e, "could not audit a sync failure");
        }
    }

    /// Audits a permanent failure and marks the CRM record ✘ (best effort: the failure itself is
    /// what the caller reports).
    pub async fn record_failure(&self, loaded: &Loaded, error: &SyncError) {
        let referral_id = loaded.referral_id();
        let crm = loaded
            .crm
            .as_ref()
            .and_then(|s| self.crm_ref(s).ok())
            .or_else(|| loaded.link.as_ref().and_then(|l| l.crm.clone()));
        if referral_id.is_none() && crm.is_none() {
            return;
        }
        let message = format!("Sync failed: {error}");
        self.audit_failure(referral_id.clone(), crm.clone(), error).await;
        if let (Some(CrmSnapshot::Opportunity { record, .. }), true) = (&loaded.crm, self.config.check_mark) {
            let fields = crate::crm::OpportunityFields {
                name: record.fields.name.as_deref().map(|n| with_mark(n, false)),
                cosell: crate::crm::CosellFields {
                    sync_status: Some(format!("Not synced: {error}")),
                    audit: Some(message.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            if let Err(e) = self.crm.update_opportunity(&record.id, None, &fields).await {
                tracing::warn!(error = %e, "could not mark the CRM record as failed");
            }
        }
        let link = match &loaded.link {
            Some(l) => Some(l.clone()),
            None => Some(Link::new(referral_id, crm, self.clock.now())),
        };
        if let Some(current) = link {
            let mut next = current.clone();
            next.mark = SyncMark::Failed(error.to_string());
            next.updated_at = self.clock.now();
            let stored = if current.version == 0 {
                self.state.create_link(&next).await
            } else {
                self.state.update_link(&current, &next).await
            };
            if let Err(e) = stored {
                tracing::warn!(error = %e, "could not store the failure on the link");
            }
        }
    }

    /// Applies `plan`, starting from the state it was made from.
    pub async fn execute(&self, plan: &Plan, loaded: Loaded) -> Result<Outcome, ExecFailure> {
        let resuming = loaded.link.as_ref().and_then(link_extra::intent) == Some(link_extra::CREATE_REFERRAL);
        let mut cx = Context { loaded, account: None, contact: None, api_writes: 0 };
        for step in &plan.steps {
            self.step(step, &mut cx, resuming).await?;
        }
        let crm = cx.loaded.crm.as_ref().and_then(|s| self.crm_ref(s).ok());
        Ok(Outcome {
            summary: plan.summary.clone(),
            api_writes: cx.api_writes,
            referral_id: cx.loaded.referral_id(),
            crm,
            link: cx.loaded.link,
        })
    }

    async fn step(&self, step: &Step, cx: &mut Context, resuming: bool) -> Result<(), ExecFailure> {
        if step.is_api_write() {
            cx.api_writes += 1;
        }
        match step {
            Step::CreateOpportunity { fields, on_hold, account, contact, solutions } => {
                let mut new =
                    NewOpportunity { fields: fields.clone(), solutions: solutions.clone(), ..Default::default() };
                if let Some(account) = account {
                    let email = contact.as_ref().and_then(|c| c.email.as_deref());
                    let found = match cx.loaded.customer.take() {
                        Some(found) => found,
                        None => self.crm.find_customer(account, email).await?,
                    };
                    match &found.account {
                        Some(a) => new.fields.account_id = Some(a.id.clone()),
                        None => new.account = Some(account.clone()),
                    }
                    match &found.contact {
                        Some(c) => new.fields.contact_id = Some(c.id.clone()),
                        None => new.contact = contact.clone(),
                    }
                    cx.account = found.account;
                    cx.contact = found.contact;
                }
                let created = self.crm.create_opportunity_with(&new).await?;
                cx.account = created.account.or(cx.account.take());
                cx.contact = created.contact.or(cx.contact.take());
                let mut record = created.record;
                let mut rows = created.solutions;
                if !created.created {
                    // Created by an earlier attempt: its rows are whatever that attempt left.
                    rows = self.crm.list_solutions(&record.id).await?;
                    for s in solutions {
                        if !rows.iter().any(|r| r.solution_id == s.solution_id) {
                            rows.push(self.crm.add_solution(&record.id, &s.solution_id, s.name.as_deref()).await?);
                        }
                    }
                }
                if *on_hold && record.state == DealState::Open {
                    record = self.crm.set_on_hold(&record.id, true).await?;
                }
                cx.loaded.crm = Some(CrmSnapshot::Opportunity {
                    record,
                    account: cx.account.clone(),
                    contact: cx.contact.clone(),
                    solutions: rows,
                });
            }
            Step::CreateLead { fields } => {
                let created = self.crm.create_lead(fields).await?;
                cx.loaded.crm = Some(CrmSnapshot::Lead(created.record));
            }
            Step::UpdateOpportunity { id, expected_version, fields } => {
                let record = self.crm.update_opportunity(id, expected_version.as_deref(), fields).await?;
                cx.replace_opportunity(record);
            }
            Step::UpdateLead { id, expected_version, fields } => {
                let record = self.crm.update_lead(id, expected_version.as_deref(), fields).await?;
                cx.loaded.crm = Some(CrmSnapshot::Lead(record));
            }
            Step::SetOnHold { id, on_hold } => {
                let record = self.crm.set_on_hold(id, *on_hold).await?;
                cx.replace_opportunity(record);
            }
            Step::CloseOpportunity { id, outcome } => {
                let record = self.crm.close_opportunity(id, outcome).await?;
                cx.replace_opportunity(record);
            }
            Step::AddSolution { solution_id, name } => {
                let Some(CrmSnapshot::Opportunity { record, solutions, .. }) = cx.loaded.crm.as_mut() else {
                    return Err(internal("solution without an opportunity"));
                };
                if !solutions.iter().any(|s| &s.solution_id == solution_id) {
                    let row = self.crm.add_solution(&record.id, solution_id, name.as_deref()).await?;
                    solutions.push(row);
                } else {
                    cx.api_writes -= 1;
                }
            }
            Step::RemoveSolution { row_id, .. } => {
                match self.crm.remove_solution(row_id).await {
                    Ok(()) | Err(CrmError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                if let Some(CrmSnapshot::Opportunity { solutions, .. }) = cx.loaded.crm.as_mut() {
                    solutions.retain(|s| &s.id != row_id);
                }
            }
            Step::RecordIntent => {
                let crm = cx.loaded.crm.as_ref().map(|s| self.crm_ref(s)).transpose()?;
                let now = self.clock.now();
                let current = cx.loaded.link.clone();
                let mut next = current.clone().unwrap_or_else(|| Link::new(None, crm.clone(), now));
                next.extra
                    .insert(link_extra::INTENT.into(), json!({ "kind": link_extra::CREATE_REFERRAL, "since": now }));
                next.updated_at = now;
                let stored = match &current {
                    Some(c) if c.version > 0 => self.state.update_link(c, &next).await,
                    _ => self.state.create_link(&next).await,
                }
                .map_err(race_or_fail)?;
                cx.loaded.link = Some(stored);
            }
            Step::CreateReferral { referral } => {
                let adopted = if resuming { self.adopt_referral(cx).await? } else { None };
                let created = match adopted {
                    Some(r) => {
                        cx.api_writes -= 1;
                        r
                    }
                    None => self.pc.create_referral(referral).await?,
                };
                cx.loaded.referral = Some(created);
            }
            Step::CreateMicrosoftReferral { referral } => {
                let ours = cx.loaded.referral.as_ref().ok_or_else(|| internal("Microsoft's referral before ours"))?;
                let engagement =
                    ours.engagement_id.clone().ok_or_else(|| internal("created referral has no engagementId"))?;
                // Only a resumed attempt can find an invitation it already sent; a first attempt (or
                // a conversion to co-sell, planned from an engagement read without one) cannot.
                let existing = if resuming {
                    self.pc
                        .list_referrals(&ReferralQuery::engagement(&engagement), None)
                        .await?
                        .items
                        .into_iter()
                        .find(|r| r.is_microsoft_side())
                } else {
                    None
                };
                let microsoft = match existing {
                    Some(r) => {
                        cx.api_writes -= 1;
                        r
                    }
                    None => {
                        let mut r = (**referral).clone();
                        r.engagement_id = Some(EngagementId(engagement.0.clone()));
                        self.pc.create_referral(&r).await?
                    }
                };
                cx.loaded.microsoft = Some(microsoft);
            }
            Step::WriteBackReferral { id, fields } => {
                let referral = cx
                    .loaded
                    .referral
                    .as_ref()
                    .and_then(|r| r.id.clone())
                    .ok_or_else(|| internal("no referral to write back"))?;
                let mut fields = fields.clone();
                fields.cosell.referral_link = Some(self.config.referral_link_for(referral.as_str()));
                fields.cosell.referral_id = Some(referral);
                let record = self.crm.update_opportunity(id, None, &fields).await?;
                cx.replace_opportunity(record);
            }
            Step::PatchReferral { ops } => {
                self.patch(cx, ops).await?;
            }
            Step::WriteBackCrmId => {
                let id = cx
                    .loaded
                    .crm
                    .as_ref()
                    .map(|s| s.id().to_owned())
                    .ok_or_else(|| internal("no CRM record to write back"))?;
                let current = cx.loaded.referral.as_ref().and_then(|r| r.external_reference_id.clone());
                if current.as_deref() == Some(id.as_str()) {
                    cx.api_writes -= 1;
                } else {
                    self.patch(cx, &[PatchOp::add("/externalReferenceId", id)]).await?;
                }
            }
            Step::SaveLink { mark, pending } => self.save_link(cx, mark.clone(), pending).await?,
            Step::Audit { kind, message, detail } => {
                let entry = AuditEntry {
                    at: self.clock.now(),
                    referral_id: cx.loaded.referral_id(),
                    crm: cx
                        .loaded
                        .crm
                        .as_ref()
                        .and_then(|s| self.crm_ref(s).ok())
                        .or_else(|| cx.loaded.link.as_ref().and_then(|l| l.crm.clone())),
                    kind: kind.clone(),
                    message: message.clone(),
                    detail: detail.clone(),
                };
                if entry.referral_id.is_some() || entry.crm.is_some() {
                    self.state.append_audit(&entry).await.map_err(SyncError::from)?;
                }
            }
        }
        Ok(())
    }

    async fn patch(&self, cx: &mut Context, ops: &[PatchOp]) -> Result<(), ExecFailure> {
        let referral = cx.loaded.referral.as_ref().ok_or_else(|| internal("patch without a referral"))?;
        let id = referral.id.clone().ok_or_else(|| internal("referral without id"))?;
        match self.pc.patch_referral(&id, ops, referral.etag.as_ref()).await {
            Ok(updated) => {
                cx.loaded.referral = Some(updated);
                cx.loaded.from_link = false;
                Ok(())
            }
            // Someone changed the referral since we read it (or since the link's copy): re-read and
            // re-plan.
            Err(PartnerCenterError::Conflict(reason)) => Err(Raced(format!("Partner Center: {reason}"))),
            // A copy can be out of date in a way its eTag did not catch: the referral as it is, read
            // and planned again, decides whether the refusal stands.
            Err(e @ (PartnerCenterError::Invalid { .. } | PartnerCenterError::NotFound(_))) if cx.loaded.from_link => {
                Err(Raced(format!("Partner Center refused a patch planned from the last sync's copy: {e}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A referral an interrupted attempt created: ours carries the CRM id in `externalReferenceId`.
    async fn adopt_referral(&self, cx: &Context) -> Result<Option<Referral>, ExecFailure> {
        let Some(crm_id) = cx.loaded.crm.as_ref().map(|s| s.id().to_owned()) else { return Ok(None) };
        let query =
            ReferralQuery { orderby: Some("createdDateTime desc".into()), top: Some(100), ..ReferralQuery::default() };
        let page = self.pc.list_referrals(&query, None).await?;
        Ok(page
            .items
            .into_iter()
            .find(|r| !r.is_microsoft_side() && r.external_reference_id.as_deref() == Some(crm_id.as_str())))
    }

    async fn save_link(&self, cx: &mut Context, mark: SyncMark, pending: &[SyncField]) -> Result<(), ExecFailure> {
        let now = self.clock.now();
        let crm_ref = cx.loaded.crm.as_ref().map(|s| self.crm_ref(s)).transpose()?;
        let referral_id = cx.loaded.referral.as_ref().and_then(|r| r.id.clone());
        let current = cx.loaded.link.clone().filter(|l| l.version > 0);
        let mut next = current.clone().unwrap_or_else(|| Link::new(referral_id.clone(), crm_ref.clone(), now));
        if next.referral_id.is_none() {
            next.referral_id = referral_id;
        }
        if next.crm.is_none() {
            next.crm = crm_ref;
        }
        next.extra.remove(link_extra::INTENT);
        let keep = |mut view: DealView, key: &str| {
            if let Some(old) = current.as_ref().and_then(|l| link_extra::view(l, key)) {
                for f in pending {
                    view.take(&old, *f);
                }
            }
            view
        };
        if let Some(r) = &cx.loaded.referral {
            let view =
                keep(DealView::of_referral(r, cx.loaded.microsoft.as_ref(), &self.config), link_extra::SYNCED_PC);
            next.pc_fingerprint = Some(view.fingerprint());
            next.extra.insert(link_extra::SYNCED_PC.into(), serde_json::to_value(view).unwrap_or_default());
            next.pc_etag = r.etag.as_ref().map(|e| e.as_str().to_owned());
            // After a write of ours, `r` is what Partner Center returned for it: the next CRM → PC
            // sync plans from this copy and sends this eTag.
            next.extra
                .insert(link_extra::LAST_SEEN.into(), link_extra::last_seen_value(r, cx.loaded.microsoft.as_ref()));
            next.engagement_id = r.engagement_id.as_ref().map(|e| e.as_str().to_owned());
        }
        if let Some(m) = cx.loaded.microsoft.as_ref().filter(|m| m.id.is_some()) {
            next.extra.insert(
                link_extra::MICROSOFT.into(),
                serde_json::json!({
                    "id": m.id.as_ref().map(|i| i.as_str()),
                    "etag": m.etag.as_ref().map(|e| e.as_str()),
                }),
            );
        }
        if let Some(s) = &cx.loaded.crm {
            let view = keep(DealView::of_crm(s, &self.config), link_extra::SYNCED_CRM);
            next.crm_fingerprint = Some(view.fingerprint());
            next.extra.insert(link_extra::SYNCED_CRM.into(), serde_json::to_value(view).unwrap_or_default());
            next.crm_version = Some(s.version().to_owned());
        }
        if mark == SyncMark::Synced {
            next.last_synced_at = Some(now);
        }
        next.mark = mark;
        next.updated_at = now;
        let stored = match &current {
            Some(c) => self.state.update_link(c, &next).await,
            None => self.state.create_link(&next).await,
        }
        .map_err(race_or_fail)?;
        cx.loaded.link = Some(stored);
        Ok(())
    }
}

/// The snapshot of an opportunity. Its account and contact are kept only for deals not yet shared,
/// whose preconditions (country, contact) are checked before sharing.
fn opportunity_snapshot(d: OpportunityDetails) -> CrmSnapshot {
    let unshared = d.record.fields.cosell.referral_id.is_none();
    CrmSnapshot::Opportunity {
        account: d.account.filter(|_| unshared),
        contact: d.contact.filter(|_| unshared),
        record: d.record,
        solutions: d.solutions,
    }
}

struct Context {
    loaded: Loaded,
    account: Option<AccountRecord>,
    contact: Option<ContactRecord>,
    api_writes: usize,
}

impl Context {
    fn replace_opportunity(&mut self, updated: crate::crm::OpportunityRecord) {
        match self.loaded.crm.as_mut() {
            Some(CrmSnapshot::Opportunity { record, .. }) => *record = updated,
            _ => {
                self.loaded.crm = Some(CrmSnapshot::Opportunity {
                    record: updated,
                    account: None,
                    contact: None,
                    solutions: Vec::new(),
                })
            }
        }
    }
}

/// Why executing a plan stopped.
#[derive(Debug)]
pub enum ExecFailure {
    /// A conditional write lost to a concurrent change: reload and re-plan.
    Raced(String),
    Failed(SyncError),
}
use ExecFailure::{Failed, Raced};

impl<E: Into<SyncError>> From<E> for ExecFailure {
    fn from(e: E) -> Self {
        Failed(e.into())
    }
}

fn race_or_fail(e: StateError) -> ExecFailure {
    match e {
        StateError::Conflict(reason) => Raced(reason),
        e => Failed(e.into()),
    }
}

fn internal(what: &str) -> ExecFailure {
    Failed(SyncError::Permanent { reason: format!("internal planning error: {what}") })
}
