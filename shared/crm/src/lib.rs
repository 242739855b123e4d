//! CRM adapters of the Co-sell Connector: the [`cosell_core::crm::CrmPort`] over Dynamics 365
//! (Dataverse Web API v9.2) and Salesforce (REST API).

mod any;
pub mod dynamics;
mod http;

pub use any::AnyCrm;

pub use dynamics::{DynamicsConfig, DynamicsCrm};
pub mod salesforce;

pub use salesforce::{SalesforceAuth, SalesforceConfig, SalesforceCrm};
