//! Registers the stack's receiver URL with the Partner Center Webhooks API for the four referral
//! events and `test-created`, overwriting an existing registration (R2). Runs as a CloudFormation
//! custom resource at deploy time (answering CloudFormation through the request's pre-signed
//! `ResponseURL`), and can be invoked by hand (`{}` or `{"webhookUrl": "…"}`). `main.rs` wires.

pub mod handler;

pub use handler::{Deps, Registrar, handler};
