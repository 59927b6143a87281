//! Configuration: `RawConfig` is what the TOML file says; `Config` is the
//! checked, resolved form the server runs with (paths absolute, values bounded).

mod database;
mod error;
mod raw;
mod resolve;
mod template;
#[cfg(test)]
mod tests;

pub use ca_core::wire::RESERVED_AUTHORIZATION_PARAMS;
pub use database::Database;
pub use error::ConfigError;
pub use raw::{
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_UNAUTHENTICATED_PER_MINUTE, LogFormat,
    RawCa, RawCerts, RawConfig, RawDatabase, RawElevation, RawIssuer, RawKind, RawLogin, RawPolicy,
    RawRateLimit, RawServer, RawUi,
};
pub use resolve::{Config, ElevationConfig, UiConfig, WebhookConfig, check_webhook_url};
pub use template::{template, template_pkcs11, with_login_rule};
