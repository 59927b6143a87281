//! `jitssh-ca db migrate`: an SQLite CA's state moves into an empty
//! PostgreSQL database and behaves there as it did (one chain that keeps
//! growing, spent tokens still spent, revocations, join tokens, secrets,
//! serials above every issued one); a target with data, a broken source
//! chain or a wrong kind of database is refused and the target stays empty.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![forbid(unsafe_code)]

mod common;

use ca_server::audit::{AuditError, AuditStore, SERIAL_BLOCK_BITS};
use ca_server::db::{Db, Target};
use ca_server::hosts::JoinTokenStore;
use ca_server::migrate::{MigrateError, migrate, migrate_with};
use ca_server::revocation::{RevocationStore, Target as Revoke};
use common::{event, token};

fn pg() -> Db {
    Db::new(Target::postgres(&common::pg::cluster().fresh_database(), None).unwrap())
}

fn rows(db: &Db, table: &str) -> u64 {
    db.with(|c| {
        c.query_one(&format!("SELECT count(*) FROM {table}"), &[])?
            .u64(0)
    })
    .unwrap()
}

/// A CA's SQLite database with some of everything.
async fn populated(dir: &std::path::Path) -> (Db, [u8; 32], u64) {
    let source = Db::from(&dir.join("audit.db"));
    let audit = AuditStore::open(&source).unwrap();
    for n in 0..40u64 {
        audit
            .append(event(n, "alice"), Some(token(&format!("t{n}"))))
            .await
            .unwrap();
    }
    let block = audit.serial_block("migrate-test", common::now()).unwrap();
    let secret = audit.shared_secret("host-challenge").unwrap();
    let revocations = RevocationStore::open(&source).unwrap();
    revocations
        .revoke(&Revoke::Serial(3), Some("lost"), common::now(), 3600)
        .unwrap();
    revocations
        .revoke(
            &Revoke::Subject {
                issuer: "https://idp.example".into(),
                subject: "mallory".into(),
            },
            None,
            common::now(),
            3600,
        )
        .unwrap();
    let joins = JoinTokenStore::open(&source).unwrap();
    let join = ca_core::host::JoinToken::generate(&mut rand_core::OsRng);
    let names = ca_core::hostname::parse_hostnames(&["web1.example.com".into()], 4).unwrap();
    joins
        .insert(&join, &names, common::now(), common::now() + 600)
        .unwrap();
    (source, secret, block)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_ca_moves_to_postgres_and_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let (source, secret, block) = populated(dir.path()).await;
    let before = AuditStore::open_read_only(&source)
        .unwrap()
        .verify()
        .unwrap();
    let target = pg();

    // 7 rows per INSERT: full and partial batches in every big table.
    let report = migrate_with(&source, &target, 7).unwrap();
    let copied: std::collections::BTreeMap<_, _> = report.tables.iter().copied().collect();
    assert_eq!(copied["audit"], 40);
    assert_eq!(copied["used_tokens"], 40);
    assert_eq!(copied["revocations"], 2);
    assert_eq!(copied["host_join_tokens"], 1);
    for (table, n) in &report.tables {
        assert_eq!(rows(&target, table), *n, "{table}");
        assert_eq!(rows(&source, table), *n, "{table}");
    }
    assert_eq!(report.chain_rows, before.rows);
    assert_eq!(
        report.last_hash, before.last_hash,
        "the same chain, to the last hash"
    );

    // The chain carries on from the migrated head.
    let audit = AuditStore::open(&target).unwrap();
    assert_eq!(audit.append(event(40, "bob"), None).await.unwrap(), 41);
    let after = audit.verify().unwrap();
    assert!(after.is_ok() && after.rows == 41, "{after:?}");
    // A token spent before the move is still spent after it.
    assert!(matches!(
        audit.append(event(41, "bob"), Some(token("t7"))).await,
        Err(AuditError::Replayed)
    ));
    // Same secret, serials above the old block, revocations with their ids
    // and a sequence beyond them.
    assert_eq!(audit.shared_secret("host-challenge").unwrap(), secret);
    let next = audit.serial_block("after", common::now()).unwrap();
    assert!(next > block, "{next} > {block}");
    assert!((next << SERIAL_BLOCK_BITS) > 40);
    let revocations = RevocationStore::open(&target).unwrap();
    // (while serial 3's certificate, issued at 1_700_000_003, was valid)
    let snap = revocations.snapshot(1_700_000_010).unwrap();
    assert_eq!(snap.serials, [3]);
    assert!(snap.subject_revoked("https://idp.example", "mallory"));
    revocations
        .revoke(&Revoke::Serial(5), None, common::now(), 3600)
        .unwrap();
    let ids = target
        .with(|c| c.query("SELECT id FROM revocations ORDER BY id", &[]))
        .unwrap();
    let ids: Vec<i64> = ids.iter().map(|r| r.int(0).unwrap()).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids[2] > ids[1], "a new revocation gets a fresh id: {ids:?}");
    // The join token is still there, unspent.
    let joins = JoinTokenStore::open(&target).unwrap();
    let count = target
        .with(|c| {
            c.query_one(
                "SELECT count(*) FROM host_join_tokens WHERE used_at IS NULL",
                &[],
            )?
            .u64(0)
        })
        .unwrap();
    assert_eq!(count, 1);
    drop(joins);

    // Migrating again into the same database is refused: no merging.
    let again = migrate(&source, &target).unwrap_err();
    assert!(
        matches!(
            again,
            MigrateError::TargetNotEmpty {
                table: "audit",
                rows: 41,
                ..
            }
        ),
        "{again}"
    );
    assert_eq!(rows(&target, "audit"), 41);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_leave_the_target_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (source, _, _) = populated(dir.path()).await;

    // Wrong kinds of database, or no source at all.
    let sqlite_target = Db::from(&dir.path().join("other.db"));
    assert!(matches!(
        migrate(&source, &sqlite_target),
        Err(MigrateError::TargetNotPostgres(_))
    ));
    let target = pg();
    assert!(matches!(
        migrate(&Db::from(&dir.path().join("missing.db")), &target),
        Err(MigrateError::NoSource(_))
    ));
    assert!(matches!(
        migrate(&target, &pg()),
        Err(MigrateError::SourceNotSqlite(_))
    ));

    // A target with data of its own (here: one spent token) is refused
    // before anything is copied.
    let busy = pg();
    AuditStore::open(&busy).unwrap();
    busy.with(|c| {
        c.execute(
            "INSERT INTO used_tokens (token_hash, expires_at) VALUES ('x', 1)",
            &[],
        )
    })
    .unwrap();
    let e = migrate(&source, &busy).unwrap_err();
    assert!(
        matches!(
            e,
            MigrateError::TargetNotEmpty {
                table: "used_tokens",
                rows: 1,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(rows(&busy, "audit"), 0);

    // A table this version does not know is not left behind silently.
    let conn = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
    conn.execute_batch("CREATE TABLE future_feature (x INTEGER)")
        .unwrap();
    let e = migrate(&source, &target).unwrap_err();
    assert!(
        matches!(&e, MigrateError::UnknownTable(t) if t == "future_feature"),
        "{e}"
    );
    conn.execute_batch("DROP TABLE future_feature").unwrap();
    drop(conn);

    // A source whose chain was edited is not migrated.
    AuditStore::open(&target).unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
    conn.execute_batch(
        "DROP TRIGGER audit_no_update; UPDATE audit SET subject = 'eve' WHERE seq = 5;",
    )
    .unwrap();
    drop(conn);
    let e = migrate(&source, &target).unwrap_err();
    assert!(matches!(e, MigrateError::SourceChain(_)), "{e}");
    assert_eq!(rows(&target, "audit"), 0);
}
