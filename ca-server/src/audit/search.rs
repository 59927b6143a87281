//! The console's reads of the log: a page of rows matching a [`Filter`],
//! newest first, with keyset cursors on `seq` and a bound on the rows one
//! page examines; one row's chain link, checked against its predecessor.
//!
//! Why it stays fast on a large log without new indexes (which would slow
//! every append): `seq` is dense (the chain has no gaps), so a page reads a
//! bounded range of the primary key. A time range is turned into a `seq`
//! range with two seeks on `audit_time`; a subject or serial drives the
//! read through its index. Conditions with no index (kind, outcome, email)
//! are checked only on the rows of that range, at most `window` of them:
//! a page that did not fill says which rows it searched, and its "older"
//! cursor continues below them.

use ca_core::audit::{GENESIS, chain_hash};

use crate::db::{Conn, DbError, Param};
use crate::params;

use super::read::{FilterValue, ROW_COLUMNS, RawRow, filter_conditions};
use super::store::AuditStore;
use super::types::{AuditError, Filter, StoredEvent};

/// How far rows' `time` may run out of `seq` order (queueing, replicas'
/// clocks): the `seq` range of a time range is widened by this much, and
/// rows are then filtered by their exact time.
pub const TIME_SLACK_SECS: u64 = 300;

/// Where a page starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cursor {
    /// Rows with `seq` below this, newest first.
    Older(u64),
    /// Rows with `seq` above this (the page still shows newest first).
    Newer(u64),
}

/// One page of a search.
#[derive(Clone, Debug, Default)]
pub struct SearchPage {
    /// Newest first.
    pub rows: Vec<StoredEvent>,
    /// The cursor of the next older page ([`Cursor::Older`]), if there may be one.
    pub older: Option<u64>,
    /// The cursor of the next newer page ([`Cursor::Newer`]), if there may be one.
    pub newer: Option<u64>,
    /// Set when the page stopped at its bound before filling: the lowest
    /// and highest `seq` it searched.
    pub searched: Option<(u64, u64)>,
}

/// One row with its place in the chain and whether its link verifies.
#[derive(Clone, Debug)]
pub struct ChainLink {
    pub row: StoredEvent,
    pub verdict: LinkVerdict,
    /// Whether an event follows it (the newest has none).
    pub has_next: bool,
}

/// What recomputing one row's link found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkVerdict {
    /// The row's hash is its content's, chained to the row before.
    Verifies,
    /// The hash does not match the content: the row was edited.
    Edited,
    /// `prev_hash` is not the previous row's hash.
    Unlinked,
    /// The previous row is missing.
    NoPredecessor,
}

/// A half-open `seq` range `[lo, hi)`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Range {
    pub(super) lo: u64,
    pub(super) hi: u64,
}

impl AuditStore {
    /// Up to `page` rows matching `filter` from `at` (the newest when
    /// `None`), examining at most `window` rows (see the module doc).
    pub fn search(
        &self,
        filter: &Filter,
        at: Option<Cursor>,
        page: usize,
        window: u64,
    ) -> Result<SearchPage, AuditError> {
        let backend = self.db().backend();
        let page = page.max(1);
        let window = window.max(1);
        let raws = self
            .db()
            .with(|c| {
                let mut range = time_range(c, filter)?;
                match at {
                    Some(Cursor::Older(s)) => range.hi = range.hi.min(s),
                    Some(Cursor::Newer(s)) => range.lo = range.lo.max(s.saturating_add(1)),
                    None => {}
                }
                if range.lo >= range.hi {
                    return Ok((Vec::new(), range, None));
                }
                let older = !matches!(at, Some(Cursor::Newer(_)));
                let mut params = Vec::new();
                let mut conds = filter_conditions(filter, backend, &mut params);
                let order = if older { "DESC" } else { "ASC" };
                // The rows this page may examine: an index's rows in range,
                // or (no index applies) `window` consecutive seqs.
                let driver = match (&filter.serial, &filter.subject) {
                    (Some(s), _) => Some(("serial", s)),
                    (None, Some(s)) => Some(("subject", s)),
                    _ => None,
                };
                let bound = match driver {
                    Some((column, value)) => {
                        let sub = |n: usize| {
                            format!(
                                "SELECT seq FROM audit WHERE {column} = ${} AND seq >= ${} AND seq < ${} \
                                 ORDER BY seq {order} LIMIT ${}",
                                n + 1,
                                n + 2,
                                n + 3,
                                n + 4
                            )
                        };
                        let own = vec![
                            FilterValue::Text(value.clone()),
                            int(range.lo),
                            int(range.hi),
                            int(window),
                        ];
                        conds.push(format!("seq IN ({})", sub(params.len())));
                        params.extend(own.iter().cloned());
                        Bound::Index(sub(0), own)
                    }
                    None => {
                        let w = if older {
                            Range {
                                lo: range.lo.max(range.hi.saturating_sub(window)),
                                hi: range.hi,
                            }
                        } else {
                            Range {
                                lo: range.lo,
                                hi: range.hi.min(range.lo.saturating_add(window)),
                            }
                        };
                        params.push(int(w.lo));
                        params.push(int(w.hi));
                        let n = params.len();
                        conds.push(format!("seq >= ${} AND seq < ${n}", n - 1));
                        Bound::Seqs(w)
                    }
                };
                params.push(int(page as u64 + 1));
                let sql = format!(
                    "SELECT {ROW_COLUMNS} FROM audit WHERE {} ORDER BY seq {order} LIMIT ${}",
                    conds.join(" AND "),
                    params.len()
                );
                let ps: Vec<Param<'_>> = params.iter().map(Param::from).collect();
                let rows = c
                    .query(&sql, &ps)?
                    .iter()
                    .map(RawRow::from_row)
                    .collect::<Result<Vec<_>, _>>()?;
                // Where the examined rows ended, when the page did not fill.
                let edge = if rows.len() > page {
                    None
                } else {
                    match bound {
                        Bound::Seqs(w) => Some(if older {
                            (w.lo > range.lo, w)
                        } else {
                            (w.hi < range.hi, w)
                        }),
                        Bound::Index(sub, own) => {
                            let own: Vec<Param<'_>> = own.iter().map(Param::from).collect();
                            let r = c.query_one(
                                &format!("SELECT count(*), min(seq), max(seq) FROM ({sub}) AS cand"),
                                &own,
                            )?;
                            let (count, min, max) = (r.u64(0)?, r.opt_u64(1)?, r.opt_u64(2)?);
                            let w = Range {
                                lo: min.unwrap_or(range.lo),
                                hi: max.map_or(range.hi, |m| m + 1),
                            };
                            Some((count >= window, w))
                        }
                    }
                };
                Ok((rows, range, edge))
            })
            .map_err(AuditError::read)?;
        let (mut raws, range, edge) = raws;
        let full = raws.len() > page;
        raws.truncate(page);
        let older_dir = !matches!(at, Some(Cursor::Newer(_)));
        if !older_dir {
            raws.reverse();
        }
        let rows = raws
            .into_iter()
            .map(|r| self.stored(r))
            .collect::<Result<Vec<_>, _>>()?;
        let (first, last) = (rows.first().map(|r| r.seq), rows.last().map(|r| r.seq));
        let mut out = SearchPage::default();
        // Continuing the way we came: after the last row shown when the
        // page filled, after the examined rows when it stopped at its bound.
        let onward = match (full, edge) {
            (true, _) => Some(if older_dir { last } else { first }.unwrap_or(0)),
            (false, Some((true, w))) => {
                out.searched = Some((w.lo, w.hi.saturating_sub(1)));
                Some(if older_dir {
                    w.lo
                } else {
                    w.hi.saturating_sub(1)
                })
            }
            _ => None,
        };
        // Back the way we came: only when we came from somewhere.
        let back = at.map(|c| match (c, older_dir) {
            (_, true) => first.unwrap_or(match c {
                Cursor::Older(s) | Cursor::Newer(s) => s.saturating_sub(1),
            }),
            (_, false) => last.unwrap_or(range.lo),
        });
        if older_dir {
            out.older = onward.filter(|&s| s > 1);
            out.newer = back;
        } else {
            out.newer = onward;
            out.older = back.filter(|&s| s > 1);
        }
        out.rows = rows;
        Ok(out)
    }

    /// Row `seq` with its `prev_hash`, and whether its link verifies:
    /// its hash recomputed from its content, chained to the row before it.
    pub fn chain_link(&self, seq: u64) -> Result<Option<ChainLink>, AuditError> {
        let Ok(at) = i64::try_from(seq) else {
            return Ok(None);
        };
        let rows = self
            .db()
            .with(|c| {
                c.query(
                    &format!(
                        "SELECT {ROW_COLUMNS} FROM audit WHERE seq IN ($1, $2, $3) ORDER BY seq"
                    ),
                    &params![at.saturating_sub(1), at, at.saturating_add(1)],
                )?
                .iter()
                .map(RawRow::from_row)
                .collect::<Result<Vec<_>, DbError>>()
            })
            .map_err(AuditError::read)?;
        let has_next = rows.last().is_some_and(|r| r.seq > seq);
        let rows = rows.iter().filter(|r| r.seq <= seq).collect::<Vec<_>>();
        let (before, row) = match rows.as_slice() {
            [b, r] if r.seq == seq => (Some(b.hash.clone()), *r),
            [r] if r.seq == seq => (None, *r),
            _ => return Ok(None),
        };
        let expected_prev = if seq == 1 {
            Some(GENESIS.to_owned())
        } else {
            before
        };
        let verdict = if chain_hash(row.seq, &row.prev_hash, &row.event) != row.hash {
            LinkVerdict::Edited
        } else {
            match expected_prev {
                None => LinkVerdict::NoPredecessor,
                Some(p) if p != row.prev_hash => LinkVerdict::Unlinked,
                Some(_) => LinkVerdict::Verifies,
            }
        };
        let row = self.stored(RawRow {
            seq: row.seq,
            hash: row.hash.clone(),
            prev_hash: row.prev_hash.clone(),
            event: row.event.clone(),
        })?;
        Ok(Some(ChainLink {
            row,
            verdict,
            has_next,
        }))
    }
}

/// How a page's examined rows are bounded.
enum Bound {
    /// An index's candidate subquery (numbered from `$1`) and its parameters.
    Index(String, Vec<FilterValue>),
    /// A range of consecutive seqs.
    Seqs(Range),
}

pub(super) fn int(v: u64) -> FilterValue {
    FilterValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

/// The `seq` range that can hold rows of the filter's time range (all rows
/// when it has none), found with one seek on `audit_time` per end. Rows
/// run out of time order by less than [`TIME_SLACK_SECS`], so every row
/// after the first one at `until + slack` is at or after `until`, and
/// every row up to the last one before `since - slack` is before `since`.
pub(super) fn time_range(c: &mut dyn Conn, filter: &Filter) -> Result<Range, DbError> {
    let head = c
        .query_one("SELECT max(seq) FROM audit", &[])?
        .opt_u64(0)?
        .unwrap_or(0);
    let mut range = Range {
        lo: 1,
        hi: head + 1,
    };
    let seek = |c: &mut dyn Conn, sql: &str, t: u64| -> Result<Option<u64>, DbError> {
        c.query_opt(sql, &[int(t).as_param()])?
            .map(|r| r.u64(0))
            .transpose()
    };
    if let Some(until) = filter.until {
        let sql = "SELECT seq FROM audit WHERE time >= $1 ORDER BY time LIMIT 1";
        if let Some(s) = seek(c, sql, until.saturating_add(TIME_SLACK_SECS))? {
            range.hi = range.hi.min(s);
        }
    }
    if let Some(since) = filter.since {
        let sql = "SELECT seq FROM audit WHERE time < $1 ORDER BY time DESC LIMIT 1";
        if let Some(s) = seek(c, sql, since.saturating_sub(TIME_SLACK_SECS))? {
            range.lo = range.lo.max(s + 1);
        }
    }
    Ok(range)
}

impl FilterValue {
    fn as_param(&self) -> Param<'_> {
        Param::from(self)
    }
}
