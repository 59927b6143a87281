//! Deciding a request: `approve` and `deny` by an approver the server's
//! rules and the policy allow, one vote per person, settled on the audit
//! writer; a deny after approval ends the active grant.

use ca_core::audit::AuditEvent;
use ca_core::elevation::ElevationState::{Approved, Denied, Pending};
use ca_core::elevation::parse_comment;
use ca_core::wire::{Elevation, ElevationDecide, ElevationVote};
use serde_json::json;

use super::caller::Caller;
use super::error::ElevationOpError;
use super::service::Elevations;
use super::store::{self, Row};
use super::transition::{Transition, committed, details, refused, single, voter};

impl Elevations {
    /// `POST /v1/elevations/{id}/approve`.
    pub async fn approve(
        &self,
        who: &Caller<'_>,
        id: &str,
        body: &[u8],
        now: u64,
    ) -> Result<Elevation, ElevationOpError> {
        self.decide(who, id, body, now, true).await
    }

    /// `POST /v1/elevations/{id}/deny`.
    pub async fn deny(
        &self,
        who: &Caller<'_>,
        id: &str,
        body: &[u8],
        now: u64,
    ) -> Result<Elevation, ElevationOpError> {
        self.decide(who, id, body, now, false).await
    }

    async fn decide(
        &self,
        who: &Caller<'_>,
        id: &str,
        body: &[u8],
        now: u64,
        approve: bool,
    ) -> Result<Elevation, ElevationOpError> {
        let action = if approve {
            "elevation_approve"
        } else {
            "elevation_deny"
        };
        let mut event = who.event(action, now);
        event.details = Some(json!({"elevation_id": ca_core::escape_control(id)}));
        let result = self
            .decide_steps(who, id, body, now, approve, &mut event)
            .await;
        if let Err(e) = &result {
            self.audit_refusal(event, e).await;
        }
        result
    }

    async fn decide_steps(
        &self,
        who: &Caller<'_>,
        id: &str,
        body: &[u8],
        now: u64,
        approve: bool,
        event: &mut AuditEvent,
    ) -> Result<Elevation, ElevationOpError> {
        self.refuse_revoked(who)?;
        let body: ElevationDecide = parse_optional_body(body)?;
        let comment = parse_comment(body.comment.as_deref())?;
        let (row, votes) = self.load_row(id)?;
        event.details = Some(details(&row, comment.as_deref()));
        let verb = if approve { "approved" } else { "denied" };
        let state = row.state_at(now);
        if state == Approved && !approve {
            let hash = body.request_hash.clone();
            return self
                .deny_active(who, row, &votes, hash, comment, now, event)
                .await;
        }
        if state != Pending {
            // Say what it is only to those who may see it.
            if !self.visible(who, &row, &votes, now).0 {
                return Err(ElevationOpError::NotFound(id.to_owned()));
            }
            return Err(ElevationOpError::NotPending {
                id: id.to_owned(),
                state,
                action: verb,
            });
        }
        let (reasons, policy_hash) = match self.may_decide(
            who,
            &row,
            &votes,
            if approve { "approve" } else { "deny" },
            now,
        ) {
            Ok(r) => r,
            Err(e @ ElevationOpError::NotApprover { .. }) => {
                // Not an approver: whether it exists is none of their business.
                if !self.visible(who, &row, &votes, now).0 {
                    return Err(ElevationOpError::NotFound(id.to_owned()));
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        event.policy_hash = Some(policy_hash);
        event.decision_reasons = reasons;
        if body
            .request_hash
            .as_ref()
            .is_some_and(|h| *h != row.request_hash)
        {
            return Err(ElevationOpError::RequestChanged(id.to_owned()));
        }
        self.claim_login(who, now).await?;
        let voter_logins = self.logins_of(who.identity);
        let bound = self.login_lookup();
        let me = who.party();
        let vote = ElevationVote {
            issuer: me.issuer.clone(),
            subject: me.subject.clone(),
            email: me.email.clone(),
            comment,
            time: now,
        };
        let seen_hash = row.request_hash.clone();
        let id_owned = id.to_owned();
        // Decided on the writer, one change at a time: re-read, re-check, write.
        let answers = self
            .commit_transition(event, now, move |conn, mut ev| {
                let refuse = |ev, e| Ok(refused(ev, e));
                let Some(current) = store::load(conn, &id_owned)? else {
                    return refuse(ev, ElevationOpError::NotFound(id_owned.clone()));
                };
                let state = current.state_at(now);
                if state != Pending {
                    return refuse(
                        ev,
                        ElevationOpError::NotPending {
                            id: id_owned.clone(),
                            state,
                            action: verb,
                        },
                    );
                }
                if current.request_hash != seen_hash {
                    return refuse(ev, ElevationOpError::RequestChanged(id_owned.clone()));
                }
                // Every conditional UPDATE must change its row: 0 rows means
                // the state read above is not the stored one, and the whole
                // change (vote included) rolls back with a refusal row.
                let changed = || ElevationOpError::Changed {
                    id: id_owned.clone(),
                    action: verb,
                };
                if !approve {
                    let updated =
                        store::close(conn, &id_owned, &[Pending], Denied, Some(&vote), now)?;
                    if updated == store::Updated::Nothing {
                        return refuse(ev, changed());
                    }
                    ev.outcome = Denied.as_str().into();
                    ev.code = None;
                    ev.details = Some(details(
                        &Row {
                            state: Denied,
                            ..current.clone()
                        },
                        vote.comment.as_deref(),
                    ));
                    let transition = Transition {
                        notify: "elevation.denied",
                        actor: Some(voter(&vote)),
                        comment: vote.comment.clone(),
                        with_votes: true,
                        grants_changed: false,
                        row: Row {
                            state: Denied,
                            closed_by: Some(vote),
                            ..current
                        },
                    };
                    return Ok(committed(vec![ev], vec![transition]));
                }
                let prior = store::votes(conn, &id_owned)?;
                let me = voter(&vote);
                // One vote per person: by identity, verified email, or a
                // login name bound to the earlier voter.
                if prior.iter().any(|(v, _)| {
                    me.same_person_with_logins(
                        &voter(v),
                        &voter_logins,
                        &bound(&v.issuer, &v.subject),
                    )
                }) {
                    return refuse(ev, ElevationOpError::AlreadyApproved(id_owned.clone()));
                }
                store::insert_vote(conn, &id_owned, &vote, &current.request_hash)?;
                let counted = prior
                    .iter()
                    .filter(|(_, h)| *h == current.request_hash)
                    .count()
                    + 1;
                let mut now_row = current.clone();
                if counted >= current.approvals_required as usize {
                    let updated = store::approve(conn, &id_owned, now, current.ttl_seconds)?;
                    if updated == store::Updated::Nothing {
                        return refuse(ev, changed());
                    }
                    now_row.state = Approved;
                    now_row.grant_start = Some(now);
                    now_row.grant_end = Some(now + current.ttl_seconds);
                    ev.outcome = Approved.as_str().into();
                    ev.granted_principals = current.principals.clone();
                    ev.ttl_seconds = Some(current.ttl_seconds);
                } else {
                    ev.outcome = "recorded".into();
                }
                let mut d = details(&now_row, vote.comment.as_deref());
                d["approvals"] = json!(counted);
                ev.details = Some(d);
                let approved = now_row.state == Approved;
                let transition = Transition {
                    row: now_row,
                    notify: if approved {
                        "elevation.approved"
                    } else {
                        "elevation.approval"
                    },
                    actor: Some(me),
                    comment: vote.comment,
                    with_votes: true,
                    grants_changed: approved,
                };
                Ok(committed(vec![ev], vec![transition]))
            })
            .await?;
        let wire = single(answers)?;
        tracing::info!(id, state = %wire.state, who = %who.identity.display_name(), "elevation decided");
        Ok(wire)
    }

    /// A deny after approval: someone who may decide the request ends its
    /// active grant early (→ `revoked`, as an operator's revoke), and with it
    /// the certificates issued under it. The requester cancels instead.
    #[allow(clippy::too_many_arguments)] // the named inputs of one step
    async fn deny_active(
        &self,
        who: &Caller<'_>,
        row: Row,
        votes: &[(ElevationVote, String)],
        request_hash: Option<String>,
        comment: Option<String>,
        now: u64,
        event: &mut AuditEvent,
    ) -> Result<Elevation, ElevationOpError> {
        match self.may_decide(who, &row, votes, "deny", now) {
            Ok((reasons, policy_hash)) => {
                event.policy_hash = Some(policy_hash);
                event.decision_reasons = reasons;
            }
            Err(e @ ElevationOpError::NotApprover { .. }) => {
                if !self.visible(who, &row, votes, now).0 {
                    return Err(ElevationOpError::NotFound(row.id.clone()));
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        if request_hash.is_some_and(|h| h != row.request_hash) {
            return Err(ElevationOpError::RequestChanged(row.id.clone()));
        }
        let me = who.party();
        let by = ElevationVote {
            issuer: me.issuer,
            subject: me.subject,
            email: me.email,
            comment,
            time: now,
        };
        self.close(event, &row.id, by, now, "elevation.revoked")
            .await
    }
}

/// A body that may be empty (no comment, no hash).
pub(super) fn parse_optional_body(body: &[u8]) -> Result<ElevationDecide, ElevationOpError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ElevationDecide::default());
    }
    serde_json::from_slice(body).map_err(|e| ElevationOpError::BadBody(e.to_string()))
}
