//! Partner Center → CRM: each message names a referral that changed (webhook or reconciliation sweep); the syncer fetches the referral and its engagement, plans against the CRM record and the stored link, and applies the plan.
//!
//! The failure policy is [`cosell_app::worker`]'s; this crate only adapts it to SQS batches
//! ([`cosell_lambda::sqs`]). `main.rs` wires the clients.

pub mod handler;

pub use handler::{Deps, handler};
