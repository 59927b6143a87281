//! The console's state: its settings, session store, secret and provider
//! client (`Console`), what every handler shares (`UiState`), and the
//! cookie and redirect helpers the pages use.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::OnceCell;

use super::session::SessionStore;
use super::signin::{Endpoints, Secret};
use crate::config::UiConfig;
use crate::issue::Authority;

/// The session cookie: an opaque id (its hash is the row's key).
pub const SESSION_COOKIE: &str = "jitssh_session";
/// The pending sign-in cookie (see `signin`).
pub const LOGIN_COOKIE: &str = "jitssh_login";

/// Why the console could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("console sessions: {0}")]
    Db(#[from] crate::db::DbError),
    #[error("console secret: {0}")]
    Secret(#[from] crate::audit::AuditError),
    #[error("console: {0}")]
    Provider(#[from] crate::oidc::OidcConfigError),
    #[error("console: the [login] issuer {0:?} is not one of [[issuers]]")]
    UnknownIssuer(String),
    #[error("console: {0}")]
    ClientSecret(#[from] crate::secret_file::SecretFileError),
}

/// The console's own state (its sessions, secret and provider client).
pub struct Console {
    pub(super) config: UiConfig,
    pub(super) sessions: SessionStore,
    pub(super) secret: Secret,
    pub(super) idp: reqwest::Client,
    /// `[ui] client_secret_file`'s secret: the console is then a
    /// confidential client and authenticates at the token endpoint.
    pub(super) client_secret: Option<String>,
    /// The live-update streams open now (`decide_events`).
    pub(super) streams: Arc<super::streams::Streams>,
    endpoints: OnceCell<Endpoints>,
    /// The audit page's heavy jobs running now on this server.
    pub jobs: AuditJobs,
}

/// Bounds on the audit page's heavy jobs, per server: one chain
/// verification at a time, a few exports.
pub struct AuditJobs {
    pub verify: Slots,
    pub export: Slots,
}

/// Exports running at once on one server.
const EXPORTS_AT_ONCE: usize = 2;

/// At most `n` holders at once; a [`Slot`] is given back when dropped.
#[derive(Clone)]
pub struct Slots {
    used: Arc<std::sync::atomic::AtomicUsize>,
    max: usize,
}

/// One taken place of [`Slots`].
pub struct Slot(Arc<std::sync::atomic::AtomicUsize>);

impl Slots {
    pub fn new(max: usize) -> Slots {
        Slots {
            used: Arc::default(),
            max,
        }
    }

    /// A place, or `None` when all are taken.
    pub fn try_take(&self) -> Option<Slot> {
        use std::sync::atomic::Ordering;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.used.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Console {
    /// Create the session table and read (or make) the shared secret, in
    /// the audit database of `authority`; the provider is reached with the
    /// verifier's client rules (`opts`, the issuer's CA bundle).
    pub fn open(
        config: UiConfig,
        issuers: &[crate::oidc::IssuerConfig],
        opts: &crate::oidc::VerifierOptions,
        authority: &Authority,
    ) -> Result<Self, ConsoleError> {
        let issuer = issuers
            .iter()
            .find(|i| i.issuer == config.issuer)
            .ok_or_else(|| ConsoleError::UnknownIssuer(config.issuer.clone()))?;
        let https = issuer.issuer.starts_with("https://");
        let idp = crate::oidc::idp_client(issuer, opts, https)?;
        let client_secret = match &config.client_secret_file {
            Some(path) => Some(crate::secret_file::read_line(
                path,
                "[ui] client_secret_file",
            )?),
            None => None,
        };
        Ok(Console {
            client_secret,
            sessions: SessionStore::open(authority.audit.db())?,
            secret: Secret::new(authority.audit.shared_secret("console")?),
            idp,
            streams: Default::default(),
            endpoints: OnceCell::new(),
            jobs: AuditJobs {
                verify: Slots::new(1),
                export: Slots::new(EXPORTS_AT_ONCE),
            },
            config,
        })
    }

    /// The session store (operators and tests).
    pub fn sessions(&self) -> &SessionStore {
        &self.sessions
    }

    /// How many live-update streams are open (tests, metrics).
    pub fn streams_open(&self) -> usize {
        self.streams.count()
    }

    pub(super) fn redirect_uri(&self) -> String {
        format!(
            "{}/ui/callback",
            self.config.public_url.as_str().trim_end_matches('/')
        )
    }

    /// `Set-Cookie` for `name`: `HttpOnly`, `SameSite=Lax`, `Path=/ui`, and
    /// `Secure` unless browsers reach the CA over loopback plain HTTP.
    pub(super) fn cookie(&self, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
        let mut c = format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Lax");
        if self.config.secure_cookies() {
            c.push_str("; Secure");
        }
        if let Some(age) = max_age {
            c.push_str(&format!("; Max-Age={age}"));
        }
        HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// A `Set-Cookie` that removes `name`.
    pub(super) fn clear(&self, name: &str) -> HeaderValue {
        self.cookie(name, "", Some(0))
    }

    /// The provider's endpoints, read once from its discovery document (a
    /// failure is retried on the next sign-in).
    pub(super) async fn endpoints(&self) -> Result<&Endpoints, String> {
        self.endpoints
            .get_or_try_init(|| async {
                let url = reqwest::Url::parse(&format!(
                    "{}/.well-known/openid-configuration",
                    self.config.issuer.trim_end_matches('/')
                ))
                .map_err(|e| e.to_string())?;
                let doc = crate::oidc::get_json(&self.idp, &url).await?;
                Endpoints::from_discovery(&self.config.issuer, &doc)
            })
            .await
    }
}

/// What every console handler shares.
#[derive(Clone)]
pub struct UiState {
    pub authority: Arc<Authority>,
    pub console: Arc<Console>,
}

/// The value of cookie `name` in the request, if any.
pub(super) fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A redirect (303: the next request is a GET).
pub(super) fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}
