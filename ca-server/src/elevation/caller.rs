//! Who is calling: the verified identity and where the call came from, as
//! an elevation party and as the start of its audit row.

use ca_core::VerifiedIdentity;
use ca_core::audit::AuditEvent;
use ca_core::identity::Party;

/// What a request's caller is: the verified identity, where it came from,
/// and through which door.
pub struct Caller<'a> {
    pub identity: &'a VerifiedIdentity,
    pub source_ip: &'a str,
    pub channel: Channel,
}

/// The door a request came through; the audit row names it when it is not
/// the JSON API (rows written before the console have no `channel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// The HTTP API (`jitssh`, `jitssh-ca`, scripts).
    Api,
    /// The web console under `/ui/`.
    Console,
}

impl Caller<'_> {
    pub(super) fn party(&self) -> Party {
        party(self.identity)
    }

    pub fn event(&self, action: &str, now: u64) -> AuditEvent {
        AuditEvent {
            time: now,
            action: action.into(),
            issuer: Some(self.identity.issuer.clone()),
            subject: Some(self.identity.subject.clone()),
            email: self.identity.email.clone(),
            source_ip: Some(self.source_ip.to_owned()),
            channel: match self.channel {
                Channel::Api => None,
                Channel::Console => Some("console".into()),
            },
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
