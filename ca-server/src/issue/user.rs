//! `POST /v1/certs/user` as ordered, named steps: verify token → parse
//! request → rate limit → replay check → login name → revocation → policy →
//! invariants → grants → sign → audit → respond. A refusal at any step after
//! authentication is audited too.

use std::time::Instant;

use ca_core::audit::AuditEvent;
use ca_core::cert::{CertError, CertKind, key_id, sign_cert};
use ca_core::elevation::restrict_to_grants;
use ca_core::policy::{PolicyInput, enforce};
use ca_core::wire::{UserCertRequest, UserCertResponse};
use ca_core::{CertRequest, Refusal, VerifiedIdentity};

use crate::clock::now_unix;
use rand_core::OsRng;

use crate::audit::{AuditError, UsedToken};
use crate::metrics::Metrics;

use super::error::IssueError;
use super::guards::ReplayClaim;
use super::{Authority, RequestContext};

impl Authority {
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
                // after authentication gets its own row here.
                self.audit.append_refusal(event, e).await;
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
        // The verifier hashes the token once; a refused one is hashed here.
        let verified = match self.verifier.verify_full(token, now).await {
            Ok(verified) => verified,
            Err(e) => {
                event.token_hash = Some(crate::oidc::token_hash(token));
                return Err(e.into());
            }
        };
        event.token_hash = Some(verified.token_hash.clone());
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
        self.guards
            .rate
            .check(&format!("{}\0{}", identity.issuer, identity.subject))
            .map_err(|retry_after_secs| IssueError::RateLimited { retry_after_secs })?;

        // 4. Replay: claim the token's signed content (whatever the spelling
        // of its signature); it is spent only if a certificate is issued.
        let token_hash = verified.token_hash.clone();
        if self.guards.replay.spent_before_upgrade(token, now)
            || !self.guards.replay.claim(&token_hash, verified.exp, now)
        {
            return Err(IssueError::Replay);
        }
        let claim = ReplayClaim {
            guard: &self.guards.replay,
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
        grants: &[ca_core::policy::ActiveGrant],
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
        grants: Vec<ca_core::policy::ActiveGrant>,
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
}
