pub mod crm_common;
pub mod dynamics;
pub mod salesforce;
