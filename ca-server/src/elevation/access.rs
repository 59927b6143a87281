//! What a caller may do: revoked identities change nothing; whether someone
//! may decide a request (the server's rules, then the policy's); who may see
//! it at all.

use ca_core::elevation::{ElevationState, RoleName, enforce_approval};
use ca_core::wire::ElevationVote;
use ca_core::{IdentityKind, Refusal};

use super::caller::Caller;
use super::error::ElevationOpError;
use super::policy_input;
use super::service::Elevations;
use super::store::Row;

impl Elevations {
    /// Refuse a revoked identity (`jitssh-ca revoke --subject`) any
    /// elevation call that changes something. Read from the database, so a
    /// revocation made anywhere counts at once.
    pub(super) fn refuse_revoked(&self, who: &Caller<'_>) -> Result<(), ElevationOpError> {
        let (issuer, subject) = (&who.identity.issuer, &who.identity.subject);
        if self.read(|c| crate::revocation::subject_revoked(c, issuer, subject))? {
            return Err(ElevationOpError::Revoked);
        }
        Ok(())
    }

    /// May `who` decide `row` (approve or deny)? The server's rules first,
    /// then the policy's `approval_decision`.
    pub(super) fn may_decide(
        &self,
        who: &Caller<'_>,
        row: &Row,
        votes: &[(ElevationVote, String)],
        action: &str,
        now: u64,
    ) -> Result<(Vec<String>, String), ElevationOpError> {
        if who.identity.kind != IdentityKind::Human {
            return Err(ElevationOpError::WorkloadApprover);
        }
        if self.same_person_as_requester(who.identity, row) {
            return Err(ElevationOpError::SelfApproval);
        }
        let policy = self.policy.snapshot();
        let role = RoleName::parse(&row.role)
            .ok()
            .and_then(|n| policy.roles().get(&n).cloned());
        let input = policy_input::approval(who, row, votes, action, role.as_ref(), now);
        let eval = policy
            .evaluate_approval(&input)
            .map_err(|e| ElevationOpError::PolicyError(e.to_string()))?;
        match enforce_approval(eval.decision.as_ref()) {
            Ok(reasons) => Ok((reasons, eval.policy_hash)),
            Err(Refusal::Denied { reasons }) => Err(ElevationOpError::NotApprover {
                id: row.id.clone(),
                reasons,
            }),
            Err(Refusal::PolicyError(m)) => Err(ElevationOpError::PolicyError(m)),
        }
    }

    /// Whether `who` may see `row`: the requester, anyone who voted or
    /// closed it, and anyone the policy lets decide it.
    pub(super) fn visible(
        &self,
        who: &Caller<'_>,
        row: &Row,
        votes: &[(ElevationVote, String)],
        now: u64,
    ) -> (bool, bool) {
        let me = who.party();
        if row.requester.issuer == me.issuer && row.requester.subject == me.subject {
            return (true, false);
        }
        let voted = votes
            .iter()
            .any(|(v, _)| v.issuer == me.issuer && v.subject == me.subject)
            || row
                .closed_by
                .as_ref()
                .is_some_and(|c| c.issuer == me.issuer && c.subject == me.subject);
        let can = self.may_decide(who, row, votes, "approve", now).is_ok();
        let pending = row.state_at(now) == ElevationState::Pending;
        (voted || can, can && pending && !voted)
    }
}
