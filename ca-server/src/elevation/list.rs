//! Reading elevations: one by id and the list a caller may see (requests
//! and the pending ones they may decide), and the operator's view of all.

use ca_core::elevation::ElevationState;
use ca_core::wire::Elevation;

use super::caller::Caller;
use super::error::ElevationOpError;
use super::service::Elevations;
use super::store::{self, Row};

/// How many elevations `list` returns at most.
const LIST_LIMIT: usize = 200;

impl Elevations {
    /// `GET /v1/elevations/{id}`.
    pub fn get(&self, who: &Caller<'_>, id: &str, now: u64) -> Result<Elevation, ElevationOpError> {
        let (row, votes) = self.load_row(id)?;
        let (visible, can_decide) = self.visible(who, &row, &votes, now);
        if !visible {
            return Err(ElevationOpError::NotFound(id.to_owned()));
        }
        Ok(row.to_wire(votes.into_iter().map(|(v, _)| v).collect(), now, can_decide))
    }

    /// `GET /v1/elevations?state=...`: the caller's own requests and the
    /// pending ones the caller may decide; `state` filters by the state read
    /// at `now` (`active` means approved and not yet ended; `all` or none).
    pub fn list(
        &self,
        who: &Caller<'_>,
        state: Option<&str>,
        now: u64,
    ) -> Result<Vec<Elevation>, ElevationOpError> {
        let filter = state_filter(state)?;
        let me = who.party();
        let candidates = self.read(|c| {
            let (own, pending) = store::candidates(c, &me, LIST_LIMIT)?;
            let mut seen = std::collections::HashSet::new();
            let mut out = Vec::new();
            for row in own.into_iter().chain(pending) {
                if !seen.insert(row.id.clone()) {
                    continue;
                }
                let st = row.state_at(now);
                if filter.is_none_or(|f| st == f) {
                    let votes = store::votes(c, &row.id)?;
                    out.push((row, votes));
                }
            }
            Ok(out)
        })?;
        let mut out = Vec::new();
        for (row, votes) in candidates {
            let (visible, can_decide) = self.visible(who, &row, &votes, now);
            if visible {
                out.push(row.to_wire(votes.into_iter().map(|(v, _)| v).collect(), now, can_decide));
            }
        }
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// For `jitssh-ca elevation list/show` (operator view: everything).
    pub fn all(&self, limit: usize) -> Result<Vec<Row>, ElevationOpError> {
        self.read(|c| store::all(c, limit))
    }

    /// For `jitssh-ca elevation show`.
    pub fn show(&self, id: &str, now: u64) -> Result<Elevation, ElevationOpError> {
        let (row, votes) = self.load_row(id)?;
        Ok(row.to_wire(votes.into_iter().map(|(v, _)| v).collect(), now, false))
    }
}

/// The `?state=` filter of `list`: none for none, `all` or empty; `active`
/// means approved; anything else must name a state.
fn state_filter(state: Option<&str>) -> Result<Option<ElevationState>, ElevationOpError> {
    match state {
        None | Some("all" | "") => Ok(None),
        Some("active") => Ok(Some(ElevationState::Approved)),
        Some(s) => s.parse().map(Some).map_err(|_| {
            ElevationOpError::BadBody(format!(
                "unknown state {:?}: use pending, active, approved, denied, expired, cancelled, revoked or all",
                ca_core::escape_control(s)
            ))
        }),
    }
}
