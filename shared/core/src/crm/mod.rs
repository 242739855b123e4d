//! The CRM port: what the sync engine needs from Dynamics 365 or Salesforce, in the connector's terms.
//!
//! Adapters (crate `cosell-crm`) translate these operations to the Dataverse Web API and the
//! Salesforce REST API; field names come from [`CrmFieldMap`]. Every method charges the API budget
//! before each HTTP call it makes, so one port call may cost more than one API call: the doc comment
//! of each method says how many.
//!
//! Writes carry only the fields that are `Some`: `None` means "leave as it is", never "clear".

mod fields;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::budget::BudgetError;
use crate::ids::{CrmRef, ReferralId};

pub use fields::{AccountMatchKey, CosellFieldNames, CrmFieldMap, CrmKind, FieldMapError, SolutionSchema};

/// Errors of the CRM port. Variants drive behaviour (DESIGN.md §2 failure policy).
#[derive(Debug, thiserror::Error)]
pub enum CrmError {
    /// The record does not exist (or the connector's user cannot see it). Permanent.
    #[error("{entity} {id} not found in the CRM")]
    NotFound { entity: String, id: String },
    /// A conditional write lost: the record changed since the version the caller read. Re-read, re-plan.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The CRM rejected the data (validation, required field, malformed value). Permanent; audit + ✘.
    #[error("the CRM rejected the request{}: {message}", field.as_ref().map(|f| format!(" (field `{f}`)")).unwrap_or_default())]
    Invalid { field: Option<String>, message: String },
    /// Service protection / rate limit: retry after the given delay.
    #[error("throttled by the CRM{}", retry_after.map(|d| format!("; retry after {} s", d.as_secs())).unwrap_or_default())]
    Throttled { retry_after: Option<Duration> },
    /// 5xx, timeout or connection failure: safe to retry with backoff.
    #[error("transient CRM failure: {0}")]
    Transient(String),
    /// The credentials were refused, or a fresh token was refused again (R14: report clearly).
    #[error("the CRM refused the connector's credentials: {0}")]
    Unauthorized(String),
    /// The connector's CRM user lacks a privilege or role (R17); `missing` names it when the CRM does.
    #[error("the connector's CRM user lacks a permission: {missing}")]
    PermissionDenied { missing: String },
    /// A daily API allocation is used up (the CRM's, or the connector's own budget, R15).
    #[error("daily API limit reached: {message}")]
    LimitExceeded { message: String, resets_at: Option<DateTime<Utc>> },
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl CrmError {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CrmError::Throttled { .. } | CrmError::Transient(_) | CrmError::LimitExceeded { .. })
    }
}

impl From<BudgetError> for CrmError {
    fn from(e: BudgetError) -> Self {
        match e {
            BudgetError::Exhausted { resets_at, .. } => {
                CrmError::LimitExceeded { message: e.to_string(), resets_at: Some(resets_at) }
            }
            BudgetError::Store { .. } => CrmError::Transient(e.to_string()),
        }
    }
}

/// Whether an opportunity may still be shared with Microsoft sellers (R5, R6: one-way to visible).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Visibility {
    Private,
    VisibleToMicrosoft,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Private => "Private",
            Visibility::VisibleToMicrosoft => "VisibleToMicrosoft",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "Private" => Some(Visibility::Private),
            "VisibleToMicrosoft" => Some(Visibility::VisibleToMicrosoft),
            _ => None,
        }
    }
}

/// The connector's own fields, on opportunities and leads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CosellFields {
    pub sync: Option<bool>,
    pub referral_id: Option<ReferralId>,
    pub referral_link: Option<String>,
    /// Help option codes (Partner Center `assistanceRequestCode` values). `Some(vec![])` clears.
    pub help: Option<Vec<String>>,
    pub visibility: Option<Visibility>,
    pub microsoft_crm_id: Option<String>,
    pub audit: Option<String>,
    pub sync_status: Option<String>,
}

/// Opportunity fields the connector reads and writes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OpportunityFields {
    pub name: Option<String>,
    pub deal_value: Option<f64>,
    /// ISO 4217 code.
    pub currency: Option<String>,
    pub close_date: Option<NaiveDate>,
    pub description: Option<String>,
    /// CRM id of the customer account.
    pub account_id: Option<String>,
    /// CRM id of the primary customer contact.
    pub contact_id: Option<String>,
    pub cosell: CosellFields,
    /// On create: start on hold (the configured on-hold stage / status reason) instead of active,
    /// saving the separate `set_on_hold` call. Ignored on update: use `set_on_hold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_hold: Option<bool>,
}

/// Where an opportunity is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DealState {
    Open,
    OnHold,
    Won,
    Lost,
}

impl DealState {
    pub fn is_closed(self) -> bool {
        matches!(self, DealState::Won | DealState::Lost)
    }
}

/// The version facts every record read carries, for concurrency and echo suppression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMeta {
    /// Opaque version: Dataverse `@odata.etag`, Salesforce `SystemModstamp`. Pass it back as
    /// `expected_version` to make an update conditional.
    pub version: String,
    pub modified_at: Option<DateTime<Utc>>,
    /// CRM user id of the last modifier (compare with [`CrmPort::whoami`] for echo suppression).
    pub modified_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpportunityRecord {
    pub id: String,
    pub meta: RecordMeta,
    pub state: DealState,
    /// The raw stage / status reason value (Salesforce `StageName`, Dataverse `statuscode`).
    pub stage: Option<String>,
    pub fields: OpportunityFields,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeadFields {
    pub topic: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub country: Option<String>,
    pub description: Option<String>,
    pub deal_value: Option<f64>,
    pub cosell: CosellFields,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LeadState {
    Open,
    Qualified,
    Disqualified,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadRecord {
    pub id: String,
    pub meta: RecordMeta,
    pub state: LeadState,
    pub fields: LeadFields,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountFields {
    pub name: String,
    pub postal_code: Option<String>,
    /// As stored in the configured country field (ISO alpha-2 by the connector's convention).
    pub country: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub id: String,
    pub fields: AccountFields,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactFields {
    pub first_name: Option<String>,
    pub last_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactRecord {
    pub id: String,
    pub account_id: Option<String>,
    pub fields: ContactFields,
}

/// A "Microsoft Partner Center Solution" linked to an opportunity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SolutionRecord {
    /// CRM id of the solution row.
    pub id: String,
    /// Partner Center solution id.
    pub solution_id: String,
    pub name: Option<String>,
}

/// How to close an opportunity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloseOutcome {
    Won,
    Lost { reason: Option<String> },
}

/// The result of an idempotent create: the record, and whether this call created it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Created<T> {
    pub record: T,
    pub created: bool,
}

/// A deal's customer as the CRM has it: the account matched on the configured keys and, within
/// it, the contact with the deal's e-mail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub account: Option<AccountRecord>,
    pub contact: Option<ContactRecord>,
}

/// How [`CrmPort::load_opportunity`] finds an opportunity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpportunityKey<'a> {
    Id(&'a str),
    /// The connector's referral id column (the alternate key / external id).
    Referral(&'a ReferralId),
}

/// An opportunity with what hangs off it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpportunityDetails {
    pub record: OpportunityRecord,
    pub solutions: Vec<SolutionRecord>,
    /// The opportunity's account and contact (`None` when it names none or they are gone).
    pub account: Option<AccountRecord>,
    pub contact: Option<ContactRecord>,
}

/// A solution to link to a new opportunity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSolution {
    /// Partner Center solution id.
    pub solution_id: String,
    pub name: Option<String>,
}

/// A new opportunity with what it needs that the CRM does not have yet: created together, in as
/// few calls as the CRM's protocol allows ([`CrmPort::create_opportunity_with`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewOpportunity {
    /// The opportunity; `account_id` / `contact_id` name existing rows.
    pub fields: OpportunityFields,
    /// An account to create with it (when `fields.account_id` is `None`).
    pub account: Option<AccountFields>,
    /// A contact to create with it, in `fields.account_id` or in the new `account`.
    pub contact: Option<ContactFields>,
    pub solutions: Vec<NewSolution>,
}

/// What [`CrmPort::create_opportunity_with`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedOpportunity {
    pub record: OpportunityRecord,
    /// `false`: an opportunity with this referral id existed already; it is returned as it is and
    /// nothing was created (no account, contact or solution row either).
    pub created: bool,
    /// The accounts and contacts created by this call.
    pub account: Option<AccountRecord>,
    pub contact: Option<ContactRecord>,
    /// The solution rows created by this call.
    pub solutions: Vec<SolutionRecord>,
}

/// Which kind of record a change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChangeKind {
    Opportunity,
    Lead,
}

/// One changed record in the change feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub kind: ChangeKind,
    pub record: CrmRef,
    pub meta: RecordMeta,
    /// The record was deleted (Dataverse change tracking reports deletes; Salesforce polling does not).
    pub deleted: bool,
}

/// Where the change feed stands: opaque to the caller, stored in the cursor store between polls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChangeCursor(pub String);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeBatch {
    /// Records changed since the cursor (each at most once), with the sync flag set.
    pub changes: Vec<Change>,
    /// The cursor to store and pass to the next poll.
    pub next: ChangeCursor,
    /// The cursor had expired (or none was given): `changes` is a full snapshot, not a delta.
    pub full_resync: bool,
}

/// The client id the Salesforce adapter sends in `Sforce-Call-Options` on its writes; Change Data
/// Capture reports it in `changeOrigin` (`…;client=cosell-connector`), which is how a relayed change
/// event is recognised as the connector's own write.
pub const SALESFORCE_CALL_OPTIONS_CLIENT: &str = "cosell-connector";

/// Who the connector is in the CRM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmIdentity {
    pub user_id: String,
    pub organization_id: Option<String>,
}

/// The CRM port. Implemented by `cosell_crm::dynamics::DynamicsCrm` and `cosell_crm::salesforce::SalesforceCrm`.
///
/// Every method may also fail with `Throttled`, `Transient`, `Unauthorized`, `PermissionDenied`,
/// `LimitExceeded` (budget or CRM allocation) and `Unexpected`; the lists below name the others.
pub trait CrmPort: Send + Sync {
    /// Which CRM this is (for audit entries and configuration checks).
    fn kind(&self) -> CrmKind;

    /// The connector's own CRM user, for echo suppression. Cached after the first call (≤ 1 API call).
    fn whoami(&self) -> impl Future<Output = Result<CrmIdentity, CrmError>> + Send;

    /// One opportunity. Errors: `NotFound`. 1 API call.
    fn get_opportunity(&self, id: &str) -> impl Future<Output = Result<OpportunityRecord, CrmError>> + Send;

    /// The opportunity carrying this referral id, if any. 1 API call.
    fn find_opportunity_by_referral(
        &self,
        referral: &ReferralId,
    ) -> impl Future<Output = Result<Option<OpportunityRecord>, CrmError>> + Send;

    /// Creates an opportunity keyed by `fields.cosell.referral_id` when set: if a record with that
    /// referral id exists (a retry after a timeout), it is returned with `created = false` and no
    /// duplicate is made. Without a referral id the create is not idempotent. Currency, when set, must
    /// be enabled in the CRM. Errors: `Invalid { field }` (missing required field, unknown currency,
    /// bad value). 1–3 API calls (currency lookup is cached).
    fn create_opportunity(
        &self,
        fields: &OpportunityFields,
    ) -> impl Future<Output = Result<Created<OpportunityRecord>, CrmError>> + Send;

    /// Updates the fields that are `Some`. With `expected_version`, only if the record is still at that
    /// version. Returns the record after the write. Errors: `NotFound`, `Conflict` (stale version),
    /// `Invalid` (bad value; closed opportunities are read-only on Dataverse). 1–2 API calls.
    fn update_opportunity(
        &self,
        id: &str,
        expected_version: Option<&str>,
        fields: &OpportunityFields,
    ) -> impl Future<Output = Result<OpportunityRecord, CrmError>> + Send;

    /// Closes an opportunity as won or lost (Dataverse `WinOpportunity`/`LoseOpportunity`, Salesforce
    /// configured closed stages). Closing an already closed opportunity with the same outcome is a
    /// no-op. Errors: `NotFound`, `Invalid` (closed with the other outcome: never reopened, R10). 2 calls.
    fn close_opportunity(
        &self,
        id: &str,
        outcome: &CloseOutcome,
    ) -> impl Future<Output = Result<OpportunityRecord, CrmError>> + Send;

    /// Puts an open opportunity on hold or back to active (configured stage / status reason).
    /// Errors: `NotFound`, `Invalid` (closed). 2 API calls.
    fn set_on_hold(&self, id: &str, on_hold: bool) -> impl Future<Output = Result<OpportunityRecord, CrmError>> + Send;

    /// One lead. Errors: `NotFound`. 1 API call.
    fn get_lead(&self, id: &str) -> impl Future<Output = Result<LeadRecord, CrmError>> + Send;

    /// The lead carrying this referral id, if any. 1 API call.
    fn find_lead_by_referral(
        &self,
        referral: &ReferralId,
    ) -> impl Future<Output = Result<Option<LeadRecord>, CrmError>> + Send;

    /// Creates a lead, idempotently when `fields.cosell.referral_id` is set (as for opportunities).
    /// Errors: `Invalid { field }`. 1–2 API calls.
    fn create_lead(&self, fields: &LeadFields) -> impl Future<Output = Result<Created<LeadRecord>, CrmError>> + Send;

    /// Updates the fields that are `Some`, conditionally with `expected_version`.
    /// Errors: `NotFound`, `Conflict`, `Invalid`. 1–2 API calls.
    fn update_lead(
        &self,
        id: &str,
        expected_version: Option<&str>,
        fields: &LeadFields,
    ) -> impl Future<Output = Result<LeadRecord, CrmError>> + Send;

    /// An opportunity by id or referral id with its solution rows, account and contact, or `None`
    /// when there is no such opportunity. 1 API call (Dataverse: `$expand`; Salesforce: one
    /// composite request).
    fn load_opportunity(
        &self,
        key: OpportunityKey<'_>,
    ) -> impl Future<Output = Result<Option<OpportunityDetails>, CrmError>> + Send;

    /// The opportunity of a referral (as [`CrmPort::load_opportunity`] by referral id) and, when there
    /// is none and a customer is given, the customer a new one would get (as
    /// [`CrmPort::find_customer`]) — where the CRM can answer both in one call (Salesforce: one
    /// composite request). Elsewhere the customer is `None`, left to a `find_customer` when a create
    /// needs it (so that a plan ending in a skip does not pay for it). 1 API call.
    fn load_opportunity_or_customer(
        &self,
        referral: &ReferralId,
        customer: Option<(&AccountFields, Option<&str>)>,
    ) -> impl Future<Output = Result<(Option<OpportunityDetails>, Option<Customer>), CrmError>> + Send {
        let _ = customer;
        async move { Ok((self.load_opportunity(OpportunityKey::Referral(referral)).await?, None)) }
    }

    /// The customer of a new deal: the account matching `account` on the configured match keys (name
    /// and postal code by default; name matched case-insensitively; the first by creation order if
    /// several match) and, when `email` is given, that account's contact with this e-mail
    /// (case-insensitive). 1 API call (Dataverse: the contacts expanded under the account; Salesforce: both queries in
    /// one composite request).
    fn find_customer(
        &self,
        account: &AccountFields,
        email: Option<&str>,
    ) -> impl Future<Output = Result<Customer, CrmError>> + Send;

    /// Creates an opportunity together with its new account, contact and solution rows, idempotent
    /// on the referral id as [`CrmPort::create_opportunity`]. Salesforce: 1 API call (one
    /// all-or-none composite request). Dataverse: 1 API call (deep insert of the solution rows), plus
    /// 1 when an account or contact is new (a deep insert cannot bind the opportunity to a row it
    /// creates inside the contact's body, so the contact and its account go first, in one call).
    /// Errors: `Invalid { field }`, `NotFound` (an account or contact named by id).
    fn create_opportunity_with(
        &self,
        new: &NewOpportunity,
    ) -> impl Future<Output = Result<CreatedOpportunity, CrmError>> + Send;

    /// Creates an account. Errors: `Invalid { field }`. 1 API call.
    fn create_account(&self, fields: &AccountFields) -> impl Future<Output = Result<AccountRecord, CrmError>> + Send;

    /// Creates a contact of the account. Errors: `Invalid { field }`, `NotFound` (account). 1 API call.
    fn create_contact(
        &self,
        account_id: &str,
        fields: &ContactFields,
    ) -> impl Future<Output = Result<ContactRecord, CrmError>> + Send;

    /// The solutions linked to an opportunity. 1 API call.
    fn list_solutions(
        &self,
        opportunity_id: &str,
    ) -> impl Future<Output = Result<Vec<SolutionRecord>, CrmError>> + Send;

    /// Links a solution to an opportunity. Errors: `NotFound` (opportunity), `Invalid`. 1 API call.
    fn add_solution(
        &self,
        opportunity_id: &str,
        solution_id: &str,
        name: Option<&str>,
    ) -> impl Future<Output = Result<SolutionRecord, CrmError>> + Send;

    /// Removes a solution row (by its CRM id). Errors: `NotFound`. 1 API call.
    fn remove_solution(&self, solution_row_id: &str) -> impl Future<Output = Result<(), CrmError>> + Send;

    /// Opportunities (and leads, when configured) with the sync flag set that changed since `cursor`.
    /// `None` starts with a full snapshot. An expired cursor is not an error: the feed restarts with a
    /// full snapshot and says so in `full_resync`. When nothing changed this costs exactly one API call.
    fn changes(&self, cursor: Option<&ChangeCursor>) -> impl Future<Output = Result<ChangeBatch, CrmError>> + Send;
}

/// Shared adapters (one client per process, many handlers) are ports too.
impl<T: CrmPort> CrmPort for std::sync::Arc<T> {
    fn kind(&self) -> CrmKind {
        (**self).kind()
    }
    fn whoami(&self) -> impl Future<Output = Result<CrmIdentity, CrmError>> + Send {
        (**self).whoami()
    }
    fn get_opportunity(&self, id: &str) -> impl Future<Output = Result<OpportunityRecord, CrmError>> + Send {
        (**self).get_opportunity(id)
    }
    fn find_opportunity_by_referral(
        &self,
        referral: &ReferralId,
    ) -> impl Future<Output = Result<Option<OpportunityRecord>, CrmError>> + Send {
        (**self).find_opportunity_by_referral(referral)
    }
    fn create_opportunity(
        &self,
        fields: &OpportunityFields,
    ) -> impl Future<Output = Result<Created<OpportunityRecord>, CrmError>> + Send {
        (**self).create_opportunity(fields)
    }
    fn update_opportunity(
        &self,
        id: &str,
        expected_version: Option<&str>,
        fields: &OpportunityFields,
    ) -> impl Future<Output = Result<OpportunityRecord, CrmError>> + Send {
        (**self).update_opportunity(id, expected_version, fields)
    }
    fn close_opportunity(
        &self,
        id: &str,
        outcome: &CloseOutcome,
    ) -> impl Future<Output = Result<OpportunityRecord, CrmError>> + Send {
        (**self).close_opportunity(id, outcome)
    }
    fn set_on_hold(&self, id: &str, on_hold: bool) -> impl Future<Output = Result<OpportunityRecord, CrmError>> + Send {
        (**self).set_on_hold(id, on_hold)
    }
    fn get_lead(&self, id: &str) -> impl Future<Output = Result<LeadRecord, CrmError>> + Send {
        (**self).get_lead(id)
    }
    fn find_lead_by_referral(
        &self,
        referral: &ReferralId,
    ) -> impl Future<Output = Result<Option<LeadRecord>, CrmError>> + Send {
        (**self).find_lead_by_referral(referral)
    }
    fn create_lead(&self, fields: &LeadFields) -> impl Future<Output = Result<Created<LeadRecord>, CrmError>> + Send {
        (**self).create_lead(fields)
    }
    fn update_lead(
        &self,
        id: &str,
        expected_version: Option<&str>,
        fields: &LeadFields,
    ) -> impl Future<Output = Result<LeadRecord, CrmError>> + Send {
        (**self).update_lead(id, expected_version, fields)
    }
    fn find_customer(
        &self,
        account: &AccountFields,
        email: Option<&str>,
    ) -> impl Future<Output = Result<Customer, CrmError>> + Send {
        (**self).find_customer(account, email)
    }
    fn load_opportunity(
        &self,
        key: OpportunityKey<'_>,
    ) -> impl Future<Output = Result<Option<OpportunityDetails>, CrmError>> + Send {
        (**self).load_opportunity(key)
    }
    fn load_opportunity_or_customer(
        &self,
        referral: &ReferralId,
        customer: Option<(&AccountFields, Option<&str>)>,
    ) -> impl Future<Output = Result<(Option<OpportunityDetails>, Option<Customer>), CrmError>> + Send {
        (**self).load_opportunity_or_customer(referral, customer)
    }
    fn create_opportunity_with(
        &self,
        new: &NewOpportunity,
    ) -> impl Future<Output = Result<CreatedOpportunity, CrmError>> + Send {
        (**self).create_opportunity_with(new)
    }
    fn create_account(&self, fields: &AccountFields) -> impl Future<Output = Result<AccountRecord, CrmError>> + Send {
        (**self).create_account(fields)
    }
    fn create_contact(
        &self,
        account_id: &str,
        fields: &ContactFields,
    ) -> impl Future<Output = Result<ContactRecord, CrmError>> + Send {
        (**self).create_contact(account_id, fields)
    }
    fn list_solutions(
        &self,
        opportunity_id: &str,
    ) -> impl Future<Output = Result<Vec<SolutionRecord>, CrmError>> + Send {
        (**self).list_solutions(opportunity_id)
    }
    fn add_solution(
        &self,
        opportunity_id: &str,
        solution_id: &str,
        name: Option<&str>,
    ) -> impl Future<Output = Result<SolutionRecord, CrmError>> + Send {
        (**self).add_solution(opportunity_id, solution_id, name)
    }
    fn remove_solution(&self, solution_row_id: &str) -> impl Future<Output = Result<(), CrmError>> + Send {
        (**self).remove_solution(solution_row_id)
    }
    fn changes(&self, cursor: Option<&ChangeCursor>) -> impl Future<Output = Result<ChangeBatch, CrmError>> + Send {
        (**self).changes(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_exhaustion_becomes_limit_exceeded_and_is_retryable() {
        let e: CrmError = BudgetError::Exhausted {
            api: crate::budget::Api::Salesforce,
            used: 5,
            cap: 5,
            resets_at: "2026-01-02T00:00:00Z".parse().unwrap(),
        }
        .into();
        assert!(matches!(e, CrmError::LimitExceeded { resets_at: Some(_), .. }));
        assert!(e.is_retryable());
        assert!(!CrmError::Invalid { field: None, message: "x".into() }.is_retryable());
    }

    #[test]
    fn invalid_error_names_the_field() {
        let e = CrmError::Invalid { field: Some("CloseDate".into()), message: "required".into() };
        assert_eq!(e.to_string(), "the CRM rejected the request (field `CloseDate`): required");
    }
}
