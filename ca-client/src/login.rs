//! `jitssh login`: CA config → ID token (cached refresh token, browser, or
//! device flow) → fresh key → certificate → ssh-agent (or files) →
//! known_hosts → one summary line.

use std::path::PathBuf;
use std::time::Duration;

use ca_core::wire::UserCertRequest;
use ssh_key::{Certificate, PrivateKey};

use crate::Context;
use crate::agent::{Agent, AgentError};
use crate::ca::{CaClient, CaError, describe_skew, skew};
use crate::certs::{self, CertError};
use crate::duration::{local_time, time_left, unix_now};
use crate::oidc::{Interaction, OidcError, Provider, Tokens};
use crate::paths::NoHome;
use crate::profile::{ProfileError, Target};
use crate::store::{ProfileStore, Session, StoreError, TokenCache};

/// How long to wait for the user at the browser or device by default.
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(300);
/// Environment variable overriding [`DEFAULT_LOGIN_TIMEOUT`] (e.g. `20s`; for tests and slow users).
pub const LOGIN_TIMEOUT_ENV: &str = "JITSSH_LOGIN_TIMEOUT";

/// Why `login` (or the login inside `ensure`) failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Home(#[from] NoHome),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Oidc(#[from] OidcError),
    #[error("{}", denied_message(.message, .reasons))]
    Denied {
        message: String,
        reasons: Vec<String>,
    },
    #[error(
        "the CA did not accept your ID token ({code}: {message}); run `jitssh login --force`, and if that fails ask the CA's operator to check its [[issuers]]"
    )]
    TokenRejected { code: String, message: String },
    #[error("the CA refused the request ({code}): {message}")]
    Refused { code: String, message: String },
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("{0}")]
    ClockSkew(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{LOGIN_TIMEOUT_ENV}: {0}")]
    Timeout(String),
}

fn denied_message(message: &str, reasons: &[String]) -> String {
    let mut text = "the CA's policy refused the certificate:".to_owned();
    if reasons.is_empty() {
        text.push(' ');
        text.push_str(message);
    }
    for r in reasons {
        text.push_str("\n  - ");
        text.push_str(r);
    }
    text.push_str(
        "\nAsk for principals you are allowed (--principal), a shorter --ttl, or ask the CA's operator for access",
    );
    text
}

/// What to ask for and how to sign in.
#[derive(Clone, Debug, Default)]
pub struct LoginOptions {
    pub principals: Vec<String>,
    pub ttl_seconds: Option<u64>,
    pub reason: Option<String>,
    pub device: bool,
    pub open_browser: bool,
    /// `Some(None)`: write files to the default directory; `Some(Some(d))`: to `d`.
    pub write: Option<Option<PathBuf>>,
    pub force: bool,
}

/// Where the certificate went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Agent(PathBuf),
    Files { key: PathBuf, cert: PathBuf },
}

/// A successful login.
#[derive(Debug)]
pub struct LoginOutcome {
    pub principals: Vec<String>,
    pub serial: String,
    pub valid_before: u64,
    pub delivery: Delivery,
    /// Whether a cached refresh token made the browser unnecessary.
    pub silent: bool,
}

impl LoginOutcome {
    /// The one-line summary: principals, expiry in local time, minutes left.
    pub fn summary(&self, paths: &crate::paths::Paths, now: u64) -> String {
        let left = i64::try_from(self.valid_before).unwrap_or(i64::MAX)
            - i64::try_from(now).unwrap_or(i64::MAX);
        let place = match &self.delivery {
            Delivery::Agent(_) => "in ssh-agent".to_owned(),
            Delivery::Files { key, .. } => format!("in {}", paths.tilde(key)),
        };
        format!(
            "Certificate for {} (serial {}) {place}, valid until {} ({}).",
            self.principals.join(", "),
            self.serial,
            local_time(self.valid_before, now),
            time_left(left)
        )
    }
}

/// The login timeout from the environment, or the default.
pub fn login_timeout() -> Result<Duration, LoginError> {
    match std::env::var(LOGIN_TIMEOUT_ENV) {
        Ok(v) if !v.trim().is_empty() => {
            crate::duration::parse_duration(&v).map_err(LoginError::Timeout)
        }
        _ => Ok(DEFAULT_LOGIN_TIMEOUT),
    }
}

/// Run a login for `target`.
pub async fn login(
    ctx: &Context,
    target: &Target,
    opts: &LoginOptions,
) -> Result<LoginOutcome, LoginError> {
    let ca = CaClient::new(target.ca()?.clone(), ctx.http.clone(), ctx.ca_timeout);
    let config = ca.config().await?;
    if let Some(server_time) = config.server_time
        && let Some(text) = describe_skew(skew(server_time, unix_now()))
    {
        ctx.ui.warn(&text);
    }
    let config = config.value;
    let keys = ca.keys().await?.value;
    let user_ca = certs::parse_ca_keys(&keys.user_ca);
    let store = ProfileStore::new(ctx.paths.profile_state(&target.profile));
    let provider = discover(ctx, &config, target).await?;
    let how = Interaction {
        open_browser: opts.open_browser,
        timeout: login_timeout()?,
    };

    let (mut tokens, mut silent) =
        sign_in(ctx, &provider, &store, &config.client_id, opts, &how).await?;
    let key = certs::generate_key()?;
    let request = UserCertRequest {
        public_key: certs::public_line(&key)?,
        principals: (!opts.principals.is_empty()).then(|| opts.principals.clone()),
        ttl_seconds: opts.ttl_seconds,
        reason: opts.reason.clone(),
    };
    let mut refreshed_again = 0;
    let issued = loop {
        match ca.issue(&tokens.id_token, &request).await {
            Ok(answer) => break answer,
            // The provider answered a refresh with the very claims of a token
            // the CA already spent (same second, no unique claim): the CA
            // counts signed content, not signature bytes, so it is the same
            // token. A second later the provider signs a new `iat`.
            Err(CaError::Api {
                status: 401,
                ref code,
                ..
            }) if silent && code == "token_replayed" && refreshed_again < 2 => {
                refreshed_again += 1;
                tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
                (tokens, silent) =
                    sign_in(ctx, &provider, &store, &config.client_id, opts, &how).await?;
            }
            // A token from a refresh may lack what the CA needs (or be refused
            // for being one): one interactive sign-in, then the request again.
            Err(CaError::Api { status: 401, .. }) if silent => {
                ctx.ui
                    .info("The CA did not accept the cached sign-in; signing in again.");
                let _ = store.forget_token();
                tokens = interactive(ctx, &provider, &how, opts.device).await?;
                save_refresh_token(&store, &provider, &config.client_id, &tokens)?;
                silent = false;
            }
            Err(e) => return Err(refusal(e)),
        }
    };
    let now = unix_now();
    let skew_text = issued.server_time.and_then(|t| describe_skew(skew(t, now)));
    let resp = issued.value;
    let cert = match certs::check_issued(&resp.certificate, &key, &user_ca, now) {
        Ok(cert) => cert,
        // The CA's Date header tells by how much, which is the better message.
        Err(CertError::ClockSkew { .. }) if skew_text.is_some() => {
            return Err(LoginError::ClockSkew(skew_text.unwrap_or_default()));
        }
        Err(e) => return Err(e.into()),
    };

    let previous = store.load_session();
    let mut session = Session {
        ca: ca.base().to_string(),
        user_ca: keys.user_ca.clone(),
        principals: opts.principals.clone(),
        ttl_seconds: opts.ttl_seconds,
        reason: opts.reason.clone(),
        files: previous
            .as_ref()
            .map(|s| s.files.iter().filter(|f| f.exists()).cloned().collect())
            .unwrap_or_default(),
        write_dir: None,
    };
    let delivery = deliver(
        ctx,
        target,
        opts,
        &key,
        &cert,
        &resp.key_id,
        &user_ca,
        now,
        &mut session,
    )?;

    let patterns = target.defaults.hosts.as_deref().unwrap_or("*");
    let lines: Vec<String> = keys
        .host_ca
        .iter()
        .filter_map(|k| certs::known_hosts_line(k, patterns, &target.profile))
        .collect();
    certs::update_known_hosts(&ctx.paths.known_hosts(), &target.profile, &lines)?;
    // The hosts the CA revoked, for ssh's `RevokedHostKeys` (`jitssh config`).
    let krl = crate::hostkrl::path(&ctx.paths, &target.profile);
    if let Err(e) = crate::hostkrl::refresh(&ca, &krl).await {
        ctx.ui.warn(&format!(
            "{e}; {} keeps the last list",
            ctx.paths.tilde(&krl)
        ));
    }
    store.save_session(&session)?;

    Ok(LoginOutcome {
        principals: resp.principals,
        serial: resp.serial,
        valid_before: resp.valid_before,
        delivery,
        silent,
    })
}

/// An ID token: from the cached refresh token when possible, else interactively.
pub(crate) async fn sign_in(
    ctx: &Context,
    provider: &Provider,
    store: &ProfileStore,
    client_id: &str,
    opts: &LoginOptions,
    how: &Interaction,
) -> Result<(Tokens, bool), LoginError> {
    if !opts.force
        && let Some(cache) = store.load_token(provider.issuer(), client_id)
    {
        match provider.refresh(&cache.refresh_token).await {
            Ok(tokens) => {
                save_refresh_token(store, provider, client_id, &tokens)?;
                return Ok((tokens, true));
            }
            Err(e @ OidcError::Unreachable { .. }) => return Err(e.into()),
            Err(e) => {
                if e.is_rejected_grant() {
                    ctx.ui
                        .info("The cached sign-in has expired; signing in again.");
                } else {
                    ctx.ui.warn(&format!(
                        "cannot use the cached sign-in ({e}); signing in again"
                    ));
                }
                store.forget_token()?;
            }
        }
    }
    let tokens = interactive(ctx, provider, how, opts.device).await?;
    save_refresh_token(store, provider, client_id, &tokens)?;
    if tokens.refresh_token.is_none() {
        ctx.ui.warn(&format!(
            "{} returned no refresh token, so the next login (and `jitssh ensure`) opens the browser again; \
             ask the CA operator to set [login] authorization_params for this provider \
             (Google: access_type = \"offline\"), or set authorization_params in your profile",
            provider.issuer()
        ));
    }
    Ok((tokens, false))
}

async fn interactive(
    ctx: &Context,
    provider: &Provider,
    how: &Interaction,
    device: bool,
) -> Result<Tokens, OidcError> {
    if device {
        provider.device(&ctx.ui, how).await
    } else {
        provider.auth_code(&ctx.ui, how).await
    }
}

/// The CA's provider, asking for offline access the way it grants it
/// (`oidc::authorization_params`: the CA's and the profile's settings).
pub(crate) async fn discover(
    ctx: &Context,
    config: &ca_core::wire::ClientConfig,
    target: &Target,
) -> Result<Provider, crate::oidc::OidcError> {
    let params = crate::oidc::authorization_params(
        &config.issuer,
        &config.scopes,
        &config.authorization_params,
        &target.defaults.authorization_params,
    );
    Ok(
        Provider::discover(&ctx.http, &config.issuer, &config.client_id, &config.scopes)
            .await?
            .with_authorization_params(params),
    )
}

fn save_refresh_token(
    store: &ProfileStore,
    provider: &Provider,
    client_id: &str,
    tokens: &Tokens,
) -> Result<(), StoreError> {
    match &tokens.refresh_token {
        Some(refresh_token) => store.save_token(&TokenCache {
            issuer: provider.issuer().to_owned(),
            client_id: client_id.to_owned(),
            refresh_token: refresh_token.clone(),
            saved_at: unix_now(),
        }),
        None => store.forget_token().map(|_| ()),
    }
}

/// A refused certificate request, in words that say what to do.
fn refusal(e: CaError) -> LoginError {
    match e {
        CaError::Api {
            code,
            message,
            reasons,
            ..
        } => match code.as_str() {
            "denied_by_policy" => LoginError::Denied { message, reasons },
            c if c.starts_with("token_") => LoginError::TokenRejected { code, message },
            _ => LoginError::Refused { code, message },
        },
        other => LoginError::Ca(other),
    }
}

/// Put the key and certificate in the agent, or in files.
#[allow(clippy::too_many_arguments)]
fn deliver(
    ctx: &Context,
    target: &Target,
    opts: &LoginOptions,
    key: &PrivateKey,
    cert: &Certificate,
    key_id: &str,
    user_ca: &[ssh_key::PublicKey],
    now: u64,
    session: &mut Session,
) -> Result<Delivery, LoginError> {
    let to_files = |dir: PathBuf, session: &mut Session| -> Result<Delivery, LoginError> {
        let (key_path, cert_path) = certs::write_files(&dir, &target.profile, key, cert)?;
        for p in [&key_path, &cert_path] {
            if !session.files.contains(p) {
                session.files.push(p.clone());
            }
        }
        session.write_dir = Some(dir);
        Ok(Delivery::Files {
            key: key_path,
            cert: cert_path,
        })
    };
    if let Some(dir) = &opts.write {
        let dir = dir.clone().unwrap_or_else(|| ctx.paths.ssh_dir.clone());
        return to_files(dir, session);
    }
    let mut agent = match Agent::from_env() {
        Ok(agent) => agent,
        Err(AgentError::NotRunning) => {
            ctx.ui.warn(
                "no ssh-agent is running (SSH_AUTH_SOCK is not set), so the key goes to a file. \
                 Start one with `eval \"$(ssh-agent)\"` to keep keys off the disk",
            );
            return to_files(ctx.paths.ssh_dir.clone(), session);
        }
        Err(e) => return Err(e.into()),
    };
    let lifetime = u32::try_from(cert.valid_before().saturating_sub(now)).unwrap_or(u32::MAX);
    agent.add_certificate(key, cert, lifetime, &format!("jitssh {key_id}"))?;
    // Older certificates from this CA would only be offered to servers in vain.
    for (old, _) in agent.certificates()? {
        if certs::signed_by(&old, user_ca) && old.public_key() != cert.public_key() {
            let _ = agent.remove_certificate(&old);
        }
    }
    Ok(Delivery::Agent(agent.socket().to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn denial_lists_the_policy_reasons() {
        let e = refusal(CaError::Api {
            status: 403,
            code: "denied_by_policy".into(),
            message: "the policy denied this request".into(),
            reasons: vec![
                "none of the requested principals (root) is allowed for ann; allowed: ann, dev"
                    .into(),
            ],
        });
        assert_eq!(
            e.to_string(),
            "the CA's policy refused the certificate:\n  \
             - none of the requested principals (root) is allowed for ann; allowed: ann, dev\n\
             Ask for principals you are allowed (--principal), a shorter --ttl, or ask the CA's operator for access"
        );
    }

    #[test]
    fn token_refusals_say_what_to_do() {
        let e = refusal(CaError::Api {
            status: 401,
            code: "token_invalid".into(),
            message: "bad audience".into(),
            reasons: vec![],
        });
        assert!(matches!(e, LoginError::TokenRejected { .. }));
        assert!(e.to_string().contains("jitssh login --force"), "{e}");
    }

    #[test]
    fn summary_line() {
        let outcome = LoginOutcome {
            principals: vec!["ann".into(), "dev".into()],
            serial: "42".into(),
            valid_before: 1_800_001_800,
            delivery: Delivery::Agent("/tmp/agent.sock".into()),
            silent: false,
        };
        let paths = crate::paths::Paths::from_vars(|_| Some("/home/ann".into())).unwrap();
        let line = outcome.summary(&paths, 1_800_000_000);
        assert!(
            line.starts_with("Certificate for ann, dev (serial 42) in ssh-agent, valid until "),
            "{line}"
        );
        assert!(line.ends_with(" (30 min left)."), "{line}");
    }
}
