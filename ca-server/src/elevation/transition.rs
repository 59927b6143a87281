//! How every state change ends ([`Elevations::commit_transition`]): the
//! change and its audit rows commit in one transaction on the audit writer
//! (or a refusal row is appended and the change rolled back); then the
//! grant index is refreshed, the answer built and the webhook told. Also
//! the refusal row of a call refused before it reached the writer.

use ca_core::audit::AuditEvent;
use ca_core::identity::Party;
use ca_core::wire::{Elevation, ElevationVote};
use serde_json::json;

use super::error::ElevationOpError;
use super::service::Elevations;
use super::store::{self, Row};
use super::webhook::Notification;
use crate::audit::TxOutcome;
use crate::db::{Conn, DbError};

/// One state change made inside the writer: the row as it is now, and what
/// follows its commit.
pub(super) struct Transition {
    pub(super) row: Row,
    /// The webhook event: `elevation.pending`, `elevation.approved`…
    pub(super) notify: &'static str,
    /// Who caused it (`None` for expiry).
    pub(super) actor: Option<Party>,
    pub(super) comment: Option<String>,
    /// Answer with the votes on it, read after the commit.
    pub(super) with_votes: bool,
    /// A grant began or ended early: refresh the grant index at once.
    pub(super) grants_changed: bool,
}

/// What a change returns from inside the writer: its rows and either the
/// transitions it made (kept) or the refusal it recorded (rolled back).
pub(super) type Change = TxOutcome<Result<Vec<Transition>, ElevationOpError>>;

impl Elevations {
    /// Commit a state change: `change` runs on the audit writer with a copy
    /// of `event` to build its rows from, re-reading and re-checking what
    /// it changes. Once it has committed (its refusal included), `event` is
    /// marked `done` so the caller appends no second row; then the grant
    /// index is refreshed if a grant began or ended, and each transition is
    /// answered (its wire view) and notified, in order.
    pub(super) async fn commit_transition<F>(
        &self,
        event: &mut AuditEvent,
        now: u64,
        change: F,
    ) -> Result<Vec<Elevation>, ElevationOpError>
    where
        F: FnOnce(&mut dyn Conn, AuditEvent) -> Result<Change, DbError> + Send + 'static,
    {
        let base = event.clone();
        let result = self
            .audit
            .transact(move |conn| change(conn, base))
            .await
            .map_err(ElevationOpError::AuditUnavailable)?;
        // The transaction audited itself, refusal or not.
        event.outcome = "done".into();
        let transitions = result?;
        if !transitions.is_empty() {
            self.changes.bump();
        }
        if transitions.iter().any(|t| t.grants_changed) {
            self.refresh_after_commit(now);
        }
        let mut answers = Vec::with_capacity(transitions.len());
        for t in transitions {
            let votes = if t.with_votes {
                self.read(|c| store::votes(c, &t.row.id))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(v, _)| v)
                    .collect()
            } else {
                vec![]
            };
            let wire = t.row.to_wire(votes, now, false);
            if let Some(n) = &self.notifier {
                n.notify(Notification {
                    event: t.notify,
                    time: now,
                    actor: t.actor,
                    comment: t.comment,
                    elevation: wire.clone(),
                });
            }
            answers.push(wire);
        }
        Ok(answers)
    }

    /// Audit a refused call, unless the change already committed its own
    /// row (a refusal inside the writer is recorded there).
    pub(super) async fn audit_refusal(&self, event: AuditEvent, e: &ElevationOpError) {
        if event.outcome == "done" {
            return;
        }
        self.audit.append_refusal(event, e).await;
    }
}

/// A change that made `transitions`, recorded by `events`.
pub(super) fn committed(events: Vec<AuditEvent>, transitions: Vec<Transition>) -> Change {
    TxOutcome {
        events,
        keep: true,
        value: Ok(transitions),
    }
}

/// A transition refused inside the writer: roll the change back, still
/// append the refusal row.
pub(super) fn refused(mut ev: AuditEvent, e: ElevationOpError) -> Change {
    // The refusal's own message, whatever the change had recorded so far.
    ev.decision_reasons.clear();
    TxOutcome {
        events: vec![crate::audit::refusal_row(ev, &e)],
        keep: false,
        value: Err(e),
    }
}

/// The answer of a change of one elevation.
pub(super) fn single(answers: Vec<Elevation>) -> Result<Elevation, ElevationOpError> {
    let mut answers = answers.into_iter();
    match (answers.next(), answers.next()) {
        (Some(e), None) => Ok(e),
        _ => Err(ElevationOpError::Internal(
            "a change of one elevation did not make exactly one transition".into(),
        )),
    }
}

/// The person behind a vote or a closing.
pub(super) fn voter(v: &ElevationVote) -> Party {
    Party {
        issuer: v.issuer.clone(),
        subject: v.subject.clone(),
        email: v.email.clone(),
    }
}

/// A row's `details` in its audit rows.
pub(super) fn details(row: &Row, comment: Option<&str>) -> serde_json::Value {
    json!({
        "elevation_id": row.id,
        "role": row.role,
        "state": row.state,
        "requester": row.requester,
        "approvals_required": row.approvals_required,
        "grant_ends_at": row.grant_end,
        "request_hash": row.request_hash,
        "comment": comment,
    })
}
