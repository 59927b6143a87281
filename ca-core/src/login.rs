//! Login names: the personal account a verified person gets on hosts, derived
//! per issuer by the rule the operator configured (`[[issuers]] login_claim`,
//! `email_domains`), never by guessing from whatever claims a token carries.
//!
//! OIDC says only issuer + subject identify a user: `preferred_username` is
//! not unique and may be user-editable, and an email is only as good as its
//! domain. So an issuer without a rule yields no login name at all, an email
//! counts only for the domains the operator named, and a name must already be
//! a plain lowercase ASCII account name (no Unicode folding, no `+` tags, no
//! quoted local parts): anything else is refused, not rewritten.
//!
//! Which identity a login name belongs to (one, across issuers) is the
//! server's binding table; this module only derives the candidate.

use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

/// A personal login name: `^[a-z_][a-z0-9_.-]{0,31}$`, the portable Unix
/// account-name shape, lowercase. Always a valid [`crate::Principal`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LoginName(String);

impl LoginName {
    pub const MAX_LEN: usize = 32;

    /// Parse a login name from a claim value: ASCII only, then lowercased.
    /// Non-ASCII is refused rather than folded (U+212A KELVIN SIGN lowercases
    /// to an ASCII `k`).
    pub fn parse(s: &str) -> Result<Self, LoginError> {
        let invalid = || LoginError::Invalid(crate::escape_control(&truncate(s, 80)));
        if s.is_empty() || s.len() > Self::MAX_LEN || !s.is_ascii() {
            return Err(invalid());
        }
        let name = s.to_ascii_lowercase();
        let b = name.as_bytes();
        if !(b[0].is_ascii_lowercase() || b[0] == b'_') {
            return Err(invalid());
        }
        if !b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-')
        }) {
            return Err(invalid());
        }
        Ok(LoginName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The login name as a certificate principal.
    pub fn principal(&self) -> crate::Principal {
        crate::Principal::parse(&self.0)
            .unwrap_or_else(|_| unreachable!("a login name is always a valid principal"))
    }
}

impl fmt::Display for LoginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for LoginName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Where an issuer's login names come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginSource {
    /// No rule: this issuer's people get no personal login name (fail closed).
    None,
    /// The local part of the verified `email`, only in the rule's domains.
    Email,
    /// A string claim the operator trusts from this issuer (typically
    /// `preferred_username`, when users cannot edit it at the IdP).
    Claim(String),
}

/// An issuer's login-name rule, checked when the config is loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginRule {
    source: LoginSource,
    /// Lowercase ASCII domains, compared exactly (no subdomains).
    email_domains: Vec<String>,
}

/// Claims that can never be a login name: protocol claims, and `email`
/// spelt as a claim name (it has its own rule with domains).
const NOT_LOGIN_CLAIMS: &[&str] = &[
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "jti",
    "azp",
    "nonce",
    "auth_time",
    "at_hash",
    "c_hash",
    "email_verified",
    "groups",
];

impl LoginRule {
    /// No rule: no login names from this issuer.
    pub fn none() -> Self {
        LoginRule {
            source: LoginSource::None,
            email_domains: Vec::new(),
        }
    }

    /// From the config: `login_claim` (`None`: no rule) and `email_domains`.
    /// `"email"` needs at least one domain; domains need `"email"`.
    pub fn new(claim: Option<&str>, email_domains: &[String]) -> Result<Self, String> {
        let source = match claim {
            None => LoginSource::None,
            Some("email") => LoginSource::Email,
            Some(c) if c.is_empty() || c.trim() != c || crate::has_control_chars(c) => {
                return Err(format!(
                    "login_claim {:?} is not a claim name",
                    crate::escape_control(c)
                ));
            }
            Some(c) if NOT_LOGIN_CLAIMS.contains(&c) => {
                return Err(format!(
                    "login_claim {c:?} cannot name a person; use \"preferred_username\", \"email\" (with email_domains) or a claim your IdP reserves for account names"
                ));
            }
            Some(c) => LoginSource::Claim(c.to_owned()),
        };
        let mut domains = Vec::new();
        for d in email_domains {
            domains.push(parse_domain(d)?);
        }
        match (&source, domains.is_empty()) {
            (LoginSource::Email, true) => Err(
                "login_claim = \"email\" needs email_domains = [\"your-company.example\"]: an email's local part names a person only in domains you control".into(),
            ),
            (LoginSource::Email, false) | (_, true) => Ok(LoginRule {
                source,
                email_domains: domains,
            }),
            (_, false) => Err(
                "email_domains applies only with login_claim = \"email\"".into(),
            ),
        }
    }

    /// A rule taking `claim` as the login name (e.g. `preferred_username`).
    pub fn claim(claim: &str) -> Self {
        LoginRule {
            source: LoginSource::Claim(claim.to_owned()),
            email_domains: Vec::new(),
        }
    }

    pub fn source(&self) -> &LoginSource {
        &self.source
    }

    pub fn email_domains(&self) -> &[String] {
        &self.email_domains
    }

    pub fn is_none(&self) -> bool {
        self.source == LoginSource::None
    }

    /// The login name of a person with these verified `claims` (and the
    /// email, if the IdP verified it), or why there is none.
    pub fn derive(
        &self,
        claims: &Map<String, Value>,
        verified_email: Option<&str>,
    ) -> Result<LoginName, LoginError> {
        match &self.source {
            LoginSource::None => Err(LoginError::NoRule),
            LoginSource::Claim(name) => match claims.get(name) {
                None | Some(Value::Null) => Err(LoginError::ClaimMissing(name.clone())),
                Some(Value::String(s)) if !s.is_empty() => LoginName::parse(s),
                Some(_) => Err(LoginError::ClaimNotString(name.clone())),
            },
            LoginSource::Email => {
                let untrusted = claims
                    .get("preferred_username")
                    .is_some_and(|v| !v.is_null());
                let Some(email) = verified_email else {
                    return Err(LoginError::NoVerifiedEmail { untrusted });
                };
                let (local, domain) = split_email(email)?;
                let domain = domain.to_ascii_lowercase();
                if !self.email_domains.contains(&domain) {
                    return Err(LoginError::EmailDomain {
                        domain: crate::escape_control(&truncate(&domain, 255)),
                        allowed: self.email_domains.clone(),
                    });
                }
                LoginName::parse(local)
            }
        }
    }
}

/// `local@domain` with exactly one `@`: a quoted local part holding another
/// `@` (`"alice@x"@example.com`) is refused, not split.
fn split_email(email: &str) -> Result<(&str, &str), LoginError> {
    let bad = || LoginError::EmailForm(crate::escape_control(&truncate(email, 80)));
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return Err(bad());
    }
    Ok((local, domain))
}

/// A configured email domain: lowercase ASCII DNS name (IDNA A-labels for
/// international domains), no `@`, no trailing dot, no wildcard.
fn parse_domain(d: &str) -> Result<String, String> {
    let lower = d.to_ascii_lowercase();
    let ok = !lower.is_empty()
        && lower.len() <= 253
        && lower.split('.').count() >= 2
        && lower.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if ok {
        Ok(lower)
    } else {
        Err(format!(
            "email_domains: {:?} is not a domain name (write it like \"example.com\": no '@', no wildcard, no trailing dot; xn-- form for international names)",
            crate::escape_control(d)
        ))
    }
}

/// Why a person has no login name. Each message says what to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error(
        "this issuer has no rule for login names: add login_claim (e.g. login_claim = \"email\" with email_domains = [\"example.com\"]) to its [[issuers]] entry in the CA config"
    )]
    NoRule,
    #[error("the token has no {0:?} claim, which this issuer's login_claim names")]
    ClaimMissing(String),
    #[error("the {0:?} claim (this issuer's login_claim) must be a non-empty string")]
    ClaimNotString(String),
    #[error(
        "the token has no verified email, which this issuer's login_claim = \"email\" needs{}",
        if *untrusted { " (its preferred_username is not trusted from this issuer)" } else { "" }
    )]
    NoVerifiedEmail { untrusted: bool },
    #[error(
        "the verified email's domain {domain:?} is not among this issuer's email_domains ({})",
        allowed.join(", ")
    )]
    EmailDomain {
        domain: String,
        allowed: Vec<String>,
    },
    #[error("the verified email {0:?} is not of the form local@domain")]
    EmailForm(String),
    #[error(
        "{0:?} is not a valid login name: it must be ASCII, start with a letter or '_', hold only letters, digits, '_', '.', '-', and have at most 32 characters (it is lowercased)"
    )]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn email_rule() -> LoginRule {
        LoginRule::new(Some("email"), &["Example.com".into()]).unwrap()
    }

    /// (rule, claims, verified email) → the login name or the error's start.
    fn check(rule: &LoginRule, c: Value, email: Option<&str>, expected: Result<&str, &str>) {
        let got = rule.derive(&claims(c.clone()), email);
        match (&got, expected) {
            (Ok(n), Ok(want)) => assert_eq!(n.as_str(), want, "{c} {email:?}"),
            (Err(e), Err(want)) => {
                assert!(e.to_string().contains(want), "{c} {email:?}: {e}")
            }
            _ => panic!("{c} {email:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn email_local_part_only_in_configured_domains() {
        let r = email_rule();
        let pu = json!({"preferred_username": "alice"});
        check(&r, json!({}), Some("Alice@example.com"), Ok("alice"));
        check(&r, json!({}), Some("alice@EXAMPLE.COM"), Ok("alice"));
        check(
            &r,
            json!({}),
            Some("alice@anything.example"),
            Err("not among"),
        );
        check(
            &r,
            json!({}),
            Some("alice@example.com.evil"),
            Err("not among"),
        );
        check(
            &r,
            json!({}),
            Some("alice@sub.example.com"),
            Err("not among"),
        );
        check(&r, json!({}), Some("alice@example.com."), Err("not among"));
        check(
            &r,
            json!({}),
            Some("alice@ex\u{0430}mple.com"),
            Err("not among"),
        );
        check(
            &r,
            json!({}),
            Some("\"alice@x\"@example.com"),
            Err("not of the form"),
        );
        check(
            &r,
            json!({}),
            Some("alice@example.com@evil"),
            Err("not of the form"),
        );
        check(&r, json!({}), Some("@example.com"), Err("not of the form"));
        check(
            &r,
            json!({}),
            Some("alice+root@example.com"),
            Err("not a valid login name"),
        );
        check(
            &r,
            json!({}),
            Some("\u{212A}en@example.com"),
            Err("not a valid login name"),
        );
        check(
            &r,
            json!({}),
            Some("1alice@example.com"),
            Err("not a valid login name"),
        );
        // preferred_username is not trusted from an email-rule issuer.
        check(
            &r,
            pu.clone(),
            None,
            Err("preferred_username is not trusted"),
        );
        check(&r, pu, Some("bob@example.com"), Ok("bob"));
    }

    #[test]
    fn claims_and_no_rule() {
        let pu = LoginRule::claim("preferred_username");
        check(
            &pu,
            json!({"preferred_username": "Alice"}),
            None,
            Ok("alice"),
        );
        check(
            &pu,
            json!({}),
            Some("alice@example.com"),
            Err("no \"preferred_username\" claim"),
        );
        check(
            &pu,
            json!({"preferred_username": 7}),
            None,
            Err("non-empty string"),
        );
        check(
            &pu,
            json!({"preferred_username": ""}),
            None,
            Err("non-empty string"),
        );
        check(
            &pu,
            json!({"preferred_username": "al ice"}),
            None,
            Err("not a valid"),
        );
        check(
            &pu,
            json!({"preferred_username": "a".repeat(33)}),
            None,
            Err("not a valid"),
        );
        check(
            &pu,
            json!({"preferred_username": "\u{130}lice"}),
            None,
            Err("not a valid"),
        );
        let none = LoginRule::none();
        check(
            &none,
            json!({"preferred_username": "alice"}),
            Some("alice@example.com"),
            Err("add login_claim"),
        );
    }

    #[test]
    fn rules_are_checked_at_load() {
        assert!(
            LoginRule::new(Some("email"), &[])
                .unwrap_err()
                .contains("email_domains")
        );
        assert!(LoginRule::new(Some("preferred_username"), &["example.com".into()]).is_err());
        for bad in [
            "",
            "@example.com",
            "*.example.com",
            "example.com.",
            "com",
            "ex ample.com",
            "bücher.example",
        ] {
            assert!(
                LoginRule::new(Some("email"), &[bad.into()]).is_err(),
                "{bad}"
            );
        }
        for bad in ["", "iss", "email_verified", " preferred_username"] {
            assert!(LoginRule::new(Some(bad), &[]).is_err(), "{bad}");
        }
        assert!(LoginRule::new(None, &[]).unwrap().is_none());
        assert_eq!(
            LoginRule::new(Some("email"), &["xn--bcher-kva.example".into()])
                .unwrap()
                .email_domains(),
            ["xn--bcher-kva.example"]
        );
    }

    #[test]
    fn login_names_are_principals() {
        for ok in ["alice", "_svc", "a.b-c_d", &"a".repeat(32)] {
            assert_eq!(LoginName::parse(ok).unwrap().principal().as_str(), ok);
        }
        for bad in ["-a", ".a", "a,b", "a*", "a@b", "a\n"] {
            assert!(LoginName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
