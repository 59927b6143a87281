//! Issuing certificates: the authority's shared state (`Authority`: keys,
//! verifier, policy, audit, guards) and the two issuance paths, user
//! certificates (`user`) and host certificates (`host`), each as ordered,
//! named steps whose every refusal after authentication is audited; and
//! the console's preview of a user certificate (`preview`), which issues
//! nothing.

mod error;
mod guards;
pub mod host;
pub mod preview;
mod user;

pub use error::IssueError;
use guards::{RateLimiter, ReplayGuard, SerialAllocator, holder};

use std::time::{Duration, Instant};

use ca_core::Limits;

use crate::clock::now_unix;
use crate::keys::CaKey;

use crate::audit::{AuditError, AuditStore};
use crate::metrics::Metrics;
use crate::oidc::TokenVerifier;
use crate::policy::PolicyEngine;
use crate::revocation::RevocationCache;

/// How long a successful `/readyz` write probe stands for the next calls.
const PROBE_OK_FOR: Duration = Duration::from_secs(5);
/// How long a failed one does (short: recovery shows up soon).
const PROBE_FAILED_FOR: Duration = Duration::from_secs(1);

/// The CA public keys to publish, per kind; the signing key first.
#[derive(Clone, Debug, Default)]
pub struct PublishedKeys {
    pub user: Vec<ssh_key::public::KeyData>,
    pub host: Vec<ssh_key::public::KeyData>,
}

impl PublishedKeys {
    /// Whether `key` is any published CA key (never certify one).
    pub fn contains(&self, key: &ssh_key::public::KeyData) -> bool {
        self.user.iter().chain(&self.host).any(|k| k == key)
    }
}

/// Where a request came from, for policy input and audit.
#[derive(Clone, Debug, Default)]
pub struct RequestContext {
    pub source_ip: String,
}

/// The certificate authority's in-process state: keys, verifier, policy,
/// audit, and the small in-memory guards. Shared by all requests. Built as
/// a struct literal from parts each opened and checked on its own
/// (`serve::build_authority`), with [`Guards::open`] for the guards.
pub struct Authority {
    pub limits: Limits,
    pub user_ca: CaKey,
    pub host_ca: CaKey,
    /// Every CA key to publish and trust, signing keys first (more than one
    /// per kind during a rotation; see `rotation`).
    pub published: PublishedKeys,
    pub verifier: TokenVerifier,
    pub policy: std::sync::Arc<PolicyEngine>,
    pub audit: AuditStore,
    pub revocations: std::sync::Arc<RevocationCache>,
    /// Join tokens, renewal challenges and the host lifetime ceiling (`hosts`).
    pub hosts: crate::hosts::Hosts,
    /// Just-in-time role grants (`elevation`); its index gates role principals.
    pub elevations: std::sync::Arc<crate::elevation::Elevations>,
    /// Which identity each login name belongs to (`logins`).
    pub logins: std::sync::Arc<crate::logins::LoginNames>,
    pub metrics: Metrics,
    /// Refusals before authentication, counted per source (`unauthenticated`).
    pub unauthenticated: crate::unauthenticated::Unauthenticated,
    pub guards: Guards,
}

/// The in-memory state of the issuance path (its fields are the issuance
/// modules' own).
pub struct Guards {
    /// The last `/readyz` write probe and when it ran.
    last_probe: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
    replay: ReplayGuard,
    rate: RateLimiter,
    serials: SerialAllocator,
}

impl Guards {
    /// Seed the replay guard from the tokens the audit log says are spent
    /// and claim a serial block (both read the database); the per-identity
    /// rate limit is `[rate_limit]`.
    pub fn open(
        audit: &AuditStore,
        rate_per_minute: u32,
        rate_burst: u32,
    ) -> Result<Self, AuditError> {
        let replay = ReplayGuard::default();
        replay.seed(audit.used_tokens(now_unix())?);
        Ok(Guards {
            last_probe: tokio::sync::Mutex::new(None),
            replay,
            rate: RateLimiter::new(rate_per_minute, rate_burst),
            serials: SerialAllocator::new(audit.serial_block(&holder(), now_unix())?),
        })
    }
}

impl Authority {
    /// Count a refusal before authentication (no or an unverifiable
    /// credential) for its source, logging the first of each interval.
    /// `Some(seconds)` when the source is past its limit: answer 429.
    pub fn refused_unauthenticated(&self, source_ip: &str, code: &str, now: u64) -> Option<u64> {
        use crate::unauthenticated::Verdict;
        match self.unauthenticated.refused(source_ip, code, now) {
            Verdict::Limited { retry_after_secs } => Some(retry_after_secs),
            Verdict::Answer { first } => {
                if first {
                    tracing::warn!(
                        source = %ca_core::escape_control(source_ip),
                        code,
                        "refused before authentication; further refusals from this source are counted, not logged, until the minute ends"
                    );
                }
                None
            }
        }
    }

    /// Append the summary rows of refusals before authentication whose
    /// interval ended (all of them with `everything`); rows that cannot be
    /// written now are kept for the next call.
    pub async fn flush_unauthenticated(&self, now: u64, everything: bool) {
        // All at once, so they share a group commit or a few.
        let mut appends = tokio::task::JoinSet::new();
        for row in self.unauthenticated.take_summaries(now, everything) {
            let audit = self.audit.clone();
            appends
                .spawn(async move { audit.append(row.clone(), None).await.map_err(|e| (e, row)) });
        }
        let mut unwritten = Vec::new();
        while let Some(done) = appends.join_next().await {
            if let Ok(Err((e, row))) = done {
                tracing::warn!(error = %e, "could not audit a summary of refusals; will retry");
                unwritten.push(row);
            }
        }
        self.unauthenticated.restore(unwritten);
    }

    /// The per-identity rate limit, for other endpoints (own `key` space).
    /// `Err` carries the seconds to wait.
    pub fn check_rate(&self, key: &str) -> Result<(), u64> {
        self.guards.rate.check(key)
    }

    /// The per-identity limit on elevation calls (the API's and the
    /// console's): the issuance rate, in its own bucket.
    pub fn check_elevation_rate(&self, identity: &ca_core::VerifiedIdentity) -> Result<(), u64> {
        self.check_rate(&format!(
            "elevation\0{}\0{}",
            identity.issuer, identity.subject
        ))
    }

    /// The next certificate serial (user and host certificates share them).
    pub(crate) fn next_serial(&self) -> Result<u64, IssueError> {
        self.guards.serials.next().ok_or_else(|| {
            IssueError::Internal(
                "this process has used up its block of certificate serials; restart jitssh-ca"
                    .into(),
            )
        })
    }

    /// A write through the audit writer (a committed heartbeat), at most
    /// one per [`PROBE_OK_FOR`] (after a failure, per [`PROBE_FAILED_FOR`]):
    /// `/readyz` needs no authentication, so it must not buy a commit and
    /// an fsync per call. Concurrent callers wait for the one probe.
    async fn write_probe(&self) -> Result<(), String> {
        let mut last = self.guards.last_probe.lock().await;
        if let Some((at, result)) = last.as_ref() {
            let fresh_for = if result.is_ok() {
                PROBE_OK_FOR
            } else {
                PROBE_FAILED_FOR
            };
            if at.elapsed() < fresh_for {
                return result.clone();
            }
        }
        let result = self.audit.check_writable().await.map_err(|e| e.to_string());
        *last = Some((Instant::now(), result.clone()));
        result
    }

    /// For `/readyz`: can we issue right now?
    pub async fn readiness(&self) -> Vec<(&'static str, Result<(), String>)> {
        let db = self.write_probe().await;
        let idp = if self.verifier.ready() {
            Ok(())
        } else {
            self.verifier.refresh_all().await.map_err(|e| e.to_string())
        };
        vec![
            (
                "ca_keys",
                self.user_ca.check().and_then(|()| self.host_ca.check()),
            ),
            ("policy", Ok(())),
            ("database", db),
            ("idp_keys", idp),
        ]
    }
}
