//! One CRM adapter chosen at start-up by configuration, for binaries that serve either CRM.

use cosell_core::budget::ApiBudget;
use cosell_core::crm::{
    AccountFields, AccountRecord, ChangeBatch, ChangeCursor, CloseOutcome, ContactFields, ContactRecord, Created,
    CreatedOpportunity, CrmError, CrmIdentity, CrmKind, CrmPort, Customer, LeadFields, LeadRecord, NewOpportunity,
    OpportunityDetails, OpportunityFields, OpportunityKey, OpportunityRecord, SolutionRecord,
};
use cosell_core::ids::ReferralId;

use crate::schema::{ConnectorSchema, SchemaError, SchemaPlan};
use crate::{DynamicsCrm, SalesforceCrm};

/// Dynamics 365 or Salesforce.
#[derive(Debug)]
pub enum AnyCrm<B> {
    Dynamics(DynamicsCrm<B>),
    Salesforce(SalesforceCrm<B>),
}

macro_rules! dispatch {
    ($self:ident, $c:ident => $call:expr) => {
        match $self {
            AnyCrm::Dynamics($c) => $call.await,
            AnyCrm::Salesforce($c) => $call.await,
        }
    };
}

impl<B: ApiBudget> CrmPort for AnyCrm<B> {
    fn kind(&self) -> CrmKind {
        match self {
            AnyCrm::Dynamics(c) => c.kind(),
            AnyCrm::Salesforce(c) => c.kind(),
        }
    }

    async fn whoami(&self) -> Result<CrmIdentity, CrmError> {
        dispatch!(self, c => c.whoami())
    }

    async fn get_opportunity(&self, id: &str) -> Result<OpportunityRecord, CrmError> {
        dispatch!(self, c => c.get_opportunity(id))
    }

    async fn find_opportunity_by_referral(&self, referral: &ReferralId) -> Result<Option<OpportunityRecord>, CrmError> {
        dispatch!(self, c => c.find_opportunity_by_referral(referral))
    }

    async fn create_opportunity(&self, fields: &OpportunityFields) -> Result<Created<OpportunityRecord>, CrmError> {
        dispatch!(self, c => c.create_opportunity(fields))
    }

    async fn update_opportunity(
        &self,
        id: &str,
        expected_version: Option<&str>,
        fields: &OpportunityFields,
    ) -> Result<OpportunityRecord, CrmError> {
        dispatch!(self, c => c.update_opportunity(id, expected_version, fields))
    }

    async fn close_opportunity(&self, id: &str, outcome: &CloseOutcome) -> Result<OpportunityRecord, CrmError> {
        dispatch!(self, c => c.close_opportunity(id, outcome))
    }

    async fn set_on_hold(&self, id: &str, on_hold: bool) -> Result<OpportunityRecord, CrmError> {
        dispatch!(self, c => c.set_on_hold(id, on_hold))
    }

    async fn get_lead(&self, id: &str) -> Result<LeadRecord, CrmError> {
        dispatch!(self, c => c.get_lead(id))
    }

    async fn find_lead_by_referral(&self, referral: &ReferralId) -> Result<Option<LeadRecord>, CrmError> {
        dispatch!(self, c => c.find_lead_by_referral(referral))
    }

    async fn create_lead(&self, fields: &LeadFields) -> Result<Created<LeadRecord>, CrmError> {
        dispatch!(self, c => c.create_lead(fields))
    }

    async fn update_lead(
        &self,
        id: &str,
        expected_version: Option<&str>,
        fields: &LeadFields,
    ) -> Result<LeadRecord, CrmError> {
        dispatch!(self, c => c.update_lead(id, expected_version, fields))
    }

    async fn load_opportunity(&self, key: OpportunityKey<'_>) -> Result<Option<OpportunityDetails>, CrmError> {
        dispatch!(self, c => c.load_opportunity(key))
    }

    async fn load_opportunity_or_customer(
        &self,
        referral: &ReferralId,
        customer: Option<(&AccountFields, Option<&str>)>,
    ) -> Result<(Option<OpportunityDetails>, Option<Customer>), CrmError> {
        dispatch!(self, c => c.load_opportunity_or_customer(referral, customer))
    }

    async fn find_customer(&self, account: &AccountFields, email: Option<&str>) -> Result<Customer, CrmError> {
        dispatch!(self, c => c.find_customer(account, email))
    }

    async fn create_opportunity_with(&self, new: &NewOpportunity) -> Result<CreatedOpportunity, CrmError> {
        dispatch!(self, c => c.create_opportunity_with(new))
    }

    async fn create_account(&self, fields: &AccountFields) -> Result<AccountRecord, CrmError> {
        dispatch!(self, c => c.create_account(fields))
    }

    async fn create_contact(&self, account_id: &str, fields: &ContactFields) -> Result<ContactRecord, CrmError> {
        dispatch!(self, c => c.create_contact(account_id, fields))
    }

    async fn list_solutions(&self, opportunity_id: &str) -> Result<Vec<SolutionRecord>, CrmError> {
        dispatch!(self, c => c.list_solutions(opportunity_id))
    }

    async fn add_solution(
        &self,
        opportunity_id: &str,
        solution_id: &str,
        name: Option<&str>,
    ) -> Result<SolutionRecord, CrmError> {
        dispatch!(self, c => c.add_solution(opportunity_id, solution_id, name))
    }

    async fn remove_solution(&self, solution_row_id: &str) -> Result<(), CrmError> {
        dispatch!(self, c => c.remove_solution(solution_row_id))
    }

    async fn changes(&self, cursor: Option<&ChangeCursor>) -> Result<ChangeBatch, CrmError> {
        dispatch!(self, c => c.changes(cursor))
    }
}

/// The connector's own schema in the CRM (`cosell crm install|uninstall`, doctor's field check):
/// `schema::dynamics` and `schema::salesforce` do the work.
impl<B: ApiBudget> AnyCrm<B> {
    /// The schema the configured field map needs.
    pub fn connector_schema(&self) -> ConnectorSchema {
        match self {
            AnyCrm::Dynamics(c) => ConnectorSchema::from_field_map(c.fields()),
            AnyCrm::Salesforce(c) => ConnectorSchema::from_field_map(c.fields()),
        }
    }

    /// What install would do, reading the CRM's metadata only.
    pub async fn plan_schema(&self) -> Result<SchemaPlan, SchemaError> {
        dispatch!(self, c => c.plan_schema())
    }

    /// Installs what is missing; fails, writing nothing, on a conflict or a missing privilege.
    pub async fn apply_schema(&self) -> Result<SchemaPlan, SchemaError> {
        dispatch!(self, c => c.apply_schema())
    }

    /// What uninstall would remove (the connector's own objects only).
    pub async fn plan_uninstall(&self) -> Result<SchemaPlan, SchemaError> {
        dispatch!(self, c => c.plan_uninstall())
    }

    /// Removes the connector's own objects.
    pub async fn uninstall_schema(&self) -> Result<SchemaPlan, SchemaError> {
        dispatch!(self, c => c.uninstall_schema())
    }
}
