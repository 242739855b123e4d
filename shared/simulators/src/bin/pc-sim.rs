//! Runs the Partner Center simulator alone: `pc-sim [--port N] [--tls-port N]`.

use std::net::SocketAddr;
use std::sync::Arc;

use cosell_core::SystemClock;
use cosell_simulators::partner_center::{Config, DEFAULT_CLIENT_ID, DEFAULT_PASSWORD, DEFAULT_USERNAME, Simulator};

fn port_arg(args: &[String], name: &str) -> Result<u16, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(0),
        Some(i) => args
            .get(i + 1)
            .ok_or_else(|| format!("{name} needs a value"))?
            .parse()
            .map_err(|_| format!("{name} must be a port number")),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        eprintln!("usage: pc-sim [--port N] [--tls-port N]");
        return Ok(());
    }
    let port = port_arg(&args, "--port")?;
    let tls_port = port_arg(&args, "--tls-port")?;
    let config = Config {
        bind: SocketAddr::from(([127, 0, 0, 1], port)),
        tls_bind: SocketAddr::from(([127, 0, 0, 1], tls_port)),
        clock: Arc::new(SystemClock),
        ..Config::default()
    };
    let sim = Simulator::start(config).await?;
    eprintln!("Partner Center simulator");
    eprintln!("  Referrals API   {}/v1.0/engagements/referrals", sim.base_url());
    eprintln!("  Webhooks API    {}/webhooks/v1/registration", sim.base_url());
    eprintln!("  token endpoint  {}", sim.token_url("common"));
    eprintln!("  certificate     {}", sim.cert_url());
    eprintln!("  control API     {}/_sim/", sim.base_url());
    eprintln!("  client id {DEFAULT_CLIENT_ID}, user {DEFAULT_USERNAME} / {DEFAULT_PASSWORD}");
    eprintln!("test CA (trust it to fetch the certificate):\n{}", sim.ca_certificate_pem());
    tokio::signal::ctrl_c().await?;
    sim.shutdown();
    Ok(())
}
