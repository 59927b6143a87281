//! Configuration: `RawConfig` is what the TOML file says; `Config` is the
//! checked, resolved form the server runs with (paths absolute, values bounded).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ca_core::{IdentityKind, Limits, Ttl};
use serde::Deserialize;

use crate::io_reason::io_reason;

/// Default of `server.idle_timeout_seconds`: a connection with no request
/// in progress (never sent a byte, or between keep-alive requests) is
/// closed after this. Separate from the config's
/// `header_read_timeout` (first byte of a request head to its end). Behind a
/// proxy that keeps upstream connections alive, set its upstream idle timeout
/// below this, or it may send a request on a connection being closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Default of `server.max_connections`: most connections held at once; further ones are closed as they arrive
/// until others end. Also kept [`crate::serve::RESERVED_FDS`] below the process's open-file
/// limit, so that a flood of connections cannot starve the audit database,
/// policy reloads or IdP key fetches of file descriptors.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// Default of `[rate_limit] unauthenticated_per_source_per_minute`:
/// refusals before authentication one source may cause per minute before
/// it is answered 429.
pub const DEFAULT_UNAUTHENTICATED_PER_MINUTE: u32 = 120;

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
    #[serde(default)]
    pub elevation: RawElevation,
}

/// `[elevation]`: just-in-time role grants (the roles live in the policy).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawElevation {
    /// A request nobody decides expires after this long.
    #[serde(default = "default_pending_timeout")]
    pub pending_timeout: Ttl,
    /// Ceiling on any grant, whatever a role allows.
    #[serde(default = "default_max_grant")]
    pub max_grant: Ttl,
    /// JSON POST on new pending requests and on every decision.
    pub webhook_url: Option<String>,
    #[serde(default = "default_webhook_timeout")]
    pub webhook_timeout_seconds: u64,
    /// Further attempts after a failed delivery (with backoff).
    #[serde(default = "default_webhook_retries")]
    pub webhook_retries: u32,
    /// File holding a shared secret; deliveries then carry
    /// `X-Jitssh-Signature: sha256=HEX(HMAC-SHA256(secret, body))`.
    pub webhook_secret_file: Option<PathBuf>,
}

impl Default for RawElevation {
    fn default() -> Self {
        RawElevation {
            pending_timeout: default_pending_timeout(),
            max_grant: default_max_grant(),
            webhook_url: None,
            webhook_timeout_seconds: default_webhook_timeout(),
            webhook_retries: default_webhook_retries(),
            webhook_secret_file: None,
        }
    }
}

fn default_pending_timeout() -> Ttl {
    Ttl::from_secs(3600).unwrap_or_else(|_| unreachable!("3600 is within bounds"))
}
fn default_max_grant() -> Ttl {
    Ttl::from_secs(8 * 3600).unwrap_or_else(|_| unreachable!("8h is within bounds"))
}
fn default_webhook_timeout() -> u64 {
    5
}
fn default_webhook_retries() -> u32 {
    3
}

/// The resolved `[elevation]` section.
#[derive(Debug, Clone)]
pub struct ElevationConfig {
    pub pending_timeout: Ttl,
    pub max_grant: Ttl,
    pub webhook: Option<WebhookConfig>,
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: reqwest::Url,
    pub timeout: Duration,
    pub retries: u32,
    pub secret_file: Option<PathBuf>,
}

impl Default for ElevationConfig {
    fn default() -> Self {
        ElevationConfig {
            pending_timeout: default_pending_timeout(),
            max_grant: default_max_grant(),
            webhook: None,
        }
    }
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
    /// A connection with no request in progress is closed after this.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_seconds: u64,
    /// Most client connections at once (lowered to fit the open-file limit).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_idle_timeout() -> u64 {
    DEFAULT_IDLE_TIMEOUT.as_secs()
}
fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
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
            idle_timeout_seconds: default_idle_timeout(),
            max_connections: default_max_connections(),
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
    /// Key files (the default: `user_ca`, `host_ca`), or ...
    pub user_key: Option<PathBuf>,
    pub host_key: Option<PathBuf>,
    /// ... both keys inside a PKCS#11 token.
    pub pkcs11: Option<crate::hsm::Pkcs11Config>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    /// SQLite file (the default, `audit.db`).
    pub path: Option<PathBuf>,
    /// PostgreSQL connection URL (several replicas share it).
    pub url: Option<String>,
    /// The PostgreSQL password, read from this file (never in the URL).
    pub password_file: Option<PathBuf>,
    /// TLS to PostgreSQL: "verify-full", "require" or "disable" (libpq's
    /// `sslmode`, without the modes that fall back to plaintext). Default:
    /// "verify-full" with `ca_file` or off loopback, else "disable".
    pub tls: Option<String>,
    /// PEM file of the CA(s) that sign the PostgreSQL server's certificate
    /// (libpq's `sslrootcert`); for "verify-full".
    pub ca_file: Option<PathBuf>,
}

/// Where the CA keeps its state (`[database]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Database {
    /// One process, one SQLite file.
    Sqlite(PathBuf),
    /// Several replicas, one PostgreSQL database. `[database] tls` and
    /// `ca_file` are in `url` as `sslmode` and `sslrootcert` (what
    /// [`crate::db::Target::postgres`] reads).
    Postgres {
        url: String,
        password_file: Option<PathBuf>,
    },
}

impl Database {
    /// A handle to the database (connections open on first use). Reads the
    /// password file and the TLS CA file now, so a missing one is a clear
    /// startup error.
    pub fn open(&self) -> Result<crate::db::Db, ConfigError> {
        use crate::db::{Db, Target};
        match self {
            Database::Sqlite(path) => Ok(Db::new(Target::Sqlite(path.clone()))),
            Database::Postgres { url, password_file } => {
                let password = password_file
                    .as_ref()
                    .map(|f| crate::secret_file::read_line(f, "[database] password_file"))
                    .transpose()
                    .map_err(|e| ConfigError::Invalid(e.to_string()))?;
                // The messages name the [database] key at fault.
                let target = Target::postgres(url, password.as_deref())
                    .map_err(|e| ConfigError::Invalid(e.message))?;
                Ok(Db::new(target))
            }
        }
    }

    /// The SQLite file, if that is the backend.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Database::Sqlite(p) => Some(p),
            Database::Postgres { .. } => None,
        }
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
    /// Extra parameters of the authorization request, as this provider
    /// wants them for offline access (Google: `access_type = "offline"`;
    /// `prompt = ""` stops jitssh's default `prompt=consent`). Served to
    /// clients in `/v1/config`.
    #[serde(default)]
    pub authorization_params: std::collections::BTreeMap<String, String>,
}

pub use ca_core::wire::RESERVED_AUTHORIZATION_PARAMS;

fn check_login(login: &RawLogin) -> Result<(), ConfigError> {
    for key in login.authorization_params.keys() {
        if RESERVED_AUTHORIZATION_PARAMS.contains(&key.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "[login] authorization_params: {key:?} is set by jitssh itself; remove it (scopes go in [login] scopes)"
            )));
        }
    }
    Ok(())
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
    /// Also accept this issuer's RFC 9068 JWT access tokens (client
    /// credentials); `kind = "workload"` only, with `access_token_audience`.
    #[serde(default)]
    pub accept_access_tokens: bool,
    /// The resource indicator the access tokens carry in `aud`.
    pub access_token_audience: Option<String>,
    /// Where people's login names come from: `"email"` (the verified
    /// email's local part, only in `email_domains`), `"preferred_username"`
    /// or another claim. Unset: no personal login name from this issuer.
    pub login_claim: Option<String>,
    #[serde(default)]
    pub email_domains: Vec<String>,
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
    /// Refusals before authentication (no or an unverifiable token, an
    /// unknown join token) one source address (an IPv6 /64) may cause per
    /// minute before it is answered 429; valid credentials always pass.
    #[serde(default = "default_unauthenticated_rate")]
    pub unauthenticated_per_source_per_minute: u32,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        RawRateLimit {
            per_identity_per_minute: default_rate(),
            burst: default_burst(),
            unauthenticated_per_source_per_minute: default_unauthenticated_rate(),
        }
    }
}

fn default_unauthenticated_rate() -> u32 {
    DEFAULT_UNAUTHENTICATED_PER_MINUTE
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
/// `postgresql://user:secret@host/...`: a password in the authority part.
fn url_has_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
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

fn resolve_elevation(
    raw: RawElevation,
    abs: &dyn Fn(&Path) -> PathBuf,
) -> Result<ElevationConfig, ConfigError> {
    let webhook = match raw.webhook_url {
        None => {
            if raw.webhook_secret_file.is_some() {
                return Err(ConfigError::Invalid(
                    "elevation.webhook_secret_file is set but elevation.webhook_url is not".into(),
                ));
            }
            None
        }
        Some(url) => {
            let url = reqwest::Url::parse(&url).map_err(|e| {
                ConfigError::Invalid(format!("elevation.webhook_url {url:?} is not a URL: {e}"))
            })?;
            crate::elevation::webhook::check_url(&url).map_err(ConfigError::Invalid)?;
            if !(1..=60).contains(&raw.webhook_timeout_seconds) || raw.webhook_retries > 10 {
                return Err(ConfigError::Invalid(
                    "elevation.webhook_timeout_seconds must be 1-60 and webhook_retries 0-10"
                        .into(),
                ));
            }
            Some(WebhookConfig {
                url,
                timeout: Duration::from_secs(raw.webhook_timeout_seconds),
                retries: raw.webhook_retries,
                secret_file: raw.webhook_secret_file.as_deref().map(abs),
            })
        }
    };
    Ok(ElevationConfig {
        pending_timeout: raw.pending_timeout,
        max_grant: raw.max_grant,
        webhook,
    })
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub request_timeout: Duration,
    pub header_read_timeout: Duration,
    /// `server.idle_timeout_seconds`.
    pub idle_timeout: Duration,
    /// `server.max_connections`.
    pub max_connections: usize,
    pub max_body_bytes: usize,
    pub log_format: LogFormat,
    pub user_ca_key: PathBuf,
    pub host_ca_key: PathBuf,
    /// CA keys in a PKCS#11 token instead of the files above.
    pub pkcs11: Option<crate::hsm::Pkcs11Config>,
    pub database: Database,
    pub policy_dir: PathBuf,
    pub policy_reload: Duration,
    pub limits: Limits,
    /// Ceiling on host certificate lifetime (`certs.host_max_ttl`).
    pub host_max_ttl: Ttl,
    pub login: Option<RawLogin>,
    pub issuers: Vec<crate::oidc::IssuerConfig>,
    pub rate_per_minute: u32,
    pub rate_burst: u32,
    /// `[rate_limit] unauthenticated_per_source_per_minute`.
    pub unauthenticated_per_minute: u32,
    pub elevation: ElevationConfig,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
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
        if !(1..=3600).contains(&raw.server.idle_timeout_seconds) {
            return Err(ConfigError::Invalid(
                "server.idle_timeout_seconds must be 1-3600".into(),
            ));
        }
        if !(16..=1_000_000).contains(&raw.server.max_connections) {
            return Err(ConfigError::Invalid(
                "server.max_connections must be 16-1000000".into(),
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
            .map(|i| {
                let access_token_audience = access_token_audience(&i)?;
                let login = login_rule(&i)?;
                Ok(crate::oidc::IssuerConfig {
                    issuer: i.issuer,
                    audiences: i.audiences,
                    groups_claim: i.groups_claim,
                    ca_bundle: i.ca_bundle.map(|p| abs(&p)),
                    kind: match i.kind {
                        RawKind::Human => IdentityKind::Human,
                        RawKind::Workload => IdentityKind::Workload,
                    },
                    access_token_audience,
                    login,
                })
            })
            .collect::<Result<_, ConfigError>>()?;

        Ok(Config {
            listen,
            tls,
            request_timeout: Duration::from_secs(raw.server.request_timeout_seconds),
            header_read_timeout: Duration::from_secs(raw.server.header_read_timeout_seconds),
            idle_timeout: Duration::from_secs(raw.server.idle_timeout_seconds),
            max_connections: raw.server.max_connections,
            max_body_bytes: raw.server.max_body_bytes,
            log_format: raw.server.log_format,
            user_ca_key: abs(raw.ca.user_key.as_deref().unwrap_or(Path::new("user_ca"))),
            host_ca_key: abs(raw.ca.host_key.as_deref().unwrap_or(Path::new("host_ca"))),
            pkcs11: match raw.ca.pkcs11 {
                Some(_) if raw.ca.user_key.is_some() || raw.ca.host_key.is_some() => {
                    return Err(ConfigError::Invalid(
                        "[ca] names key files and [ca.pkcs11] a token: keep one (keys in an HSM never fall back to files)".into(),
                    ));
                }
                Some(p) => {
                    if p.pin_file.is_some() == p.pin_env.is_some() {
                        return Err(ConfigError::Invalid(
                            "[ca.pkcs11] needs exactly one of pin_file and pin_env".into(),
                        ));
                    }
                    Some(p.resolve(base))
                }
                None => None,
            },
            database: match (&raw.database.path, &raw.database.url) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::Invalid(
                        "[database] has both path (SQLite) and url (PostgreSQL): keep one".into(),
                    ));
                }
                (_, Some(url)) => {
                    if url.contains("password=") || url_has_password(url) {
                        return Err(ConfigError::Invalid(
                            "[database] url contains a password: put it in password_file instead"
                                .into(),
                        ));
                    }
                    Database::Postgres {
                        url: postgres_tls(url, &raw.database, &abs)?,
                        password_file: raw.database.password_file.as_deref().map(abs),
                    }
                }
                (path, None) => {
                    if raw.database.password_file.is_some() {
                        return Err(ConfigError::Invalid(
                            "[database] password_file is for url (PostgreSQL); SQLite has no password".into(),
                        ));
                    }
                    if raw.database.tls.is_some() || raw.database.ca_file.is_some() {
                        return Err(ConfigError::Invalid(
                            "[database] tls and ca_file are for url (PostgreSQL); an SQLite file needs no TLS".into(),
                        ));
                    }
                    Database::Sqlite(abs(path.as_deref().unwrap_or(Path::new("audit.db"))))
                }
            },
            policy_dir: abs(&raw.policy.dir),
            policy_reload: Duration::from_secs(raw.policy.reload_interval_seconds.max(1)),
            limits,
            host_max_ttl,
            login: match raw.login {
                Some(l) => {
                    check_login(&l)?;
                    Some(l)
                }
                None => None,
            },
            issuers,
            rate_per_minute: raw.rate_limit.per_identity_per_minute,
            rate_burst: raw.rate_limit.burst.max(1),
            unauthenticated_per_minute: raw.rate_limit.unauthenticated_per_source_per_minute,
            elevation: resolve_elevation(raw.elevation, &abs)?,
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

/// The PostgreSQL url with `[database] tls` and `ca_file` (made absolute)
/// added as libpq's `sslmode` and `sslrootcert`. What they mean, the
/// default and the checks between them are [`crate::db::Target::postgres`]'s,
/// at [`Database::open`].
fn postgres_tls(
    url: &str,
    raw: &RawDatabase,
    abs: &dyn Fn(&Path) -> PathBuf,
) -> Result<String, ConfigError> {
    let tls = raw
        .tls
        .as_deref()
        .map(|t| {
            t.parse::<crate::db::TlsMode>()
                .map_err(|why| ConfigError::Invalid(format!("[database] tls = {t:?}: {why}")))
        })
        .transpose()?;
    let ca_file = raw.ca_file.as_deref().map(abs);
    let ca_file = ca_file
        .as_deref()
        .map(|p| {
            p.to_str().ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "[database] ca_file {}: the path must be UTF-8",
                    p.display()
                ))
            })
        })
        .transpose()?;
    Ok(crate::db::with_tls_params(url, tls, ca_file))
}

/// `login_claim` and `email_domains` → the issuer's login-name rule. People
/// need one (else they get no personal principal, and the denial says to add
/// it); workloads never have login names, so a rule there is a mistake.
fn login_rule(i: &RawIssuer) -> Result<ca_core::LoginRule, ConfigError> {
    let invalid = |why: &str| ConfigError::Invalid(format!("[[issuers]] {:?}: {why}", i.issuer));
    if matches!(i.kind, RawKind::Workload) {
        if i.login_claim.is_some() || !i.email_domains.is_empty() {
            return Err(invalid(
                "login_claim and email_domains are for kind = \"human\" issuers: workloads get principals from their policy bindings, never login names",
            ));
        }
        return Ok(ca_core::LoginRule::none());
    }
    ca_core::LoginRule::new(i.login_claim.as_deref(), &i.email_domains).map_err(|e| invalid(&e))
}

/// `accept_access_tokens` + `access_token_audience` → the audience access
/// tokens must carry, or `None` (access tokens refused). Both or neither, and
/// only on workload issuers.
fn access_token_audience(i: &RawIssuer) -> Result<Option<String>, ConfigError> {
    let invalid = |why: &str| ConfigError::Invalid(format!("[[issuers]] {:?}: {why}", i.issuer));
    match (i.accept_access_tokens, &i.access_token_audience) {
        (false, None) => Ok(None),
        (false, Some(_)) => Err(invalid(
            "access_token_audience is set but accept_access_tokens is not; set accept_access_tokens = true or remove access_token_audience",
        )),
        (true, _) if matches!(i.kind, RawKind::Human) => Err(invalid(
            "accept_access_tokens is only allowed with kind = \"workload\": an access token shows which client asked, not that a person signed in, so people must log in with ID tokens",
        )),
        (true, Some(aud)) if !aud.trim().is_empty() => Ok(Some(aud.clone())),
        (true, _) => Err(invalid(
            "accept_access_tokens needs access_token_audience: the resource indicator (RFC 8707) your identity provider puts in the access tokens' `aud`, e.g. \"urn:jitssh:ca\"",
        )),
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
# The key file, like every secret file here, must be mode 0600 (not a symlink).
# tls_cert = "tls.crt"
# tls_key = "tls.key"
# Allow plain HTTP on a non-loopback address (only behind a TLS-terminating proxy you control).
danger_allow_plain_http = false
# Whole-request timeout and time allowed to send request headers, in seconds.
request_timeout_seconds = 10
header_read_timeout_seconds = 5
# A connection with no request in progress is closed after this many seconds (keep a
# proxy's upstream keep-alive timeout below it), and at most this many connections are
# held at once (also kept below the open-file limit).
idle_timeout_seconds = 30
max_connections = 16384
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
# SQLite audit database (WAL, synchronous=FULL): one jitssh-ca process.
path = "audit.db"
# Or PostgreSQL, for several replicas behind a load balancer (then no path):
# url = "postgresql://jitssh@db.example.internal:5432/jitssh"
# password_file = "/etc/jitssh/db-password"
# TLS to PostgreSQL, never falling back to plaintext: "verify-full" checks the server's
# certificate against ca_file and the url's host name; "require" encrypts but accepts any
# certificate (no defence against an active attacker on the path); "disable" sends all in
# clear. Default: "verify-full", or "disable" when the url's host is a loopback address,
# localhost or a Unix socket (where PostgreSQL has no TLS).
# tls = "verify-full"
# ca_file = "/etc/jitssh/db-ca.pem"   # PEM: the CA that signed the server's certificate

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
# Refused requests without valid credentials one address may send per minute before
# it gets 429 (valid credentials always pass); such refusals are summarised in the
# audit log once a minute per address, never one row each.
unauthenticated_per_source_per_minute = 120

[elevation]
# Just-in-time roles are defined in the policy (data.json -> roles). An undecided
# request expires after pending_timeout; no grant lasts longer than max_grant.
pending_timeout = "1h"
max_grant = "8h"
# Optional JSON POST on new pending requests and every decision (never blocks requests).
# https only (plain http only to loopback): it names requesters and reasons.
# webhook_url = "https://chat.example.com/hooks/jitssh"
# webhook_timeout_seconds = 5
# webhook_retries = 3
# webhook_secret_file = "webhook.secret"   # adds X-Jitssh-Signature: sha256=HMAC-SHA256 of the body

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
# How a person's login name (their own principal) is derived. Required for kind = "human":
# without it nobody from this issuer gets a personal principal. "email" takes the local part
# of a verified email, only for email_domains (exact, case-insensitive; no subdomains);
# "preferred_username" only if users cannot edit it at this IdP. A login name belongs to the
# first issuer + subject that receives it (`jitssh-ca login-name` lists, releases, maps).
# login_claim = "email"
# email_domains = ["example.com"]
# Workload issuers only: also accept RFC 9068 JWT access tokens (`typ: at+jwt`, e.g. from
# `jitssh cert --client-id`) whose `aud` contains access_token_audience (the resource indicator).
# accept_access_tokens = false
# access_token_audience = "urn:jitssh:ca"
"#
    )
}

/// The commented-out login rule [`template`] writes.
const TEMPLATE_LOGIN_RULE: &str =
    "# login_claim = \"email\"\n# email_domains = [\"example.com\"]\n";

/// `template` with the login rule set (`jitssh-ca init --login-claim
/// --email-domain`): `claim` defaults to `"email"` when domains are given.
/// Checked as the config load checks it. Without either, the template is
/// unchanged (the rule stays commented out: people get no personal principal).
pub fn with_login_rule(
    template: &str,
    claim: Option<&str>,
    email_domains: &[String],
) -> Result<String, ConfigError> {
    let claim = match claim {
        None if email_domains.is_empty() => return Ok(template.to_owned()),
        None => "email",
        Some(c) => c,
    };
    let rule = ca_core::LoginRule::new(Some(claim), email_domains)
        .map_err(|e| ConfigError::Invalid(format!("[[issuers]]: {e}")))?;
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let mut lines = format!("login_claim = {}\n", quote(claim));
    if !rule.email_domains().is_empty() {
        let domains: Vec<String> = rule.email_domains().iter().map(|d| quote(d)).collect();
        lines.push_str(&format!("email_domains = [{}]\n", domains.join(", ")));
    }
    Ok(template.replacen(TEMPLATE_LOGIN_RULE, &lines, 1))
}

/// [`template`] for CA keys inside a PKCS#11 token (`jitssh-ca init --pkcs11`).
pub fn template_pkcs11(issuer: &str, audience: &str, hsm: &crate::hsm::Pkcs11Config) -> String {
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let mut ca = format!(
        "[ca]\n# CA keys inside a PKCS#11 token (HSM): the private keys never leave it, and\n\
         # when it cannot sign the CA answers 503; there is no fallback to key files.\n\
         [ca.pkcs11]\nmodule = {}\ntoken_label = {}\n",
        quote(&hsm.module.display().to_string()),
        quote(&hsm.token_label)
    );
    if let Some(f) = &hsm.pin_file {
        ca.push_str(&format!("pin_file = {}\n", quote(&f.display().to_string())));
    }
    if let Some(v) = &hsm.pin_env {
        ca.push_str(&format!("pin_env = {}\n", quote(v)));
    }
    ca.push_str(&format!(
        "user_key_label = {}\nhost_key_label = {}\n",
        quote(&hsm.user_key_label),
        quote(&hsm.host_key_label)
    ));
    let files = template(issuer, audience);
    let start = files.find("[ca]\n").unwrap_or(0);
    let end = files.find("[database]").unwrap_or(files.len());
    format!("{}{ca}\n{}", &files[..start], &files[end..])
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
    fn pkcs11_keys_replace_key_files() {
        let hsm = crate::hsm::Pkcs11Config {
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token_label: "ca \"prod\"".into(),
            pin_file: Some("hsm.pin".into()),
            pin_env: None,
            user_key_label: "u".into(),
            host_key_label: "h".into(),
        };
        let t = template_pkcs11("https://idp.example.com", "jitssh", &hsm);
        assert!(!t.contains("user_key ="), "{t}");
        let c = parse(&t).unwrap();
        let p = c.pkcs11.unwrap();
        assert_eq!(p.token_label, "ca \"prod\"");
        assert_eq!(
            p.pin_file.unwrap(),
            Path::new("/etc/jitssh/hsm.pin"),
            "relative to the config"
        );
        // Files and a token at once, or no PIN source / two: refused.
        let both = t.replace("[ca]\n", "[ca]\nuser_key = \"user_ca\"\n");
        assert!(parse(&both).unwrap_err().to_string().contains("keep one"));
        let no_pin = t.replace("pin_file = \"hsm.pin\"\n", "");
        assert!(parse(&no_pin).unwrap_err().to_string().contains("pin_file"));
        let two = t.replace(
            "pin_file = \"hsm.pin\"\n",
            "pin_file = \"p\"\npin_env = \"X\"\n",
        );
        assert!(parse(&two).is_err());
    }

    #[test]
    fn login_authorization_params_are_served_but_never_jitssh_own() {
        let t = template("https://idp.example.com", "jitssh");
        let with = |extra: &str| {
            parse(&t.replace(
                "scopes = [\"openid\", \"email\", \"profile\", \"groups\", \"offline_access\"]",
                &format!("scopes = [\"openid\", \"offline_access\"]\n{extra}"),
            ))
        };
        let c =
            with("authorization_params = { access_type = \"offline\", prompt = \"\" }").unwrap();
        let login = c.login.unwrap();
        assert_eq!(login.authorization_params["access_type"], "offline");
        assert_eq!(login.authorization_params["prompt"], "");
        for reserved in RESERVED_AUTHORIZATION_PARAMS {
            let e = with(&format!("authorization_params = {{ {reserved} = \"x\" }}"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(reserved) && e.contains("set by jitssh itself"),
                "{e}"
            );
        }
    }

    #[test]
    fn elevation_section_is_checked() {
        let t = template("https://idp.example.com", "jitssh");
        let c = parse(&t).unwrap();
        assert_eq!(c.elevation.pending_timeout.as_secs(), 3600);
        assert_eq!(c.elevation.max_grant.as_secs(), 8 * 3600);
        assert!(c.elevation.webhook.is_none());
        let with = |extra: &str| {
            parse(&t.replace(
                "max_grant = \"8h\"",
                &format!("max_grant = \"8h\"\n{extra}"),
            ))
        };
        let c = with("webhook_url = \"https://hooks.example.com/x\"\nwebhook_secret_file = \"s\"")
            .unwrap();
        let hook = c.elevation.webhook.unwrap();
        assert_eq!(hook.url.as_str(), "https://hooks.example.com/x");
        assert!(hook.secret_file.unwrap().is_absolute());
        for bad in [
            "webhook_url = \"not a url\"",
            "webhook_url = \"ftp://x/y\"",
            "webhook_url = \"http://hooks.example.com/x\"",
            "webhook_secret_file = \"s\"",
            "webhook_url = \"https://x/\"\nwebhook_timeout_seconds = 0",
            "webhook_url = \"https://x/\"\nwebhook_retries = 99",
            "bogus = 1",
        ] {
            assert!(with(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn template_parses_as_written() {
        let c = parse(&template("https://idp.example.com", "jitssh")).unwrap();
        assert_eq!(c.user_ca_key, Path::new("/etc/jitssh/user_ca"));
        assert_eq!(c.limits.max_ttl.as_secs(), 3600);
        assert_eq!(c.host_max_ttl.as_secs(), 7 * 86400);
        assert_eq!(c.issuers.len(), 1);
        assert!(
            c.issuers[0].login.is_none(),
            "no login rule until one is set"
        );
    }

    #[test]
    fn login_rules_per_issuer() {
        let t = template("https://idp.example.com", "jitssh");
        let set = with_login_rule(&t, None, &["Example.COM".into()]).unwrap();
        let c = parse(&set).unwrap();
        assert_eq!(
            c.issuers[0].login,
            ca_core::LoginRule::new(Some("email"), &["example.com".into()]).unwrap()
        );
        let pu = parse(&with_login_rule(&t, Some("preferred_username"), &[]).unwrap()).unwrap();
        assert_eq!(
            pu.issuers[0].login,
            ca_core::LoginRule::claim("preferred_username")
        );
        assert_eq!(with_login_rule(&t, None, &[]).unwrap(), t);
        for (claim, domains, why) in [
            (Some("email"), vec![], "needs email_domains"),
            (None, vec!["*.example.com".to_owned()], "not a domain name"),
            (
                Some("preferred_username"),
                vec!["example.com".into()],
                "only with login_claim",
            ),
        ] {
            let e = with_login_rule(&t, claim, &domains)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{e}");
        }
        let with = |extra: &str| {
            parse(&format!(
                "{t}\n[[issuers]]\nissuer = \"https://ci.example.com\"\naudiences = [\"jitssh-ca\"]\n{extra}\n"
            ))
        };
        let e = with("kind = \"workload\"\nlogin_claim = \"preferred_username\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("kind = \"human\" issuers"), "{e}");
        let e = with("login_claim = \"email\"").unwrap_err().to_string();
        assert!(
            e.contains("https://ci.example.com") && e.contains("email_domains"),
            "{e}"
        );
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
    fn access_tokens_only_on_workload_issuers_with_an_audience() {
        let t = template("https://idp.example.com", "jitssh");
        let with = |extra: &str| {
            parse(&format!(
                "{t}\n[[issuers]]\nissuer = \"https://ci.example.com\"\naudiences = [\"jitssh-ca\"]\n{extra}\n"
            ))
        };
        let c = with("kind = \"workload\"\naccept_access_tokens = true\naccess_token_audience = \"urn:jitssh:ca\"").unwrap();
        assert_eq!(
            c.issuers[1].access_token_audience.as_deref(),
            Some("urn:jitssh:ca")
        );
        assert_eq!(c.issuers[0].access_token_audience, None);
        // The template's issuer is human: say why it cannot accept access tokens.
        let human = t.replace(
            "# accept_access_tokens = false\n# access_token_audience = \"urn:jitssh:ca\"",
            "accept_access_tokens = true\naccess_token_audience = \"urn:jitssh:ca\"",
        );
        let err = parse(&human).unwrap_err().to_string();
        assert!(
            err.contains("only allowed with kind = \"workload\""),
            "{err}"
        );
        for bad in [
            "kind = \"workload\"\naccept_access_tokens = true",
            "kind = \"workload\"\naccept_access_tokens = true\naccess_token_audience = \" \"",
            "kind = \"workload\"\naccess_token_audience = \"urn:jitssh:ca\"",
        ] {
            assert!(with(bad).is_err(), "{bad}");
        }
    }

    /// The template with `[database] url = URL` and `extra` lines.
    fn with_postgres(url: &str, extra: &str) -> Result<Config, ConfigError> {
        let t = template("https://idp.example.com", "jitssh");
        parse(&t.replacen(
            "path = \"audit.db\"\n",
            &format!("url = \"{url}\"\n{extra}\n"),
            1,
        ))
    }

    const REMOTE: &str = "postgresql://jitssh@db.example:5432/jitssh";

    #[test]
    fn database_is_one_backend_and_keeps_passwords_out_of_the_url() {
        let err = |url: &str, extra: &str| with_postgres(url, extra).unwrap_err().to_string();
        // path and url together.
        let both = err(REMOTE, "path = \"audit.db\"");
        assert!(
            both.contains("both path") && both.contains("keep one"),
            "{both}"
        );
        // A password in the url, either form.
        for url in [
            "postgresql://jitssh:secret@db.example/jitssh",
            "host=db.example user=jitssh password=secret dbname=jitssh",
        ] {
            let msg = err(url, "");
            assert!(msg.contains("password_file"), "{url}: {msg}");
            assert!(
                !msg.contains("secret"),
                "the message must not echo it: {msg}"
            );
        }
        // A password file beside an SQLite path makes no sense.
        let t = template("https://idp.example.com", "jitssh");
        let msg = parse(&t.replacen(
            "path = \"audit.db\"\n",
            "path = \"audit.db\"\npassword_file = \"pw\"\n",
            1,
        ))
        .unwrap_err()
        .to_string();
        assert!(msg.contains("SQLite has no password"), "{msg}");
        // The password file is read at open, relative to the config, with a
        // clear error when missing.
        let c = with_postgres(
            REMOTE,
            "password_file = \"/nonexistent/pw\"\ntls = \"require\"",
        )
        .unwrap();
        let msg = c.database.open().unwrap_err().to_string();
        assert!(msg.contains("/nonexistent/pw"), "{msg}");
        // ... and refused, like a CA key, when others may read it.
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "hunter2\n").unwrap();
        let open = |mode| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(mode)).unwrap();
            let extra = format!("password_file = {:?}\ntls = \"require\"", pw.display());
            with_postgres(REMOTE, &extra).unwrap().database.open()
        };
        let msg = open(0o640).unwrap_err().to_string();
        assert!(
            msg.contains("[database] password_file")
                && msg.contains(&format!("chmod 600 {}", pw.display())),
            "{msg}"
        );
        assert!(open(0o600).is_ok());
        // A user without a password in the url is fine.
        assert!(with_postgres(REMOTE, "tls = \"require\"").is_ok());
    }

    #[test]
    fn database_tls_modes() {
        use crate::db::TlsMode;
        let mode = |url: &str, extra: &str| {
            let c = with_postgres(url, extra).unwrap();
            c.database.open().unwrap().target().tls_mode().unwrap()
        };
        assert_eq!(mode(REMOTE, "tls = \"require\""), TlsMode::Require);
        assert_eq!(mode(REMOTE, "tls = \"disable\""), TlsMode::Disable);
        // On loopback the default is plaintext, and TLS can be asked for.
        let local = "postgresql://jitssh@127.0.0.1:5432/jitssh";
        assert_eq!(mode(local, ""), TlsMode::Disable);
        assert_eq!(mode(local, "tls = \"require\""), TlsMode::Require);
        // Elsewhere verify-full, which wants a CA file: said at startup.
        let err = with_postgres(REMOTE, "")
            .unwrap()
            .database
            .open()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[database] tls = \"verify-full\"")
                && err.contains("needs ca_file")
                && err.contains("db.example"),
            "{err}"
        );
        // Unknown values are refused with the allowed ones, and those that
        // would fall back to plaintext with why.
        for bad in ["verify-ca", "prefer", "on", "VERIFY-FULL"] {
            let err = with_postgres(REMOTE, &format!("tls = \"{bad}\""))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("[database] tls")
                    && err.contains(r#""verify-full", "require" or "disable""#),
                "{err}"
            );
        }
        let err = with_postgres(REMOTE, "tls = \"prefer\"").unwrap_err();
        assert!(err.to_string().contains("plaintext"), "{err}");
        // TLS keys are for PostgreSQL only.
        let t = template("https://idp.example.com", "jitssh");
        let err = parse(&t.replace(
            "path = \"audit.db\"\n",
            "path = \"audit.db\"\ntls = \"require\"\n",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("SQLite"), "{err}");
    }

    #[test]
    fn database_ca_file_is_relative_to_the_config() {
        let c = with_postgres(REMOTE, "ca_file = \"db-ca.pem\"").unwrap();
        let Database::Postgres { url, .. } = &c.database else {
            panic!("{:?}", c.database)
        };
        // A CA file alone means verify-full.
        assert_eq!(url, &format!("{REMOTE}?sslrootcert=/etc/jitssh/db-ca.pem"));
        let err = c.database.open().unwrap_err().to_string();
        assert!(
            err.contains("[database] ca_file /etc/jitssh/db-ca.pem: cannot read it"),
            "{err}"
        );
        let c = with_postgres(
            REMOTE,
            "tls = \"verify-full\"\nca_file = \"/srv/pki/ca.pem\"",
        )
        .unwrap();
        let Database::Postgres { url, .. } = &c.database else {
            panic!("{:?}", c.database)
        };
        assert_eq!(
            url,
            &format!("{REMOTE}?sslmode=verify-full&sslrootcert=/srv/pki/ca.pem")
        );
        // A CA file is only for verify-full.
        let err = with_postgres(REMOTE, "tls = \"require\"\nca_file = \"ca.pem\"")
            .unwrap()
            .database
            .open()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("only used with tls = \"verify-full\""),
            "{err}"
        );
    }

    #[test]
    fn database_tls_is_set_once() {
        // libpq's sslmode in the url still works (the k8s example uses it)...
        let c = with_postgres(&format!("{REMOTE}?sslmode=disable"), "").unwrap();
        let db = c.database.open().unwrap();
        assert_eq!(db.target().tls_mode(), Some(crate::db::TlsMode::Disable));
        // ... but not as well as [database] tls.
        let err = with_postgres(&format!("{REMOTE}?sslmode=disable"), "tls = \"require\"")
            .unwrap()
            .database
            .open()
            .unwrap_err()
            .to_string();
        assert!(err.contains("keep one"), "{err}");
        let err = with_postgres(
            &format!("{REMOTE}?sslrootcert=/a.pem"),
            "ca_file = \"/b.pem\"",
        )
        .unwrap()
        .database
        .open()
        .unwrap_err()
        .to_string();
        assert!(err.contains("keep one"), "{err}");
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
