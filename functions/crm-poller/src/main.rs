//! Wiring only: telemetry → configuration → clients (secrets read once) → deps → run.

use cosell_app::poller::PollerSettings;
use cosell_core::SystemClock;
use crm_poller::{Deps, handler};
use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let cosell_lambda::Init { vars, env, sdk } = cosell_lambda::init().await?;
    let settings = PollerSettings {
        sweep_every: env.parsed_or("COSELL_POLL_SWEEP_EVERY", 5u32, "a whole number of ticks, e.g. 5")?,
        ..PollerSettings::default()
    };
    let connected = cosell_lambda::connect(&vars, &sdk).await?;
    let deps = Deps {
        crm: connected.crm,
        pc: connected.pc,
        state: connected.aws.state,
        pc_queue: connected.aws.pc_events,
        crm_queue: connected.aws.crm_changes,
        clock: SystemClock,
        settings,
    };
    lambda_runtime::run(service_fn(|event| handler(&deps, event))).await
}
