//! The Rego policy engine: load, test and compile a policy directory once,
//! serve `data.jitssh.decision` (user certificates) and, when the set defines
//! it, `data.jitssh.host_decision` (host certificates) from the compiled
//! policy, and swap in a new policy atomically when it changes — only if it
//! compiles and its tests pass. A set without `host_decision` denies every
//! host certificate.
//!
//! A policy set is every `*.rego` file (tests included) and every
//! `data*.json` file directly in one directory; nothing else is read. Its
//! identity is [`PolicyEngine::policy_hash`], recorded in every audit row.
//! A set serves only if it compiles, every `test_*` rule in every package
//! evaluates to `true`, and the decision evaluates without error on the
//! documented sample input ([`SAMPLE_CHECK`]; and [`HOST_SAMPLE_CHECK`] when
//! the set has a host decision).
//!
//! Evaluation is lock-free: the serving policy is a [`regorus::CompiledPolicy`]
//! behind an [`ArcSwap`], shared by every request. Compiled policies take
//! their time limit from regorus's process-wide fallback, which this module
//! installs (see [`EVAL_TIME_LIMIT`]); nothing else in the process uses regorus.

mod regex_match;

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use ca_core::elevation::RoleTable;
use regorus::utils::limits::{
    ExecutionTimerConfig, fallback_execution_timer_config, set_fallback_execution_timer_config,
};
use regorus::{CompiledPolicy, Engine, LimitError};
use serde::Deserialize as _;
use sha2::{Digest as _, Sha256};

/// The rule the server evaluates.
pub const DECISION_RULE: &str = "data.jitssh.decision";

/// The rule the server evaluates for host certificates. Optional: a policy
/// set without it serves user certificates and denies every host certificate.
pub const HOST_DECISION_RULE: &str = "data.jitssh.host_decision";

/// The role table for just-in-time elevation: an object from role name to
/// `{principals, max_ttl_seconds, description}`, evaluated once per policy
/// load with an empty input. Optional: without it elevation is off.
pub const ROLES_RULE: &str = "data.jitssh.roles";

/// The decision on a new elevation request (approve, pending, deny).
/// Required when the policy defines roles.
pub const ELEVATION_DECISION_RULE: &str = "data.jitssh.elevation_decision";

/// Whether a given person may approve or deny a given elevation request.
/// Required when the policy defines roles.
pub const APPROVAL_DECISION_RULE: &str = "data.jitssh.approval_decision";

/// Wall-clock budget for one decision. The default policy takes well under a
/// millisecond; a policy that needs more than this is broken (a runaway
/// comprehension), and the request is denied rather than holding a core.
///
/// regorus measures wall-clock time only (no CPU-time source on `std`), so
/// the budget must absorb scheduling delays: at 250 ms a load test on two
/// oversubscribed cores saw a healthy decision descheduled past the limit
/// and denied. One second still stops a runaway policy quickly.
pub const EVAL_TIME_LIMIT: Duration = Duration::from_secs(1);

/// Wall-clock budget for one `test_*` rule (tests build inputs and may be
/// slow in debug builds).
pub const TEST_TIME_LIMIT: Duration = Duration::from_secs(10);

/// The default policy shipped in `policies/`, for `jitssh-ca dev`, for
/// `jitssh-ca init` to copy, and for tests. Only the `*.rego` and
/// `data*.json` entries are part of the policy set.
pub const EMBEDDED_FILES: &[(&str, &str)] = &[
    ("README.md", include_str!("../../policies/README.md")),
    ("data.json", include_str!("../../policies/data.json")),
    (
        "example-input.json",
        include_str!("../../policies/example-input.json"),
    ),
    (
        "example-host-input.json",
        include_str!("../../policies/example-host-input.json"),
    ),
    ("host.rego", include_str!("../../policies/host.rego")),
    (
        "host_test.rego",
        include_str!("../../policies/host_test.rego"),
    ),
    (
        "example-elevation-input.json",
        include_str!("../../policies/example-elevation-input.json"),
    ),
    (
        "example-approval-input.json",
        include_str!("../../policies/example-approval-input.json"),
    ),
    (
        "elevation.rego",
        include_str!("../../policies/elevation.rego"),
    ),
    (
        "elevation_test.rego",
        include_str!("../../policies/elevation_test.rego"),
    ),
    ("jitssh.rego", include_str!("../../policies/jitssh.rego")),
    (
        "jitssh_test.rego",
        include_str!("../../policies/jitssh_test.rego"),
    ),
    (
        "workload.rego",
        include_str!("../../policies/workload.rego"),
    ),
    (
        "workload_test.rego",
        include_str!("../../policies/workload_test.rego"),
    ),
];

/// Why a policy could not be loaded, tested or evaluated. Messages name the
/// file and carry regorus's own message (with line and column) where it has one.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "cannot read the policy directory {}: {}; give the folder with the .rego files (default ./policies)",
        dir.display(),
        crate::io_reason::io_reason(.error)
    )]
    ReadDir {
        dir: PathBuf,
        /// Not a `source`: the message already says it, once.
        error: std::io::Error,
    },
    #[error("cannot read policy file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy file {} is not UTF-8 text", path.display())]
    NotUtf8 { path: PathBuf },
    #[error(
        "no *.rego files in {origin}: point the policy directory at the folder holding jitssh.rego"
    )]
    NoPolicy { origin: String },
    #[error("data file {file} in {origin} is not usable: {message}")]
    Data {
        origin: String,
        file: String,
        message: String,
    },
    #[error(
        "data file {file} in {origin} defines data.{package}, which is also a policy package: \
         move that data under a key no package uses (the default policy reads data.jitssh_config)"
    )]
    DataShadowsPackage {
        origin: String,
        file: String,
        package: String,
    },
    #[error("{file} in {origin} does not parse: {message}")]
    Parse {
        origin: String,
        file: String,
        message: String,
    },
    #[error(
        "the policy in {origin} defines no `decision` rule in `package jitssh`; \
         the server evaluates {DECISION_RULE}"
    )]
    NoDecision { origin: String },
    #[error("the policy in {origin} does not compile: {message}")]
    Compile { origin: String, message: String },
    #[error(
        "{failed} of {total} policy tests failed in {origin} \
         (run `jitssh-ca policy test` for details): {summary}"
    )]
    TestsFailed {
        origin: String,
        failed: usize,
        total: usize,
        summary: String,
    },
    #[error(
        "the policy (policy {policy_hash}) defines no `host_decision` rule in `package jitssh`, \
         so every host certificate is denied; add host.rego from the default policy to serve {HOST_DECISION_RULE}"
    )]
    NoHostDecision { policy_hash: String },
    #[error(
        "the policy (policy {policy_hash}) defines no roles, so there is nothing to elevate to; \
         add roles (see elevation.rego in the default policy) to serve {ELEVATION_DECISION_RULE}"
    )]
    NoElevation { policy_hash: String },
    #[error("the role table {ROLES_RULE} in {origin} is not usable: {message}")]
    Roles { origin: String, message: String },
    #[error("the input document cannot be handed to the policy: {0}")]
    Input(String),
    #[error(
        "policy evaluation exceeded its {limit:?} time limit (policy {policy_hash}); \
         look for a runaway comprehension or iteration"
    )]
    TimeLimit {
        limit: Duration,
        policy_hash: String,
    },
    #[error("policy evaluation failed (policy {policy_hash}): {message}")]
    Eval {
        policy_hash: String,
        message: String,
    },
    #[error(
        "the policy's decision is not representable as JSON (policy {policy_hash}): {message}; \
         object keys must be strings and numbers must fit 64 bits"
    )]
    NotJson {
        policy_hash: String,
        message: String,
    },
}

/// One decision.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// `None` when `data.jitssh.decision` is undefined (the server denies).
    pub decision: Option<serde_json::Value>,
    /// The policy set that decided.
    pub policy_hash: String,
    /// Time spent converting the input, evaluating and converting the result.
    pub elapsed: Duration,
}

/// What [`PolicyEngine::reload`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files hash the same as the serving policy (or the policy is the
    /// embedded default, which cannot change): nothing was swapped.
    Unchanged { policy_hash: String },
    /// A new policy compiled, passed its tests and now serves.
    Reloaded {
        previous_hash: String,
        policy_hash: String,
        tests_passed: usize,
    },
}

/// The outcome of one `test_*` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    /// Full rule path, e.g. `data.jitssh.test_alice_gets_username`.
    pub name: String,
    pub passed: bool,
    /// Why it failed: the value it produced instead of `true`, or the error.
    pub error: Option<String>,
}

/// Every `test_*` rule of a policy set, in rule-path order, then [`SAMPLE_CHECK`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestReport {
    pub results: Vec<TestResult>,
}

impl TestReport {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    fn failure_summary(&self) -> String {
        let failures: Vec<String> = self
            .results
            .iter()
            .filter(|r| !r.passed)
            .map(|r| match &r.error {
                Some(e) => format!("{} ({e})", r.name),
                None => r.name.clone(),
            })
            .collect();
        failures.join("; ")
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.results {
            match (&r.passed, &r.error) {
                (true, _) => writeln!(f, "PASS {}", r.name)?,
                (false, Some(e)) => writeln!(f, "FAIL {}: {e}", r.name)?,
                (false, None) => writeln!(f, "FAIL {}", r.name)?,
            }
        }
        write!(f, "{} passed, {} failed", self.passed(), self.failed())
    }
}

/// Run every `test_*` rule of the policy set in `dir`. `Err` only when the
/// set cannot be read or does not compile; failing tests are in the report.
pub fn run_tests(dir: &Path) -> Result<TestReport, PolicyError> {
    let files = PolicyFiles::read_dir(dir)?;
    Ok(Prepared::build(&files)?.report)
}

/// [`run_tests`] on the embedded default policy.
pub fn run_embedded_tests() -> Result<TestReport, PolicyError> {
    Ok(Prepared::build(&PolicyFiles::embedded())?.report)
}

/// The serving policy, swappable at run time. `Send + Sync`; share it in an `Arc`.
pub struct PolicyEngine {
    /// `None` for the embedded default.
    dir: Option<PathBuf>,
    current: ArcSwap<Serving>,
    /// Serialises reloads (file watcher and SIGHUP) and holds the content hash
    /// of the last refused change, so the watcher neither retries nor
    /// re-logs it. Evaluation never takes it.
    last_refused: Mutex<Option<String>>,
}

/// One compiled, tested policy set.
struct Serving {
    policy: CompiledPolicy,
    /// `data.jitssh.host_decision`, when the set defines it.
    host: Option<CompiledPolicy>,
    /// Elevation entry points, when the set defines roles.
    elevation: Option<ElevationRules>,
    roles: Arc<RoleTable>,
    hash: String,
}

/// The two elevation entry points; present together with a role table.
struct ElevationRules {
    request: CompiledPolicy,
    approval: CompiledPolicy,
}

/// One loaded policy set, as it was when [`PolicyEngine::snapshot`] took it:
/// its decisions, role table and hash all from the same version, whatever
/// reloads happen meanwhile. Cheap to take (one reference count).
#[derive(Clone)]
pub struct PolicySnapshot(Arc<Serving>);

impl fmt::Debug for PolicySnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PolicySnapshot").field(&self.0.hash).finish()
    }
}

impl PolicySnapshot {
    /// Evaluate `data.jitssh.decision` for `input`. Any evaluation error,
    /// timeout or non-JSON decision is an `Err`; the caller denies.
    pub fn evaluate(&self, input: &serde_json::Value) -> Result<Evaluation, PolicyError> {
        self.0.evaluate(input)
    }

    /// Evaluate `data.jitssh.host_decision` for `input`. A policy set without
    /// that rule is an `Err` (fail closed), like any evaluation error.
    pub fn evaluate_host(&self, input: &serde_json::Value) -> Result<Evaluation, PolicyError> {
        let start = Instant::now();
        let Some(host) = &self.0.host else {
            return Err(PolicyError::NoHostDecision {
                policy_hash: self.0.hash.clone(),
            });
        };
        eval_compiled(host, &self.0.hash, input, start)
    }

    /// Evaluate `data.jitssh.elevation_decision` for `input`. A policy set
    /// without roles is an `Err` (fail closed).
    pub fn evaluate_elevation(&self, input: &serde_json::Value) -> Result<Evaluation, PolicyError> {
        let start = Instant::now();
        let rules = self.0.elevation_rules()?;
        eval_compiled(&rules.request, &self.0.hash, input, start)
    }

    /// Evaluate `data.jitssh.approval_decision` for `input`.
    pub fn evaluate_approval(&self, input: &serde_json::Value) -> Result<Evaluation, PolicyError> {
        let start = Instant::now();
        let rules = self.0.elevation_rules()?;
        eval_compiled(&rules.approval, &self.0.hash, input, start)
    }

    /// The role table (empty when elevation is off).
    pub fn roles(&self) -> &Arc<RoleTable> {
        &self.0.roles
    }

    /// The policy set's hash (see [`PolicyEngine::policy_hash`]).
    pub fn hash(&self) -> &str {
        &self.0.hash
    }
}

impl Serving {
    fn evaluate(&self, input: &serde_json::Value) -> Result<Evaluation, PolicyError> {
        let start = Instant::now();
        eval_compiled(&self.policy, &self.hash, input, start)
    }

    fn elevation_rules(&self) -> Result<&ElevationRules, PolicyError> {
        self.elevation
            .as_ref()
            .ok_or_else(|| PolicyError::NoElevation {
                policy_hash: self.hash.clone(),
            })
    }
}

impl fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("dir", &self.dir)
            .field("policy_hash", &self.current.load().hash)
            .finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// Load, compile and test the policy set in `dir`. Refuses a set that
    /// does not compile or whose tests (or the sample check) fail.
    pub fn load_dir(dir: &Path) -> Result<Self, PolicyError> {
        let files = PolicyFiles::read_dir(dir)?;
        let serving = Prepared::build(&files)?.into_serving()?;
        tracing::info!(dir = %dir.display(), policy_hash = %serving.hash, "policy loaded");
        Ok(Self::new(Some(dir.to_path_buf()), serving))
    }

    /// The default policy compiled into the binary (`policies/` in the source tree).
    pub fn load_embedded_default() -> Result<Self, PolicyError> {
        let serving = Prepared::build(&PolicyFiles::embedded())?.into_serving()?;
        Ok(Self::new(None, serving))
    }

    fn new(dir: Option<PathBuf>, serving: Serving) -> Self {
        install_time_limit();
        PolicyEngine {
            dir,
            current: ArcSwap::from_pointee(serving),
            last_refused: Mutex::new(None),
        }
    }

    /// The serving policy as it is now. A request that asks the policy more
    /// than one thing (a decision and the role table, or two decisions)
    /// takes one snapshot and asks it everything, so a reload in between
    /// cannot mix two versions.
    pub fn snapshot(&self) -> PolicySnapshot {
        PolicySnapshot(self.current.load_full())
    }

    /// Evaluate `data.jitssh.decision` for `input` on the serving policy
    /// (see [`PolicySnapshot::evaluate`]).
    pub fn evaluate(&self, input: &serde_json::Value) -> Result<Evaluation, PolicyError> {
        self.current.load().evaluate(input)
    }

    /// Whether the serving policy defines `data.jitssh.host_decision`.
    pub fn has_host_decision(&self) -> bool {
        self.current.load().host.is_some()
    }

    /// Hex SHA-256 of the serving policy set: its files in name order, each as
    /// name length (u64 BE), name, content length (u64 BE), content.
    pub fn policy_hash(&self) -> String {
        self.current.load().hash.clone()
    }

    /// The directory this policy was loaded from; `None` for the embedded default.
    pub fn source_dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Re-read the policy directory. Unchanged content does nothing; new
    /// content serves only if it compiles and its tests pass, otherwise the
    /// old policy keeps serving and the error says why.
    pub fn reload(&self) -> Result<ReloadOutcome, PolicyError> {
        let Some(dir) = &self.dir else {
            return Ok(ReloadOutcome::Unchanged {
                policy_hash: self.policy_hash(),
            });
        };
        let files = PolicyFiles::read_dir(dir)?;
        self.reload_files(&files)
    }

    fn reload_files(&self, files: &PolicyFiles) -> Result<ReloadOutcome, PolicyError> {
        let mut last_refused = self
            .last_refused
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let previous_hash = self.policy_hash();
        let hash = files.hash();
        if hash == previous_hash {
            *last_refused = None;
            return Ok(ReloadOutcome::Unchanged { policy_hash: hash });
        }
        let (serving, tests_passed) =
            match Prepared::build(files).and_then(Prepared::into_serving_with_count) {
                Ok(built) => built,
                Err(e) => {
                    *last_refused = Some(hash);
                    return Err(e);
                }
            };
        *last_refused = None;
        self.current.store(Arc::new(serving));
        Ok(ReloadOutcome::Reloaded {
            previous_hash,
            policy_hash: hash,
            tests_passed,
        })
    }

    /// Poll the policy directory every `interval` and reload when a file's
    /// name, size or mtime changes. A refused change (here or by
    /// [`reload`](Self::reload)) is logged once; the next change is tried
    /// again. Does nothing for the embedded default.
    pub fn spawn_watcher(self: Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let Some(dir) = self.dir.clone() else {
                tracing::debug!("embedded policy: nothing to watch");
                return;
            };
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            let mut watch = WatchState::default();
            loop {
                ticker.tick().await;
                let engine = Arc::clone(&self);
                let dir = dir.clone();
                let state = std::mem::take(&mut watch);
                match tokio::task::spawn_blocking(move || engine.poll(&dir, state)).await {
                    Ok(next) => watch = next,
                    Err(e) => {
                        tracing::error!(error = %e, "policy watcher poll panicked; watching on");
                    }
                }
            }
        })
    }

    /// One watcher step: cheap metadata check, then a content reload if it moved.
    fn poll(&self, dir: &Path, mut state: WatchState) -> WatchState {
        let stamp = match stamp_dir(dir) {
            Ok(s) => s,
            Err(e) => {
                if state.stamp.is_some() {
                    tracing::error!(error = %e, "cannot read the policy directory; the current policy keeps serving");
                }
                state.stamp = None;
                return state;
            }
        };
        if state.stamp.as_ref() == Some(&stamp) {
            return state;
        }
        state.stamp = Some(stamp);
        let files = match PolicyFiles::read_dir(dir) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "policy change refused; the previous policy keeps serving");
                return state;
            }
        };
        let already_refused = self
            .last_refused
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .is_some_and(|refused| *refused == files.hash());
        if already_refused {
            return state;
        }
        match self.reload_files(&files) {
            Ok(ReloadOutcome::Unchanged { .. }) => {}
            Ok(ReloadOutcome::Reloaded {
                previous_hash,
                policy_hash,
                tests_passed,
            }) => {
                tracing::info!(%previous_hash, %policy_hash, tests_passed, dir = %dir.display(), "policy reloaded after a file change");
            }
            Err(e) => {
                tracing::error!(error = %e, policy_hash = %self.policy_hash(), "policy change refused; the previous policy keeps serving");
            }
        }
        state
    }
}

/// Evaluate one compiled entry point for `input`, mapping every failure to
/// a [`PolicyError`] naming the policy set.
fn eval_compiled(
    policy: &CompiledPolicy,
    policy_hash: &str,
    input: &serde_json::Value,
    start: Instant,
) -> Result<Evaluation, PolicyError> {
    let input =
        regorus::Value::deserialize(input).map_err(|e| PolicyError::Input(e.to_string()))?;
    let value =
        policy
            .eval_with_input(input)
            .map_err(|e| match e.downcast_ref::<LimitError>() {
                Some(LimitError::TimeLimitExceeded { limit, .. }) => PolicyError::TimeLimit {
                    limit: *limit,
                    policy_hash: policy_hash.to_owned(),
                },
                _ => PolicyError::Eval {
                    policy_hash: policy_hash.to_owned(),
                    message: one_line(&format!("{e:#}")),
                },
            })?;
    let decision = match value {
        regorus::Value::Undefined => None,
        v => Some(to_json(&v, 0).map_err(|message| PolicyError::NotJson {
            policy_hash: policy_hash.to_owned(),
            message,
        })?),
    };
    Ok(Evaluation {
        decision,
        policy_hash: policy_hash.to_owned(),
        elapsed: start.elapsed(),
    })
}

#[derive(Default)]
struct WatchState {
    /// Names, sizes and mtimes at the last poll; `None` before the first.
    stamp: Option<BTreeMap<String, (u64, Option<SystemTime>)>>,
}

fn stamp_dir(dir: &Path) -> Result<BTreeMap<String, (u64, Option<SystemTime>)>, PolicyError> {
    let mut stamp = BTreeMap::new();
    for (name, path) in list_policy_files(dir)? {
        let meta = std::fs::metadata(&path).map_err(|source| PolicyError::ReadFile {
            path: path.clone(),
            source,
        })?;
        stamp.insert(name, (meta.len(), meta.modified().ok()));
    }
    Ok(stamp)
}

/// Whether a file name belongs to a policy set. Hidden files (editor
/// backups and locks) are never part of one.
fn is_policy_file(name: &str) -> bool {
    !name.starts_with('.')
        && (name.ends_with(".rego") || (name.starts_with("data") && name.ends_with(".json")))
}

fn list_policy_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, PolicyError> {
    let read_dir_err = |error| PolicyError::ReadDir {
        dir: dir.to_path_buf(),
        error,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_dir_err)? {
        let entry = entry.map_err(read_dir_err)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !is_policy_file(&name) {
            continue;
        }
        let path = entry.path();
        // Follow symlinks (deployments often link a release directory in).
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            out.push((name, path));
        }
    }
    out.sort();
    Ok(out)
}

/// The files of one policy set, sorted by name.
struct PolicyFiles {
    origin: String,
    files: Vec<(String, String)>,
}

impl PolicyFiles {
    fn read_dir(dir: &Path) -> Result<Self, PolicyError> {
        let mut files = Vec::new();
        for (name, path) in list_policy_files(dir)? {
            let bytes = std::fs::read(&path).map_err(|source| PolicyError::ReadFile {
                path: path.clone(),
                source,
            })?;
            let text = String::from_utf8(bytes).map_err(|_| PolicyError::NotUtf8 { path })?;
            files.push((name, text));
        }
        Ok(PolicyFiles {
            origin: dir.display().to_string(),
            files,
        })
    }

    fn embedded() -> Self {
        let mut files: Vec<(String, String)> = EMBEDDED_FILES
            .iter()
            .filter(|(name, _)| is_policy_file(name))
            .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
            .collect();
        files.sort();
        PolicyFiles {
            origin: "the embedded default policy".into(),
            files,
        }
    }

    /// Hex SHA-256 over each file in name order: name length (u64 BE), name,
    /// content length (u64 BE), content. Length prefixes make the encoding
    /// unambiguous; the same files hash the same wherever they live.
    fn hash(&self) -> String {
        let mut h = Sha256::new();
        for (name, text) in &self.files {
            h.update((name.len() as u64).to_be_bytes());
            h.update(name.as_bytes());
            h.update((text.len() as u64).to_be_bytes());
            h.update(text.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// A policy set parsed, compiled and tested (tests may have failed).
struct Prepared {
    origin: String,
    policy: CompiledPolicy,
    host: Option<CompiledPolicy>,
    elevation: Option<ElevationRules>,
    roles: Arc<RoleTable>,
    hash: String,
    report: TestReport,
}

impl Prepared {
    fn build(files: &PolicyFiles) -> Result<Self, PolicyError> {
        let origin = &files.origin;
        let mut engine = Engine::new();
        engine.set_rego_v0(false);
        engine.set_strict_builtin_errors(true);
        regex_match::install(&mut engine).map_err(|e| PolicyError::Compile {
            origin: origin.clone(),
            message: format!("installing regex.match: {e}"),
        })?;
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit: TEST_TIME_LIMIT,
            check_interval: CHECK_INTERVAL,
        });

        let mut data_files = Vec::new();
        let mut rego_files = 0usize;
        for (name, text) in &files.files {
            if name.ends_with(".rego") {
                engine
                    .add_policy(name.clone(), text.clone())
                    .map_err(|e| PolicyError::Parse {
                        origin: origin.clone(),
                        file: name.clone(),
                        message: one_line(&format!("{e:#}")),
                    })?;
                rego_files += 1;
            } else {
                let data_err = |message: String| PolicyError::Data {
                    origin: origin.clone(),
                    file: name.clone(),
                    message,
                };
                let json: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| data_err(e.to_string()))?;
                if !json.is_object() {
                    return Err(data_err("the top level must be a JSON object".into()));
                }
                let value =
                    regorus::Value::deserialize(&json).map_err(|e| data_err(e.to_string()))?;
                engine
                    .add_data(value)
                    .map_err(|e| data_err(format!("{e:#}")))?;
                data_files.push((name, json));
            }
        }
        if rego_files == 0 {
            return Err(PolicyError::NoPolicy {
                origin: origin.clone(),
            });
        }

        let packages =
            engine
                .get_policy_package_components()
                .map_err(|e| PolicyError::Compile {
                    origin: origin.clone(),
                    message: format!("{e:#}"),
                })?;
        for (file, json) in &data_files {
            for package in &packages {
                if json_path_exists(json, &package.components) {
                    return Err(PolicyError::DataShadowsPackage {
                        origin: origin.clone(),
                        file: (*file).clone(),
                        package: package.components.join("."),
                    });
                }
            }
        }

        let policy = engine
            .compile_with_entrypoint(&DECISION_RULE.into())
            .map_err(|e| {
                let message = one_line(&format!("{e:#}"));
                let has_package = packages.iter().any(|p| p.components == ["jitssh"]);
                if !has_package || message.contains("not a valid rule path") {
                    PolicyError::NoDecision {
                        origin: origin.clone(),
                    }
                } else {
                    PolicyError::Compile {
                        origin: origin.clone(),
                        message,
                    }
                }
            })?;

        // The host entry point is optional; when it exists it must compile.
        let host = if policy.get_rules().contains_key(HOST_DECISION_RULE) {
            Some(
                engine
                    .compile_with_entrypoint(&HOST_DECISION_RULE.into())
                    .map_err(|e| PolicyError::Compile {
                        origin: origin.clone(),
                        message: one_line(&format!("{e:#}")),
                    })?,
            )
        } else {
            None
        };

        // Elevation: a role table (checked now, once) and both decisions.
        let mut compile = |rule: &str| {
            engine
                .compile_with_entrypoint(&rule.into())
                .map_err(|e| PolicyError::Compile {
                    origin: origin.clone(),
                    message: one_line(&format!("{e:#}")),
                })
        };
        let rules = policy.get_rules();
        let (roles, elevation) = if rules.contains_key(ROLES_RULE) {
            let roles_policy = compile(ROLES_RULE)?;
            let value = roles_policy
                .eval_with_input(regorus::Value::new_object())
                .map_err(|e| PolicyError::Roles {
                    origin: origin.clone(),
                    message: one_line(&format!("{e:#}")),
                })?;
            let json = match value {
                regorus::Value::Undefined => None,
                v => Some(to_json(&v, 0).map_err(|message| PolicyError::Roles {
                    origin: origin.clone(),
                    message,
                })?),
            };
            let roles = RoleTable::parse(json.as_ref()).map_err(|message| PolicyError::Roles {
                origin: origin.clone(),
                message,
            })?;
            if roles.is_empty() {
                (roles, None)
            } else {
                for rule in [ELEVATION_DECISION_RULE, APPROVAL_DECISION_RULE] {
                    if !rules.contains_key(rule) {
                        return Err(PolicyError::Roles {
                            origin: origin.clone(),
                            message: format!("roles are defined but {rule} is not"),
                        });
                    }
                }
                let elevation = ElevationRules {
                    request: compile(ELEVATION_DECISION_RULE)?,
                    approval: compile(APPROVAL_DECISION_RULE)?,
                };
                (roles, Some(elevation))
            }
        } else {
            (RoleTable::default(), None)
        };

        let mut tests: Vec<String> = policy
            .get_rules()
            .keys()
            .filter(|path| {
                path.rsplit('.')
                    .next()
                    .is_some_and(|last| last.starts_with("test_"))
            })
            .cloned()
            .collect();
        tests.sort();
        tests.dedup();
        let mut results: Vec<TestResult> = tests
            .into_iter()
            .map(|name| run_test(&mut engine, name))
            .collect();
        results.push(sample_check(&policy));
        if let Some(host) = &host {
            results.push(host_sample_check(host));
        }
        if let Some(rules) = &elevation {
            results.push(check_on_sample(
                &rules.request,
                ELEVATION_SAMPLE_CHECK,
                ELEVATION_SAMPLE_INPUT,
            ));
            results.push(check_on_sample(
                &rules.approval,
                APPROVAL_SAMPLE_CHECK,
                APPROVAL_SAMPLE_INPUT,
            ));
        }

        Ok(Prepared {
            origin: origin.clone(),
            policy,
            host,
            elevation,
            roles: Arc::new(roles),
            hash: files.hash(),
            report: TestReport { results },
        })
    }

    /// [`Self::into_serving`], with how many tests passed.
    fn into_serving_with_count(self) -> Result<(Serving, usize), PolicyError> {
        let passed = self.report.passed();
        Ok((self.into_serving()?, passed))
    }

    /// The policy, if every test passed.
    fn into_serving(self) -> Result<Serving, PolicyError> {
        let failed = self.report.failed();
        if failed > 0 {
            return Err(PolicyError::TestsFailed {
                origin: self.origin,
                failed,
                total: self.report.results.len(),
                summary: self.report.failure_summary(),
            });
        }
        Ok(Serving {
            policy: self.policy,
            host: self.host,
            elevation: self.elevation,
            roles: self.roles,
            hash: self.hash,
        })
    }
}

/// Name of the built-in check that ends every [`TestReport`] (followed by
/// [`HOST_SAMPLE_CHECK`] when the set has a host decision).
pub const SAMPLE_CHECK: &str = "sample input: data.jitssh.decision evaluates without error";

/// Name of the built-in check of the elevation decision on its sample input.
pub const ELEVATION_SAMPLE_CHECK: &str =
    "sample elevation input: data.jitssh.elevation_decision evaluates without error";

/// Name of the built-in check of the approval decision on its sample input.
pub const APPROVAL_SAMPLE_CHECK: &str =
    "sample approval input: data.jitssh.approval_decision evaluates without error";

/// Name of the built-in check of the host decision on its sample input.
pub const HOST_SAMPLE_CHECK: &str =
    "sample host input: data.jitssh.host_decision evaluates without error";

/// regorus reports unknown functions and builtin type errors only when they
/// run, so a policy calling `foo()` compiles. Evaluating the decision once on
/// the documented sample input (a human asking for a user certificate)
/// catches those on the main path before the policy serves.
fn sample_check(policy: &CompiledPolicy) -> TestResult {
    check_on_sample(policy, SAMPLE_CHECK, SAMPLE_INPUT)
}

/// [`sample_check`] for the host decision, on `example-host-input.json`.
fn host_sample_check(policy: &CompiledPolicy) -> TestResult {
    check_on_sample(policy, HOST_SAMPLE_CHECK, HOST_SAMPLE_INPUT)
}

fn check_on_sample(policy: &CompiledPolicy, name: &str, sample: &str) -> TestResult {
    install_time_limit();
    let error = serde_json::from_str::<serde_json::Value>(sample)
        .map_err(|e| e.to_string())
        .and_then(|json| regorus::Value::deserialize(&json).map_err(|e| e.to_string()))
        .and_then(|input| {
            policy
                .eval_with_input(input)
                .map_err(|e| one_line(&format!("{e:#}")))
        })
        .and_then(|value| match value {
            regorus::Value::Undefined => Ok(()),
            v => to_json(&v, 0).map(drop),
        })
        .err();
    TestResult {
        name: name.into(),
        passed: error.is_none(),
        error,
    }
}

/// The input documented in `policies/README.md`.
const SAMPLE_INPUT: &str = include_str!("../../policies/example-input.json");

/// The host input documented in `policies/README.md`.
const HOST_SAMPLE_INPUT: &str = include_str!("../../policies/example-host-input.json");

/// The documented elevation inputs (`policies/example-*-input.json`).
const ELEVATION_SAMPLE_INPUT: &str = include_str!("../../policies/example-elevation-input.json");
const APPROVAL_SAMPLE_INPUT: &str = include_str!("../../policies/example-approval-input.json");

fn run_test(engine: &mut Engine, name: String) -> TestResult {
    let (passed, error) = match engine.eval_rule(name.clone()) {
        Ok(regorus::Value::Bool(true)) => (true, None),
        Ok(regorus::Value::Undefined) => (false, Some("undefined (a condition failed)".into())),
        Ok(other) => (false, Some(format!("evaluated to {other}, not true"))),
        Err(e) => (false, Some(one_line(&format!("{e:#}")))),
    };
    TestResult {
        name,
        passed,
        error,
    }
}

/// Squeeze a regorus diagnostic (location line, source excerpt with a caret,
/// `error:` line) into `file:line:col: message`, for logs and test reports.
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let location = lines.iter().find_map(|l| l.strip_prefix("-->"));
    let error = lines.iter().find_map(|l| l.strip_prefix("error:"));
    match (location, error) {
        (Some(location), Some(error)) => format!("{}: {}", location.trim(), error.trim()),
        _ => lines.join(" "),
    }
}

/// Whether `json` has a value at `path` (or a non-object on the way to it,
/// which would equally clash with a package there).
fn json_path_exists(json: &serde_json::Value, path: &[String]) -> bool {
    let mut at = json;
    for component in path {
        match at {
            serde_json::Value::Object(map) => match map.get(component) {
                Some(next) => at = next,
                None => return false,
            },
            _ => return true,
        }
    }
    true
}

/// How many interpreter steps pass between clock reads.
const CHECK_INTERVAL: NonZeroU32 = NonZeroU32::MIN.saturating_add(31);

/// Install [`EVAL_TIME_LIMIT`] as regorus's process-wide fallback, which is
/// what compiled policies use. Leaves an existing fallback alone.
fn install_time_limit() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if fallback_execution_timer_config().is_none() {
            set_fallback_execution_timer_config(Some(ExecutionTimerConfig {
                limit: EVAL_TIME_LIMIT,
                check_interval: CHECK_INTERVAL,
            }));
        }
    });
}

/// Deepest decision accepted; real decisions are three levels deep.
const MAX_DEPTH: usize = 32;

/// Convert a Rego value to JSON, refusing what JSON cannot carry faithfully:
/// non-string object keys, undefined members, integers beyond 64 bits and
/// non-finite numbers. Sets become sorted arrays (a partial set rule is the
/// natural way to write `principals`).
fn to_json(v: &regorus::Value, depth: usize) -> Result<serde_json::Value, String> {
    use regorus::Value as R;
    use serde_json::Value as J;
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    Ok(match v {
        R::Null => J::Null,
        R::Bool(b) => J::Bool(*b),
        R::String(s) => J::String(s.to_string()),
        R::Number(n) => {
            if let Some(u) = n.as_u64() {
                J::from(u)
            } else if let Some(i) = n.as_i64() {
                J::from(i)
            } else if n.is_integer() {
                return Err(format!("the integer {v} does not fit 64 bits"));
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(J::Number)
                    .ok_or_else(|| format!("the number {v} is not finite"))?
            }
        }
        R::Array(items) => J::Array(
            items
                .iter()
                .map(|item| to_json(item, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        R::Set(items) => J::Array(
            items
                .iter()
                .map(|item| to_json(item, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        R::Object(fields) => {
            let mut map = serde_json::Map::new();
            for (key, value) in fields.iter() {
                let R::String(key) = key else {
                    return Err(format!("the object key {key} is not a string"));
                };
                map.insert(key.to_string(), to_json(value, depth + 1)?);
            }
            J::Object(map)
        }
        R::Undefined => return Err("a member is undefined".into()),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn files(list: &[(&str, &str)]) -> PolicyFiles {
        let mut files: Vec<(String, String)> = list
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect();
        files.sort();
        PolicyFiles {
            origin: "test".into(),
            files,
        }
    }

    fn engine(list: &[(&str, &str)]) -> Result<PolicyEngine, PolicyError> {
        let serving = Prepared::build(&files(list))?.into_serving()?;
        Ok(PolicyEngine::new(None, serving))
    }

    fn sample_input() -> serde_json::Value {
        json!({
            "identity": {
                "kind": "human", "issuer": "https://idp.example.com", "subject": "u1",
                "email": "alice@example.com", "email_verified": true,
                "groups": ["sre"], "login": "alice", "login_problem": null, "claims": {}
            },
            "request": {
                "kind": "user_cert", "principals": null, "ttl_seconds": null,
                "public_key": {"type": "ssh-ed25519", "fingerprint": "SHA256:x"},
                "reason": null, "source_ip": "192.0.2.1"
            },
            "time": {"unix": 1_767_225_600u64, "unix_ns": 1_767_225_600_000_000_000i64}
        })
    }

    #[test]
    fn engine_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<PolicyEngine>();
    }

    #[test]
    fn embedded_policy_passes_its_tests_and_decides() {
        let report = run_embedded_tests().unwrap();
        assert_eq!(report.failed(), 0, "{report}");
        assert!(report.passed() >= 30, "{report}");

        let engine = PolicyEngine::load_embedded_default().unwrap();
        assert!(engine.source_dir().is_none());
        let eval = engine.evaluate(&sample_input()).unwrap();
        let d = eval.decision.unwrap();
        assert_eq!(d["allow"], json!(true));
        assert_eq!(d["principals"], json!(["alice", "deploy", "web"]));
        assert_eq!(d["ttl_seconds"], json!(900));
        assert_eq!(eval.policy_hash, engine.policy_hash());
        assert_eq!(eval.policy_hash.len(), 64);
        assert_eq!(
            engine.reload().unwrap(),
            ReloadOutcome::Unchanged {
                policy_hash: engine.policy_hash()
            }
        );
    }

    #[test]
    fn sets_become_sorted_arrays() {
        let e = engine(&[(
            "p.rego",
            "package jitssh\ndecision := {\"principals\": {\"b\", \"a\"}, \"n\": [1, -2, 2.5]}",
        )])
        .unwrap();
        let d = e.evaluate(&json!({})).unwrap().decision.unwrap();
        assert_eq!(d, json!({"principals": ["a", "b"], "n": [1, -2, 2.5]}));
    }

    #[test]
    fn non_json_decisions_are_errors() {
        for body in [
            "{1: \"x\"}",
            "{\"a\": {[1]: true}}",
            "{\"big\": 100000000000000000000000000}",
        ] {
            // Only for the odd input, so the load-time sample check passes.
            let rego = format!("package jitssh\ndecision := {body} if input.odd");
            let e = engine(&[("p.rego", &rego)]).unwrap();
            let err = e.evaluate(&json!({"odd": true})).unwrap_err();
            assert!(matches!(err, PolicyError::NotJson { .. }), "{body}: {err}");
        }
    }

    #[test]
    fn undefined_decision_is_none() {
        let e = engine(&[(
            "p.rego",
            "package jitssh\ndecision := {\"allow\": true} if input.x == 1",
        )])
        .unwrap();
        assert!(e.evaluate(&json!({"x": 2})).unwrap().decision.is_none());
        assert!(e.evaluate(&json!({"x": 1})).unwrap().decision.is_some());
    }

    #[test]
    fn evaluation_errors_are_errors() {
        // Conflicting values for a complete rule are an evaluation error.
        let e = engine(&[(
            "p.rego",
            "package jitssh\ndecision := 1 if input.a\ndecision := 2 if input.b",
        )])
        .unwrap();
        assert!(e.evaluate(&json!({"a": true})).is_ok());
        let err = e.evaluate(&json!({"a": true, "b": true})).unwrap_err();
        assert!(matches!(err, PolicyError::Eval { .. }), "{err}");
        // A builtin given the wrong type is an error, not undefined.
        let e = engine(&[("p.rego", "package jitssh\ndecision := lower(input.n)")]).unwrap();
        let err = e.evaluate(&json!({"n": 5})).unwrap_err();
        assert!(matches!(err, PolicyError::Eval { .. }), "{err}");
    }

    #[test]
    fn runaway_policy_hits_the_time_limit() {
        let e = engine(&[(
            "p.rego",
            "package jitssh\ndecision := count([1 | some i in numbers.range(1, 4000); some j in numbers.range(1, 4000)]) if input.slow",
        )])
        .unwrap();
        let start = Instant::now();
        let err = e.evaluate(&json!({"slow": true})).unwrap_err();
        assert!(matches!(err, PolicyError::TimeLimit { .. }), "{err}");
        assert!(
            start.elapsed() < EVAL_TIME_LIMIT * 8,
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn load_errors_name_the_problem() {
        let err = engine(&[("a.rego", "package jitssh\ndecision := {")]).unwrap_err();
        assert!(
            matches!(&err, PolicyError::Parse { file, .. } if file == "a.rego"),
            "{err}"
        );
        assert!(err.to_string().contains("a.rego"), "{err}");

        let err = engine(&[("a.rego", "package other\nx := 1")]).unwrap_err();
        assert!(matches!(err, PolicyError::NoDecision { .. }), "{err}");
        let err = engine(&[("a.rego", "package jitssh\nx := 1")]).unwrap_err();
        assert!(matches!(err, PolicyError::NoDecision { .. }), "{err}");

        let err = engine(&[("data.json", "{}")]).unwrap_err();
        assert!(matches!(err, PolicyError::NoPolicy { .. }), "{err}");

        let err = engine(&[
            ("a.rego", "package jitssh\ndecision := 1"),
            ("data.json", "[1]"),
        ])
        .unwrap_err();
        assert!(matches!(err, PolicyError::Data { .. }), "{err}");
        let err = engine(&[
            ("a.rego", "package jitssh\ndecision := 1"),
            ("data.json", "{"),
        ])
        .unwrap_err();
        assert!(matches!(err, PolicyError::Data { .. }), "{err}");

        let err = engine(&[
            ("a.rego", "package jitssh\ndecision := 1"),
            ("data.json", r#"{"jitssh": {"x": 1}}"#),
        ])
        .unwrap_err();
        assert!(
            matches!(err, PolicyError::DataShadowsPackage { .. }),
            "{err}"
        );

        let err = engine(&[
            ("a.rego", "package jitssh\ndecision := 1"),
            ("data-a.json", r#"{"k": 1}"#),
            ("data-b.json", r#"{"k": 2}"#),
        ])
        .unwrap_err();
        assert!(matches!(err, PolicyError::Data { .. }), "{err}");
    }

    #[test]
    fn failing_tests_refuse_the_policy_and_are_reported() {
        let list = [(
            "a.rego",
            "package jitssh\ndecision := 1\ntest_ok if decision == 1\ntest_bad if decision == 2\ntest_err if lower(5)",
        )];
        let report = Prepared::build(&files(&list)).unwrap().report;
        assert_eq!(report.passed(), 2, "{report}");
        assert_eq!(report.failed(), 2, "{report}");
        assert_eq!(report.results[0].name, "data.jitssh.test_bad");
        assert_eq!(report.results[3].name, SAMPLE_CHECK);
        let err = engine(&list).unwrap_err();
        assert!(
            matches!(
                err,
                PolicyError::TestsFailed {
                    failed: 2,
                    total: 4,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("data.jitssh.test_bad"), "{err}");
    }

    #[test]
    fn runtime_only_errors_on_the_main_path_refuse_the_policy() {
        // regorus only notices an unknown function when it is called.
        let list = [("a.rego", "package jitssh\ndecision := no_such_function(1)")];
        let err = engine(&list).unwrap_err();
        assert!(
            matches!(err, PolicyError::TestsFailed { failed: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("no_such_function"), "{err}");
        let err = engine(&[("a.rego", "package jitssh\ndecision := {1: 2}")]).unwrap_err();
        assert!(err.to_string().contains("not a string"), "{err}");
        // Undefined on the sample is allowed (the server denies).
        assert!(engine(&[("a.rego", "package jitssh\ndecision := 1 if false")]).is_ok());
    }

    #[test]
    fn tests_in_other_packages_run_too() {
        let list = [
            ("a.rego", "package jitssh\ndecision := 1"),
            (
                "b_test.rego",
                "package jitssh.more\ntest_decision if data.jitssh.decision == 1",
            ),
        ];
        let report = Prepared::build(&files(&list)).unwrap().report;
        assert_eq!(report.results.len(), 2);
        assert_eq!(report.results[0].name, "data.jitssh.more.test_decision");
        assert!(report.results[0].passed);
        assert_eq!(report.failed(), 0);
    }

    #[test]
    fn diagnostics_become_one_line() {
        let msg = "\n--> p.rego:2:34\n  |\n2 | x := f(y)\n  |      ^\nerror: `f` failed";
        assert_eq!(one_line(msg), "p.rego:2:34: `f` failed");
        assert_eq!(one_line("plain\nmessage"), "plain message");
    }

    #[test]
    fn hash_is_order_and_boundary_sensitive() {
        let a = files(&[("a.rego", "xy"), ("b.rego", "z")]).hash();
        let b = files(&[("b.rego", "z"), ("a.rego", "xy")]).hash();
        let c = files(&[("a.rego", "x"), ("b.rego", "yz")]).hash();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn only_policy_files_belong_to_the_set() {
        for name in [
            "jitssh.rego",
            "jitssh_test.rego",
            "data.json",
            "data-extra.json",
        ] {
            assert!(is_policy_file(name), "{name}");
        }
        for name in [
            "README.md",
            "example-input.json",
            ".#jitssh.rego",
            "jitssh.rego.swp",
            "jitssh.rego~",
        ] {
            assert!(!is_policy_file(name), "{name}");
        }
    }

    fn host_input(hostnames: &[&str], authorized: &[&str]) -> serde_json::Value {
        let mut i: serde_json::Value =
            serde_json::from_str(HOST_SAMPLE_INPUT).expect("sample host input");
        i["request"]["hostnames"] = json!(hostnames);
        i["request"]["authorized_hostnames"] = json!(authorized);
        i
    }

    #[test]
    fn embedded_policy_defines_roles_and_decides_elevations() {
        let engine = PolicyEngine::load_embedded_default().unwrap().snapshot();
        let names: Vec<String> = engine.roles().iter().map(|r| r.name.to_string()).collect();
        assert_eq!(names, ["db-admin", "prod-root"]);
        let sample: serde_json::Value = serde_json::from_str(ELEVATION_SAMPLE_INPUT).unwrap();
        let d = engine
            .evaluate_elevation(&sample)
            .unwrap()
            .decision
            .unwrap();
        assert_eq!(d["outcome"], "approve", "{d}");
        let sample: serde_json::Value = serde_json::from_str(APPROVAL_SAMPLE_INPUT).unwrap();
        let d = engine.evaluate_approval(&sample).unwrap().decision.unwrap();
        assert_eq!(d["allow"], true, "{d}");
        let report = run_embedded_tests().unwrap();
        for check in [ELEVATION_SAMPLE_CHECK, APPROVAL_SAMPLE_CHECK] {
            assert!(report.results.iter().any(|r| r.name == check && r.passed));
        }
    }

    #[test]
    fn elevation_needs_a_usable_role_table_and_both_decisions() {
        const DECISION: &str = "package jitssh\ndecision := {\"allow\": false}\n";
        // No roles: elevation is off, and fails closed.
        let off = engine(&[("p.rego", DECISION)]).unwrap().snapshot();
        assert!(off.roles().is_empty());
        assert!(matches!(
            off.evaluate_elevation(&json!({})),
            Err(PolicyError::NoElevation { .. })
        ));
        assert!(matches!(
            off.evaluate_approval(&json!({})),
            Err(PolicyError::NoElevation { .. })
        ));
        // Roles without the decisions, or a malformed table: refused at load.
        let roles = "package jitssh\nroles := {\"r\": {\"principals\": [\"x\"], \"max_ttl_seconds\": 60}}\n";
        let err = engine(&[("p.rego", DECISION), ("r.rego", roles)]).unwrap_err();
        assert!(err.to_string().contains("elevation_decision"), "{err}");
        let bad =
            "package jitssh\nroles := {\"r\": {\"principals\": [], \"max_ttl_seconds\": 60}}\n";
        let err = engine(&[("p.rego", DECISION), ("r.rego", bad)]).unwrap_err();
        assert!(matches!(err, PolicyError::Roles { .. }), "{err}");
        assert!(err.to_string().contains("grants no principals"), "{err}");
        // All three: served.
        let full = format!(
            "{roles}elevation_decision := {{\"outcome\": \"deny\"}}\napproval_decision := {{\"allow\": false}}\n"
        );
        let on = engine(&[("p.rego", DECISION), ("r.rego", &full)])
            .unwrap()
            .snapshot();
        assert_eq!(on.roles().iter().count(), 1);
        let d = on.evaluate_elevation(&json!({})).unwrap().decision.unwrap();
        assert_eq!(d["outcome"], "deny");
    }

    #[test]
    fn embedded_policy_decides_host_certificates() {
        let engine = PolicyEngine::load_embedded_default().unwrap();
        assert!(engine.has_host_decision());
        let report = run_embedded_tests().unwrap();
        assert!(report.results.iter().any(|r| r.name == HOST_SAMPLE_CHECK));
        assert!(report.results.iter().any(|r| r.name.contains("test_host_")));
        let d = engine
            .snapshot()
            .evaluate_host(&host_input(
                &["web01.example.com"],
                &["web01.example.com", "web01"],
            ))
            .unwrap()
            .decision
            .unwrap();
        assert_eq!(d["allow"], json!(true));
        assert_eq!(d["hostnames"], json!(["web01.example.com"]));
        assert_eq!(d["ttl_seconds"], json!(604800));
        let d = engine
            .snapshot()
            .evaluate_host(&host_input(&["db01"], &["web01"]))
            .unwrap()
            .decision
            .unwrap();
        assert_eq!(d["allow"], json!(false));
        // The user decision is untouched by host inputs and vice versa.
        let user = engine.evaluate(&sample_input()).unwrap().decision.unwrap();
        assert_eq!(user["allow"], json!(true));
    }

    #[test]
    fn without_a_host_decision_hosts_are_denied() {
        let e = engine(&[("a.rego", "package jitssh\ndecision := 1")]).unwrap();
        assert!(!e.has_host_decision());
        let err = e
            .snapshot()
            .evaluate_host(&host_input(&["a"], &["a"]))
            .unwrap_err();
        assert!(matches!(err, PolicyError::NoHostDecision { .. }), "{err}");
        assert!(err.to_string().contains("host_decision"), "{err}");
        let report = Prepared::build(&files(&[("a.rego", "package jitssh\ndecision := 1")]))
            .unwrap()
            .report;
        assert_eq!(report.results.len(), 1, "no host sample check: {report}");
    }

    #[test]
    fn a_host_decision_that_errors_on_its_sample_refuses_the_policy() {
        let list = [(
            "a.rego",
            "package jitssh\ndecision := 1\nhost_decision := lower(input.request.hostnames)",
        )];
        let err = engine(&list).unwrap_err();
        assert!(
            matches!(err, PolicyError::TestsFailed { failed: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(HOST_SAMPLE_CHECK), "{err}");
    }

    #[test]
    fn reloads_add_and_remove_the_host_decision() {
        let without = files(&[("a.rego", "package jitssh\ndecision := 1")]);
        let with = files(&[(
            "a.rego",
            "package jitssh\ndecision := 1\nhost_decision := {\"allow\": false}",
        )]);
        let e = PolicyEngine::new(
            None,
            Prepared::build(&without).unwrap().into_serving().unwrap(),
        );
        assert!(e.snapshot().evaluate_host(&json!({})).is_err());
        assert!(matches!(
            e.reload_files(&with),
            Ok(ReloadOutcome::Reloaded { .. })
        ));
        assert_eq!(
            e.snapshot().evaluate_host(&json!({})).unwrap().decision,
            Some(json!({"allow": false}))
        );
        assert!(matches!(
            e.reload_files(&without),
            Ok(ReloadOutcome::Reloaded { .. })
        ));
        assert!(matches!(
            e.snapshot().evaluate_host(&json!({})),
            Err(PolicyError::NoHostDecision { .. })
        ));
        // A broken host rule is refused like any broken policy; the old one serves.
        let broken = files(&[(
            "a.rego",
            "package jitssh\ndecision := 1\nhost_decision := {",
        )]);
        assert!(e.reload_files(&broken).is_err());
        assert_eq!(e.evaluate(&json!({})).unwrap().decision, Some(json!(1)));
    }

    #[test]
    fn a_snapshot_keeps_one_version_across_a_reload() {
        // Version 1 makes `x` a role principal and grants it; version 2 has
        // no roles and grants `y`.
        let v1 = files(&[(
            "a.rego",
            "package jitssh\ndecision := {\"v\": 1}\n\
             roles := {\"r\": {\"principals\": [\"x\"], \"max_ttl_seconds\": 60}}\n\
             elevation_decision := {\"outcome\": \"deny\"}\n\
             approval_decision := {\"allow\": false}\n",
        )]);
        let v2 = files(&[("a.rego", "package jitssh\ndecision := {\"v\": 2}\n")]);
        let e = PolicyEngine::new(None, Prepared::build(&v1).unwrap().into_serving().unwrap());
        let before = e.snapshot();
        assert!(matches!(
            e.reload_files(&v2),
            Ok(ReloadOutcome::Reloaded { .. })
        ));
        // The snapshot still answers everything from version 1 ...
        let eval = before.evaluate(&json!({})).unwrap();
        assert_eq!(eval.decision, Some(json!({"v": 1})));
        assert_eq!(eval.policy_hash, before.hash());
        assert_eq!(before.roles().iter().count(), 1);
        assert!(before.evaluate_elevation(&json!({})).is_ok());
        // ... while a new one sees version 2 only.
        let after = e.snapshot();
        assert_ne!(after.hash(), before.hash());
        assert_eq!(after.hash(), e.policy_hash());
        assert_eq!(
            after.evaluate(&json!({})).unwrap().decision,
            Some(json!({"v": 2}))
        );
        assert!(after.roles().is_empty());
        assert!(matches!(
            after.evaluate_elevation(&json!({})),
            Err(PolicyError::NoElevation { .. })
        ));
    }
}
