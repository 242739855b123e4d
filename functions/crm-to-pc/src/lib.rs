//! CRM → Partner Center (the mirror of pc-to-crm): each message names a CRM record the poller saw change; the syncer reads the opportunity (its account, contact and solutions), plans against the referral and the link, and creates or patches the referral.
//!
//! The handler is the shared worker ([`cosell_lambda::worker`], over the failure policy of
//! `cosell_app::worker`); `main.rs` picks this function's queue.

pub mod handler;

pub use handler::{Deps, handler};
