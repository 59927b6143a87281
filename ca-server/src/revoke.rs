//! Revoking, one operation for every door (`jitssh-ca revoke` and the
//! console): what a person typed parsed into a [`Target`], the revocation
//! and its audit row committed in one transaction, and who revoked what
//! read back from those rows for the console's list.

use std::collections::HashMap;

use ca_core::audit::AuditEvent;

use crate::audit::{AuditError, AuditStore, TxOutcome};
use crate::params;
use crate::revocation::{Plan, Revocation, RevocationError, Target};

/// Longest subject the console accepts (OpenID Connect's `sub` is at most
/// 255 ASCII characters; room for providers that stretch it).
pub const MAX_SUBJECT: usize = 1024;

/// Why a revocation was not made. Nothing was changed either way.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// The person's input: what to fix is in the message.
    #[error("{0}")]
    Invalid(String),
    /// The database or audit log could not take it now.
    #[error("{0}")]
    Unavailable(#[from] AuditError),
}

impl From<RevocationError> for RevokeError {
    fn from(e: RevocationError) -> Self {
        match e {
            RevocationError::Invalid(m) => RevokeError::Invalid(m),
            other => RevokeError::Unavailable(AuditError::Unavailable(other.to_string())),
        }
    }
}

/// A serial as typed (decimal, as `ssh-keygen -L` prints it).
pub fn parse_serial(text: &str) -> Result<Target, RevokeError> {
    let t = text.trim();
    match t.parse::<u64>() {
        Ok(0) => Err(RevokeError::Invalid(
            "serial 0 is never issued by jitssh; copy the serial from `ssh-keygen -L -f CERT`"
                .into(),
        )),
        Ok(n) => Ok(Target::Serial(n)),
        Err(_) => Err(RevokeError::Invalid(format!(
            "{:?} is not a serial: give the decimal number `ssh-keygen -L -f CERT` prints after \"Serial:\"",
            ca_core::escape_control(&t.chars().take(40).collect::<String>())
        ))),
    }
}

/// An OpenSSH public key line, parsed as strictly as issuance parses one.
pub fn parse_key(text: &str) -> Result<Target, RevokeError> {
    ca_core::SubjectKey::parse(text)
        .map(Target::Key)
        .map_err(|e| RevokeError::Invalid(format!("{e} (paste one line of the key's .pub file)")))
}

/// An identity: `issuer` must be one of the CA's configured issuers, the
/// subject printable text as the provider's `sub` claim gives it.
pub fn parse_subject<'a>(
    issuers: impl IntoIterator<Item = &'a str>,
    issuer: &str,
    subject: &str,
) -> Result<Target, RevokeError> {
    let issuers: Vec<&str> = issuers.into_iter().collect();
    let issuer = issuer.trim();
    if !issuers.contains(&issuer) {
        return Err(RevokeError::Invalid(format!(
            "the issuer must be one of this CA's [[issuers]]: {}",
            issuers.join(", ")
        )));
    }
    let subject = subject.trim();
    if subject.is_empty() || subject.len() > MAX_SUBJECT || ca_core::has_control_chars(subject) {
        return Err(RevokeError::Invalid(format!(
            "the subject must be 1 to {MAX_SUBJECT} printable characters: the provider's `sub` claim (the audit log's `subject`)"
        )));
    }
    Ok(Target::Subject {
        issuer: issuer.to_owned(),
        subject: subject.to_owned(),
    })
}

/// `ISSUER/SUBJECT` as the CLI takes it: issuer URLs contain `/`, so the
/// longest configured issuer the value starts with is the issuer.
pub fn parse_issuer_subject<'a>(
    issuers: impl IntoIterator<Item = &'a str> + Clone,
    value: &str,
) -> Result<Target, RevokeError> {
    let issuer = issuers
        .clone()
        .into_iter()
        .filter(|i| {
            value.len() > i.len() + 1 && value.starts_with(i) && value.as_bytes()[i.len()] == b'/'
        })
        .max_by_key(|i| i.len())
        .ok_or_else(|| {
            RevokeError::Invalid(
                "--subject must be ISSUER/SUBJECT with ISSUER one of the configured [[issuers]]"
                    .into(),
            )
        })?;
    parse_subject(issuers, issuer, &value[issuer.len() + 1..])
}

/// A reason as typed (trimmed; empty is none).
pub fn parse_reason(text: Option<&str>) -> Result<Option<String>, RevokeError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => ca_core::request::parse_reason(t)
            .map(Some)
            .map_err(|e| RevokeError::Invalid(e.to_string())),
    }
}

/// Revoke `target` and append its audit row (`event`, started by the
/// caller with who and through which door; its `time` is the revocation's)
/// in one transaction: a revocation never exists without its row. Returns
/// the entries added (kind, value). The caller refreshes its cache.
pub async fn revoke(
    audit: &AuditStore,
    target: &Target,
    reason: Option<String>,
    mut event: AuditEvent,
    max_ttl: u64,
) -> Result<Vec<(String, String)>, RevokeError> {
    let plan = Plan::new(target, event.time, max_ttl)?;
    event.action = "revoke".into();
    event.outcome = "revoked".into();
    event.reason = reason.clone();
    let done = audit
        .transact(move |c| {
            Ok(match plan.record(c, reason.as_deref())? {
                Some(added) => {
                    event.details = Some(serde_json::json!({ "revoked": added }));
                    TxOutcome {
                        events: vec![event],
                        keep: true,
                        value: Ok(added),
                    }
                }
                None => TxOutcome {
                    events: Vec::new(),
                    keep: false,
                    value: Err(plan.nothing()),
                },
            })
        })
        .await?;
    Ok(done?)
}

/// Who revoked an entry, from its `revoke` audit row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoker {
    /// The person's email or subject; `None` for `jitssh-ca revoke` on the
    /// CA's host (the operator's shell, no signed-in identity).
    pub who: Option<String>,
    /// `console`, or `None` for the command line.
    pub channel: Option<String>,
}

/// Most `revoke` rows read per second of the listed entries (a page's
/// lookups stay bounded however many revocations share a second).
const ROWS_PER_SECOND: u32 = 64;

/// Who revoked each of `entries` (keyed by kind and value), read from the
/// `revoke` audit rows of the seconds they were created in. Entries made
/// by the CA itself (a grant ended, a host revoked with its keys) have no
/// such row and are absent.
pub fn revokers(
    audit: &AuditStore,
    entries: &[Revocation],
) -> Result<HashMap<(String, String), Revoker>, RevokeError> {
    let mut seconds: Vec<u64> = entries.iter().map(|e| e.created_at).collect();
    seconds.sort_unstable();
    seconds.dedup();
    let rows = audit
        .db()
        .with(|c| {
            let mut rows = Vec::new();
            for t in &seconds {
                for r in c.query(
                    "SELECT event FROM audit WHERE time = $1 AND action = 'revoke' ORDER BY seq LIMIT $2",
                    &params![*t, ROWS_PER_SECOND],
                )? {
                    rows.push(r.text(0)?);
                }
            }
            Ok(rows)
        })
        .map_err(|e| RevokeError::Unavailable(AuditError::Unavailable(e.to_string())))?;
    let mut out = HashMap::new();
    for row in rows {
        let Ok(e) = serde_json::from_str::<AuditEvent>(&row) else {
            continue;
        };
        let revoker = Revoker {
            who: e.email.clone().or(e.subject.clone()),
            channel: e.channel.clone(),
        };
        let added = e
            .details
            .as_ref()
            .and_then(|d| d.get("revoked"))
            .and_then(|r| serde_json::from_value::<Vec<(String, String)>>(r.clone()).ok())
            .unwrap_or_default();
        for key in added {
            out.entry(key).or_insert_with(|| revoker.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_targets_parse_or_say_what_to_fix() {
        assert!(matches!(parse_serial(" 42 "), Ok(Target::Serial(42))));
        for bad in ["0", "-1", "abc", "", "18446744073709551616"] {
            assert!(
                matches!(parse_serial(bad), Err(RevokeError::Invalid(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_key("ssh-ed25519 AAAA"),
            Err(RevokeError::Invalid(_))
        ));
        let issuers = ["https://idp.example.com", "https://idp.example.com/tenant"];
        let t = parse_issuer_subject(issuers, "https://idp.example.com/tenant/u1").unwrap();
        assert!(
            matches!(&t, Target::Subject { issuer, subject } if issuer == "https://idp.example.com/tenant" && subject == "u1")
        );
        assert!(parse_subject(issuers, "https://evil.example", "u1").is_err());
        assert!(parse_subject(issuers, "https://idp.example.com", "a\nb").is_err());
        assert!(parse_subject(issuers, "https://idp.example.com", " ").is_err());
        assert_eq!(parse_reason(Some("  ")).unwrap(), None);
        assert_eq!(
            parse_reason(Some(" lost ")).unwrap().as_deref(),
            Some("lost")
        );
        assert!(parse_reason(Some("a\u{7}b")).is_err());
    }
}
