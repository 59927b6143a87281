//! `POST /v1/elevations`: a request for a role, decided by the policy at
//! once (approved, denied) or left pending for approvers.

use ca_core::audit::AuditEvent;
use ca_core::elevation::{
    ElevationRequest, ElevationState, Outcome, Role, RoleName, enforce_elevation, request_hash,
};
use ca_core::wire::{Elevation, ElevationCreate};
use rand_core::{OsRng, RngCore as _};
use serde_json::json;

use super::caller::Caller;
use super::error::{ElevationOpError, refusal};
use super::policy_input;
use super::service::Elevations;
use super::store::{self, Row};
use super::transition::{Transition, committed, details, single};
use crate::policy::PolicySnapshot;

/// Undecided requests one person may have open at once: enough for real
/// work, few enough that nobody floods approvers (or the webhook).
pub const MAX_PENDING_PER_REQUESTER: u64 = 10;

impl Elevations {
    /// The role `name` from `policy`'s role table (the snapshot the caller
    /// also asks for its decision).
    fn role(policy: &PolicySnapshot, name: &str) -> Result<Role, ElevationOpError> {
        let roles = policy.roles();
        if roles.is_empty() {
            return Err(ElevationOpError::NotConfigured);
        }
        let parsed = RoleName::parse(name)?;
        let role = roles
            .get(&parsed)
            .cloned()
            .ok_or_else(|| ElevationOpError::UnknownRole {
                role: parsed.to_string(),
                known: roles
                    .iter()
                    .map(|r| r.name.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        Ok(role)
    }

    /// `POST /v1/elevations`.
    pub async fn create(
        &self,
        caller: &Caller<'_>,
        body: &[u8],
        now: u64,
    ) -> Result<Elevation, ElevationOpError> {
        let mut event = caller.event("elevation_request", now);
        let result = self.create_steps(caller, body, now, &mut event).await;
        if let Err(e) = &result {
            self.audit_refusal(event, e).await;
        }
        result
    }

    async fn create_steps(
        &self,
        caller: &Caller<'_>,
        body: &[u8],
        now: u64,
        event: &mut AuditEvent,
    ) -> Result<Elevation, ElevationOpError> {
        self.refuse_revoked(caller)?;
        let body: ElevationCreate =
            serde_json::from_slice(body).map_err(|e| ElevationOpError::BadBody(e.to_string()))?;
        let req = ElevationRequest::parse(&body)?;
        event.reason = Some(req.reason.clone());
        event.requested_ttl = req.ttl.map(|t| t.as_secs());
        event.details = Some(json!({"role": req.role}));
        // The role and the decision from one policy version.
        let policy = self.policy.snapshot();
        let role = Self::role(&policy, req.role.as_str())?;
        let (issuer, subject) = (&caller.identity.issuer, &caller.identity.subject);
        let pending = self.read(|c| store::pending_count(c, issuer, subject, now))?;
        if pending >= MAX_PENDING_PER_REQUESTER {
            return Err(ElevationOpError::TooManyPending(pending));
        }
        event.requested_principals = Some(role.principals.iter().map(|p| p.to_string()).collect());

        let input = policy_input::request(caller, &req, &role, now);
        let eval = policy
            .evaluate_elevation(&input)
            .map_err(|e| ElevationOpError::PolicyError(e.to_string()))?;
        event.policy_hash = Some(eval.policy_hash.clone());
        let outcome = enforce_elevation(eval.decision.as_ref(), &role, &req, self.config.max_grant)
            .map_err(refusal)?;

        let id = new_id();
        let requester = caller.party();
        let principals: Vec<String> = role.principals.iter().map(|p| p.to_string()).collect();
        let (state, ttl, approvals_required, reasons) = match outcome {
            Outcome::Deny { reasons } => {
                event.decision_reasons = reasons.clone();
                return Err(ElevationOpError::Denied { reasons });
            }
            Outcome::Approve { ttl, reasons } => (ElevationState::Approved, ttl, 0, reasons),
            Outcome::Pending {
                ttl,
                approvals,
                reasons,
            } => (ElevationState::Pending, ttl, approvals, reasons),
        };
        // A person acting: their login name is theirs, or now becomes theirs.
        self.claim_login(caller, now).await?;
        let hash = request_hash(
            &id,
            &requester,
            &role.name,
            &role.principals,
            ttl,
            &req.reason,
            now,
        );
        let approved = state == ElevationState::Approved;
        let row = Row {
            id: id.clone(),
            requester: requester.clone(),
            requester_groups: caller.identity.groups.clone(),
            role: role.name.to_string(),
            principals: principals.clone(),
            ttl_seconds: ttl.as_secs(),
            reason: req.reason.clone(),
            reasons: reasons.clone(),
            approvals_required,
            state,
            created_at: now,
            pending_until: now + self.config.pending_timeout.as_secs(),
            grant_start: approved.then_some(now),
            grant_end: approved.then_some(now + ttl.as_secs()),
            closed_by: None,
            request_hash: hash.clone(),
            policy_hash: eval.policy_hash.clone(),
        };
        event.outcome = state.as_str().into();
        event.decision_reasons = reasons;
        event.ttl_seconds = Some(ttl.as_secs());
        if approved {
            event.granted_principals = principals;
        }
        event.details = Some(details(&row, None));
        let transition = Transition {
            row,
            notify: if approved {
                "elevation.approved"
            } else {
                "elevation.pending"
            },
            actor: Some(requester),
            comment: None,
            with_votes: false,
            grants_changed: approved,
        };
        let answers = self
            .commit_transition(event, now, move |conn, ev| {
                store::insert(conn, &transition.row)?;
                Ok(committed(vec![ev], vec![transition]))
            })
            .await?;
        let wire = single(answers)?;
        tracing::info!(id = %id, role = %role.name, %state, who = %caller.identity.display_name(), "elevation requested");
        Ok(wire)
    }
}

/// `el_` and 24 hex digits (96 random bits): unguessable, so an id alone
/// reveals nothing and cannot be enumerated.
fn new_id() -> String {
    let mut b = [0u8; 12];
    OsRng.fill_bytes(&mut b);
    format!("el_{}", hex::encode(b))
}
