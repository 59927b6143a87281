//! Audit events and the hash chain that makes edits, deletions, insertions
//! and reorderings of the audit log detectable.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One audited decision. Serialised to JSON once; the stored bytes are what
/// the chain hashes, so later changes to this struct never break old rows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unix seconds.
    pub time: u64,
    /// What was asked: `user_cert`, later `elevation_request`, `host_cert`...
    pub action: String,
    /// `issued`, `denied` or `failed`.
    pub outcome: String,
    /// Stable error code when not issued (matches the HTTP error code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_principals: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub granted_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_ttl: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Decimal string, as in the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    /// The reason the requester gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The policy's reasons, or the refusal's message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decision_reasons: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<String>,
    /// SHA-256 of the ID token: links replays without storing the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_hash: Option<String>,
    /// `console` when the request came through the web console; absent for
    /// the HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Action-specific fields (elevation ids, comments, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// The `prev_hash` of the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Hash of row `seq` holding `event_json`, chained to the previous row's hash.
pub fn chain_hash(seq: u64, prev_hash: &str, event_json: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"jitssh-audit-v1\0");
    h.update(seq.to_be_bytes());
    h.update(prev_hash.as_bytes());
    h.update(b"\0");
    h.update(event_json.as_bytes());
    hex::encode(h.finalize())
}

/// A row as stored, for verification.
#[derive(Clone, Debug)]
pub struct ChainRow {
    pub seq: u64,
    pub prev_hash: String,
    pub hash: String,
    pub event: String,
}

/// The first row that breaks the chain, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("row {found}: expected row {expected} here; rows were deleted or inserted")]
    Gap { expected: u64, found: u64 },
    #[error(
        "row {seq}: does not follow the previous row; rows were deleted, inserted or reordered"
    )]
    Link { seq: u64 },
    #[error("row {seq}: content does not match its hash; the row was edited")]
    Edited { seq: u64 },
}

/// Walk rows in `seq` order and check every link. Returns the number of rows
/// and the last hash (the value to anchor elsewhere). Deleting rows from the
/// *end* is only detectable against such an anchor.
pub fn verify_chain(rows: impl IntoIterator<Item = ChainRow>) -> Result<(u64, String), ChainError> {
    let mut verifier = ChainVerifier::default();
    for row in rows {
        verifier.push(&row)?;
    }
    Ok(verifier.finish())
}

/// [`verify_chain`] one row at a time, for rows streamed from a database.
#[derive(Clone, Debug)]
pub struct ChainVerifier {
    expected: u64,
    prev: String,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier {
            expected: 1,
            prev: GENESIS.to_string(),
        }
    }
}

impl ChainVerifier {
    /// Check the next row; after an error the verifier must not be used.
    pub fn push(&mut self, row: &ChainRow) -> Result<(), ChainError> {
        if row.seq != self.expected {
            return Err(ChainError::Gap {
                expected: self.expected,
                found: row.seq,
            });
        }
        if row.prev_hash != self.prev {
            return Err(ChainError::Link { seq: row.seq });
        }
        if chain_hash(row.seq, &row.prev_hash, &row.event) != row.hash {
            return Err(ChainError::Edited { seq: row.seq });
        }
        self.prev.clone_from(&row.hash);
        self.expected += 1;
        Ok(())
    }

    /// Rows verified and the last hash.
    pub fn finish(self) -> (u64, String) {
        (self.expected - 1, self.prev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<ChainRow> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let event = format!("{{\"n\":{seq}}}");
                let hash = chain_hash(seq, &prev, &event);
                let row = ChainRow {
                    seq,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                    event,
                };
                prev = hash;
                row
            })
            .collect()
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(verify_chain(chain(5)).map(|r| r.0), Ok(5));
        assert_eq!(verify_chain(Vec::new()).map(|r| r.0), Ok(0));
    }

    #[test]
    fn tampering_is_named() {
        let mut edited = chain(5);
        edited[2].event = "{\"n\":99}".into();
        assert_eq!(verify_chain(edited), Err(ChainError::Edited { seq: 3 }));

        let mut deleted = chain(5);
        deleted.remove(1);
        assert_eq!(
            verify_chain(deleted),
            Err(ChainError::Gap {
                expected: 2,
                found: 3
            })
        );

        // Delete and renumber: the link breaks.
        let mut renumbered = chain(5);
        renumbered.remove(1);
        for (i, r) in renumbered.iter_mut().enumerate() {
            r.seq = i as u64 + 1;
        }
        assert_eq!(verify_chain(renumbered), Err(ChainError::Link { seq: 2 }));

        // Swap two rows' contents and numbers.
        let mut swapped = chain(5);
        swapped.swap(1, 2);
        swapped[1].seq = 2;
        swapped[2].seq = 3;
        assert_eq!(verify_chain(swapped), Err(ChainError::Link { seq: 2 }));
    }
}
