//! `jitssh status` and `jitssh logout`: find this CA's certificates in the
//! agent and on disk; show them, or remove them with everything else jitssh
//! keeps for the profile.

use std::path::PathBuf;

use ssh_key::{Certificate, PublicKey};

use crate::Context;
use crate::agent::{Agent, AgentError};
use crate::ca::{CaClient, CaError};
use crate::certs;
use crate::duration::{local_time, time_left, unix_now};
use crate::paths::Paths;
use crate::profile::Target;
use crate::store::{ProfileStore, Session, StoreError, remove_empty_dirs};

/// Where a certificate was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Agent,
    File(PathBuf),
}

/// One of this CA's certificates.
#[derive(Debug, Clone)]
pub struct Found {
    pub source: Source,
    pub cert: Certificate,
}

impl Found {
    /// Seconds of validity left at `now` (negative once expired).
    pub fn seconds_left(&self, now: u64) -> i64 {
        i64::try_from(self.cert.valid_before()).unwrap_or(i64::MAX)
            - i64::try_from(now).unwrap_or(i64::MAX)
    }

    pub fn is_valid(&self, now: u64) -> bool {
        self.cert.valid_after() <= now && now < self.cert.valid_before()
    }
}

/// What a search found, and why parts of it could not look.
#[derive(Debug, Default)]
pub struct Inventory {
    pub found: Vec<Found>,
    /// E.g. "no ssh-agent (SSH_AUTH_SOCK is not set)".
    pub notes: Vec<String>,
}

/// `status` failed before it could look.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Ca(#[from] CaError),
}

/// `logout` could not remove everything.
#[derive(Debug, thiserror::Error)]
pub enum LogoutError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ca(#[from] CaError),
}

/// The user CA keys that identify this CA's certificates: from the last
/// login's record, else asked of the CA (when one is configured).
pub async fn user_ca_keys(
    ctx: &Context,
    target: &Target,
    session: Option<&Session>,
) -> Result<Vec<PublicKey>, CaError> {
    if let Some(s) = session
        && !s.user_ca.is_empty()
    {
        return Ok(certs::parse_ca_keys(&s.user_ca));
    }
    match &target.ca {
        Some(url) => {
            let ca = CaClient::new(url.clone(), ctx.http.clone(), ctx.ca_timeout);
            Ok(certs::parse_ca_keys(&ca.keys().await?.value.user_ca))
        }
        None => Ok(Vec::new()),
    }
}

/// Certificate files jitssh may have written for this profile.
pub fn candidate_files(paths: &Paths, profile: &str, session: Option<&Session>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = session.map(|s| s.files.clone()).unwrap_or_default();
    let key = Paths::key_file(&paths.ssh_dir, profile);
    for f in [Paths::cert_file(&key), key] {
        if !files.contains(&f) {
            files.push(f);
        }
    }
    files
}

/// This CA's certificates in the agent and in the profile's files.
pub fn inventory(
    paths: &Paths,
    profile: &str,
    session: Option<&Session>,
    user_ca: &[PublicKey],
) -> Inventory {
    let mut inv = Inventory::default();
    if user_ca.is_empty() {
        inv.notes
            .push("no earlier login with this profile and no CA configured".into());
        return inv;
    }
    match Agent::from_env().and_then(|mut a| a.certificates()) {
        Ok(certs) => inv.found.extend(
            certs
                .into_iter()
                .filter(|(c, _)| certs::signed_by(c, user_ca))
                .map(|(cert, _)| Found {
                    source: Source::Agent,
                    cert,
                }),
        ),
        Err(AgentError::NotRunning) => inv
            .notes
            .push("no ssh-agent (SSH_AUTH_SOCK is not set)".into()),
        Err(e) => inv.notes.push(e.to_string()),
    }
    for path in candidate_files(paths, profile, session) {
        if !path.to_string_lossy().ends_with("-cert.pub") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if let Ok(cert) = Certificate::from_openssh(text.trim())
            && certs::signed_by(&cert, user_ca)
        {
            inv.found.push(Found {
                source: Source::File(path),
                cert,
            });
        }
    }
    inv
}

/// One line per certificate.
pub fn describe(paths: &Paths, found: &Found, now: u64) -> String {
    let place = match &found.source {
        Source::Agent => "ssh-agent".to_owned(),
        Source::File(p) => paths.tilde(p),
    };
    let state = if found.is_valid(now) {
        time_left(found.seconds_left(now))
    } else if now < found.cert.valid_after() {
        "not yet valid: check your clock".to_owned()
    } else {
        time_left(found.seconds_left(now))
    };
    format!(
        "{place}: {} (serial {}), valid until {} ({state})",
        found.cert.valid_principals().join(", "),
        found.cert.serial(),
        local_time(found.cert.valid_before(), now),
    )
}

/// `jitssh status`: prints the certificates; `Ok(true)` when one is valid.
pub async fn status(ctx: &Context, target: &Target) -> Result<bool, StatusError> {
    let store = ProfileStore::new(ctx.paths.profile_state(&target.profile));
    let session = store.load_session();
    let user_ca = user_ca_keys(ctx, target, session.as_ref()).await?;
    let inv = inventory(&ctx.paths, &target.profile, session.as_ref(), &user_ca);
    let now = unix_now();
    for f in &inv.found {
        println!("{}", describe(&ctx.paths, f, now));
    }
    let any_valid = inv.found.iter().any(|f| f.is_valid(now));
    if !any_valid {
        let mut text = "no valid jitssh certificate".to_owned();
        if target.profile != crate::profile::DEFAULT_PROFILE {
            text.push_str(&format!(" for profile {}", target.profile));
        }
        if !inv.notes.is_empty() {
            text.push_str(&format!(" ({})", inv.notes.join("; ")));
        }
        text.push_str("; run `jitssh login`");
        eprintln!("{text}");
    }
    Ok(any_valid)
}

/// `jitssh logout`: returns what was removed, for the message.
pub async fn logout(ctx: &Context, target: &Target) -> Result<Vec<String>, LogoutError> {
    let store = ProfileStore::new(ctx.paths.profile_state(&target.profile));
    let session = store.load_session();
    let mut removed = Vec::new();

    // The agent: only when we know which certificates are this CA's.
    let user_ca = match user_ca_keys(ctx, target, session.as_ref()).await {
        Ok(keys) => keys,
        Err(e) => {
            ctx.ui.warn(&format!(
                "cannot tell which agent certificates are this CA's ({e}); leaving the agent alone"
            ));
            Vec::new()
        }
    };
    if !user_ca.is_empty() {
        match Agent::from_env() {
            Ok(mut agent) => {
                let mut n = 0;
                for (cert, _) in agent.certificates()? {
                    if certs::signed_by(&cert, &user_ca) {
                        agent.remove_certificate(&cert)?;
                        n += 1;
                    }
                }
                if n > 0 {
                    removed.push(format!(
                        "{n} certificate{} from ssh-agent",
                        if n == 1 { "" } else { "s" }
                    ));
                }
            }
            Err(AgentError::NotRunning) => {}
            Err(e) => return Err(e.into()),
        }
    }

    // Files: certificates and their keys.
    for path in candidate_files(&ctx.paths, &target.profile, session.as_ref()) {
        if crate::store::remove(&path)? {
            removed.push(ctx.paths.tilde(&path));
        }
    }
    if let Some(dir) = session.as_ref().and_then(|s| s.write_dir.as_ref()) {
        remove_empty_dirs(dir, dir.parent().unwrap_or(dir));
    }
    // This profile's @cert-authority lines; the file goes when nothing else is in it.
    certs::update_known_hosts(&ctx.paths.known_hosts(), &target.profile, &[])?;

    // The cached sign-in: revoked at the provider when possible, then deleted.
    if let Some(token) = read_any_token(&store) {
        if revoke(ctx, target, &token).await {
            removed.push("the cached sign-in (revoked at the provider)".into());
        } else {
            removed.push("the cached sign-in".into());
        }
    }
    store.forget_token()?;
    crate::store::remove(&store.session_path())?;
    // Our own directories, if empty now; never their parents (~/.ssh, ~/.local/state).
    let parent = |d: &std::path::Path| d.parent().unwrap_or(d).to_owned();
    remove_empty_dirs(&store.dir, &parent(&ctx.paths.state_dir));
    remove_empty_dirs(&ctx.paths.ssh_dir, &parent(&ctx.paths.ssh_dir));
    Ok(removed)
}

fn read_any_token(store: &ProfileStore) -> Option<crate::store::TokenCache> {
    let bytes = crate::store::read_private(&store.token_path())?;
    serde_json::from_slice(&bytes).ok()
}

/// Best effort: a CA or provider that cannot be reached does not stop a logout.
async fn revoke(ctx: &Context, target: &Target, token: &crate::store::TokenCache) -> bool {
    let Some(url) = &target.ca else { return false };
    let ca = CaClient::new(url.clone(), ctx.http.clone(), ctx.ca_timeout);
    let Ok(config) = ca.config().await else {
        return false;
    };
    if config.value.issuer != token.issuer {
        return false;
    }
    match crate::oidc::Provider::discover(&ctx.http, &token.issuer, &token.client_id, &[]).await {
        Ok(provider) => provider.revoke(&token.refresh_token).await,
        Err(_) => false,
    }
}
