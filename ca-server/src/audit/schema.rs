//! The audit database's schema, connection settings and migration.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::AuditError;

/// `PRAGMA user_version` of the schema below.
pub(super) const SCHEMA_VERSION: i64 = 1;

/// `audit` holds the chain; its columns other than `prev_hash`, `hash` and
/// `event` are an index derived from `event` (checked by `verify`).
/// `audit_principals` indexes requested and granted principals. The triggers
/// guard against accidental edits (an attacker can drop them; the chain is
/// what detects tampering).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit (
    seq       INTEGER PRIMARY KEY,
    time      INTEGER NOT NULL,
    action    TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    subject   TEXT,
    issuer    TEXT,
    serial    TEXT,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL,
    event     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_time ON audit(time);
CREATE INDEX IF NOT EXISTS audit_subject ON audit(subject);
CREATE INDEX IF NOT EXISTS audit_serial ON audit(serial);
CREATE TABLE IF NOT EXISTS audit_principals (
    seq       INTEGER NOT NULL,
    principal TEXT NOT NULL,
    PRIMARY KEY (seq, principal)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audit_principals_principal ON audit_principals(principal);
CREATE TABLE IF NOT EXISTS used_tokens (
    token_hash TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS used_tokens_expires_at ON used_tokens(expires_at);
CREATE TABLE IF NOT EXISTS heartbeat (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    time INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_principals_no_update BEFORE UPDATE ON audit_principals
BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_principals_no_delete BEFORE DELETE ON audit_principals
BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;
";

/// Settings for the writer connection: WAL so readers never block the
/// writer, `synchronous=FULL` so a commit survives power loss.
pub(super) fn configure_writer(
    conn: &Connection,
    busy_timeout: Duration,
) -> rusqlite::Result<String> {
    conn.busy_timeout(busy_timeout)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Index inserts land on random pages; keep them cached (32 MiB) rather
    // than re-reading them from the WAL for every batch.
    conn.pragma_update(None, "cache_size", -32_768)?;
    conn.set_prepared_statement_cache_capacity(16);
    Ok(mode)
}

/// Create the tables if missing; refuse a database from a newer version.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), AuditError> {
    let unavailable = |e: rusqlite::Error| AuditError::unavailable(path, &e);
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(unavailable)?;
    if found > SCHEMA_VERSION {
        return Err(AuditError::Schema {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found < SCHEMA_VERSION {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        tx.execute_batch(SCHEMA).map_err(unavailable)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
    }
    Ok(())
}
