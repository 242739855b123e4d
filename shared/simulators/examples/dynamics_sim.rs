//! Runs the Dataverse simulator alone: `cargo run -p cosell-simulators --example dynamics_sim -- --port 8081`.

use std::sync::Arc;

use cosell_core::SystemClock;
use cosell_simulators::crm_common::port_from_args;
use cosell_simulators::dynamics::{Config, Simulator};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::new(Arc::new(SystemClock));
    config.port = port_from_args()?;
    config.seed_demo = true;
    let sim = Simulator::start(config).await?;
    eprintln!("Dataverse simulator on {} (client id cosell-connector, secret sim-secret)", sim.base_url());
    sim.wait().await;
    Ok(())
}
