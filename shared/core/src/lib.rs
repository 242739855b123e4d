//! The hexagon's centre: domain types and the ports every adapter implements.
//!
//! This crate must never depend on AWS, Lambda or HTTP crates; Cargo enforces the direction because
//! the adapters live in crates of their own that depend on this one.

pub mod budget;
pub mod clock;
pub mod crm;
pub mod ids;
pub mod ports;
pub mod referral;
pub mod sync;
pub mod transient;

#[cfg(any(test, feature = "test-fakes"))]
pub mod fakes;

pub use clock::{Clock, ManualClock, SystemClock};
pub use ids::{CrmRef, IdError, ReferralId};
