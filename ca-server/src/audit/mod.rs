//! The audit store: an append-only, hash-chained log of every issuance and
//! denial (SQLite or PostgreSQL), written by one group-committing writer
//! thread per process.
//!
//! Invariants:
//! - `append` returns `Ok(seq)` only after the transaction holding that row
//!   has committed (WAL, `synchronous=FULL`). Callers release a certificate
//!   only after that, so no certificate leaves without its audit row.
//! - Only the writer thread writes rows. It takes the chain lock (SQLite's
//!   write lock, PostgreSQL's advisory lock) and reads the chain head inside
//!   each write transaction, so a failed batch leaves nothing stale behind
//!   and other processes or replicas appending to the same database still
//!   extend one chain.
//! - A used token is recorded in the same transaction as its row; a token
//!   already recorded fails that append alone with [`AuditError::Replayed`].
//! - A write failure fails every append of that batch with
//!   [`AuditError::Unavailable`]; the writer keeps running and succeeds again
//!   once the fault clears.
//! - Reads (`list`, `show`, `verify`, `export`, `used_tokens`, and the
//!   console's `search`, `chain_link` and `activity`) use their own
//!   connections, so the CLI can inspect a database being served.

mod activity;
mod checkpoint;
mod format;
mod read;
mod schema;
mod search;
mod store;
mod types;
mod writer;

pub use activity::Activity;
pub use format::{format_event_detail, format_event_line, format_time};
pub use read::{IndexMismatch, VerifyReport};
pub(crate) use schema::ensure_tables;
pub use search::{ChainLink, Cursor, LinkVerdict, SearchPage, TIME_SLACK_SECS};
pub use store::AuditStore;
pub use types::{
    AuditError, Filter, Refused, SERIAL_BLOCK_BITS, StoreOptions, StoredEvent, TxOutcome,
    UsedToken, refusal_row,
};
pub use writer::WriterStats;

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use ca_core::audit::AuditEvent;
    use rusqlite::Connection;

    pub(super) fn event(n: u64) -> AuditEvent {
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
