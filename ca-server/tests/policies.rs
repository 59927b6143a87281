//! The shipped policy and the policy engine, from the outside: the Rego tests
//! in `policies/` pass, broken policies are refused at load and at reload,
//! and a decision for a real `PolicyInput` survives ca-core's `enforce`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ca_core::identity::{IdentityKind, VerifiedIdentity};
use ca_core::policy::{Limits, PolicyInput, enforce};
use ca_core::wire::UserCertRequest;
use ca_core::{CertRequest, Ttl};
use ca_server::policy::{self, PolicyEngine, PolicyError, ReloadOutcome};
use serde_json::json;

const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// A temporary copy of the shipped policy set, to break.
fn copy_of_shipped() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(shipped_dir()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    dir
}

/// A person as the server sees them: with a username, from an issuer trusted
/// for `preferred_username`; without, from one whose login names are the
/// local parts of verified emails in example.com.
fn identity(username: Option<&str>, email: Option<&str>, groups: &[&str]) -> VerifiedIdentity {
    let mut claims = serde_json::Map::new();
    if let Some(u) = username {
        claims.insert("preferred_username".into(), json!(u));
    }
    let rule = match username {
        Some(_) => ca_core::LoginRule::claim("preferred_username"),
        None => ca_core::LoginRule::new(Some("email"), &["example.com".into()]).unwrap(),
    };
    let (login, login_problem) = match rule.derive(&claims, email) {
        Ok(l) => (Some(l), None),
        Err(e) => (None, Some(e.to_string())),
    };
    VerifiedIdentity {
        login,
        login_problem,
        kind: IdentityKind::Human,
        issuer: "https://idp.example.com".into(),
        subject: "00u1a2b3c4".into(),
        email: email.map(str::to_owned),
        email_verified: email.is_some(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        claims,
    }
}

fn request(principals: Option<&[&str]>, ttl: Option<u64>) -> CertRequest {
    CertRequest::parse(&UserCertRequest {
        public_key: ED.into(),
        principals: principals.map(|p| p.iter().map(|s| s.to_string()).collect()),
        ttl_seconds: ttl,
        reason: Some("deploy hotfix".into()),
    })
    .unwrap()
}

/// The input exactly as the server builds it.
fn input(id: &VerifiedIdentity, req: &CertRequest) -> serde_json::Value {
    serde_json::to_value(PolicyInput::user_cert(
        id,
        req,
        "192.0.2.10".into(),
        1_767_225_600,
    ))
    .unwrap()
}

fn granted(engine: &PolicyEngine, id: &VerifiedIdentity, req: &CertRequest) -> (Vec<String>, u64) {
    let eval = engine.evaluate(&input(id, req)).unwrap();
    let limits = Limits::new(Ttl::from_secs(3600).unwrap());
    let grant = enforce(eval.decision.as_ref(), req, &limits)
        .unwrap_or_else(|r| panic!("refused: {r}; decision {:?}", eval.decision));
    (
        grant.principals().iter().map(|p| p.to_string()).collect(),
        grant.ttl().as_secs(),
    )
}

#[test]
fn shipped_policy_tests_pass() {
    let report = policy::run_tests(&shipped_dir()).unwrap();
    println!("{report}");
    assert_eq!(report.failed(), 0, "{report}");
    assert!(report.passed() >= 30, "only {} tests ran", report.passed());
    assert!(
        report
            .results
            .iter()
            .any(|r| r.name == "data.jitssh.test_alice_gets_username")
    );
}

#[test]
fn embedded_default_is_the_shipped_directory() {
    let embedded = PolicyEngine::load_embedded_default().unwrap();
    let dir = PolicyEngine::load_dir(&shipped_dir()).unwrap();
    assert_eq!(embedded.policy_hash(), dir.policy_hash());
    assert_eq!(
        policy::run_embedded_tests().unwrap(),
        policy::run_tests(&shipped_dir()).unwrap()
    );
}

#[test]
fn decisions_for_real_inputs_survive_enforce() {
    let engine = PolicyEngine::load_dir(&shipped_dir()).unwrap();
    assert_eq!(engine.source_dir(), Some(shipped_dir().as_path()));

    let alice = identity(Some("alice"), Some("alice@example.com"), &["sre"]);
    assert_eq!(
        granted(&engine, &alice, &request(None, None)),
        (vec!["alice".into(), "deploy".into(), "web".into()], 900)
    );
    assert_eq!(
        granted(&engine, &alice, &request(Some(&["web", "db"]), Some(7200))),
        (vec!["web".into()], 3600)
    );

    let bob = identity(None, Some("Bob@Example.com"), &[]);
    assert_eq!(
        granted(&engine, &bob, &request(None, Some(60))),
        (vec!["bob".into()], 60)
    );

    // An email outside the issuer's domains names nobody: the server's
    // reason reaches the caller.
    let foreign = identity(None, Some("bob@anything.example"), &["sre"]);
    let eval = engine
        .evaluate(&input(&foreign, &request(None, None)))
        .unwrap();
    let limits = Limits::new(Ttl::from_secs(3600).unwrap());
    let refusal = enforce(eval.decision.as_ref(), &request(None, None), &limits).unwrap_err();
    assert!(
        refusal.to_string().contains("no personal login name")
            && refusal.to_string().contains("email_domains"),
        "{refusal}"
    );

    // Denials carry the policy's reasons through enforce.
    let root = identity(Some("root"), None, &["sre"]);
    let eval = engine
        .evaluate(&input(&root, &request(None, None)))
        .unwrap();
    let limits = Limits::new(Ttl::from_secs(3600).unwrap());
    let refusal = enforce(eval.decision.as_ref(), &request(None, None), &limits).unwrap_err();
    assert!(refusal.to_string().contains("reserved"), "{refusal}");

    let mut workload = identity(Some("ci"), None, &[]);
    workload.kind = IdentityKind::Workload;
    let eval = engine
        .evaluate(&input(&workload, &request(None, None)))
        .unwrap();
    let d = eval.decision.unwrap();
    assert_eq!(d["allow"], json!(false));
    let reasons = d["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 1, "{d}");
    assert!(
        reasons[0]
            .as_str()
            .unwrap()
            .contains("no workload binding matches"),
        "{d}"
    );
    assert_eq!(eval.policy_hash, engine.policy_hash());
}

#[test]
fn the_example_input_in_the_readme_directory_is_allowed() {
    let engine = PolicyEngine::load_dir(&shipped_dir()).unwrap();
    let text = std::fs::read_to_string(shipped_dir().join("example-input.json")).unwrap();
    let d = engine
        .evaluate(&serde_json::from_str(&text).unwrap())
        .unwrap()
        .decision
        .unwrap();
    assert_eq!(d["allow"], json!(true), "{d}");
    assert_eq!(d["principals"], json!(["alice", "deploy", "web"]));
    assert_eq!(d["ttl_seconds"], json!(1800));
}

#[test]
fn load_refuses_a_syntax_error() {
    let dir = copy_of_shipped();
    std::fs::write(
        dir.path().join("extra.rego"),
        "package jitssh\n\nbroken := {\n",
    )
    .unwrap();
    let err = PolicyEngine::load_dir(dir.path()).unwrap_err();
    assert!(matches!(err, PolicyError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("extra.rego"), "{err}");
    // `policy test` reports the same error rather than a test list.
    assert!(policy::run_tests(dir.path()).is_err());
}

#[test]
fn load_refuses_a_failing_test() {
    let dir = copy_of_shipped();
    std::fs::write(
        dir.path().join("extra_test.rego"),
        "package jitssh\n\ntest_root_is_allowed if {\n\td := decision with input as user(\"root\", [])\n\td.allow == true\n}\n",
    )
    .unwrap();
    let err = PolicyEngine::load_dir(dir.path()).unwrap_err();
    assert!(
        matches!(err, PolicyError::TestsFailed { failed: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("test_root_is_allowed"), "{err}");

    let report = policy::run_tests(dir.path()).unwrap();
    assert_eq!(report.failed(), 1);
    let failure = report.results.iter().find(|r| !r.passed).unwrap();
    assert_eq!(failure.name, "data.jitssh.test_root_is_allowed");
}

#[test]
fn load_refuses_a_policy_loosened_in_data_that_its_tests_catch() {
    // data.json is part of the policy: its own tests guard it.
    let dir = copy_of_shipped();
    let path = dir.path().join("data.json");
    let mut data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    data["jitssh_config"]["group_principals"]["sre"] = json!(["web", "bad,principal"]);
    std::fs::write(&path, data.to_string()).unwrap();
    let err = PolicyEngine::load_dir(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("test_data_group_principals"),
        "{err}"
    );
}

#[test]
fn reload_keeps_the_old_policy_when_the_new_one_is_broken() {
    let dir = copy_of_shipped();
    let engine = PolicyEngine::load_dir(dir.path()).unwrap();
    let original = engine.policy_hash();
    let alice = identity(Some("alice"), None, &["dba", "dbadmins"]);
    let req = request(None, None);

    assert_eq!(
        engine.reload().unwrap(),
        ReloadOutcome::Unchanged {
            policy_hash: original.clone()
        }
    );

    // A syntax error: refused, the old policy keeps deciding.
    let rego = dir.path().join("jitssh.rego");
    let good = std::fs::read_to_string(&rego).unwrap();
    std::fs::write(&rego, format!("{good}\nthis is not rego\n")).unwrap();
    let err = engine.reload().unwrap_err();
    assert!(err.to_string().contains("jitssh.rego"), "{err}");
    assert_eq!(engine.policy_hash(), original);
    assert_eq!(granted(&engine, &alice, &req).0, ["alice", "db"]);

    // Compiles, but its tests fail (they expect the sre group): refused too.
    std::fs::write(&rego, &good).unwrap();
    let data = dir.path().join("data.json");
    let good_data = std::fs::read_to_string(&data).unwrap();
    std::fs::write(&data, good_data.replace("\"sre\"", "\"ops\"")).unwrap();
    let err = engine.reload().unwrap_err();
    assert!(matches!(err, PolicyError::TestsFailed { .. }), "{err}");
    assert_eq!(engine.policy_hash(), original);

    // A good change serves.
    let new_data = good_data.replace(
        "\"group_principals\": {",
        "\"group_principals\": {\"dbadmins\": [\"db-replica\"],",
    );
    std::fs::write(&data, &new_data).unwrap();
    let outcome = engine.reload().unwrap();
    let ReloadOutcome::Reloaded {
        previous_hash,
        policy_hash,
        tests_passed,
    } = outcome
    else {
        panic!("expected a reload, got {outcome:?}");
    };
    assert_eq!(previous_hash, original);
    assert_eq!(policy_hash, engine.policy_hash());
    assert_ne!(policy_hash, original);
    assert!(tests_passed >= 30);
    assert_eq!(
        granted(&engine, &alice, &req).0,
        ["alice", "db", "db-replica"]
    );

    // A vanished directory is refused as well.
    let path = dir.path().to_path_buf();
    drop(dir);
    assert!(matches!(
        engine.reload().unwrap_err(),
        PolicyError::ReadDir { .. }
    ));
    assert_eq!(engine.policy_hash(), policy_hash);
    assert!(!path.exists());
}

#[test]
fn evaluation_continues_while_reloading() {
    let dir = copy_of_shipped();
    let engine = Arc::new(PolicyEngine::load_dir(dir.path()).unwrap());
    let alice = identity(Some("alice"), None, &["sre"]);
    let value = input(&alice, &request(None, None));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let engine = Arc::clone(&engine);
            let value = value.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let d = engine.evaluate(&value).unwrap().decision.unwrap();
                    assert_eq!(d["allow"], json!(true));
                }
            })
        })
        .collect();
    let data = dir.path().join("data.json");
    let good = std::fs::read_to_string(&data).unwrap();
    for i in 0..3 {
        let changed = good.replace(
            "\"group_principals\": {",
            &format!("\"group_principals\": {{\"extra{i}\": [\"x{i}\"],"),
        );
        std::fs::write(&data, changed).unwrap();
        engine.reload().unwrap();
    }
    for w in workers {
        w.join().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_reloads_on_change_and_refuses_broken_changes() {
    let dir = copy_of_shipped();
    let engine = Arc::new(PolicyEngine::load_dir(dir.path()).unwrap());
    let original = engine.policy_hash();
    let watcher = Arc::clone(&engine).spawn_watcher(Duration::from_millis(20));

    // Broken: refused, the old policy keeps serving.
    let rego = dir.path().join("jitssh.rego");
    let good = std::fs::read_to_string(&rego).unwrap();
    std::fs::write(&rego, format!("{good}\nnot rego at all\n")).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(engine.policy_hash(), original);

    // Fixed, with a real change: served.
    std::fs::write(&rego, format!("{good}\n# reviewed\n")).unwrap();
    let start = Instant::now();
    while engine.policy_hash() == original {
        assert!(start.elapsed() < Duration::from_secs(20), "no reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let alice = identity(Some("alice"), None, &[]);
    assert_eq!(granted(&engine, &alice, &request(None, None)).0, ["alice"]);

    watcher.abort();
}

#[test]
fn embedded_engine_has_no_directory_and_never_reloads() {
    let engine = Arc::new(PolicyEngine::load_embedded_default().unwrap());
    assert!(engine.source_dir().is_none());
    assert!(matches!(
        engine.reload().unwrap(),
        ReloadOutcome::Unchanged { .. }
    ));
}

/// Rough per-decision cost. Meaningful in release builds:
/// `cargo test --release -p ca-server --test policies -- --ignored --nocapture`
#[test]
#[ignore = "benchmark"]
fn evaluate_cost() {
    let engine = PolicyEngine::load_dir(&shipped_dir()).unwrap();
    let alice = identity(Some("alice"), Some("alice@example.com"), &["sre", "dba"]);
    let value = input(&alice, &request(Some(&["web", "db"]), Some(600)));
    for _ in 0..1000 {
        engine.evaluate(&value).unwrap();
    }
    let n = 20_000u32;
    let start = Instant::now();
    for _ in 0..n {
        engine.evaluate(&value).unwrap();
    }
    println!("evaluate: {:?} per decision", start.elapsed() / n);
}
