//! Registers the stack's receiver URL with the Partner Center Webhooks API for the four referral
//! events and `test-created`, overwriting an existing registration (R2); with the stack's Dynamics
//! push on, also the Dataverse webhook to the receiver's `/crm/dataverse` ([`dataverse`]). Runs as a
//! CloudFormation custom resource at deploy time (answering CloudFormation through the request's
//! pre-signed `ResponseURL`), and can be invoked by hand (`{}`, `{"webhookUrl": "…"}`,
//! `{"dataverseWebhookUrl": "…"}`). `main.rs` wires.

pub mod dataverse;
pub mod handler;

pub use dataverse::{Dataverse, DataverseRegistrar};
pub use handler::{Deps, Registrar, handler};
