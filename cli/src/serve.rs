//! Long-running commands: `cosell run` and `cosell sim`, plus logging and Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cosell_core::SystemClock;
use cosell_simulators::partner_center as pcsim;
use cosell_simulators::{dynamics, salesforce};
use tokio::net::TcpListener;

use crate::{config, ops, page, runner, stack, with_backend};

/// Logs to stderr, never into a command's output: the long-running commands (`sandbox`, `run`,
/// `sim`) log warnings, the one-shot operations nothing (they say what went wrong themselves); `-v`
/// adds info and the connector's debug logs; `RUST_LOG` overrides both. Colour only on a terminal.
/// No secret or personal data is ever logged by the handlers.
pub fn init_logs(verbose: bool, long_running: bool) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(log_filter(verbose, long_running, std::env::var("RUST_LOG").ok().as_deref()))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// The filter `init_logs` uses.
pub fn log_filter(verbose: bool, long_running: bool, rust_log: Option<&str>) -> tracing_subscriber::EnvFilter {
    let default = match (verbose, long_running) {
        (true, _) => "info,cosell=debug",
        (false, true) => "warn",
        (false, false) => "off",
    };
    rust_log
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default))
}

/// Ctrl-C (SIGINT) or SIGTERM (a service manager stopping us). The handlers are installed when this
/// is called, not when the future is first polled: call it before printing the URLs, so that a
/// Ctrl-C right after them still stops the process cleanly.
pub fn shutdown_signal() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        // Each on its own: a shell's background job has SIGINT ignored, SIGTERM must still work.
        async fn next(s: Option<Signal>) {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        let (int, term) = (signal(SignalKind::interrupt()).ok(), signal(SignalKind::terminate()).ok());
        Box::pin(async move {
            tokio::select! {
                _ = next(int) => {}
                _ = next(term) => {}
            }
        })
    }
    #[cfg(not(unix))]
    Box::pin(async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    })
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SimKind {
    PartnerCenter,
    Dynamics,
    Salesforce,
}

pub async fn sim(which: SimKind, port: u16, ca_file: &std::path::Path) -> anyhow::Result<()> {
    let stop = shutdown_signal();
    let clock = Arc::new(SystemClock);
    match which {
        SimKind::PartnerCenter => {
            let sim = pcsim::Simulator::start(pcsim::Config {
                bind: SocketAddr::from(([127, 0, 0, 1], port)),
                clock,
                ..pcsim::Config::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("the Partner Center simulator did not start on port {port}: {e}"))?;
            // Webhook deliveries are signed with a certificate the simulator's test CA issued: a
            // `cosell run` pointed at it must trust that CA, so it is written where the config can name it.
            if let Some(dir) = ca_file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            }
            std::fs::write(ca_file, sim.ca_certificate_der())
                .with_context(|| format!("cannot write the test CA certificate to {}", ca_file.display()))?;
            let tls = url::Url::parse(sim.tls_base_url())?;
            ops::say(&format!(
                "Partner Center simulator on {} (HTTPS {})\n  token endpoint {}\n  client id {} / secret {}\n  user {} / {}\n  test CA certificate {}\n    for cosell run: [webhook] simulator_ca_file = \"{}\", allowed_cert_hosts = [\"{}\"], allowed_cert_ports = [{}]\nCtrl-C to stop.",
                sim.base_url(),
                sim.tls_base_url(),
                sim.token_url("common"),
                pcsim::DEFAULT_CLIENT_ID,
                pcsim::DEFAULT_CLIENT_SECRET,
                pcsim::DEFAULT_USERNAME,
                pcsim::DEFAULT_PASSWORD,
                ca_file.display(),
                std::path::absolute(ca_file).unwrap_or_else(|_| ca_file.to_path_buf()).display(),
                tls.host_str().unwrap_or("127.0.0.1"),
                tls.port_or_known_default().unwrap_or(443),
            ));
            stop.await;
            sim.shutdown();
        }
        SimKind::Dynamics | SimKind::Salesforce => {
            let handle = if matches!(which, SimKind::Dynamics) {
                let mut c = dynamics::Config::new(clock);
                c.port = port;
                c.seed_demo = true;
                dynamics::Simulator::start(c).await
            } else {
                let mut c = salesforce::Config::new(clock);
                c.port = port;
                c.seed_demo = true;
                salesforce::Simulator::start(c).await
            }
            .with_context(|| format!("the simulator did not start on port {port}: is the port free?"))?;
            // Both start as the vendor ships them: the connector's own install creates the rest.
            let bare = if matches!(which, SimKind::Dynamics) {
                "\nIt holds only the standard schema: run `cosell crm install --config …` against it first (the demo's deals are flagged once the schema is published)."
            } else {
                "\nIt holds only the standard schema: run `cosell crm install --config …` against it first (it creates the connector's fields and the permission set that lets its user see them; the demo's deals are flagged once they exist)."
            };
            ops::say(&format!(
                "{which:?} simulator on {} (client id cosell-connector, secret sim-secret; control API under /_sim/){bare}\nCtrl-C to stop.",
                handle.base_url()
            ));
            stop.await;
            handle.stop().await;
        }
    }
    Ok(())
}

/// `cosell run`: the connector and its status page, until Ctrl-C.
pub async fn run_connector(path: Option<&std::path::Path>) -> anyhow::Result<()> {
    let stop = shutdown_signal();
    let loaded = config::load(path)?;
    let s = &loaded.settings;
    let webhook = TcpListener::bind(&s.webhook.listen)
        .await
        .with_context(|| format!("cannot listen on {} for webhooks: change [webhook] listen", s.webhook.listen))?;
    let status = TcpListener::bind(&s.status_page.listen).await.with_context(|| {
        format!("cannot listen on {} for the status page: change [status_page] listen", s.status_page.listen)
    })?;
    let backend = stack::backend(&loaded).await?;
    with_backend!(backend, |state, pc_queue, crm_queue| {
        let budget = stack::budget(state.clone());
        let parts = runner::Parts {
            pc: Arc::new(stack::partner_center(&loaded, budget.clone())?),
            crm: Arc::new(stack::crm(&loaded, budget)?),
            state: state.clone(),
            pc_queue: pc_queue.clone(),
            crm_queue: crm_queue.clone(),
            verifier: Arc::new(stack::verifier(&loaded)?),
            sync: loaded.sync_config()?,
            poll_interval: Duration::from_secs_f64(s.poller.interval_secs.max(0.2)),
            poller: cosell_app::poller::PollerSettings { sweep_every: s.poller.sweep_every, ..Default::default() },
            dataverse_push: crate::crm_push::dataverse_push(&loaded)?,
            // Salesforce relays its change events to EventBridge only (the Lambda stack); here the
            // poll finds them.
            salesforce_events: false,
            worker_concurrency: s.worker.concurrency,
        };
        let running = runner::start(parts, webhook)?;
        let app = page::router(page::PageState {
            state,
            pc_queue,
            crm_queue,
            metrics: running.metrics.clone(),
            crm: s.crm.kind(),
            crm_label: s.crm.label(),
            links: Vec::new(),
        });
        let status_addr = status.local_addr()?;
        let page = tokio::spawn(async move {
            let _ = axum::serve(status, app).await;
        });
        ops::say(&format!(
            "Co-sell Connector running ({} store, {})\n  webhook receiver http://{}/webhook{}\n  status page      http://{status_addr}/\nCtrl-C to stop.",
            match s.store {
                config::StoreSettings::Embedded { .. } => "embedded",
                config::StoreSettings::Aws { .. } => "DynamoDB/SQS",
            },
            s.crm.label(),
            running.webhook_addr,
            if s.crm_push.is_some() { " (and /crm/dataverse: CRM changes pushed)" } else { "" },
        ));
        stop.await;
        ops::say("stopping…");
        running.shutdown().await;
        page.abort();
        Ok(())
    })
}
