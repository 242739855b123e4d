//! Wiring only: telemetry → configuration → clients → router → run. The receiver needs no secret:
//! deliveries are verified against Microsoft's published signing certificate.

use std::sync::Arc;

use cosell_partner_center::WebhookVerifier;
use cosell_runtime::{Env, PlatformConfig, init_telemetry};
use lambda_http::Error;
use webhook_receiver::{app, verifier_config};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = Env::from_process();
    let platform = PlatformConfig::from_env(&env)?;
    init_telemetry(platform.log_format);
    let sdk = cosell_aws::sdk_config().await;
    let aws = cosell_lambda::connect::aws(&env, &sdk).await?;
    let verifier = Arc::new(WebhookVerifier::new(verifier_config())?);
    lambda_http::run(app(verifier, aws.pc_events, aws.state)).await
}
