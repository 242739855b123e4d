//! The AWS adapters against the ports' contract suites, on the local emulator (moto server).
//! Each test gets its own table or queues. Run through the README's test command, which starts the
//! emulator and sets `AWS_ENDPOINT_URL`.

use std::time::Duration;

use cosell_aws::{DynamoState, SqsQueue, create_fifo_queue, create_table};
use cosell_core::ManualClock;
use cosell_testkit::queue::QueueSpec;

async fn sdk() -> aws_config::SdkConfig {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run the tests with ./infra/test.sh, which starts the local AWS emulator"
    );
    cosell_aws::sdk_config().await
}

async fn open_state(clock: ManualClock) -> DynamoState {
    let client = aws_sdk_dynamodb::Client::new(&sdk().await);
    let table = cosell_testkit::unique_name("state");
    create_table(&client, &table).await.expect("create table");
    DynamoState::new(client, table, clock)
}

/// Opens by name (creating if missing), so that the killed-consumer test's child finds the queue.
async fn open_queue(spec: QueueSpec) -> SqsQueue {
    let client = aws_sdk_sqs::Client::new(&sdk().await);
    let (url, dlq) = create_fifo_queue(&client, &spec.name, spec.max_receives, Duration::from_secs(30))
        .await
        .expect("create queues");
    SqsQueue::new(client, url, dlq)
}

cosell_testkit::state_contract_tests!(open_state);
cosell_testkit::queue_contract_tests!(open_queue);
cosell_testkit::durable_queue_contract_tests!(open_queue);
