//! The audit store against a real SQLite file: group commit under
//! concurrency, persistence, tamper detection, outage and recovery, filters,
//! export and escaping.
#![allow(clippy::unwrap_used)]
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ca_core::audit::{AuditEvent, ChainError, chain_hash};
use ca_server::audit::{
    AuditError, AuditStore, Filter, IndexMismatch, UsedToken, format_event_line,
};
use rusqlite::Connection;

fn event(n: u64) -> AuditEvent {
    AuditEvent {
        time: 1_700_000_000 + n,
        action: "user_cert".into(),
        outcome: "issued".into(),
        issuer: Some("https://idp.example".into()),
        subject: Some(format!("sub{n}")),
        email: Some(format!("user{n}@example.com")),
        requested_principals: Some(vec![format!("p{n}")]),
        granted_principals: vec![format!("p{n}")],
        serial: Some(n.to_string()),
        decision_reasons: vec!["ok".into()],
        ..AuditEvent::default()
    }
}

fn token(name: &str, expires_at: u64) -> UsedToken {
    UsedToken {
        token_hash: name.into(),
        expires_at,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A fresh store with `n` rows, in a directory that lives as long as the
/// returned guard.
async fn store_with(n: u64) -> (tempfile::TempDir, PathBuf, AuditStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let store = AuditStore::open(&path).unwrap();
    for i in 1..=n {
        assert_eq!(store.append(event(i), None).await.unwrap(), i);
    }
    (dir, path, store)
}

/// Edit the file as an attacker with SQLite access would: around the
/// store, after dropping its append-only triggers.
fn tamper(path: &Path, sql: &str) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;
         DROP TRIGGER audit_principals_no_update; DROP TRIGGER audit_principals_no_delete;",
    )
    .unwrap();
    conn.execute_batch(sql).unwrap();
}

fn seqs(store: &AuditStore, filter: Filter) -> Vec<u64> {
    store.list(&filter).unwrap().iter().map(|e| e.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_get_consecutive_seqs_in_group_commits() {
    let (_dir, _path, store) = store_with(0).await;
    let mut tasks = Vec::new();
    for t in 0..50u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..10u64 {
                let n = t * 10 + i;
                let seq = store
                    .append(event(n), Some(token(&format!("tok{n}"), u64::MAX >> 2)))
                    .await
                    .unwrap();
                got.push(seq);
            }
            got
        }));
    }
    // Reads run alongside the writer.
    let reader = store.clone();
    let reads = tokio::task::spawn_blocking(move || {
        for _ in 0..20 {
            let rows = reader.list(&Filter::default()).unwrap();
            assert!(rows.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
        }
    });
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    reads.await.unwrap();
    all.sort_unstable();
    assert_eq!(all, (1..=500).collect::<Vec<_>>());

    let stats = store.stats();
    assert_eq!(stats.rows, 500);
    assert_eq!(stats.failed_batches, 0);
    assert!(
        stats.largest_batch > 1,
        "no group commit happened: {stats:?}"
    );
    assert!(stats.batches < 500, "{stats:?}");

    let report = store.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.rows, 500);
    assert_eq!(report.last_hash, store.show(500).unwrap().unwrap().hash);
    assert_eq!(store.used_tokens(now()).unwrap().len(), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_extend_one_chain() {
    let (_dir, path, a) = store_with(0).await;
    let b = AuditStore::open(&path).unwrap();
    let mut tasks = Vec::new();
    for t in 0..20u64 {
        let store = if t % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..10 {
                got.push(store.append(event(t * 10 + i), None).await.unwrap());
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=200).collect::<Vec<_>>());
    let report = a.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.rows, 200);
}

#[tokio::test]
async fn chain_and_used_tokens_persist_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let now = now();
    {
        let store = AuditStore::open(&path).unwrap();
        store
            .append(event(1), Some(token("live", now + 600)))
            .await
            .unwrap();
        store
            .append(event(2), Some(token("expired", now - 10)))
            .await
            .unwrap();
        // The same token again (a replay the in-memory guard of this or
        // another replica did not see) is refused by the database, and its
        // row is not written.
        let err = store
            .append(event(3), Some(token("live", now + 600)))
            .await
            .unwrap_err();
        assert!(matches!(err, AuditError::Replayed), "{err}");
    }
    let store = AuditStore::open(&path).unwrap();
    assert_eq!(store.used_tokens(now).unwrap(), [token("live", now + 600)]);
    let mut all = store.used_tokens(0).unwrap();
    all.sort_by(|x, y| x.token_hash.cmp(&y.token_hash));
    assert_eq!(all, [token("expired", now - 10), token("live", now + 600)]);
    assert_eq!(store.append(event(4), None).await.unwrap(), 3);
    let err = store
        .append(event(5), Some(token("live", now + 600)))
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::Replayed), "after reopen: {err}");
    let report = store.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.rows, 3);
}

#[cfg(unix)]
#[tokio::test]
async fn new_database_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path, _store) = store_with(1).await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    assert!(wal.exists(), "WAL mode expected");
    assert_eq!(mode(&wal), 0o600);
}

#[tokio::test]
async fn verify_names_an_edited_row() {
    let (_dir, path, store) = store_with(5).await;
    tamper(
        &path,
        "UPDATE audit SET event = replace(event, '\"p3\"', '\"root\"') WHERE seq = 3",
    );
    let report = store.verify().unwrap();
    assert_eq!(report.error, Some(ChainError::Edited { seq: 3 }));
    assert_eq!(report.rows, 2);
    assert_eq!(report.last_hash, store.show(2).unwrap().unwrap().hash);
    // The principal index still says p3 while the event now says root.
    assert_eq!(
        report.index_error,
        Some(IndexMismatch {
            seq: 3,
            column: "principals"
        })
    );
}

#[tokio::test]
async fn verify_names_a_deleted_middle_row() {
    let (_dir, path, store) = store_with(5).await;
    tamper(&path, "DELETE FROM audit WHERE seq = 3");
    let report = store.verify().unwrap();
    assert_eq!(
        report.error,
        Some(ChainError::Gap {
            expected: 3,
            found: 4
        })
    );
    assert_eq!(report.rows, 2);
    // Its principal rows now point at nothing.
    assert_eq!(
        report.index_error,
        Some(IndexMismatch {
            seq: 3,
            column: "principals"
        })
    );
}

#[tokio::test]
async fn verify_names_swapped_rows() {
    let (_dir, path, store) = store_with(5).await;
    tamper(
        &path,
        "CREATE TEMP TABLE t AS SELECT * FROM audit WHERE seq IN (2, 3);
         UPDATE audit SET (time, action, outcome, subject, issuer, serial, prev_hash, hash, event) =
             (SELECT time, action, outcome, subject, issuer, serial, prev_hash, hash, event
              FROM t WHERE t.seq = 5 - audit.seq)
         WHERE seq IN (2, 3);",
    );
    assert_eq!(
        store.verify().unwrap().error,
        Some(ChainError::Link { seq: 2 })
    );

    // Swapping only the events (hash columns left in place) is an edit.
    let (_dir, path, store) = store_with(5).await;
    tamper(
        &path,
        "CREATE TEMP TABLE t AS SELECT * FROM audit WHERE seq IN (2, 3);
         UPDATE audit SET event = (SELECT event FROM t WHERE t.seq = 5 - audit.seq) WHERE seq IN (2, 3);",
    );
    assert_eq!(
        store.verify().unwrap().error,
        Some(ChainError::Edited { seq: 2 })
    );
}

#[tokio::test]
async fn verify_names_an_inserted_row() {
    // A forged row correctly linked to row 2, with later rows renumbered:
    // the row after it no longer links.
    let (_dir, path, store) = store_with(5).await;
    let prev = store.show(2).unwrap().unwrap().hash;
    let forged = serde_json::to_string(&event(99)).unwrap();
    let hash = chain_hash(3, &prev, &forged);
    tamper(
        &path,
        &format!(
            "UPDATE audit SET seq = -seq WHERE seq >= 3;
             UPDATE audit SET seq = 1 - seq WHERE seq < 0;
             INSERT INTO audit (seq, time, action, outcome, prev_hash, hash, event)
             VALUES (3, 1700000099, 'user_cert', 'issued', '{prev}', '{hash}', '{forged}');"
        ),
    );
    let report = store.verify().unwrap();
    assert_eq!(report.error, Some(ChainError::Link { seq: 4 }));
    assert_eq!(report.rows, 3);

    // A row appended at the end without the right link.
    let (_dir, path, store) = store_with(5).await;
    tamper(
        &path,
        &format!(
            "INSERT INTO audit (seq, time, action, outcome, prev_hash, hash, event)
             VALUES (6, 1700000099, 'user_cert', 'issued', '{}', '{hash}', '{forged}');",
            ca_core::audit::GENESIS
        ),
    );
    assert_eq!(
        store.verify().unwrap().error,
        Some(ChainError::Link { seq: 6 })
    );
}

#[tokio::test]
async fn verify_names_edited_index_columns() {
    let (_dir, path, store) = store_with(5).await;
    tamper(
        &path,
        "UPDATE audit SET subject = 'someone-else' WHERE seq = 4",
    );
    let report = store.verify().unwrap();
    assert_eq!(report.error, None, "the chain itself is intact");
    assert_eq!(report.rows, 5);
    assert_eq!(
        report.index_error,
        Some(IndexMismatch {
            seq: 4,
            column: "subject"
        })
    );
    assert!(!report.is_ok());

    let (_dir, path, store) = store_with(5).await;
    tamper(
        &path,
        "INSERT INTO audit_principals (seq, principal) VALUES (2, 'root')",
    );
    assert_eq!(
        store.verify().unwrap().index_error,
        Some(IndexMismatch {
            seq: 2,
            column: "principals"
        })
    );
}

#[tokio::test]
async fn append_only_triggers_stop_accidental_edits() {
    let (_dir, path, _store) = store_with(2).await;
    let conn = Connection::open(&path).unwrap();
    let err = conn
        .execute("DELETE FROM audit WHERE seq = 1", [])
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = conn
        .execute("UPDATE audit SET outcome = 'denied'", [])
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_database_is_unavailable_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let store = AuditStore::open(
        ca_server::db::Db::from(&path).with_lock_timeout(Duration::from_millis(100)),
    )
    .unwrap();
    assert_eq!(store.append(event(1), None).await.unwrap(), 1);
    store.check_writable().await.unwrap();

    let locker = Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let err = store.append(event(2), None).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("audit.db") && msg.contains("lock"),
        "message should name the file and the cause: {msg}"
    );
    let err = store.check_writable().await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    // Every append of a failing batch fails; none is reported as written.
    let pending: Vec<_> = (10..20)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.append(event(n), None).await })
        })
        .collect();
    for p in pending {
        assert!(p.await.unwrap().unwrap_err().is_unavailable());
    }
    // Readers are not blocked by the writer lock (WAL).
    assert_eq!(seqs(&store, Filter::default()), [1]);

    locker.execute_batch("ROLLBACK").unwrap();
    store.check_writable().await.unwrap();
    assert_eq!(store.append(event(3), None).await.unwrap(), 2);
    let report = store.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.rows, 2);
    assert!(store.stats().failed_batches >= 2);
}

/// As root, file permissions do not stop writes, but the immutable
/// attribute does. Skipped where `chattr` is unavailable or not permitted.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn immutable_files_are_unavailable_then_recover() {
    struct Immutable(Vec<PathBuf>);
    impl Drop for Immutable {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = std::process::Command::new("chattr")
                    .arg("-i")
                    .arg(p)
                    .status();
            }
        }
    }
    fn chattr(flag: &str, p: &Path) -> bool {
        std::process::Command::new("chattr")
            .arg(flag)
            .arg(p)
            .status()
            .is_ok_and(|s| s.success())
    }

    let (_dir, path, store) = store_with(1).await;
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let guard = Immutable(vec![path.clone(), wal.clone()]);
    if !(chattr("+i", &path) && chattr("+i", &wal)) {
        eprintln!("skipped: chattr +i is not permitted here");
        return;
    }
    let err = store.append(event(2), None).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(store.check_writable().await.unwrap_err().is_unavailable());
    drop(guard);
    assert_eq!(store.append(event(3), None).await.unwrap(), 2);
    let report = store.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.rows, 2);
}

#[tokio::test]
async fn filters_by_subject_principal_time_action_and_limit() {
    let (_dir, _path, store) = store_with(0).await;
    let mk = |time, action: &str, outcome: &str, subject: &str, req: &[&str], granted: &[&str]| {
        AuditEvent {
            time,
            action: action.into(),
            outcome: outcome.into(),
            subject: Some(subject.into()),
            requested_principals: Some(req.iter().map(|s| s.to_string()).collect()),
            granted_principals: granted.iter().map(|s| s.to_string()).collect(),
            ..AuditEvent::default()
        }
    };
    for e in [
        mk(1000, "user_cert", "issued", "alice", &["alice"], &["alice"]),
        mk(2000, "user_cert", "denied", "bob", &["root"], &[]),
        mk(3000, "host_cert", "issued", "alice", &[], &["web1"]),
        mk(
            4000,
            "user_cert",
            "issued",
            "alice",
            &["alice", "root"],
            &["alice"],
        ),
    ] {
        store.append(e, None).await.unwrap();
    }
    let f = Filter::default;
    assert_eq!(seqs(&store, f()), [1, 2, 3, 4]);
    let subject = |s: &str| Filter {
        subject: Some(s.into()),
        ..f()
    };
    assert_eq!(seqs(&store, subject("alice")), [1, 3, 4]);
    assert_eq!(seqs(&store, subject("nobody")), Vec::<u64>::new());
    let principal = |p: &str| Filter {
        principal: Some(p.into()),
        ..f()
    };
    assert_eq!(seqs(&store, principal("root")), [2, 4], "requested counts");
    assert_eq!(seqs(&store, principal("web1")), [3], "granted counts");
    assert_eq!(seqs(&store, principal("alice")), [1, 4]);
    let window = Filter {
        since: Some(2000),
        until: Some(4000),
        ..f()
    };
    assert_eq!(
        seqs(&store, window),
        [2, 3],
        "since inclusive, until exclusive"
    );
    let action = Filter {
        action: Some("host_cert".into()),
        ..f()
    };
    assert_eq!(seqs(&store, action), [3]);
    let combined = Filter {
        subject: Some("alice".into()),
        action: Some("user_cert".into()),
        ..f()
    };
    assert_eq!(seqs(&store, combined), [1, 4]);
    let newest = Filter {
        limit: Some(2),
        ..f()
    };
    assert_eq!(
        seqs(&store, newest),
        [3, 4],
        "limit keeps the newest, oldest first"
    );
    let newest_alice = Filter {
        limit: Some(1),
        ..subject("alice")
    };
    assert_eq!(seqs(&store, newest_alice), [4]);
}

#[tokio::test]
async fn show_returns_the_stored_row() {
    let (_dir, _path, store) = store_with(2).await;
    let row = store.show(2).unwrap().unwrap();
    assert_eq!(row.seq, 2);
    assert_eq!(row.event, event(2));
    assert_eq!(row.raw, serde_json::to_string(&event(2)).unwrap());
    let prev = store.show(1).unwrap().unwrap().hash;
    assert_eq!(row.hash, chain_hash(2, &prev, &row.raw));
    assert_eq!(store.show(3).unwrap(), None);
    assert_eq!(store.show(u64::MAX).unwrap(), None);
}

#[tokio::test]
async fn export_writes_json_lines_that_rehash() {
    let (_dir, _path, store) = store_with(3).await;
    let mut out = Vec::new();
    assert_eq!(store.export(&Filter::default(), &mut out).unwrap(), 3);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    for (i, line) in lines.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let seq = v["seq"].as_u64().unwrap();
        assert_eq!(seq, i as u64 + 1);
        let stored = store.show(seq).unwrap().unwrap();
        assert_eq!(v["hash"], stored.hash.as_str());
        let parsed: AuditEvent = serde_json::from_value(v["event"].clone()).unwrap();
        assert_eq!(parsed, stored.event);
        // The event text in the line is the stored bytes: it rehashes.
        let raw = line
            .split_once("\"event\":")
            .unwrap()
            .1
            .strip_suffix('}')
            .unwrap();
        assert_eq!(raw, stored.raw);
        let prev_hash = v["prev_hash"].as_str().unwrap();
        assert_eq!(chain_hash(seq, prev_hash, raw), stored.hash);
    }

    let mut out = Vec::new();
    let only_two = Filter {
        subject: Some("sub2".into()),
        ..Filter::default()
    };
    assert_eq!(store.export(&only_two, &mut out).unwrap(), 1);
}

#[tokio::test]
async fn listed_lines_escape_hostile_claims() {
    let (_dir, _path, store) = store_with(0).await;
    let mut e = event(1);
    e.email =
        Some("mallory@example.com\n2026-01-01T00:00:00Z #9 user_cert issued\u{1b}]0;x\u{7}".into());
    store.append(e, None).await.unwrap();
    let row = store.show(1).unwrap().unwrap();
    let line = format_event_line(&row);
    assert!(!line.chars().any(char::is_control), "{line:?}");
    assert!(line.contains(r"mallory@example.com\n2026"), "{line}");
    assert!(line.contains(r"\u{1b}]0;x\u{7}"), "{line}");
    assert_eq!(line.lines().count(), 1);
}

/// Rough throughput of the group-committed writer with 64 concurrent
/// appenders. Run with
/// `cargo test --release -p ca-server --test audit_store -- --ignored --nocapture`.
#[ignore]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_with_64_appenders() {
    let (_dir, _path, store) = store_with(0).await;
    let per_task = 500u64;
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..64u64)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    let n = t * per_task + i;
                    store
                        .append(event(n), Some(token(&format!("{n:064x}"), u64::MAX >> 2)))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let stats = store.stats();
    println!(
        "{} appends in {:.2?}: {:.0} appends/s, {} batches (mean {:.1} rows, largest {})",
        stats.rows,
        elapsed,
        stats.rows as f64 / elapsed.as_secs_f64(),
        stats.batches,
        stats.rows as f64 / stats.batches as f64,
        stats.largest_batch
    );
    let verify_started = std::time::Instant::now();
    let report = store.verify().unwrap();
    println!(
        "verify of {} rows: {:.2?}",
        report.rows,
        verify_started.elapsed()
    );
    assert!(report.is_ok());
}
