//! Configuration: `RawConfig` is what the TOML file says; `Config` is the
//! checked, resolved form the server runs with (paths absolute, values bounded).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ca_core::{IdentityKind, Limits, Ttl};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}; create one with `jitssh-ca init --dir DIR`")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    pub ca: RawCa,
    #[serde(default)]
    pub database: RawDatabase,
    #[serde(default)]
    pub policy: RawPolicy,
    #[serde(default)]
    pub certs: RawCerts,
    pub login: Option<RawLogin>,
    #[serde(default)]
    pub issuers: Vec<RawIssuer>,
    #[serde(default)]
    pub rate_limit: RawRateLimit,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    #[serde(default = "default_listen")]
    pub listen: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    #[serde(default)]
    pub danger_allow_plain_http: bool,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u64,
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout_seconds: u64,
    #[serde(default = "default_body_limit")]
    pub max_body_bytes: usize,
    #[serde(default)]
    pub log_format: LogFormat,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: default_listen(),
            tls_cert: None,
            tls_key: None,
            danger_allow_plain_http: false,
            request_timeout_seconds: default_request_timeout(),
            header_read_timeout_seconds: default_header_timeout(),
            max_body_bytes: default_body_limit(),
            log_format: LogFormat::Human,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCa {
    pub user_key: PathBuf,
    pub host_key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    #[serde(default = "default_db")]
    pub path: PathBuf,
}

impl Default for RawDatabase {
    fn default() -> Self {
        RawDatabase { path: default_db() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    #[serde(default = "default_policy_dir")]
    pub dir: PathBuf,
    #[serde(default = "default_reload")]
    pub reload_interval_seconds: u64,
}

impl Default for RawPolicy {
    fn default() -> Self {
        RawPolicy {
            dir: default_policy_dir(),
            reload_interval_seconds: default_reload(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCerts {
    #[serde(default = "default_max_ttl")]
    pub max_ttl: Ttl,
    /// Ceiling on host certificate lifetime, whatever the host policy says.
    #[serde(default = "default_host_max_ttl")]
    pub host_max_ttl: Ttl,
    pub allowed_extensions: Option<Vec<String>>,
    pub allowed_critical_options: Option<Vec<String>>,
}

impl Default for RawCerts {
    fn default() -> Self {
        RawCerts {
            max_ttl: default_max_ttl(),
            host_max_ttl: default_host_max_ttl(),
            allowed_extensions: None,
            allowed_critical_options: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogin {
    pub issuer: String,
    pub client_id: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    pub issuer: String,
    pub audiences: Vec<String>,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    pub ca_bundle: Option<PathBuf>,
    #[serde(default = "default_kind")]
    pub kind: RawKind,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawKind {
    Human,
    Workload,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Certificate requests per identity per minute; 0 disables the limit.
    #[serde(default = "default_rate")]
    pub per_identity_per_minute: u32,
    #[serde(default = "default_burst")]
    pub burst: u32,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        RawRateLimit {
            per_identity_per_minute: default_rate(),
            burst: default_burst(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8443".into()
}
fn default_request_timeout() -> u64 {
    10
}
fn default_header_timeout() -> u64 {
    5
}
fn default_body_limit() -> usize {
    64 * 1024
}
fn default_db() -> PathBuf {
    "audit.db".into()
}
fn default_policy_dir() -> PathBuf {
    "policies".into()
}
fn default_reload() -> u64 {
    2
}
fn default_max_ttl() -> Ttl {
    Ttl::from_secs(3600).unwrap_or_else(|_| unreachable!("3600 is within bounds"))
}
fn default_host_max_ttl() -> Ttl {
    Ttl::from_secs(Ttl::ABSOLUTE_MAX)
        .unwrap_or_else(|_| unreachable!("the maximum is within bounds"))
}
fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile", "groups", "offline_access"]
        .map(String::from)
        .to_vec()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_kind() -> RawKind {
    RawKind::Human
}
fn default_rate() -> u32 {
    60
}
fn default_burst() -> u32 {
    20
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub request_timeout: Duration,
    pub header_read_timeout: Duration,
    pub max_body_bytes: usize,
    pub log_format: LogFormat,
    pub user_ca_key: PathBuf,
    pub host_ca_key: PathBuf,
    pub database: PathBuf,
    pub policy_dir: PathBuf,
    pub policy_reload: Duration,
    pub limits: Limits,
    /// Ceiling on host certificate lifetime (`certs.host_max_ttl`).
    pub host_max_ttl: Ttl,
    pub login: Option<RawLogin>,
    pub issuers: Vec<crate::oidc::IssuerConfig>,
    pub rate_per_minute: u32,
    pub rate_burst: u32,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let raw: RawConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::resolve(raw, base)
    }

    /// Check and resolve a raw config; relative paths are taken from `base`
    /// (the config file's directory).
    pub fn resolve(raw: RawConfig, base: &Path) -> Result<Config, ConfigError> {
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        let listen: SocketAddr = raw.server.listen.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "server.listen {:?} is not an address like 127.0.0.1:8443",
                raw.server.listen
            ))
        })?;
        let tls = match (&raw.server.tls_cert, &raw.server.tls_key) {
            (Some(c), Some(k)) => Some((abs(c), abs(k))),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "set both server.tls_cert and server.tls_key, or neither".into(),
                ));
            }
        };
        check_plain_http(listen, tls.is_some(), raw.server.danger_allow_plain_http)?;
        if !(1..=300).contains(&raw.server.request_timeout_seconds) {
            return Err(ConfigError::Invalid(
                "server.request_timeout_seconds must be 1-300".into(),
            ));
        }
        if !(1..=60).contains(&raw.server.header_read_timeout_seconds) {
            return Err(ConfigError::Invalid(
                "server.header_read_timeout_seconds must be 1-60".into(),
            ));
        }
        if !(1024..=1024 * 1024).contains(&raw.server.max_body_bytes) {
            return Err(ConfigError::Invalid(
                "server.max_body_bytes must be 1024-1048576".into(),
            ));
        }

        let mut limits = Limits::new(raw.certs.max_ttl);
        let host_max_ttl = raw.certs.host_max_ttl;
        if let Some(exts) = raw.certs.allowed_extensions {
            for e in &exts {
                if !Limits::KNOWN_EXTENSIONS.contains(&e.as_str()) {
                    return Err(ConfigError::Invalid(format!(
                        "certs.allowed_extensions: unknown extension {e:?}; known: {}",
                        Limits::KNOWN_EXTENSIONS.join(", ")
                    )));
                }
            }
            limits.allowed_extensions = exts.into_iter().collect();
        }
        if let Some(opts) = raw.certs.allowed_critical_options {
            for o in &opts {
                if !Limits::KNOWN_CRITICAL_OPTIONS.contains(&o.as_str()) {
                    return Err(ConfigError::Invalid(format!(
                        "certs.allowed_critical_options: unknown option {o:?}; known: {}",
                        Limits::KNOWN_CRITICAL_OPTIONS.join(", ")
                    )));
                }
            }
            limits.allowed_critical_options = opts.into_iter().collect();
        }

        if raw.issuers.is_empty() {
            return Err(ConfigError::Invalid(
                "no [[issuers]] configured: add your OpenID provider (issuer URL and client ID)"
                    .into(),
            ));
        }
        let issuers = raw
            .issuers
            .into_iter()
            .map(|i| crate::oidc::IssuerConfig {
                issuer: i.issuer,
                audiences: i.audiences,
                groups_claim: i.groups_claim,
                ca_bundle: i.ca_bundle.map(|p| abs(&p)),
                kind: match i.kind {
                    RawKind::Human => IdentityKind::Human,
                    RawKind::Workload => IdentityKind::Workload,
                },
            })
            .collect();

        Ok(Config {
            listen,
            tls,
            request_timeout: Duration::from_secs(raw.server.request_timeout_seconds),
            header_read_timeout: Duration::from_secs(raw.server.header_read_timeout_seconds),
            max_body_bytes: raw.server.max_body_bytes,
            log_format: raw.server.log_format,
            user_ca_key: abs(&raw.ca.user_key),
            host_ca_key: abs(&raw.ca.host_key),
            database: abs(&raw.database.path),
            policy_dir: abs(&raw.policy.dir),
            policy_reload: Duration::from_secs(raw.policy.reload_interval_seconds.max(1)),
            limits,
            host_max_ttl,
            login: raw.login,
            issuers,
            rate_per_minute: raw.rate_limit.per_identity_per_minute,
            rate_burst: raw.rate_limit.burst.max(1),
        })
    }

    /// Override the listen address (from `--listen`), re-checking the
    /// plain-HTTP rule.
    pub fn set_listen(
        &mut self,
        listen: SocketAddr,
        danger_allow_plain_http: bool,
    ) -> Result<(), ConfigError> {
        check_plain_http(listen, self.tls.is_some(), danger_allow_plain_http)?;
        self.listen = listen;
        Ok(())
    }
}

fn check_plain_http(listen: SocketAddr, tls: bool, danger: bool) -> Result<(), ConfigError> {
    if !tls && !listen.ip().is_loopback() && !danger {
        return Err(ConfigError::Invalid(format!(
            "refusing plain HTTP on non-loopback address {listen}: set server.tls_cert and server.tls_key, \
             or listen on 127.0.0.1 behind a TLS proxy (server.danger_allow_plain_http = true exists for that, at your risk)"
        )));
    }
    Ok(())
}

/// The documented config `jitssh-ca init` writes. Every option appears,
/// commented with its meaning; the file works as written.
pub fn template(issuer: &str, audience: &str) -> String {
    format!(
        r#"# jitssh-ca configuration. Relative paths are relative to this file's directory.

[server]
# Address to listen on. Plain HTTP is only allowed on a loopback address.
listen = "127.0.0.1:8443"
# TLS certificate chain and private key (PEM). With both set the server speaks HTTPS.
# tls_cert = "tls.crt"
# tls_key = "tls.key"
# Allow plain HTTP on a non-loopback address (only behind a TLS-terminating proxy you control).
danger_allow_plain_http = false
# Whole-request timeout and time allowed to send request headers, in seconds.
request_timeout_seconds = 10
header_read_timeout_seconds = 5
# Largest request body accepted, in bytes.
max_body_bytes = 65536
# Log format: "human" or "json".
log_format = "human"

[ca]
# CA private keys (OpenSSH format, Ed25519, mode 0600). The server refuses
# keys readable by group or others, symlinks, and keys that do not parse.
user_key = "user_ca"
host_key = "host_ca"

[database]
# SQLite audit database (WAL, synchronous=FULL).
path = "audit.db"

[policy]
# Folder of Rego files (*.rego, *_test.rego) and data*.json. Reloaded on SIGHUP and
# when files change; a policy that fails to compile or whose tests fail is refused.
dir = "policies"
reload_interval_seconds = 2

[certs]
# Hard ceiling on certificate lifetime, whatever the policy says ("15m", "1h" or seconds).
max_ttl = "1h"
# Hard ceiling on host certificate lifetime, whatever the host policy says ("1d", "7d";
# 7 days at most). Hosts renew before expiry with `jitssh host renew`.
host_max_ttl = "7d"
# Extensions and critical options a policy may grant.
allowed_extensions = ["permit-pty", "permit-port-forwarding", "permit-agent-forwarding", "permit-X11-forwarding"]
allowed_critical_options = ["force-command", "source-address", "verify-required"]

[rate_limit]
# Certificate requests per identity per minute (0 disables), and the burst allowed.
per_identity_per_minute = 60
burst = 20

# What `GET /v1/config` tells `jitssh login`.
[login]
issuer = "{issuer}"
client_id = "{audience}"
scopes = ["openid", "email", "profile", "groups", "offline_access"]

# Trusted OpenID providers. `issuer` must equal the token's `iss` exactly (HTTPS,
# or plain HTTP on loopback only). `audiences` are the accepted client IDs.
[[issuers]]
issuer = "{issuer}"
audiences = ["{audience}"]
groups_claim = "groups"
# ca_bundle = "idp-ca.pem"   # PEM bundle for a private IdP's TLS certificate
kind = "human"               # "workload" for CI/service token issuers
"#
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Config::resolve(raw, Path::new("/etc/jitssh"))
    }

    #[test]
    fn template_parses_as_written() {
        let c = parse(&template("https://idp.example.com", "jitssh")).unwrap();
        assert_eq!(c.user_ca_key, Path::new("/etc/jitssh/user_ca"));
        assert_eq!(c.limits.max_ttl.as_secs(), 3600);
        assert_eq!(c.host_max_ttl.as_secs(), 7 * 86400);
        assert_eq!(c.issuers.len(), 1);
    }

    #[test]
    fn refuses_plain_http_off_loopback() {
        let t =
            template("https://idp.example.com", "jitssh").replace("127.0.0.1:8443", "0.0.0.0:8443");
        assert!(parse(&t).is_err());
        let t = t.replace(
            "danger_allow_plain_http = false",
            "danger_allow_plain_http = true",
        );
        assert!(parse(&t).is_ok());
    }

    #[test]
    fn refuses_unknown_fields_and_extensions() {
        let t = template("https://idp.example.com", "jitssh");
        assert!(parse(&t.replace("max_ttl = ", "max_tll = ")).is_err());
        assert!(parse(&t.replace("\"permit-pty\",", "\"permit-everything\",")).is_err());
    }

    #[test]
    fn host_max_ttl_is_bounded_and_defaults_to_seven_days() {
        let t = template("https://idp.example.com", "jitssh");
        let c = parse(&t.replace("host_max_ttl = \"7d\"", "host_max_ttl = \"2d\"")).unwrap();
        assert_eq!(c.host_max_ttl.as_secs(), 2 * 86400);
        assert!(parse(&t.replace("host_max_ttl = \"7d\"", "host_max_ttl = \"8d\"")).is_err());
        let c = parse(&t.replace("host_max_ttl = \"7d\"", "")).unwrap();
        assert_eq!(c.host_max_ttl.as_secs(), 7 * 86400);
    }
}
