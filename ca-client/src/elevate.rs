//! Just-in-time elevation from the command line: `jitssh elevate` (request a
//! role, optionally wait for the decision and load a certificate carrying
//! the role's principals), `jitssh requests`, `approve`, `deny`, `cancel`,
//! and the active grants `jitssh status` shows.
//!
//! These calls authenticate with the same ID token as `login` (from the
//! cached refresh token when possible, else the browser or device flow);
//! reading and deciding requests does not spend it.

use std::time::{Duration, Instant};

use ca_core::elevation::ElevationState;
use ca_core::wire::{Elevation, ElevationCreate, ElevationDecide, ElevationList};

use crate::Context;
use crate::ca::{CaClient, CaError};
use crate::duration::{local_time, time_left, unix_now};
use crate::login::{self, LoginError, LoginOptions, LoginOutcome};
use crate::oidc::{Interaction, Provider};
use crate::profile::Target;
use crate::store::ProfileStore;

/// How often `--wait` asks the CA whether the request was decided.
const POLL: Duration = Duration::from_secs(2);

/// Why an elevation command failed.
#[derive(Debug, thiserror::Error)]
pub enum ElevateError {
    #[error(transparent)]
    Login(#[from] LoginError),
    #[error("{}", refused_message(.code, .message, .reasons))]
    Refused {
        code: String,
        message: String,
        reasons: Vec<String>,
    },
    #[error(transparent)]
    Ca(CaError),
    #[error("{0}")]
    Ended(String),
    #[error("--ttl: {0}")]
    Ttl(String),
}

impl ElevateError {
    /// 3 when the CA or an approver said no (or the request ended undecided), else 1.
    pub fn exit_code(&self) -> std::process::ExitCode {
        match self {
            ElevateError::Refused { .. } | ElevateError::Ended(_) => {
                std::process::ExitCode::from(3)
            }
            _ => std::process::ExitCode::FAILURE,
        }
    }
}

fn refused_message(code: &str, message: &str, reasons: &[String]) -> String {
    let mut text = format!("{message} ({code})");
    for r in reasons {
        text.push_str("\n  - ");
        text.push_str(r);
    }
    text
}

impl From<CaError> for ElevateError {
    fn from(e: CaError) -> Self {
        match e {
            CaError::Api {
                code,
                message,
                reasons,
                ..
            } => ElevateError::Refused {
                code,
                message,
                reasons,
            },
            other => ElevateError::Ca(other),
        }
    }
}

/// How to sign in when no cached sign-in can be used.
#[derive(Clone, Copy, Debug)]
pub struct SignIn {
    pub device: bool,
    pub open_browser: bool,
}

/// A CA and an ID token for it.
struct Authed {
    ca: CaClient,
    token: String,
}

async fn authenticate(ctx: &Context, target: &Target, how: SignIn) -> Result<Authed, LoginError> {
    let ca = CaClient::new(target.ca()?.clone(), ctx.http.clone(), ctx.ca_timeout);
    let config = ca.config().await?.value;
    let provider = crate::login::discover(ctx, &config, target).await?;
    let store = ProfileStore::new(ctx.paths.profile_state(&target.profile));
    let opts = LoginOptions {
        device: how.device,
        open_browser: how.open_browser,
        ..Default::default()
    };
    let interaction = Interaction {
        open_browser: how.open_browser,
        timeout: login::login_timeout()?,
    };
    let (tokens, _) = login::sign_in(
        ctx,
        &provider,
        &store,
        &config.client_id,
        &opts,
        &interaction,
    )
    .await?;
    Ok(Authed {
        ca,
        token: tokens.id_token,
    })
}

/// One line about an elevation, for people.
pub fn describe(e: &Elevation, now: u64) -> String {
    let left =
        |t: u64| time_left(i64::try_from(t).unwrap_or(i64::MAX) - i64::try_from(now).unwrap_or(0));
    let what = format!("{} {} ({})", e.id, e.role, e.principals.join(", "));
    match e.state {
        ElevationState::Approved => format!(
            "{what}: active until {} ({})",
            local_time(e.expires_at, now),
            left(e.expires_at)
        ),
        ElevationState::Pending => format!(
            "{what}: pending, {} of {} approval(s); expires {} ({})",
            e.approvals.len(),
            e.approvals_required,
            local_time(e.expires_at, now),
            left(e.expires_at)
        ),
        other => {
            let mut text = format!("{what}: {other}");
            if let Some(c) = &e.closed_by {
                let who = c.email.clone().unwrap_or_else(|| c.subject.clone());
                text.push_str(&format!(" by {}", ca_core::escape_control(&who)));
                if let Some(comment) = &c.comment {
                    text.push_str(&format!(": {}", ca_core::escape_control(comment)));
                }
            }
            text
        }
    }
}

/// `jitssh elevate ROLE --reason TEXT [--ttl D] [--wait]`. Returns the text
/// for stdout.
pub async fn elevate(
    ctx: &Context,
    target: &Target,
    role: &str,
    reason: &str,
    ttl: Option<Duration>,
    wait: bool,
    how: SignIn,
) -> Result<String, ElevateError> {
    let ttl_seconds = ttl
        .map(|d| ca_core::Ttl::from_secs(d.as_secs()).map(|t| t.as_secs()))
        .transpose()
        .map_err(|e| ElevateError::Ttl(e.to_string()))?;
    let mut authed = authenticate(ctx, target, how).await?;
    let body = ElevationCreate {
        role: role.to_owned(),
        ttl_seconds,
        reason: reason.to_owned(),
    };
    let mut e: Elevation = authed
        .ca
        .post_authed(&authed.token, "/v1/elevations", &body)
        .await?
        .value;
    for r in &e.reasons {
        ctx.ui
            .info(&format!("policy: {}", ca_core::escape_control(r)));
    }
    if !wait {
        let mut text = format!("{}\n", describe(&e, unix_now()));
        if e.state == ElevationState::Approved {
            text.push_str("Run `jitssh login` to load a certificate with the role's principals.\n");
        } else if e.state == ElevationState::Pending {
            text.push_str(&format!(
                "Approvers see it with `jitssh requests`; `jitssh elevate {role} --wait` or `jitssh login` once approved.\n"
            ));
        }
        return Ok(text);
    }
    if e.state == ElevationState::Pending {
        let spinner = ctx.ui.spinner(&format!(
            "Waiting for approval of {} (needs {}); Ctrl-C stops waiting, the request stays",
            e.id, e.approvals_required
        ));
        let deadline = Instant::now()
            + Duration::from_secs(e.expires_at.saturating_sub(unix_now()).saturating_add(5));
        let path = format!("/v1/elevations/{}", e.id);
        while e.state == ElevationState::Pending && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
            match authed
                .ca
                .get_authed::<Elevation>(&authed.token, &path)
                .await
            {
                Ok(a) => e = a.value,
                // The ID token expired while waiting: a fresh one, silently if possible.
                Err(CaError::Api { status: 401, .. }) => {
                    authed = authenticate(ctx, target, how).await?;
                }
                Err(err @ (CaError::Unreachable { .. } | CaError::Timeout { .. })) => {
                    ctx.ui.warn(&format!("{err}; still waiting"));
                }
                Err(err) => return Err(err.into()),
            }
        }
        spinner.finish();
    }
    if e.state != ElevationState::Approved {
        return Err(ElevateError::Ended(describe(&e, unix_now())));
    }
    let grant = describe(&e, unix_now());
    let outcome: LoginOutcome = login::login(
        ctx,
        target,
        &LoginOptions {
            // Everything the policy allows now, the role's principals included;
            // the CA ends the certificate with the grant.
            principals: vec![],
            ttl_seconds: None,
            reason: Some(format!("elevation {}: {}", e.id, e.reason)),
            device: how.device,
            open_browser: how.open_browser,
            write: None,
            force: false,
        },
    )
    .await?;
    Ok(format!(
        "{grant}\n{}\n",
        outcome.summary(&ctx.paths, unix_now())
    ))
}

/// `jitssh requests`: pending requests the caller may decide, and the
/// caller's own.
pub async fn requests(ctx: &Context, target: &Target, how: SignIn) -> Result<String, ElevateError> {
    let authed = authenticate(ctx, target, how).await?;
    let list: ElevationList = authed
        .ca
        .get_authed(&authed.token, "/v1/elevations?state=pending")
        .await?
        .value;
    let now = unix_now();
    let mut out = String::new();
    let (decide, own): (Vec<&Elevation>, Vec<&Elevation>) =
        list.elevations.iter().partition(|e| e.can_decide);
    for e in &decide {
        let who = e
            .requester
            .email
            .clone()
            .unwrap_or_else(|| e.requester.subject.clone());
        out.push_str(&format!(
            "{}\n    requested by {} for {}: {}\n",
            describe(e, now),
            ca_core::escape_control(&who),
            time_left(i64::try_from(e.ttl_seconds).unwrap_or(i64::MAX)),
            ca_core::escape_control(&e.reason)
        ));
    }
    for e in own.iter().filter(|e| !e.can_decide) {
        out.push_str(&format!("{} (yours)\n", describe(e, now)));
    }
    if decide.is_empty() {
        ctx.ui.info("No pending requests for you to decide.");
    } else {
        ctx.ui
            .info("Decide with `jitssh approve ID [--comment TEXT]` or `jitssh deny ID`.");
    }
    Ok(out)
}

/// `jitssh approve|deny ID [--comment TEXT]`: shows the request, then
/// decides exactly that request (its hash travels with the decision).
pub async fn decide(
    ctx: &Context,
    target: &Target,
    id: &str,
    approve: bool,
    comment: Option<String>,
    how: SignIn,
) -> Result<String, ElevateError> {
    let authed = authenticate(ctx, target, how).await?;
    let e: Elevation = authed
        .ca
        .get_authed(&authed.token, &format!("/v1/elevations/{id}"))
        .await?
        .value;
    let who = e
        .requester
        .email
        .clone()
        .unwrap_or_else(|| e.requester.subject.clone());
    ctx.ui.info(&format!(
        "{} {}: role {} ({}) for {}, reason: {}",
        if approve { "Approving" } else { "Denying" },
        e.id,
        e.role,
        e.principals.join(", "),
        ca_core::escape_control(&who),
        ca_core::escape_control(&e.reason)
    ));
    let body = ElevationDecide {
        comment,
        request_hash: Some(e.request_hash.clone()),
    };
    let action = if approve { "approve" } else { "deny" };
    let after: Elevation = authed
        .ca
        .post_authed(
            &authed.token,
            &format!("/v1/elevations/{id}/{action}"),
            &body,
        )
        .await?
        .value;
    Ok(format!("{}\n", describe(&after, unix_now())))
}

/// `jitssh cancel ID`: withdraw a pending request or drop an active grant.
pub async fn cancel(
    ctx: &Context,
    target: &Target,
    id: &str,
    comment: Option<String>,
    how: SignIn,
) -> Result<String, ElevateError> {
    let authed = authenticate(ctx, target, how).await?;
    let body = ElevationDecide {
        comment,
        request_hash: None,
    };
    let after: Elevation = authed
        .ca
        .post_authed(&authed.token, &format!("/v1/elevations/{id}/cancel"), &body)
        .await?
        .value;
    Ok(format!("{}\n", describe(&after, unix_now())))
}

/// For `jitssh status`: the caller's active grants, using only a cached
/// sign-in (never a browser). `None` when that is not possible.
pub async fn active_grants(ctx: &Context, target: &Target) -> Option<Vec<Elevation>> {
    let store = ProfileStore::new(ctx.paths.profile_state(&target.profile));
    // Nothing cached: nothing to ask without a browser, and no network call.
    std::fs::metadata(store.token_path()).ok()?;
    let ca = CaClient::new(target.ca.clone()?, ctx.http.clone(), ctx.ca_timeout);
    let config = ca.config().await.ok()?.value;
    let cache = store.load_token(&config.issuer, &config.client_id)?;
    let provider = Provider::discover(&ctx.http, &config.issuer, &config.client_id, &config.scopes)
        .await
        .ok()?;
    let tokens = provider.refresh(&cache.refresh_token).await.ok()?;
    if let Some(rt) = &tokens.refresh_token {
        let _ = store.save_token(&crate::store::TokenCache {
            issuer: config.issuer.clone(),
            client_id: config.client_id.clone(),
            refresh_token: rt.clone(),
            saved_at: unix_now(),
        });
    }
    let list: ElevationList = ca
        .get_authed(&tokens.id_token, "/v1/elevations?state=active")
        .await
        .ok()?
        .value;
    Some(list.elevations)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ca_core::identity::Party;
    use ca_core::wire::ElevationVote;

    fn sample(state: ElevationState) -> Elevation {
        Elevation {
            id: "el_1".into(),
            role: "db-admin".into(),
            principals: vec!["postgres".into()],
            state,
            requester: Party {
                issuer: "https://idp".into(),
                subject: "alice".into(),
                email: Some("alice@example.com".into()),
            },
            reason: "INC-1".into(),
            ttl_seconds: 1800,
            reasons: vec![],
            created_at: 1_800_000_000,
            expires_at: 1_800_001_800,
            approvals_required: 2,
            approvals: vec![],
            grant_starts_at: None,
            grant_ends_at: None,
            closed_by: None,
            request_hash: "h".into(),
            can_decide: false,
        }
    }

    #[test]
    fn describes_each_state() {
        let now = 1_800_000_000;
        let a = describe(&sample(ElevationState::Approved), now);
        assert!(
            a.starts_with("el_1 db-admin (postgres): active until "),
            "{a}"
        );
        assert!(a.ends_with("(30 min left)"), "{a}");
        let p = describe(&sample(ElevationState::Pending), now);
        assert!(p.contains("pending, 0 of 2 approval(s)"), "{p}");
        let mut d = sample(ElevationState::Denied);
        d.closed_by = Some(ElevationVote {
            issuer: "https://idp".into(),
            subject: "bob".into(),
            email: Some("bob@example.com".into()),
            comment: Some("use the replica\u{1b}[2J \u{202e}kcab\u{2069}\u{200b}".into()),
            time: now,
        });
        let d = describe(&d, now);
        assert_eq!(
            d,
            "el_1 db-admin (postgres): denied by bob@example.com: use the replica\\u{1b}[2J \\u{202e}kcab\\u{2069}\\u{200b}"
        );
    }

    #[test]
    fn refusals_carry_the_reasons_and_exit_3() {
        let e: ElevateError = CaError::Api {
            status: 403,
            code: "self_approval".into(),
            message: "you cannot approve your own request".into(),
            reasons: vec!["r1".into()],
        }
        .into();
        assert_eq!(
            e.to_string(),
            "you cannot approve your own request (self_approval)\n  - r1"
        );
        assert_eq!(e.exit_code(), std::process::ExitCode::from(3));
    }
}
