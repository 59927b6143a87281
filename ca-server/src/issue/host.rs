//! Host certificates, as ordered, named steps: `POST /v1/certs/host` (enrol
//! with a one-time join token) and `POST /v1/certs/host/renew` (renew with
//! the current certificate and a signature over a fresh challenge).
//!
//! Both paths sign with the **host** CA key only, and only after the host
//! policy (`data.jitssh.host_decision`) allowed and its decision passed
//! ca-core's `enforce_host`. No request header is read: a user's ID token
//! cannot stand in for a join token or a renewal proof. As for user
//! certificates, a certificate leaves only after its audit row committed,
//! and every refusal is audited too.

use std::time::Instant;

use ca_core::audit::AuditEvent;
use ca_core::cert::{CertError, sign_host_cert};
use ca_core::host::{
    HostCertRequest, HostGrant, HostPolicyInput, HostRequestError, RenewalError, VerifiedRenewal,
    Via, enforce_host, host_key_id, verify_renewal,
};
use ca_core::hostname::HostName;
use ca_core::wire::{self, HostCertResponse, HostChallenge};
use ca_core::{Refusal, SubjectKey};
use rand_core::{OsRng, RngCore as _};

use crate::audit::{AuditError, UsedToken};
use crate::clock::now_unix;
use crate::hosts::{CHALLENGE_TTL_SECS, TokenStoreError, spent_challenge};

use super::{Authority, RequestContext};
use crate::metrics::Metrics;

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

impl Authority {
    /// `POST /v1/certs/host/challenge`.
    pub fn host_challenge(&self) -> Result<HostChallenge, HostError> {
        Ok(self.hosts.challenges.issue(now_unix()))
    }

    /// `POST /v1/certs/host`: enrol with a join token.
    pub async fn issue_host_cert(
        &self,
        ctx: &RequestContext,
        body: &[u8],
    ) -> Result<HostCertResponse, HostError> {
        self.host_request(ctx, body, Via::JoinToken).await
    }

    /// `POST /v1/certs/host/renew`: renew with the current certificate.
    pub async fn renew_host_cert(
        &self,
        ctx: &RequestContext,
        body: &[u8],
    ) -> Result<HostCertResponse, HostError> {
        self.host_request(ctx, body, Via::Renewal).await
    }

    async fn host_request(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        via: Via,
    ) -> Result<HostCertResponse, HostError> {
        let now = now_unix();
        let mut event = host_event(ctx, now, via);
        let started = Instant::now();
        let result = match via {
            Via::JoinToken => self.enrol_steps(ctx, body, now, &mut event).await,
            Via::Renewal => self.renew_steps(ctx, body, now, &mut event).await,
        };
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
