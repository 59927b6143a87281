//! What can stop an elevation call: one error enum for every elevation
//! operation (they share codes and the refusal rows they audit), each with
//! a stable code that `http` maps to a status.

use ca_core::Refusal;
use ca_core::elevation::{ElevationError, ElevationState};

use super::webhook::WebhookError;
use crate::audit::AuditError;
use crate::db::DbError;

/// Everything that can stop an elevation call. `http` maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum ElevationOpError {
    #[error("request body is not valid JSON for this endpoint: {0}")]
    BadBody(String),
    #[error("{0}")]
    Request(#[from] ElevationError),
    #[error(
        "this CA's policy defines no roles, so there is nothing to elevate to; ask the CA operator"
    )]
    NotConfigured,
    #[error("no role {role} is defined; roles: {known}")]
    UnknownRole { role: String, known: String },
    #[error("denied by policy: {}", .reasons.join("; "))]
    Denied { reasons: Vec<String> },
    #[error(
        "the CA's policy could not decide ({0}); nothing was changed. Ask the CA operator to check the policy"
    )]
    PolicyError(String),
    #[error("no elevation {0} that you may see")]
    NotFound(String),
    #[error("elevation {id} is {state}; only a pending request can be {action}")]
    NotPending {
        id: String,
        state: ElevationState,
        action: &'static str,
    },
    #[error("elevation {id} is {state}; nothing to cancel")]
    NotCancellable { id: String, state: ElevationState },
    /// A conditional `UPDATE` changed no row: the stored request was not in
    /// the state just read (changed outside this writer, or its deadline
    /// passed). Nothing was written.
    #[error(
        "elevation {id} changed while it was being {action}, so nothing was changed; look at it again with `jitssh requests` (or `jitssh-ca elevation list`)"
    )]
    Changed { id: String, action: &'static str },
    #[error(
        "you cannot approve or deny your own elevation request; ask an approver (cancel it with `jitssh cancel`)"
    )]
    SelfApproval,
    #[error("you already approved elevation {0}; each approver counts once")]
    AlreadyApproved(String),
    #[error(
        "elevation {0} is not the request you reviewed (its request_hash differs); look at it again with `jitssh requests`"
    )]
    RequestChanged(String),
    #[error("you may not decide elevation {id}: {}", .reasons.join("; "))]
    NotApprover { id: String, reasons: Vec<String> },
    #[error("only the requester can cancel elevation {0}; approvers deny, operators revoke")]
    NotRequester(String),
    #[error("only people can approve or deny elevations; workload identities cannot")]
    WorkloadApprover,
    #[error("{0}")]
    LoginName(#[from] crate::logins::LoginNameError),
    #[error(
        "you already have {0} pending elevation requests; cancel some (`jitssh cancel ID`) or wait for a decision"
    )]
    TooManyPending(u64),
    #[error("too many elevation calls for this identity; retry in {0} s")]
    RateLimited(u64),
    #[error("this identity has been revoked at this CA; ask the CA operator")]
    Revoked,
    #[error("the audit log cannot be written, so nothing was changed; try again shortly")]
    AuditUnavailable(#[source] AuditError),
    #[error("cannot read elevations: {0}")]
    Store(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ElevationOpError {
    /// Stable snake_case code, shared by the HTTP body and audit rows.
    pub fn code(&self) -> &'static str {
        match self {
            ElevationOpError::BadBody(_) => "invalid_request",
            ElevationOpError::Request(e) => e.code(),
            ElevationOpError::NotConfigured => "elevation_not_configured",
            ElevationOpError::UnknownRole { .. } => "unknown_role",
            ElevationOpError::Denied { .. } => "denied_by_policy",
            ElevationOpError::PolicyError(_) => "policy_error",
            ElevationOpError::NotFound(_) => "elevation_not_found",
            ElevationOpError::NotPending { .. } => "elevation_not_pending",
            ElevationOpError::NotCancellable { .. } => "elevation_not_cancellable",
            ElevationOpError::Changed { .. } => "elevation_changed",
            ElevationOpError::SelfApproval => "self_approval",
            ElevationOpError::AlreadyApproved(_) => "already_approved",
            ElevationOpError::RequestChanged(_) => "request_changed",
            ElevationOpError::NotApprover { .. } => "not_an_approver",
            ElevationOpError::NotRequester(_) => "not_the_requester",
            ElevationOpError::WorkloadApprover => "workload_approver",
            ElevationOpError::LoginName(e) => e.code(),
            ElevationOpError::TooManyPending(_) => "too_many_pending",
            ElevationOpError::RateLimited(_) => "rate_limited",
            ElevationOpError::Revoked => "revoked",
            ElevationOpError::AuditUnavailable(_) => "audit_unavailable",
            ElevationOpError::Store(_) => "database_unavailable",
            ElevationOpError::Internal(_) => "internal_error",
        }
    }
}

/// Why the elevation service could not open (`serve`, the operator
/// commands).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the elevation tables: {0}")]
    Tables(DbError),
    #[error("cannot create the revocations table: {0}")]
    Revocations(crate::revocation::RevocationError),
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    #[error("cannot load active elevation grants: {0}")]
    Grants(ElevationOpError),
}

impl crate::audit::Refused for ElevationOpError {
    fn code(&self) -> &'static str {
        ElevationOpError::code(self)
    }
    fn audit_unavailable(&self) -> bool {
        matches!(self, ElevationOpError::AuditUnavailable(_))
    }
}

/// The policy's refusal of a request as this operation's error.
pub(super) fn refusal(r: Refusal) -> ElevationOpError {
    match r {
        Refusal::Denied { reasons } => ElevationOpError::Denied { reasons },
        Refusal::PolicyError(m) => ElevationOpError::PolicyError(m),
    }
}
