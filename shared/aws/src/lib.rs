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
/// `AWS_ENDPOINT_URL` for the local emulator.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}
