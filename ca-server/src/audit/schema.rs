//! The audit database's schema and migration, per backend.

use crate::db::{Backend, Conn, Db, DbError, TxMode};

use super::types::AuditError;

/// Schema version (SQLite: `PRAGMA user_version`; PostgreSQL: the `audit`
/// row of `jitssh_schema`). 2: `used_tokens` keyed by `(expires_at,
/// token_hash)` ([`rekey_used_tokens`]).
pub(super) const SCHEMA_VERSION: i64 = 2;

/// `audit` holds the chain; its columns other than `prev_hash`, `hash` and
/// `event` are an index derived from `event` (checked by `verify`).
/// `audit_principals` indexes requested and granted principals.
/// `serial_blocks` hands each process a block of certificate serials;
/// `server_secrets` holds keys every replica shares (host challenges). The
/// triggers guard against accidental edits (an attacker can drop them; the
/// chain is what detects tampering).
const SQLITE: &str = "
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
    token_hash TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (expires_at, token_hash)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS heartbeat (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    time INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS serial_blocks (
    id         INTEGER PRIMARY KEY,
    created_at INTEGER NOT NULL,
    holder     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS server_secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
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

/// The same tables for PostgreSQL (`BIGINT` for every integer).
const POSTGRES: &str = "
CREATE TABLE IF NOT EXISTS jitssh_schema (
    component TEXT PRIMARY KEY,
    version   BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq       BIGINT PRIMARY KEY,
    time      BIGINT NOT NULL,
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
    seq       BIGINT NOT NULL,
    principal TEXT NOT NULL,
    PRIMARY KEY (seq, principal)
);
CREATE INDEX IF NOT EXISTS audit_principals_principal ON audit_principals(principal);
CREATE TABLE IF NOT EXISTS used_tokens (
    token_hash TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (expires_at, token_hash)
);
CREATE TABLE IF NOT EXISTS heartbeat (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    time BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS serial_blocks (
    id         BIGINT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    holder     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS server_secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE OR REPLACE FUNCTION jitssh_append_only() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN RAISE EXCEPTION 'audit rows are append-only'; END $f$;
CREATE OR REPLACE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
FOR EACH ROW EXECUTE FUNCTION jitssh_append_only();
CREATE OR REPLACE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
FOR EACH STATEMENT EXECUTE FUNCTION jitssh_append_only();
CREATE OR REPLACE TRIGGER audit_principals_append_only BEFORE UPDATE OR DELETE ON audit_principals
FOR EACH ROW EXECUTE FUNCTION jitssh_append_only();
";

/// Run `ddl` (idempotent `IF NOT EXISTS` statements) in one write
/// transaction. On PostgreSQL it holds the chain lock, so replicas starting
/// together do not race on catalog rows.
pub(crate) fn ensure_tables(db: &Db, sqlite: &str, postgres: &str) -> Result<(), DbError> {
    db.transaction(TxMode::Write, |c| {
        c.lock_chain()?;
        c.batch(match c.backend() {
            Backend::Sqlite => sqlite,
            Backend::Postgres => postgres,
        })
    })
}

/// Create the tables if missing; refuse a database from a newer version.
pub(super) fn migrate(conn: &mut dyn Conn, db: &Db) -> Result<(), AuditError> {
    let unavailable = |e: DbError| AuditError::unavailable(&e);
    conn.begin(TxMode::Write).map_err(unavailable)?;
    let result = migrate_in(conn, db);
    match result {
        Ok(()) => conn.commit().map_err(unavailable),
        Err(e) => {
            let _ = conn.rollback();
            Err(e)
        }
    }
}

fn migrate_in(conn: &mut dyn Conn, db: &Db) -> Result<(), AuditError> {
    let unavailable = |e: DbError| AuditError::unavailable(&e);
    conn.lock_chain().map_err(unavailable)?;
    let found = match conn.backend() {
        Backend::Sqlite => conn
            .query_one("PRAGMA user_version", &[])
            .and_then(|r| r.int(0))
            .map_err(unavailable)?,
        Backend::Postgres => {
            conn.batch(
                "CREATE TABLE IF NOT EXISTS jitssh_schema (component TEXT PRIMARY KEY, version BIGINT NOT NULL)",
            )
            .map_err(unavailable)?;
            conn.query_opt(
                "SELECT version FROM jitssh_schema WHERE component = 'audit'",
                &[],
            )
            .and_then(|r| r.map(|r| r.int(0)).transpose())
            .map_err(unavailable)?
            .unwrap_or(0)
        }
    };
    if found > SCHEMA_VERSION {
        return Err(AuditError::Schema {
            db: db.describe(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found < 2 {
        rekey_used_tokens(conn).map_err(unavailable)?;
    }
    match conn.backend() {
        Backend::Sqlite => {
            conn.batch(SQLITE).map_err(unavailable)?;
            conn.batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
                .map_err(unavailable)?;
        }
        Backend::Postgres => {
            conn.batch(POSTGRES).map_err(unavailable)?;
            conn.execute(
                "INSERT INTO jitssh_schema (component, version) VALUES ('audit', $1)
                 ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                &[SCHEMA_VERSION.into()],
            )
            .map_err(unavailable)?;
        }
    }
    Ok(())
}

/// Schema 1 → 2: `used_tokens` keyed by `(expires_at, token_hash)` instead
/// of `token_hash` alone, and its `expires_at` index gone (the key's prefix
/// serves the prune). Token hashes are random, so a key on the hash alone
/// put every spent token of a batch on its own B-tree page, and every page
/// is a WAL frame written and checksummed at COMMIT; keyed by expiry first,
/// a batch's tokens land on one or two pages (docs/performance.md,
/// session 11).
///
/// Still one row per token: a hash is taken over the token's signed bytes
/// (`oidc::token_hash`, host challenges over the MAC'd challenge), which
/// carry its expiry, so one hash always comes with one `expires_at`, and the
/// pair is unique exactly when the hash is.
///
/// An older replica still running on PostgreSQL then fails its INSERTs
/// (`ON CONFLICT (token_hash)` names no key any more): it refuses
/// certificates rather than issuing without the check.
fn rekey_used_tokens(conn: &mut dyn Conn) -> Result<(), DbError> {
    let exists = match conn.backend() {
        Backend::Sqlite => conn.query_opt(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'used_tokens'",
            &[],
        )?,
        Backend::Postgres => conn.query_opt(
            "SELECT 1 FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_name = 'used_tokens'",
            &[],
        )?,
    };
    if exists.is_none() {
        return Ok(());
    }
    let integer = match conn.backend() {
        Backend::Sqlite => "INTEGER",
        Backend::Postgres => "BIGINT",
    };
    let without_rowid = match conn.backend() {
        Backend::Sqlite => " WITHOUT ROWID",
        Backend::Postgres => "",
    };
    conn.batch(&format!(
        "CREATE TABLE used_tokens_v2 (
             token_hash TEXT NOT NULL,
             expires_at {integer} NOT NULL,
             PRIMARY KEY (expires_at, token_hash)
         ){without_rowid};
         INSERT INTO used_tokens_v2 (token_hash, expires_at)
             SELECT token_hash, expires_at FROM used_tokens;
         DROP TABLE used_tokens;
         ALTER TABLE used_tokens_v2 RENAME TO used_tokens;"
    ))
}
