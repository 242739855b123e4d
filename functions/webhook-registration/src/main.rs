//! Wiring only: telemetry → configuration → Partner Center client (secret read once) → deps → run.

use lambda_runtime::{Error, service_fn};
use webhook_registration::{Deps, handler};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let cosell_lambda::Init { env, sdk, .. } = cosell_lambda::init().await?;
    // An unusable secret is reported to CloudFormation by the handler rather than failing init,
    // which would leave the stack waiting for an answer for an hour.
    let registrar = cosell_lambda::connect::partner_center(&env, &sdk).await.map(|(_, pc)| pc).map_err(|e| {
        tracing::error!(error = %e, "Partner Center client not configured");
        e.to_string()
    });
    let deps = Deps {
        registrar,
        http: reqwest::Client::builder().timeout(std::time::Duration::from_secs(20)).build()?,
        default_webhook_url: env.optional("COSELL_WEBHOOK_URL").map(str::to_owned),
    };
    lambda_runtime::run(service_fn(|event| handler(&deps, event))).await
}
