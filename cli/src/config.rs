//! `cosell.toml`: where the connector finds Partner Center, the CRM, its store and its ports.
//! Secrets are never written in the file by people: each secret is read from an environment
//! variable (`*_env`) or a file (`*_file`); an inline value is accepted only for the simulators'
//! published test credentials, which the sandbox writes.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cosell_core::crm::CrmKind;
use cosell_core::sync::SyncConfig;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::paths::{CONFIG_FILE, sandbox_dir};

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `dynamics` or `salesforce`: the connector serves one CRM at a time.
    pub crm: CrmChoice,
    #[serde(default)]
    pub store: StoreSettings,
    pub partner_center: PartnerCenterSettings,
    #[serde(default)]
    pub dynamics: Option<DynamicsSettings>,
    #[serde(default)]
    pub salesforce: Option<SalesforceSettings>,
    #[serde(default)]
    pub webhook: WebhookSettings,
    #[serde(default)]
    pub status_page: StatusPageSettings,
    #[serde(default)]
    pub poller: PollerConfig,
    /// CRM changes pushed to the receiver (the Dataverse webhook, `POST /crm/dataverse` on
    /// `[webhook] listen`); `cosell crm push enable` registers it. Without it the poll alone finds
    /// CRM changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crm_push: Option<CrmPushSettings>,
    #[serde(default)]
    pub worker: WorkerConfig,
    /// The sync engine's settings (`SyncConfig`): field map, currencies, country storage, conflicts.
    /// Defaults to the chosen CRM's defaults.
    #[serde(default)]
    pub sync: Option<toml::Table>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum CrmChoice {
    Dynamics,
    Salesforce,
}

impl CrmChoice {
    pub fn kind(self) -> CrmKind {
        match self {
            CrmChoice::Dynamics => CrmKind::Dynamics,
            CrmChoice::Salesforce => CrmKind::Salesforce,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            CrmChoice::Dynamics => "Dynamics 365",
            CrmChoice::Salesforce => "Salesforce",
        }
    }
}

/// A secret: from an environment variable, a file, or (simulators only) inline.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Only for the simulators' published test credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl SecretSource {
    pub fn inline(value: &str) -> Self {
        Self { value: Some(value.to_owned()), ..Self::default() }
    }

    /// Reads the secret; `what` names it in the error (never its value).
    pub fn load(&self, what: &str, base: &Path) -> anyhow::Result<SecretString> {
        if let Some(var) = &self.env {
            return match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(SecretString::from(v.trim().to_owned())),
                _ => bail!(
                    "{what}: the environment variable {var} is not set. Export it (e.g. `export {var}=…`) or use `file = \"…\"` in the config."
                ),
            };
        }
        if let Some(file) = &self.file {
            let path = if file.is_relative() { base.join(file) } else { file.clone() };
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!("{what}: cannot read the secret file {}; check the path and its permissions", path.display())
            })?;
            return Ok(SecretString::from(text.trim().to_owned()));
        }
        if let Some(v) = &self.value {
            return Ok(SecretString::from(v.clone()));
        }
        bail!("{what}: no secret configured. Add `env = \"VARIABLE\"` or `file = \"path\"` to the config.")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum StoreSettings {
    /// SQLite file and durable queues in the same file.
    Embedded {
        #[serde(default = "default_db")]
        path: PathBuf,
    },
    /// DynamoDB table and SQS FIFO queues (the Lambda deployment's), e.g. to operate on production.
    Aws {
        table: String,
        pc_events_queue_url: String,
        pc_events_dlq_url: String,
        crm_changes_queue_url: String,
        crm_changes_dlq_url: String,
    },
}

fn default_db() -> PathBuf {
    PathBuf::from("cosell.db")
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings::Embedded { path: default_db() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerCenterSettings {
    /// Base of the Referrals API (default Microsoft's).
    #[serde(default = "default_referrals")]
    pub referrals_base_url: String,
    /// Base of the Webhooks API (default Microsoft's).
    #[serde(default = "default_webhooks")]
    pub webhooks_base_url: String,
    /// Entra ID token endpoint (v1), e.g. `https://login.microsoftonline.com/<tenant>/oauth2/token`.
    pub token_url: String,
    pub client_id: String,
    pub client_secret: SecretSource,
    /// The Referrals admin the connector signs in as (password grant) …
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<SecretSource>,
    /// … or a refresh token obtained once interactively.
    #[serde(default)]
    pub refresh_token: Option<SecretSource>,
}

fn default_referrals() -> String {
    "https://api.partner.microsoft.com".into()
}
fn default_webhooks() -> String {
    "https://api.partnercenter.microsoft.com".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicsSettings {
    /// The environment URL, e.g. `https://contoso.crm4.dynamics.com`.
    pub org_url: String,
    /// Entra ID v2 token endpoint, e.g. `https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token`.
    pub token_url: String,
    pub client_id: String,
    pub client_secret: SecretSource,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesforceSettings {
    /// The org's My Domain URL (client credentials flow).
    pub login_url: String,
    pub client_id: String,
    pub client_secret: SecretSource,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Where the receiver listens.
    #[serde(default = "default_webhook_listen")]
    pub listen: String,
    /// The URL Partner Center posts to (your tunnel or reverse proxy); `webhook register` registers it.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Certificate hosts/ports and extra trust roots, for the Partner Center simulator only.
    #[serde(default)]
    pub simulator_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub allowed_cert_hosts: Vec<String>,
    #[serde(default)]
    pub allowed_cert_ports: Vec<u16>,
}

fn default_webhook_listen() -> String {
    "127.0.0.1:8080".into()
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            listen: default_webhook_listen(),
            public_url: None,
            simulator_ca_file: None,
            allowed_cert_hosts: Vec::new(),
            allowed_cert_ports: Vec::new(),
        }
    }
}

/// `[crm_push]`: the shared secret the CRM's webhook sends, and where it posts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrmPushSettings {
    /// The webhook key (header `x-cosell-webhook-key`). With `file = "…"`, `cosell crm push enable`
    /// generates it into that file (mode 0600) when the file does not exist yet.
    pub secret: SecretSource,
    /// The URL the CRM posts to; default: `[webhook] public_url` with the path `/crm/dataverse`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusPageSettings {
    #[serde(default = "default_status_listen")]
    pub listen: String,
}

fn default_status_listen() -> String {
    "127.0.0.1:8090".into()
}

impl Default for StatusPageSettings {
    fn default() -> Self {
        Self { listen: default_status_listen() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollerConfig {
    /// Seconds between two ticks (CRM change feed).
    #[serde(default = "default_interval")]
    pub interval_secs: f64,
    /// Run the Partner Center reconciliation sweep every this many ticks.
    #[serde(default = "default_sweep_every")]
    pub sweep_every: u32,
}

fn default_interval() -> f64 {
    60.0
}
fn default_sweep_every() -> u32 {
    5
}

impl Default for PollerConfig {
    fn default() -> Self {
        Self { interval_secs: default_interval(), sweep_every: default_sweep_every() }
    }
}

/// The queue workers of `cosell run` and `cosell sandbox`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Messages handled at the same time per queue, each of a different group (referral or CRM
    /// record); one group's messages stay strictly in order. The Lambda functions get the same from
    /// SQS FIFO batches and their reserved concurrency.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

/// Chosen from BENCHMARKS.md §4 (the 1,000-record bursts on two cores).
pub const DEFAULT_WORKER_CONCURRENCY: usize = 16;

fn default_concurrency() -> usize {
    DEFAULT_WORKER_CONCURRENCY
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self { concurrency: default_concurrency() }
    }
}

/// A loaded configuration and the directory relative paths are resolved against.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub settings: Settings,
    pub base: PathBuf,
    pub path: PathBuf,
}

impl Loaded {
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_relative() { self.base.join(p) } else { p.to_path_buf() }
    }

    pub fn sync_config(&self) -> anyhow::Result<SyncConfig> {
        let kind = self.settings.crm.kind();
        match &self.settings.sync {
            None => Ok(SyncConfig::defaults(kind)),
            Some(table) => {
                let text = toml::to_string(table).context("re-reading the [sync] table")?;
                let config = SyncConfig::from_toml(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
                if config.fields.crm != kind {
                    bail!(
                        "[sync] fields are for a different CRM than `crm = \"{}\"`: make them agree",
                        serde_json::to_value(self.settings.crm)?.as_str().unwrap_or_default()
                    );
                }
                Ok(config)
            }
        }
    }
}

/// Where operations look for the config when `--config` is not given: `$COSELL_CONFIG`,
/// `./cosell.toml`, then the sandbox's (so that `cosell status <id>` works next to a sandbox).
pub fn default_paths() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(p) = std::env::var("COSELL_CONFIG") {
        v.push(PathBuf::from(p));
    }
    v.push(PathBuf::from(CONFIG_FILE));
    v.push(sandbox_dir().join(CONFIG_FILE));
    v
}

pub fn load(explicit: Option<&Path>) -> anyhow::Result<Loaded> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => default_paths().into_iter().find(|p| p.exists()).ok_or_else(|| {
            anyhow::anyhow!(
                "no configuration found (looked for $COSELL_CONFIG, ./cosell.toml and {}). \
                 Pass --config <file> (examples/cosell.dynamics.toml is a starting point), \
                 or start `cosell sandbox` first",
                sandbox_dir().join(CONFIG_FILE).display()
            )
        })?,
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the configuration {}; check the path", path.display()))?;
    let settings: Settings = toml::from_str(&text).map_err(|e| anyhow::anyhow!(located(&path, &text, &e)))?;
    match settings.crm {
        CrmChoice::Dynamics if settings.dynamics.is_none() => {
            bail!(
                "{}: `crm = \"dynamics\"` needs a [dynamics] section (see examples/cosell.dynamics.toml)",
                path.display()
            )
        }
        CrmChoice::Salesforce if settings.salesforce.is_none() => bail!(
            "{}: `crm = \"salesforce\"` needs a [salesforce] section (see examples/cosell.salesforce.toml)",
            path.display()
        ),
        _ => {}
    }
    let base = path.parent().map(Path::to_path_buf).filter(|p| !p.as_os_str().is_empty()).unwrap_or_else(|| ".".into());
    Ok(Loaded { settings, base, path })
}

/// A TOML error as `file:line:column: message`, then the offending line with a caret under the
/// column, so that a duplicate key or an unterminated string is found without counting lines.
fn located(path: &Path, text: &str, e: &toml::de::Error) -> String {
    let mut message = e.message().trim_end().to_owned();
    if text.trim_start().starts_with('{') {
        message.push_str(" (this looks like JSON: the configuration is TOML, see examples/cosell.dynamics.toml)");
    }
    let Some(span) = e.span() else {
        return format!("{} is not a valid configuration: {message}", path.display());
    };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line_no = text[..line_start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let source = text[line_start..line_end].trim_end_matches('\r');
    let gutter = " ".repeat(line_no.to_string().len());
    format!(
        "{}:{line_no}:{column}: not a valid configuration: {message}\n{gutter} |\n{line_no} | {source}\n{gutter} | {}^",
        path.display(),
        " ".repeat(column - 1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configs_parse_and_name_their_secrets_by_variable() {
        for (file, crm) in
            [("cosell.dynamics.toml", CrmChoice::Dynamics), ("cosell.salesforce.toml", CrmChoice::Salesforce)]
        {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(file);
            let loaded = load(Some(&path)).unwrap();
            assert_eq!(loaded.settings.crm, crm);
            assert!(loaded.settings.partner_center.client_secret.env.is_some(), "{file}: secret from the environment");
            assert!(loaded.settings.partner_center.client_secret.value.is_none(), "{file}: no inline secret");
            loaded.sync_config().unwrap();
        }
    }

    fn load_text(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cosell.toml");
        std::fs::write(&path, text).unwrap();
        let e = load(Some(&path)).unwrap_err().to_string();
        e.replace(&path.display().to_string(), "cosell.toml")
    }

    #[test]
    fn configuration_errors_show_the_file_line_column_and_the_offending_line() {
        let duplicate = load_text("crm = \"dynamics\"\n\n[partner_center]\nclient_id = \"a\"\nclient_id = \"b\"\n");
        assert!(duplicate.starts_with("cosell.toml:5:1: "), "{duplicate}");
        assert!(duplicate.contains("duplicate key"), "{duplicate}");
        assert!(duplicate.contains("5 | client_id = \"b\"\n  | ^"), "{duplicate}");

        let unterminated = load_text("crm = \"dynamics\"\n[dynamics]\norg_url = \"https://x.crm.dynamics.com\n");
        assert!(unterminated.starts_with("cosell.toml:3:"), "{unterminated}");
        assert!(unterminated.contains("3 | org_url = \"https://x.crm.dynamics.com"), "{unterminated}");
        assert!(unterminated.lines().last().is_some_and(|l| l.trim_end().ends_with('^')), "{unterminated}");

        let json = load_text("{\n  \"crm\": \"dynamics\"\n}\n");
        assert!(json.starts_with("cosell.toml:1:1: "), "{json}");
        assert!(json.contains("looks like JSON"), "{json}");
    }

    #[test]
    fn a_missing_secret_variable_names_the_variable_and_the_fix() {
        let s = SecretSource { env: Some("COSELL_TEST_SURELY_UNSET_VAR".into()), ..SecretSource::default() };
        let e = s.load("Partner Center client secret", Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("COSELL_TEST_SURELY_UNSET_VAR") && e.contains("export"), "{e}");
    }
}
