//! `Principal`: a user or host name that may appear in a certificate.

use std::fmt;

/// A certificate principal. Constructing one proves it is safe to put in a
/// certificate and in sshd's `AuthorizedPrincipalsFile`: 1 to 64 characters
/// from `[A-Za-z0-9._@-]`, starting with a letter, digit or `_`.
///
/// The character set excludes commas (sshd splits principals lists on them,
/// CVE-2026-35414), whitespace, control characters and the wildcards `*` `?`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Principal(String);

/// Why a string is not a valid principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalError {
    #[error("principal is empty")]
    Empty,
    #[error("principal is longer than {max} characters", max = Principal::MAX_LEN)]
    TooLong,
    #[error(
        "principal {0:?} contains a character outside [A-Za-z0-9._@-] (no commas, spaces, wildcards or control characters)"
    )]
    BadChar(String),
    #[error("principal {0:?} must start with a letter, digit or '_'")]
    BadStart(String),
}

impl Principal {
    /// Longest principal accepted; usernames on Linux are at most 32, hostnames
    /// labels 63, so 64 leaves room without inviting abuse.
    pub const MAX_LEN: usize = 64;

    /// Parse a principal, refusing anything outside the strict character set.
    pub fn parse(s: &str) -> Result<Self, PrincipalError> {
        if s.is_empty() {
            return Err(PrincipalError::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(PrincipalError::TooLong);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
        {
            return Err(PrincipalError::BadChar(crate::escape_control(s)));
        }
        let first = s.as_bytes()[0];
        if !(first.is_ascii_alphanumeric() || first == b'_') {
            return Err(PrincipalError::BadStart(s.to_owned()));
        }
        Ok(Principal(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Principal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Principal::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, ok: bool) {
        assert_eq!(Principal::parse(input).is_ok(), ok, "{input:?}");
    }

    #[test]
    fn accepts_usernames_and_hostnames() {
        for s in [
            "alice",
            "bob.smith",
            "_svc",
            "deploy-1",
            "a@b",
            "db01.example.com",
            "0day",
        ] {
            check(s, true);
        }
    }

    #[test]
    fn refuses_dangerous_names() {
        for s in [
            "", "a,b", "a b", " a", "a\n", "a\tb", "*", "al?ce", "-x", ".hidden", "a/b", "a:b",
            "ä", "a\0",
        ] {
            check(s, false);
        }
        check(&"a".repeat(65), false);
        check(&"a".repeat(64), true);
    }
}
