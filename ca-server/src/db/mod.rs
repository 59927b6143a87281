//! Storage backends: one SQL dialect and one small connection trait over
//! SQLite (the embedded default, one process) and PostgreSQL (several
//! replicas sharing one database).
//!
//! Every store (audit chain, used tokens, elevations, join tokens,
//! revocations, serial blocks) writes its SQL once against [`Conn`]:
//! parameters are `$1, $2, …` (rewritten to `?1, ?2, …` for SQLite), values
//! are `BIGINT`/`INTEGER` and `TEXT`, conflicts use `ON CONFLICT`. Only the
//! schema (DDL) is written per backend.
//!
//! Invariants:
//! - A PostgreSQL client is never driven from an async task: [`Db::with`]
//!   moves the work to a scoped thread when called on a runtime thread (the
//!   sync `postgres` client runs its own runtime and would panic there).
//! - The audit writer owns a dedicated connection ([`Db::connect`]); other
//!   work borrows one of at most [`POOL_SIZE`] pooled connections, returned
//!   only when healthy and outside any transaction.

mod conn;
mod pg;
mod pg_tls;
mod sqlite;

pub(crate) use conn::placeholders;
pub use conn::{Backend, Conn, DbError, DbErrorKind, LOCK_TIMEOUT, Param, Row, TxMode, Value};
pub use pg_tls::{PgTls, TlsMode, with_tls_params};

/// `params![a, b, …]`: a `[Param; N]` from values convertible to [`Param`].
#[macro_export]
macro_rules! params {
    () => { [] as [$crate::db::Param<'static>; 0] };
    ($($v:expr),+ $(,)?) => { [$($crate::db::Param::from($v)),+] };
}

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Pooled connections per process, beside the audit writer's own. A caller
/// finding all of them busy waits for one (up to [`LOCK_TIMEOUT`]) rather
/// than opening more: a PostgreSQL connection is a server process, and a
/// burst must not turn into a fork per request.
pub const POOL_SIZE: usize = 8;

/// Where the data lives, as configured.
#[derive(Clone)]
pub enum Target {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres {
        config: Box<::postgres::Config>,
        /// The URL without its password, for messages.
        shown: String,
        tls: pg_tls::PgTls,
    },
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Sqlite(p) => write!(f, "Sqlite({})", p.display()),
            Target::Postgres { shown, tls, .. } => {
                write!(f, "Postgres({shown}, tls {})", tls.mode())
            }
        }
    }
}

impl Target {
    /// Parse a `postgres://` or `postgresql://` URL (or key=value string);
    /// the password, if any, comes from `password` (read from a file by the
    /// caller) rather than the URL.
    ///
    /// TLS follows libpq's `sslmode` (`verify-full`, `require` or `disable`;
    /// never `prefer`) and `sslrootcert` (an absolute path to the PEM CA
    /// file) in the string, which is where `[database] tls` and `ca_file`
    /// put them ([`with_tls_params`]). Without `sslmode`: `verify-full` with
    /// an `sslrootcert`, else `disable` when every host is a loopback
    /// address, `localhost` or a Unix socket, else `verify-full` (which
    /// then fails for want of a CA file). The CA file is read here.
    pub fn postgres(url: &str, password: Option<&str>) -> Result<Target, DbError> {
        let (url, tls) = pg_tls::take_tls_params(url)?;
        let mut config: ::postgres::Config = url.parse().map_err(|e| {
            DbError::new(
                DbErrorKind::Other,
                format!(
                    "[database] url is not a PostgreSQL connection string ({e}); \
                     write it as postgresql://USER@HOST:PORT/DATABASE"
                ),
            )
        })?;
        if let Some(p) = password {
            config.password(p);
        }
        pg::tune(&mut config);
        let tls = pg_tls::PgTls::new(&config, tls)?;
        config.ssl_mode(tls.ssl_mode());
        Ok(Target::Postgres {
            shown: pg::shown(&config),
            config: Box::new(config),
            tls,
        })
    }

    /// How connections are protected (`None` for SQLite).
    pub fn tls_mode(&self) -> Option<TlsMode> {
        match self {
            Target::Sqlite(_) => None,
            Target::Postgres { tls, .. } => Some(tls.mode()),
        }
    }
}

/// Handle to the database: cheap to clone, shared by every store of a
/// process.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    pool: Mutex<Pool>,
    /// Signalled when a connection is returned or given up.
    returned: std::sync::Condvar,
    /// SQLite's busy timeout ([`LOCK_TIMEOUT`] unless a test shortens it).
    lock_timeout: Duration,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.target.fmt(f)
    }
}

impl From<&Path> for Db {
    fn from(path: &Path) -> Db {
        Db::new(Target::Sqlite(path.to_owned()))
    }
}

impl From<&PathBuf> for Db {
    fn from(path: &PathBuf) -> Db {
        Db::from(path.as_path())
    }
}

impl From<&Db> for Db {
    fn from(db: &Db) -> Db {
        db.clone()
    }
}

impl Db {
    /// A handle; connections are opened on first use.
    pub fn new(target: Target) -> Db {
        Db {
            inner: Arc::new(Inner {
                target,
                pool: Mutex::default(),
                returned: std::sync::Condvar::new(),
                lock_timeout: LOCK_TIMEOUT,
            }),
        }
    }

    /// The same database with another SQLite busy timeout (tests of lock
    /// handling wait less).
    pub fn with_lock_timeout(self, timeout: Duration) -> Db {
        Db {
            inner: Arc::new(Inner {
                target: self.inner.target.clone(),
                pool: Mutex::default(),
                returned: std::sync::Condvar::new(),
                lock_timeout: timeout,
            }),
        }
    }

    pub fn backend(&self) -> Backend {
        match self.inner.target {
            Target::Sqlite(_) => Backend::Sqlite,
            Target::Postgres { .. } => Backend::Postgres,
        }
    }

    /// Where the data lives.
    pub fn target(&self) -> &Target {
        &self.inner.target
    }

    /// The SQLite file, if that is the backend.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.inner.target {
            Target::Sqlite(p) => Some(p),
            Target::Postgres { .. } => None,
        }
    }

    /// The file path or the URL without password, for messages.
    pub fn describe(&self) -> String {
        match &self.inner.target {
            Target::Sqlite(p) => p.display().to_string(),
            Target::Postgres { shown, .. } => shown.clone(),
        }
    }

    /// A new connection of its own (the audit writer's).
    pub fn connect(&self) -> Result<Box<dyn Conn>, DbError> {
        match &self.inner.target {
            Target::Sqlite(path) => Ok(Box::new(sqlite::SqliteConn::open(
                path,
                self.inner.lock_timeout,
            )?)),
            Target::Postgres { config, shown, tls } => {
                off_runtime(|| pg::PgConn::connect(config, tls, shown))
                    .unwrap_or_else(|| Err(DbError::unavailable("a database thread panicked")))
                    .map(|c| Box::new(c) as Box<dyn Conn>)
            }
        }
    }

    /// Run `f` on a pooled connection (outside any transaction).
    pub fn with<T: Send>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, DbError> + Send,
    ) -> Result<T, DbError> {
        match self.backend() {
            // SQLite is a library call on this thread.
            Backend::Sqlite => self.with_here(f),
            Backend::Postgres => off_runtime(|| self.with_here(f))
                .unwrap_or_else(|| Err(DbError::unavailable("a database thread panicked"))),
        }
    }

    /// Run `f` in one write transaction: committed if `f` succeeds, rolled
    /// back if it fails.
    pub fn transaction<T: Send>(
        &self,
        mode: TxMode,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, DbError> + Send,
    ) -> Result<T, DbError> {
        self.with(|conn| {
            conn.begin(mode)?;
            match f(conn) {
                Ok(v) => {
                    conn.commit()?;
                    Ok(v)
                }
                Err(e) => {
                    let _ = conn.rollback();
                    Err(e)
                }
            }
        })
    }

    fn with_here<T>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let mut conn = self.checkout()?;
        let result = f(conn.as_mut());
        if conn.in_transaction() {
            // A caller left a transaction open (an error path): never hand
            // it to the next user.
            let _ = conn.rollback();
        }
        let mut pool = self.inner.pool.lock().unwrap_or_else(|p| p.into_inner());
        if conn.is_healthy() && !conn.in_transaction() {
            pool.idle.push(conn);
        } else {
            pool.open -= 1;
            drop(pool);
            drop(conn);
        }
        self.inner.returned.notify_one();
        result
    }

    /// An idle connection, a new one while fewer than [`POOL_SIZE`] are
    /// open, or the first one returned within the lock timeout.
    fn checkout(&self) -> Result<Box<dyn Conn>, DbError> {
        let deadline = std::time::Instant::now() + self.inner.lock_timeout;
        let mut pool = self.inner.pool.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(conn) = pool.idle.pop() {
                return Ok(conn);
            }
            if pool.open < POOL_SIZE {
                pool.open += 1;
                drop(pool);
                return self.connect().inspect_err(|_| {
                    let mut pool = self.inner.pool.lock().unwrap_or_else(|p| p.into_inner());
                    pool.open -= 1;
                    self.inner.returned.notify_one();
                });
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(DbError::unavailable(format!(
                    "{}: all {POOL_SIZE} database connections stayed busy for {} s; the database is slow or overloaded",
                    self.describe(),
                    self.inner.lock_timeout.as_secs()
                )));
            }
            pool = self
                .inner
                .returned
                .wait_timeout(pool, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Connections not in use, and how many exist (idle or lent out).
#[derive(Default)]
struct Pool {
    idle: Vec<Box<dyn Conn>>,
    open: usize,
}

/// Run `f` where blocking is allowed: here, or on a scoped thread when this
/// thread drives async tasks (the sync PostgreSQL client starts its own
/// runtime, which tokio forbids inside another). `None` if `f` panicked.
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> Option<T> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Some(f());
    }
    std::thread::scope(|s| s.spawn(f).join().ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::conn::to_sqlite_params;
    use super::*;

    #[test]
    fn placeholders_are_rewritten_outside_quotes() {
        assert_eq!(
            to_sqlite_params("SELECT a FROM t WHERE b = $1 AND c = '$2' AND \"$3\" = $10"),
            "SELECT a FROM t WHERE b = ?1 AND c = '$2' AND \"$3\" = ?10"
        );
        assert_eq!(to_sqlite_params("SELECT '$'"), "SELECT '$'");
    }

    #[test]
    fn the_pool_is_bounded_and_waits_for_a_connection() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::from(&dir.path().join("t.db"));
        let peak = std::sync::atomic::AtomicUsize::new(0);
        let busy = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..(POOL_SIZE * 3) {
                s.spawn(|| {
                    db.with(|c| {
                        let now = busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        peak.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        c.query_one("SELECT 1", &[]).map(drop)
                    })
                    .unwrap();
                });
            }
        });
        let peak = peak.into_inner();
        assert!(peak <= POOL_SIZE && peak > 1, "peak {peak}");
        let pool = db.inner.pool.lock().unwrap();
        assert_eq!(pool.open, pool.idle.len());
        assert!(pool.open <= POOL_SIZE);
    }

    #[test]
    fn a_busy_pool_fails_after_the_lock_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::from(&dir.path().join("t.db")).with_lock_timeout(Duration::from_millis(50));
        let held = std::sync::Barrier::new(POOL_SIZE + 1);
        let release = std::sync::Barrier::new(POOL_SIZE + 1);
        std::thread::scope(|s| {
            for _ in 0..POOL_SIZE {
                s.spawn(|| {
                    db.with(|_| {
                        held.wait();
                        release.wait();
                        Ok(())
                    })
                    .unwrap();
                });
            }
            held.wait();
            let err = db.with(|_| Ok(())).unwrap_err();
            assert_eq!(err.kind, DbErrorKind::Unavailable);
            assert!(err.message.contains("busy"), "{err}");
            release.wait();
        });
        // Free again.
        db.with(|c| c.query_one("SELECT 1", &[]).map(drop)).unwrap();
    }

    #[test]
    fn sqlite_roundtrip_through_the_trait() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::from(&dir.path().join("t.db"));
        db.with(|c| c.batch("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)"))
            .unwrap();
        let n = db
            .transaction(TxMode::Write, |c| {
                c.execute("INSERT INTO t (a, b) VALUES ($1, $2)", &params![1i64, "x"])?;
                c.execute(
                    "INSERT INTO t (a, b) VALUES ($1, $2)",
                    &params![2i64, None::<&str>],
                )
            })
            .unwrap();
        assert_eq!(n, 1);
        let rows = db
            .with(|c| c.query("SELECT a, b FROM t ORDER BY a", &[]))
            .unwrap();
        assert_eq!(rows[0].0, [Value::Int(1), Value::Text("x".into())]);
        assert_eq!(rows[1].opt_text(1).unwrap(), None);
        // A duplicate key is a conflict, and the failed transaction left
        // nothing behind.
        let err = db
            .transaction(TxMode::Write, |c| {
                c.execute("INSERT INTO t (a, b) VALUES (3, 'y')", &[])?;
                c.execute("INSERT INTO t (a, b) VALUES (1, 'z')", &[])
            })
            .unwrap_err();
        assert!(err.is_conflict(), "{err:?}");
        let count = db
            .with(|c| c.query_one("SELECT count(*) FROM t", &[]))
            .unwrap();
        assert_eq!(count.int(0).unwrap(), 2);
    }
}
