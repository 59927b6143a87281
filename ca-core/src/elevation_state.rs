//! An elevation's state, one spelling on the wire, in the database and in
//! audit rows (a leaf module: the wire types and the elevation rules both
//! use it).

use serde::{Deserialize, Serialize};

/// Where an elevation is: waiting for approvers (`pending`), granted
/// (`approved`; a grant past its end reads `expired`), or ended (`denied`,
/// `expired`, `cancelled`, `revoked`). Spelled the same on the wire, in the
/// database and in audit rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElevationState {
    Pending,
    Approved,
    Denied,
    Expired,
    Cancelled,
    Revoked,
}

impl ElevationState {
    pub const ALL: [ElevationState; 6] = [
        ElevationState::Pending,
        ElevationState::Approved,
        ElevationState::Denied,
        ElevationState::Expired,
        ElevationState::Cancelled,
        ElevationState::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ElevationState::Pending => "pending",
            ElevationState::Approved => "approved",
            ElevationState::Denied => "denied",
            ElevationState::Expired => "expired",
            ElevationState::Cancelled => "cancelled",
            ElevationState::Revoked => "revoked",
        }
    }
}

impl std::fmt::Display for ElevationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name this version does not know (read from a database row or
/// given by a user).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown elevation state {0:?}")]
pub struct UnknownState(pub String);

impl std::str::FromStr for ElevationState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, UnknownState> {
        ElevationState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(crate::escape_control(s)))
    }
}

#[cfg(test)]
mod state_tests {
    #![allow(clippy::unwrap_used)]

    use super::ElevationState;

    #[test]
    fn one_spelling_on_the_wire_in_the_database_and_in_messages() {
        for state in ElevationState::ALL {
            let wire = serde_json::to_string(&state).unwrap();
            assert_eq!(wire, format!("\"{}\"", state.as_str()));
            assert_eq!(
                serde_json::from_str::<ElevationState>(&wire).unwrap(),
                state
            );
            assert_eq!(state.as_str().parse::<ElevationState>().unwrap(), state);
            assert_eq!(state.to_string(), state.as_str());
        }
        for bad in ["", "active", "all", "Pending", "approved "] {
            assert!(bad.parse::<ElevationState>().is_err(), "{bad:?}");
        }
    }
}
