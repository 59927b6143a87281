//! The audit database's schema and migration, per backend.

use crate::db::{Backend, Conn, Db, DbError, TxMode};

use super::types::AuditError;

/// Schema version (SQLite: `PRAGMA user_version`; PostgreSQL: the `audit`
/// row of `jitssh_schema`).
pub(super) const SCHEMA_VERSION: i64 = 1;

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
    token_hash TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS used_tokens_expires_at ON used_tokens(expires_at);
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
    token_hash TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS used_tokens_expires_at ON used_tokens(expires_at);
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
