//! `CertRequest`: a certificate request body parsed into checked values.

use crate::principal::{Principal, PrincipalError};
use crate::subject_key::{SubjectKey, SubjectKeyError};
use crate::ttl::{Ttl, TtlError};
use crate::wire::UserCertRequest;

/// A request that has passed parsing: after this, the code cannot hold an
/// invalid principal, ttl, key or reason.
#[derive(Clone, Debug)]
pub struct CertRequest {
    pub public_key: SubjectKey,
    /// `None`: "everything the policy allows". Never `Some(empty)`.
    pub principals: Option<Vec<Principal>>,
    pub ttl: Option<Ttl>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("invalid public_key: {0}")]
    PublicKey(#[from] SubjectKeyError),
    #[error("principals is an empty list; omit it to get every principal the policy allows")]
    EmptyPrincipals,
    #[error("too many principals ({0}); at most {max} may be requested", max = CertRequest::MAX_PRINCIPALS)]
    TooManyPrincipals(usize),
    #[error("principals[{index}]: {error}")]
    Principal { index: usize, error: PrincipalError },
    #[error("principal {0:?} is listed twice")]
    DuplicatePrincipal(String),
    #[error("invalid ttl_seconds: {0}")]
    Ttl(#[from] TtlError),
    #[error("reason is longer than {max} characters", max = CertRequest::MAX_REASON)]
    ReasonTooLong,
    #[error(
        "reason contains control or invisible formatting characters (bidi overrides, zero-width); send plain text on one line"
    )]
    ReasonControl,
}

impl RequestError {
    /// Stable error code for the HTTP body.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::PublicKey(_) => "invalid_public_key",
            RequestError::EmptyPrincipals
            | RequestError::TooManyPrincipals(_)
            | RequestError::Principal { .. }
            | RequestError::DuplicatePrincipal(_) => "invalid_principals",
            RequestError::Ttl(_) => "invalid_ttl",
            RequestError::ReasonTooLong | RequestError::ReasonControl => "invalid_reason",
        }
    }
}

impl CertRequest {
    pub const MAX_PRINCIPALS: usize = 32;
    pub const MAX_REASON: usize = 1024;

    pub fn parse(body: &UserCertRequest) -> Result<Self, RequestError> {
        let public_key = SubjectKey::parse(&body.public_key)?;
        let principals = match &body.principals {
            None => None,
            Some(list) => Some(parse_principals(list)?),
        };
        let ttl = body.ttl_seconds.map(Ttl::from_secs).transpose()?;
        let reason = body.reason.as_deref().map(parse_reason).transpose()?;
        Ok(CertRequest {
            public_key,
            principals,
            ttl,
            reason,
        })
    }
}

/// Parse a non-empty, duplicate-free list of principals.
pub fn parse_principals(list: &[String]) -> Result<Vec<Principal>, RequestError> {
    if list.is_empty() {
        return Err(RequestError::EmptyPrincipals);
    }
    if list.len() > CertRequest::MAX_PRINCIPALS {
        return Err(RequestError::TooManyPrincipals(list.len()));
    }
    let mut out: Vec<Principal> = Vec::with_capacity(list.len());
    for (index, p) in list.iter().enumerate() {
        let p = Principal::parse(p).map_err(|error| RequestError::Principal { index, error })?;
        if out.contains(&p) {
            return Err(RequestError::DuplicatePrincipal(p.to_string()));
        }
        out.push(p);
    }
    Ok(out)
}

/// A free-text reason: trimmed, bounded, printable. Empty means none.
pub fn parse_reason(s: &str) -> Result<String, RequestError> {
    let s = s.trim();
    if s.chars().count() > CertRequest::MAX_REASON {
        return Err(RequestError::ReasonTooLong);
    }
    if crate::has_hidden_chars(s) {
        return Err(RequestError::ReasonControl);
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    fn body(
        principals: Option<Vec<&str>>,
        ttl: Option<u64>,
        reason: Option<&str>,
    ) -> UserCertRequest {
        UserCertRequest {
            public_key: ED.into(),
            principals: principals.map(|v| v.into_iter().map(String::from).collect()),
            ttl_seconds: ttl,
            reason: reason.map(String::from),
        }
    }

    fn check(b: UserCertRequest, code: Option<&str>) {
        match (CertRequest::parse(&b), code) {
            (Ok(_), None) => {}
            (Err(e), Some(c)) => assert_eq!(e.code(), c, "{e}"),
            (r, c) => panic!("expected {c:?}, got {r:?}"),
        }
    }

    #[test]
    fn table() {
        check(body(None, None, None), None);
        check(body(Some(vec!["alice"]), Some(600), Some("INC-1")), None);
        check(body(Some(vec![]), None, None), Some("invalid_principals"));
        check(
            body(Some(vec!["a,b"]), None, None),
            Some("invalid_principals"),
        );
        check(
            body(Some(vec!["a", "a"]), None, None),
            Some("invalid_principals"),
        );
        check(
            body(Some(vec!["x"; 33]), None, None),
            Some("invalid_principals"),
        );
        check(body(None, Some(0), None), Some("invalid_ttl"));
        check(body(None, Some(u64::MAX), None), Some("invalid_ttl"));
        check(
            body(None, None, Some("line\nforged")),
            Some("invalid_reason"),
        );
        check(
            body(None, None, Some(&"r".repeat(1025))),
            Some("invalid_reason"),
        );
        // Text that reads differently from what it is: bidi controls,
        // invisible characters.
        for hidden in [
            "\u{202e}gnitset",
            "in\u{2066}c\u{2069}",
            "a\u{200b}b",
            "\u{feff}x",
            "a\u{2028}b",
        ] {
            check(body(None, None, Some(hidden)), Some("invalid_reason"));
        }
        check(body(None, None, Some("INC-1 für Café 中")), None);
    }
}
