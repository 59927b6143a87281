//! `HostName`: a DNS name a host certificate may certify.

use std::fmt;

/// A host certificate principal. Constructing one proves it is a plain DNS
/// name that `ssh` can match exactly: lowercase ASCII labels of `[a-z0-9-]`,
/// each 1 to 63 characters and neither starting nor ending with `-`, joined by
/// single dots, at most 253 characters in all, with no trailing dot.
///
/// Uppercase ASCII is accepted and lowercased (DNS names are case-insensitive
/// and `ssh` lowercases the name it connects to before matching). There are no
/// wildcards: OpenSSH matches host certificate principals as patterns, so a
/// `*` or `?` would certify hosts nobody named.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct HostName(String);

/// Why a string is not a valid host name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostNameError {
    #[error("hostname is empty")]
    Empty,
    #[error("hostname {0:?} is longer than {max} characters", max = HostName::MAX_LEN)]
    TooLong(String),
    #[error(
        "hostname {0:?} contains a wildcard; host certificates name exact hosts (one --hostname per name)"
    )]
    Wildcard(String),
    #[error("hostname {0:?} ends with a dot; write it without the trailing dot")]
    TrailingDot(String),
    #[error("hostname {0:?} has an empty label (two dots in a row, or a leading dot)")]
    EmptyLabel(String),
    #[error("hostname {0:?} has a label longer than 63 characters")]
    LabelTooLong(String),
    #[error("hostname {0:?} has a label that starts or ends with '-'")]
    LabelHyphen(String),
    #[error(
        "hostname {0:?} contains a character outside [a-z0-9.-] (no spaces, commas, underscores or non-ASCII letters)"
    )]
    BadChar(String),
}

impl HostName {
    /// Longest DNS name in text form.
    pub const MAX_LEN: usize = 253;
    /// Longest DNS label.
    pub const MAX_LABEL: usize = 63;

    /// Parse a host name, lowercasing ASCII letters and refusing anything
    /// that is not a plain DNS name.
    pub fn parse(s: &str) -> Result<Self, HostNameError> {
        let shown = || crate::escape_control(s);
        if s.is_empty() {
            return Err(HostNameError::Empty);
        }
        if s.contains(['*', '?']) {
            return Err(HostNameError::Wildcard(shown()));
        }
        if s.len() > Self::MAX_LEN {
            return Err(HostNameError::TooLong(shown()));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(HostNameError::BadChar(shown()));
        }
        if s.len() > 1 && s.ends_with('.') {
            return Err(HostNameError::TrailingDot(shown()));
        }
        for label in s.split('.') {
            if label.is_empty() {
                return Err(HostNameError::EmptyLabel(shown()));
            }
            if label.len() > Self::MAX_LABEL {
                return Err(HostNameError::LabelTooLong(shown()));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(HostNameError::LabelHyphen(shown()));
            }
        }
        Ok(HostName(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for HostName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HostName::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Parse a non-empty list of host names, refusing duplicates (after
/// lowercasing) and more than `max` names. The order is kept.
pub fn parse_hostnames(list: &[String], max: usize) -> Result<Vec<HostName>, HostNamesError> {
    if list.is_empty() {
        return Err(HostNamesError::Empty);
    }
    if list.len() > max {
        return Err(HostNamesError::TooMany {
            got: list.len(),
            max,
        });
    }
    let mut out: Vec<HostName> = Vec::with_capacity(list.len());
    for (index, s) in list.iter().enumerate() {
        let h = HostName::parse(s).map_err(|error| HostNamesError::Invalid { index, error })?;
        if out.contains(&h) {
            return Err(HostNamesError::Duplicate(h.to_string()));
        }
        out.push(h);
    }
    Ok(out)
}

/// Why a list of host names was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostNamesError {
    #[error("the list of hostnames is empty; name at least one")]
    Empty,
    #[error("{got} hostnames given; at most {max} fit one host certificate")]
    TooMany { got: usize, max: usize },
    #[error("hostnames[{index}]: {error}")]
    Invalid { index: usize, error: HostNameError },
    #[error("hostname {0:?} is listed twice")]
    Duplicate(String),
}

impl HostNamesError {
    /// True when a name was refused for carrying a wildcard.
    pub fn is_wildcard(&self) -> bool {
        matches!(
            self,
            HostNamesError::Invalid {
                error: HostNameError::Wildcard(_),
                ..
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, fn(String) -> HostNameError>) {
        let got = HostName::parse(input);
        match expected {
            Ok(name) => assert_eq!(got.as_ref().map(HostName::as_str), Ok(name), "{input:?}"),
            Err(make) => assert_eq!(got, Err(make(crate::escape_control(input))), "{input:?}"),
        }
    }

    #[test]
    fn accepts_dns_names_and_lowercases() {
        for s in [
            "web01",
            "web01.example.com",
            "a.b.c.d.e",
            "xn--bcher-kva.example",
            "10.0.0.5",
            "a-b.c-d",
            "0",
        ] {
            check(s, Ok(s));
        }
        check("Web01.Example.COM", Ok("web01.example.com"));
        let label = "a".repeat(63);
        check(&format!("{label}.example"), Ok(&format!("{label}.example")));
        // 4 labels of 63 + 3 dots = 255 > 253; 3 labels of 63 + "a" = 193.
        let long = [label.as_str(); 3].join(".")
            + ".abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghi";
        assert_eq!(long.len(), 253);
        check(&long, Ok(&long));
    }

    #[test]
    fn refuses_what_is_not_an_exact_dns_name() {
        assert_eq!(HostName::parse(""), Err(HostNameError::Empty));
        for s in ["*", "*.example.com", "web?.example.com", "web*"] {
            check(s, Err(HostNameError::Wildcard));
        }
        check("web01.example.com.", Err(HostNameError::TrailingDot));
        for s in [".", ".example.com", "a..b"] {
            check(s, Err(HostNameError::EmptyLabel));
        }
        check(
            &format!("{}.com", "a".repeat(64)),
            Err(HostNameError::LabelTooLong),
        );
        for s in ["-web.example.com", "web-.example.com", "a.-b"] {
            check(s, Err(HostNameError::LabelHyphen));
        }
        for s in [
            "web_01",
            "a b",
            "a,b",
            "bücher.de",
            "a\nb",
            "a/b",
            "a:22",
            "[::1]",
            "a@b",
        ] {
            check(s, Err(HostNameError::BadChar));
        }
        let long = format!("{}.b", "a.".repeat(126));
        assert_eq!(long.len(), 254);
        check(&long, Err(HostNameError::TooLong));
    }

    #[test]
    fn lists_are_non_empty_bounded_and_duplicate_free() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_hostnames(&l(&["b.example", "a.example"]), 4)
                .map(|v| v.iter().map(|h| h.to_string()).collect::<Vec<_>>()),
            Ok(l(&["b.example", "a.example"]))
        );
        assert_eq!(parse_hostnames(&[], 4), Err(HostNamesError::Empty));
        assert_eq!(
            parse_hostnames(&l(&["a", "b", "c"]), 2),
            Err(HostNamesError::TooMany { got: 3, max: 2 })
        );
        assert_eq!(
            parse_hostnames(&l(&["Web", "web"]), 4),
            Err(HostNamesError::Duplicate("web".into()))
        );
        let wild = parse_hostnames(&l(&["ok", "*.example"]), 4).unwrap_err();
        assert!(wild.is_wildcard(), "{wild}");
        assert!(matches!(wild, HostNamesError::Invalid { index: 1, .. }));
    }
}
