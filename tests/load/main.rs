//! jitssh-load: drives `POST /v1/certs/user` over keep-alive HTTP, one fresh
//! ID token per request, and reports throughput, latency percentiles and
//! errors next to the raw single-core Ed25519 signing rate measured in the
//! same run; then checks that every certificate has its audit row and that
//! the audit chain verifies.
//!
//! Targets:
//! - in-process (default): a complete CA (`serve::run` on a loopback port:
//!   real token verification against a dev OpenID provider on another
//!   loopback port, the embedded default policy, the audit log with
//!   `synchronous=FULL`), on the same tokio runtime as the load.
//! - `--url`: a running `jitssh-ca serve` that trusts the issuer this tool
//!   serves at `--idp-listen` with audience `--audience` (recipe in
//!   docs/performance.md).
//!
//! The per-identity rate limit stays on (60/min, burst 20 by default): tokens
//! cycle through `--subjects` distinct identities, which sustains
//! `subjects` requests/s.

mod check;
mod hist;
mod sys;

/// The allocator `jitssh-ca` uses, so the in-process CA measures the same.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ca_server::dev::idp::{DevIdp, DevUser};
use ca_server::issue::Authority;
use clap::{Parser, ValueEnum};
use jitssh_e2e::MintExt as _;
use jsonwebtoken::Algorithm;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::check::AuditReport;
use crate::hist::Histogram;

/// The RSA key of the RS256 runs (the same fixture the server tests use).
const RSA_PEM: &str = include_str!("../../ca-server/tests/fixtures/rsa2048.pem");

#[derive(Debug, Parser)]
#[command(
    name = "jitssh-load",
    about = "Load generator for jitssh-ca: certificates/s, latency percentiles, errors, audit check"
)]
struct Args {
    /// Target a running CA (e.g. http://127.0.0.1:8443) instead of starting one in-process.
    /// It must trust http://<--idp-listen> with audience --audience.
    #[arg(long)]
    url: Option<String>,
    /// With --url: where this tool serves its token issuer (discovery + JWKS).
    #[arg(long, default_value = "127.0.0.1:7400")]
    idp_listen: SocketAddr,
    /// Audience (client ID) of the minted ID tokens.
    #[arg(long, default_value = "jitssh-load")]
    audience: String,
    /// With --url: the CA's audit database, for the after-run checks.
    #[arg(long)]
    db: Option<PathBuf>,
    /// With --url: the `jitssh-ca` binary that verifies the chain
    /// (default: the one beside this executable).
    #[arg(long)]
    ca_bin: Option<PathBuf>,
    /// With --url: the server's process id, to record its memory and CPU.
    #[arg(long)]
    server_pid: Option<u32>,
    /// In-process: directory for the CA keys and audit.db (default: a temporary one).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// In-process: keep the CA's state in this PostgreSQL database
    /// (postgresql://USER@HOST:PORT/DB) instead of an SQLite file in --dir.
    #[arg(long, conflicts_with = "url")]
    database_url: Option<String>,
    /// In-process: turn the per-identity rate limit off (default: on, 60/min, burst 20).
    #[arg(long)]
    no_rate_limit: bool,
    /// In-process: serve without the web console (default: on, as `jitssh-ca dev`),
    /// to measure what the console costs the API.
    #[arg(long)]
    no_console: bool,
    /// Closed loop: this many requests in flight, each sent when the previous
    /// one returns [default 64]. With --rate: the most requests in flight [default 512].
    #[arg(short, long)]
    concurrency: Option<usize>,
    /// Open loop: start this many requests per second whatever the latency;
    /// latency counts from each request's scheduled start.
    #[arg(long)]
    rate: Option<f64>,
    /// Measured requests (after the warm-up) [default 10000 unless --duration].
    #[arg(short = 'n', long, conflicts_with = "duration")]
    requests: Option<u64>,
    /// Measure for this many seconds instead of a request count.
    #[arg(short, long)]
    duration: Option<f64>,
    /// Token signature algorithm (what the CA verifies).
    #[arg(long, value_enum, default_value_t = Alg::Es256)]
    alg: Alg,
    /// Distinct identities the tokens cycle through.
    #[arg(long, default_value_t = 10_000)]
    subjects: u64,
    /// Requests before measuring (their certificates are audited and checked
    /// too). At least one is sent: its certificate is validated against the
    /// CA's published user key.
    #[arg(long, default_value_t = 200)]
    warmup: u64,
    /// When to mint tokens: all before the clock starts (`ahead`), in the
    /// request path (`inline`, costs client CPU), or `ahead` when at most
    /// 300,000 are needed (`auto`).
    #[arg(long, value_enum, default_value_t = Mint::Auto)]
    mint: Mint,
    /// Lifetime of the minted tokens, in seconds (the CA remembers each
    /// spent token until it expires). Ahead-minted tokens live at least the run.
    #[arg(long, default_value_t = 300)]
    token_ttl: u64,
    /// Record throughput, memory and CPU every this many seconds.
    #[arg(long, default_value_t = 1.0)]
    sample_every: f64,
    /// Print each sample as it is taken.
    #[arg(short, long)]
    verbose: bool,
    /// Tokio worker threads (in-process: shared by the CA and the load) [default: CPU count].
    #[arg(long)]
    threads: Option<usize>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Free text stored in the JSON results (e.g. the machine).
    #[arg(long)]
    label: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
enum Alg {
    #[serde(rename = "RS256")]
    Rs256,
    #[serde(rename = "ES256")]
    Es256,
    #[serde(rename = "EdDSA")]
    Eddsa,
}

impl std::fmt::Display for Alg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::Eddsa => "EdDSA",
        })
    }
}

impl Alg {
    fn jwt(self) -> Algorithm {
        match self {
            Alg::Rs256 => Algorithm::RS256,
            Alg::Es256 => Algorithm::ES256,
            Alg::Eddsa => Algorithm::EdDSA,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mint {
    Auto,
    Ahead,
    Inline,
}

const AHEAD_LIMIT: u64 = 300_000;

fn main() -> ExitCode {
    let args = Args::parse();
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(std::num::NonZero::get)
            .unwrap_or(2)
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jitssh-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args, threads)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("jitssh-load: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Single-core Ed25519 signatures per second over a certificate-sized
/// message, measured for `time` on this thread.
fn raw_sign_rate(time: Duration) -> f64 {
    use ed25519_dalek::Signer as _;
    let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let mut msg = [0u8; 300];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < time {
        for _ in 0..100 {
            msg[0] = msg[0].wrapping_add(1);
            std::hint::black_box(key.sign(std::hint::black_box(&msg)));
        }
        n += 100;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Mints fresh ID tokens, cycling through the identities.
struct Minter {
    idp: Arc<DevIdp>,
    alg: Algorithm,
    audience: String,
    users: Vec<DevUser>,
    ttl: u64,
    /// RS256 only: the dev IdP's RSA key (the one it publishes, with its
    /// kid) loaded into ring, which signs in a fraction of the ~4 ms the
    /// pure-Rust RSA behind `DevIdp::try_mint` takes.
    rsa: Option<(ring::signature::RsaKeyPair, String)>,
    rng: ring::rand::SystemRandom,
}

impl Minter {
    fn mint(&self, i: u64) -> String {
        let user = &self.users[(i % self.users.len() as u64) as usize];
        let claims = self
            .idp
            .id_token_claims(user, &self.audience, None, self.ttl);
        if let Some((key, kid)) = &self.rsa
            && let Some(token) = self.mint_rs256(key, kid, &claims)
        {
            return token;
        }
        self.idp.mint(self.alg, claims)
    }

    /// What `DevIdp::try_mint(RS256, claims)` makes, signed with ring.
    fn mint_rs256(
        &self,
        key: &ring::signature::RsaKeyPair,
        kid: &str,
        claims: &serde_json::Value,
    ) -> Option<String> {
        use base64::Engine as _;
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": kid});
        let input = format!(
            "{}.{}",
            b64(&serde_json::to_vec(&header).ok()?),
            b64(&serde_json::to_vec(claims).ok()?)
        );
        let mut signature = vec![0; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &self.rng,
            input.as_bytes(),
            &mut signature,
        )
        .ok()?;
        Some(format!("{input}.{}", b64(&signature)))
    }

    /// Tokens `from..from + n`, minted on every core.
    fn mint_many(&self, from: u64, n: u64) -> Vec<String> {
        let cores = std::thread::available_parallelism()
            .map(std::num::NonZero::get)
            .unwrap_or(2) as u64;
        let chunk = n.div_ceil(cores).max(1);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..n.div_ceil(chunk))
                .map(|c| {
                    let start = from + c * chunk;
                    let end = (start + chunk).min(from + n);
                    s.spawn(move || (start..end).map(|i| self.mint(i)).collect::<Vec<_>>())
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        })
    }
}

/// [`RSA_PEM`] as a ring key pair.
fn rsa_key() -> anyhow::Result<ring::signature::RsaKeyPair> {
    use base64::Engine as _;
    let body: String = RSA_PEM
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body)?;
    ring::signature::RsaKeyPair::from_pkcs8(&der)
        .map_err(|e| anyhow::anyhow!("the RSA fixture is not a PKCS#8 key ring accepts: {e}"))
}

/// The CA under load.
struct Target {
    url: String,
    /// In-process only.
    authority: Option<Arc<Authority>>,
    db: Option<PathBuf>,
    /// Process whose memory and CPU are recorded.
    pid: Option<u32>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: Option<tempfile::TempDir>,
}

/// Serve a dev OpenID provider for `issuer` on `listener`.
fn serve_idp(listener: tokio::net::TcpListener, issuer: String, audience: &str) -> Arc<DevIdp> {
    let idp = DevIdp::new(issuer, audience.into(), vec![]).with_rsa_pem(RSA_PEM);
    let router = idp.clone().router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    idp
}

async fn in_process(args: &Args) -> anyhow::Result<(Target, Arc<DevIdp>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let issuer = format!("http://{}", listener.local_addr()?);
    let idp = serve_idp(listener, issuer.clone(), &args.audience);

    let (tmp, dir) = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            (None, d.clone())
        }
        None => {
            let t = tempfile::Builder::new().prefix("jitssh-load-").tempdir()?;
            let p = t.path().to_owned();
            (Some(t), p)
        }
    };
    for name in ["user_ca", "host_ca"] {
        if !dir.join(name).exists() {
            ca_server::keys::generate(&dir.join(name), name)?;
        }
    }
    let ca_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = ca_listener.local_addr()?;
    let mut config = ca_server::dev::dev_config(&dir, addr, &issuer, None)?;
    config.issuers[0].audiences = vec![args.audience.clone()];
    config.login = None;
    if args.no_rate_limit {
        config.rate_per_minute = 0;
    }
    if args.no_console {
        config.ui = None;
    }
    if let Some(url) = &args.database_url {
        config.database = ca_server::config::Database::Postgres {
            url: url.clone(),
            password_file: None,
        };
    }
    let policy = Arc::new(ca_server::policy::PolicyEngine::load_embedded_default()?);
    let authority = ca_server::serve::build_authority(&config, policy)?;
    let state = ca_server::serve::app_state(&config, authority, None)?;
    let authority = state.authority.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let db = config.database.sqlite_path().map(std::path::Path::to_owned);
    tokio::spawn(async move {
        let shutdown = async {
            let _ = rx.await;
        };
        if let Err(e) = ca_server::serve::run(&config, state, ca_listener, shutdown).await {
            eprintln!("jitssh-load: in-process CA stopped: {e:#}");
        }
    });
    Ok((
        Target {
            url: format!("http://{addr}"),
            authority: Some(authority),
            db,
            pid: Some(std::process::id()),
            shutdown: Some(tx),
            _dir: tmp,
        },
        idp,
    ))
}

async fn remote(args: &Args, url: &str) -> anyhow::Result<(Target, Arc<DevIdp>)> {
    let listener = tokio::net::TcpListener::bind(args.idp_listen)
        .await
        .with_context(|| format!("binding the token issuer to {}", args.idp_listen))?;
    let issuer = format!("http://{}", listener.local_addr()?);
    let idp = serve_idp(listener, issuer, &args.audience);
    Ok((
        Target {
            url: url.trim_end_matches('/').to_owned(),
            authority: None,
            db: args.db.clone(),
            pid: args.server_pid,
            shutdown: None,
            _dir: None,
        },
        idp,
    ))
}

/// What one request came to.
enum Outcome {
    Issued {
        serial: u64,
    },
    /// `"STATUS code"`, e.g. `"429 rate_limited"`, or `"io: ..."`.
    Failed {
        key: String,
        message: String,
    },
}

#[derive(serde::Deserialize)]
struct Issued {
    serial: String,
    #[serde(default)]
    certificate: String,
}

#[derive(serde::Deserialize)]
struct ApiError {
    error: ApiErrorDetail,
}

#[derive(serde::Deserialize)]
struct ApiErrorDetail {
    code: String,
    message: String,
}

/// The CA's endpoint and what every request sends besides its token.
struct Endpoint {
    client: reqwest::Client,
    url: String,
    bodies: Vec<&'static [u8]>,
}

impl Endpoint {
    async fn request(&self, i: u64, token: &str) -> (Outcome, Option<String>) {
        let body = self.bodies[(i % self.bodies.len() as u64) as usize];
        let sent = self
            .client
            .post(&self.url)
            .header(reqwest::header::AUTHORIZATION, format!("Bearer {token}"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => return (io_error(&e), None),
        };
        let status = resp.status();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return (io_error(&e), None),
        };
        if status.is_success() {
            match serde_json::from_slice::<Issued>(&bytes) {
                Ok(ok) => match ok.serial.parse() {
                    Ok(serial) => (Outcome::Issued { serial }, Some(ok.certificate)),
                    Err(_) => (failed("200 bad_serial", &ok.serial), None),
                },
                Err(e) => (failed("200 bad_body", &e.to_string()), None),
            }
        } else {
            let (code, message) = match serde_json::from_slice::<ApiError>(&bytes) {
                Ok(e) => (e.error.code, e.error.message),
                Err(_) => (
                    "-".into(),
                    String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                ),
            };
            (
                failed(&format!("{} {code}", status.as_u16()), &message),
                None,
            )
        }
    }
}

fn failed(key: &str, message: &str) -> Outcome {
    Outcome::Failed {
        key: key.into(),
        message: message.into(),
    }
}

fn io_error(e: &reqwest::Error) -> Outcome {
    let kind = if e.is_timeout() {
        "io timeout"
    } else if e.is_connect() {
        "io connect"
    } else {
        "io other"
    };
    failed(kind, &format!("{e:#}"))
}

/// Results of the measured phase, shared by the request tasks.
#[derive(Default)]
struct Stats {
    latency: Histogram,
    issued: u64,
    errors: BTreeMap<String, u64>,
    first_error: BTreeMap<String, String>,
    serials: Vec<u64>,
}

impl Stats {
    fn record(&mut self, outcome: Outcome, latency: Duration) {
        self.latency
            .record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        match outcome {
            Outcome::Issued { serial } => {
                self.issued += 1;
                self.serials.push(serial);
            }
            Outcome::Failed { key, message } => {
                *self.errors.entry(key.clone()).or_insert(0) += 1;
                self.first_error.entry(key).or_insert(message);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where the tokens of the measured phase come from.
enum Tokens {
    Ahead(Vec<String>),
    Inline(Arc<Minter>),
}

impl Tokens {
    fn get(&self, i: u64) -> Option<String> {
        match self {
            Tokens::Ahead(v) => v.get(usize::try_from(i).ok()?).cloned(),
            Tokens::Inline(m) => Some(m.mint(i)),
        }
    }
}

#[derive(Serialize, Clone)]
struct Sample {
    /// Seconds since the measured phase started.
    t: f64,
    /// Requests completed in this interval, per second.
    per_sec: f64,
    /// Target process RSS (KiB).
    rss_kib: Option<u64>,
    /// Target process CPU use over the interval, in cores.
    cpu_cores: Option<f64>,
}

#[derive(Serialize)]
struct Report {
    label: Option<String>,
    target: String,
    mode: String,
    alg: Alg,
    concurrency: usize,
    rate: Option<f64>,
    threads: usize,
    cores: usize,
    subjects: u64,
    rate_limited: bool,
    mint: String,
    warmup: u64,
    requests: u64,
    issued: u64,
    errors: BTreeMap<String, u64>,
    seconds: f64,
    certs_per_sec: f64,
    raw_sign_per_sec: f64,
    ratio_to_raw_sign: f64,
    latency_ms: BTreeMap<String, f64>,
    /// Open loop: how late the load generator released requests after their
    /// scheduled start (ms; part of every latency above).
    pacing_lag_ms: Option<BTreeMap<String, f64>>,
    /// CPU seconds of the target process during the measured phase, and per
    /// certificate (µs); in-process this includes the load generator.
    cpu_secs: Option<f64>,
    cpu_us_per_cert: Option<f64>,
    cpu_by_thread: BTreeMap<String, f64>,
    /// With --url: CPU seconds of this load generator, and per certificate.
    load_cpu_secs: Option<f64>,
    load_us_per_cert: Option<f64>,
    /// Cores busy machine-wide during the measured phase (all processes):
    /// on a shared machine, what others took shows here.
    machine_cores_busy: Option<f64>,
    rss_kib_start: Option<u64>,
    rss_kib_end: Option<u64>,
    audit_commits: Option<u64>,
    audit_rows_per_commit: Option<f64>,
    audit_largest_commit: Option<u64>,
    audit: Option<AuditReport>,
    samples: Vec<Sample>,
}

async fn run(args: Args, threads: usize) -> anyhow::Result<bool> {
    if args.subjects == 0 {
        bail!("--subjects must be at least 1");
    }
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        bail!("--rate must be a positive number of requests per second");
    }
    if args.duration.is_some_and(|d| !(d.is_finite() && d > 0.0)) {
        bail!("--duration must be a positive number of seconds");
    }
    let cores = std::thread::available_parallelism()
        .map(std::num::NonZero::get)
        .unwrap_or(2);
    let raw_sign = raw_sign_rate(Duration::from_millis(700));

    let (mut target, idp) = match &args.url {
        None => in_process(&args).await?,
        Some(url) => remote(&args, url).await?,
    };
    let concurrency = args
        .concurrency
        .unwrap_or(if args.rate.is_some() { 512 } else { 64 })
        .max(1);
    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(concurrency)
        // Below the server's header read timeout (5 s by default), which
        // also closes idle keep-alive connections: a pooled connection the
        // server is closing just then fails the request ("error sending
        // request"), an artefact of the load tool, not of the CA.
        .pool_idle_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        .build()?;
    let bodies = (0..8)
        .map(|_| -> anyhow::Result<&'static [u8]> {
            let key =
                ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)?;
            let body = serde_json::to_vec(&serde_json::json!({
                "public_key": key.public_key().to_openssh()?,
            }))?;
            Ok(Box::leak(body.into_boxed_slice()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let endpoint = Arc::new(Endpoint {
        client: client.clone(),
        url: format!("{}/v1/certs/user", target.url),
        bodies,
    });

    // How many tokens, and minted when.
    let measured = match (args.requests, args.duration, args.rate) {
        (Some(n), _, _) => Some(n),
        (None, Some(d), Some(r)) => Some((d * r).ceil() as u64),
        (None, Some(_), None) => None,
        (None, None, _) => Some(10_000),
    };
    let ahead = match args.mint {
        Mint::Ahead => {
            let Some(n) = measured else {
                bail!("--mint ahead needs --requests, or --duration with --rate");
            };
            Some(n)
        }
        Mint::Inline => None,
        Mint::Auto => measured.filter(|n| *n <= AHEAD_LIMIT),
    };
    let expected_secs = match (args.duration, args.rate, measured) {
        (Some(d), _, _) => d,
        (None, Some(r), Some(n)) => n as f64 / r,
        // Closed loop for a count: assume no slower than 100/s.
        (None, _, Some(n)) => n as f64 / 100.0,
        (None, _, None) => 0.0,
    };
    let ttl = if ahead.is_some() {
        args.token_ttl.max(expected_secs.ceil() as u64 + 120)
    } else {
        args.token_ttl
    };
    let minter = Arc::new(Minter {
        idp: idp.clone(),
        alg: args.alg.jwt(),
        audience: args.audience.clone(),
        users: (0..args.subjects)
            .map(|k| DevUser {
                username: format!("load{k}"),
                email: format!("load{k}@example.com"),
                groups: vec!["developers".into()],
            })
            .collect(),
        ttl,
        rsa: match args.alg {
            Alg::Rs256 => Some((rsa_key()?, idp.kid(Algorithm::RS256).unwrap_or_default())),
            _ => None,
        },
        rng: ring::rand::SystemRandom::new(),
    });

    let db_seq_before = match (&target.authority, &target.db) {
        (None, Some(db)) => Some(check::last_seq(db)?),
        _ => None,
    };
    let mut all_serials = Vec::new();
    wait_ready(&client, &target.url).await?;
    warm_up(
        &args,
        &endpoint,
        &minter,
        &client,
        &target.url,
        &mut all_serials,
    )
    .await?;

    let tokens = Arc::new(match ahead {
        Some(n) => {
            let start = Instant::now();
            let v = minter.mint_many(args.warmup, n);
            eprintln!(
                "minted {n} {} tokens ahead in {:.1} s",
                args.alg,
                start.elapsed().as_secs_f64()
            );
            Tokens::Ahead(v)
        }
        None => Tokens::Inline(minter.clone()),
    });

    let mode = match args.rate {
        Some(r) => format!("open loop at {r}/s (at most {concurrency} in flight)"),
        None => format!("closed loop, concurrency {concurrency}"),
    };
    eprintln!(
        "{}: {mode}, {} tokens, {} identities, {threads} worker threads",
        if target.authority.is_some() {
            "in-process CA".to_owned()
        } else {
            target.url.clone()
        },
        args.alg,
        args.subjects
    );

    // The measured phase.
    let stats = Arc::new(Mutex::new(Stats::default()));
    let done = Arc::new(AtomicU64::new(0));
    let limit = measured.unwrap_or(u64::MAX);
    let cpu_threads_before = target.pid.map(sys::cpu_by_thread).unwrap_or_default();
    let cpu_before = target.pid.and_then(sys::cpu_secs);
    let rss_start = target.pid.and_then(sys::rss_kib);
    let me = std::process::id();
    let remote = target.authority.is_none();
    let load_cpu_before = sys::cpu_secs(me).filter(|_| remote);
    let machine_before = sys::machine_ticks();
    let start = Instant::now();
    let deadline = args.duration.map(|d| start + Duration::from_secs_f64(d));
    let (stop_sampler, stop) = tokio::sync::oneshot::channel();
    let sampler = spawn_sampler(
        start,
        args.sample_every,
        args.verbose,
        target.pid,
        done.clone(),
        stop,
    );
    let pacing = match args.rate {
        None => {
            closed_loop(
                concurrency,
                limit,
                deadline,
                &tokens,
                &endpoint,
                &stats,
                &done,
            )
            .await;
            None
        }
        Some(rate) => Some(
            open_loop(
                rate,
                concurrency,
                limit,
                deadline,
                &tokens,
                &endpoint,
                &stats,
                &done,
            )
            .await?,
        ),
    };
    let elapsed = start.elapsed().as_secs_f64();
    let machine_cores_busy = machine_before
        .zip(sys::machine_ticks())
        .map(|(a, b)| sys::machine_cores_busy(a, b, cores));
    let load_cpu_secs = load_cpu_before.zip(sys::cpu_secs(me)).map(|(a, b)| b - a);
    let cpu_after = target.pid.and_then(sys::cpu_secs);
    let cpu_threads_after = target.pid.map(sys::cpu_by_thread).unwrap_or_default();
    let rss_end = target.pid.and_then(sys::rss_kib);
    let _ = stop_sampler.send(());
    let samples = sampler.await.unwrap_or_default();
    let stats = std::mem::take(&mut *lock(&stats));
    drop(tokens);
    all_serials.extend_from_slice(&stats.serials);

    // After the run: audit rows against certificates, and the chain.
    let writer = target.authority.as_ref().map(|a| a.audit.stats());
    let audit = audit_check(&args, &target, db_seq_before, &all_serials).await?;
    if let Some(tx) = target.shutdown.take() {
        let _ = tx.send(());
    }

    let issued = stats.issued;
    let cpu_secs = cpu_before.zip(cpu_after).map(|(a, b)| b - a);
    let cpu_by_thread: BTreeMap<String, f64> = cpu_threads_after
        .iter()
        .map(|(name, after)| {
            let before = cpu_threads_before.get(name).copied().unwrap_or(0.0);
            (name.clone(), after - before)
        })
        .filter(|(_, s)| *s > 0.0)
        .collect();
    let q = |p: f64| stats.latency.quantile(p) as f64 / 1000.0;
    let latency_ms: BTreeMap<String, f64> = [
        ("p50", q(0.50)),
        ("p90", q(0.90)),
        ("p99", q(0.99)),
        ("p99.9", q(0.999)),
        ("max", stats.latency.max() as f64 / 1000.0),
        ("mean", stats.latency.mean() / 1000.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let pacing_lag_ms = pacing.map(|h| {
        let q = |p: f64| h.quantile(p) as f64 / 1000.0;
        [
            ("p50", q(0.50)),
            ("p99", q(0.99)),
            ("max", h.max() as f64 / 1000.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    });
    let certs_per_sec = issued as f64 / elapsed;
    let report = Report {
        label: args.label.clone(),
        target: if target.authority.is_some() {
            "in-process".into()
        } else {
            target.url.clone()
        },
        mode: if args.rate.is_some() {
            "open".into()
        } else {
            "closed".into()
        },
        alg: args.alg,
        concurrency,
        rate: args.rate,
        threads,
        cores,
        subjects: args.subjects,
        rate_limited: !args.no_rate_limit,
        mint: if ahead.is_some() { "ahead" } else { "inline" }.into(),
        warmup: args.warmup,
        requests: stats.latency.count(),
        issued,
        errors: stats.errors.clone(),
        seconds: elapsed,
        certs_per_sec,
        raw_sign_per_sec: raw_sign,
        ratio_to_raw_sign: certs_per_sec / raw_sign,
        latency_ms,
        pacing_lag_ms,
        cpu_secs,
        cpu_us_per_cert: cpu_secs
            .filter(|_| issued > 0)
            .map(|s| s * 1e6 / issued as f64),
        cpu_by_thread,
        load_cpu_secs,
        load_us_per_cert: load_cpu_secs
            .filter(|_| issued > 0)
            .map(|s| s * 1e6 / issued as f64),
        machine_cores_busy,
        rss_kib_start: rss_start,
        rss_kib_end: rss_end,
        audit_commits: writer.map(|w| w.batches),
        audit_rows_per_commit: writer.map(|w| w.rows as f64 / w.batches.max(1) as f64),
        audit_largest_commit: writer.map(|w| w.largest_batch),
        audit,
        samples,
    };
    print_report(&report, &stats);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let audit_ok = report.audit.as_ref().is_none_or(AuditReport::ok);
    Ok(report.errors.is_empty() && audit_ok && issued > 0)
}

/// `GET /readyz` until it answers 200 (the CA fetches our keys meanwhile).
async fn wait_ready(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let last = match client.get(format!("{url}/readyz")).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("{url} is not ready after 40 s: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Send `--warmup` requests (concurrently, tokens minted inline), waiting up
/// to 40 s for the CA to accept our issuer's current keys, and check the
/// first certificate against the CA's published user CA key.
async fn warm_up(
    args: &Args,
    endpoint: &Endpoint,
    minter: &Minter,
    client: &reqwest::Client,
    url: &str,
    serials: &mut Vec<u64>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(40);
    // A CA that cached another run's keys fetches ours on the first unknown
    // `kid`, at most every 30 s: retry until it does.
    let first = loop {
        let token = minter.mint(0);
        match endpoint.request(0, &token).await {
            (Outcome::Issued { serial }, Some(cert)) => {
                serials.push(serial);
                break cert;
            }
            (Outcome::Failed { key, message }, _) => {
                if Instant::now() > deadline {
                    bail!("the CA refuses our tokens: {key}: {message}");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            (Outcome::Issued { .. }, None) => bail!("the CA returned no certificate"),
        }
    };
    let ca_pub = client
        .get(format!("{url}/v1/ca/user.pub"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let ca = ssh_key::PublicKey::from_openssh(ca_pub.trim())?;
    let cert = ssh_key::Certificate::from_openssh(&first)?;
    cert.validate_at(
        ca_server::clock::now_unix(),
        &[ca.fingerprint(ssh_key::HashAlg::Sha256)],
    )
    .context("the first certificate does not validate against the CA's user key")?;

    let rest = args.warmup.saturating_sub(1);
    let workers = 16.min(rest);
    let next = AtomicU64::new(1);
    let results = Mutex::new(Vec::new());
    let work = (0..workers).map(|_| async {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i > rest {
                break;
            }
            let token = minter.mint(i);
            let outcome = endpoint.request(i, &token).await.0;
            lock(&results).push(outcome);
        }
    });
    join_all(work).await;
    for outcome in results.into_inner().unwrap_or_else(PoisonError::into_inner) {
        match outcome {
            Outcome::Issued { serial } => serials.push(serial),
            Outcome::Failed { key, message } => bail!("warm-up request failed: {key}: {message}"),
        }
    }
    Ok(())
}

/// Runs futures concurrently on this task (no spawning: they borrow).
async fn join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

async fn closed_loop(
    concurrency: usize,
    limit: u64,
    deadline: Option<Instant>,
    tokens: &Arc<Tokens>,
    endpoint: &Arc<Endpoint>,
    stats: &Arc<Mutex<Stats>>,
    done: &Arc<AtomicU64>,
) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (next, tokens, endpoint, stats, done) = (
            next.clone(),
            tokens.clone(),
            endpoint.clone(),
            stats.clone(),
            done.clone(),
        );
        tasks.spawn(async move {
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit {
                    break;
                }
                let Some(token) = tokens.get(i) else { break };
                let sent = Instant::now();
                let (outcome, _) = endpoint.request(i, &token).await;
                lock(&stats).record(outcome, sent.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Open loop: a dedicated thread releases request `i` at `start + i/rate`
/// and returns how late each release was (µs).
///
/// Not tokio's timer: it rounds deadlines up to the next millisecond and,
/// in-process, fires only when a worker the CA keeps busy turns to its
/// driver. Paced by it, every request started 1–3 ms late (latency counts
/// from the schedule, so that was added to every percentile) and requests
/// left in bursts. A sleeping OS thread wakes within tens of µs.
#[allow(clippy::too_many_arguments)]
async fn open_loop(
    rate: f64,
    max_in_flight: usize,
    limit: u64,
    deadline: Option<Instant>,
    tokens: &Arc<Tokens>,
    endpoint: &Arc<Endpoint>,
    stats: &Arc<Mutex<Stats>>,
    done: &Arc<AtomicU64>,
) -> anyhow::Result<Histogram> {
    let handle = tokio::runtime::Handle::current();
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let (tokens, endpoint, stats, done, pacer_slots) = (
        tokens.clone(),
        endpoint.clone(),
        stats.clone(),
        done.clone(),
        slots.clone(),
    );
    let pacer = std::thread::Builder::new()
        .name("load-pacer".into())
        .spawn(move || {
            let slots = pacer_slots;
            let mut lag = Histogram::default();
            let start = Instant::now();
            let mut i = 0u64;
            while i < limit {
                let scheduled = start + Duration::from_secs_f64(i as f64 / rate);
                if deadline.is_some_and(|d| scheduled >= d) {
                    break;
                }
                if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                // Waiting for a slot delays the request, and the delay is
                // counted: latency runs from the scheduled start (no
                // coordinated omission).
                let slot = match slots.clone().try_acquire_owned() {
                    Ok(slot) => slot,
                    Err(tokio::sync::TryAcquireError::NoPermits) => {
                        match handle.block_on(slots.clone().acquire_owned()) {
                            Ok(slot) => slot,
                            Err(_) => break,
                        }
                    }
                    Err(tokio::sync::TryAcquireError::Closed) => break,
                };
                lag.record(u64::try_from(scheduled.elapsed().as_micros()).unwrap_or(u64::MAX));
                let (tokens, endpoint, stats, done) = (
                    tokens.clone(),
                    endpoint.clone(),
                    stats.clone(),
                    done.clone(),
                );
                handle.spawn(async move {
                    if let Some(token) = tokens.get(i) {
                        let (outcome, _) = endpoint.request(i, &token).await;
                        lock(&stats).record(outcome, scheduled.elapsed());
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    drop(slot);
                });
                i += 1;
            }
            lag
        })
        .context("starting the pacing thread")?;
    let lag = tokio::task::spawn_blocking(move || pacer.join())
        .await
        .context("waiting for the pacing thread")?
        .map_err(|_| anyhow::anyhow!("the pacing thread panicked"))?;
    // Wait for the requests in flight.
    let all = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(lag)
}

/// Records a [`Sample`] every `every` seconds until `stop` fires, then
/// returns them.
fn spawn_sampler(
    start: Instant,
    every: f64,
    verbose: bool,
    pid: Option<u32>,
    done: Arc<AtomicU64>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<Vec<Sample>> {
    let every = Duration::from_secs_f64(every.max(0.1));
    tokio::spawn(async move {
        let mut samples = Vec::new();
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::from_std(start) + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut last_done, mut last_cpu, mut last_t) = (0, pid.and_then(sys::cpu_secs), 0.0);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stop => return samples,
            }
            let t = start.elapsed().as_secs_f64();
            let n = done.load(Ordering::Relaxed);
            let cpu = pid.and_then(sys::cpu_secs);
            let sample = Sample {
                t,
                per_sec: (n - last_done) as f64 / (t - last_t),
                rss_kib: pid.and_then(sys::rss_kib),
                cpu_cores: cpu.zip(last_cpu).map(|(c, l)| (c - l) / (t - last_t)),
            };
            if verbose {
                eprintln!(
                    "  t={:7.1}s  {:8.0} req/s  rss {:>8} KiB  cpu {:.2} cores",
                    sample.t,
                    sample.per_sec,
                    sample.rss_kib.map_or("-".into(), |r| r.to_string()),
                    sample.cpu_cores.unwrap_or(f64::NAN)
                );
            }
            samples.push(sample);
            (last_done, last_cpu, last_t) = (n, cpu, t);
        }
    })
}

async fn audit_check(
    args: &Args,
    target: &Target,
    seq_before: Option<u64>,
    serials: &[u64],
) -> anyhow::Result<Option<AuditReport>> {
    let since = seq_before.unwrap_or(0);
    let (issued_rows, certificates, unknown_serials, missing_rows) =
        match (&target.authority, &target.db) {
            (Some(authority), _) => check::compare_store(&authority.audit, since, serials)?,
            (None, Some(db)) => check::compare(db, since, serials)?,
            (None, None) => {
                eprintln!("audit check skipped: give --db with --url to check the CA's audit log");
                return Ok(None);
            }
        };
    let (chain_ok, chain_rows, verified_by) = match &target.authority {
        Some(authority) => {
            let report = authority.audit.verify()?;
            (report.is_ok(), report.rows, "AuditStore::verify".to_owned())
        }
        None => {
            let Some(bin) = args.ca_bin.clone().or_else(check::sibling_ca_bin) else {
                bail!("cannot verify the chain: give --ca-bin PATH (the jitssh-ca binary)");
            };
            let Some(db) = &target.db else {
                bail!("internal: a served target without --db");
            };
            let (ok, rows) = check::verify_with_cli(&bin, db)?;
            (
                ok,
                rows,
                format!("{} audit --db {} verify", bin.display(), db.display()),
            )
        }
    };
    Ok(Some(AuditReport {
        issued_rows,
        certificates,
        unknown_serials,
        missing_rows,
        chain_rows,
        chain_ok,
        verified_by,
    }))
}

fn print_report(r: &Report, stats: &Stats) {
    let l = &r.latency_ms;
    let ms = |k: &str| l.get(k).copied().unwrap_or(0.0);
    println!(
        "target:       {} ({} mode{}), {} tokens, {} worker threads on {} cores",
        r.target,
        r.mode,
        r.rate
            .map_or(format!(", concurrency {}", r.concurrency), |rate| format!(
                ", {rate}/s, at most {} in flight",
                r.concurrency
            )),
        r.alg,
        r.threads,
        r.cores
    );
    println!(
        "raw signing:  {:.0} Ed25519 signatures/s on one core ({:.1} µs each), measured in this run",
        r.raw_sign_per_sec,
        1e6 / r.raw_sign_per_sec
    );
    println!(
        "requests:     {} in {:.2} s ({} ok, {} failed; {} warm-up before)",
        r.requests,
        r.seconds,
        r.issued,
        r.requests - r.issued,
        r.warmup
    );
    println!(
        "throughput:   {:.0} certificates/s = {:.3} × the raw single-core signing rate",
        r.certs_per_sec, r.ratio_to_raw_sign
    );
    println!(
        "latency ms:   p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  mean {:.2}",
        ms("p50"),
        ms("p90"),
        ms("p99"),
        ms("p99.9"),
        ms("max"),
        ms("mean")
    );
    if let Some(p) = &r.pacing_lag_ms {
        let ms = |k: &str| p.get(k).copied().unwrap_or(f64::NAN);
        println!(
            "pacing:       requests released p50 {:.3}  p99 {:.3}  max {:.3} ms after their scheduled start (counted in the latency)",
            ms("p50"),
            ms("p99"),
            ms("max")
        );
    }
    if r.errors.is_empty() {
        println!("errors:       none");
    } else {
        for (k, n) in &r.errors {
            let msg = stats.first_error.get(k).map_or("", String::as_str);
            println!("errors:       {n} × {k}: {msg}");
        }
    }
    if let (Some(cpu), Some(per)) = (r.cpu_secs, r.cpu_us_per_cert) {
        let threads: Vec<String> = r
            .cpu_by_thread
            .iter()
            .map(|(k, v)| format!("{k} {v:.2} s"))
            .collect();
        println!(
            "cpu:          {cpu:.2} s = {:.2} cores busy, {per:.0} µs per certificate{} [{}]",
            cpu / r.seconds,
            if r.target == "in-process" {
                " (CA and load together)"
            } else {
                " (server)"
            },
            threads.join(", ")
        );
    }
    if let (Some(cpu), Some(per)) = (r.load_cpu_secs, r.load_us_per_cert) {
        println!("load cpu:     {cpu:.2} s, {per:.0} µs per certificate (this load generator)");
    }
    if let Some(busy) = r.machine_cores_busy {
        let ours = r.cpu_secs.unwrap_or(0.0) + r.load_cpu_secs.unwrap_or(0.0);
        println!(
            "machine:      {busy:.2} of {} cores busy; {:.2} of them by other processes",
            r.cores,
            (busy - ours / r.seconds).max(0.0)
        );
    }
    if let (Some(a), Some(b)) = (r.rss_kib_start, r.rss_kib_end) {
        println!("memory:       RSS {a} KiB at start, {b} KiB at end");
    }
    if let Some(c) = r.audit_commits {
        println!(
            "group commit: {} commits, {:.1} rows per commit (largest {})",
            c,
            r.audit_rows_per_commit.unwrap_or(0.0),
            r.audit_largest_commit.unwrap_or(0)
        );
    }
    match &r.audit {
        Some(a) => println!(
            "audit:        {} issued rows for {} certificates ({} unknown, {} missing); chain {} over {} rows ({}) => {}",
            a.issued_rows,
            a.certificates,
            a.unknown_serials,
            a.missing_rows,
            if a.chain_ok { "verified" } else { "BROKEN" },
            a.chain_rows,
            a.verified_by,
            if a.ok() { "OK" } else { "FAILED" }
        ),
        None => println!("audit:        not checked"),
    }
}
