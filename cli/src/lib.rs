//! The `cosell` CLI: the sandbox, the local runner, the simulators alone, and operations.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

pub mod config;
pub mod crm_schema;
pub mod ops;
pub mod page;
pub mod paths;
pub mod report;
pub mod runner;
pub mod sandbox;
pub mod serve;
pub mod stack;

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
    },
    /// Partner Center webhook registration.
    Webhook {
        #[command(subcommand)]
        action: ops::WebhookAction,
        #[command(flatten)]
        config: ConfigArg,
        /// Output JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Why didn't my deal sync? A record's link, both sides, last sync, ✔/✘ and last error.
    Status {
        /// A Partner Center referral id or a CRM record id.
        id: String,
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
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
        #[arg(long)]
        json: bool,
    },
    /// What a sync of this record would write now, without writing.
    Plan {
        id: String,
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
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
        #[arg(long)]
        json: bool,
    },
    /// Dead-letter queues.
    Dlq {
        #[command(subcommand)]
        action: ops::DlqAction,
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, global = true)]
        json: bool,
    },
    /// The connector's own schema in the CRM: install (once, before the first sync), uninstall, export.
    Crm {
        #[command(subcommand)]
        action: crm_schema::CrmAction,
        #[command(flatten)]
        config: ConfigArg,
        /// Output JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Check credentials, roles, webhook registration, CRM fields, currency and clock.
    Doctor {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
    },
}

/// Runs a command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Sandbox { crm, status_port, webhook_port, dir } => {
            let stop = serve::shutdown_signal();
            let dir = dir.unwrap_or_else(paths::sandbox_dir);
            let sb = sandbox::start(sandbox::Options {
                crm,
                webhook_port,
                status_port,
                dir: dir.clone(),
                poll_interval: Duration::from_secs(1),
                worker_concurrency: config::DEFAULT_WORKER_CONCURRENCY,
                demo: true,
            })
            .await?;
            ops::say(&sandbox::banner(&sb, &dir));
            stop.await;
            ops::say("stopping…");
            sb.stop().await;
            Ok(())
        }
        Command::Run(c) => serve::run_connector(c.config.as_deref()).await,
        Command::Sim { which, port } => serve::sim(which, port).await,
        Command::Webhook { action, config, json } => ops::webhook(action, config.config.as_deref(), json).await,
        Command::Status { id, config, json } => ops::status(&id, config.config.as_deref(), json).await,
        Command::Audit { id, config, limit, json } => ops::audit(&id, config.config.as_deref(), limit, json).await,
        Command::Plan { id, config, json } => ops::plan(&id, config.config.as_deref(), json).await,
        Command::Reconcile { since, dry_run, config, json } => {
            ops::reconcile(since.as_deref(), dry_run, config.config.as_deref(), json).await
        }
        Command::Dlq { action, config, json } => ops::dlq(action, config.config.as_deref(), json).await,
        Command::Crm { action, config, json } => crm_schema::crm(action, config.config.as_deref(), json).await,
        Command::Doctor { config, json } => ops::doctor(config.config.as_deref(), json).await,
    }
}
