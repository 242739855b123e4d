//! CRM → Partner Center (the mirror of pc-to-crm): each message names a CRM record the poller saw change; the syncer reads the opportunity (its account, contact and solutions), plans against the referral and the link, and creates or patches the referral.
//!
//! The failure policy is [`cosell_app::worker`]'s; this crate only adapts it to SQS batches
//! ([`cosell_lambda::sqs`]). `main.rs` wires the clients.

pub mod handler;

pub use handler::{Deps, handler};
