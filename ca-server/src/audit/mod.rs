//! The audit store: an append-only, hash-chained SQLite log of every issuance
//! and denial, written by one group-committing writer thread.
//!
//! Invariants:
//! - `append` returns `Ok(seq)` only after the transaction holding that row
//!   has committed (WAL, `synchronous=FULL`). Callers release a certificate
//!   only after that, so no certificate leaves without its audit row.
//! - Only the writer thread writes rows. It reads the chain head inside each
//!   write transaction, so a failed batch leaves nothing stale behind and a
//!   second process appending to the same file still extends one chain.
//! - A write failure fails every append of that batch with
//!   [`AuditError::Unavailable`]; the writer keeps running and succeeds again
//!   once the fault clears.
//! - Reads (`list`, `show`, `verify`, `export`, `used_tokens`) open their own
//!   read-only connections, so the CLI can inspect a database being served.

mod format;
mod read;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ca_core::audit::AuditEvent;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::{mpsc, oneshot};

pub use format::{format_event_detail, format_event_line, format_time};
pub use read::{IndexMismatch, VerifyReport};
pub use writer::WriterStats;

/// The hash of an ID token that was used for a certificate, kept until the
/// token expires so it cannot be replayed, even across restarts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsedToken {
    pub token_hash: String,
    /// Unix seconds.
    pub expires_at: u64,
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

struct TxJobImpl<T, F> {
    op: Option<F>,
    value: Option<T>,
    reply: oneshot::Sender<Result<T, AuditError>>,
}

impl<T, F> writer::TxJob for TxJobImpl<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> rusqlite::Result<TxOutcome<T>> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> rusqlite::Result<(Vec<writer::NewRow>, bool)> {
        let op = self
            .op
            .take()
            .ok_or_else(|| rusqlite::Error::InvalidQuery)?;
        let out = op(conn)?;
        let rows = out
            .events
            .into_iter()
            .map(|e| writer::NewRow::new(e, None))
            .collect::<Result<Vec<_>, AuditError>>()
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        self.value = Some(out.value);
        Ok((rows, out.keep))
    }

    fn reply(self: Box<Self>, result: Result<(), AuditError>) {
        let this = *self;
        let answer = result.and_then(|()| {
            this.value.ok_or_else(|| {
                AuditError::Unavailable("internal error: transaction did not run".into())
            })
        });
        let _ = this.reply.send(answer);
    }
}

/// One audit row as read back.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub hash: String,
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
    /// Keep only the newest `limit` matching rows (still returned oldest first).
    pub limit: Option<usize>,
}

/// Tuning for [`AuditStore::open_with`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// How long a write (or read) waits for another connection's lock before
    /// failing with [`AuditError::Unavailable`].
    pub busy_timeout: Duration,
    /// The most rows committed in one transaction.
    pub max_batch: usize,
    /// Appends queued for the writer before `append` waits for room.
    pub queue: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            busy_timeout: Duration::from_secs(5),
            max_batch: 256,
            queue: 4096,
        }
    }
}

/// Errors of the audit store. Only [`AuditError::Unavailable`] means "cannot
/// write now, try later" (HTTP 503); the others need an operator.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The log cannot be opened or written right now; nothing was recorded.
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
    #[error("cannot read the audit log {}: {source}{hint}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
        hint: &'static str,
    },
    #[error(
        "audit log {}, row {seq}: {problem}; run `jitssh-ca audit verify` and restore from backup if it fails",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        seq: u64,
        problem: String,
    },
    #[error(
        "audit log {} has schema version {found}; this jitssh-ca understands up to {supported}: upgrade jitssh-ca",
        path.display()
    )]
    Schema {
        path: PathBuf,
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

    pub(crate) fn unavailable(path: &Path, e: &rusqlite::Error) -> Self {
        AuditError::Unavailable(format!("cannot write {}: {e}{}", path.display(), hint(e)))
    }

    pub(crate) fn read(path: &Path, source: rusqlite::Error) -> Self {
        let hint = hint(&source);
        AuditError::Read {
            path: path.to_owned(),
            source,
            hint,
        }
    }
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

/// Handle to the audit log. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct AuditStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// `None` for a read-only store.
    jobs: Option<mpsc::Sender<writer::Job>>,
    counters: Arc<writer::Counters>,
    busy_timeout: Duration,
}

impl std::fmt::Debug for AuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditStore")
            .field("path", &self.inner.path)
            .field("writable", &self.inner.jobs.is_some())
            .finish()
    }
}

impl AuditStore {
    /// Open (creating with mode 0600 if missing) the log at `path` and start
    /// its writer thread.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        Self::open_with(path, StoreOptions::default())
    }

    /// [`AuditStore::open`] with explicit tuning.
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<Self, AuditError> {
        create_private(path)?;
        let unavailable = |e: rusqlite::Error| AuditError::unavailable(path, &e);
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(unavailable)?;
        let mode = schema::configure_writer(&conn, options.busy_timeout).map_err(unavailable)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), journal_mode = %mode,
                "audit log is not in WAL mode; readers will block the writer");
        }
        schema::migrate(&mut conn, path)?;
        let (seq, _) = writer::head(&conn).map_err(unavailable)?;
        tracing::info!(path = %path.display(), last_seq = seq, "audit log open");

        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let counters = Arc::new(writer::Counters::default());
        writer::spawn(
            conn,
            path.to_owned(),
            rx,
            counters.clone(),
            options.max_batch.max(1),
        )
        .map_err(|e| {
            AuditError::Unavailable(format!("cannot start the audit writer thread: {e}"))
        })?;
        Ok(AuditStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                jobs: Some(tx),
                counters,
                busy_timeout: options.busy_timeout,
            }),
        })
    }

    /// Open an existing log for reading only (`audit list/show/verify`):
    /// no writer, nothing created; appends return `Unavailable`.
    pub fn open_read_only(path: &Path) -> Result<Self, AuditError> {
        let store = AuditStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                jobs: None,
                counters: Arc::default(),
                busy_timeout: StoreOptions::default().busy_timeout,
            }),
        };
        // Fail now, with the path, if it cannot be read.
        store.reader()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Append `event` (and record `used_token`) in the next group commit.
    /// Returns the row's `seq` once it is durably committed.
    ///
    /// If the future is dropped after the event was queued, the row may still
    /// be committed: that is safe (an audit row without a certificate).
    pub async fn append(
        &self,
        event: AuditEvent,
        used_token: Option<UsedToken>,
    ) -> Result<u64, AuditError> {
        let row = Box::new(writer::NewRow::new(event, used_token)?);
        let (reply, rx) = oneshot::channel();
        self.send(writer::Job::Append { row, reply }).await?;
        rx.await.map_err(|_| self.stopped())?
    }

    /// Run a state change (`op`, on the writer's connection, inside the next
    /// group commit) atomically with the audit rows it returns. Replies only
    /// after COMMIT. With `keep: false` the state change is rolled back but
    /// its rows are still appended (a refused transition is audited).
    ///
    /// Changes run one at a time on the single writer, so a conditional
    /// `UPDATE` inside `op` settles races between concurrent callers.
    pub async fn transact<T, F>(&self, op: F) -> Result<T, AuditError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<TxOutcome<T>> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = TxJobImpl {
            op: Some(op),
            value: None,
            reply,
        };
        self.send(writer::Job::Transact(Box::new(job))).await?;
        rx.await.map_err(|_| self.stopped())?
    }

    /// For `/readyz`: a real write transaction through the writer (it updates
    /// a heartbeat row and commits), so locks, read-only files and full disks
    /// all show up.
    pub async fn check_writable(&self) -> Result<(), AuditError> {
        let (reply, rx) = oneshot::channel();
        self.send(writer::Job::Ping { reply }).await?;
        rx.await.map_err(|_| self.stopped())?
    }

    /// Counters showing how well group commit is batching.
    pub fn stats(&self) -> WriterStats {
        self.inner.counters.snapshot()
    }

    async fn send(&self, job: writer::Job) -> Result<(), AuditError> {
        let jobs = self.inner.jobs.as_ref().ok_or_else(|| {
            AuditError::Unavailable(format!(
                "{} was opened read-only",
                self.inner.path.display()
            ))
        })?;
        jobs.send(job).await.map_err(|_| self.stopped())
    }

    fn stopped(&self) -> AuditError {
        AuditError::Unavailable(format!(
            "the audit writer for {} has stopped; restart jitssh-ca (its log says why)",
            self.inner.path.display()
        ))
    }

    /// A fresh read-only connection; WAL lets it read while the writer writes.
    fn reader(&self) -> Result<Connection, AuditError> {
        let path = &self.inner.path;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| AuditError::read(path, e))?;
        conn.busy_timeout(self.inner.busy_timeout)
            .map_err(|e| AuditError::read(path, e))?;
        Ok(conn)
    }
}

/// Create `path` with mode 0600 if it does not exist, so the audit log (and
/// the -wal/-shm files SQLite gives the same mode) is private from the start.
fn create_private(path: &Path) -> Result<(), AuditError> {
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
                "audit log is readable by other users; chmod 600 it");
        }
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(AuditError::Unavailable(format!(
            "cannot create {}: {e}; check that the directory exists and this user may write to it",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn event(n: u64) -> AuditEvent {
        AuditEvent {
            time: 1_700_000_000 + n,
            action: "user_cert".into(),
            outcome: "issued".into(),
            subject: Some(format!("sub{n}")),
            ..AuditEvent::default()
        }
    }

    #[test]
    fn store_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<AuditStore>();
    }

    #[tokio::test]
    async fn stopped_writer_means_unavailable_not_hang() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("a.db")).unwrap();
        assert_eq!(store.append(event(1), None).await.unwrap(), 1);
        store.send(writer::Job::Stop).await.unwrap();
        let err = store.append(event(2), None).await.unwrap_err();
        assert!(err.is_unavailable(), "{err}");
        assert!(err.to_string().contains("stopped"), "{err}");
        let err = store.check_writable().await.unwrap_err();
        assert!(err.is_unavailable(), "{err}");
        // What was committed is intact.
        let report = store.verify().unwrap();
        assert_eq!((report.rows, report.error), (1, None));
    }

    #[tokio::test]
    async fn invalid_event_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("a.db")).unwrap();
        let mut bad = event(1);
        bad.time = u64::MAX;
        let err = store.append(bad, None).await.unwrap_err();
        assert!(matches!(err, AuditError::Invalid(_)), "{err}");
        assert_eq!(store.append(event(2), None).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn read_only_store_reads_and_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let err = AuditStore::open_read_only(&path).unwrap_err();
        assert!(err.to_string().contains("a.db"), "{err}");
        assert!(!path.exists(), "read-only open must not create the file");

        let store = AuditStore::open(&path).unwrap();
        store.append(event(1), None).await.unwrap();
        let ro = AuditStore::open_read_only(&path).unwrap();
        assert_eq!(ro.list(&Filter::default()).unwrap().len(), 1);
        assert!(
            ro.append(event(2), None)
                .await
                .unwrap_err()
                .is_unavailable()
        );
    }

    #[test]
    fn messages_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("a.db");
        let err = AuditStore::open(&path).unwrap_err();
        assert!(err.is_unavailable());
        let msg = err.to_string();
        assert!(
            msg.contains("missing-dir/a.db") && msg.contains("directory exists"),
            "{msg}"
        );

        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, vec![b'x'; 8192]).unwrap();
        let msg = AuditStore::open(&junk).unwrap_err().to_string();
        assert!(
            msg.contains("junk.db") && msg.contains("not an intact SQLite"),
            "{msg}"
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = AuditStore::open(&path).unwrap_err();
        assert!(matches!(err, AuditError::Schema { found: 99, .. }), "{err}");
        assert!(err.to_string().contains("upgrade"), "{err}");
    }
}
