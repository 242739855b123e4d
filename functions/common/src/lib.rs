//! What the five Lambda functions share, and nothing Lambda-free: each function's `main.rs` reads its
//! configuration with [`config`], fetches its credentials once with [`secrets`], builds its clients
//! with [`clients`], and the two queue workers translate SQS batches with [`sqs`].

pub mod clients;
pub mod config;
pub mod connect;
pub mod secrets;
pub mod sqs;
pub mod worker;

pub use config::{InitError, Resources};
pub use connect::{Connected, connect};
