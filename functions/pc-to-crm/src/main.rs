//! Wiring only: the shared worker on `pc-events.fifo`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    cosell_lambda::worker::run(|aws| aws.pc_events.clone()).await
}
