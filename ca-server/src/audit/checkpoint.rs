//! SQLite only: WAL checkpoints on a thread of their own, so the audit
//! writer never copies pages into the database file while requests wait.
//!
//! By default the connection that commits past 1,000 WAL frames runs the
//! checkpoint inside that COMMIT: it copies ~4 MB into the database file and
//! fsyncs it, and every request of the batch (and every one queued behind
//! it) waits. That was ~10 % of the writer's samples and a latency spike
//! every few hundred commits. Here the writer's connection has automatic
//! checkpoints off and a `audit-checkpoint` thread runs a PASSIVE checkpoint
//! (never blocks the writer, never waits for it) every [`CHECKPOINT_EVERY`].
//!
//! A WAL file starts over only when a write transaction begins with every
//! frame already copied; under continuous writes the background thread may
//! never get that far. So when the WAL has grown past [`WAL_INLINE_FRAMES`]
//! the writer checkpoints inline after replying to its batch — little is
//! left to copy then — and its next write restarts the file. The WAL is thus
//! bounded by that size plus what the writer appends between two background
//! passes (the writer learns the WAL's size from the last pass).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use crate::db::{Backend, Conn, Db, DbError};

/// How often the background thread copies committed frames.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// WAL frames (pages) after which the writer checkpoints itself: ~16 MB.
pub(super) const WAL_INLINE_FRAMES: u64 = 4_000;

/// The background checkpointer of one writer; stops when dropped.
pub(super) struct Checkpoints {
    /// Frames in the WAL at the last checkpoint (either thread's).
    wal_frames: Arc<AtomicU64>,
    /// Dropped with the writer: the thread sees the disconnect and exits.
    _stop: mpsc::Sender<()>,
}

impl Checkpoints {
    /// Start the thread for an SQLite database; `None` for PostgreSQL (which
    /// checkpoints by itself) or if the thread cannot start (then the
    /// writer keeps SQLite's automatic checkpoints).
    pub(super) fn start(db: &Db) -> Option<Checkpoints> {
        if db.backend() != Backend::Sqlite {
            return None;
        }
        let wal_frames = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = mpsc::channel();
        let frames = wal_frames.clone();
        let db = db.clone();
        let started = std::thread::Builder::new()
            .name("audit-checkpoint".into())
            .spawn(move || background(&db, &frames, &stopped));
        match started {
            Ok(_) => Some(Checkpoints {
                wal_frames,
                _stop: stop,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the checkpoint thread; the audit writer checkpoints itself");
                None
            }
        }
    }

    /// Turn SQLite's automatic checkpoints off on the writer's connection
    /// (each new one: the writer reconnects after errors).
    pub(super) fn adopt(&self, conn: &mut dyn Conn) -> Result<(), DbError> {
        conn.batch("PRAGMA wal_autocheckpoint = 0")
    }

    /// After a committed batch (its callers already answered): checkpoint
    /// here if the WAL outgrew [`WAL_INLINE_FRAMES`].
    pub(super) fn after_commit(&self, conn: &mut dyn Conn) {
        if self.wal_frames.load(Ordering::Relaxed) < WAL_INLINE_FRAMES {
            return;
        }
        match checkpoint(conn) {
            Ok(frames) => self.wal_frames.store(frames, Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "audit WAL checkpoint failed"),
        }
    }
}

/// The thread: a PASSIVE checkpoint every [`CHECKPOINT_EVERY`] until the
/// writer goes away. Errors are logged and retried: a late checkpoint costs
/// disk and read speed, never data.
fn background(db: &Db, wal_frames: &AtomicU64, stop: &mpsc::Receiver<()>) {
    let mut conn: Option<Box<dyn Conn>> = None;
    // Log the first failure of a run of them, and the recovery.
    let mut failing = false;
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        let result = match conn.as_mut() {
            Some(c) => checkpoint(c.as_mut()),
            None => db.connect().and_then(|mut c| {
                let frames = checkpoint(c.as_mut());
                conn = Some(c);
                frames
            }),
        };
        match result {
            Ok(frames) => {
                wal_frames.store(frames, Ordering::Relaxed);
                if std::mem::take(&mut failing) {
                    tracing::info!(db = %db.describe(), "audit WAL checkpoints work again");
                }
            }
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(error = %e, "audit WAL checkpoint failed; retrying in the background");
                }
                conn = None;
            }
        }
    }
}

/// One PASSIVE checkpoint; the WAL's size in frames.
fn checkpoint(conn: &mut dyn Conn) -> Result<u64, DbError> {
    // (busy, frames in the WAL, frames copied); -1s when not in WAL mode.
    let row = conn.query_one("PRAGMA wal_checkpoint(PASSIVE)", &[])?;
    Ok(u64::try_from(row.int(1)?).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::Path;
    use std::time::Instant;

    use ca_core::audit::AuditEvent;

    use super::*;
    use crate::audit::AuditStore;

    /// An issuance row of the usual size (the store's test row, plus what
    /// the indexes see).
    fn event(n: u64) -> AuditEvent {
        AuditEvent {
            issuer: Some("https://idp.example".into()),
            serial: Some(n.to_string()),
            granted_principals: vec![format!("user{}", n % 97), "web".into()],
            ..crate::audit::tests::event(n)
        }
    }

    /// Rows in a copy of the main database file alone (no WAL beside it):
    /// what checkpoints have copied so far.
    fn rows_in_main_file(db: &Path, scratch: &Path) -> u64 {
        let copy = scratch.join("copy.db");
        let _ = std::fs::remove_file(&copy);
        if std::fs::copy(db, &copy).is_err() {
            return 0;
        }
        rusqlite::Connection::open(&copy)
            .and_then(|c| c.query_row("SELECT count(*) FROM audit", [], |r| r.get::<_, i64>(0)))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .unwrap_or(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn committed_rows_reach_the_database_file_without_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let store = AuditStore::open(&path).unwrap();
        for n in 0..20 {
            store.append(event(n), None).await.unwrap();
        }
        // 20 small commits are far below SQLite's own 1,000-frame automatic
        // checkpoint: only the background thread copies them.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut copied = 0;
        while copied < 20 && Instant::now() < deadline {
            tokio::time::sleep(CHECKPOINT_EVERY).await;
            copied = rows_in_main_file(&path, scratch.path());
        }
        assert_eq!(copied, 20, "the rows stayed in the WAL");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_bounded_under_continuous_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let wal = dir.path().join("a.db-wal");
        let store = AuditStore::open(&path).unwrap();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut largest = 0;
                while !done.load(Ordering::Relaxed) {
                    largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
                    std::thread::sleep(Duration::from_millis(2));
                }
                largest
            })
        };
        // 32 appenders, never a pause: 16,000 rows are ~250 MB of WAL frames
        // (what the file grows to without checkpoints); with them it stays
        // near WAL_INLINE_FRAMES plus what one background interval adds
        // (~34 MB measured in a debug build).
        let tasks: Vec<_> = (0..32u64)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    for n in 0..500 {
                        store.append(event(t * 1000 + n), None).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        done.store(true, Ordering::Relaxed);
        let largest = watcher.join().unwrap();
        assert_eq!(store.verify().unwrap().rows, 16_000);
        let bound = 64 << 20;
        assert!(
            largest <= bound,
            "the WAL grew to {largest} bytes (bound {bound})"
        );
    }
}
