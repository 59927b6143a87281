//! Telling watchers (the console's live "To decide" page) that elevations
//! changed: a counter bumped after every committed transition of this
//! process, and, with replicas (PostgreSQL), a poll of the pending requests
//! that bumps it when another replica changed them. Watchers get "something
//! changed", never what: they re-read through the service, with its rights.

use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::store;
use crate::db::{Backend, Db};

/// How often a replica looks for changes made by the others, while anyone
/// watches (with SQLite there is one process, so it never polls).
pub const REPLICA_POLL: Duration = Duration::from_secs(3);

/// The change counter.
pub(super) struct Changes {
    tx: watch::Sender<u64>,
}

impl Default for Changes {
    fn default() -> Self {
        Changes {
            tx: watch::Sender::new(0),
        }
    }
}

impl Changes {
    /// Something changed: wake every watcher (changes in between coalesce).
    pub(super) fn bump(&self) {
        self.tx.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn watched(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// A receiver woken after each change.
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }

    /// With PostgreSQL, poll what other replicas may have changed in `db`:
    /// one small indexed read every [`REPLICA_POLL`], and none while nobody
    /// watches.
    pub(super) fn spawn_replica_poll(self: &Arc<Self>, db: Db) {
        if db.backend() != Backend::Postgres {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REPLICA_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = None;
            loop {
                tick.tick().await;
                if !this.watched() {
                    last = None;
                    continue;
                }
                let db = db.clone();
                let seen = tokio::task::spawn_blocking(move || db.with(pending_fingerprint)).await;
                match seen {
                    Ok(Ok(now)) => {
                        if last.is_some_and(|l| l != now) {
                            this.bump();
                        }
                        last = Some(now);
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "could not poll elevation changes; will retry")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "elevation change poll failed; will retry")
                    }
                }
            }
        });
    }
}

/// A digest of the pending requests and their votes: it moves when one is
/// created, decided, closed or gets a vote.
fn pending_fingerprint(conn: &mut dyn crate::db::Conn) -> Result<u64, crate::db::DbError> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (id, votes) in store::pending_votes(conn)? {
        id.hash(&mut h);
        votes.hash(&mut h);
    }
    Ok(h.finish())
}
