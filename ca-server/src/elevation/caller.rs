//! Who is calling: the verified identity and where the call came from, as
//! an elevation party and as the start of its audit row.

use ca_core::VerifiedIdentity;
use ca_core::audit::AuditEvent;
use ca_core::identity::Party;

/// What a request's caller is: the verified identity and where it came from.
pub struct Caller<'a> {
    pub identity: &'a VerifiedIdentity,
    pub source_ip: &'a str,
}

impl Caller<'_> {
    pub(super) fn party(&self) -> Party {
        party(self.identity)
    }

    pub(super) fn event(&self, action: &str, now: u64) -> AuditEvent {
        AuditEvent {
            time: now,
            action: action.into(),
            issuer: Some(self.identity.issuer.clone()),
            subject: Some(self.identity.subject.clone()),
            email: self.identity.email.clone(),
            source_ip: Some(self.source_ip.to_owned()),
            ..Default::default()
        }
    }
}

pub(super) fn party(id: &VerifiedIdentity) -> Party {
    Party {
        issuer: id.issuer.clone(),
        subject: id.subject.clone(),
        email: id.email.clone(),
    }
}
