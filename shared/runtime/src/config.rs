//! Typed configuration from the environment, failing at start-up with the offending key's name.
//!
//! Every variable a binary reads is listed in [`PlatformConfig::KEYS`] (and in `template.yaml`),
//! so that the README's configuration reference and the Lambda environment cannot drift apart.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::PathBuf;
use std::str::FromStr;

use secrecy::SecretString;

/// A configuration problem, naming the key and what would fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{key} is not set: {hint}")]
    Missing { key: String, hint: String },
    #[error("{key} is invalid ({reason}): {hint}")]
    Invalid { key: String, reason: String, hint: String },
}

/// A snapshot of environment variables (the process's, or given pairs in tests).
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    pub fn from_process() -> Self {
        Self { vars: std::env::vars().collect() }
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self { vars: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }

    /// The value of `key`; empty counts as unset.
    pub fn optional(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    pub fn required(&self, key: &str, hint: &str) -> Result<&str, ConfigError> {
        self.optional(key).ok_or_else(|| ConfigError::Missing { key: key.into(), hint: hint.into() })
    }

    /// Parses `key`, or returns `default` when it is unset.
    pub fn parsed_or<T>(&self, key: &str, default: T, hint: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.optional(key) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e: T::Err| ConfigError::Invalid {
                key: key.into(),
                reason: format!("{raw:?}: {e}"),
                hint: hint.into(),
            }),
        }
    }

    /// A secret: never printed, not even in errors.
    pub fn secret(&self, key: &str, hint: &str) -> Result<SecretString, ConfigError> {
        self.required(key, hint).map(|v| SecretString::from(v.to_owned()))
    }

    /// An `http(s)` URL.
    pub fn url(&self, key: &str, hint: &str) -> Result<url::Url, ConfigError> {
        let raw = self.required(key, hint)?;
        let parsed = url::Url::parse(raw).map_err(|e| ConfigError::Invalid {
            key: key.into(),
            reason: format!("{raw:?} is not a URL: {e}"),
            hint: hint.into(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ConfigError::Invalid {
                key: key.into(),
                reason: format!("scheme {:?} is not http or https", parsed.scheme()),
                hint: hint.into(),
            });
        }
        Ok(parsed)
    }
}

/// Where state and queues live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreBackend {
    /// SQLite file holding the state store and both queues (`cosell run`, `cosell sandbox`).
    Embedded { path: PathBuf },
    /// DynamoDB table and SQS FIFO queues (Lambda, or `cosell run` against AWS).
    Aws { table: String, queues: QueueUrls },
}

/// The SQS queues of the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueUrls {
    pub pc_events: String,
    pub pc_events_dlq: String,
    pub crm_changes: String,
    pub crm_changes_dlq: String,
}

/// Configuration every binary shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformConfig {
    pub backend: StoreBackend,
    /// Receives after which a message is dead-lettered (the embedded queue's; SQS's comes from
    /// the queue's redrive policy, set from the same template parameter).
    pub max_receives: u32,
    pub audit_retention_days: u32,
    pub log_format: crate::telemetry::LogFormat,
}

impl PlatformConfig {
    /// Every variable [`PlatformConfig::from_env`] reads, with its meaning.
    pub const KEYS: &'static [(&'static str, &'static str)] = &[
        ("COSELL_STORE", "`embedded` (default) or `aws`"),
        ("COSELL_DB_PATH", "SQLite file of the embedded store (default `cosell.db`)"),
        ("COSELL_TABLE_NAME", "DynamoDB table (with COSELL_STORE=aws)"),
        ("COSELL_PC_EVENTS_QUEUE_URL", "URL of pc-events.fifo (with COSELL_STORE=aws)"),
        ("COSELL_PC_EVENTS_DLQ_URL", "URL of its dead-letter queue (with COSELL_STORE=aws)"),
        ("COSELL_CRM_CHANGES_QUEUE_URL", "URL of crm-changes.fifo (with COSELL_STORE=aws)"),
        ("COSELL_CRM_CHANGES_DLQ_URL", "URL of its dead-letter queue (with COSELL_STORE=aws)"),
        ("COSELL_MAX_RECEIVES", "receives before a message is dead-lettered (default 5)"),
        ("COSELL_AUDIT_RETENTION_DAYS", "days audit entries are kept (default 400)"),
        ("COSELL_LOG_FORMAT", "`json` (default) or `pretty`"),
        ("RUST_LOG", "log filter (default `info`)"),
    ];

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let backend = match env.optional("COSELL_STORE").unwrap_or("embedded") {
            "embedded" => StoreBackend::Embedded { path: env.optional("COSELL_DB_PATH").unwrap_or("cosell.db").into() },
            "aws" => {
                let hint = "set by template.yaml in Lambda; for a local run, the stack's outputs";
                StoreBackend::Aws {
                    table: env.required("COSELL_TABLE_NAME", hint)?.into(),
                    queues: QueueUrls {
                        pc_events: env.url("COSELL_PC_EVENTS_QUEUE_URL", hint)?.into(),
                        pc_events_dlq: env.url("COSELL_PC_EVENTS_DLQ_URL", hint)?.into(),
                        crm_changes: env.url("COSELL_CRM_CHANGES_QUEUE_URL", hint)?.into(),
                        crm_changes_dlq: env.url("COSELL_CRM_CHANGES_DLQ_URL", hint)?.into(),
                    },
                }
            }
            other => {
                return Err(ConfigError::Invalid {
                    key: "COSELL_STORE".into(),
                    reason: format!("{other:?} is not a store"),
                    hint: "use `embedded` or `aws`".into(),
                });
            }
        };
        let max_receives = env.parsed_or("COSELL_MAX_RECEIVES", 5u32, "a whole number from 1 to 1000")?;
        if !(1..=1000).contains(&max_receives) {
            return Err(ConfigError::Invalid {
                key: "COSELL_MAX_RECEIVES".into(),
                reason: format!("{max_receives} is out of range"),
                hint: "a whole number from 1 to 1000 (SQS's maxReceiveCount range)".into(),
            });
        }
        Ok(Self {
            backend,
            max_receives,
            audit_retention_days: env.parsed_or("COSELL_AUDIT_RETENTION_DAYS", 400u32, "a number of days, e.g. 400")?,
            log_format: env.parsed_or("COSELL_LOG_FORMAT", crate::telemetry::LogFormat::Json, "`json` or `pretty`")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::LogFormat;

    #[test]
    fn defaults_to_the_embedded_store() {
        let cfg = PlatformConfig::from_env(&Env::default()).unwrap();
        assert_eq!(cfg.backend, StoreBackend::Embedded { path: "cosell.db".into() });
        assert_eq!((cfg.max_receives, cfg.audit_retention_days, cfg.log_format), (5, 400, LogFormat::Json));
    }

    #[test]
    fn aws_store_names_the_first_missing_key() {
        let env = Env::from_pairs([("COSELL_STORE", "aws"), ("COSELL_TABLE_NAME", "t")]);
        let err = PlatformConfig::from_env(&env).unwrap_err();
        assert!(matches!(&err, ConfigError::Missing { key, .. } if key == "COSELL_PC_EVENTS_QUEUE_URL"), "{err}");
        assert!(err.to_string().starts_with("COSELL_PC_EVENTS_QUEUE_URL is not set"));
    }

    #[test]
    fn invalid_values_name_the_key_the_value_and_the_fix() {
        let err = PlatformConfig::from_env(&Env::from_pairs([("COSELL_MAX_RECEIVES", "many")])).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("COSELL_MAX_RECEIVES") && text.contains("\"many\"") && text.contains("whole number"),
            "{text}"
        );
        let err = PlatformConfig::from_env(&Env::from_pairs([("COSELL_MAX_RECEIVES", "0")])).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { .. }));
        let err = PlatformConfig::from_env(&Env::from_pairs([("COSELL_STORE", "postgres")])).unwrap_err();
        assert!(err.to_string().contains("use `embedded` or `aws`"));
    }

    #[test]
    fn urls_must_be_http() {
        let env = Env::from_pairs([("U", "ftp://x")]);
        assert!(matches!(env.url("U", "h"), Err(ConfigError::Invalid { .. })));
        let env = Env::from_pairs([("U", "not a url")]);
        assert!(matches!(env.url("U", "h"), Err(ConfigError::Invalid { .. })));
        assert_eq!(
            Env::from_pairs([("U", "https://q.example/1")]).url("U", "h").unwrap().as_str(),
            "https://q.example/1"
        );
    }

    #[test]
    fn empty_counts_as_unset_and_secrets_are_not_printed() {
        let env = Env::from_pairs([("K", "  "), ("S", "hunter2")]);
        assert!(env.optional("K").is_none());
        let secret = env.secret("S", "h").unwrap();
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
