//! What the TOML file says (`RawConfig`, serde; unknown fields refused), with
//! each setting's default.

use std::path::PathBuf;
use std::time::Duration;

use ca_core::Ttl;
use serde::Deserialize;

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
    #[serde(default)]
    pub ui: RawUi,
}

/// `[ui]`: the web console under `/ui/` (sign-in with the `[login]` provider).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUi {
    #[serde(default)]
    pub enabled: bool,
    /// Where browsers reach this CA (`https://ca.example.com`); the sign-in
    /// redirect is `{public_url}/ui/callback`.
    pub public_url: Option<String>,
    /// The console's OpenID client ID; default: `[login] client_id`.
    pub client_id: Option<String>,
    /// A file holding the client's secret, for providers that register web
    /// sign-ins as confidential clients (sent as HTTP Basic,
    /// `client_secret_basic`). Without it the console is a public client
    /// (PKCE only).
    pub client_secret_file: Option<std::path::PathBuf>,
    /// A session unused this long ends.
    #[serde(default = "default_ui_idle_timeout")]
    pub idle_timeout: Ttl,
    /// A session ends this long after sign-in, however busy.
    #[serde(default = "default_ui_max_session")]
    pub max_session: Ttl,
}

impl Default for RawUi {
    fn default() -> Self {
        RawUi {
            enabled: false,
            public_url: None,
            client_id: None,
            client_secret_file: None,
            idle_timeout: default_ui_idle_timeout(),
            max_session: default_ui_max_session(),
        }
    }
}

pub(super) fn default_ui_idle_timeout() -> Ttl {
    Ttl::from_secs(30 * 60).unwrap_or_else(|_| unreachable!("30m is within bounds"))
}
pub(super) fn default_ui_max_session() -> Ttl {
    Ttl::from_secs(8 * 3600).unwrap_or_else(|_| unreachable!("8h is within bounds"))
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

pub(super) fn default_pending_timeout() -> Ttl {
    Ttl::from_secs(3600).unwrap_or_else(|_| unreachable!("3600 is within bounds"))
}
pub(super) fn default_max_grant() -> Ttl {
    Ttl::from_secs(8 * 3600).unwrap_or_else(|_| unreachable!("8h is within bounds"))
}
fn default_webhook_timeout() -> u64 {
    5
}
fn default_webhook_retries() -> u32 {
    3
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
