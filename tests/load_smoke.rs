//! The load tool works: a tiny in-process run and a tiny open-loop run
//! against a real `jitssh-ca serve` report no errors, one issued audit row
//! per certificate and a verified chain. Performance itself is measured with
//! the tool, never asserted by tests (docs/performance.md).

use std::path::Path;
use std::process::Command;

use jitssh_e2e::*;
use serde_json::{Value, json};

/// Run `jitssh-load ARGS --json FILE` and return the parsed results.
fn run_load(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.json");
    let out = Command::new(env!("CARGO_BIN_EXE_jitssh-load"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "jitssh-load failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("certificates/s"), "{stdout}");
    assert!(stdout.contains("=> OK"), "{stdout}");
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}

fn assert_clean(r: &Value, requests: u64, warmup: u64) {
    assert_eq!(r["requests"], requests, "{r:#}");
    assert_eq!(r["issued"], requests, "{r:#}");
    assert_eq!(r["errors"], json!({}), "{r:#}");
    let audit = &r["audit"];
    assert_eq!(audit["certificates"], requests + warmup, "{r:#}");
    assert_eq!(audit["issued_rows"], audit["certificates"], "{r:#}");
    assert_eq!(audit["unknown_serials"], 0, "{r:#}");
    assert_eq!(audit["missing_rows"], 0, "{r:#}");
    assert_eq!(audit["chain_ok"], true, "{r:#}");
    assert!(audit["chain_rows"].as_u64().unwrap() >= requests + warmup);
    assert!(r["raw_sign_per_sec"].as_f64().unwrap() > 0.0);
    let ms = |k: &str| r["latency_ms"][k].as_f64().unwrap();
    assert!(0.0 < ms("p50") && ms("p50") <= ms("p99") && ms("p99") <= ms("max"));
}

#[test]
fn load_tool_in_process() {
    let r = run_load(&["--requests", "50", "--concurrency", "8", "--warmup", "5"]);
    assert_clean(&r, 50, 5);
    assert_eq!(r["target"], "in-process");
    assert_eq!(r["audit"]["verified_by"], "AuditStore::verify");
    // Closed loop: nothing is paced.
    assert_eq!(r["pacing_lag_ms"], Value::Null, "{r:#}");
}

#[test]
fn load_tool_in_process_on_postgres() {
    let url = crate::replicas::pg::cluster().fresh_database();
    let r = run_load(&[
        "--requests",
        "50",
        "--concurrency",
        "8",
        "--warmup",
        "5",
        "--database-url",
        &url,
    ]);
    assert_clean(&r, 50, 5);
    assert_eq!(r["audit"]["verified_by"], "AuditStore::verify");
}

#[test]
fn load_tool_against_a_served_ca() {
    // The CA trusts the issuer the load tool will serve on this port.
    let idp = format!("127.0.0.1:{}", free_port());
    let ca = CaServer::start(&format!("http://{idp}"), "jitssh-load");
    let db = ca.dir.path().join("audit.db");
    let ca_bin = bin("jitssh-ca");
    let r = run_load(&[
        "--url",
        &ca.url,
        "--idp-listen",
        &idp,
        "--db",
        path(&db),
        "--ca-bin",
        path(&ca_bin),
        "--rate",
        "200",
        "--requests",
        "50",
        "--warmup",
        "5",
        "--alg",
        "rs256",
    ]);
    assert_clean(&r, 50, 5);
    assert_eq!(r["mode"], "open");
    // Paced, not sent at once: request 49 is due 245 ms after the first.
    assert!(r["seconds"].as_f64().unwrap() >= 0.245, "{r:#}");
    let lag = |k: &str| r["pacing_lag_ms"][k].as_f64().unwrap();
    assert!(0.0 <= lag("p50") && lag("p50") <= lag("p99") && lag("p99") <= lag("max"));
    let by = r["audit"]["verified_by"].as_str().unwrap();
    assert!(by.contains("audit --db") && by.ends_with("verify"), "{by}");
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}
