//! `VerifiedIdentity`: who a request comes from, after the token was verified;
//! `Party`: an identity as an elevation records it, and when two are one person.

use serde::{Deserialize, Serialize};

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

/// Someone taking part in an elevation: issuer + subject, and the email only
/// when the IdP verified it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    pub issuer: String,
    pub subject: String,
    #[serde(default)]
    pub email: Option<String>,
}

impl Party {
    /// The same person, as far as the CA can tell: the same issuer and
    /// subject, or the same verified email (one person with accounts at two
    /// issuers must not approve their own request).
    pub fn same_person(&self, other: &Party) -> bool {
        (self.issuer == other.issuer && self.subject == other.subject)
            || matches!((&self.email, &other.email),
                (Some(a), Some(b)) if a.eq_ignore_ascii_case(b))
    }

    /// [`Party::same_person`], or sharing a login name: `mine` and `theirs`
    /// are the login names the CA knows for each (derived from the token now,
    /// bound to the identity in the login-name table). A login name is one
    /// account on every host, so two identities holding one are one person
    /// for approvals, whatever their issuers and emails.
    pub fn same_person_with_logins(
        &self,
        other: &Party,
        mine: &[String],
        theirs: &[String],
    ) -> bool {
        self.same_person(other) || mine.iter().any(|l| theirs.contains(l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_approval_is_recognised() {
        let a = Party {
            issuer: "https://idp".into(),
            subject: "alice".into(),
            email: Some("Alice@Example.com".into()),
        };
        let mut b = a.clone();
        assert!(a.same_person(&b));
        b.subject = "alice-2".into();
        assert!(a.same_person(&b), "same verified email, other subject");
        b.email = None;
        assert!(!a.same_person(&b));
        b.issuer = "https://other".into();
        b.subject = "alice".into();
        assert!(
            !a.same_person(&b),
            "same subject at another issuer is someone else"
        );
        let alice = ["alice".to_owned()];
        assert!(
            a.same_person_with_logins(&b, &alice, &alice),
            "one login name at two issuers is one person"
        );
        assert!(!a.same_person_with_logins(&b, &alice, &["bob".to_owned()]));
        assert!(!a.same_person_with_logins(&b, &[], &[]));
        assert!(a.same_person_with_logins(&a.clone(), &[], &[]));
    }
}
