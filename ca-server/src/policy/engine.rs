//! The serving policy: loaded once, shared by every request, and swapped
//! atomically by a reload only when the new set builds and passes its tests.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::error::PolicyError;
use super::eval::{Evaluation, PolicySnapshot, Serving};
use super::files::PolicyFiles;
use super::load::Prepared;
use super::rules::install_time_limit;
use super::status::{PolicyStatus, Reload, StatusCell};
use crate::clock::now_unix;

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

/// The serving policy, swappable at run time. `Send + Sync`; share it in an `Arc`.
pub struct PolicyEngine {
    /// `None` for the embedded default.
    pub(super) dir: Option<PathBuf>,
    current: ArcSwap<Serving>,
    /// Serialises reloads (file watcher and SIGHUP) and holds the content hash
    /// of the last refused change, so the watcher neither retries nor
    /// re-logs it. Evaluation never takes it.
    pub(super) last_refused: Mutex<Option<String>>,
    /// What the console's Policy page reads (`status`).
    pub(super) status: StatusCell,
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
        let prepared = Prepared::build(&files)?;
        let tests = prepared.report.clone();
        let serving = prepared.into_serving()?;
        tracing::info!(dir = %dir.display(), policy_hash = %serving.hash, engines = ?serving.engines(), "policy loaded");
        let engine = Self::new(Some(dir.to_path_buf()), serving);
        engine.status.loaded(&files, Some(tests), now_unix());
        Ok(engine)
    }

    /// The default policy compiled into the binary (`policies/` in the source tree).
    pub fn load_embedded_default() -> Result<Self, PolicyError> {
        let files = PolicyFiles::embedded();
        let prepared = Prepared::build(&files)?;
        let tests = prepared.report.clone();
        let engine = Self::new(None, prepared.into_serving()?);
        engine.status.loaded(&files, Some(tests), now_unix());
        Ok(engine)
    }

    pub(super) fn new(dir: Option<PathBuf>, serving: Serving) -> Self {
        install_time_limit();
        PolicyEngine {
            dir,
            current: ArcSwap::from_pointee(serving),
            last_refused: Mutex::new(None),
            status: StatusCell::default(),
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

    /// The serving policy's files, hash, tests and last reload (the
    /// console's Policy page).
    pub fn status(&self) -> Arc<PolicyStatus> {
        self.status.get()
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
        let files = PolicyFiles::read_dir(dir).inspect_err(|e| {
            self.status.reloaded(Reload::refused(e), now_unix());
        })?;
        self.reload_files(&files)
    }

    pub(super) fn reload_files(&self, files: &PolicyFiles) -> Result<ReloadOutcome, PolicyError> {
        let outcome = self.reload_files_unrecorded(files);
        let record = match &outcome {
            Ok(ReloadOutcome::Unchanged { .. }) => Reload::Unchanged,
            Ok(ReloadOutcome::Reloaded { previous_hash, .. }) => Reload::Reloaded {
                previous_hash: previous_hash.clone(),
            },
            Err(e) => Reload::refused(e),
        };
        self.status.reloaded(record, now_unix());
        outcome
    }

    fn reload_files_unrecorded(&self, files: &PolicyFiles) -> Result<ReloadOutcome, PolicyError> {
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
        let prepared = Prepared::build(files);
        let tests = prepared.as_ref().ok().map(|p| p.report.clone());
        let (serving, tests_passed) = match prepared.and_then(Prepared::into_serving_with_count) {
            Ok(built) => built,
            Err(e) => {
                *last_refused = Some(hash);
                return Err(e);
            }
        };
        *last_refused = None;
        self.current.store(Arc::new(serving));
        self.status.loaded(files, tests, now_unix());
        Ok(ReloadOutcome::Reloaded {
            previous_hash,
            policy_hash: hash,
            tests_passed,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use serde_json::json;

    use super::*;
    use crate::policy::run_embedded_tests;
    use crate::policy::test_support::{files, sample_input};

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
