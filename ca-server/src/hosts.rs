//! Host certificates: one-time join tokens (stored hashed beside the audit
//! log), renewal challenges (stateless, checkable by any replica, spent
//! in the database), and the issuance steps of
//! `POST /v1/certs/host` (enrol with a join token) and
//! `POST /v1/certs/host/renew` (renew with the current certificate and a
//! signature over a fresh challenge).
//!
//! Both paths sign with the **host** CA key only, and only after the host
//! policy (`data.jitssh.host_decision`) allowed and its decision passed
//! ca-core's `enforce_host`. No request header is read: a user's ID token
//! cannot stand in for a join token or a renewal proof. As for user
//! certificates, a certificate leaves only after its audit row committed,
//! and every refusal is audited too.

use std::time::Instant;

use base64::Engine as _;
use ca_core::audit::AuditEvent;
use ca_core::cert::{CertError, sign_host_cert};
use ca_core::host::{
    HostCertRequest, HostGrant, HostPolicyInput, HostRequestError, JoinToken, RenewalError,
    VerifiedRenewal, Via, enforce_host, host_key_id, verify_renewal,
};
use ca_core::hostname::HostName;
use ca_core::wire::{self, HostCertResponse, HostChallenge};
use ca_core::{Refusal, SubjectKey, Ttl};
use rand_core::{OsRng, RngCore as _};

use crate::audit::{AuditError, AuditStore, UsedToken};
use crate::clock::now_unix;
use crate::db::{Db, DbError};
use crate::issue::{Authority, RequestContext};
use crate::metrics::Metrics;
use crate::params;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS host_join_tokens (
    -- Hex SHA-256 of the token; the token itself is never stored.
    token_hash TEXT PRIMARY KEY,
    -- JSON array of the host names the token may claim.
    hostnames  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    -- Set once, atomically, by the request that spends the token.
    used_at    INTEGER,
    used_by    TEXT
) WITHOUT ROWID;";

/// The same table for PostgreSQL.
const POSTGRES: &str = "
CREATE TABLE IF NOT EXISTS host_join_tokens (
    token_hash TEXT PRIMARY KEY,
    hostnames  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    used_by    TEXT
);";

/// How long a renewal challenge may be answered.
pub const CHALLENGE_TTL_SECS: u64 = 60;

/// Everything that can stop a host certificate request. The HTTP layer maps
/// each to a status code; nothing here knows about HTTP.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("request body is not valid JSON for this endpoint: {0}")]
    BadBody(String),
    #[error("{0}")]
    Request(#[from] HostRequestError),
    #[error(
        "unknown join token: it was never issued by this CA, or mistyped; ask the CA operator for a new one (`jitssh-ca host token create`)"
    )]
    TokenUnknown,
    #[error(
        "this join token expired; ask the CA operator for a new one (`jitssh-ca host token create`)"
    )]
    TokenExpired,
    #[error(
        "this join token was already used; join tokens are single-use: ask the CA operator for a new one, or renew with `jitssh host renew`"
    )]
    TokenUsed,
    #[error("the join token does not allow {}; it allows {}", .asked.join(", "), .allowed.join(", "))]
    HostnameNotAllowed {
        asked: Vec<String>,
        allowed: Vec<String>,
    },
    #[error("invalid public_key: that is one of the CA's own keys; send the host's public key")]
    CaKey,
    #[error("{0} has been revoked at this CA; ask the CA operator")]
    Revoked(&'static str),
    #[error(
        "unknown, expired or already used challenge; ask for a fresh one (POST /v1/certs/host/challenge) and sign it within {CHALLENGE_TTL_SECS} s"
    )]
    ChallengeInvalid,
    #[error("{0}")]
    Renewal(#[from] RenewalError),
    #[error(
        "too many requests without a valid join token or renewal proof from this address; retry in {retry_after_secs} s"
    )]
    SourceRateLimited { retry_after_secs: u64 },
    #[error("denied by the host policy: {}", .reasons.join("; "))]
    Denied { reasons: Vec<String> },
    #[error(
        "the CA's host policy could not decide ({0}); no certificate was issued. Ask the CA operator to check the policy"
    )]
    PolicyError(String),
    #[error("the audit log cannot be written, so no certificate can be issued; try again shortly")]
    AuditUnavailable(#[source] AuditError),
    #[error("the join token store cannot be read or written; try again shortly")]
    Store(#[source] TokenStoreError),
    #[error("internal error while signing; no certificate was issued")]
    Internal(String),
}

impl crate::audit::Refused for HostError {
    fn code(&self) -> &'static str {
        HostError::code(self)
    }
    fn audit_unavailable(&self) -> bool {
        matches!(self, HostError::AuditUnavailable(_))
    }
}

impl HostError {
    /// True when the request showed no credential this CA knows: no known
    /// join token, or no valid renewal proof (so far as it got).
    pub fn before_authentication(&self) -> bool {
        matches!(
            self,
            HostError::BadBody(_)
                | HostError::Request(_)
                | HostError::TokenUnknown
                | HostError::ChallengeInvalid
                | HostError::Renewal(_)
        )
    }

    /// Stable snake_case code, shared by the HTTP body, metrics and audit.
    pub fn code(&self) -> &'static str {
        match self {
            HostError::BadBody(_) => "invalid_request",
            HostError::Request(e) => e.code(),
            HostError::TokenUnknown => "join_token_invalid",
            HostError::TokenExpired => "join_token_expired",
            HostError::TokenUsed => "join_token_used",
            HostError::HostnameNotAllowed { .. } => "hostname_not_allowed",
            HostError::CaKey => "invalid_public_key",
            HostError::Revoked(_) => "revoked",
            HostError::ChallengeInvalid => "challenge_invalid",
            HostError::Renewal(e) => e.code(),
            HostError::SourceRateLimited { .. } => "rate_limited",
            HostError::Denied { .. } => "denied_by_policy",
            HostError::PolicyError(_) => "policy_error",
            HostError::AuditUnavailable(_) => "audit_unavailable",
            HostError::Store(_) => "token_store_unavailable",
            HostError::Internal(_) => "internal_error",
        }
    }
}

/// The join token table could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenStoreError {
    #[error("join token store: {0}")]
    Db(#[from] DbError),
    #[error("join token store {db}: a stored row is unreadable ({message})")]
    Corrupt { db: String, message: String },
    #[error("join token store: the database task failed: {0}")]
    Task(String),
}

/// A join token as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredToken {
    pub hostnames: Vec<HostName>,
    pub created_at: u64,
    pub expires_at: u64,
    pub used_at: Option<u64>,
}

/// The `host_join_tokens` table beside the audit log (tokens are rare: a
/// pooled connection per operation; the audit writer keeps its own).
#[derive(Clone, Debug)]
pub struct JoinTokenStore {
    db: Db,
}

impl JoinTokenStore {
    /// Open the store in `db`, creating the table.
    pub fn open(db: impl Into<Db>) -> Result<Self, TokenStoreError> {
        let db = db.into();
        crate::audit::ensure_tables(&db, SCHEMA, POSTGRES)?;
        Ok(JoinTokenStore { db })
    }

    fn corrupt(&self, message: String) -> TokenStoreError {
        TokenStoreError::Corrupt {
            db: self.db.describe(),
            message,
        }
    }

    /// Store a new token's hash with the names it may claim.
    pub fn insert(
        &self,
        token: &JoinToken,
        hostnames: &[HostName],
        created_at: u64,
        expires_at: u64,
    ) -> Result<(), TokenStoreError> {
        let names = serde_json::to_string(hostnames).map_err(|e| self.corrupt(e.to_string()))?;
        let hash = token.hash();
        self.db.with(|c| {
            c.execute(
                "INSERT INTO host_join_tokens (token_hash, hostnames, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                &params![&hash, &names, created_at, expires_at],
            )
        })?;
        Ok(())
    }

    /// Remove a token (used when its creation could not be audited).
    pub fn delete(&self, token: &JoinToken) -> Result<(), TokenStoreError> {
        let hash = token.hash();
        self.db.with(|c| {
            c.execute(
                "DELETE FROM host_join_tokens WHERE token_hash = $1",
                &params![&hash],
            )
        })?;
        Ok(())
    }

    /// The stored token with this hash, if any.
    pub fn lookup(&self, token_hash: &str) -> Result<Option<StoredToken>, TokenStoreError> {
        let row = self.db.with(|c| {
            c.query_opt(
                "SELECT hostnames, created_at, expires_at, used_at FROM host_join_tokens WHERE token_hash = $1",
                &params![token_hash],
            )
        })?;
        let Some(row) = row else {
            return Ok(None);
        };
        let names = row.text(0)?;
        let hostnames: Vec<HostName> =
            serde_json::from_str(&names).map_err(|e| self.corrupt(e.to_string()))?;
        Ok(Some(StoredToken {
            hostnames,
            created_at: row.int(1)?.max(0) as u64,
            expires_at: row.int(2)?.max(0) as u64,
            used_at: row.opt_int(3)?.map(|u| u.max(0) as u64),
        }))
    }

    /// Spend the token for `claimant` if it is unused and unexpired at `now`.
    /// One statement, so of any number of concurrent claims (on any
    /// replica) exactly one wins.
    pub fn claim(
        &self,
        token_hash: &str,
        now: u64,
        claimant: &str,
    ) -> Result<bool, TokenStoreError> {
        let changed = self.db.with(|c| {
            c.execute(
                "UPDATE host_join_tokens SET used_at = $2, used_by = $3
                 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
                &params![token_hash, now, claimant],
            )
        })?;
        Ok(changed == 1)
    }

    /// Undo `claimant`'s claim (no certificate was issued for it).
    pub fn release(&self, token_hash: &str, claimant: &str) -> Result<(), TokenStoreError> {
        self.db.with(|c| {
            c.execute(
                "UPDATE host_join_tokens SET used_at = NULL, used_by = NULL
                 WHERE token_hash = $1 AND used_by = $2",
                &params![token_hash, claimant],
            )
        })?;
        Ok(())
    }

    /// Run a store operation off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&JoinTokenStore) -> Result<T, TokenStoreError> + Send + 'static,
    ) -> Result<T, TokenStoreError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| TokenStoreError::Task(e.to_string()))?
    }
}

/// Create a join token for `hostnames`, valid for `ttl` from `now`: stored
/// hashed, and audited (`host_token_create`) before it is returned. If the
/// audit row cannot be written the token is removed again.
pub async fn create_join_token(
    store: &JoinTokenStore,
    audit: &AuditStore,
    hostnames: &[HostName],
    ttl: Ttl,
    now: u64,
) -> anyhow::Result<(JoinToken, u64)> {
    if hostnames.is_empty() {
        anyhow::bail!("name at least one host (--hostname H)");
    }
    let token = JoinToken::generate(&mut OsRng);
    let expires_at = now + ttl.as_secs();
    store.insert(&token, hostnames, now, expires_at)?;
    let names: Vec<String> = hostnames.iter().map(|h| h.to_string()).collect();
    let event = AuditEvent {
        time: now,
        action: "host_token_create".into(),
        outcome: "created".into(),
        requested_principals: Some(names),
        ttl_seconds: Some(ttl.as_secs()),
        token_hash: Some(token.hash()),
        details: Some(serde_json::json!({ "expires_at": expires_at })),
        ..Default::default()
    };
    if let Err(e) = audit.append(event, None).await {
        let _ = store.delete(&token);
        return Err(anyhow::Error::new(e).context("the token was not created"));
    }
    Ok((token, expires_at))
}

/// Renewal challenges, stateless so that any replica can check a challenge
/// another one handed out: `jitssh-renew-` + base64url(nonce ‖ expiry ‖
/// MAC), the MAC keyed by a secret every replica reads from the database.
/// Single use is enforced where it matters, at issuance: the challenge's
/// hash is recorded as a used token with the audit row, so the database
/// refuses a second renewal with it on any replica.
pub struct Challenges {
    key: [u8; 32],
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Challenges { .. }")
    }
}

/// Bytes of nonce, expiry and MAC in a challenge.
const NONCE_LEN: usize = 16;
const MAC_LEN: usize = 16;

impl Challenges {
    pub fn new(key: [u8; 32]) -> Self {
        Challenges { key }
    }

    fn mac(&self, nonce: &[u8], expires_at: u64) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(b"jitssh-renew-v1\0");
        mac.update(nonce);
        mac.update(&expires_at.to_be_bytes());
        mac
    }

    /// A fresh challenge, valid for [`CHALLENGE_TTL_SECS`]. Costs no state.
    pub fn issue(&self, now: u64) -> Result<HostChallenge, HostError> {
        use hmac::Mac as _;
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let expires_at = now + CHALLENGE_TTL_SECS;
        let tag = self.mac(&nonce, expires_at).finalize().into_bytes();
        let mut raw = Vec::with_capacity(NONCE_LEN + 8 + MAC_LEN);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&expires_at.to_be_bytes());
        raw.extend_from_slice(&tag[..MAC_LEN]);
        Ok(HostChallenge {
            challenge: format!(
                "jitssh-renew-{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
            ),
            expires_at,
        })
    }

    /// Whether `challenge` was made by a replica of this CA and is unexpired
    /// at `now`: its expiry, or `None`. (Single use: see the type.)
    pub fn check(&self, challenge: &str, now: u64) -> Option<u64> {
        use hmac::Mac as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(challenge.strip_prefix("jitssh-renew-")?)
            .ok()?;
        if raw.len() != NONCE_LEN + 8 + MAC_LEN {
            return None;
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let (exp, tag) = rest.split_at(8);
        let expires_at = u64::from_be_bytes(exp.try_into().ok()?);
        self.mac(nonce, expires_at)
            .verify_truncated_left(tag)
            .ok()?;
        (expires_at > now && expires_at <= now + CHALLENGE_TTL_SECS + 60).then_some(expires_at)
    }
}

/// The used-token record that makes a renewal challenge single use.
fn spent_challenge(challenge: &str, expires_at: u64) -> UsedToken {
    use sha2::Digest as _;
    UsedToken {
        token_hash: format!(
            "host-challenge:{}",
            hex::encode(sha2::Sha256::digest(challenge.as_bytes()))
        ),
        expires_at,
    }
}

/// The host side of the authority: join tokens, challenges, lifetime ceiling.
#[derive(Debug)]
pub struct Hosts {
    pub tokens: JoinTokenStore,
    pub challenges: Challenges,
    /// `certs.host_max_ttl`.
    pub max_ttl: Ttl,
}

impl Hosts {
    /// `challenge_key`: the secret shared by every replica
    /// ([`AuditStore::shared_secret`]).
    pub fn new(tokens: JoinTokenStore, max_ttl: Ttl, challenge_key: [u8; 32]) -> Self {
        Hosts {
            tokens,
            challenges: Challenges::new(challenge_key),
            max_ttl,
        }
    }
}

impl Authority {
    /// `POST /v1/certs/host/challenge`.
    pub fn host_challenge(&self) -> Result<HostChallenge, HostError> {
        self.hosts.challenges.issue(now_unix())
    }

    /// `POST /v1/certs/host`: enrol with a join token.
    pub async fn issue_host_cert(
        &self,
        ctx: &RequestContext,
        body: &[u8],
    ) -> Result<HostCertResponse, HostError> {
        let now = now_unix();
        let mut event = host_event(ctx, now, Via::JoinToken);
        let started = Instant::now();
        let result = self.enrol_steps(ctx, body, now, &mut event).await;
        self.finish(result, event, started).await
    }

    /// `POST /v1/certs/host/renew`: renew with the current certificate.
    pub async fn renew_host_cert(
        &self,
        ctx: &RequestContext,
        body: &[u8],
    ) -> Result<HostCertResponse, HostError> {
        let now = now_unix();
        let mut event = host_event(ctx, now, Via::Renewal);
        let started = Instant::now();
        let result = self.renew_steps(ctx, body, now, &mut event).await;
        self.finish(result, event, started).await
    }

    /// Count, and audit every refusal (the issuance row is written inside
    /// the steps, unless the database is the problem).
    async fn finish(
        &self,
        result: Result<HostCertResponse, HostError>,
        event: AuditEvent,
        started: Instant,
    ) -> Result<HostCertResponse, HostError> {
        Metrics::observe(&self.metrics.issue_seconds, started.elapsed());
        let Err(e) = &result else {
            self.metrics.issued.inc();
            return result;
        };
        self.metrics.deny(e.code());
        if e.before_authentication() {
            // No known join token or renewal proof: counted per source and
            // summarised (`unauthenticated`), never one audit row each.
            if let Some(retry_after_secs) = self.refused_unauthenticated(
                &event.source_ip.unwrap_or_default(),
                e.code(),
                event.time,
            ) {
                return Err(HostError::SourceRateLimited { retry_after_secs });
            }
            return result;
        }
        self.audit.append_refusal(event, e).await;
        result
    }

    async fn enrol_steps(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        now: u64,
        event: &mut AuditEvent,
    ) -> Result<HostCertResponse, HostError> {
        // 1. Parse: a join token (never an ID token), the key, the names.
        let body: wire::HostCertRequest =
            serde_json::from_slice(body).map_err(|e| HostError::BadBody(e.to_string()))?;
        let req = HostCertRequest::parse(&body)?;
        let token_hash = req.token.hash();
        event.token_hash = Some(token_hash.clone());
        event.key_fingerprint = Some(req.public_key.fingerprint().to_owned());
        event.requested_principals = req
            .hostnames
            .as_ref()
            .map(|v| v.iter().map(|h| h.to_string()).collect());

        // 2. The token: known, unexpired, unused, and naming every host asked for.
        let lookup_hash = token_hash.clone();
        let stored = self
            .hosts
            .tokens
            .blocking(move |s| s.lookup(&lookup_hash))
            .await
            .map_err(HostError::Store)?
            .ok_or(HostError::TokenUnknown)?;
        if stored.used_at.is_some() {
            return Err(HostError::TokenUsed);
        }
        if stored.expires_at <= now {
            return Err(HostError::TokenExpired);
        }
        // After the token: a refusal before it is anonymous (counted, not
        // audited one by one), and this one is worth a row.
        self.check_key(&req.public_key)?;
        let requested = match req.hostnames {
            Some(asked) => {
                let extra: Vec<String> = asked
                    .iter()
                    .filter(|h| !stored.hostnames.contains(h))
                    .map(|h| h.to_string())
                    .collect();
                if !extra.is_empty() {
                    return Err(HostError::HostnameNotAllowed {
                        asked: extra,
                        allowed: stored.hostnames.iter().map(|h| h.to_string()).collect(),
                    });
                }
                asked
            }
            None => stored.hostnames.clone(),
        };
        event.requested_principals = Some(requested.iter().map(|h| h.to_string()).collect());

        // 3. Spend it, atomically: of concurrent requests exactly one wins.
        let claimant = claimant_id();
        let (claim_hash, claim_by) = (token_hash.clone(), claimant.clone());
        let claimed = self
            .hosts
            .tokens
            .blocking(move |s| s.claim(&claim_hash, now, &claim_by))
            .await
            .map_err(HostError::Store)?;
        if !claimed {
            return Err(HostError::TokenUsed);
        }

        // 4-7. Policy, sign, audit; give the token back if nothing was issued.
        let result = self
            .decide_sign_audit(
                Via::JoinToken,
                &req.public_key,
                &requested,
                &stored.hostnames,
                None,
                None,
                ctx,
                now,
                event,
            )
            .await;
        if result.is_err() {
            let hash = token_hash.clone();
            if let Err(e) = self
                .hosts
                .tokens
                .blocking(move |s| s.release(&hash, &claimant))
                .await
            {
                tracing::error!(error = %e, "could not release a join token after a refusal; it stays spent");
            }
        }
        result
    }

    async fn renew_steps(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        now: u64,
        event: &mut AuditEvent,
    ) -> Result<HostCertResponse, HostError> {
        // 1. Parse, and check the challenge is ours and unexpired (it is
        // spent with the audit row of the certificate it buys).
        let body: wire::HostRenewRequest =
            serde_json::from_slice(body).map_err(|e| HostError::BadBody(e.to_string()))?;
        let Some(challenge_expiry) = self.hosts.challenges.check(&body.challenge, now) else {
            return Err(HostError::ChallengeInvalid);
        };

        // 2. The proof: our host certificate, valid now, and its key's signature.
        let renewal = verify_renewal(
            &body.certificate,
            &body.challenge,
            &body.signature,
            &self.published.host,
            now,
        )?;
        event.key_fingerprint = Some(renewal.key.fingerprint().to_owned());
        event.requested_principals =
            Some(renewal.hostnames.iter().map(|h| h.to_string()).collect());
        event.details = Some(serde_json::json!({
            "via": "renewal",
            "previous_serial": renewal.serial.to_string(),
            "previous_key_id": renewal.key_id,
        }));

        // 3. Nothing revoked: the certificate (serial, key ID) or the key.
        let revoked = self.revocations.get();
        if revoked.serials.contains(&renewal.serial) || revoked.key_ids.contains(&renewal.key_id) {
            return Err(HostError::Revoked("this host certificate"));
        }
        self.check_key(&renewal.key)?;

        // 4-7. Policy, sign, audit.
        self.decide_sign_audit(
            Via::Renewal,
            &renewal.key,
            &renewal.hostnames,
            &renewal.hostnames,
            Some(&renewal),
            Some(spent_challenge(&body.challenge, challenge_expiry)),
            ctx,
            now,
            event,
        )
        .await
    }

    /// Refuse every published CA key (the signing keys, and the next and
    /// retiring ones during a rotation), as the user path does, and revoked keys.
    fn check_key(&self, key: &SubjectKey) -> Result<(), HostError> {
        if key.same_key(self.user_ca.public_key())
            || key.same_key(self.host_ca.public_key())
            || self.published.contains(key.key_data())
        {
            return Err(HostError::CaKey);
        }
        if self.revocations.get().key_revoked(key.fingerprint()) {
            return Err(HostError::Revoked("this host key"));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)] // the named inputs of one step
    async fn decide_sign_audit(
        &self,
        via: Via,
        key: &SubjectKey,
        requested: &[HostName],
        authorized: &[HostName],
        current: Option<&VerifiedRenewal>,
        spent: Option<UsedToken>,
        ctx: &RequestContext,
        now: u64,
        event: &mut AuditEvent,
    ) -> Result<HostCertResponse, HostError> {
        // Policy, then ca-core's invariants on its decision.
        let input = HostPolicyInput::new(
            via,
            requested,
            authorized,
            key,
            ctx.source_ip.clone(),
            current,
            now,
        );
        let grant = self.decide_host(&input, requested, event)?;

        // Sign with the host CA key.
        let serial = self
            .next_serial()
            .map_err(|e| HostError::Internal(e.to_string()))?;
        let kid = host_key_id(grant.hostnames(), serial);
        let cert = sign_host_cert(&grant, key, serial, &kid, now, &mut OsRng, &self.host_ca)
            .map_err(|e| match e {
                CertError::CaKey => HostError::CaKey,
                other => HostError::Internal(other.to_string()),
            })?;
        let certificate = cert
            .to_openssh()
            .map_err(|e| HostError::Internal(e.to_string()))?;
        let hostnames: Vec<String> = grant.hostnames().iter().map(|h| h.to_string()).collect();

        // Audit: committed before anything leaves.
        event.outcome = "issued".into();
        event.granted_principals = hostnames.clone();
        event.ttl_seconds = Some(grant.ttl().as_secs());
        event.serial = Some(serial.to_string());
        event.key_id = Some(kid.clone());
        // The key itself, so `jitssh-ca revoke --host` can revoke it (and with
        // it every certificate for it, renewed ones included).
        if let (Some(d), Ok(line)) = (
            event.details.as_mut().and_then(|d| d.as_object_mut()),
            ssh_key::PublicKey::new(key.key_data().clone(), "").to_openssh(),
        ) {
            d.insert("public_key".into(), line.into());
        }
        let audit_started = Instant::now();
        self.audit
            .append(event.clone(), spent)
            .await
            .map_err(|e| match e {
                // This renewal challenge bought a certificate already.
                AuditError::Replayed => HostError::ChallengeInvalid,
                e => HostError::AuditUnavailable(e),
            })?;
        Metrics::observe(&self.metrics.audit_seconds, audit_started.elapsed());

        tracing::info!(serial, hostnames = ?hostnames, ttl = grant.ttl().as_secs(), via = ?via, "issued host certificate");
        Ok(HostCertResponse {
            certificate,
            serial: serial.to_string(),
            key_id: kid,
            hostnames,
            valid_after: cert.valid_after(),
            valid_before: cert.valid_before(),
        })
    }

    fn decide_host(
        &self,
        input: &HostPolicyInput,
        requested: &[HostName],
        event: &mut AuditEvent,
    ) -> Result<HostGrant, HostError> {
        let input = serde_json::to_value(input).map_err(|e| HostError::Internal(e.to_string()))?;
        let policy = self.policy.snapshot();
        let eval = match policy.evaluate_host(&input) {
            Ok(eval) => eval,
            Err(e) => {
                event.policy_hash = Some(policy.hash().to_owned());
                tracing::error!(error = %e, "host policy evaluation failed; denying");
                return Err(HostError::PolicyError(e.to_string()));
            }
        };
        Metrics::observe(&self.metrics.policy_seconds, eval.elapsed);
        event.policy_hash = Some(eval.policy_hash.clone());
        match enforce_host(eval.decision.as_ref(), requested, self.hosts.max_ttl) {
            Ok(grant) => {
                event.decision_reasons = grant.reasons().to_vec();
                Ok(grant)
            }
            Err(Refusal::Denied { reasons }) => {
                event.decision_reasons = reasons.clone();
                Err(HostError::Denied { reasons })
            }
            Err(Refusal::PolicyError(msg)) => {
                tracing::error!(error = %msg, policy_hash = %eval.policy_hash, "host policy returned an unusable decision; denying");
                Err(HostError::PolicyError(msg))
            }
        }
    }
}

fn host_event(ctx: &RequestContext, now: u64, via: Via) -> AuditEvent {
    AuditEvent {
        time: now,
        action: "host_cert".into(),
        source_ip: Some(ctx.source_ip.clone()),
        details: Some(serde_json::json!({ "via": via })),
        ..Default::default()
    }
}

/// Identifies one request's claim on a token, so only it can release it.
fn claimant_id() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<HostName> {
        v.iter().map(|s| HostName::parse(s).unwrap()).collect()
    }

    #[test]
    fn tokens_are_stored_hashed_and_spent_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        crate::audit::AuditStore::open(&db).unwrap();
        let s = JoinTokenStore::open(&db).unwrap();
        let t = JoinToken::generate(&mut OsRng);
        s.insert(&t, &names(&["web01", "web01.example"]), 1000, 2000)
            .unwrap();
        let raw = std::fs::read(&db).unwrap();
        assert!(
            !raw.windows(t.expose().len())
                .any(|w| w == t.expose().as_bytes()),
            "the token itself is never stored"
        );
        let got = s.lookup(&t.hash()).unwrap().unwrap();
        assert_eq!(got.hostnames, names(&["web01", "web01.example"]));
        assert_eq!((got.expires_at, got.used_at), (2000, None));
        assert!(s.lookup("00").unwrap().is_none());

        assert!(!s.claim(&t.hash(), 2000, "late").unwrap(), "expired");
        assert!(s.claim(&t.hash(), 1500, "a").unwrap());
        assert!(!s.claim(&t.hash(), 1500, "b").unwrap(), "already spent");
        s.release(&t.hash(), "b").unwrap();
        assert!(
            !s.claim(&t.hash(), 1500, "b").unwrap(),
            "only the claimant releases"
        );
        s.release(&t.hash(), "a").unwrap();
        assert!(s.claim(&t.hash(), 1500, "b").unwrap());
        assert_eq!(s.lookup(&t.hash()).unwrap().unwrap().used_at, Some(1500));
    }

    #[test]
    fn challenges_are_checked_by_any_replica_and_expire() {
        let a = Challenges::new([7; 32]);
        let b = Challenges::new([7; 32]);
        let other = Challenges::new([8; 32]);
        let ch = a.issue(100).unwrap();
        assert_eq!(ch.expires_at, 100 + CHALLENGE_TTL_SECS);
        assert_eq!(
            b.check(&ch.challenge, 150),
            Some(ch.expires_at),
            "another replica"
        );
        assert_eq!(other.check(&ch.challenge, 150), None, "another CA");
        assert_eq!(
            a.check(&ch.challenge, 100 + CHALLENGE_TTL_SECS),
            None,
            "expired"
        );
        let again = a.issue(100).unwrap();
        assert_ne!(ch.challenge, again.challenge);
        // Tampering with any byte (here: a later expiry) breaks the MAC.
        let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(ch.challenge.strip_prefix("jitssh-renew-").unwrap())
            .unwrap();
        raw[NONCE_LEN + 7] ^= 1;
        let forged = format!(
            "jitssh-renew-{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        assert_eq!(a.check(&forged, 150), None);
        for junk in ["made-up", "jitssh-renew-", "jitssh-renew-!!!", ""] {
            assert_eq!(a.check(junk, 150), None, "{junk}");
        }
        // The used-token record is per challenge.
        assert_ne!(
            spent_challenge(&ch.challenge, 1).token_hash,
            spent_challenge(&again.challenge, 1).token_hash
        );
    }
}
