//! Ending an elevation: the requester cancels, an operator revokes (from
//! the command line or, signed in, from the console), and
//! the sweeper records expiry. Ending an active grant revokes the
//! certificates issued under it in the same transaction.

use ca_core::audit::AuditEvent;
use ca_core::elevation::ElevationState::{self, Approved, Cancelled, Pending, Revoked};
use ca_core::elevation::parse_comment;
use ca_core::wire::{Elevation, ElevationDecide, ElevationVote};
use serde_json::json;

use super::caller::Caller;
use super::decide::parse_optional_body;
use super::error::ElevationOpError;
use super::service::Elevations;
use super::store;
use super::transition::{Transition, committed, details, refused, single, voter};

impl Elevations {
    /// `POST /v1/elevations/{id}/cancel`: the requester withdraws a pending
    /// request (→ cancelled) or drops an active grant early (→ revoked).
    pub async fn cancel(
        &self,
        who: &Caller<'_>,
        id: &str,
        body: &[u8],
        now: u64,
    ) -> Result<Elevation, ElevationOpError> {
        let mut event = who.event("elevation_cancel", now);
        event.details = Some(json!({"elevation_id": ca_core::escape_control(id)}));
        let result = async {
            self.refuse_revoked(who)?;
            let body: ElevationDecide = parse_optional_body(body)?;
            let comment = parse_comment(body.comment.as_deref())?;
            let (row, votes) = self.load_row(id)?;
            let me = who.party();
            if !(row.requester.issuer == me.issuer && row.requester.subject == me.subject) {
                if !self.visible(who, &row, &votes, now).0 {
                    return Err(ElevationOpError::NotFound(id.to_owned()));
                }
                return Err(ElevationOpError::NotRequester(id.to_owned()));
            }
            let by = ElevationVote {
                issuer: me.issuer.clone(),
                subject: me.subject.clone(),
                email: me.email.clone(),
                comment,
                time: now,
            };
            self.close(&mut event, id, by, now, "elevation.cancelled")
                .await
        }
        .await;
        if let Err(e) = &result {
            self.audit_refusal(event, e).await;
        }
        result
    }

    /// `jitssh-ca elevation revoke`: an operator ends a pending request or an
    /// active grant. `operator` names who did it (for the audit row).
    pub async fn revoke(
        &self,
        id: &str,
        operator: &str,
        reason: Option<String>,
        now: u64,
    ) -> Result<Elevation, ElevationOpError> {
        let event = AuditEvent {
            time: now,
            action: "elevation_revoke".into(),
            subject: Some(operator.to_owned()),
            reason: reason.clone(),
            details: Some(json!({"elevation_id": ca_core::escape_control(id)})),
            ..Default::default()
        };
        let by = ElevationVote {
            issuer: "jitssh-ca".into(),
            subject: operator.to_owned(),
            email: None,
            comment: reason,
            time: now,
        };
        self.revoke_by(event, by, id, now).await
    }

    /// [`Elevations::revoke`] by a signed-in person (the console's "End
    /// now", for people the policy gives `end_grants`): the same transition,
    /// its audit row naming the person and their channel.
    pub async fn revoke_as(
        &self,
        who: &Caller<'_>,
        id: &str,
        reason: Option<String>,
        now: u64,
    ) -> Result<Elevation, ElevationOpError> {
        let mut event = who.event("elevation_revoke", now);
        event.reason = reason.clone();
        event.details = Some(json!({"elevation_id": ca_core::escape_control(id)}));
        if let Err(e) = self.refuse_revoked(who) {
            self.audit_refusal(event, &e).await;
            return Err(e);
        }
        let me = who.party();
        let by = ElevationVote {
            issuer: me.issuer,
            subject: me.subject,
            email: me.email,
            comment: reason,
            time: now,
        };
        self.revoke_by(event, by, id, now).await
    }

    /// End `id` as an operator's revocation, recorded as `by`.
    async fn revoke_by(
        &self,
        mut event: AuditEvent,
        by: ElevationVote,
        id: &str,
        now: u64,
    ) -> Result<Elevation, ElevationOpError> {
        let result = self
            .close(&mut event, id, by, now, "elevation.revoked")
            .await;
        if let Err(e) = &result {
            self.audit_refusal(event, e).await;
        }
        result
    }

    /// Close `id` (pending → cancelled/revoked, active → revoked).
    pub(super) async fn close(
        &self,
        event: &mut AuditEvent,
        id: &str,
        by: ElevationVote,
        now: u64,
        kind: &'static str,
    ) -> Result<Elevation, ElevationOpError> {
        let id_owned = id.to_owned();
        let operator = kind == "elevation.revoked";
        let answers = self
            .commit_transition(event, now, move |conn, mut ev| {
                let Some(current) = store::load(conn, &id_owned)? else {
                    return Ok(refused(ev, ElevationOpError::NotFound(id_owned.clone())));
                };
                let state = current.state_at(now);
                let to = match (state, operator) {
                    (Pending, false) => Cancelled,
                    (Pending, true) | (Approved, _) => Revoked,
                    _ => {
                        let e = ElevationOpError::NotCancellable {
                            id: id_owned.clone(),
                            state,
                        };
                        return Ok(refused(ev, e));
                    }
                };
                let updated = store::close(conn, &id_owned, &[current.state], to, Some(&by), now)?;
                if updated == store::Updated::Nothing {
                    let e = ElevationOpError::Changed {
                        id: id_owned.clone(),
                        action: to.as_str(),
                    };
                    return Ok(refused(ev, e));
                }
                // An active grant ended early: the certificates issued under
                // it are revoked in this same transaction.
                let revoked_serials = match (state, current.grant_start) {
                    (Approved, Some(start)) => crate::revocation::revoke_grant_certificates(
                        conn,
                        &current.requester.issuer,
                        &current.requester.subject,
                        &current.principals,
                        start,
                        now,
                        &format!("elevation {id_owned} ended early ({to})"),
                    )?,
                    _ => Vec::new(),
                };
                let mut closed = current;
                closed.state = to;
                if closed.grant_end.is_some() {
                    closed.grant_end = Some(now);
                }
                closed.closed_by = Some(by.clone());
                ev.outcome = to.as_str().into();
                let mut d = details(&closed, by.comment.as_deref());
                if state == Approved {
                    d["revoked_serials"] = json!(
                        revoked_serials
                            .iter()
                            .map(u64::to_string)
                            .collect::<Vec<_>>()
                    );
                }
                ev.details = Some(d);
                let transition = Transition {
                    notify: if to == Cancelled {
                        "elevation.cancelled"
                    } else {
                        kind
                    },
                    actor: Some(voter(&by)),
                    comment: by.comment,
                    with_votes: false,
                    grants_changed: true,
                    row: closed,
                };
                Ok(committed(vec![ev], vec![transition]))
            })
            .await?;
        let wire = single(answers)?;
        tracing::info!(id, state = %wire.state, "elevation closed");
        Ok(wire)
    }

    /// Record expiry of undecided requests and ended grants (one audit row
    /// each). Reads see them expired anyway; this makes it a transition.
    pub async fn sweep(&self, now: u64) -> Result<usize, ElevationOpError> {
        let mut template = AuditEvent {
            time: now,
            action: "elevation_expire".into(),
            outcome: ElevationState::Expired.as_str().into(),
            ..Default::default()
        };
        let expired = self
            .commit_transition(&mut template, now, move |conn, base| {
                let due = store::expire_due(conn, now)?;
                let mut events = Vec::with_capacity(due.len());
                let mut transitions = Vec::with_capacity(due.len());
                for mut row in due {
                    let mut d = details(&row, None);
                    d["from"] = json!(row.state);
                    events.push(AuditEvent {
                        issuer: Some(row.requester.issuer.clone()),
                        subject: Some(row.requester.subject.clone()),
                        email: row.requester.email.clone(),
                        details: Some(d),
                        ..base.clone()
                    });
                    row.state = ElevationState::Expired;
                    // The one-second refresh that follows every sweep drops
                    // ended grants from the index.
                    transitions.push(Transition {
                        row,
                        notify: "elevation.expired",
                        actor: None,
                        comment: None,
                        with_votes: false,
                        grants_changed: false,
                    });
                }
                Ok(committed(events, transitions))
            })
            .await?;
        Ok(expired.len())
    }
}
