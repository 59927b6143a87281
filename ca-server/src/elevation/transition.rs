//! How a state change ends: its audit row in the same transaction (or a
//! refusal row, with the change rolled back), the row's audit details, the
//! webhook notification, and the refusal row of a call refused before it
//! reached the writer.

use ca_core::audit::AuditEvent;
use ca_core::elevation::Party;
use ca_core::wire::Elevation;
use serde_json::json;

use super::Elevations;
use super::error::ElevationOpError;
use super::store::Row;
use super::webhook::Notification;
use crate::audit::TxOutcome;

impl Elevations {
    pub(super) fn notify(
        &self,
        event: &'static str,
        actor: Option<Party>,
        comment: Option<String>,
        e: &Elevation,
        now: u64,
    ) {
        if let Some(n) = &self.notifier {
            n.notify(Notification {
                event,
                time: now,
                actor,
                comment,
                elevation: e.clone(),
            });
        }
    }

    /// Audit a refused call (unless the database is the problem, or the
    /// change already committed its own row).
    pub(super) async fn audit_refusal(&self, mut event: AuditEvent, e: &ElevationOpError) {
        if matches!(e, ElevationOpError::AuditUnavailable(_)) || event.outcome == "done" {
            return;
        }
        event.outcome = "denied".into();
        event.code = Some(e.code().into());
        if event.decision_reasons.is_empty() {
            event.decision_reasons = vec![e.to_string()];
        }
        if let Err(ae) = self.audit.append(event, None).await {
            tracing::error!(error = %ae, "could not audit an elevation refusal");
        }
    }
}

/// A transition refused inside the writer: roll the change back, still
/// append the refusal row.
pub(super) fn refused(
    mut ev: AuditEvent,
    e: ElevationOpError,
) -> TxOutcome<Result<Row, ElevationOpError>> {
    ev.outcome = "denied".into();
    ev.code = Some(e.code().into());
    ev.decision_reasons = vec![e.to_string()];
    TxOutcome {
        events: vec![ev],
        keep: false,
        value: Err(e),
    }
}

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
