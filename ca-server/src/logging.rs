//! Structured logs via tracing: human-readable or JSON, filtered by RUST_LOG.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: Option<LogFormat>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format.unwrap_or_default() {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
}
