//! What an operator may read about the serving policy (the console's Policy
//! page): where it came from, its files and hash, its tests' results, and
//! the last reload and how it went. Recorded by `PolicyEngine`'s load and
//! reload paths; read without touching evaluation.

use std::sync::{Arc, Mutex};

use super::error::PolicyError;
use super::files::PolicyFiles;
use super::testing::TestReport;

/// The serving policy as loaded, and the last reload.
#[derive(Clone, Debug, Default)]
pub struct PolicyStatus {
    /// The directory, or "the embedded default policy".
    pub origin: String,
    /// The set's files in name order, with their sizes in bytes.
    pub files: Vec<(String, usize)>,
    pub hash: String,
    /// The `test_*` rules and sample checks of the serving set (all passed:
    /// a set serves only then).
    pub tests: TestReport,
    /// When the serving set was loaded (Unix seconds).
    pub loaded_at: u64,
    /// The last reload (file watcher or SIGHUP); `None` before the first.
    pub last_reload: Option<LastReload>,
}

/// One reload and its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastReload {
    pub at: u64,
    pub outcome: Reload,
}

/// How a reload went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reload {
    /// A new set serves.
    Reloaded { previous_hash: String },
    /// The files hash the same as the serving set.
    Unchanged,
    /// The new files were refused (the message says why); the old set serves.
    Refused { message: String },
}

/// The engine's record of [`PolicyStatus`], replaced whole on each change.
#[derive(Debug, Default)]
pub(super) struct StatusCell(Mutex<Arc<PolicyStatus>>);

impl StatusCell {
    fn update(&self, change: impl FnOnce(&mut PolicyStatus)) {
        let mut cell = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = (**cell).clone();
        change(&mut next);
        *cell = Arc::new(next);
    }

    /// A set now serves: its files and test report.
    pub(super) fn loaded(&self, files: &PolicyFiles, tests: Option<TestReport>, now: u64) {
        self.update(|s| {
            s.origin = files.origin.clone();
            s.files = files
                .files
                .iter()
                .map(|(name, text)| (name.clone(), text.len()))
                .collect();
            s.hash = files.hash();
            s.tests = tests.unwrap_or_default();
            s.loaded_at = now;
        });
    }

    /// Record a reload's outcome.
    pub(super) fn reloaded(&self, outcome: Reload, now: u64) {
        self.update(|s| s.last_reload = Some(LastReload { at: now, outcome }));
    }

    /// The current record.
    pub(super) fn get(&self) -> Arc<PolicyStatus> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Reload {
    /// A reload refused for `e`.
    pub(super) fn refused(e: &PolicyError) -> Reload {
        Reload::Refused {
            message: e.to_string(),
        }
    }
}
