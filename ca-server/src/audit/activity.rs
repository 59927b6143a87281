//! What the console's charts count: certificates issued and refused per
//! hour, refusals by code, elevation requests by role, over a time window.
//! One grouped read of the window's rows (a `seq` range found on
//! `audit_time`, so the work is bounded by the window, never the log).

use std::collections::BTreeMap;

use crate::db::{Backend, Param};

use super::read::FilterValue;
use super::search::{int, time_range};
use super::store::AuditStore;
use super::types::{AuditError, Filter};

/// The actions that are a certificate.
const CERT_ACTIONS: &str = "('user_cert', 'host_cert')";

/// Counts over `[since, until)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    pub since: u64,
    pub until: u64,
    /// Per hour from `since` (index = hours since `since`): issued, refused.
    pub hours: Vec<(u64, u64)>,
    /// Refused certificates and elevation requests by code, most first.
    pub refusal_codes: Vec<(String, u64)>,
    /// Elevation requests by role: granted or pending, refused; most first.
    pub roles: Vec<(String, u64, u64)>,
}

impl AuditStore {
    /// The counts of the charts over `[since, until)`, in hourly buckets
    /// (`since` is rounded down to the hour).
    pub fn activity(&self, since: u64, until: u64) -> Result<Activity, AuditError> {
        let since = since - since % 3600;
        let backend = self.db().backend();
        let (code, role) = match backend {
            Backend::Sqlite => (
                "json_extract(event, '$.code')",
                "json_extract(event, '$.details.role')",
            ),
            Backend::Postgres => (
                "(event::json ->> 'code')",
                "(event::json -> 'details' ->> 'role')",
            ),
        };
        let sql = format!(
            "SELECT time / 3600,
                    CASE WHEN action IN {CERT_ACTIONS} THEN 1 ELSE 0 END,
                    CASE WHEN outcome IN ('denied', 'failed') THEN 0 ELSE 1 END,
                    CASE WHEN outcome = 'denied' THEN {code} END,
                    CASE WHEN action = 'elevation_request' THEN {role} END,
                    count(*)
             FROM audit
             WHERE seq >= $1 AND seq < $2 AND time >= $3 AND time < $4
               AND (action IN {CERT_ACTIONS} OR action = 'elevation_request')
             GROUP BY 1, 2, 3, 4, 5"
        );
        let filter = Filter {
            since: Some(since),
            until: Some(until),
            ..Filter::default()
        };
        let groups = self
            .db()
            .with(|c| {
                let range = time_range(c, &filter)?;
                let params: Vec<FilterValue> =
                    vec![int(range.lo), int(range.hi), int(since), int(until)];
                let ps: Vec<Param<'_>> = params.iter().map(Param::from).collect();
                c.query(&sql, &ps)?
                    .iter()
                    .map(|r| {
                        Ok(Group {
                            hour: r.u64(0)?,
                            cert: r.int(1)? != 0,
                            ok: r.int(2)? != 0,
                            code: r.opt_text(3)?,
                            role: r.opt_text(4)?,
                            count: r.u64(5)?,
                        })
                    })
                    .collect::<Result<Vec<_>, crate::db::DbError>>()
            })
            .map_err(AuditError::read)?;
        Ok(tally(since, until, groups))
    }
}

/// One row of the grouped read.
struct Group {
    hour: u64,
    cert: bool,
    /// Not refused (`denied` or `failed`): issued, or an elevation's state.
    ok: bool,
    code: Option<String>,
    role: Option<String>,
    count: u64,
}

fn tally(since: u64, until: u64, groups: Vec<Group>) -> Activity {
    let first = since / 3600;
    let n = until.saturating_sub(since).div_ceil(3600);
    let mut hours = vec![(0, 0); usize::try_from(n).unwrap_or(0)];
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    let mut roles: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for g in groups {
        if g.cert
            && let Some(slot) = usize::try_from(g.hour.saturating_sub(first))
                .ok()
                .and_then(|i| hours.get_mut(i))
        {
            if g.ok {
                slot.0 += g.count;
            } else {
                slot.1 += g.count;
            }
        }
        if let Some(code) = g.code {
            *codes.entry(code).or_default() += g.count;
        }
        if let Some(role) = g.role {
            let r = roles.entry(role).or_default();
            if g.ok {
                r.0 += g.count;
            } else {
                r.1 += g.count;
            }
        }
    }
    let mut refusal_codes: Vec<_> = codes.into_iter().collect();
    refusal_codes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut roles: Vec<_> = roles.into_iter().map(|(k, (a, b))| (k, a, b)).collect();
    roles.sort_by(|a, b| (b.1 + b.2).cmp(&(a.1 + a.2)).then_with(|| a.0.cmp(&b.0)));
    Activity {
        since,
        until,
        hours,
        refusal_codes,
        roles,
    }
}
