//! Criterion benchmarks of each issuance stage and of the whole in-process
//! path (`Authority::issue_user_cert`, no HTTP). Numbers and how to read them:
//! docs/performance.md. Run with `cargo bench -p ca-server`; one group with
//! `cargo bench -p ca-server -- token_verify`.
//!
//! Every stage is measured as the server runs it: token keys already cached
//! (fetched once from a dev OpenID provider on a loopback port), the default
//! policy compiled once, the CA key decoded once, the audit log on disk with
//! `synchronous=FULL`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ca_core::audit::AuditEvent;
use ca_core::cert::{CertKind, key_id, sign_cert};
use ca_core::policy::{PolicyInput, enforce};
use ca_core::wire::UserCertRequest;
use ca_core::{CaSigner, CertRequest, IdentityKind, Limits, Ttl, VerifiedIdentity};
use ca_server::audit::{AuditStore, UsedToken};
use ca_server::dev::idp::{DevIdp, DevUser};
use ca_server::issue::RequestContext;
use ca_server::oidc::{IssuerConfig, TokenVerifier};
use ca_server::policy::PolicyEngine;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use jsonwebtoken::Algorithm;
use rand_core::OsRng;
use tokio::runtime::Runtime;

// Shared with the tests, of which the benches mint only some kinds of token.
#[allow(dead_code)]
#[path = "../tests/common/mint.rs"]
mod mint;
use mint::MintExt as _;

const AUD: &str = "jitssh-bench";
/// Distinct identities the issuance benches cycle through, so the per-identity
/// rate limit (default 60/min, burst 20) never refuses a request.
const SUBJECTS: u64 = 10_000;
/// Appenders for the group-commit bench: the concurrency the issue targets.
const CONCURRENT: usize = 64;

/// A dev OpenID provider serving its keys on a loopback port, inside `rt`.
struct Idp {
    rt: Runtime,
    idp: Arc<DevIdp>,
}

impl Idp {
    fn start() -> Idp {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let idp = DevIdp::new(issuer, AUD.into(), vec![])
            .with_rsa_pem(include_str!("../tests/fixtures/rsa2048.pem"));
        let router = idp.clone().router();
        rt.spawn(async move { axum::serve(listener, router).await });
        Idp { rt, idp }
    }

    fn user(n: u64) -> DevUser {
        DevUser {
            username: format!("u{}", n % SUBJECTS),
            email: format!("u{}@example.com", n % SUBJECTS),
            groups: vec!["developers".into()],
        }
    }

    /// A fresh (never used) ID token for identity `n`.
    fn token(&self, alg: Algorithm, n: u64) -> String {
        let claims = self.idp.id_token_claims(&Self::user(n), AUD, None, 600);
        self.idp.mint(alg, claims)
    }

    fn verifier(&self) -> TokenVerifier {
        let cfg = IssuerConfig {
            login: ca_core::LoginRule::claim("preferred_username"),
            ..IssuerConfig::new(self.idp.issuer(), vec![AUD.into()], IdentityKind::Human)
        };
        let v = TokenVerifier::new(vec![cfg], ca_server::serve::verifier_options()).unwrap();
        self.rt.block_on(v.refresh_all()).unwrap();
        v
    }
}

fn now() -> u64 {
    ca_server::clock::now_unix()
}

fn public_key() -> String {
    ssh_key::PrivateKey::random(&mut OsRng, ssh_key::Algorithm::Ed25519)
        .unwrap()
        .public_key()
        .to_openssh()
        .unwrap()
}

fn request_body() -> Vec<u8> {
    serde_json::to_vec(&UserCertRequest {
        public_key: public_key(),
        ..Default::default()
    })
    .unwrap()
}

fn token_verify(c: &mut Criterion) {
    let idp = Idp::start();
    let verifier = idp.verifier();
    let mut g = c.benchmark_group("token_verify");
    for (name, alg) in [
        ("RS256", Algorithm::RS256),
        ("ES256", Algorithm::ES256),
        ("EdDSA", Algorithm::EdDSA),
    ] {
        // Verification does not spend tokens (the replay guard is the
        // Authority's), so one token serves every iteration.
        let token = idp.token(alg, 1);
        let t = now();
        assert!(idp.rt.block_on(verifier.verify_full(&token, t)).is_ok());
        g.bench_function(name, |b| {
            b.iter(|| idp.rt.block_on(verifier.verify_full(&token, t)).unwrap());
        });
    }
    g.finish();
}

/// The identity, request and grant of a typical issuance, for the policy and
/// signing benches.
struct Sample {
    identity: VerifiedIdentity,
    req: CertRequest,
    limits: Limits,
}

fn sample() -> Sample {
    let idp = Idp::start();
    let verifier = idp.verifier();
    let token = idp.token(Algorithm::EdDSA, 1);
    let identity = idp.rt.block_on(verifier.verify(&token, now())).unwrap();
    let body = UserCertRequest {
        public_key: public_key(),
        ..Default::default()
    };
    Sample {
        identity,
        req: CertRequest::parse(&body).unwrap(),
        limits: Limits::new(Ttl::from_secs(3600).unwrap()),
    }
}

fn policy(c: &mut Criterion) {
    let s = sample();
    let engine = PolicyEngine::load_embedded_default().unwrap();
    let t = now();
    let input = serde_json::to_value(PolicyInput::user_cert(
        &s.identity,
        &s.req,
        "127.0.0.1".into(),
        t,
    ))
    .unwrap();
    let decision = engine.evaluate(&input).unwrap().decision;
    assert!(enforce(decision.as_ref(), &s.req, &s.limits).is_ok());

    let mut g = c.benchmark_group("policy");
    // What the regorus engine costs: input conversion, evaluation, result
    // conversion; on the engine serving (the VM for the default policy).
    g.bench_function("evaluate_default", |b| {
        b.iter(|| engine.evaluate(&input).unwrap());
    });
    // The same on the interpreter, for the ratio.
    let snapshot = engine.snapshot();
    assert_eq!(
        snapshot.evaluate_on_interpreter(&input).unwrap().decision,
        engine.evaluate(&input).unwrap().decision
    );
    g.bench_function("evaluate_default_interpreter", |b| {
        b.iter(|| snapshot.evaluate_on_interpreter(&input).unwrap());
    });
    // A policy load: parse, compile, run the tests, and compare the VM with
    // the interpreter on the load-time corpus.
    g.bench_function("load_default", |b| {
        b.iter(|| PolicyEngine::load_embedded_default().unwrap());
    });
    // Building the input and converting it for regorus (part of both above).
    g.bench_function("input_to_regorus", |b| {
        b.iter(|| {
            let input = PolicyInput::user_cert(&s.identity, &s.req, "127.0.0.1".into(), t);
            let input = serde_json::to_value(&input).unwrap();
            <regorus::Value as serde::Deserialize>::deserialize(&input).unwrap()
        });
    });
    // The same through JSON text: one serialisation and one parse straight
    // into regorus values, instead of two trees.
    g.bench_function("input_to_regorus_via_text", |b| {
        b.iter(|| {
            let input = PolicyInput::user_cert(&s.identity, &s.req, "127.0.0.1".into(), t);
            let text = serde_json::to_vec(&input).unwrap();
            serde_json::from_slice::<regorus::Value>(&text).unwrap()
        });
    });
    // All of step 5 as `issue` runs it: build the input, evaluate, enforce.
    g.bench_function("decide_default", |b| {
        b.iter(|| {
            let input = PolicyInput::user_cert(&s.identity, &s.req, "127.0.0.1".into(), t);
            let input = serde_json::to_value(&input).unwrap();
            let eval = engine.evaluate(&input).unwrap();
            enforce(eval.decision.as_ref(), &s.req, &s.limits).unwrap()
        });
    });
    g.finish();
}

fn signing(c: &mut Criterion) {
    let s = sample();
    let engine = PolicyEngine::load_embedded_default().unwrap();
    let t = now();
    let input = serde_json::to_value(PolicyInput::user_cert(
        &s.identity,
        &s.req,
        "127.0.0.1".into(),
        t,
    ))
    .unwrap();
    let decision = engine.evaluate(&input).unwrap().decision;
    let grant = enforce(decision.as_ref(), &s.req, &s.limits).unwrap();

    let private = ssh_key::PrivateKey::random(&mut OsRng, ssh_key::Algorithm::Ed25519).unwrap();
    let seed = private.key_data().ed25519().unwrap().private.to_bytes();
    let dalek = ed25519_dalek::SigningKey::from_bytes(&seed);
    let cached = CaSigner::new(dalek.clone());
    let kid = key_id(&s.identity, 42);

    let mut g = c.benchmark_group("sign");
    // The floor: one Ed25519 signature over a certificate-sized message.
    let msg = [7u8; 300];
    g.bench_function("raw_ed25519", |b| {
        b.iter(|| ed25519_dalek::Signer::sign(&dalek, &msg));
    });
    g.bench_function("cert_cached_signer", |b| {
        b.iter(|| {
            sign_cert(
                CertKind::User,
                &grant,
                &s.req.public_key,
                42,
                &kid,
                t,
                &mut OsRng,
                &cached,
            )
            .unwrap()
        });
    });
    g.bench_function("cert_ssh_key_private_key", |b| {
        b.iter(|| {
            sign_cert(
                CertKind::User,
                &grant,
                &s.req.public_key,
                42,
                &kid,
                t,
                &mut OsRng,
                &private,
            )
            .unwrap()
        });
    });
    // What `issue` does after signing: the OpenSSH text line for the response.
    g.bench_function("cert_cached_signer_to_openssh", |b| {
        b.iter(|| {
            sign_cert(
                CertKind::User,
                &grant,
                &s.req.public_key,
                42,
                &kid,
                t,
                &mut OsRng,
                &cached,
            )
            .unwrap()
            .to_openssh()
            .unwrap()
        });
    });
    g.finish();
}

/// An issuance row as `issue` writes it.
fn audit_event(n: u64) -> (AuditEvent, UsedToken) {
    let event = AuditEvent {
        time: now(),
        action: "user_cert".into(),
        outcome: "issued".into(),
        source_ip: Some("127.0.0.1".into()),
        issuer: Some("http://127.0.0.1:1234".into()),
        subject: Some(format!("dev|u{n}")),
        email: Some(format!("u{n}@example.com")),
        requested_principals: None,
        granted_principals: vec![format!("u{n}"), "dev".into()],
        ttl_seconds: Some(900),
        serial: Some((1_000_000 + n).to_string()),
        key_id: Some(format!("u{n}@example.com serial={}", 1_000_000 + n)),
        key_fingerprint: Some("SHA256:abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG".into()),
        policy_hash: Some("ab".repeat(32)),
        decision_reasons: vec!["developers may log in as themselves".into()],
        token_hash: Some(format!("{n:064x}")),
        ..Default::default()
    };
    let used = UsedToken {
        token_hash: format!("{n:064x}"),
        expires_at: now() + 600,
    };
    (event, used)
}

fn audit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = AuditStore::open(&dir.path().join("audit.db")).unwrap();
    let counter = Arc::new(AtomicU64::new(0));

    let mut g = c.benchmark_group("audit_append");
    // One appender: every row is its own transaction and fsync.
    g.throughput(Throughput::Elements(1));
    g.bench_function("single", |b| {
        b.iter(|| {
            let (event, used) = audit_event(counter.fetch_add(1, Ordering::Relaxed));
            rt.block_on(store.append(event, Some(used))).unwrap()
        });
    });
    // 64 appenders in a closed loop: the writer commits whatever queued up
    // during the previous commit in one transaction (group commit). Time is
    // per 64 rows; criterion's throughput line gives rows/s.
    g.throughput(Throughput::Elements(CONCURRENT as u64));
    g.bench_function("concurrent_64", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            rt.block_on(async {
                let mut tasks = tokio::task::JoinSet::new();
                for _ in 0..CONCURRENT {
                    let (store, counter) = (store.clone(), counter.clone());
                    tasks.spawn(async move {
                        for _ in 0..iters {
                            let (event, used) =
                                audit_event(counter.fetch_add(1, Ordering::Relaxed));
                            store.append(event, Some(used)).await.unwrap();
                        }
                    });
                }
                while let Some(r) = tasks.join_next().await {
                    r.unwrap();
                }
            });
            start.elapsed()
        });
    });
    let stats = store.stats();
    eprintln!(
        "audit writer: {} rows in {} transactions ({:.1} rows per commit, largest {})",
        stats.rows,
        stats.batches,
        stats.rows as f64 / stats.batches.max(1) as f64,
        stats.largest_batch
    );
    // 64 appenders that each spend PACED_WORK of CPU before every append, on
    // the same 2 worker threads: rows trickle in as from a CPU-bound CA (the
    // burst-free case where the writer used to commit 2-3 rows at a time).
    // Time is per 64 rows; the writer's own CPU per row is printed after.
    let (before, cpu_before) = (store.stats(), writer_cpu());
    g.bench_function("paced_64", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            rt.block_on(async {
                let mut tasks = tokio::task::JoinSet::new();
                for _ in 0..CONCURRENT {
                    let (store, counter) = (store.clone(), counter.clone());
                    tasks.spawn(async move {
                        for _ in 0..iters {
                            burn(PACED_WORK);
                            let (event, used) =
                                audit_event(counter.fetch_add(1, Ordering::Relaxed));
                            store.append(event, Some(used)).await.unwrap();
                        }
                    });
                }
                while let Some(r) = tasks.join_next().await {
                    r.unwrap();
                }
            });
            start.elapsed()
        });
    });
    g.finish();
    let after = store.stats();
    let rows = after.rows - before.rows;
    let batches = after.batches - before.batches;
    let cpu = match (cpu_before, writer_cpu()) {
        (Some(a), Some(b)) => format!(
            ", writer CPU {:.1} µs per row",
            b.saturating_sub(a).as_secs_f64() * 1e6 / rows.max(1) as f64
        ),
        _ => String::new(),
    };
    eprintln!(
        "audit writer, paced: {rows} rows in {batches} transactions ({:.1} rows per commit){cpu}",
        rows as f64 / batches.max(1) as f64,
    );
}

/// CPU each paced appender spends per row, standing in for token
/// verification, policy and signing (≈ what a certificate costs on 2 cores).
const PACED_WORK: Duration = Duration::from_micros(500);

/// Keep this thread busy for `d` (without yielding to the runtime).
fn burn(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// On-CPU time of this process's `audit-writer` threads (Linux schedstat),
/// `None` where unavailable.
fn writer_cpu() -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        if std::fs::read_to_string(path.join("comm")).ok()?.trim() == "audit-writer" {
            let stat = std::fs::read_to_string(path.join("schedstat")).ok()?;
            total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
        }
    }
    Some(Duration::from_nanos(total))
}

fn issuance(c: &mut Criterion) {
    let idp = Idp::start();
    let dir = tempfile::tempdir().unwrap();
    ca_server::keys::generate(&dir.path().join("user_ca"), "u").unwrap();
    ca_server::keys::generate(&dir.path().join("host_ca"), "h").unwrap();
    let mut config = ca_server::dev::dev_config(
        dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        idp.idp.issuer(),
        None,
    )
    .unwrap();
    config.issuers[0].audiences = vec![AUD.into()];
    let policy = Arc::new(PolicyEngine::load_embedded_default().unwrap());
    let authority = Arc::new(ca_server::serve::build_authority(&config, policy).unwrap());
    idp.rt.block_on(authority.verifier.refresh_all()).unwrap();
    // Every identity's login name bound beforehand (a person's first
    // certificate binds it, one more commit, once): the steady state.
    idp.rt.block_on(async {
        let mut binds = tokio::task::JoinSet::new();
        for n in 0..SUBJECTS {
            let a = authority.clone();
            let user = Idp::user(n);
            let identity = VerifiedIdentity {
                kind: IdentityKind::Human,
                issuer: idp.idp.issuer().to_owned(),
                subject: user.subject(),
                email: Some(user.email.clone()),
                email_verified: true,
                groups: vec![],
                login: ca_core::LoginName::parse(&user.username).ok(),
                login_problem: None,
                claims: Default::default(),
            };
            binds.spawn(async move { a.logins.claim(&identity, now()).await.unwrap() });
        }
        while binds.join_next().await.is_some() {}
    });
    let body = Arc::new(request_body());
    let ctx = RequestContext {
        source_ip: "127.0.0.1".into(),
    };
    let n = AtomicU64::new(0);

    let mut g = c.benchmark_group("issue_user_cert");
    for (name, alg) in [("ES256", Algorithm::ES256), ("EdDSA", Algorithm::EdDSA)] {
        // One caller: the latency of one issuance, including its own commit.
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("sequential_{name}"), |b| {
            b.iter_batched(
                || idp.token(alg, n.fetch_add(1, Ordering::Relaxed)),
                |token| {
                    idp.rt
                        .block_on(authority.issue_user_cert(&ctx, Some(&token), &body))
                        .unwrap()
                },
                BatchSize::SmallInput,
            );
        });
    }
    // 64 callers on a 2-worker runtime: throughput with group commit, no HTTP.
    // Tokens are minted before the clock starts.
    g.throughput(Throughput::Elements(CONCURRENT as u64));
    g.bench_function("concurrent_64_EdDSA", |b| {
        b.iter_custom(|iters| {
            let tokens: Vec<Vec<String>> = (0..CONCURRENT)
                .map(|_| {
                    (0..iters)
                        .map(|_| idp.token(Algorithm::EdDSA, n.fetch_add(1, Ordering::Relaxed)))
                        .collect()
                })
                .collect();
            let start = Instant::now();
            idp.rt.block_on(async {
                let mut tasks = tokio::task::JoinSet::new();
                for list in tokens {
                    let (authority, body, ctx) = (authority.clone(), body.clone(), ctx.clone());
                    tasks.spawn(async move {
                        for token in list {
                            authority
                                .issue_user_cert(&ctx, Some(&token), &body)
                                .await
                                .unwrap();
                        }
                    });
                }
                while let Some(r) = tasks.join_next().await {
                    r.unwrap();
                }
            });
            start.elapsed()
        });
    });
    g.finish();
    let stats = authority.audit.stats();
    eprintln!(
        "issuance audit writer: {} rows in {} transactions (largest {})",
        stats.rows, stats.batches, stats.largest_batch
    );
}

/// What a login name adds to each certificate: deriving it from the claims
/// (in `oidc`, per token) and checking its binding (`logins::claim`) once it
/// is known, which needs no database round trip.
fn login_names(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let audit = AuditStore::open(&dir.path().join("audit.db")).unwrap();
    let names = ca_server::logins::LoginNames::open(audit).unwrap();
    let rule = ca_core::LoginRule::new(Some("email"), &["example.com".into()]).unwrap();
    let claims = serde_json::json!({"preferred_username": "alice", "email": "alice@example.com"});
    let claims = claims.as_object().unwrap().clone();
    let identity = VerifiedIdentity {
        kind: IdentityKind::Human,
        issuer: "https://idp.example.com".into(),
        subject: "00u1".into(),
        email: Some("alice@example.com".into()),
        email_verified: true,
        groups: vec![],
        login: rule.derive(&claims, Some("alice@example.com")).ok(),
        login_problem: None,
        claims: claims.clone(),
    };
    // The first use binds (one group commit); the bench measures the rest.
    rt.block_on(names.claim(&identity, now())).unwrap();
    for n in 0..SUBJECTS {
        let mut other = identity.clone();
        other.subject = format!("s{n}");
        other.login = ca_core::LoginName::parse(&format!("u{n}")).ok();
        rt.block_on(names.claim(&other, now())).unwrap();
    }
    let mut g = c.benchmark_group("login_name");
    g.bench_function("derive_email", |b| {
        b.iter(|| rule.derive(&claims, Some("alice@example.com")).unwrap());
    });
    g.bench_function("claim_bound", |b| {
        b.iter(|| rt.block_on(names.claim(&identity, 0)).unwrap());
    });
    g.bench_function("block_on_noop", |b| b.iter(|| rt.block_on(async {})));
    g.finish();
}

fn config() -> Criterion {
    // Short runs: the whole suite finishes in a few minutes on 2 cores.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = stages;
    config = config();
    targets = token_verify, policy, signing, audit, issuance, login_names
}
criterion_main!(stages);
