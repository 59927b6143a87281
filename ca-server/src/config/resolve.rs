//! `RawConfig` → `Config`: every setting checked, paths made absolute
//! (relative to the config file), values bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ca_core::wire::RESERVED_AUTHORIZATION_PARAMS;
use ca_core::{IdentityKind, Limits, Ttl};

use super::database::{self, Database};
use super::error::ConfigError;
use super::raw::{
    LogFormat, RawConfig, RawElevation, RawIssuer, RawKind, RawLogin, RawUi, default_max_grant,
    default_pending_timeout,
};

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
    /// The web console (`[ui]`); `None` when disabled.
    pub ui: Option<UiConfig>,
}

/// The resolved `[ui]` section: the console is on.
#[derive(Debug, Clone)]
pub struct UiConfig {
    /// Scheme, host and port browsers use (no path); the sign-in redirect
    /// is `{public_url}/ui/callback`.
    pub public_url: reqwest::Url,
    /// The OpenID provider (`[login] issuer`, one of `[[issuers]]`).
    pub issuer: String,
    /// The console's client ID (an audience of that issuer).
    pub client_id: String,
    /// The file with the client's secret, when the provider wants a
    /// confidential client; read when the console opens.
    pub client_secret_file: Option<PathBuf>,
    /// The scopes it asks for: `[login] scopes` without `offline_access`
    /// (the console keeps no token, so it wants no refresh token).
    pub scopes: Vec<String>,
    pub idle_timeout: Duration,
    pub max_session: Duration,
}

impl UiConfig {
    /// The session cookie is `Secure` unless browsers reach the CA over
    /// plain HTTP, which `resolve_ui` allows only on loopback.
    pub fn secure_cookies(&self) -> bool {
        self.public_url.scheme() == "https"
    }
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
            .collect::<Result<Vec<_>, ConfigError>>()?;

        let login = match raw.login {
            Some(l) => {
                check_login(&l)?;
                Some(l)
            }
            None => None,
        };
        let ui = resolve_ui(raw.ui, login.as_ref(), &issuers, &abs)?;
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
            database: database::resolve(&raw.database, &abs)?,
            policy_dir: abs(&raw.policy.dir),
            policy_reload: Duration::from_secs(raw.policy.reload_interval_seconds.max(1)),
            limits,
            host_max_ttl,
            login,
            issuers,
            rate_per_minute: raw.rate_limit.per_identity_per_minute,
            rate_burst: raw.rate_limit.burst.max(1),
            unauthenticated_per_minute: raw.rate_limit.unauthenticated_per_source_per_minute,
            elevation: resolve_elevation(raw.elevation, &abs)?,
            ui,
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
            check_webhook_url(&url).map_err(ConfigError::Invalid)?;
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

/// Whether `url` names this host: `localhost`, 127.0.0.0/8 or `[::1]`
/// (where plain http is allowed: it never leaves the machine).
fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Notifications name the requester, the role and the reason: they go
/// only over HTTPS, or over plain HTTP to this host (loopback: `localhost`,
/// 127.0.0.0/8, ::1), say to a local relay.
pub fn check_webhook_url(url: &reqwest::Url) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err(format!(
            "elevation.webhook_url {url} is plain http: notifications carry who asked for what and why; \
             use an https URL (plain http only to loopback: localhost, 127.0.0.1, [::1])"
        )),
        _ => Err("elevation.webhook_url must be an https URL".into()),
    }
}

/// `[ui]` → the console's settings, or `None` when it is off. Sign-in uses
/// the `[login]` provider, which must be one of `[[issuers]]` (a human one)
/// with the console's client ID among its audiences, so the console's ID
/// tokens pass the same verifier as the API's.
fn resolve_ui(
    raw: RawUi,
    login: Option<&RawLogin>,
    issuers: &[crate::oidc::IssuerConfig],
    abs: &dyn Fn(&Path) -> PathBuf,
) -> Result<Option<UiConfig>, ConfigError> {
    if !raw.enabled {
        return Ok(None);
    }
    let invalid = |why: String| Err(ConfigError::Invalid(format!("[ui]: {why}")));
    let Some(login) = login else {
        return invalid(
            "the console signs people in with the [login] provider; add a [login] section".into(),
        );
    };
    let Some(public_url) = raw.public_url else {
        return invalid(
            "set public_url to the address browsers use, e.g. \"https://ca.example.com\"".into(),
        );
    };
    let url = match reqwest::Url::parse(&public_url) {
        Ok(u) => u,
        Err(e) => return invalid(format!("public_url {public_url:?} is not a URL: {e}")),
    };
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        _ => {
            return invalid(format!(
                "public_url {public_url:?} must be https (plain http only on loopback): the session cookie travels on it"
            ));
        }
    }
    if url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return invalid(format!(
            "public_url {public_url:?} must be scheme, host and port only (the console is served under /ui/)"
        ));
    }
    let client_id = raw.client_id.unwrap_or_else(|| login.client_id.clone());
    let Some(issuer) = issuers.iter().find(|i| i.issuer == login.issuer) else {
        return invalid(format!(
            "the [login] issuer {:?} is not one of [[issuers]]: add it there so the console's ID tokens can be verified",
            login.issuer
        ));
    };
    if issuer.kind != IdentityKind::Human {
        return invalid(format!(
            "the [login] issuer {:?} is kind = \"workload\"; people sign in with a human issuer",
            login.issuer
        ));
    }
    if !issuer.audiences.contains(&client_id) {
        return invalid(format!(
            "client ID {client_id:?} is not among the audiences of [[issuers]] {:?}; add it there",
            login.issuer
        ));
    }
    if raw.idle_timeout.as_secs() > raw.max_session.as_secs() {
        return invalid("idle_timeout is longer than max_session".into());
    }
    Ok(Some(UiConfig {
        public_url: url,
        issuer: login.issuer.clone(),
        client_id,
        client_secret_file: raw.client_secret_file.as_deref().map(abs),
        scopes: login
            .scopes
            .iter()
            .filter(|s| *s != "offline_access")
            .cloned()
            .collect(),
        idle_timeout: Duration::from_secs(raw.idle_timeout.as_secs()),
        max_session: Duration::from_secs(raw.max_session.as_secs()),
    }))
}
