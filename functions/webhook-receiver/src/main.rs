//! Wiring only: telemetry → configuration → clients → router → run. The receiver needs no secret:
//! deliveries are verified against Microsoft's published signing certificate.

use std::sync::Arc;

use cosell_partner_center::WebhookVerifier;
use lambda_http::Error;
use webhook_receiver::{app, verifier_config};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let init = cosell_lambda::init().await?;
    let aws = cosell_lambda::connect::aws(&init.env, &init.sdk).await?;
    let verifier = Arc::new(WebhookVerifier::new(verifier_config())?);
    lambda_http::run(app(verifier, aws.pc_events, aws.state)).await
}
