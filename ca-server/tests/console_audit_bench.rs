//! Benchmark, not a timed test: the console's Audit pages rendered
//! server-side (session, rights, query, template; the router in-process)
//! over 1,000,000 audit rows on SQLite. Prints the median and the slowest
//! of a few runs of each page; the numbers live in docs/performance.md.
//!
//! ```text
//! cargo test --release -p ca-server --test console_audit_bench -- --ignored --nocapture
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use ca_core::audit::{AuditEvent, chain_hash};
use ca_server::dev::idp::DevUser;
use ca_server::policy::PolicyEngine;
use common::ui::{send, sign_in_as, with_session};
use common::{build, now};

const ROWS: u64 = 1_000_000;
/// The rows span this many days, newest now.
const DAYS: u64 = 90;
const RUNS: usize = 15;

/// Row `n` of a log shaped like a busy CA's: mostly certificates, some
/// refusals (a few codes), elevations over a handful of roles, people
/// unevenly active (a few are most of the traffic).
fn event(n: u64, time: u64, rng: &mut u64) -> AuditEvent {
    let mut next = || {
        // xorshift64: reproducible, no dependency.
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    let kind = next() % 100;
    let action = match kind {
        0..85 => "user_cert",
        85..90 => "host_cert",
        90..97 => "elevation_request",
        97..99 => "elevation_approve",
        _ => "revoke",
    };
    let out = next() % 100;
    let outcome = match out {
        0..90 => "issued",
        90..98 => "denied",
        _ => "failed",
    };
    let code = match (outcome, next() % 10) {
        ("issued", _) => None,
        (_, 0..5) => Some("policy_denied"),
        (_, 5..8) => Some("rate_limited"),
        _ => Some("token_expired"),
    };
    // Squared uniform: low user numbers are far more active.
    let u = next() % 1_000;
    let who = u * u / 500;
    let role = [
        "db-admin",
        "prod-root",
        "k8s-admin",
        "billing",
        "support",
        "oncall",
    ][usize::try_from(next() % 6).unwrap()];
    AuditEvent {
        time,
        action: action.into(),
        outcome: outcome.into(),
        code: code.map(Into::into),
        issuer: Some("https://idp.example.com".into()),
        subject: Some(format!("user-{who}")),
        email: Some(format!("user{who}@example.com")),
        source_ip: Some(format!("10.0.{}.{}", who % 250, n % 250)),
        requested_principals: Some(vec![format!("u{who}")]),
        granted_principals: if outcome == "issued" {
            vec![format!("u{who}"), "deploy".into()]
        } else {
            vec![]
        },
        ttl_seconds: (outcome == "issued").then_some(3600),
        serial: (action.ends_with("_cert") && outcome == "issued")
            .then(|| (1_000_000 + n).to_string()),
        key_id: Some(format!("user-{who}-{n}")),
        reason: (action == "elevation_request").then(|| format!("INC-{} investigate", n % 10_000)),
        decision_reasons: vec!["granted by role table".into()],
        policy_hash: Some("4f1c2e".repeat(10)),
        token_hash: Some(format!("{:064x}", n)),
        details: (action == "elevation_request").then(|| serde_json::json!({"role": role})),
        ..AuditEvent::default()
    }
}

/// Insert `ROWS` chained rows in one transaction, straight into the file.
fn fill(path: &std::path::Path) {
    let started = Instant::now();
    let mut db = rusqlite::Connection::open(path).unwrap();
    let tx = db.transaction().unwrap();
    let (mut seq, mut prev): (u64, String) = tx
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
        )
        .unwrap_or((0, ca_core::audit::GENESIS.to_owned()));
    let start = now() - DAYS * 86_400;
    let step = DAYS * 86_400 * 1_000 / ROWS;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO audit (seq, time, action, outcome, subject, issuer, serial, prev_hash, hash, event)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .unwrap();
        for n in 0..ROWS {
            seq += 1;
            let e = event(n, start + n * step / 1_000, &mut rng);
            let json = serde_json::to_string(&e).unwrap();
            let hash = chain_hash(seq, &prev, &json);
            insert
                .execute(rusqlite::params![
                    seq as i64,
                    e.time as i64,
                    e.action,
                    e.outcome,
                    e.subject,
                    e.issuer,
                    e.serial,
                    prev,
                    hash,
                    json
                ])
                .unwrap();
            prev = hash;
        }
    }
    tx.commit().unwrap();
    eprintln!("filled {ROWS} rows in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it with --ignored --nocapture, in release"]
async fn audit_pages_over_a_million_rows() {
    let audra = DevUser {
        username: "audra".into(),
        email: "audra@example.com".into(),
        groups: vec!["security-audit".into()],
    };
    let h = build(
        PolicyEngine::load_embedded_default().unwrap(),
        vec![audra],
        |_| {},
    )
    .await;
    let path = h.config.database.sqlite_path().unwrap().to_owned();
    tokio::task::spawn_blocking(move || fill(&path))
        .await
        .unwrap();
    let cookie = with_session(&sign_in_as(&h, Some("audra")).await);
    let day_ago = now() - 30 * 86_400;
    let pages = [
        ("first page", "/ui/audit".to_owned()),
        (
            "person (subject, indexed)",
            "/ui/audit?person=user-3".into(),
        ),
        (
            "person (email, scanned)",
            "/ui/audit?person=user3%40example.com".into(),
        ),
        ("outcome=denied", "/ui/audit?outcome=denied".into()),
        (
            "kind+outcome (rare)",
            "/ui/audit?kind=revoke&outcome=failed".into(),
        ),
        ("serial", "/ui/audit?serial=1500000".into()),
        (
            "one day, 30 days ago",
            format!("/ui/audit?from={day_ago}&to={}", day_ago + 86_400),
        ),
        (
            "deep page (before=500000)",
            "/ui/audit?before=500000".into(),
        ),
        ("deepest page (before=60)", "/ui/audit?before=60".into()),
        (
            "deep filtered (before=300000, denied)",
            "/ui/audit?outcome=denied&before=300000".into(),
        ),
        ("event detail", "/ui/audit/500000".into()),
        ("charts, day", "/ui/audit/charts".into()),
        ("charts, week", "/ui/audit/charts?window=week".into()),
    ];
    println!("| page | rows shown | median | slowest of {RUNS} |\n|---|---:|---:|---:|");
    for (name, path) in pages {
        let mut times: Vec<Duration> = Vec::new();
        let mut shown = 0;
        for _ in 0..RUNS {
            let t = Instant::now();
            let page = send(&h, "GET", &path, Some(&cookie), None, None).await;
            times.push(t.elapsed());
            assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
            shown = page.body.matches("<td data-label=\"#\">").count();
        }
        times.sort();
        println!(
            "| {name} | {shown} | {:.1} ms | {:.1} ms |",
            times[RUNS / 2].as_secs_f64() * 1e3,
            times[RUNS - 1].as_secs_f64() * 1e3
        );
    }
}
