//! The elevation service's plumbing: opening it, its background work
//! (webhook delivery, grant refresh, expiry), and its reads of the
//! database, including the active grants issuance asks for.

use std::sync::Arc;
use std::time::Duration;

use ca_core::policy::ActiveGrant;
use ca_core::wire::ElevationVote;

use super::error::{ElevationOpError, OpenError};
use super::grants::{GrantIndex, active_grant};
use super::store::{self, Row};
use super::webhook::Notifier;
use crate::audit::AuditStore;
use crate::config::ElevationConfig;
use crate::db::{Conn, Db, DbError};
use crate::policy::PolicyEngine;

/// The elevation service: requests, decisions, grants. Each job's methods
/// live in its own file; this is the state they share.
pub struct Elevations {
    pub(super) db: crate::db::Db,
    pub(super) audit: crate::audit::AuditStore,
    pub(super) policy: Arc<crate::policy::PolicyEngine>,
    pub(super) config: crate::config::ElevationConfig,
    pub(super) grants: Arc<super::grants::GrantIndex>,
    pub(super) notifier: Option<Notifier>,
    /// Login-name bindings (`people`); `None` in operator commands, where
    /// only derived login names are compared.
    pub(super) logins: Option<Arc<crate::logins::LoginNames>>,
    /// Woken after every change (`changes`).
    pub(super) changes: Arc<super::changes::Changes>,
}

impl Elevations {
    /// Create the tables if needed and load the active grants.
    pub fn open(
        db: impl Into<Db>,
        audit: AuditStore,
        policy: Arc<PolicyEngine>,
        config: ElevationConfig,
        now: u64,
    ) -> Result<Self, OpenError> {
        let db = db.into();
        store::create_tables(&db).map_err(OpenError::Tables)?;
        // Ending a grant revokes its certificates in the same transaction.
        crate::revocation::RevocationStore::open(db.clone()).map_err(OpenError::Revocations)?;
        let notifier = config.webhook.clone().map(Notifier::new).transpose()?;
        let this = Elevations {
            db,
            audit,
            policy,
            config,
            grants: Arc::new(GrantIndex::default()),
            notifier,
            logins: None,
            changes: Default::default(),
        };
        this.refresh(now).map_err(OpenError::Grants)?;
        Ok(this)
    }

    /// The active-grant index (this process's view, refreshed after its
    /// own commits and every second).
    pub fn grants(&self) -> Arc<GrantIndex> {
        self.grants.clone()
    }

    /// A receiver woken after each change of any elevation (created,
    /// decided, cancelled, revoked, expired), on this replica at once and on
    /// the others within [`super::REPLICA_POLL`].
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The grants of `issuer` + `subject` active at `now`, for issuance. With
    /// one process (SQLite) the index is current after every commit. With
    /// replicas (PostgreSQL) a grant approved or revoked on another replica
    /// must count at once, so this reads the database (one indexed query, on
    /// a blocking thread: never holding up the async workers for a round
    /// trip).
    pub async fn active_for(
        &self,
        issuer: &str,
        subject: &str,
        now: u64,
    ) -> Result<Vec<ActiveGrant>, ElevationOpError> {
        if self.db.backend() == crate::db::Backend::Sqlite {
            return Ok(self.grants.active(issuer, subject, now));
        }
        let rows = self.active_rows(issuer, subject, now).await?;
        Ok(rows.into_iter().filter_map(active_grant).collect())
    }

    /// The grants of `issuer` + `subject` active at `now`, read from the
    /// database on a blocking thread.
    async fn active_rows(
        &self,
        issuer: &str,
        subject: &str,
        now: u64,
    ) -> Result<Vec<Row>, ElevationOpError> {
        let (db, issuer, subject) = (self.db.clone(), issuer.to_owned(), subject.to_owned());
        tokio::task::spawn_blocking(move || {
            db.with(|c| store::active_of(c, &issuer, &subject, now))
        })
        .await
        .map_err(|e| ElevationOpError::Store(e.to_string()))?
        .map_err(|e| ElevationOpError::Store(e.to_string()))
    }

    /// Whether every grant in `ids` of `issuer` + `subject` is still active
    /// at `now`, read from the database whatever the backend. Issuance asks
    /// after a certificate relying on them is on record: a grant that ended
    /// in between revoked only the certificates recorded before it ended.
    pub async fn still_active(
        &self,
        issuer: &str,
        subject: &str,
        ids: Vec<String>,
        now: u64,
    ) -> Result<bool, ElevationOpError> {
        let rows = self.active_rows(issuer, subject, now).await?;
        Ok(ids.iter().all(|id| rows.iter().any(|r| r.id == *id)))
    }

    /// Reload the active grants from the database.
    pub fn refresh(&self, now: u64) -> Result<(), ElevationOpError> {
        let rows = self.read(|c| store::active(c, now))?;
        self.grants.replace(rows);
        Ok(())
    }

    /// After a committed change the answer stands; a failed refresh only
    /// delays the index until the next one-second refresh (logged).
    pub(super) fn refresh_after_commit(&self, now: u64) {
        if let Err(e) = self.refresh(now) {
            tracing::warn!(error = %e, "could not refresh active elevation grants after a change");
        }
    }

    /// Run a read on a pooled connection.
    pub(super) fn read<T: Send>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, DbError> + Send,
    ) -> Result<T, ElevationOpError> {
        self.db
            .with(f)
            .map_err(|e| ElevationOpError::Store(e.to_string()))
    }

    /// The row and its votes, visible or not (callers check visibility).
    pub(super) fn load_row(
        &self,
        id: &str,
    ) -> Result<(Row, Vec<(ElevationVote, String)>), ElevationOpError> {
        if id.is_empty() || id.len() > 64 || ca_core::has_control_chars(id) {
            return Err(ElevationOpError::NotFound(ca_core::escape_control(id)));
        }
        let (row, votes) = self.read(|c| {
            let Some(row) = store::load(c, id)? else {
                return Ok((None, Vec::new()));
            };
            Ok((Some(row), store::votes(c, id)?))
        })?;
        let row = row.ok_or_else(|| ElevationOpError::NotFound(id.to_owned()))?;
        Ok((row, votes))
    }

    /// Start the background work: webhook delivery, the one-second grant
    /// refresh, the replicas' change poll, and expiry of undecided requests and ended grants.
    pub fn spawn_background(self: &Arc<Self>) {
        if let Some(n) = &self.notifier {
            n.spawn();
        }
        self.changes.spawn_replica_poll(self.db.clone());
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = crate::clock::now_unix();
                if let Err(e) = this.sweep(now).await {
                    tracing::warn!(error = %e, "elevation expiry sweep failed; will retry");
                }
                if let Err(e) = this.refresh(now) {
                    tracing::warn!(error = %e, "could not refresh active elevation grants");
                }
            }
        });
    }
}
