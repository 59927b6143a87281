//! Several `jitssh-ca serve` replicas on one real PostgreSQL database behave
//! as one CA: requests spread across them concurrently get unique serials,
//! one audit chain that verifies and one `issued` row per certificate; a
//! token spent on one replica is refused by the others; an approval given on
//! one replica counts on another at once; a host join token and a renewal
//! challenge work across replicas and are spent once; killing a replica in
//! the middle of a load loses nothing that was answered.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jitssh_e2e::*;
use serde_json::{Value, json};

#[allow(dead_code)]
#[path = "../ca-server/tests/common/pg.rs"]
pub(crate) mod pg;

const AUD: &str = "jitssh-replicas";

/// One `jitssh-ca serve` on the shared config, keys and database.
struct Replica {
    url: String,
    child: Child,
}

impl Replica {
    fn start(config: &Path) -> Replica {
        let (url, child) = spawn_serve(config);
        Replica { url, child }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A CA initialised once (keys, policy), its `[database]` pointed at a fresh
/// PostgreSQL database, and `n` replicas serving it.
struct Cluster {
    dir: tempfile::TempDir,
    url: String,
    replicas: Vec<Replica>,
}

impl Cluster {
    fn start(issuer: &str, n: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        run_ok(
            Command::new(bin("jitssh-ca"))
                .args(["init", "--dir"])
                .arg(dir.path())
                .args(["--issuer", issuer, "--audience", AUD])
                .args(["--login-claim", "preferred_username"]),
        );
        let url = pg::cluster().fresh_database();
        let config = dir.path().join("config.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        let edited = text.replace("path = \"audit.db\"", &format!("url = \"{url}\""));
        assert_ne!(text, edited, "init's config has no [database] path line");
        // Load from one identity: no per-identity rate limit (it is per
        // replica, in memory; see docs).
        let edited = edited.replace(
            "per_identity_per_minute = ",
            "per_identity_per_minute = 0 #",
        );
        assert!(edited.contains("per_identity_per_minute = 0"), "{edited}");
        std::fs::write(&config, edited).unwrap();
        // The SQLite file `init` made is not used: remove it, so a replica
        // that wrongly used it would fail loudly.
        let _ = std::fs::remove_file(dir.path().join("audit.db"));
        let replicas = (0..n).map(|_| Replica::start(&config)).collect();
        Cluster { dir, url, replicas }
    }

    fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("config.toml")
    }

    /// `SELECT serial FROM audit WHERE outcome = 'issued' AND action = 'user_cert'`.
    fn issued_serials(&self) -> Vec<String> {
        let url = self.url.clone();
        // The sync client must not run on a thread that drives async tasks;
        // tests are plain threads, but keep it on its own to be safe.
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.query(
                "SELECT serial FROM audit WHERE action = 'user_cert' AND outcome = 'issued'",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect()
        })
        .join()
        .unwrap()
    }

    /// `jitssh-ca audit verify` through the config (reads PostgreSQL).
    fn verify(&self) -> String {
        let out = run_ok(
            Command::new(bin("jitssh-ca"))
                .args(["audit", "--config"])
                .arg(self.config())
                .arg("verify"),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn cert_request(url: &str, token: &str) -> Result<(u16, Value), reqwest::Error> {
    let key =
        ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
    let resp = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?
        .post(format!("{url}/v1/certs/user"))
        .bearer_auth(token)
        .json(&json!({"public_key": key.public_key().to_openssh().unwrap()}))
        .send()?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().unwrap_or(Value::Null)))
}

fn post_anon(url: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::blocking::Client::new()
        .post(url)
        .json(&body)
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

fn post(url: &str, token: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::blocking::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

#[test]
fn replicas_on_postgres_are_one_ca() {
    require_e2e();
    let users = vec![
        user("rita", &["dev"]),
        user("dana", &["dba"]),
        user("lee", &["dba-leads"]),
    ];
    let issuer = Issuer::start(AUD, users.clone());
    let cluster = Cluster::start(&issuer.url, 3);
    let urls: Vec<String> = cluster.replicas.iter().map(|r| r.url.clone()).collect();

    // 1. Requests spread across the replicas at once.
    let per_thread = 15;
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let urls = urls.clone();
            let tokens: Vec<String> = (0..per_thread).map(|_| issuer.token(&users[0])).collect();
            std::thread::spawn(move || {
                tokens
                    .iter()
                    .enumerate()
                    .map(|(i, tok)| {
                        let (status, body) =
                            cert_request(&urls[(t + i) % urls.len()], tok).unwrap();
                        assert_eq!(status, 200, "{body}");
                        body["serial"].as_str().unwrap().to_owned()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let serials: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(serials.len(), 6 * per_thread);
    let unique: HashSet<_> = serials.iter().collect();
    assert_eq!(
        unique.len(),
        serials.len(),
        "serials must be unique across replicas"
    );

    // 2. A token spent on one replica is refused by every other.
    let token = issuer.token(&users[0]);
    assert_eq!(cert_request(&urls[0], &token).unwrap().0, 200);
    for url in &urls[1..] {
        let (status, body) = cert_request(url, &token).unwrap();
        assert_eq!(status, 401, "replay on another replica: {body}");
        assert_eq!(body["error"]["code"], "token_replayed", "{body}");
    }

    // 3. An approval given on one replica counts on another at once.
    let dana = &users[1];
    let (status, body) = post(
        &format!("{}/v1/elevations", urls[0]),
        &issuer.token(dana),
        json!({"role": "db-admin", "reason": "migrate the orders table"}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["state"], "pending", "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let (status, body) = cert_request(&urls[2], &issuer.token(dana)).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        !body["principals"].to_string().contains("\"postgres\""),
        "no role principal before approval: {body}"
    );
    let (status, body) = post(
        &format!("{}/v1/elevations/{id}/approve", urls[1]),
        &issuer.token(&users[2]),
        json!({"comment": "ok"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "approved", "{body}");
    let (status, body) = cert_request(&urls[2], &issuer.token(dana)).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body["principals"].to_string().contains("\"postgres\""),
        "approved on replica 1, issued on replica 2 right away: {body}"
    );

    // 4. Hosts: a join token made by the CLI, enrolment on one replica, a
    // renewal challenge from another answered at a third, and the same
    // challenge refused everywhere afterwards.
    let out = run_ok(
        Command::new(bin("jitssh-ca"))
            .args(["host", "token", "create", "--config"])
            .arg(cluster.config())
            .args(["--hostname", "web1.example.com"]),
    );
    let join = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let host =
        ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
    let public = host.public_key().to_openssh().unwrap();
    let (status, body) = post_anon(
        &format!("{}/v1/certs/host", urls[0]),
        json!({"token": join, "public_key": public}),
    );
    assert_eq!(status, 200, "{body}");
    let host_cert = body["certificate"].as_str().unwrap().to_owned();
    let (status, body) = post_anon(
        &format!("{}/v1/certs/host", urls[1]),
        json!({"token": join, "public_key": public}),
    );
    assert_eq!(status, 401, "join token spent on another replica: {body}");
    let (status, body) = post_anon(&format!("{}/v1/certs/host/challenge", urls[1]), json!({}));
    assert_eq!(status, 200, "{body}");
    let challenge = body["challenge"].as_str().unwrap().to_owned();
    let signature = host
        .sign(
            ca_core::host::RENEW_NAMESPACE,
            ssh_key::HashAlg::Sha512,
            challenge.as_bytes(),
        )
        .unwrap()
        .to_pem(ssh_key::LineEnding::LF)
        .unwrap();
    let renew = json!({"certificate": host_cert, "challenge": challenge, "signature": signature});
    let (status, body) = post_anon(&format!("{}/v1/certs/host/renew", urls[2]), renew.clone());
    assert_eq!(
        status, 200,
        "challenge from replica 1 renewed at replica 2: {body}"
    );
    for url in &urls {
        let (status, body) = post_anon(&format!("{url}/v1/certs/host/renew"), renew.clone());
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["code"], "challenge_invalid", "{body}");
    }

    // 5. One chain, one issued row per certificate.
    let issued = cluster.issued_serials();
    let issued_set: HashSet<_> = issued.iter().collect();
    assert_eq!(
        issued.len(),
        issued_set.len(),
        "duplicate serials in the audit log"
    );
    for s in &serials {
        assert!(issued_set.contains(s), "certificate {s} has no issued row");
    }
    assert_eq!(issued.len(), serials.len() + 3, "rows: {}", issued.len());
    let report = cluster.verify();
    assert!(report.starts_with("ok: "), "{report}");
}

#[test]
fn killing_a_replica_mid_load_loses_nothing() {
    require_e2e();
    let rita = user("rita", &["dev"]);
    let issuer = Arc::new(Issuer::start(AUD, vec![rita.clone()]));
    let mut cluster = Cluster::start(&issuer.url, 3);
    let urls: Arc<Vec<String>> = Arc::new(cluster.replicas.iter().map(|r| r.url.clone()).collect());
    let answered = Arc::new(AtomicUsize::new(0));
    let total = 240;
    let clients: Vec<_> = (0..8)
        .map(|t| {
            let (urls, answered, issuer, rita) =
                (urls.clone(), answered.clone(), issuer.clone(), rita.clone());
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut failures = 0;
                let mut i = t;
                while got.len() < total / 8 {
                    i += 1;
                    // A fresh token per attempt: a request cut off by the
                    // kill may or may not have spent its token.
                    let token = issuer.token(&rita);
                    match cert_request(&urls[i % urls.len()], &token) {
                        Ok((200, body)) => {
                            got.push(body["serial"].as_str().unwrap().to_owned());
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        // The killed replica: connection refused or reset.
                        Err(_) => failures += 1,
                        Ok((status, body)) => panic!("HTTP {status}: {body}"),
                    }
                }
                (got, failures)
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while answered.load(Ordering::Relaxed) < total / 3 {
        assert!(
            std::time::Instant::now() < deadline && clients.iter().all(|c| !c.is_finished()),
            "the load did not get going"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    cluster.replicas[1].kill();
    let mut serials = Vec::new();
    let mut failures = 0;
    for c in clients {
        let (got, failed) = c.join().unwrap();
        serials.extend(got);
        failures += failed;
    }
    assert_eq!(serials.len(), total);
    assert!(failures > 0, "the kill should have cut some requests off");
    let issued = cluster.issued_serials();
    let issued_set: HashSet<_> = issued.iter().collect();
    assert_eq!(issued.len(), issued_set.len(), "duplicate serials");
    for s in &serials {
        assert!(
            issued_set.contains(s),
            "answered certificate {s} has no row"
        );
    }
    // Rows without an answer are only those cut off in flight.
    assert!(
        issued.len() <= serials.len() + 8,
        "{} rows for {} answers",
        issued.len(),
        serials.len()
    );
    let report = cluster.verify();
    assert!(report.starts_with("ok: "), "{report}");
    // The survivors still serve.
    assert_eq!(cert_request(&urls[0], &issuer.token(&rita)).unwrap().0, 200);
}

/// A CA that ran on its SQLite file moves to replicas: stop it, `jitssh-ca
/// db migrate` into an empty PostgreSQL database, start replicas on it. The
/// chain verifies and keeps growing, a token spent before the move is
/// refused after it, new serials are above the old ones, and the migration
/// refuses to run a second time into the same database.
#[test]
fn an_sqlite_ca_migrates_to_replicas() {
    require_e2e();
    let users = vec![user("mia", &["dev"])];
    let issuer = Issuer::start(AUD, users.clone());
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        Command::new(bin("jitssh-ca"))
            .args(["init", "--dir"])
            .arg(dir.path())
            .args(["--issuer", &issuer.url, "--audience", AUD])
            .args(["--login-claim", "preferred_username"]),
    );
    let sqlite_config = dir.path().join("config.toml");
    let spent = issuer.token(&users[0]);
    let mut old_serials = Vec::new();
    {
        let single = Replica::start(&sqlite_config);
        for token in [
            spent.clone(),
            issuer.token(&users[0]),
            issuer.token(&users[0]),
        ] {
            let (status, body) = cert_request(&single.url, &token).unwrap();
            assert_eq!(status, 200, "{body}");
            old_serials.push(body["serial"].as_str().unwrap().parse::<u64>().unwrap());
        }
    } // stopped

    let url = pg::cluster().fresh_database();
    let pg_config = dir.path().join("config-pg.toml");
    let text = std::fs::read_to_string(&sqlite_config).unwrap();
    let edited = text.replace("path = \"audit.db\"", &format!("url = \"{url}\""));
    assert_ne!(text, edited);
    std::fs::write(&pg_config, edited).unwrap();
    let migrate = || {
        Command::new(bin("jitssh-ca"))
            .args(["db", "migrate", "--config"])
            .arg(&pg_config)
            .arg("--from")
            .arg(dir.path().join("audit.db"))
            .output()
            .unwrap()
    };
    let out = migrate();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("audit chain verified there"), "{stdout}");

    let replicas: Vec<Replica> = (0..2).map(|_| Replica::start(&pg_config)).collect();
    let (status, body) = cert_request(&replicas[1].url, &spent).unwrap();
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "token_replayed", "{body}");
    let (status, body) = cert_request(&replicas[0].url, &issuer.token(&users[0])).unwrap();
    assert_eq!(status, 200, "{body}");
    let new_serial: u64 = body["serial"].as_str().unwrap().parse().unwrap();
    assert!(
        old_serials.iter().all(|s| *s < new_serial),
        "{new_serial} above {old_serials:?}"
    );
    let verified = run_ok(
        Command::new(bin("jitssh-ca"))
            .args(["audit", "--config"])
            .arg(&pg_config)
            .arg("verify"),
    );
    assert!(verified.status.success());

    let again = migrate();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds data"),
        "{again:?}"
    );
}
