//! Why a config file could not be read or is not acceptable.

use std::path::PathBuf;

use crate::io_reason::io_reason;

/// Why a config could not be loaded, resolved or (`init`) written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {}; create one with `jitssh-ca init --dir DIR`", io_reason(.error))]
    Read {
        path: PathBuf,
        /// Not a `source`: the message already says it, once.
        error: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config: {0}")]
    Invalid(String),
}
