//! Wiring only: the shared worker on `crm-changes.fifo`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    cosell_lambda::worker::run(|aws| aws.crm_changes.clone()).await
}
