//! AWS adapters of the ports: the DynamoDB single-table state store and SQS FIFO queues.
//!
//! Both take an SDK client built once by the binary (`aws_config::load_defaults`), so that Lambda
//! reuses connections across invocations and tests point them at the local emulator through
//! `AWS_ENDPOINT_URL`.

mod dynamodb;
mod sqs;

pub use dynamodb::{DynamoState, create_table};
pub use sqs::{SqsQueue, create_fifo_queue};

/// Loads the SDK configuration the usual way (environment, profile, IMDS/ECS), honouring
/// `AWS_ENDPOINT_URL` for the local emulator, with [`retry_config`].
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).retry_config(retry_config()).load().await
}

/// AWS's standard retry mode with 5 attempts instead of its default 3. A sync makes a dozen or more
/// DynamoDB calls (every API call is counted in the budget table): with 3 attempts, a few percent of
/// failed requests already fail a large share of syncs, each costing a queue round trip and a
/// receive towards the dead-letter limit (measured by the 30 % chaos test in `tests/`).
pub fn retry_config() -> aws_config::retry::RetryConfig {
    aws_config::retry::RetryConfig::standard().with_max_attempts(5)
}
