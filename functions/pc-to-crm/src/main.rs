//! Wiring only: telemetry → configuration → clients (secrets read once) → deps → run.

use cosell_runtime::{Env, PlatformConfig, init_telemetry};
use lambda_runtime::{Error, service_fn};
use pc_to_crm::{Deps, handler};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let platform = PlatformConfig::from_env(&Env::from_pairs(vars.iter().cloned()))?;
    init_telemetry(platform.log_format);
    let sdk = cosell_aws::sdk_config().await;
    let connected = cosell_lambda::connect(&vars, &sdk).await?;
    let deps = Deps { syncer: connected.syncer(), queue: connected.aws.pc_events.clone() };
    lambda_runtime::run(service_fn(|event| handler(&deps, event))).await
}
