//! Wiring only: telemetry → configuration → Partner Center client (secret read once) → deps → run.

use cosell_runtime::{Env, PlatformConfig, init_telemetry};
use lambda_runtime::{Error, service_fn};
use webhook_registration::{Deps, handler};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = Env::from_process();
    let platform = PlatformConfig::from_env(&env)?;
    init_telemetry(platform.log_format);
    let sdk = cosell_aws::sdk_config().await;
    let (_aws, pc) = cosell_lambda::connect::partner_center(&env, &sdk).await?;
    let deps = Deps {
        registrar: pc,
        http: reqwest::Client::builder().timeout(std::time::Duration::from_secs(20)).build()?,
        default_webhook_url: env.optional("COSELL_WEBHOOK_URL").map(str::to_owned),
    };
    lambda_runtime::run(service_fn(|event| handler(&deps, event))).await
}
