//! [`Conn`] over an SQLite file: WAL, `synchronous=FULL`, a busy timeout,
//! the file created private (0600) when missing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags, ToSql};

use super::conn::{
    Backend, Conn, DbError, DbErrorKind, Param, Row, TxMode, Value, to_sqlite_params,
};

pub(super) struct SqliteConn {
    conn: Connection,
    path: PathBuf,
}

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Param::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Param::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Param::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

impl SqliteConn {
    pub(super) fn open(path: &Path, busy_timeout: Duration) -> Result<Self, DbError> {
        create_private(path)?;
        let err = |e: rusqlite::Error| error(path, &e);
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        conn.busy_timeout(busy_timeout).map_err(err)?;
        // WAL lets readers read while the writer writes; FULL makes a
        // COMMIT survive power loss. Setting WAL needs a writable file: a
        // read-only one is still readable (operators inspecting a copy).
        if let Ok(mode) =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
            && !mode.eq_ignore_ascii_case("wal")
        {
            tracing::warn!(path = %path.display(), journal_mode = %mode,
                "database is not in WAL mode; readers will block the writer");
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        // Index inserts land on random pages; keep them cached (32 MiB)
        // rather than re-reading them from the WAL for every batch.
        conn.pragma_update(None, "cache_size", -32_768)
            .map_err(err)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(SqliteConn {
            conn,
            path: path.to_owned(),
        })
    }

    fn err(&self, e: &rusqlite::Error) -> DbError {
        error(&self.path, e)
    }
}

impl Conn for SqliteConn {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, DbError> {
        let sql = to_sqlite_params(sql);
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.err(&e))?;
        let n = stmt
            .execute(rusqlite::params_from_iter(params.iter()))
            .map_err(|e| self.err(&e))?;
        Ok(n as u64)
    }

    fn query_each(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        f: &mut dyn FnMut(Row) -> Result<(), DbError>,
    ) -> Result<(), DbError> {
        let sql = to_sqlite_params(sql);
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.err(&e))?;
        let columns = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(|e| error(&self.path, &e))?;
        while let Some(r) = rows.next().map_err(|e| error(&self.path, &e))? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                let v = r.get_ref(i).map_err(|e| error(&self.path, &e))?;
                values.push(match v {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(i) => Value::Int(i),
                    ValueRef::Real(f) => Value::Text(f.to_string()),
                    ValueRef::Text(t) | ValueRef::Blob(t) => {
                        Value::Text(String::from_utf8_lossy(t).into_owned())
                    }
                });
            }
            f(Row(values))?;
        }
        Ok(())
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.conn.execute_batch(sql).map_err(|e| self.err(&e))
    }

    fn begin(&mut self, mode: TxMode) -> Result<(), DbError> {
        self.batch(match mode {
            TxMode::Write => "BEGIN IMMEDIATE",
            TxMode::Snapshot => "BEGIN",
        })
    }

    fn commit(&mut self) -> Result<(), DbError> {
        self.batch("COMMIT")
    }

    fn rollback(&mut self) -> Result<(), DbError> {
        if self.conn.is_autocommit() {
            // Nothing open (an I/O error during COMMIT already rolled back).
            return Ok(());
        }
        self.batch("ROLLBACK")
    }

    fn in_transaction(&self) -> bool {
        !self.conn.is_autocommit()
    }

    fn lock_chain(&mut self) -> Result<(), DbError> {
        Ok(())
    }

    fn reset(&mut self) {
        self.conn.flush_prepared_statement_cache();
    }

    fn is_healthy(&self) -> bool {
        true
    }
}

/// An SQLite error with what to do about it.
pub(super) fn error(path: &Path, e: &rusqlite::Error) -> DbError {
    let kind = match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) => DbErrorKind::Conflict,
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::CannotOpen
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::DatabaseCorrupt
            | ErrorCode::NotADatabase,
        ) => DbErrorKind::Unavailable,
        _ => match e {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => DbErrorKind::Decode,
            _ => DbErrorKind::Other,
        },
    };
    DbError::new(kind, format!("{}: {e}{}", path.display(), hint(e)))
}

/// What to do about an SQLite error, as a suffix for messages.
fn hint(e: &rusqlite::Error) -> &'static str {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            "; another connection holds a lock on it (a second jitssh-ca, a sqlite3 shell, a backup job): end it"
        }
        Some(ErrorCode::ReadOnly) => {
            "; it is read-only: the server needs write access to the file, its -wal and -shm files and their directory"
        }
        Some(ErrorCode::PermissionDenied | ErrorCode::CannotOpen) => {
            "; check the path, that its directory exists, and that this user may access the file, its -wal and -shm files and the directory"
        }
        Some(ErrorCode::DiskFull) => {
            "; the disk is full: free space on the filesystem that holds it"
        }
        Some(ErrorCode::SystemIoFailure) => {
            "; I/O error: check the disk, whether the filesystem or file became read-only or immutable, and the kernel log"
        }
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            "; it is not an intact SQLite database: check the path, or restore it from backup"
        }
        _ => "",
    }
}

/// Create `path` with mode 0600 if it does not exist, so the database (and
/// the -wal/-shm files SQLite gives the same mode) is private from the start.
fn create_private(path: &Path) -> Result<(), DbError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "database is readable by other users; chmod 600 it");
        }
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        // Read-only filesystem or directory with the file present: the open
        // below decides.
        Err(_) if path.exists() => Ok(()),
        Err(e) => Err(DbError::unavailable(format!(
            "cannot create {}: {e}; check that the directory exists and this user may write to it",
            path.display()
        ))),
    }
}
