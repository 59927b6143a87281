//! PostgreSQL faults: the database drops the CA's connections (a restart, a
//! failover, an operator's `pg_terminate_backend`). Nothing is reported as
//! written that was not; the next requests succeed on new connections; the
//! chain stays whole.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![forbid(unsafe_code)]

mod common;

use ca_core::audit::AuditEvent;
use ca_server::audit::{AuditStore, Filter};
use ca_server::db::{Db, Target};

fn event(n: u64) -> AuditEvent {
    AuditEvent {
        time: 1_700_000_000 + n,
        action: "user_cert".into(),
        outcome: "issued".into(),
        subject: Some(format!("sub{n}")),
        serial: Some(n.to_string()),
        ..AuditEvent::default()
    }
}

/// Terminate every session on `dbname` but the caller's: what a database
/// restart does to the CA's connections.
fn drop_connections(dbname: &str) -> u64 {
    let admin = common::pg::cluster().admin_url();
    let dbname = dbname.to_owned();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
        c.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&dbname],
        )
        .unwrap()
        .len() as u64
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_fail_closed_then_recover() {
    let url = common::pg::cluster().fresh_database();
    let dbname = url.rsplit('/').next().unwrap().to_owned();
    let db = Db::new(Target::postgres(&url, None).unwrap());
    let store = AuditStore::open(&db).unwrap();
    for n in 1..=3 {
        assert_eq!(store.append(event(n), None).await.unwrap(), n);
    }
    // Readers have pooled connections too.
    assert_eq!(store.list(&Filter::default()).unwrap().len(), 3);

    assert!(
        drop_connections(&dbname) >= 1,
        "the writer's session was there"
    );

    // Each append either commits (and says so) or fails as unavailable;
    // within a few tries the writer has reconnected.
    let mut written = vec![1, 2, 3];
    let mut failures = 0;
    for n in 4..=10 {
        match store.append(event(n), None).await {
            Ok(seq) => written.push(seq),
            Err(e) => {
                assert!(e.is_unavailable(), "{e}");
                failures += 1;
            }
        }
    }
    assert!(failures <= 2, "{failures} appends failed after the drop");
    assert!(written.len() >= 8);
    store.check_writable().await.unwrap();

    // Reads recover too (a pooled connection found dead is replaced).
    let mut rows = None;
    for _ in 0..3 {
        if let Ok(r) = store.list(&Filter::default()) {
            rows = Some(r);
            break;
        }
    }
    let rows = rows.expect("reads recover");
    let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, written, "every acknowledged append, nothing else");
    let report = store.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.rows, written.len() as u64);
}
