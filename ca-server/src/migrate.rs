//! `jitssh-ca db migrate`: move a single-process CA's state from its SQLite
//! file into an empty PostgreSQL database, for replicas.
//!
//! Everything the server stores is copied as it is — the audit chain (same
//! seqs, hashes and events, so it verifies unchanged), spent tokens (a token
//! used before the move is still refused after it), serial blocks (new
//! serials stay above every issued one), elevations and votes, join tokens,
//! revocations (same ids), login-name bindings and the shared secrets. The
//! source is read in one snapshot and the target written in one transaction:
//! a failed migration leaves the target empty. The target must hold no data,
//! so a migration never merges two histories; the source chain must verify
//! first, and the target's after.

use std::path::PathBuf;

use crate::audit::{AuditError, AuditStore};
use crate::db::{Backend, Conn, Db, DbError, Param, TxMode, Value};

/// The tables, in copy order, with the columns that order their rows.
const TABLES: &[(&str, &str)] = &[
    ("audit", "seq"),
    ("audit_principals", "seq, principal"),
    ("used_tokens", "token_hash"),
    ("heartbeat", "id"),
    ("serial_blocks", "id"),
    ("server_secrets", "name"),
    ("revocations", "id"),
    ("elevations", "id"),
    ("elevation_votes", "elevation_id, issuer, subject"),
    ("host_join_tokens", "token_hash"),
    ("login_names", "login"),
    ("login_name_holders", "login, issuer, subject"),
    ("login_names_version", "id"),
    ("console_sessions", "id_hash"),
];

/// Why a migration did not happen (the target is unchanged).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "the source must be an SQLite file (--from PATH), and {0} is not one; the target is the config's [database]"
    )]
    SourceNotSqlite(String),
    #[error("{0} does not exist; pass the audit database the CA used (its [database] path)")]
    NoSource(PathBuf),
    #[error("the config's [database] is {0}: set `url` to the PostgreSQL database to migrate into")]
    TargetNotPostgres(String),
    #[error(
        "{target} already holds data ({rows} rows in {table}); migrate only into an empty database"
    )]
    TargetNotEmpty {
        target: String,
        table: &'static str,
        rows: u64,
    },
    #[error(
        "the source audit chain does not verify ({0}); run `jitssh-ca audit --db SOURCE verify` and investigate before migrating"
    )]
    SourceChain(String),
    #[error(
        "after copying, the audit chain does not verify on the target ({0}); the target kept the copy, inspect it or recreate the database and retry"
    )]
    TargetChain(String),
    #[error("{table}: copied {copied} rows, the source has {expected}; nothing was committed")]
    Count {
        table: &'static str,
        copied: u64,
        expected: u64,
    },
    #[error(
        "the source has a table this version does not know ({0}); migrate with the jitssh-ca version that wrote it"
    )]
    UnknownTable(String),
    #[error("creating the tables: {0}")]
    Schema(String),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("{0}")]
    Db(#[from] DbError),
}

/// What was copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrateReport {
    /// Rows per table, in copy order.
    pub tables: Vec<(&'static str, u64)>,
    /// Audit rows verified on the target, and the hash of the last one.
    pub chain_rows: u64,
    pub last_hash: String,
}

/// Create every table the server uses (as `serve` would at start).
fn create_tables(db: &Db) -> Result<(), MigrateError> {
    let schema = |e: &dyn std::fmt::Display| MigrateError::Schema(e.to_string());
    // The audit store migrates its schema on open; its writer is not used.
    drop(AuditStore::open(db.clone())?);
    crate::revocation::RevocationStore::open(db.clone()).map_err(|e| schema(&e))?;
    crate::hosts::JoinTokenStore::open(db.clone()).map_err(|e| schema(&e))?;
    crate::elevation::create_tables(db).map_err(|e| schema(&e))?;
    crate::logins::create_tables(db).map_err(|e| schema(&e))?;
    crate::console::session::SessionStore::open(db.clone()).map_err(|e| schema(&e))?;
    Ok(())
}

/// What breaks the chain or its index, if anything.
fn chain_problem(report: &crate::audit::VerifyReport) -> Option<String> {
    match (&report.error, &report.index_error) {
        (Some(e), _) => Some(e.to_string()),
        (None, Some(e)) => Some(e.to_string()),
        (None, None) => None,
    }
}

fn count(c: &mut dyn Conn, table: &str) -> Result<u64, DbError> {
    c.query_one(&format!("SELECT count(*) FROM {table}"), &[])?
        .u64(0)
}

/// Rows per INSERT statement: PostgreSQL takes at most 65,535 parameters,
/// and the widest table has 19 columns.
pub const ROWS_PER_INSERT: usize = 500;

/// Copy `source` (an SQLite file) into `target` (an empty PostgreSQL
/// database).
pub fn migrate(source: &Db, target: &Db) -> Result<MigrateReport, MigrateError> {
    migrate_with(source, target, ROWS_PER_INSERT)
}

/// [`migrate`] with another batch size (tests use small ones, so that full
/// and partial batches both occur).
pub fn migrate_with(
    source: &Db,
    target: &Db,
    rows_per_insert: usize,
) -> Result<MigrateReport, MigrateError> {
    let Some(path) = source.sqlite_path() else {
        return Err(MigrateError::SourceNotSqlite(source.describe()));
    };
    if !path.exists() {
        return Err(MigrateError::NoSource(path.to_owned()));
    }
    if target.backend() != Backend::Postgres {
        return Err(MigrateError::TargetNotPostgres(target.describe()));
    }
    // A source from an older version gets the tables it lacks, as at start.
    create_tables(source)?;
    let report = AuditStore::open_read_only(source.clone())?.verify()?;
    if let Some(why) = chain_problem(&report) {
        return Err(MigrateError::SourceChain(why));
    }
    create_tables(target)?;

    // The PostgreSQL client must not run on an async runtime's thread.
    let tables = crate::db::off_runtime(|| copy(source, target, rows_per_insert.max(1)))
        .unwrap_or_else(|| {
            Err(MigrateError::Db(DbError::unavailable(
                "internal error: the migration thread panicked",
            )))
        })?;

    let check = AuditStore::open_read_only(target.clone())?.verify()?;
    if let Some(why) = chain_problem(&check) {
        return Err(MigrateError::TargetChain(why));
    }
    Ok(MigrateReport {
        tables,
        chain_rows: check.rows,
        last_hash: check.last_hash,
    })
}

/// The source in one snapshot, the target in one transaction (rolled back
/// on any error: a failed migration leaves the target empty).
fn copy(
    source: &Db,
    target: &Db,
    rows_per_insert: usize,
) -> Result<Vec<(&'static str, u64)>, MigrateError> {
    let mut src = source.connect()?;
    let mut dst = target.connect()?;
    src.begin(TxMode::Snapshot)?;
    dst.begin(TxMode::Write)?;
    let result = dst.lock_chain().map_err(MigrateError::from).and_then(|()| {
        copy_all(
            src.as_mut(),
            dst.as_mut(),
            &target.describe(),
            rows_per_insert,
        )
    });
    let _ = src.rollback();
    match result {
        Ok(tables) => {
            dst.commit()?;
            Ok(tables)
        }
        Err(e) => {
            let _ = dst.rollback();
            Err(e)
        }
    }
}

fn copy_all(
    src: &mut dyn Conn,
    dst: &mut dyn Conn,
    shown: &str,
    rows_per_insert: usize,
) -> Result<Vec<(&'static str, u64)>, MigrateError> {
    // Everything is copied or nothing: a table this list does not name
    // (written by a newer version) would otherwise be left behind.
    for row in src.query(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        &[],
    )? {
        let name = row.text(0)?;
        if !TABLES.iter().any(|(t, _)| *t == name) {
            return Err(MigrateError::UnknownTable(name));
        }
    }
    for (table, _) in TABLES {
        let rows = count(dst, table)?;
        if rows > 0 {
            return Err(MigrateError::TargetNotEmpty {
                target: shown.to_owned(),
                table,
                rows,
            });
        }
    }
    let mut out = Vec::new();
    for (table, order) in TABLES {
        let columns: Vec<String> = src
            .query(
                &format!("SELECT name FROM pragma_table_info('{table}')"),
                &[],
            )?
            .iter()
            .map(|r| r.text(0))
            .collect::<Result<_, _>>()?;
        let list = columns.join(", ");
        // `revocations.id` is an identity column on PostgreSQL: keep the
        // ids, then move the sequence past them.
        let overriding = if *table == "revocations" {
            " OVERRIDING SYSTEM VALUE"
        } else {
            ""
        };
        let insert = |rows: usize| {
            format!(
                "INSERT INTO {table} ({list}){overriding} VALUES {}",
                crate::db::placeholders(rows, columns.len())
            )
        };
        // Many rows per statement: one round trip per batch, not per row.
        let full = insert(rows_per_insert);
        let mut pending: Vec<Value> = Vec::with_capacity(rows_per_insert * columns.len());
        let flush = |dst: &mut dyn Conn, pending: &mut Vec<Value>| -> Result<u64, DbError> {
            let rows = pending.len() / columns.len().max(1);
            if rows == 0 {
                return Ok(0);
            }
            let params: Vec<Param<'_>> = pending.iter().map(Param::from).collect();
            let n = if rows == rows_per_insert {
                dst.execute(&full, &params)?
            } else {
                dst.execute(&insert(rows), &params)?
            };
            pending.clear();
            Ok(n)
        };
        let mut copied = 0u64;
        src.query_each(
            &format!("SELECT {list} FROM {table} ORDER BY {order}"),
            &[],
            &mut |row| {
                pending.extend(row.0);
                if pending.len() >= rows_per_insert * columns.len() {
                    copied += flush(&mut *dst, &mut pending)?;
                }
                Ok(())
            },
        )?;
        copied += flush(dst, &mut pending)?;
        let expected = count(src, table)?;
        if copied != expected || count(dst, table)? != expected {
            return Err(MigrateError::Count {
                table,
                copied,
                expected,
            });
        }
        if *table == "revocations" {
            dst.query(
                "SELECT setval(pg_get_serial_sequence('revocations', 'id'), \
                 COALESCE((SELECT max(id) FROM revocations), 0) + 1, false)",
                &[],
            )?;
        }
        out.push((*table, copied));
    }
    Ok(out)
}
