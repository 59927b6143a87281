//! Nobody outside can fill the audit log: 20,000 requests without valid
//! credentials (no token, garbage, unknown issuers, expired tokens, unknown
//! join tokens; from 40 source addresses, on every endpoint that takes a
//! credential) add no audit row each, only one summary row per source once
//! the minute is over; a source past its limit gets 429 with Retry-After;
//! `/readyz` does not write per call; and a valid request, even from a
//! flooding address, still gets its certificate at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use ca_server::dev::idp::DevUser;
use ca_server::policy::PolicyEngine;
use http_body_util::BodyExt as _;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tower::ServiceExt as _;

mod common;
use common::{AUD, Harness, MintExt as _, now};

const REQUESTS: usize = 20_000;
const SOURCES: usize = 40;

fn alice() -> DevUser {
    DevUser {
        username: "alice".into(),
        email: "alice@example.com".into(),
        groups: vec!["developers".into()],
    }
}

fn pubkey() -> String {
    ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
        .unwrap()
        .public_key()
        .to_openssh()
        .unwrap()
}

fn claims(h: &Harness) -> Value {
    json!({
        "iss": h.idp.issuer(), "sub": "alice", "aud": AUD,
        "iat": now(), "exp": now() + 300,
        "email": "alice@example.com", "email_verified": true,
        "preferred_username": "alice", "groups": ["developers"],
        "jti": format!("{:x}", rand_core::RngCore::next_u64(&mut rand_core::OsRng)),
    })
}

/// One request from `source` (a loopback address; only a label here).
async fn send(
    router: &Router,
    source: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: String,
) -> (StatusCode, Option<String>, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let mut req = req.body(Body::from(body)).unwrap();
    req.extensions_mut().insert(ConnectInfo(source));
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        retry,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn source(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 1, (i % SOURCES) as u8 + 1], 40_000))
}

fn rows(h: &Harness) -> Vec<ca_server::audit::StoredEvent> {
    h.state.authority.audit.list(&Default::default()).unwrap()
}

fn sqlite_bytes(h: &Harness) -> u64 {
    ["audit.db", "audit.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(h.dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum()
}

async fn an_anonymous_flood_adds_a_bounded_number_of_rows() {
    let h = common::build(
        PolicyEngine::load_embedded_default().unwrap(),
        vec![alice()],
        |_| {},
    )
    .await;
    let cert_body = json!({"public_key": pubkey()}).to_string();
    let valid = |h: &Harness| format!("Bearer {}", h.idp.mint(Algorithm::ES256, claims(h)));

    let started = Instant::now();
    let (s, _, b) = send(
        &h.router,
        source(0),
        "POST",
        "/v1/certs/user",
        Some(&valid(&h)),
        cert_body.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let quiet_latency = started.elapsed();
    let rows_before = rows(&h).len();
    let bytes_before = sqlite_bytes(&h);

    // The garbage: each kind of credential that never verifies.
    let mut foreign = claims(&h);
    foreign["iss"] = json!("https://evil.example.com");
    let mut expired = claims(&h);
    expired["exp"] = json!(now() - 3600);
    expired["iat"] = json!(now() - 7200);
    let foreign = format!("Bearer {}", h.idp.mint(Algorithm::ES256, foreign));
    let expired = format!("Bearer {}", h.idp.mint(Algorithm::ES256, expired));
    let unknown_join = ca_core::host::JoinToken::generate(&mut rand_core::OsRng);
    let host_body = json!({"token": unknown_join.expose(), "public_key": pubkey()}).to_string();
    let kinds: Vec<(&str, &str, Option<String>, String)> = vec![
        ("POST", "/v1/certs/user", None, cert_body.clone()),
        (
            "POST",
            "/v1/certs/user",
            Some("Bearer x".into()),
            cert_body.clone(),
        ),
        (
            "POST",
            "/v1/certs/user",
            Some("Basic YTpi".into()),
            cert_body.clone(),
        ),
        (
            "POST",
            "/v1/certs/user",
            Some("Bearer a.b.c".into()),
            cert_body.clone(),
        ),
        ("POST", "/v1/certs/user", Some(foreign), cert_body.clone()),
        (
            "POST",
            "/v1/certs/user",
            Some(expired.clone()),
            cert_body.clone(),
        ),
        ("GET", "/v1/elevations", Some(expired), String::new()),
        (
            "POST",
            "/v1/elevations",
            Some("Bearer x".into()),
            "{}".into(),
        ),
        ("POST", "/v1/certs/host", None, host_body),
    ];

    let mut tasks = Vec::new();
    let per_task = REQUESTS / 16;
    for t in 0..16 {
        let router = h.router.clone();
        let kinds = kinds.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::with_capacity(per_task);
            for i in t * per_task..(t + 1) * per_task {
                let (method, path, auth, body) = &kinds[i % kinds.len()];
                let got = send(
                    &router,
                    source(i),
                    method,
                    path,
                    auth.as_deref(),
                    body.clone(),
                )
                .await;
                seen.push(got);
            }
            seen
        }));
    }
    let mut limited = 0;
    for t in tasks {
        for (status, retry, body) in t.await.unwrap() {
            match status {
                StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST => {}
                StatusCode::TOO_MANY_REQUESTS => {
                    limited += 1;
                    let secs: u64 = retry.expect("429 says when").parse().unwrap();
                    assert!((1..=60).contains(&secs), "{secs}");
                    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
                }
                other => panic!("{other}: {body}"),
            }
        }
    }
    assert!(
        limited >= REQUESTS - 2 * SOURCES * 120,
        "each source past its limit is refused with 429 ({limited})"
    );

    // No row each; a valid request, from a flooding address too, still
    // gets its certificate at once.
    assert_eq!(
        rows(&h).len(),
        rows_before,
        "refusals are not chained one by one"
    );
    let started = Instant::now();
    let (s, _, b) = send(
        &h.router,
        source(1),
        "POST",
        "/v1/certs/user",
        Some(&valid(&h)),
        cert_body.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let busy_latency = started.elapsed();
    eprintln!("valid request before the flood {quiet_latency:?}, after {busy_latency:?}");
    assert!(
        busy_latency < Duration::from_secs(2),
        "not queued behind the flood: {busy_latency:?}"
    );

    // Once the minute is over: one summary row per source, counting every
    // refusal.
    h.state
        .authority
        .flush_unauthenticated(now() + 120, true)
        .await;
    let all = rows(&h);
    let summaries: Vec<_> = all
        .iter()
        .filter(|r| r.event.action == "unauthenticated")
        .collect();
    assert_eq!(all.len(), rows_before + 1 + summaries.len());
    assert!(
        (SOURCES..=2 * SOURCES).contains(&summaries.len()),
        "one row per source (two if the flood straddled a minute): {}",
        summaries.len()
    );
    let counted: u64 = summaries
        .iter()
        .map(|r| r.event.details.as_ref().unwrap()["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, REQUESTS as u64, "every refusal is counted");
    assert!(h.state.authority.audit.verify().unwrap().is_ok());
    if h.dir.path().join("audit.db").exists() {
        let grown = sqlite_bytes(&h).saturating_sub(bytes_before);
        // A row each would be 20,000 rows (tens of MB with their indexes
        // and WAL frames); a few dozen summaries stay far below this.
        assert!(
            grown < 2 * 1024 * 1024,
            "the database grew by {grown} bytes"
        );
        eprintln!("SQLite files grew by {grown} bytes");
    }
}

async fn readyz_does_not_write_per_call() {
    let h = common::build(
        PolicyEngine::load_embedded_default().unwrap(),
        vec![alice()],
        |_| {},
    )
    .await;
    let before = h.state.authority.audit.stats().batches;
    for i in 0..500 {
        let (s, _, b) = send(&h.router, source(i), "GET", "/readyz", None, String::new()).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["checks"]["database"], "ok");
    }
    let written = h.state.authority.audit.stats().batches - before;
    assert!(
        written <= 2,
        "{written} write batches for 500 /readyz calls"
    );
}

on_both_backends!(
    an_anonymous_flood_adds_a_bounded_number_of_rows,
    readyz_does_not_write_per_call
);
