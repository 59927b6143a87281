//! The audit store's vocabulary: spent tokens, stored events and filters,
//! store options, errors, transaction outcomes and the `Refused` trait every
//! refusing operation implements.

use ca_core::audit::AuditEvent;

use crate::db::DbError;

/// The hash of an ID token that was used for a certificate, kept until the
/// token expires so it cannot be replayed, even across restarts and
/// replicas.
///
/// Stored keyed by `(expires_at, token_hash)` (schema 2), so both must be
/// derived from the same signed bytes: the hash from the token's signing
/// input and the expiry from its verified `exp` (`issue::user`), or both
/// from a MAC-checked host challenge (`hosts::spent_challenge`). A caller
/// that paired one hash with two expiries would spend the token twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsedToken {
    pub token_hash: String,
    /// Unix seconds.
    pub expires_at: u64,
}

/// An operation's refusal as the audit log records it: implemented by the
/// error enum of every operation that refuses after authentication
/// (issuance, host certificates, elevation), so [`AuditStore::append_refusal`]
/// is the one place that writes their rows.
pub trait Refused: std::fmt::Display {
    /// The stable code the API returns (`policy_denied`, `token_replayed`…).
    fn code(&self) -> &'static str;
    /// The audit log itself failed: there is nowhere to write the row.
    fn audit_unavailable(&self) -> bool;
}

/// The audit row of a refusal after authentication: outcome `denied`, the
/// error's stable code, and its message as the reason unless the steps
/// already recorded the policy's reasons. The one shape of every refusal
/// row, appended on its own (`AuditStore::append_refusal`) or inside a
/// rolled-back transaction (an elevation transition refused in the writer).
pub fn refusal_row(mut event: AuditEvent, refusal: &dyn Refused) -> AuditEvent {
    event.outcome = "denied".into();
    event.code = Some(refusal.code().into());
    if event.decision_reasons.is_empty() {
        event.decision_reasons = vec![refusal.to_string()];
    }
    event
}

/// What a [`AuditStore::transact`] operation decided.
pub struct TxOutcome<T> {
    /// Rows appended to the chain in the same transaction.
    pub events: Vec<AuditEvent>,
    /// Keep the state change (`false` rolls it back, the rows still go in).
    pub keep: bool,
    /// Returned to the caller after COMMIT.
    pub value: T,
}

/// One audit row as read back.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub hash: String,
    /// The previous row's hash, as this row records it.
    pub prev_hash: String,
    pub event: AuditEvent,
    /// The exact stored JSON: the bytes the chain hashes.
    pub raw: String,
}

/// Which rows `list` and `export` return. Conditions combine with AND.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Exact match on the token's `sub`.
    pub subject: Option<String>,
    /// Matches requested or granted principals.
    pub principal: Option<String>,
    /// Unix seconds, inclusive.
    pub since: Option<u64>,
    /// Unix seconds, exclusive.
    pub until: Option<u64>,
    /// Exact match, e.g. `user_cert`.
    pub action: Option<String>,
    /// Exact match: `issued`, `denied`, `failed`...
    pub outcome: Option<String>,
    /// Exact match on the certificate serial (decimal).
    pub serial: Option<String>,
    /// Exact match on the subject or on the event's `email` (not indexed:
    /// the console bounds how many rows it examines).
    pub subject_or_email: Option<String>,
    /// Keep only the newest `limit` matching rows (still returned oldest first).
    pub limit: Option<usize>,
}

/// Tuning for [`AuditStore::open_with`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// The most rows committed in one transaction.
    pub max_batch: usize,
    /// Appends queued for the writer before `append` waits for room.
    pub queue: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_batch: 256,
            queue: 4096,
        }
    }
}

/// Errors of the audit store. Only [`AuditError::Unavailable`] means "cannot
/// write now, try later" (HTTP 503); the others need an operator or a
/// different request.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The log cannot be opened or written right now; nothing was recorded.
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
    /// The ID token of this append was already spent (on this or another
    /// replica): nothing was recorded for it.
    #[error("this token was already used for a certificate")]
    Replayed,
    #[error("cannot read the audit log: {source}")]
    Read {
        #[source]
        source: DbError,
    },
    #[error(
        "audit log {db}, row {seq}: {problem}; run `jitssh-ca audit verify` and restore from backup if it fails"
    )]
    Corrupt {
        db: String,
        seq: u64,
        problem: String,
    },
    #[error(
        "audit log {db} has schema version {found}; this jitssh-ca understands up to {supported}: upgrade jitssh-ca"
    )]
    Schema {
        db: String,
        found: i64,
        supported: i64,
    },
    /// The event itself cannot be stored (a caller bug, not an outage).
    #[error("audit event cannot be stored: {0}")]
    Invalid(String),
    #[error("cannot write the audit export: {0}")]
    Export(#[source] std::io::Error),
}

impl AuditError {
    /// True for [`AuditError::Unavailable`]: retryable, maps to HTTP 503.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, AuditError::Unavailable(_))
    }

    /// A database error as "cannot write now" (its message names the
    /// database and says what to do).
    pub(crate) fn unavailable(e: &DbError) -> Self {
        AuditError::Unavailable(format!("cannot write {e}"))
    }

    pub(crate) fn read(source: DbError) -> Self {
        AuditError::Read { source }
    }
}

/// Low bits of a certificate serial counted by one process; the bits above
/// are its block number ([`AuditStore::serial_block`]).
pub const SERIAL_BLOCK_BITS: u32 = 40;
