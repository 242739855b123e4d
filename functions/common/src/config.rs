//! Function configuration from an explicit list of environment variables (set by `template.yaml`),
//! failing at init with the missing key's name. Credentials are never in the environment: only the
//! ARNs of the Secrets Manager secrets that hold them.

use cosell_core::sync::SyncConfig;
use cosell_runtime::config::QueueUrls;
use cosell_runtime::{ConfigError, Env, PlatformConfig, StoreBackend};

/// Why a function could not start. Reported by the runtime as an init error, so the cause shows
/// in the function's log and in CloudFormation's events.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Sync(#[from] cosell_core::sync::config::ConfigError),
    #[error("secret {id}: {reason}")]
    Secret { id: String, reason: String },
    #[error("building the {what} client: {reason}")]
    Client { what: &'static str, reason: String },
}

/// Every variable the functions read besides [`PlatformConfig::KEYS`], with its meaning.
pub const KEYS: &[(&str, &str)] = &[
    ("COSELL_PC_SECRET_ARN", "Secrets Manager secret with the Partner Center credentials (JSON)"),
    (
        "COSELL_CRM_SECRET_ARN",
        "Secrets Manager secret with the CRM credentials (JSON); given to webhook-receiver and webhook-registration only with Dynamics push on",
    ),
    ("COSELL_SYNC_CONFIG", "sync configuration document (TOML or JSON); COSELL_SYNC__<A>__<B> override keys"),
    ("COSELL_POLL_SWEEP_EVERY", "crm-poller: run the Partner Center reconciliation sweep every N ticks (default 5)"),
    ("COSELL_WEBHOOK_URL", "webhook-registration: the receiver URL registered when invoked by hand"),
    ("COSELL_DYNAMICS_PUSH", "webhook-receiver, webhook-registration: true turns Dynamics push on (default false)"),
    (
        "COSELL_DATAVERSE_WEBHOOK_URL",
        "webhook-registration, Dynamics push on: the receiver's /crm/dataverse URL registered when invoked by hand",
    ),
];

/// The stack's table and queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub table: String,
    pub queues: QueueUrls,
    /// How long audit entries are kept (DynamoDB TTL).
    pub audit_retention: chrono::Duration,
}

impl Resources {
    pub fn from_env(env: &Env) -> Result<Self, InitError> {
        let platform = PlatformConfig::from_env(env)?;
        match platform.backend {
            StoreBackend::Aws { table, queues } => Ok(Self {
                table,
                queues,
                audit_retention: chrono::Duration::days(i64::from(platform.audit_retention_days)),
            }),
            StoreBackend::Embedded { .. } => Err(ConfigError::Invalid {
                key: "COSELL_STORE".into(),
                reason: "the Lambda functions need DynamoDB and SQS".into(),
                hint: "set COSELL_STORE=aws (template.yaml does)".into(),
            }
            .into()),
        }
    }
}

/// The ARN (or name) of a credentials secret.
pub fn secret_id(env: &Env, key: &str) -> Result<String, InitError> {
    Ok(env.required(key, "set by template.yaml to the stack's secret")?.to_owned())
}

/// The sync engine's configuration (`COSELL_SYNC_CONFIG` and `COSELL_SYNC__…` overrides).
pub fn sync_config<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<SyncConfig, InitError> {
    Ok(SyncConfig::from_env_vars(vars)?)
}

/// For tests: the variables of an AWS-backed function (table and queues), plus `extra`.
#[cfg(test)]
pub(crate) fn aws_env(extra: &[(&str, &str)]) -> Env {
    let mut pairs = vec![
        ("COSELL_STORE", "aws"),
        ("COSELL_TABLE_NAME", "t"),
        ("COSELL_PC_EVENTS_QUEUE_URL", "https://sqs.example/1/pc.fifo"),
        ("COSELL_PC_EVENTS_DLQ_URL", "https://sqs.example/1/pc-dlq.fifo"),
        ("COSELL_CRM_CHANGES_QUEUE_URL", "https://sqs.example/1/crm.fifo"),
        ("COSELL_CRM_CHANGES_DLQ_URL", "https://sqs.example/1/crm-dlq.fifo"),
    ];
    pairs.extend_from_slice(extra);
    Env::from_pairs(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_need_the_aws_store() {
        let err = Resources::from_env(&Env::default()).unwrap_err();
        assert!(err.to_string().contains("COSELL_STORE"), "{err}");
        let r = Resources::from_env(&aws_env(&[("COSELL_AUDIT_RETENTION_DAYS", "2")])).unwrap();
        assert_eq!((r.table.as_str(), r.audit_retention), ("t", chrono::Duration::days(2)));
    }

    #[test]
    fn the_sync_configuration_names_a_missing_crm() {
        let err = sync_config([("COSELL_SYNC__CHECK_MARK", "false")]).unwrap_err();
        assert!(err.to_string().contains("fields.crm"), "{err}");
        let ok = sync_config([("COSELL_SYNC__FIELDS__CRM", "salesforce")]).unwrap();
        assert_eq!(ok.fields.deal_value, "Amount");
    }

    #[test]
    fn a_missing_secret_arn_is_named() {
        let err = secret_id(&aws_env(&[]), "COSELL_CRM_SECRET_ARN").unwrap_err();
        assert!(err.to_string().starts_with("COSELL_CRM_SECRET_ARN is not set"), "{err}");
    }
}
