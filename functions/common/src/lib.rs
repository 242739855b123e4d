//! What the five Lambda functions share, and nothing Lambda-free: each function's `main.rs` reads its
//! configuration with [`config`], fetches its credentials once with [`secrets`], builds its clients
//! with [`clients`], and the two queue workers translate SQS batches with [`sqs`]. With Dynamics push
//! on, the receiver and webhook-registration also read the Dataverse webhook key ([`push`]).

pub mod clients;
pub mod config;
pub mod connect;
pub mod push;
pub mod secrets;
pub mod sqs;
pub mod worker;

pub use config::{InitError, Resources};

/// What every function's `main` does first: read the process environment, start telemetry in the
/// configured log format, load the AWS SDK configuration.
#[derive(Debug)]
pub struct Init {
    /// The environment as pairs (for [`connect()`]) and as [`cosell_runtime::Env`].
    pub vars: Vec<(String, String)>,
    pub env: cosell_runtime::Env,
    pub sdk: aws_config::SdkConfig,
}

pub async fn init() -> Result<Init, cosell_runtime::ConfigError> {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let env = cosell_runtime::Env::from_pairs(vars.iter().cloned());
    let platform = cosell_runtime::PlatformConfig::from_env(&env)?;
    cosell_runtime::init_telemetry(platform.log_format);
    Ok(Init { vars, env, sdk: cosell_aws::sdk_config().await })
}
pub use connect::{Connected, connect};
