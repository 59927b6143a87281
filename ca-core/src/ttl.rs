//! `Ttl`: a certificate or grant lifetime in whole seconds.

use std::fmt;

/// A lifetime of at least one second and at most [`Ttl::ABSOLUTE_MAX`].
/// Deployments configure a lower ceiling; this bound only keeps arithmetic on
/// `now + ttl` far from overflow whatever a policy returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Ttl(u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    #[error("ttl must be at least 1 second")]
    Zero,
    #[error("ttl of {0} seconds is above the absolute maximum of {max} seconds (7 days)", max = Ttl::ABSOLUTE_MAX)]
    TooLong(u64),
}

impl Ttl {
    /// Seven days: no user, host or workload certificate may live longer.
    pub const ABSOLUTE_MAX: u64 = 7 * 24 * 3600;

    pub fn from_secs(secs: u64) -> Result<Self, TtlError> {
        match secs {
            0 => Err(TtlError::Zero),
            s if s > Self::ABSOLUTE_MAX => Err(TtlError::TooLong(s)),
            s => Ok(Ttl(s)),
        }
    }

    pub fn as_secs(self) -> u64 {
        self.0
    }

    /// Parse a human duration: `90`, `90s`, `15m`, `2h`, `1d`.
    pub fn parse_human(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
            Some(i) => s.split_at(i),
            None => (s, "s"),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{s:?} is not a duration; use e.g. 90s, 15m, 2h"))?;
        let mult = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            _ => return Err(format!("unknown unit in {s:?}; use s, m, h or d")),
        };
        let secs = n
            .checked_mul(mult)
            .ok_or_else(|| format!("{s:?} is too long"))?;
        Ttl::from_secs(secs).map_err(|e| e.to_string())
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(3600) {
            write!(f, "{}h", self.0 / 3600)
        } else if self.0.is_multiple_of(60) {
            write!(f, "{}m", self.0 / 60)
        } else {
            write!(f, "{}s", self.0)
        }
    }
}

impl<'de> serde::Deserialize<'de> for Ttl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Human(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ttl::from_secs(s).map_err(serde::de::Error::custom),
            Raw::Human(s) => Ttl::parse_human(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(Ttl::from_secs(0).is_err());
        assert!(Ttl::from_secs(Ttl::ABSOLUTE_MAX + 1).is_err());
        assert_eq!(Ttl::from_secs(60).map(|t| t.as_secs()), Ok(60));
    }

    #[test]
    fn human() {
        assert_eq!(Ttl::parse_human("15m").map(Ttl::as_secs), Ok(900));
        assert_eq!(Ttl::parse_human("2h").map(Ttl::as_secs), Ok(7200));
        assert_eq!(Ttl::parse_human("45").map(Ttl::as_secs), Ok(45));
        assert!(Ttl::parse_human("15x").is_err());
        assert!(Ttl::parse_human("m").is_err());
        assert!(Ttl::parse_human("99999999999999999999d").is_err());
        assert_eq!(Ttl::from_secs(900).map(|t| t.to_string()), Ok("15m".into()));
    }
}
