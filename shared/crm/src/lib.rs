//! CRM adapters of the Co-sell Connector: the [`cosell_core::crm::CrmPort`] over Dynamics 365
//! (Dataverse Web API v9.2) and Salesforce (REST API).

mod any;
pub mod dynamics;
mod http;

pub use any::AnyCrm;

pub use dynamics::{DynamicsConfig, DynamicsCrm};
pub mod salesforce;
pub mod schema;

pub use salesforce::{SalesforceAuth, SalesforceConfig, SalesforceCrm};

/// Adds the opportunities whose solution rows changed, once each, unless the opportunity itself
/// is already in the batch (both adapters' change feeds).
pub(crate) fn merge_solution_changes(changes: &mut Vec<cosell_core::crm::Change>, rows: Vec<cosell_core::crm::Change>) {
    for c in rows {
        if !changes.iter().any(|x| x.record == c.record) {
            changes.push(c);
        }
    }
}
