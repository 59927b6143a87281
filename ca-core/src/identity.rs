//! `VerifiedIdentity`: who a request comes from, after the token was verified.

use serde::Serialize;

/// A person logging in, or a workload (CI job, service) exchanging its token.
/// Policies must be able to tell them apart: a workload never gets a human's
/// principals by accident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    Human,
    Workload,
}

/// The identity the server established from a verified OIDC ID token.
/// Identity is `issuer` + `subject`; `email` is set only when the IdP said
/// `email_verified: true`, so an unverified address can never name a user.
#[derive(Clone, Debug, Serialize)]
pub struct VerifiedIdentity {
    pub kind: IdentityKind,
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub groups: Vec<String>,
    /// The personal login name, derived by the issuer's configured rule
    /// ([`crate::login::LoginRule`]); `None` for workloads, and for people
    /// whose issuer has no rule or whose token does not satisfy it.
    pub login: Option<crate::LoginName>,
    /// Why a person has no `login` (says which setting to add or claim to
    /// fix); `None` when there is a login name, and for workloads.
    pub login_problem: Option<String>,
    /// Every claim of the token, for policies that need more.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl VerifiedIdentity {
    /// Who, for humans reading logs: the verified email, else `issuer#subject`.
    pub fn display_name(&self) -> String {
        match &self.email {
            Some(e) => crate::escape_control(e),
            None => crate::escape_control(&format!("{}#{}", self.issuer, self.subject)),
        }
    }
}
