//! Partner Center → CRM: each message names a referral that changed (webhook or reconciliation sweep); the syncer fetches the referral and its engagement, plans against the CRM record and the stored link, and applies the plan.
//!
//! The handler is the shared worker ([`cosell_lambda::worker`], over the failure policy of
//! `cosell_app::worker`); `main.rs` picks this function's queue.

pub mod handler;

pub use handler::{Deps, handler};
