//! Wiring only: telemetry → configuration → clients → router → run. Partner Center deliveries need
//! no secret: they are verified against Microsoft's published signing certificate. With the stack's
//! Dynamics push on, the Dataverse webhook key is read once from the CRM secret.

use std::sync::Arc;

use cosell_partner_center::WebhookVerifier;
use lambda_http::Error;
use webhook_receiver::{DataversePush, app, verifier_config};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let init = cosell_lambda::init().await?;
    let aws = cosell_lambda::connect::aws(&init.env, &init.sdk).await?;
    let verifier = Arc::new(WebhookVerifier::new(verifier_config())?);
    let key = cosell_lambda::push::receiver_key(&init.env, &aws).await;
    let dataverse = DataversePush::from_key(key, aws.crm_changes.clone());
    lambda_http::run(app(verifier, aws.pc_events, aws.state, dataverse)).await
}
