//! The throwaway PostgreSQL harness (`common::pg`) itself: one shared
//! cluster, fresh databases that are distinct and empty, reachable by their
//! URLs with the `postgres` client, also from async tests.

mod common;

use common::pg;
use postgres::{Client, NoTls};

fn client(url: &str) -> Client {
    Client::connect(url, NoTls).unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

fn user_tables(client: &mut Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
            &[],
        )
        .expect("counting user tables")
        .get(0)
}

fn has_table(client: &mut Client, name: &str) -> bool {
    client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .expect("looking up a table")
        .get(0)
}

#[test]
fn fresh_databases_are_distinct_and_empty() {
    let cluster = pg::cluster();
    let a = cluster.fresh_database();
    let b = cluster.fresh_database();
    assert_ne!(a, b);
    let prefix = format!("postgresql://postgres@127.0.0.1:{}/", cluster.port());
    assert!(a.starts_with(&prefix), "{a}");

    let mut a_client = client(&a);
    let mut b_client = client(&b);
    let name: String = a_client
        .query_one("SELECT current_database()", &[])
        .expect("asking the database name")
        .get(0);
    assert_eq!(a.strip_prefix(&prefix), Some(name.as_str()));
    assert_eq!(user_tables(&mut a_client), 0);
    assert_eq!(user_tables(&mut b_client), 0);

    a_client
        .batch_execute("CREATE TABLE marker (x int); INSERT INTO marker VALUES (1)")
        .expect("creating a table");
    assert!(has_table(&mut a_client, "marker"));
    assert!(!has_table(&mut b_client, "marker"));
    assert_eq!(user_tables(&mut b_client), 0);
}

#[test]
fn concurrent_tests_share_one_cluster() {
    let urls: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| pg::cluster().fresh_database()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a database-creating thread panicked"))
            .collect()
    });
    let mut unique = urls.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), urls.len(), "{urls:?}");
    let port = format!(":{}/", pg::cluster().port());
    assert!(urls.iter().all(|url| url.contains(&port)), "{urls:?}");

    let mut admin = client(&pg::cluster().admin_url());
    let max: String = admin
        .query_one("SHOW max_connections", &[])
        .expect("reading max_connections")
        .get(0);
    assert_eq!(max, "200");
}

/// The blocking client runs its own runtime, so the harness must keep it off
/// the test's Tokio thread.
#[tokio::test]
async fn usable_from_async_tests() {
    let url = pg::cluster().fresh_database();
    assert!(url.contains("/jitssh_t"), "{url}");
}
