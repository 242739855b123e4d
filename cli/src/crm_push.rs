//! `cosell crm push enable|disable|show`: the CRM pushes its changes to the connector instead of
//! waiting for the poll. For Dynamics 365 this registers the Dataverse webhook (a
//! `serviceendpoint` and its asynchronous steps, `cosell_crm::dynamics::push`) to the receiver's
//! `POST /crm/dataverse` with a generated shared secret; the poll stays as the safety net.
//! Salesforce (Change Data Capture through Event Relay to EventBridge) is set up by
//! `crm_push_salesforce`, to which `push` dispatches.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use cosell_app::push::DATAVERSE_PATH;
use cosell_crm::AnyCrm;
use cosell_crm::dynamics::push::PushRegistration;
use secrecy::SecretString;
use serde_json::json;

use crate::config::{self, CrmChoice, Loaded};
use crate::crm_push_salesforce::{EnableArgs, SalesforcePush};
use crate::ops::{print_json, say};
use crate::{runner, stack};

#[derive(Debug, Clone, Subcommand)]
pub enum PushAction {
    /// Dynamics 365: register the webhook to the receiver (generates the shared secret when its file
    /// is missing). Salesforce: select the change events and create the Event Relay to the stack's
    /// partner event bus, then print the AWS-side steps left.
    Enable {
        /// Salesforce: the AWS account (12 digits) the stack runs in (for the relay's named credential).
        #[arg(long)]
        aws_account: Option<String>,
        /// Salesforce: the AWS region the stack runs in.
        #[arg(long)]
        aws_region: Option<String>,
        /// Salesforce: start the relay (once the stack is deployed with its `SalesforceEventSource`).
        #[arg(long)]
        start: bool,
    },
    /// Remove the webhook registration (the poll alone finds changes again).
    Disable,
    /// What the CRM has registered.
    Show,
}

/// The URL the CRM posts to: `[crm_push] public_url`, else `[webhook] public_url` with the path
/// `/crm/dataverse`.
pub fn endpoint_url(loaded: &Loaded) -> anyhow::Result<String> {
    let s = &loaded.settings;
    if let Some(url) = s.crm_push.as_ref().and_then(|p| p.public_url.clone()) {
        return Ok(url);
    }
    let base = s.webhook.public_url.as_deref().context(
        "set [crm_push] public_url (or [webhook] public_url) to the HTTPS URL the CRM can reach (your tunnel or reverse proxy)",
    )?;
    let url = url::Url::parse(base).with_context(|| format!("[webhook] public_url {base:?} is not a URL"))?;
    Ok(url.join(DATAVERSE_PATH)?.to_string())
}

/// The webhook key: read from its source; a `file` source that does not exist yet gets a new
/// generated key (only when `generate`, i.e. `cosell crm push enable`).
pub fn secret(loaded: &Loaded, generate: bool) -> anyhow::Result<SecretString> {
    let push = loaded.settings.crm_push.as_ref().context(
        "no [crm_push] section: add\n  [crm_push]\n  secret = { file = \"secrets/crm-push-key\" }\nthen run `cosell crm push enable`",
    )?;
    if let Some(file) = &push.secret.file {
        let path = loaded.resolve(file);
        if generate && !path.exists() {
            write_secret(&path, &cosell_app::push::generate_secret())?;
            say(&format!("Generated the webhook key into {}", path.display()));
        }
    }
    push.secret.load("CRM push webhook key", &loaded.base)
}

/// Writes a generated key readable by its owner only.
pub fn write_secret(path: &Path, secret: &SecretString) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).with_context(|| format!("cannot create the key file {}", path.display()))?;
    std::io::Write::write_all(&mut f, secret.expose_secret().as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// What the runner needs to serve `POST /crm/dataverse`, when push is configured for Dynamics.
pub fn dataverse_push(loaded: &Loaded) -> anyhow::Result<Option<runner::DataversePush>> {
    if loaded.settings.crm != CrmChoice::Dynamics || loaded.settings.crm_push.is_none() {
        return Ok(None);
    }
    let secret = secret(loaded, false).context("[crm_push]: run `cosell crm push enable` first")?;
    Ok(Some(runner::DataversePush { secret: Arc::new(secret), app_user_id: None }))
}

fn describe(reg: &PushRegistration) -> String {
    let mut out = format!(
        "Dataverse webhook → {}\n  key set: {}\n",
        reg.url.as_deref().unwrap_or("(no URL)"),
        if reg.key_set { "yes" } else { "NO: run `cosell crm push enable`" }
    );
    for s in &reg.steps {
        out.push_str(&format!(
            "  {} {}{}\n",
            if s.enabled { "✔" } else { "✘ disabled" },
            s.name,
            s.filtering_attributes.as_deref().map(|a| format!(" (on changes of {a})")).unwrap_or_default()
        ));
    }
    out
}

/// Runs `cosell crm push …` (a `cosell crm` subcommand, beside `install`).
pub async fn push(action: PushAction, path: Option<&Path>, as_json: bool) -> anyhow::Result<()> {
    let loaded = config::load(path)?;
    let backend = stack::backend(&loaded).await?;
    crate::with_backend!(backend, |state, _pcq, _crmq| {
        let crm = stack::crm(&loaded, stack::budget(state))?;
        let dataverse = match &crm {
            AnyCrm::Dynamics(dataverse) => dataverse,
            AnyCrm::Salesforce(sf) => {
                let action = match action {
                    PushAction::Enable { aws_account, aws_region, start } => {
                        SalesforcePush::Enable(EnableArgs { aws_account, aws_region, start })
                    }
                    PushAction::Disable => SalesforcePush::Disable,
                    PushAction::Show => SalesforcePush::Show,
                };
                say(crate::crm_push_salesforce::run(sf, action, as_json).await?.trim_end());
                return Ok(());
            }
        };
        match action {
            PushAction::Enable { aws_account: Some(_), .. } | PushAction::Enable { aws_region: Some(_), .. } => {
                bail!(
                    "--aws-account and --aws-region are for Salesforce's Event Relay; Dynamics 365 pushes to [crm_push] public_url"
                )
            }
            PushAction::Enable { .. } => {
                let url = endpoint_url(&loaded)?;
                let key = secret(&loaded, true)?;
                let reg = dataverse
                    .register_webhook(&url, &key)
                    .await
                    .map_err(|e| anyhow::anyhow!("registering the Dataverse webhook: {e}"))?;
                if as_json {
                    print_json(&serde_json::to_value(&reg)?);
                } else {
                    say(&format!(
                        "{}Changes now arrive by push; the poll ([poller] interval_secs) stays as the safety net.",
                        describe(&reg)
                    ));
                }
            }
            PushAction::Disable => {
                let removed = dataverse
                    .unregister_webhook()
                    .await
                    .map_err(|e| anyhow::anyhow!("removing the Dataverse webhook: {e}"))?;
                if as_json {
                    print_json(&json!({ "removed": removed }));
                } else if removed {
                    say("Dataverse webhook removed: the poll alone finds CRM changes now.");
                } else {
                    say("No Dataverse webhook was registered.");
                }
            }
            PushAction::Show => {
                let reg = dataverse
                    .webhook()
                    .await
                    .map_err(|e| anyhow::anyhow!("reading the Dataverse webhook registration: {e}"))?;
                match (as_json, reg) {
                    (true, reg) => print_json(&serde_json::to_value(&reg)?),
                    (false, None) => say("No Dataverse webhook is registered: run `cosell crm push enable`."),
                    (false, Some(reg)) => say(&describe(&reg)),
                }
            }
        }
        Ok(())
    })
}
