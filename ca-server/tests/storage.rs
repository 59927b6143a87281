//! The storage contract, run against both backends: an SQLite file and a
//! real PostgreSQL server. Several stores on one database stand for several
//! processes or replicas: one audit chain without forks, a token spent once
//! wherever it is presented, unique serial blocks, one winner per join
//! token, revocations and elevations seen by every store.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![forbid(unsafe_code)]

mod common;

use std::collections::HashSet;

use ca_server::audit::{AuditError, AuditStore, Filter, SERIAL_BLOCK_BITS};
use ca_server::db::{Backend, Db, Target, TlsMode, with_tls_params};
use ca_server::hosts::JoinTokenStore;
use ca_server::revocation::{RevocationStore, Target as Revoke};

/// A fresh, empty database of each backend (the temp dir lives as long as
/// the returned guard).
fn databases() -> Vec<(Db, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Db::from(&dir.path().join("audit.db"));
    let url = common::pg::cluster().fresh_database();
    let pg = Db::new(Target::postgres(&url, None).unwrap());
    vec![(sqlite, Some(dir)), (pg, None)]
}

use common::{event, token};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_on_one_database_keep_one_chain() {
    for (db, _guard) in databases() {
        let name = format!("{:?}", db.backend());
        // Two stores, two writer threads, two connections: two replicas.
        let a = AuditStore::open(&db).unwrap();
        let b = AuditStore::open(Db::new(target_of(&db))).unwrap();
        let mut tasks = Vec::new();
        for n in 0..200u64 {
            let store = if n % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                store.append(event(n, "alice"), None).await.unwrap()
            }));
        }
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>(), "{name}: seqs");
        let report = a.verify().unwrap();
        assert!(report.is_ok(), "{name}: {report:?}");
        assert_eq!(report.rows, 200, "{name}");
        // The index agrees: principals filter across both writers' rows.
        let shared = a
            .list(&Filter {
                principal: Some("shared".into()),
                ..Filter::default()
            })
            .unwrap();
        assert_eq!(shared.len(), 200, "{name}");
        let one = b
            .list(&Filter {
                principal: Some("p7".into()),
                limit: Some(5),
                ..Filter::default()
            })
            .unwrap();
        assert_eq!(one.len(), 1, "{name}");
        assert_eq!(one[0].event.serial.as_deref(), Some("7"), "{name}");
        assert_eq!(b.show(one[0].seq).unwrap().unwrap(), one[0], "{name}");
        let mut out = Vec::new();
        assert_eq!(a.export(&Filter::default(), &mut out).unwrap(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_is_spent_once_across_writers() {
    for (db, _guard) in databases() {
        let name = format!("{:?}", db.backend());
        let a = AuditStore::open(&db).unwrap();
        let b = AuditStore::open(Db::new(target_of(&db))).unwrap();
        // The same token presented to both at once, 20 times over.
        let mut tasks = Vec::new();
        for n in 0..20u64 {
            for store in [a.clone(), b.clone()] {
                tasks.push(tokio::spawn(async move {
                    store
                        .append(event(n, "bob"), Some(token(&format!("t{n}"))))
                        .await
                }));
            }
        }
        let (mut ok, mut replayed) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(AuditError::Replayed) => replayed += 1,
                Err(e) => panic!("{name}: {e}"),
            }
        }
        assert_eq!((ok, replayed), (20, 20), "{name}");
        // Refused appends left no row; the chain is whole.
        let report = b.verify().unwrap();
        assert!(report.is_ok() && report.rows == 20, "{name}: {report:?}");
        // A restart still knows every spent token.
        let c = AuditStore::open(Db::new(target_of(&db))).unwrap();
        assert_eq!(c.used_tokens(0).unwrap().len(), 20, "{name}");
        assert!(matches!(
            c.append(event(99, "bob"), Some(token("t3"))).await,
            Err(AuditError::Replayed)
        ));
    }
}

/// Schema 1 keyed `used_tokens` by the hash alone; schema 2 by (expiry,
/// hash). Opening a schema-1 database rekeys it in place: every token spent
/// before the upgrade stays spent, the old index is gone, and a token is
/// still spent once however it is presented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_1_database_keeps_its_spent_tokens_through_the_upgrade() {
    for (db, _guard) in databases() {
        let name = format!("{:?}", db.backend());
        drop(AuditStore::open(&db).unwrap());
        let (integer, set_version) = match db.backend() {
            Backend::Sqlite => ("INTEGER", "PRAGMA user_version = 1"),
            Backend::Postgres => (
                "BIGINT",
                "UPDATE jitssh_schema SET version = 1 WHERE component = 'audit'",
            ),
        };
        let exp = common::now() + 600;
        db.with(|c| {
            c.batch(&format!(
                "DROP TABLE used_tokens;
                 CREATE TABLE used_tokens (token_hash TEXT PRIMARY KEY, expires_at {integer} NOT NULL);
                 CREATE INDEX used_tokens_expires_at ON used_tokens(expires_at);
                 INSERT INTO used_tokens VALUES ('old-1', {exp}), ('old-2', {exp});
                 {set_version};"
            ))
        })
        .unwrap();

        let store = AuditStore::open(Db::new(target_of(&db))).unwrap();
        let mut spent: Vec<String> = store
            .used_tokens(0)
            .unwrap()
            .into_iter()
            .map(|t| t.token_hash)
            .collect();
        spent.sort();
        assert_eq!(spent, ["old-1", "old-2"], "{name}");
        let old = ca_server::audit::UsedToken {
            token_hash: "old-1".into(),
            expires_at: exp,
        };
        assert!(
            matches!(
                store.append(event(1, "dave"), Some(old)).await,
                Err(AuditError::Replayed)
            ),
            "{name}: a token spent before the upgrade is refused after it"
        );
        store
            .append(event(2, "dave"), Some(token("new")))
            .await
            .unwrap();
        assert!(
            matches!(
                store.append(event(3, "dave"), Some(token("new"))).await,
                Err(AuditError::Replayed)
            ),
            "{name}"
        );
        let (version, index) = db
            .with(|c| {
                let (version_sql, index_sql) = match c.backend() {
                    Backend::Sqlite => (
                        "PRAGMA user_version",
                        "SELECT count(*) FROM sqlite_master WHERE name = 'used_tokens_expires_at'",
                    ),
                    Backend::Postgres => (
                        "SELECT version FROM jitssh_schema WHERE component = 'audit'",
                        "SELECT count(*) FROM pg_indexes WHERE indexname = 'used_tokens_expires_at'",
                    ),
                };
                Ok((
                    c.query_one(version_sql, &[])?.int(0)?,
                    c.query_one(index_sql, &[])?.int(0)?,
                ))
            })
            .unwrap();
        assert_eq!((version, index), (2, 0), "{name}");
        // A second start finds schema 2 and leaves the rows alone.
        let again = AuditStore::open(Db::new(target_of(&db))).unwrap();
        assert_eq!(again.used_tokens(0).unwrap().len(), 3, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_blocks_are_unique_and_above_issued_serials() {
    for (db, _guard) in databases() {
        let name = format!("{:?}", db.backend());
        let a = AuditStore::open(&db).unwrap();
        // A serial in the older format (milliseconds << 16) already issued.
        let old = 1_700_000_000_000u64 << 16;
        let mut e = event(1, "carol");
        e.serial = Some(old.to_string());
        a.append(e, None).await.unwrap();
        let stores: Vec<AuditStore> = (0..3)
            .map(|_| AuditStore::open(Db::new(target_of(&db))).unwrap())
            .collect();
        let blocks: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = stores
                .iter()
                .flat_map(|st| (0..4).map(move |_| st))
                .map(|st| s.spawn(move || st.serial_block("test", common::now()).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let unique: HashSet<_> = blocks.iter().collect();
        assert_eq!(unique.len(), blocks.len(), "{name}: {blocks:?}");
        assert!(
            blocks.iter().all(|b| (b << SERIAL_BLOCK_BITS) > old),
            "{name}: blocks must start above issued serials: {blocks:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_token_has_one_winner_across_stores() {
    for (db, _guard) in databases() {
        let name = format!("{:?}", db.backend());
        AuditStore::open(&db).unwrap();
        let stores: Vec<JoinTokenStore> = (0..4)
            .map(|_| JoinTokenStore::open(Db::new(target_of(&db))).unwrap())
            .collect();
        let token = ca_core::host::JoinToken::generate(&mut rand_core::OsRng);
        let names = ca_core::hostname::parse_hostnames(&["web1.example.com".into()], 4).unwrap();
        let now = common::now();
        stores[0].insert(&token, &names, now, now + 600).unwrap();
        let hash = token.hash();
        let wins: usize = std::thread::scope(|s| {
            let handles: Vec<_> = stores
                .iter()
                .enumerate()
                .map(|(i, st)| {
                    let hash = hash.clone();
                    s.spawn(move || st.claim(&hash, now, &format!("c{i}")).unwrap())
                })
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(wins, 1, "{name}");
        let stored = stores[3].lookup(&hash).unwrap().unwrap();
        assert_eq!(stored.used_at, Some(now), "{name}");
        assert_eq!(stored.hostnames, names, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_made_by_one_store_are_seen_by_another() {
    for (db, _guard) in databases() {
        let name = format!("{:?}", db.backend());
        let audit = AuditStore::open(&db).unwrap();
        let mut issued = event(5, "dave");
        issued.serial = Some("4242".into());
        audit.append(issued, None).await.unwrap();
        let a = RevocationStore::open(&db).unwrap();
        let b = RevocationStore::open(Db::new(target_of(&db))).unwrap();
        let now = 1_700_000_010;
        a.revoke(&Revoke::Serial(4242), Some("lost"), now, 3600)
            .unwrap();
        a.revoke(
            &Revoke::Subject {
                issuer: "https://idp.example".into(),
                subject: "dave".into(),
            },
            None,
            now,
            3600,
        )
        .unwrap();
        // Revoking again is idempotent.
        a.revoke(&Revoke::Serial(4242), None, now, 3600).unwrap();
        let snap = b.snapshot(now).unwrap();
        assert_eq!(snap.serials, [4242], "{name}");
        assert!(
            snap.subject_revoked("https://idp.example", "dave"),
            "{name}"
        );
        assert!(snap.version >= 2, "{name}");
        // The serial's entry ends with the certificate (issued at time 5 +
        // 600 s), the subject's never.
        let later = b.snapshot(1_700_000_005 + 600 + 3600).unwrap();
        assert!(later.serials.is_empty(), "{name}");
        assert!(
            later.subject_revoked("https://idp.example", "dave"),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_secrets_are_the_same_for_every_store() {
    for (db, _guard) in databases() {
        let name = format!("{:?}", db.backend());
        let a = AuditStore::open(&db).unwrap();
        let b = AuditStore::open(Db::new(target_of(&db))).unwrap();
        let first = a.shared_secret("host-challenge").unwrap();
        assert_eq!(b.shared_secret("host-challenge").unwrap(), first, "{name}");
        assert_ne!(a.shared_secret("other").unwrap(), first, "{name}");
        assert_ne!(first, [0; 32], "{name}");
    }
}

#[tokio::test]
async fn an_unreachable_postgres_is_unavailable_with_a_hint() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgresql://postgres@127.0.0.1:{port}/none");
    let db = Db::new(Target::postgres(&url, None).unwrap());
    assert_eq!(db.backend(), Backend::Postgres);
    let err = AuditStore::open(&db).unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("PostgreSQL is running"),
        "{msg}"
    );
    // A URL that is not one is refused with what to write instead.
    let err = Target::postgres("mysql://x", None).unwrap_err();
    assert!(err.to_string().contains("postgresql://"), "{err}");
}

/// The same target again, for a second independent handle (own pool).
/// One caller's failing state change (here a statement the database
/// refuses) rolls back alone: the appends and changes group-committed with
/// it succeed, the chain stays whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_state_change_fails_only_its_caller() {
    use ca_server::audit::TxOutcome;
    for (db, _guard) in databases() {
        let name = format!("{:?}", db.backend());
        let store = AuditStore::open(&db).unwrap();
        let mut appends = Vec::new();
        let mut bad = Vec::new();
        let mut good = Vec::new();
        for n in 0..300u64 {
            let s = store.clone();
            appends.push(tokio::spawn(async move {
                s.append(event(n, "alice"), None).await
            }));
            if n % 30 == 15 {
                let s = store.clone();
                bad.push(tokio::spawn(async move {
                    s.transact(move |c| {
                        c.execute("INSERT INTO no_such_table (x) VALUES (1)", &[])?;
                        Ok(TxOutcome {
                            events: vec![event(1_000 + n, "mallory")],
                            keep: true,
                            value: (),
                        })
                    })
                    .await
                }));
                let s = store.clone();
                good.push(tokio::spawn(async move {
                    s.transact(move |_| {
                        Ok(TxOutcome {
                            events: vec![event(2_000 + n, "bob")],
                            keep: true,
                            value: n,
                        })
                    })
                    .await
                }));
            }
        }
        for t in appends {
            t.await
                .unwrap()
                .unwrap_or_else(|e| panic!("{name}: an append failed: {e}"));
        }
        for t in good {
            t.await
                .unwrap()
                .unwrap_or_else(|e| panic!("{name}: a good change failed: {e}"));
        }
        for t in bad {
            assert!(
                t.await.unwrap().is_err(),
                "{name}: the failing change succeeded"
            );
        }
        let report = store.verify().unwrap();
        assert!(report.is_ok(), "{name}: {report:?}");
        assert_eq!(report.rows, 310, "{name}: 300 appends and 10 good changes");
        let mallory = Filter {
            subject: Some("mallory".into()),
            ..Filter::default()
        };
        assert!(store.list(&mallory).unwrap().is_empty(), "{name}");
    }
}

fn target_of(db: &Db) -> Target {
    db.target().clone()
}

// TLS to PostgreSQL, against a server that requires it on TCP
// (`common::pg::tls_cluster`) and one that does not speak it at all
// (`common::pg::cluster`). The settings travel as `[database] tls` and
// `ca_file` do: libpq's `sslmode` and `sslrootcert` in the url.

/// `url` with TLS `mode` and, if given, the CA file.
fn tls_url(url: &str, mode: TlsMode, ca_file: Option<&std::path::Path>) -> String {
    with_tls_params(url, Some(mode), ca_file.map(|p| p.to_str().unwrap()))
}

/// Whether this connection is encrypted, and with which TLS version.
fn ssl_of(db: &Db) -> (String, String) {
    let row = db
        .with(|c| {
            c.query_one(
                "SELECT ssl::text, coalesce(version, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
        })
        .unwrap();
    (row.text(0).unwrap(), row.text(1).unwrap())
}

#[tokio::test]
async fn postgres_tls_verify_full_with_the_right_ca_file_works() {
    let pg = common::pg::tls_cluster();
    let url = tls_url(
        &pg.fresh_database(),
        TlsMode::VerifyFull,
        Some(pg.ca_file()),
    );
    let db = Db::new(Target::postgres(&url, None).unwrap());
    assert_eq!(db.target().tls_mode(), Some(TlsMode::VerifyFull));
    let store = AuditStore::open(&db).unwrap();
    for n in 1..=3 {
        assert_eq!(store.append(event(n, "alice"), None).await.unwrap(), n);
    }
    let report = store.verify().unwrap();
    assert!(report.is_ok() && report.rows == 3, "{report:?}");
    let (ssl, version) = ssl_of(&db);
    assert_eq!(ssl, "true");
    assert!(version.starts_with("TLSv1."), "{version}");
    // The certificate also names `localhost` (a DNS name, where the url
    // above had an IP address).
    let by_name = url.replacen("@127.0.0.1:", "@localhost:", 1);
    assert_ne!(by_name, url);
    let db = Db::new(Target::postgres(&by_name, None).unwrap());
    assert_eq!(ssl_of(&db).0, "true");
}

#[tokio::test]
async fn postgres_tls_with_another_ca_is_unavailable_and_says_check_ca_file() {
    let pg = common::pg::tls_cluster();
    let url = tls_url(
        &pg.fresh_database(),
        TlsMode::VerifyFull,
        Some(pg.other_ca_file()),
    );
    let db = Db::new(Target::postgres(&url, None).unwrap());
    let err = AuditStore::open(&db).unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("[database] ca_file") && msg.contains("UnknownIssuer"),
        "{msg}"
    );
}

#[tokio::test]
async fn postgres_tls_refuses_a_certificate_for_another_name() {
    let pg = common::pg::tls_cluster();
    // Connect to 127.0.0.1 but expect the certificate of `db.example`.
    let url = pg
        .fresh_database()
        .replacen("@127.0.0.1:", "@db.example:", 1)
        + "?hostaddr=127.0.0.1";
    let url = tls_url(&url, TlsMode::VerifyFull, Some(pg.ca_file()));
    let db = Db::new(Target::postgres(&url, None).unwrap());
    let err = AuditStore::open(&db).unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("the server's certificate does not name db.example"),
        "{msg}"
    );
}

#[tokio::test]
async fn postgres_tls_disable_is_refused_by_a_server_that_requires_tls() {
    let pg = common::pg::tls_cluster();
    let url = tls_url(&pg.fresh_database(), TlsMode::Disable, None);
    let db = Db::new(Target::postgres(&url, None).unwrap());
    assert_eq!(db.target().tls_mode(), Some(TlsMode::Disable));
    let err = AuditStore::open(&db).unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("no encryption") && msg.contains("only over TLS"),
        "{msg}"
    );
    // And the same url without TLS settings (loopback: disable by default).
    let db = Db::new(Target::postgres(&pg.fresh_database(), None).unwrap());
    assert_eq!(db.target().tls_mode(), Some(TlsMode::Disable));
    assert!(AuditStore::open(&db).unwrap_err().is_unavailable());
}

#[tokio::test]
async fn postgres_tls_never_falls_back_to_plaintext() {
    // The plain cluster has no TLS at all: asked for, TLS fails the
    // connection instead of going on in clear.
    let plain = common::pg::cluster().fresh_database();
    let ca = common::pg::tls_cluster().ca_file();
    for (mode, ca) in [(TlsMode::VerifyFull, Some(ca)), (TlsMode::Require, None)] {
        let db = Db::new(Target::postgres(&tls_url(&plain, mode, ca), None).unwrap());
        let err = AuditStore::open(&db).unwrap_err();
        assert!(err.is_unavailable(), "{mode}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains("server does not support TLS")
                && msg.contains("does not accept TLS")
                && msg.contains("tls = \"disable\""),
            "{mode}: {msg}"
        );
        let err = db.with(|c| c.query_one("SELECT 1", &[])).unwrap_err();
        assert!(err.message.contains("does not accept TLS"), "{err}");
    }
}

#[tokio::test]
async fn postgres_tls_require_encrypts_without_checking_the_certificate() {
    let pg = common::pg::tls_cluster();
    let url = tls_url(&pg.fresh_database(), TlsMode::Require, None);
    let db = Db::new(Target::postgres(&url, None).unwrap());
    let store = AuditStore::open(&db).unwrap();
    store.append(event(1, "bob"), None).await.unwrap();
    assert!(store.verify().unwrap().is_ok());
    assert_eq!(ssl_of(&db).0, "true");
}

#[tokio::test]
async fn postgres_tls_scram_logins_use_channel_binding() {
    use common::pg::{SCRAM_PASSWORD, SCRAM_USER};
    let pg = common::pg::tls_cluster();
    // `channel_binding=require`: the login fails unless SCRAM-SHA-256-PLUS
    // ran and the server found the binding data equal to its own.
    let url = pg
        .fresh_database()
        .replacen("postgres@", &format!("{SCRAM_USER}@"), 1)
        + "?channel_binding=require";
    for (mode, ca) in [
        (TlsMode::VerifyFull, Some(pg.ca_file())),
        (TlsMode::Require, None),
    ] {
        let target = Target::postgres(&tls_url(&url, mode, ca), Some(SCRAM_PASSWORD)).unwrap();
        let db = Db::new(target);
        let row = db
            .with(|c| c.query_one("SELECT current_user::text", &[]))
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(row.text(0).unwrap(), SCRAM_USER);
        assert_eq!(ssl_of(&db).0, "true");
    }
}

#[tokio::test]
async fn postgres_tls_from_the_config_file() {
    use ca_server::config::Config;
    let pg = common::pg::tls_cluster();
    let dir = tempfile::tempdir().unwrap();
    // ca_file relative to the config file.
    std::fs::copy(pg.ca_file(), dir.path().join("db-ca.pem")).unwrap();
    let config = ca_server::config::template("https://idp.example.com", "jitssh").replacen(
        "path = \"audit.db\"\n",
        &format!(
            "url = \"{}\"\ntls = \"verify-full\"\nca_file = \"db-ca.pem\"\n",
            pg.fresh_database()
        ),
        1,
    );
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    let config = Config::load(&dir.path().join("config.toml")).unwrap();
    let db = config.database.open().unwrap();
    assert_eq!(db.target().tls_mode(), Some(TlsMode::VerifyFull));
    let store = AuditStore::open(&db).unwrap();
    store.append(event(1, "carol"), None).await.unwrap();
    assert_eq!(ssl_of(&db).0, "true");
    // The wrong CA through the config: unavailable, pointing at ca_file.
    std::fs::copy(pg.other_ca_file(), dir.path().join("db-ca.pem")).unwrap();
    let db = config.database.open().unwrap();
    let err = AuditStore::open(&db).unwrap_err();
    assert!(
        err.is_unavailable() && err.to_string().contains("ca_file"),
        "{err}"
    );
}

/// `verify` on a large PostgreSQL log finishes inside the 30 s statement
/// timeout every connection has: 100,000 rows and their principal rows
/// (written directly: the chain itself is nonsense, which `verify` must
/// report as a broken chain rather than fail to read), with a small
/// `work_mem` as on a log whose seqs no longer fit in it. Its
/// orphan-principal check once used `NOT IN (SELECT seq FROM audit)`, which
/// PostgreSQL then runs as a subplan per row: over a minute.
#[test]
fn verify_reads_a_large_log_on_postgres() {
    let url = common::pg::cluster().fresh_database();
    let db = Db::new(Target::postgres(&url, None).unwrap());
    AuditStore::open(&db).unwrap();
    db.with(|c| {
        c.batch(
            "INSERT INTO audit (seq, time, action, outcome, prev_hash, hash, event)
               SELECT g, 0, 'user_cert', 'issued', 'p', 'h', '{}' FROM generate_series(1, 100000) g;
             INSERT INTO audit_principals (seq, principal)
               SELECT g, 'u' FROM generate_series(1, 100000) g;
             ANALYZE audit; ANALYZE audit_principals;
             DO $$ BEGIN
               EXECUTE format('ALTER DATABASE %I SET work_mem = ''64kB''', current_database());
             END $$;",
        )
    })
    .unwrap();
    // New connections, which get the database's work_mem.
    let fresh = Db::new(Target::postgres(&url, None).unwrap());
    let started = std::time::Instant::now();
    let report = AuditStore::open_read_only(&fresh)
        .unwrap()
        .verify()
        .unwrap();
    assert!(report.error.is_some(), "{report:?}");
    assert_eq!(report.rows, 0);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}
