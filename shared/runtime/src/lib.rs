//! What every binary shares before it does anything: typed configuration read from an explicit
//! list of environment variables, and one telemetry initialisation.

pub mod config;
pub mod telemetry;

pub use config::{ConfigError, Env, PlatformConfig, StoreBackend};
pub use telemetry::{LogFormat, init_telemetry};
