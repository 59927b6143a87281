//! The issuance path as ordered, named steps: verify token → parse request →
//! rate limit → replay check → policy → invariants → sign → audit → respond.
//! A refusal at any step after the request is read is audited too.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ca_core::audit::AuditEvent;
use ca_core::cert::{CertError, CertKind, key_id, sign_cert};
use ca_core::elevation::restrict_to_grants;
use ca_core::policy::{PolicyInput, enforce};
use ca_core::request::RequestError;
use ca_core::wire::{UserCertRequest, UserCertResponse};
use ca_core::{CertRequest, Limits, Refusal, VerifiedIdentity};

use crate::keys::CaKey;
use rand_core::OsRng;

use crate::audit::{AuditError, AuditStore, SERIAL_BLOCK_BITS, UsedToken};
use crate::metrics::Metrics;
use crate::oidc::{TokenError, TokenVerifier};
use crate::policy::PolicyEngine;
use crate::revocation::RevocationCache;

/// Everything that can stop a certificate request. The HTTP layer maps each
/// to a status code; nothing here knows about HTTP.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(
        "no bearer token: send `Authorization: Bearer <OIDC ID token>` (jitssh login does this)"
    )]
    MissingToken,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(
        "this ID token was already used for a certificate; log in again (`jitssh login`) for a fresh one"
    )]
    Replay,
    #[error("request body is not valid JSON for this endpoint: {0}")]
    BadBody(String),
    #[error("{0}")]
    Request(#[from] RequestError),
    #[error("invalid public_key: that is the CA's own key; send your own public key")]
    CaKey,
    #[error("too many certificate requests for this identity; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error(
        "too many requests without valid credentials from this address; retry in {retry_after_secs} s with a fresh token from `jitssh login`"
    )]
    SourceRateLimited { retry_after_secs: u64 },
    #[error("denied by policy: {}", .reasons.join("; "))]
    Denied { reasons: Vec<String> },
    #[error("{0} has been revoked at this CA; ask your administrator")]
    Revoked(&'static str),
    #[error("{0}")]
    LoginName(#[from] crate::logins::LoginNameError),
    #[error(
        "the CA's policy could not decide ({0}); no certificate was issued. Ask the CA operator to check the policy"
    )]
    PolicyError(String),
    #[error("the audit log cannot be written, so no certificate can be issued; try again shortly")]
    AuditUnavailable(#[source] AuditError),
    #[error("internal error while signing; no certificate was issued")]
    Internal(String),
    #[error(
        "the CA's signing key (HSM) is unavailable, so no certificate was issued; try again shortly"
    )]
    SignerUnavailable,
}

impl IssueError {
    /// True when the caller never authenticated (no token, or one that does
    /// not verify): such refusals are counted per source, not audited one
    /// row each.
    pub fn before_authentication(&self) -> bool {
        matches!(self, IssueError::MissingToken | IssueError::Token(_))
    }

    /// Stable snake_case code, shared by the HTTP body, metrics and audit.
    pub fn code(&self) -> &'static str {
        match self {
            IssueError::MissingToken => "token_missing",
            IssueError::Token(e) => e.code(),
            IssueError::Replay => "token_replayed",
            IssueError::BadBody(_) => "invalid_request",
            IssueError::Request(e) => e.code(),
            IssueError::CaKey => "invalid_public_key",
            IssueError::RateLimited { .. } | IssueError::SourceRateLimited { .. } => "rate_limited",
            IssueError::Denied { .. } => "denied_by_policy",
            IssueError::Revoked(_) => "revoked",
            IssueError::LoginName(e) => e.code(),
            IssueError::PolicyError(_) => "policy_error",
            IssueError::AuditUnavailable(_) => "audit_unavailable",
            IssueError::Internal(_) => "internal_error",
            IssueError::SignerUnavailable => "ca_key_unavailable",
        }
    }
}

/// How long a successful `/readyz` write probe stands for the next calls.
const PROBE_OK_FOR: Duration = Duration::from_secs(5);
/// How long a failed one does (short: recovery shows up soon).
const PROBE_FAILED_FOR: Duration = Duration::from_secs(1);

pub use crate::config::DEFAULT_UNAUTHENTICATED_PER_MINUTE;

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
/// audit, and the small in-memory guards. Shared by all requests.
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
    /// The last `/readyz` write probe and when it ran.
    last_probe: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
    replay: ReplayGuard,
    rate: RateLimiter,
    serials: SerialAllocator,
}

impl Authority {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        limits: Limits,
        user_ca: CaKey,
        host_ca: CaKey,
        verifier: TokenVerifier,
        policy: std::sync::Arc<PolicyEngine>,
        audit: AuditStore,
        revocations: std::sync::Arc<RevocationCache>,
        hosts: crate::hosts::Hosts,
        elevations: std::sync::Arc<crate::elevation::Elevations>,
        logins: std::sync::Arc<crate::logins::LoginNames>,
        rate_per_minute: u32,
        rate_burst: u32,
    ) -> Result<Self, AuditError> {
        let replay = ReplayGuard::default();
        replay.seed(audit.used_tokens(now_unix())?);
        let serials = SerialAllocator::new(audit.serial_block(&holder(), now_unix())?);
        let published = PublishedKeys {
            user: vec![user_ca.public_key().clone()],
            host: vec![host_ca.public_key().clone()],
        };
        Ok(Authority {
            limits,
            user_ca,
            host_ca,
            published,
            verifier,
            policy,
            audit,
            revocations,
            hosts,
            elevations,
            logins,
            metrics: Metrics::new(),
            unauthenticated: crate::unauthenticated::Unauthenticated::new(
                DEFAULT_UNAUTHENTICATED_PER_MINUTE,
            ),
            last_probe: tokio::sync::Mutex::new(None),
            replay,
            rate: RateLimiter::new(rate_per_minute, rate_burst),
            serials,
        })
    }

    /// `POST /v1/certs/user`.
    pub async fn issue_user_cert(
        &self,
        ctx: &RequestContext,
        bearer: Option<&str>,
        body: &[u8],
    ) -> Result<UserCertResponse, IssueError> {
        let started = Instant::now();
        let now = now_unix();
        let mut event = AuditEvent {
            time: now,
            action: "user_cert".into(),
            source_ip: Some(ctx.source_ip.clone()),
            ..Default::default()
        };
        let result = self
            .user_cert_steps(ctx, bearer, body, now, &mut event)
            .await;
        Metrics::observe(&self.metrics.issue_seconds, started.elapsed());
        match &result {
            Ok(_) => {
                self.metrics.issued.inc();
            }
            Err(e) if e.before_authentication() => {
                self.metrics.deny(e.code());
                // Nobody to hold to account: counted per source, summarised
                // in the audit log once per interval (`unauthenticated`).
                if let Some(retry_after_secs) =
                    self.refused_unauthenticated(&ctx.source_ip, e.code(), now)
                {
                    return Err(IssueError::SourceRateLimited { retry_after_secs });
                }
            }
            Err(e) => {
                self.metrics.deny(e.code());
                // The issuance row is written inside the steps; every refusal
                // after authentication gets its own row here (unless the
                // database is the problem).
                if !matches!(e, IssueError::AuditUnavailable(_)) {
                    event.outcome = "denied".into();
                    event.code = Some(e.code().into());
                    if event.decision_reasons.is_empty() {
                        event.decision_reasons = vec![e.to_string()];
                    }
                    if let Err(ae) = self.audit.append(event, None).await {
                        tracing::error!(error = %ae, "could not audit a refusal");
                    }
                }
            }
        }
        result
    }

    async fn user_cert_steps(
        &self,
        ctx: &RequestContext,
        bearer: Option<&str>,
        body: &[u8],
        now: u64,
        event: &mut AuditEvent,
    ) -> Result<UserCertResponse, IssueError> {
        // 1. Verify the ID token.
        let token = bearer.ok_or(IssueError::MissingToken)?;
        event.token_hash = Some(crate::oidc::token_hash(token));
        let verified = self.verifier.verify_full(token, now).await?;
        let identity = &verified.identity;
        event.issuer = Some(identity.issuer.clone());
        event.subject = Some(identity.subject.clone());
        event.email = identity.email.clone();

        // 2. Parse the request.
        let body: UserCertRequest =
            serde_json::from_slice(body).map_err(|e| IssueError::BadBody(e.to_string()))?;
        let req = CertRequest::parse(&body)?;
        event.requested_principals = req
            .principals
            .as_ref()
            .map(|v| v.iter().map(|p| p.to_string()).collect());
        event.requested_ttl = req.ttl.map(|t| t.as_secs());
        event.key_fingerprint = Some(req.public_key.fingerprint().to_owned());
        event.reason = req.reason.clone();
        if req.public_key.same_key(self.user_ca.public_key())
            || req.public_key.same_key(self.host_ca.public_key())
            || self.published.contains(req.public_key.key_data())
        {
            return Err(IssueError::CaKey);
        }

        let revoked = self.revocations.get();
        if revoked.subject_revoked(&identity.issuer, &identity.subject) {
            return Err(IssueError::Revoked("this identity"));
        }
        if revoked.key_revoked(req.public_key.fingerprint()) {
            return Err(IssueError::Revoked("this public key"));
        }

        // 3. Rate limit per identity.
        self.rate
            .check(&format!("{}\0{}", identity.issuer, identity.subject))
            .map_err(|retry_after_secs| IssueError::RateLimited { retry_after_secs })?;

        // 4. Replay: claim the token's signed content (whatever the spelling
        // of its signature); it is spent only if a certificate is issued.
        let token_hash = verified.token_hash.clone();
        if self.replay.spent_before_upgrade(token, now)
            || !self.replay.claim(&token_hash, verified.exp, now)
        {
            return Err(IssueError::Replay);
        }
        let claim = ReplayClaim {
            guard: &self.replay,
            hash: &token_hash,
            keep: false,
        };

        // 5. Policy, with the caller's active elevation grants.
        let grants = self
            .elevations
            .active_for(&identity.issuer, &identity.subject, now)
            .await
            .map_err(|e| IssueError::AuditUnavailable(AuditError::Unavailable(e.to_string())))?;
        let grant = self.decide(identity, &req, &ctx.source_ip, now, grants.clone(), event)?;

        // 5b. The login name is this identity's, or free and now bound to it.
        self.logins
            .claim(identity, now)
            .await
            .map_err(|e| match e {
                crate::logins::LoginNameError::Unavailable(m) => {
                    IssueError::AuditUnavailable(AuditError::Unavailable(m))
                }
                e => IssueError::LoginName(e),
            })?;

        // 6. Sign.
        let serial = self.next_serial()?;
        let kid = key_id(identity, serial);
        let cert = sign_cert(
            CertKind::User,
            &grant,
            &req.public_key,
            serial,
            &kid,
            now,
            &mut OsRng,
            &self.user_ca,
        )
        .map_err(|e| match e {
            CertError::CaKey => IssueError::CaKey,
            // An HSM that cannot sign now: retry later, never another key.
            _ if self.user_ca.is_external() => IssueError::SignerUnavailable,
            other => IssueError::Internal(other.to_string()),
        })?;
        let certificate = cert
            .to_openssh()
            .map_err(|e| IssueError::Internal(e.to_string()))?;
        let principals: Vec<String> = grant.principals().iter().map(|p| p.to_string()).collect();

        // 7. Audit: committed before anything leaves.
        event.outcome = "issued".into();
        event.granted_principals = principals.clone();
        event.ttl_seconds = Some(grant.ttl().as_secs());
        event.serial = Some(serial.to_string());
        event.key_id = Some(kid.clone());
        let audit_started = Instant::now();
        self.audit
            .append(
                event.clone(),
                Some(UsedToken {
                    token_hash: token_hash.clone(),
                    expires_at: verified.exp,
                }),
            )
            .await
            .map_err(|e| match e {
                // Spent on another replica since our in-memory check.
                AuditError::Replayed => IssueError::Replay,
                e => IssueError::AuditUnavailable(e),
            })?;
        Metrics::observe(&self.metrics.audit_seconds, audit_started.elapsed());
        self.grants_still_hold(identity, &grants, &principals, serial, now)
            .await?;
        claim.keep();

        tracing::info!(who = %identity.display_name(), serial, principals = ?principals, ttl = grant.ttl().as_secs(), "issued user certificate");
        Ok(UserCertResponse {
            certificate,
            serial: serial.to_string(),
            key_id: kid,
            principals,
            valid_after: cert.valid_after(),
            valid_before: cert.valid_before(),
        })
    }

    /// After the audit row of a certificate carrying a role's principals:
    /// are the grants it relied on still active? Ending a grant revokes the
    /// certificates on record when it commits; one whose row committed later
    /// is caught here. If a grant ended (or this cannot be read) the
    /// certificate never leaves, and its serial is revoked.
    async fn grants_still_hold(
        &self,
        identity: &VerifiedIdentity,
        grants: &[ca_core::elevation::ActiveGrant],
        principals: &[String],
        serial: u64,
        now: u64,
    ) -> Result<(), IssueError> {
        let relied: Vec<String> = grants
            .iter()
            .filter(|g| {
                g.principals
                    .iter()
                    .any(|p| principals.contains(&p.to_string()))
            })
            .map(|g| g.id.clone())
            .collect();
        if relied.is_empty() {
            return Ok(());
        }
        let held = self
            .elevations
            .still_active(&identity.issuer, &identity.subject, relied, now)
            .await;
        if matches!(held, Ok(true)) {
            return Ok(());
        }
        let revocations = self.revocations.clone();
        let max_ttl = self.limits.max_ttl.as_secs();
        let revoked = tokio::task::spawn_blocking(move || {
            revocations.store().revoke(
                &crate::revocation::Target::Serial(serial),
                Some("its elevation grant ended while it was being issued"),
                now,
                max_ttl,
            )?;
            revocations.refresh(now)
        })
        .await;
        if !matches!(revoked, Ok(Ok(()))) {
            tracing::error!(
                serial,
                "could not revoke a certificate whose grant ended during issuance; it was not handed out"
            );
        }
        match held {
            Ok(_) => Err(IssueError::Denied {
                reasons: vec![
                    "the elevation grant for these principals ended while the certificate was being issued; no certificate was handed out".into(),
                ],
            }),
            Err(e) => Err(IssueError::AuditUnavailable(AuditError::Unavailable(
                e.to_string(),
            ))),
        }
    }

    /// Evaluate the policy and enforce the invariants on its decision.
    fn decide(
        &self,
        identity: &VerifiedIdentity,
        req: &CertRequest,
        source_ip: &str,
        now: u64,
        grants: Vec<ca_core::elevation::ActiveGrant>,
        event: &mut AuditEvent,
    ) -> Result<ca_core::Grant, IssueError> {
        let input = PolicyInput::user_cert(identity, req, source_ip.to_owned(), now)
            .with_grants(grants.clone());
        let input =
            serde_json::to_value(&input).map_err(|e| IssueError::Internal(e.to_string()))?;
        // One snapshot for the decision and the role table: a reload in
        // between must not pair one version's decision with another's roles.
        let policy = self.policy.snapshot();
        let eval = match policy.evaluate(&input) {
            Ok(eval) => eval,
            Err(e) => {
                event.policy_hash = Some(policy.hash().to_owned());
                tracing::error!(error = %e, "policy evaluation failed; denying");
                return Err(IssueError::PolicyError(e.to_string()));
            }
        };
        Metrics::observe(&self.metrics.policy_seconds, eval.elapsed);
        event.policy_hash = Some(eval.policy_hash.clone());
        // Role principals only under an active grant, never past its end,
        // whatever the policy said.
        let enforced = enforce(eval.decision.as_ref(), req, &self.limits)
            .and_then(|g| restrict_to_grants(g, policy.roles(), &grants, now));
        match enforced {
            Ok(grant) => {
                event.decision_reasons = grant.reasons().to_vec();
                Ok(grant)
            }
            Err(Refusal::Denied { reasons }) => {
                event.decision_reasons = reasons.clone();
                Err(IssueError::Denied { reasons })
            }
            Err(Refusal::PolicyError(msg)) => {
                tracing::error!(error = %msg, policy_hash = %eval.policy_hash, "policy returned an unusable decision; denying");
                Err(IssueError::PolicyError(msg))
            }
        }
    }

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
        self.rate.check(key)
    }

    /// The next certificate serial (user and host certificates share them).
    pub(crate) fn next_serial(&self) -> Result<u64, IssueError> {
        self.serials.next().ok_or_else(|| {
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
        let mut last = self.last_probe.lock().await;
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

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// When the in-memory guards below drop stale entries. A prune is a full
/// scan, so it runs when a map outgrows a threshold that then doubles: with
/// a map full of live entries (tokens not yet expired at 2,000 requests/s),
/// pruning on every insert past a fixed size would scan the whole map under
/// the lock on every request.
struct Pruning {
    floor: usize,
    at: AtomicUsize,
}

impl Pruning {
    const FLOOR: usize = 100_000;

    fn new(floor: usize) -> Self {
        Pruning {
            floor,
            at: AtomicUsize::new(floor),
        }
    }

    /// Called with the map's lock held.
    fn due(&self, len: usize) -> bool {
        len > self.at.load(Ordering::Relaxed)
    }

    /// After a prune left `len` entries.
    fn done(&self, len: usize) {
        self.at
            .store(len.saturating_mul(2).max(self.floor), Ordering::Relaxed);
    }
}

/// One ID token, one certificate. In memory for speed, seeded at start from
/// the `used_tokens` rows the audit store commits with each issuance. Keyed
/// by [`crate::oidc::token_hash`], a digest of the signed content, so a
/// token re-spelled with another valid signature is the same token.
struct ReplayGuard {
    /// Token digest → the token's expiry. The 32 bytes rather than their hex
    /// string: ~half the memory of a guard that holds every live token (one
    /// entry per certificate for the token lifetime plus 120 s), and no
    /// allocation per request.
    seen: Mutex<HashMap<[u8; 32], u64>>,
    pruning: Pruning,
    /// Until when seeded rows may name tokens by their whole string (as
    /// versions before the content key wrote them): while any can still be
    /// presented, a token is also looked up under that older name.
    legacy_until: AtomicU64,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard {
            seen: Mutex::default(),
            pruning: Pruning::new(Pruning::FLOOR),
            legacy_until: AtomicU64::new(0),
        }
    }
}

impl ReplayGuard {
    fn seed(&self, tokens: Vec<UsedToken>) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut until = 0;
        for t in tokens {
            until = until.max(t.expires_at.saturating_add(120));
            seen.insert(replay_key(&t.token_hash), t.expires_at);
        }
        self.legacy_until.fetch_max(until, Ordering::Relaxed);
    }

    /// True if the token was spent under its older name (the digest of the
    /// whole string) by a version before the content key. Costs one more
    /// digest only until the last seeded token expires.
    fn spent_before_upgrade(&self, token: &str, now: u64) -> bool {
        if now > self.legacy_until.load(Ordering::Relaxed) {
            return false;
        }
        let key = replay_key(&crate::oidc::legacy_token_hash(token));
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&key)
    }

    /// True if the token was not seen before (and is now held).
    fn claim(&self, hash: &str, exp: u64, now: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if self.pruning.due(seen.len()) {
            // Expired tokens cannot be replayed anyway: the verifier rejects them.
            seen.retain(|_, e| *e + 120 > now);
            self.pruning.done(seen.len());
        }
        match seen.entry(replay_key(hash)) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(exp);
                true
            }
        }
    }

    fn release(&self, hash: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&replay_key(hash));
    }
}

/// The guard's key for a token hash: the digest itself when it is the hex
/// SHA-256 that [`crate::oidc::token_hash`] makes, else a digest of the
/// string (other spent-token names, e.g. a host challenge's).
fn replay_key(hash: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    if hash.len() == 64 && hex::decode_to_slice(hash, &mut key).is_ok() {
        return key;
    }
    <sha2::Sha256 as sha2::Digest>::digest(hash.as_bytes()).into()
}

/// Releases a claimed token unless a certificate was issued for it.
struct ReplayClaim<'a> {
    guard: &'a ReplayGuard,
    hash: &'a str,
    keep: bool,
}

impl ReplayClaim<'_> {
    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for ReplayClaim<'_> {
    fn drop(&mut self) {
        if !self.keep {
            self.guard.release(self.hash);
        }
    }
}

/// Per-identity token buckets.
struct RateLimiter {
    per_minute: u32,
    burst: u32,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    pruning: Pruning,
}

impl RateLimiter {
    fn new(per_minute: u32, burst: u32) -> Self {
        RateLimiter {
            per_minute,
            burst,
            buckets: Mutex::new(HashMap::new()),
            pruning: Pruning::new(Pruning::FLOOR),
        }
    }

    /// Ok, or the seconds to wait.
    fn check(&self, key: &str) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let rate = f64::from(self.per_minute) / 60.0;
        let burst = f64::from(self.burst);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if self.pruning.due(buckets.len()) {
            buckets.retain(|_, (_, t)| now.duration_since(*t) < Duration::from_secs(600));
            self.pruning.done(buckets.len());
        }
        let (tokens, last) = buckets.entry(key.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

/// Unique, non-zero serials without a database round trip per
/// certificate: the process's block number (allocated in the database at
/// start, so unique across restarts and replicas) in the high bits, then
/// counting up in the low [`SERIAL_BLOCK_BITS`].
struct SerialAllocator {
    next: AtomicU64,
    end: u64,
}

impl SerialAllocator {
    fn new(block: u64) -> Self {
        let start = block << SERIAL_BLOCK_BITS;
        SerialAllocator {
            next: AtomicU64::new(start + 1),
            end: start + (1 << SERIAL_BLOCK_BITS),
        }
    }

    /// `None` once the block is used up (2^40 certificates: restart to get
    /// a new block).
    fn next(&self) -> Option<u64> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (n < self.end).then_some(n)
    }
}

/// Who holds a serial block: host name and process id, for operators.
fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    format!("{host} pid {}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_guard_claims_once_and_releases() {
        let g = ReplayGuard::default();
        assert!(g.claim("a", 100, 0));
        assert!(!g.claim("a", 100, 0));
        g.release("a");
        assert!(g.claim("a", 100, 0));
        assert!(g.claim("b", 1, 0));
        drop(ReplayClaim {
            guard: &g,
            hash: "b",
            keep: false,
        });
        assert!(g.claim("b", 1, 0), "a dropped claim releases the token");
        ReplayClaim {
            guard: &g,
            hash: "b",
            keep: false,
        }
        .keep();
        assert!(!g.claim("b", 1, 0), "a kept claim stays spent");
    }

    #[test]
    fn replay_keys_are_the_digest_bytes() {
        let h = crate::oidc::token_hash("header.payload.signature");
        assert_eq!(hex::encode(replay_key(&h)), h);
        assert_ne!(
            replay_key("host-challenge:ab"),
            replay_key("host-challenge:ac")
        );
        let g = ReplayGuard::default();
        assert!(g.claim(&h, 100, 0));
        assert!(!g.claim(&h, 100, 0), "the same token twice");
        g.seed(vec![UsedToken {
            token_hash: crate::oidc::token_hash("other"),
            expires_at: 100,
        }]);
        assert!(
            !g.claim(&crate::oidc::token_hash("other"), 100, 0),
            "a token spent before a restart"
        );
    }

    #[test]
    fn tokens_spent_under_the_older_whole_string_name_stay_spent() {
        let token = "header.payload.signature";
        let g = ReplayGuard::default();
        assert!(!g.spent_before_upgrade(token, 0), "nothing seeded");
        g.seed(vec![UsedToken {
            token_hash: crate::oidc::legacy_token_hash(token),
            expires_at: 1_000,
        }]);
        assert!(g.spent_before_upgrade(token, 1_000));
        assert!(
            !g.spent_before_upgrade("header.payload.other", 1_000),
            "another token"
        );
        assert!(
            !g.spent_before_upgrade(token, 1_121),
            "no older name can be live once every seeded token expired"
        );
        assert_ne!(
            crate::oidc::token_hash(token),
            crate::oidc::legacy_token_hash(token)
        );
        assert_eq!(
            crate::oidc::token_hash(token),
            crate::oidc::token_hash("header.payload.another-signature"),
            "the content key ignores the signature"
        );
    }

    #[test]
    fn pruning_waits_for_the_map_to_double() {
        let p = Pruning::new(4);
        assert!(!p.due(4));
        assert!(p.due(5));
        // Nothing could be dropped: the next prune waits for twice as many.
        p.done(5);
        assert!(!p.due(10));
        assert!(p.due(11));
        // Most were dropped: back to the floor.
        p.done(1);
        assert!(p.due(5));
    }

    #[test]
    fn replay_guard_prunes_expired_tokens_amortized() {
        let g = ReplayGuard {
            pruning: Pruning::new(4),
            ..ReplayGuard::default()
        };
        let len = |g: &ReplayGuard| g.seen.lock().unwrap().len();
        // Live tokens are kept however many there are.
        for i in 0..20 {
            assert!(g.claim(&format!("live{i}"), 1_000, 0));
        }
        assert_eq!(len(&g), 20);
        assert!(!g.claim("live3", 1_000, 0), "still spent");
        // Once expired (plus the grace), they go at the next prune.
        for i in 0..40 {
            assert!(g.claim(&format!("new{i}"), 5_000, 2_000));
        }
        assert_eq!(len(&g), 40, "the 20 expired tokens were pruned");
        assert!(
            !g.claim("new0", 5_000, 2_000),
            "live tokens survive a prune"
        );
    }

    #[test]
    fn rate_limiter_refuses_past_burst() {
        let r = RateLimiter::new(60, 3);
        assert!(r.check("x").is_ok());
        assert!(r.check("x").is_ok());
        assert!(r.check("x").is_ok());
        assert!(r.check("x").is_err());
        assert!(r.check("y").is_ok(), "other identities unaffected");
        assert!(RateLimiter::new(0, 1).check("x").is_ok());
    }

    #[test]
    fn serials_are_unique_nonzero_and_stay_in_their_block() {
        let s = SerialAllocator::new(3);
        let a = s.next().unwrap();
        let b = s.next().unwrap();
        assert!(a > 0 && b > a);
        assert_eq!(a >> SERIAL_BLOCK_BITS, 3);
        // Block 0 never hands out serial 0.
        assert_eq!(SerialAllocator::new(0).next(), Some(1));
        // The end of a block is the end: never the next block's serials.
        let last = SerialAllocator {
            next: AtomicU64::new((4 << SERIAL_BLOCK_BITS) - 1),
            end: 4 << SERIAL_BLOCK_BITS,
        };
        assert_eq!(last.next(), Some((4 << SERIAL_BLOCK_BITS) - 1));
        assert_eq!(last.next(), None);
    }
}
