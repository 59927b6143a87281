//! Hot reload: poll the policy directory's file names, sizes and mtimes,
//! and reload when they move; a refused change is logged once.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::engine::{PolicyEngine, ReloadOutcome};
use super::error::PolicyError;
use super::files::{PolicyFiles, list_policy_files};

impl PolicyEngine {
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
                self.status
                    .reloaded(super::status::Reload::refused(&e), crate::clock::now_unix());
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
