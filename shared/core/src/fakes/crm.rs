//! The CRM port in memory: idempotent creates keyed by the referral id, versions that advance on
//! every write, conditional updates, closed records that cannot be reopened, a change feed.

use std::sync::{Arc, Mutex};

use super::crm_store::{Fed, Records};
use super::{Crash, lock};
use crate::clock::Clock;
use crate::crm::{
    AccountFields, AccountRecord, ChangeBatch, ChangeCursor, ChangeKind, CloseOutcome, ContactFields, ContactRecord,
    CosellFields, Created, CreatedOpportunity, CrmError, CrmIdentity, CrmKind, CrmPort, Customer, DealState,
    LeadFields, LeadRecord, LeadState, NewOpportunity, OpportunityDetails, OpportunityFields, OpportunityKey,
    OpportunityRecord, RecordMeta, SolutionRecord,
};
use crate::ids::{CrmRef, ReferralId};

pub const CONNECTOR_USER: &str = "connector-user";
pub const SELLER_USER: &str = "seller-user";

#[derive(Debug, Default)]
struct Inner {
    seq: u64,
    records: Records,
    calls: u64,
    writes: u64,
}

#[derive(Debug, Clone)]
pub struct InMemoryCrm {
    inner: Arc<Mutex<Inner>>,
    kind: CrmKind,
    clock: Arc<dyn Clock>,
    crash: Crash,
}

fn merge_cosell(into: &mut CosellFields, from: &CosellFields) {
    macro_rules! take {
        ($($f:ident),*) => { $( if from.$f.is_some() { into.$f = from.$f.clone(); } )* };
    }
    take!(sync, referral_id, referral_link, help, visibility, microsoft_crm_id, audit, sync_status);
}

fn merge_opportunity(into: &mut OpportunityFields, from: &OpportunityFields) {
    macro_rules! take {
        ($($f:ident),*) => { $( if from.$f.is_some() { into.$f = from.$f.clone(); } )* };
    }
    take!(name, deal_value, currency, close_date, description, account_id, contact_id);
    merge_cosell(&mut into.cosell, &from.cosell);
}

fn merge_lead(into: &mut LeadFields, from: &LeadFields) {
    macro_rules! take {
        ($($f:ident),*) => { $( if from.$f.is_some() { into.$f = from.$f.clone(); } )* };
    }
    take!(topic, first_name, last_name, company, email, phone, country, description, deal_value);
    merge_cosell(&mut into.cosell, &from.cosell);
}

/// The new account and contact of a [`NewOpportunity`], bound into its fields.
fn create_customer(
    inner: &mut Inner,
    new: &NewOpportunity,
    fields: &mut OpportunityFields,
    account: &mut Option<AccountRecord>,
    contact: &mut Option<ContactRecord>,
) -> Result<(), CrmError> {
    if let Some(a) = &new.account {
        inner.seq += 1;
        let a = AccountRecord { id: format!("acc-{}", inner.seq), fields: a.clone() };
        inner.records.put_account(a.clone());
        fields.account_id = Some(a.id.clone());
        *account = Some(a);
    }
    if let Some(c) = &new.contact {
        let account_id = fields.account_id.clone().ok_or_else(|| CrmError::Invalid {
            field: Some("account".into()),
            message: "a new contact needs an account".into(),
        })?;
        if !inner.records.accounts.contains_key(&account_id) {
            return Err(not_found("account", &account_id));
        }
        inner.seq += 1;
        let c = ContactRecord { id: format!("con-{}", inner.seq), account_id: Some(account_id), fields: c.clone() };
        inner.records.put_contact(c.clone());
        fields.contact_id = Some(c.id.clone());
        *contact = Some(c);
    }
    Ok(())
}

fn not_found(entity: &str, id: &str) -> CrmError {
    CrmError::NotFound { entity: entity.into(), id: id.into() }
}

impl InMemoryCrm {
    pub fn new(kind: CrmKind, clock: impl Clock + 'static, crash: Crash) -> Self {
        Self { inner: Arc::default(), kind, clock: Arc::new(clock), crash }
    }

    /// API calls made so far, counted as the port documents them; and writes among them.
    pub fn calls(&self) -> (u64, u64) {
        let inner = lock(&self.inner);
        (inner.calls, inner.writes)
    }

    /// Records the port calls looked at without answering with them; 0 while every lookup is indexed.
    pub fn scanned(&self) -> u64 {
        lock(&self.inner).records.scanned
    }

    /// Whether the lookup indexes equal those a scan of every record builds (for tests).
    #[doc(hidden)]
    pub fn indexes_agree_with_a_scan(&self) -> bool {
        lock(&self.inner).records.indexes_agree_with_a_scan()
    }

    fn meta(&self, inner: &mut Inner, by: &str) -> RecordMeta {
        inner.seq += 1;
        RecordMeta {
            version: format!("v{}", inner.seq),
            modified_at: Some(self.clock.now() + chrono::Duration::milliseconds(inner.seq as i64)),
            modified_by: Some(by.into()),
        }
    }

    /// A new opportunity as the adapters create it: `on_hold` chooses the starting stage and is not
    /// stored; the close date is required.
    fn insert_opportunity(&self, inner: &mut Inner, fields: OpportunityFields) -> Result<OpportunityRecord, CrmError> {
        if fields.close_date.is_none() {
            return Err(CrmError::Invalid { field: Some("close date".into()), message: "required".into() });
        }
        let meta = self.meta(inner, CONNECTOR_USER);
        let seq = inner.seq;
        let state = if fields.on_hold == Some(true) { DealState::OnHold } else { DealState::Open };
        let o = OpportunityRecord {
            id: format!("opp-{seq}"),
            meta,
            state,
            stage: None,
            fields: OpportunityFields { on_hold: None, ..fields },
        };
        inner.records.put_opp(o.clone(), seq);
        Ok(o)
    }

    fn call(&self, n: u64) -> std::sync::MutexGuard<'_, Inner> {
        let mut inner = lock(&self.inner);
        inner.calls += n;
        inner
    }

    fn write(&self, n: u64) -> Result<std::sync::MutexGuard<'_, Inner>, CrmError> {
        self.crash.write().map_err(CrmError::Transient)?;
        let mut inner = self.call(n);
        inner.writes += 1;
        Ok(inner)
    }

    // --- acting as a CRM user (not counted as connector calls) ---

    pub fn seed_account(&self, fields: AccountFields) -> AccountRecord {
        let mut inner = lock(&self.inner);
        inner.seq += 1;
        let a = AccountRecord { id: format!("acc-{}", inner.seq), fields };
        inner.records.put_account(a.clone());
        a
    }

    pub fn seed_contact(&self, account_id: &str, fields: ContactFields) -> ContactRecord {
        let mut inner = lock(&self.inner);
        inner.seq += 1;
        let c = ContactRecord { id: format!("con-{}", inner.seq), account_id: Some(account_id.into()), fields };
        inner.records.put_contact(c.clone());
        c
    }

    pub fn seed_opportunity(&self, fields: OpportunityFields, state: DealState) -> OpportunityRecord {
        let mut inner = lock(&self.inner);
        let meta = self.meta(&mut inner, SELLER_USER);
        let seq = inner.seq;
        let o = OpportunityRecord { id: format!("opp-{seq}"), meta, state, stage: None, fields };
        inner.records.put_opp(o.clone(), seq);
        o
    }

    pub fn seed_solution(&self, opportunity_id: &str, solution_id: &str) {
        let mut inner = lock(&self.inner);
        inner.seq += 1;
        let row = SolutionRecord { id: format!("sol-row-{}", inner.seq), solution_id: solution_id.into(), name: None };
        inner.records.put_solution(opportunity_id.into(), row);
        self.touch(&mut inner, opportunity_id, SELLER_USER);
    }

    pub fn edit_opportunity(&self, id: &str, edit: impl FnOnce(&mut OpportunityRecord)) -> OpportunityRecord {
        let mut inner = lock(&self.inner);
        let meta = self.meta(&mut inner, SELLER_USER);
        let seq = inner.seq;
        inner
            .records
            .modify_opp(id, |o, at| {
                edit(o);
                o.meta = meta;
                *at = seq;
                o.clone()
            })
            .expect("known opportunity")
    }

    /// Edits an account as a CRM user would. Like the real CRMs, this does not change the version
    /// of the opportunities that point at it.
    pub fn edit_account(&self, id: &str, edit: impl FnOnce(&mut AccountRecord)) -> AccountRecord {
        let mut inner = lock(&self.inner);
        let mut a = inner.records.accounts.get(id).cloned().expect("known account");
        edit(&mut a);
        inner.records.put_account(a.clone());
        a
    }

    pub fn edit_lead(&self, id: &str, edit: impl FnOnce(&mut LeadRecord)) -> LeadRecord {
        let mut inner = lock(&self.inner);
        let meta = self.meta(&mut inner, SELLER_USER);
        let seq = inner.seq;
        inner
            .records
            .modify_lead(id, |l, at| {
                edit(l);
                l.meta = meta;
                *at = seq;
                l.clone()
            })
            .expect("known lead")
    }

    pub fn opportunities(&self) -> Vec<OpportunityRecord> {
        lock(&self.inner).records.opportunities.values().map(|(o, _)| o.clone()).collect()
    }

    pub fn leads(&self) -> Vec<LeadRecord> {
        lock(&self.inner).records.leads.values().map(|(l, _)| l.clone()).collect()
    }

    pub fn accounts(&self) -> Vec<AccountRecord> {
        lock(&self.inner).records.accounts.values().cloned().collect()
    }

    pub fn contacts(&self) -> Vec<ContactRecord> {
        lock(&self.inner).records.contacts.values().cloned().collect()
    }

    pub fn solution_ids(&self, opportunity_id: &str) -> Vec<String> {
        let inner = lock(&self.inner);
        let mut ids: Vec<String> =
            inner.records.solutions_of(opportunity_id).into_iter().map(|r| r.solution_id).collect();
        ids.sort();
        ids
    }

    fn touch(&self, inner: &mut Inner, opportunity_id: &str, by: &str) {
        let meta = self.meta(inner, by);
        let seq = inner.seq;
        inner.records.modify_opp(opportunity_id, |o, at| {
            o.meta = meta;
            *at = seq;
        });
    }

    fn update_opp(
        &self,
        inner: &mut Inner,
        id: &str,
        f: impl FnOnce(&mut OpportunityRecord) -> Result<(), CrmError>,
    ) -> Result<OpportunityRecord, CrmError> {
        let meta = self.meta(inner, CONNECTOR_USER);
        let seq = inner.seq;
        inner
            .records
            .modify_opp(id, |o, at| {
                f(o)?;
                o.meta = meta;
                *at = seq;
                Ok(o.clone())
            })
            .ok_or_else(|| not_found("opportunity", id))?
    }
}

impl CrmPort for InMemoryCrm {
    fn kind(&self) -> CrmKind {
        self.kind
    }

    async fn whoami(&self) -> Result<CrmIdentity, CrmError> {
        Ok(CrmIdentity { user_id: CONNECTOR_USER.into(), organization_id: None })
    }

    async fn get_opportunity(&self, id: &str) -> Result<OpportunityRecord, CrmError> {
        self.call(1).records.opportunities.get(id).map(|(o, _)| o.clone()).ok_or_else(|| not_found("opportunity", id))
    }

    async fn find_opportunity_by_referral(&self, referral: &ReferralId) -> Result<Option<OpportunityRecord>, CrmError> {
        Ok(self.call(1).records.opp_by_referral(referral).cloned())
    }

    async fn create_opportunity(&self, fields: &OpportunityFields) -> Result<Created<OpportunityRecord>, CrmError> {
        let mut inner = self.write(1)?;
        if let Some(rid) = &fields.cosell.referral_id
            && let Some(o) = inner.records.opp_by_referral(rid)
        {
            return Ok(Created { record: o.clone(), created: false });
        }
        let o = self.insert_opportunity(&mut inner, fields.clone())?;
        Ok(Created { record: o, created: true })
    }

    async fn update_opportunity(
        &self,
        id: &str,
        expected_version: Option<&str>,
        fields: &OpportunityFields,
    ) -> Result<OpportunityRecord, CrmError> {
        let mut inner = self.write(1)?;
        self.update_opp(&mut inner, id, |o| {
            if expected_version.is_some_and(|v| v != o.meta.version) {
                return Err(CrmError::Conflict(format!("opportunity {id} changed since version {expected_version:?}")));
            }
            if o.state.is_closed() && (fields.deal_value.is_some() || fields.close_date.is_some()) {
                return Err(CrmError::Invalid { field: None, message: "a closed opportunity is read-only".into() });
            }
            merge_opportunity(&mut o.fields, fields);
            Ok(())
        })
    }

    async fn close_opportunity(&self, id: &str, outcome: &CloseOutcome) -> Result<OpportunityRecord, CrmError> {
        let mut inner = self.write(2)?;
        let target = match outcome {
            CloseOutcome::Won => DealState::Won,
            CloseOutcome::Lost { .. } => DealState::Lost,
        };
        let current =
            inner.records.opportunities.get(id).map(|(o, _)| o.state).ok_or_else(|| not_found("opportunity", id))?;
        if current == target {
            return Ok(inner.records.opportunities[id].0.clone());
        }
        if current.is_closed() {
            return Err(CrmError::Invalid {
                field: None,
                message: format!("already closed as {current:?}; never reopened"),
            });
        }
        self.update_opp(&mut inner, id, |o| {
            o.state = target;
            Ok(())
        })
    }

    async fn set_on_hold(&self, id: &str, on_hold: bool) -> Result<OpportunityRecord, CrmError> {
        let mut inner = self.write(2)?;
        self.update_opp(&mut inner, id, |o| {
            if o.state.is_closed() {
                return Err(CrmError::Invalid { field: None, message: "closed".into() });
            }
            o.state = if on_hold { DealState::OnHold } else { DealState::Open };
            Ok(())
        })
    }

    async fn get_lead(&self, id: &str) -> Result<LeadRecord, CrmError> {
        self.call(1).records.leads.get(id).map(|(l, _)| l.clone()).ok_or_else(|| not_found("lead", id))
    }

    async fn find_lead_by_referral(&self, referral: &ReferralId) -> Result<Option<LeadRecord>, CrmError> {
        Ok(self.call(1).records.lead_by_referral(referral).cloned())
    }

    async fn create_lead(&self, fields: &LeadFields) -> Result<Created<LeadRecord>, CrmError> {
        let mut inner = self.write(1)?;
        if let Some(rid) = &fields.cosell.referral_id
            && let Some(l) = inner.records.lead_by_referral(rid)
        {
            return Ok(Created { record: l.clone(), created: false });
        }
        let meta = self.meta(&mut inner, CONNECTOR_USER);
        let seq = inner.seq;
        let l = LeadRecord { id: format!("lead-{seq}"), meta, state: LeadState::Open, fields: fields.clone() };
        inner.records.put_lead(l.clone(), seq);
        Ok(Created { record: l, created: true })
    }

    async fn update_lead(
        &self,
        id: &str,
        expected_version: Option<&str>,
        fields: &LeadFields,
    ) -> Result<LeadRecord, CrmError> {
        let mut inner = self.write(1)?;
        let meta = self.meta(&mut inner, CONNECTOR_USER);
        let seq = inner.seq;
        inner
            .records
            .modify_lead(id, |l, at| {
                if expected_version.is_some_and(|v| v != l.meta.version) {
                    return Err(CrmError::Conflict(format!("lead {id} changed")));
                }
                merge_lead(&mut l.fields, fields);
                l.meta = meta;
                *at = seq;
                Ok(l.clone())
            })
            .ok_or_else(|| not_found("lead", id))?
    }

    async fn load_opportunity(&self, key: OpportunityKey<'_>) -> Result<Option<OpportunityDetails>, CrmError> {
        let inner = self.call(1);
        let record = match key {
            OpportunityKey::Id(id) => inner.records.opportunities.get(id).map(|(o, _)| o.clone()),
            OpportunityKey::Referral(r) => inner.records.opp_by_referral(r).cloned(),
        };
        Ok(record.map(|record| OpportunityDetails {
            solutions: inner.records.solutions_of(&record.id),
            account: record.fields.account_id.as_ref().and_then(|id| inner.records.accounts.get(id)).cloned(),
            contact: record.fields.contact_id.as_ref().and_then(|id| inner.records.contacts.get(id)).cloned(),
            record,
        }))
    }

    /// As the adapters: Salesforce answers both in one composite request; Dataverse leaves the
    /// customer to a later `find_customer`.
    async fn load_opportunity_or_customer(
        &self,
        referral: &ReferralId,
        customer: Option<(&AccountFields, Option<&str>)>,
    ) -> Result<(Option<OpportunityDetails>, Option<Customer>), CrmError> {
        let found = self.load_opportunity(OpportunityKey::Referral(referral)).await?;
        let customer = match (&found, customer, self.kind) {
            (None, Some((account, email)), CrmKind::Salesforce) => {
                let c = self.find_customer(account, email).await?;
                lock(&self.inner).calls -= 1; // the same composite request
                Some(c)
            }
            _ => None,
        };
        Ok((found, customer))
    }

    async fn find_customer(&self, account: &AccountFields, email: Option<&str>) -> Result<Customer, CrmError> {
        let mut inner = self.call(1);
        let account = inner.records.account_named(account).cloned();
        let contact = match (&account, email) {
            (Some(a), Some(email)) => inner.records.contact_of(&a.id, email).cloned(),
            _ => None,
        };
        Ok(Customer { account, contact })
    }

    /// As the adapters count it: Salesforce one composite call; Dataverse one deep insert, after one
    /// call for a new contact (with its new account) or a new account.
    async fn create_opportunity_with(&self, new: &NewOpportunity) -> Result<CreatedOpportunity, CrmError> {
        let mut fields = new.fields.clone();
        let mut created_account = None;
        let mut created_contact = None;
        let mut inner = match self.kind {
            CrmKind::Dynamics if new.account.is_some() || new.contact.is_some() => {
                let mut inner = self.write(1)?;
                create_customer(&mut inner, new, &mut fields, &mut created_account, &mut created_contact)?;
                drop(inner);
                self.write(1)?
            }
            CrmKind::Dynamics | CrmKind::Salesforce => self.write(1)?,
        };
        if let Some(rid) = &fields.cosell.referral_id
            && let Some(o) = inner.records.opp_by_referral(rid)
        {
            // Dataverse: the customer call went first. Salesforce: DUPLICATE_VALUE on the external
            // id, and the all-or-none composite request wrote nothing.
            return Ok(CreatedOpportunity {
                record: o.clone(),
                created: false,
                account: created_account,
                contact: created_contact,
                solutions: Vec::new(),
            });
        }
        if self.kind == CrmKind::Salesforce {
            create_customer(&mut inner, new, &mut fields, &mut created_account, &mut created_contact)?;
        }
        let o = self.insert_opportunity(&mut inner, fields)?;
        let mut solutions = Vec::new();
        for s in &new.solutions {
            inner.seq += 1;
            let row = SolutionRecord {
                id: format!("sol-row-{}", inner.seq),
                solution_id: s.solution_id.clone(),
                name: s.name.clone(),
            };
            inner.records.put_solution(o.id.clone(), row.clone());
            solutions.push(row);
        }
        Ok(CreatedOpportunity {
            record: o,
            created: true,
            account: created_account,
            contact: created_contact,
            solutions,
        })
    }

    async fn create_account(&self, fields: &AccountFields) -> Result<AccountRecord, CrmError> {
        let mut inner = self.write(1)?;
        inner.seq += 1;
        let a = AccountRecord { id: format!("acc-{}", inner.seq), fields: fields.clone() };
        inner.records.put_account(a.clone());
        Ok(a)
    }

    async fn create_contact(&self, account_id: &str, fields: &ContactFields) -> Result<ContactRecord, CrmError> {
        let mut inner = self.write(1)?;
        if !inner.records.accounts.contains_key(account_id) {
            return Err(not_found("account", account_id));
        }
        inner.seq += 1;
        let c = ContactRecord {
            id: format!("con-{}", inner.seq),
            account_id: Some(account_id.into()),
            fields: fields.clone(),
        };
        inner.records.put_contact(c.clone());
        Ok(c)
    }

    async fn list_solutions(&self, opportunity_id: &str) -> Result<Vec<SolutionRecord>, CrmError> {
        Ok(self.call(1).records.solutions_of(opportunity_id))
    }

    async fn add_solution(
        &self,
        opportunity_id: &str,
        solution_id: &str,
        name: Option<&str>,
    ) -> Result<SolutionRecord, CrmError> {
        let mut inner = self.write(1)?;
        if !inner.records.opportunities.contains_key(opportunity_id) {
            return Err(not_found("opportunity", opportunity_id));
        }
        inner.seq += 1;
        let row = SolutionRecord {
            id: format!("sol-row-{}", inner.seq),
            solution_id: solution_id.into(),
            name: name.map(Into::into),
        };
        inner.records.put_solution(opportunity_id.into(), row.clone());
        Ok(row)
    }

    async fn remove_solution(&self, solution_row_id: &str) -> Result<(), CrmError> {
        let mut inner = self.write(1)?;
        inner.records.remove_solution(solution_row_id).map(|_| ()).ok_or_else(|| not_found("solution", solution_row_id))
    }

    /// The records written after the cursor's version, in version order (the feed index: the cost
    /// follows the changes, not the records).
    async fn changes(&self, cursor: Option<&ChangeCursor>) -> Result<ChangeBatch, CrmError> {
        let inner = self.call(1);
        let since: u64 = cursor.and_then(|c| c.0.parse().ok()).unwrap_or(0);
        let mut changes = Vec::new();
        for (_, fed, id) in inner.records.fed_since(since) {
            let (kind, meta, sync) = match fed {
                Fed::Opportunity => {
                    let o = &inner.records.opportunities[id].0;
                    (ChangeKind::Opportunity, &o.meta, o.fields.cosell.sync)
                }
                Fed::Lead => {
                    let l = &inner.records.leads[id].0;
                    (ChangeKind::Lead, &l.meta, l.fields.cosell.sync)
                }
            };
            if sync != Some(true) {
                continue;
            }
            let Ok(record) = CrmRef::parse(crate::sync::entity_name(self.kind, fed == Fed::Lead), id) else { continue };
            changes.push(crate::crm::Change { kind, record, meta: meta.clone(), deleted: false });
        }
        Ok(ChangeBatch { changes, next: ChangeCursor(inner.seq.to_string()), full_resync: cursor.is_none() })
    }
}
