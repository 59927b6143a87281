//! What can stop a user certificate request, with the stable code each
//! refusal carries to the HTTP body, the metrics and the audit log.

use ca_core::request::RequestError;

use crate::audit::AuditError;
use crate::oidc::TokenError;

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

impl crate::audit::Refused for IssueError {
    fn code(&self) -> &'static str {
        IssueError::code(self)
    }
    fn audit_unavailable(&self) -> bool {
        matches!(self, IssueError::AuditUnavailable(_))
    }
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
