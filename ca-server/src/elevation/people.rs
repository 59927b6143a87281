//! Telling people apart in elevations: the self-approval rule and "each
//! approver counts once" compare issuer + subject, verified email and login
//! names (derived from the token, and bound in the `logins` table), so one
//! person with two accounts, at one issuer or two, is still one person.

use std::sync::Arc;

use ca_core::VerifiedIdentity;

use super::caller::{Caller, party};
use super::error::ElevationOpError;
use super::service::Elevations;
use super::store::Row;
use crate::logins::{LoginNameError, LoginNames};

impl Elevations {
    /// Compare people by their login names too (`serve` does this; without
    /// it only the login names derived from tokens are compared).
    pub fn with_logins(mut self, logins: Arc<LoginNames>) -> Self {
        self.logins = Some(logins);
        self
    }

    /// The login name of a person acting now must be theirs (bound to them,
    /// or free and now bound). Workloads pass.
    pub(super) async fn claim_login(
        &self,
        caller: &Caller<'_>,
        now: u64,
    ) -> Result<(), ElevationOpError> {
        let Some(l) = &self.logins else {
            return Ok(());
        };
        l.claim(caller.identity, now).await.map_err(|e| match e {
            // Like any write the audit log could not take: nothing changed.
            LoginNameError::Unavailable(m) => {
                ElevationOpError::AuditUnavailable(crate::audit::AuditError::Unavailable(m))
            }
            e => ElevationOpError::LoginName(e),
        })
    }

    /// Every login name known for `identity`: derived now, and bound.
    pub(super) fn logins_of(&self, identity: &VerifiedIdentity) -> Vec<String> {
        match &self.logins {
            Some(l) => l.logins_of(identity),
            None => identity.login.iter().map(|l| l.to_string()).collect(),
        }
    }

    /// A lookup of bound login names by issuer + subject, for use inside a
    /// writer transaction (`Send + 'static`).
    pub(super) fn login_lookup(&self) -> impl Fn(&str, &str) -> Vec<String> + Send + 'static {
        let logins = self.logins.clone();
        move |issuer, subject| {
            logins
                .as_ref()
                .map(|l| l.bound_to(issuer, subject))
                .unwrap_or_default()
        }
    }

    /// Whether `who` is the requester of `row`: same issuer + subject, same
    /// verified email, or a login name in common (the caller's, against
    /// those bound to the requester).
    pub(super) fn same_person_as_requester(&self, who: &VerifiedIdentity, row: &Row) -> bool {
        let requester = &row.requester;
        let theirs = self.login_lookup()(&requester.issuer, &requester.subject);
        party(who).same_person_with_logins(requester, &self.logins_of(who), &theirs)
    }
}
