//! What a signed-in person may see and do in the console, as the policy's
//! `data.jitssh.ui_decision` says, asked on every request. Fail closed: an
//! undefined decision, an evaluation error, a malformed answer or a
//! capability this server does not know gives no rights at all.

use std::fmt;

use ca_core::VerifiedIdentity;
use serde_json::json;

use crate::policy::PolicySnapshot;

/// One thing the console lets a person see or do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// My access: own grants and requests, the roles one may request.
    MyAccess,
    /// To decide: the pending requests one may decide (each decision is
    /// still `approval_decision`'s).
    Decide,
    /// Grants: everyone's active and recent grants.
    Grants,
    /// End someone's grant early.
    EndGrants,
    /// Audit: search, charts, chain verification, export.
    Audit,
    /// Revocations: the list and when each reached the KRL.
    Revocations,
    /// Revoke a serial, key or subject.
    Revoke,
    /// Policy: files, test results, reloads, the "try it" form.
    Policy,
}

impl Capability {
    /// Every capability, in the order the navigation shows them.
    pub const ALL: [Capability; 8] = [
        Capability::MyAccess,
        Capability::Decide,
        Capability::Grants,
        Capability::EndGrants,
        Capability::Audit,
        Capability::Revocations,
        Capability::Revoke,
        Capability::Policy,
    ];

    /// The name the policy uses.
    pub fn name(self) -> &'static str {
        match self {
            Capability::MyAccess => "my_access",
            Capability::Decide => "decide",
            Capability::Grants => "grants",
            Capability::EndGrants => "end_grants",
            Capability::Audit => "audit",
            Capability::Revocations => "revocations",
            Capability::Revoke => "revoke",
            Capability::Policy => "policy",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The capabilities one person holds for one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rights(u16);

/// Why a `ui_decision` gave no rights.
#[derive(Debug, thiserror::Error)]
pub enum RightsError {
    #[error("{0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("data.jitssh.ui_decision is undefined for this person")]
    Undefined,
    #[error("data.jitssh.ui_decision is not usable: {0}")]
    Malformed(String),
}

impl Rights {
    /// No rights: what any doubt gives.
    pub const NONE: Rights = Rights(0);

    /// Ask `policy` what `identity` may do in the console.
    pub fn decide(
        policy: &PolicySnapshot,
        identity: &VerifiedIdentity,
        source_ip: &str,
        now: u64,
    ) -> Result<Rights, RightsError> {
        let evaluation = policy.evaluate_ui(&console_input(identity, "console", source_ip, now))?;
        Rights::read(evaluation.decision.as_ref())
    }

    /// Read a decision: an object whose `capabilities` is an array of known
    /// capability names (other members, such as `reasons`, are ignored).
    pub fn read(decision: Option<&serde_json::Value>) -> Result<Rights, RightsError> {
        let decision = decision.ok_or(RightsError::Undefined)?;
        let caps = decision
            .as_object()
            .ok_or_else(|| RightsError::Malformed("not an object".into()))?
            .get("capabilities")
            .and_then(|c| c.as_array())
            .ok_or_else(|| RightsError::Malformed("capabilities is not an array".into()))?;
        let mut rights = Rights::NONE;
        for cap in caps {
            let name = cap.as_str().ok_or_else(|| {
                RightsError::Malformed(format!("capability {cap} is not a string"))
            })?;
            let cap = Capability::parse(name).ok_or_else(|| {
                RightsError::Malformed(format!(
                    "unknown capability {:?} (known: {})",
                    ca_core::escape_control(name),
                    Capability::ALL.map(Capability::name).join(", ")
                ))
            })?;
            rights.0 |= cap.bit();
        }
        Ok(rights)
    }

    /// Whether `cap` is held.
    pub fn has(self, cap: Capability) -> bool {
        self.0 & cap.bit() != 0
    }
}

/// The input of the console's questions to the policy (`ui_decision` with
/// `kind` "console", `role_guide` with "role_guide"): who, from where, when.
pub(super) fn console_input(
    identity: &VerifiedIdentity,
    kind: &str,
    source_ip: &str,
    now: u64,
) -> serde_json::Value {
    json!({
        "identity": identity,
        "request": {"kind": kind, "source_ip": source_ip},
        "time": ca_core::policy::TimeInput::at(now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_known_capabilities() {
        let r = Rights::read(Some(
            &json!({"capabilities": ["audit", "decide"], "reasons": []}),
        ))
        .unwrap();
        assert!(r.has(Capability::Audit));
        assert!(r.has(Capability::Decide));
        assert!(!r.has(Capability::Revoke));
        assert!(!r.has(Capability::MyAccess));
    }

    #[test]
    fn any_doubt_gives_nothing() {
        for bad in [
            json!(true),
            json!(["audit"]),
            json!({"capabilities": "audit"}),
            json!({"capabilities": ["audit", "everything"]}),
            json!({"capabilities": [1]}),
            json!({"caps": ["audit"]}),
        ] {
            assert!(Rights::read(Some(&bad)).is_err(), "{bad}");
        }
        assert!(matches!(Rights::read(None), Err(RightsError::Undefined)));
    }

    #[test]
    fn names_round_trip() {
        for c in Capability::ALL {
            assert_eq!(Capability::parse(c.name()), Some(c));
        }
        assert_eq!(Capability::parse("Audit"), None);
    }
}
