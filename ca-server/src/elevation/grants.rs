//! The in-memory index of active grants that issuance reads: replaced
//! whole from the database (after this process's transitions and every
//! second), never edited in place.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ca_core::Principal;
use ca_core::policy::ActiveGrant;

use super::store::Row;

/// Active grants by issuer and subject, for the issuance path. Rebuilt from
/// the database after every transition this process commits and every
/// second (so `jitssh-ca elevation revoke`, a separate process, takes effect
/// within a second).
#[derive(Default)]
pub struct GrantIndex {
    by_identity: ArcSwap<HashMap<String, HashMap<String, Vec<ActiveGrant>>>>,
}

impl GrantIndex {
    /// The grants of `issuer` + `subject` still active at `now`.
    pub fn active(&self, issuer: &str, subject: &str, now: u64) -> Vec<ActiveGrant> {
        let map = self.by_identity.load();
        if map.is_empty() {
            return Vec::new();
        }
        map.get(issuer)
            .and_then(|m| m.get(subject))
            .map(|v| v.iter().filter(|g| g.ends_at > now).cloned().collect())
            .unwrap_or_default()
    }

    pub(super) fn replace(&self, rows: Vec<Row>) {
        let mut map: HashMap<String, HashMap<String, Vec<ActiveGrant>>> = HashMap::new();
        for row in rows {
            let (issuer, subject) = (row.requester.issuer.clone(), row.requester.subject.clone());
            if let Some(grant) = active_grant(row) {
                map.entry(issuer)
                    .or_default()
                    .entry(subject)
                    .or_default()
                    .push(grant);
            }
        }
        self.by_identity.store(Arc::new(map));
    }
}

/// An approved row as the issuance path sees it.
pub(super) fn active_grant(row: Row) -> Option<ActiveGrant> {
    let ends_at = row.grant_end?;
    let principals = row
        .principals
        .iter()
        .filter_map(|p| Principal::parse(p).ok())
        .collect();
    Some(ActiveGrant {
        id: row.id,
        role: row.role,
        principals,
        ends_at,
    })
}
