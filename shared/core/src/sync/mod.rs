//! The sync engine: mapping configuration, validation, the pure planner and the executor.
//!
//! Pure where it can be: `plan` does no I/O, so every rule is a unit test and the same code serves
//! the Lambda functions, the local runner and `cosell plan`. `Syncer` does the I/O through the ports.

pub mod config;
pub mod country;
mod error;
pub mod execute;
pub mod plan;
pub mod validate;
pub mod view;

pub use config::{ConflictPolicy, SyncConfig, SyncField};
pub use execute::{Loaded, Outcome, SyncError, Syncer, entity_name};
pub use plan::{CrmSide, Plan, Step, SyncInput, plan};
pub use validate::{Problem, ProblemCode};
pub use view::{CrmSnapshot, DealView, Stage};

#[cfg(test)]
mod tests;
