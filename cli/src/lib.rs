//! The `cosell` CLI: the sandbox, the local runner, the simulators alone, and operations.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

pub mod config;
pub mod crm_push;
pub mod crm_push_salesforce;
pub mod crm_schema;
pub mod doctor;
pub mod ops;
pub mod page;
pub mod paths;
pub mod report;
pub mod runner;
pub mod sandbox;
pub mod serve;
pub mod stack;

/// The help of every `--json` flag.
const JSON_HELP: &str = "Print the result as JSON (for scripts) instead of text";

#[derive(Debug, Parser)]
#[command(
    name = "cosell",
    version,
    about = "Co-sell Connector: Partner Center co-sell referrals ⇄ Dynamics 365 / Salesforce"
)]
pub struct Cli {
    /// Show details of errors (the cause chain) and debug logs.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// The configuration file (default: $COSELL_CONFIG, ./cosell.toml, then the sandbox's).
    #[arg(short, long, global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Try it: simulators, demo data, the connector and its status page, on loopback.
    Sandbox {
        /// Which CRM the connector syncs with.
        #[arg(long, value_enum, default_value = "dynamics")]
        crm: config::CrmChoice,
        /// Port of the status page (0: any free port).
        #[arg(long, default_value_t = 8090)]
        status_port: u16,
        /// Port of the webhook receiver (0: any free port).
        #[arg(long, default_value_t = 0)]
        webhook_port: u16,
        /// Where the embedded store and the generated config live.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Poll only: do not register the CRM's push (Dataverse webhook) to the receiver.
        #[arg(long)]
        no_push: bool,
        /// Seconds between poll ticks (default: 10 with push, where the poll is the safety net; 1 without).
        #[arg(long)]
        poll_secs: Option<f64>,
    },
    /// Run the connector in one process against the configured endpoints.
    Run(ConfigArg),
    /// Run one simulator alone.
    Sim {
        #[arg(value_enum)]
        which: serve::SimKind,
        /// Port to listen on (127.0.0.1).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Where the Partner Center simulator writes its test CA certificate (DER), for
        /// `[webhook] simulator_ca_file` of a `cosell run` configuration.
        #[arg(long, default_value = ".cosell/sim/pc-simulator-ca.der")]
        ca_file: PathBuf,
    },
    /// Partner Center webhook registration.
    Webhook {
        #[command(subcommand)]
        action: ops::WebhookAction,
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, global = true, help = JSON_HELP)]
        json: bool,
    },
    /// Why didn't my deal sync? A record's link, both sides, last sync, ✔/✘ and last error.
    Status {
        /// A Partner Center referral id or a CRM record id.
        id: String,
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, help = JSON_HELP)]
        json: bool,
    },
    /// A record's audit trail, newest first.
    Audit {
        id: String,
        #[command(flatten)]
        config: ConfigArg,
        /// How many entries.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long, help = JSON_HELP)]
        json: bool,
    },
    /// What a sync of this record would write now, without writing.
    Plan {
        id: String,
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, help = JSON_HELP)]
        json: bool,
    },
    /// Find referrals that changed since a date and differ from their link; enqueue them.
    Reconcile {
        /// Start date (YYYY-MM-DD or RFC 3339); default: 7 days ago.
        #[arg(long)]
        since: Option<String>,
        /// Only list what differs.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, help = JSON_HELP)]
        json: bool,
    },
    /// Dead-letter queues.
    Dlq {
        #[command(subcommand)]
        action: ops::DlqAction,
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, global = true, help = JSON_HELP)]
        json: bool,
    },
    /// The connector's own schema in the CRM: install (once, before the first sync), uninstall, export.
    Crm {
        #[command(subcommand)]
        action: crm_schema::CrmAction,
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, global = true, help = JSON_HELP)]
        json: bool,
    },
    /// Check credentials, roles, webhook registration, CRM fields, currency and clock.
    Doctor {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, help = JSON_HELP)]
        json: bool,
    },
}

impl Command {
    /// Whether the command keeps running (and so logs what goes wrong while it runs) rather than
    /// answering once (and saying what went wrong itself).
    pub fn is_long_running(&self) -> bool {
        matches!(self, Command::Sandbox { .. } | Command::Run(_) | Command::Sim { .. })
    }
}

/// Runs a command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Sandbox { crm, status_port, webhook_port, dir, no_push, poll_secs } => {
            let stop = serve::shutdown_signal();
            let dir = dir.unwrap_or_else(paths::sandbox_dir);
            let push = if no_push { sandbox::CrmPush::Off } else { sandbox::CrmPush::On };
            let default_poll = if push == sandbox::CrmPush::On { 10.0 } else { 1.0 };
            let poll_interval = Duration::from_secs_f64(poll_secs.unwrap_or(default_poll).max(0.2));
            let sb = sandbox::start_with(
                sandbox::Options {
                    crm,
                    webhook_port,
                    status_port,
                    dir: dir.clone(),
                    poll_interval,
                    worker_concurrency: config::DEFAULT_WORKER_CONCURRENCY,
                    demo: true,
                },
                push,
            )
            .await?;
            ops::say(&sandbox::banner(&sb, &dir));
            stop.await;
            ops::say("stopping…");
            sb.stop().await;
            Ok(())
        }
        Command::Run(c) => serve::run_connector(c.config.as_deref()).await,
        Command::Sim { which, port, ca_file } => serve::sim(which, port, &ca_file).await,
        Command::Webhook { action, config, json } => ops::webhook(action, config.config.as_deref(), json).await,
        Command::Status { id, config, json } => ops::status(&id, config.config.as_deref(), json).await,
        Command::Audit { id, config, limit, json } => ops::audit(&id, config.config.as_deref(), limit, json).await,
        Command::Plan { id, config, json } => ops::plan(&id, config.config.as_deref(), json).await,
        Command::Reconcile { since, dry_run, config, json } => {
            ops::reconcile(since.as_deref(), dry_run, config.config.as_deref(), json).await
        }
        Command::Dlq { action, config, json } => ops::dlq(action, config.config.as_deref(), json).await,
        Command::Crm { action, config, json } => crm_schema::crm(action, config.config.as_deref(), json).await,
        Command::Doctor { config, json } => doctor::doctor(config.config.as_deref(), json).await,
    }
}
