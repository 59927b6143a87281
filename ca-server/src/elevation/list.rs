//! Reading elevations: one by id and the list a caller may see (requests
//! and the pending ones they may decide), the operator's view of all, and
//! the grants page (active and recently ended grants, keyset-paged).

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

/// Where a page of ended grants starts: after the grant that ended at
/// `ended_at` with id `id` (the last row of the previous page). Written in
/// links as `ENDED_AT-ID`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantCursor {
    pub ended_at: u64,
    pub id: String,
}

impl GrantCursor {
    /// Parse `ENDED_AT-ID`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let (at, id) = s.split_once('-')?;
        let valid_id = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        Some(GrantCursor {
            ended_at: at.parse().ok()?,
            id: valid_id.then(|| id.to_owned())?,
        })
    }
}

impl std::fmt::Display for GrantCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ended_at, self.id)
    }
}

/// One view of the grants: every active one (up to a bound) and a page of
/// those that ended recently.
pub struct GrantsPage {
    /// Active at `now`, soonest to end first.
    pub active: Vec<Elevation>,
    /// More grants are active than `active` holds.
    pub more_active: bool,
    /// Ended since `since`, most recently first.
    pub ended: Vec<Elevation>,
    /// Where the next page of ended grants starts, if there is one.
    pub next: Option<GrantCursor>,
}

impl Elevations {
    /// The grants page (the console's Grants, for people the policy gives
    /// `grants`; like [`Elevations::all`] it does not ask who reads): at
    /// most `active_limit` active grants and `per_page` ended since
    /// `since` after `after`, each with its votes.
    pub fn grants_page(
        &self,
        now: u64,
        since: u64,
        after: Option<&GrantCursor>,
        active_limit: usize,
        per_page: usize,
    ) -> Result<GrantsPage, ElevationOpError> {
        let (active, ended) = self.read(|c| {
            let active = store::active_bounded(c, now, active_limit + 1)?;
            let before = after.map(|a| (a.ended_at, a.id.as_str()));
            let ended = store::ended(c, now, since, before, per_page + 1)?;
            let with_votes = |c: &mut dyn crate::db::Conn, rows: Vec<Row>| {
                rows.into_iter()
                    .map(|r| {
                        let votes = store::votes(c, &r.id)?;
                        Ok((r, votes))
                    })
                    .collect::<Result<Vec<_>, crate::db::DbError>>()
            };
            Ok((with_votes(c, active)?, with_votes(c, ended)?))
        })?;
        let wire = |rows: Vec<(Row, Vec<(ca_core::wire::ElevationVote, String)>)>, n: usize| {
            rows.into_iter()
                .take(n)
                .map(|(r, v)| r.to_wire(v.into_iter().map(|(v, _)| v).collect(), now, false))
                .collect::<Vec<_>>()
        };
        let more_active = active.len() > active_limit;
        let more_ended = ended.len() > per_page;
        let ended = wire(ended, per_page);
        let next = more_ended
            .then(|| ended.last())
            .flatten()
            .map(|last| GrantCursor {
                ended_at: last.grant_ends_at.unwrap_or(0),
                id: last.id.clone(),
            });
        Ok(GrantsPage {
            active: wire(active, active_limit),
            more_active,
            ended,
            next,
        })
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
