//! Contract test suites: one per port, run unchanged against every adapter (in-memory fakes,
//! embedded SQLite, DynamoDB/SQS on the local emulator).
//!
//! An adapter's test file instantiates a suite with a macro and a factory:
//! `cosell_testkit::state_contract_tests!(open_store);` where `open_store(clock)` returns a fresh,
//! empty store. Every test asserts the behaviour it is named for.

pub mod queue;
pub mod state;

/// A name no other test uses, for tables and queues on a shared emulator.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}
