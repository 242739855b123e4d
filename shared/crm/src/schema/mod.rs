//! The connector's own CRM schema: what it needs in the CRM, and the installers that create it.

pub mod salesforce;
