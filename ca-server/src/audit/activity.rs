//! What the console's charts count: certificates issued and refused per
//! hour, refusals by code, elevation requests by role, over a time window.
//! One pass over the window's rows (a `seq` range found on
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
        // Rows streamed and counted here, not grouped in SQL: grouping a
        // week (about 80,000 rows on a busy CA) by hour, kind, outcome,
        // code and role made the database sort them all, 3–4 times slower
        // than one pass (docs/performance.md). The JSON is read only for
        // the rows that need it (refusals, elevation requests).
        let sql = format!(
            "SELECT time,
                    CASE WHEN action IN {CERT_ACTIONS} THEN 1 ELSE 0 END,
                    CASE WHEN outcome IN ('denied', 'failed') THEN 0 ELSE 1 END,
                    CASE WHEN outcome = 'denied' THEN {code} END,
                    CASE WHEN action = 'elevation_request' THEN {role} END
             FROM audit
             WHERE seq >= $1 AND seq < $2 AND time >= $3 AND time < $4
               AND (action IN {CERT_ACTIONS} OR action = 'elevation_request')"
        );
        let filter = Filter {
            since: Some(since),
            until: Some(until),
            ..Filter::default()
        };
        let mut tally = Tally::new(since, until);
        self.db()
            .with(|c| {
                let range = time_range(c, &filter)?;
                let params: Vec<FilterValue> =
                    vec![int(range.lo), int(range.hi), int(since), int(until)];
                let ps: Vec<Param<'_>> = params.iter().map(Param::from).collect();
                c.query_each(&sql, &ps, &mut |r| {
                    tally.add(
                        r.u64(0)?,
                        r.int(1)? != 0,
                        r.int(2)? != 0,
                        r.opt_text(3)?,
                        r.opt_text(4)?,
                    );
                    Ok(())
                })
            })
            .map_err(AuditError::read)?;
        Ok(tally.finish())
    }
}

/// The counts being made.
struct Tally {
    since: u64,
    until: u64,
    hours: Vec<(u64, u64)>,
    codes: BTreeMap<String, u64>,
    roles: BTreeMap<String, (u64, u64)>,
}

impl Tally {
    fn new(since: u64, until: u64) -> Tally {
        let n = until.saturating_sub(since).div_ceil(3600);
        Tally {
            since,
            until,
            hours: vec![(0, 0); usize::try_from(n).unwrap_or(0)],
            codes: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }

    /// One row: its time, whether it is a certificate, whether it was not
    /// refused (issued, or an elevation's state), its refusal code and its
    /// role (an elevation request).
    fn add(&mut self, time: u64, cert: bool, ok: bool, code: Option<String>, role: Option<String>) {
        if cert
            && let Some(slot) = usize::try_from(time.saturating_sub(self.since) / 3600)
                .ok()
                .and_then(|i| self.hours.get_mut(i))
        {
            if ok {
                slot.0 += 1;
            } else {
                slot.1 += 1;
            }
        }
        if let Some(code) = code {
            *self.codes.entry(code).or_default() += 1;
        }
        if let Some(role) = role {
            let r = self.roles.entry(role).or_default();
            if ok {
                r.0 += 1;
            } else {
                r.1 += 1;
            }
        }
    }

    fn finish(self) -> Activity {
        let mut refusal_codes: Vec<_> = self.codes.into_iter().collect();
        refusal_codes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut roles: Vec<_> = self
            .roles
            .into_iter()
            .map(|(k, (a, b))| (k, a, b))
            .collect();
        roles.sort_by(|a, b| (b.1 + b.2).cmp(&(a.1 + a.2)).then_with(|| a.0.cmp(&b.0)));
        Activity {
            since: self.since,
            until: self.until,
            hours: self.hours,
            refusal_codes,
            roles,
        }
    }
}
