//! One telemetry initialisation for every binary: JSON logs for Lambda (`LoggingConfig: JSON`) and
//! CloudWatch, a readable format for people at a terminal.

use std::str::FromStr;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Self::Json),
            "pretty" | "text" => Ok(Self::Pretty),
            other => Err(format!("unknown log format {other:?}")),
        }
    }
}

/// Installs the global subscriber (once; later calls are ignored, so tests may call it freely).
/// The filter comes from `RUST_LOG`, default `info`. Logs go to stderr, keeping stdout for output.
pub fn init_telemetry(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Pretty => builder.with_target(false).compact().try_init(),
    };
}
