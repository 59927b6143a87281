//! The elevation tables beside the audit log, and the SQL every transition
//! runs. Writes run inside [`crate::audit::AuditStore::transact`], so a
//! state change and its audit row commit together; conditional `UPDATE`s
//! (`WHERE state = 'pending'`) settle races.

use ca_core::elevation::ElevationState;
use ca_core::identity::Party;
use ca_core::wire::{Elevation, ElevationVote};

use crate::db::{Conn, Db, DbError, Row as DbRow};
use crate::params;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS elevations (
    id                 TEXT PRIMARY KEY,
    issuer             TEXT NOT NULL,
    subject            TEXT NOT NULL,
    email              TEXT,
    requester_groups   TEXT NOT NULL,
    role               TEXT NOT NULL,
    principals         TEXT NOT NULL,
    ttl_seconds        INTEGER NOT NULL,
    reason             TEXT NOT NULL,
    reasons            TEXT NOT NULL,
    approvals_required INTEGER NOT NULL,
    state              TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    pending_until      INTEGER NOT NULL,
    grant_start        INTEGER,
    grant_end          INTEGER,
    closed_by          TEXT,
    request_hash       TEXT NOT NULL,
    policy_hash        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS elevations_state ON elevations(state);
CREATE INDEX IF NOT EXISTS elevations_requester ON elevations(issuer, subject);
CREATE INDEX IF NOT EXISTS elevations_grant_end ON elevations(grant_end);
CREATE TABLE IF NOT EXISTS elevation_votes (
    elevation_id TEXT NOT NULL,
    issuer       TEXT NOT NULL,
    subject      TEXT NOT NULL,
    email        TEXT,
    comment      TEXT,
    time         INTEGER NOT NULL,
    request_hash TEXT NOT NULL,
    PRIMARY KEY (elevation_id, issuer, subject)
);
";

/// The same tables for PostgreSQL.
const POSTGRES: &str = "
CREATE TABLE IF NOT EXISTS elevations (
    id                 TEXT PRIMARY KEY,
    issuer             TEXT NOT NULL,
    subject            TEXT NOT NULL,
    email              TEXT,
    requester_groups   TEXT NOT NULL,
    role               TEXT NOT NULL,
    principals         TEXT NOT NULL,
    ttl_seconds        BIGINT NOT NULL,
    reason             TEXT NOT NULL,
    reasons            TEXT NOT NULL,
    approvals_required BIGINT NOT NULL,
    state              TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    pending_until      BIGINT NOT NULL,
    grant_start        BIGINT,
    grant_end          BIGINT,
    closed_by          TEXT,
    request_hash       TEXT NOT NULL,
    policy_hash        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS elevations_state ON elevations(state);
CREATE INDEX IF NOT EXISTS elevations_requester ON elevations(issuer, subject);
CREATE INDEX IF NOT EXISTS elevations_grant_end ON elevations(grant_end);
CREATE TABLE IF NOT EXISTS elevation_votes (
    elevation_id TEXT NOT NULL,
    issuer       TEXT NOT NULL,
    subject      TEXT NOT NULL,
    email        TEXT,
    comment      TEXT,
    time         BIGINT NOT NULL,
    request_hash TEXT NOT NULL,
    PRIMARY KEY (elevation_id, issuer, subject)
);
";

/// Create the tables if missing (idempotent; run at start).
pub fn create_tables(db: &Db) -> Result<(), DbError> {
    crate::audit::ensure_tables(db, SCHEMA, POSTGRES)
}

/// One elevation as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub id: String,
    pub requester: Party,
    pub requester_groups: Vec<String>,
    pub role: String,
    pub principals: Vec<String>,
    pub ttl_seconds: u64,
    pub reason: String,
    pub reasons: Vec<String>,
    pub approvals_required: u32,
    /// As stored (a pending request or grant past its end still reads
    /// `pending` or `approved` until the sweeper records it).
    pub state: ElevationState,
    pub created_at: u64,
    pub pending_until: u64,
    pub grant_start: Option<u64>,
    pub grant_end: Option<u64>,
    pub closed_by: Option<ElevationVote>,
    pub request_hash: String,
    pub policy_hash: String,
}

impl Row {
    /// The state a reader should see at `now`: stored states, except that a
    /// pending request past its deadline and a grant past its end read
    /// `expired` even before the sweeper has recorded it.
    pub fn state_at(&self, now: u64) -> ElevationState {
        use ElevationState::{Approved, Expired, Pending};
        match self.state {
            Pending if now >= self.pending_until => Expired,
            Approved if self.grant_end.is_none_or(|end| now >= end) => Expired,
            s => s,
        }
    }

    pub fn to_wire(&self, votes: Vec<ElevationVote>, now: u64, can_decide: bool) -> Elevation {
        let state = self.state_at(now);
        Elevation {
            id: self.id.clone(),
            role: self.role.clone(),
            principals: self.principals.clone(),
            expires_at: match (self.state, self.grant_end) {
                (
                    ElevationState::Approved | ElevationState::Revoked | ElevationState::Expired,
                    Some(end),
                ) => end,
                _ => self.pending_until,
            },
            state,
            requester: self.requester.clone(),
            reason: self.reason.clone(),
            ttl_seconds: self.ttl_seconds,
            reasons: self.reasons.clone(),
            created_at: self.created_at,
            approvals_required: self.approvals_required,
            approvals: votes,
            grant_starts_at: self.grant_start,
            grant_ends_at: self.grant_end,
            closed_by: self.closed_by.clone(),
            request_hash: self.request_hash.clone(),
            can_decide,
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn from_json<T: serde::de::DeserializeOwned>(idx: usize, s: &str) -> Result<T, DbError> {
    serde_json::from_str(s).map_err(|e| DbError::decode(format!("column {idx}: {e}")))
}

const COLUMNS: &str = "id, issuer, subject, email, requester_groups, role, principals, ttl_seconds, reason, reasons, approvals_required, state, created_at, pending_until, grant_start, grant_end, closed_by, request_hash, policy_hash";

fn row_from(r: &DbRow) -> Result<Row, DbError> {
    Ok(Row {
        id: r.text(0)?,
        requester: Party {
            issuer: r.text(1)?,
            subject: r.text(2)?,
            email: r.opt_text(3)?,
        },
        requester_groups: from_json(4, &r.text(4)?)?,
        role: r.text(5)?,
        principals: from_json(6, &r.text(6)?)?,
        ttl_seconds: r.u64(7)?,
        reason: r.text(8)?,
        reasons: from_json(9, &r.text(9)?)?,
        approvals_required: u32::try_from(r.u64(10)?).unwrap_or(u32::MAX),
        // A state this version does not know is an error, not a guess.
        state: r
            .text(11)?
            .parse()
            .map_err(|e| DbError::decode(format!("column 11: {e}")))?,
        created_at: r.u64(12)?,
        pending_until: r.u64(13)?,
        grant_start: r.opt_u64(14)?,
        grant_end: r.opt_u64(15)?,
        closed_by: r.opt_text(16)?.map(|c| from_json(16, &c)).transpose()?,
        request_hash: r.text(17)?,
        policy_hash: r.text(18)?,
    })
}

fn rows(
    conn: &mut dyn Conn,
    sql: &str,
    params: &[crate::db::Param<'_>],
) -> Result<Vec<Row>, DbError> {
    conn.query(sql, params)?.iter().map(row_from).collect()
}

pub fn insert(conn: &mut dyn Conn, row: &Row) -> Result<(), DbError> {
    let (groups, principals, reasons) = (
        json(&row.requester_groups),
        json(&row.principals),
        json(&row.reasons),
    );
    let closed = row.closed_by.as_ref().map(json);
    conn.execute(
        &format!(
            "INSERT INTO elevations ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
        ),
        &params![
            &row.id,
            &row.requester.issuer,
            &row.requester.subject,
            &row.requester.email,
            &groups,
            &row.role,
            &principals,
            row.ttl_seconds,
            &row.reason,
            &reasons,
            row.approvals_required,
            row.state.as_str(),
            row.created_at,
            row.pending_until,
            row.grant_start,
            row.grant_end,
            &closed,
            &row.request_hash,
            &row.policy_hash,
        ],
    )?;
    Ok(())
}

pub fn load(conn: &mut dyn Conn, id: &str) -> Result<Option<Row>, DbError> {
    conn.query_opt(
        &format!("SELECT {COLUMNS} FROM elevations WHERE id = $1"),
        &params![id],
    )?
    .map(|r| row_from(&r))
    .transpose()
}

/// Votes (approvals) on `id`, oldest first, with the request hash each was
/// given for.
pub fn votes(conn: &mut dyn Conn, id: &str) -> Result<Vec<(ElevationVote, String)>, DbError> {
    conn.query(
        "SELECT issuer, subject, email, comment, time, request_hash FROM elevation_votes
         WHERE elevation_id = $1 ORDER BY time, issuer, subject",
        &params![id],
    )?
    .iter()
    .map(|r| {
        Ok((
            ElevationVote {
                issuer: r.text(0)?,
                subject: r.text(1)?,
                email: r.opt_text(2)?,
                comment: r.opt_text(3)?,
                time: r.u64(4)?,
            },
            r.text(5)?,
        ))
    })
    .collect()
}

pub fn insert_vote(
    conn: &mut dyn Conn,
    id: &str,
    vote: &ElevationVote,
    request_hash: &str,
) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO elevation_votes (elevation_id, issuer, subject, email, comment, time, request_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &params![
            id,
            &vote.issuer,
            &vote.subject,
            &vote.email,
            &vote.comment,
            vote.time,
            request_hash
        ],
    )?;
    Ok(())
}

/// What a conditional `UPDATE` of a transition did. A caller must look:
/// [`Updated::Nothing`] means the row was not in the state the `WHERE`
/// required, so the transition did not happen and must not be recorded.
#[must_use = "Updated::Nothing means the transition did not happen: refuse it"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Updated {
    Row,
    Nothing,
}

impl Updated {
    fn from_rows(n: u64) -> Self {
        if n == 1 {
            Updated::Row
        } else {
            Updated::Nothing
        }
    }
}

/// pending → approved, only if still pending and not past its deadline.
pub fn approve(conn: &mut dyn Conn, id: &str, now: u64, ttl: u64) -> Result<Updated, DbError> {
    let n = conn.execute(
        "UPDATE elevations SET state = 'approved', grant_start = $2, grant_end = $3
         WHERE id = $1 AND state = 'pending' AND pending_until > $2",
        &params![id, now, now.saturating_add(ttl)],
    )?;
    Ok(Updated::from_rows(n))
}

/// Close an elevation: `to` from one of `from`, with who closed it. For an
/// approved grant the condition also requires it still active, and its end
/// moves to `now` (so the record shows when it stopped).
pub fn close(
    conn: &mut dyn Conn,
    id: &str,
    from: &[ElevationState],
    to: ElevationState,
    by: Option<&ElevationVote>,
    now: u64,
) -> Result<Updated, DbError> {
    let by = by.map(json);
    let mut total = 0;
    for state in from {
        total += match state {
            ElevationState::Pending => conn.execute(
                "UPDATE elevations SET state = $2, closed_by = $3
                 WHERE id = $1 AND state = 'pending' AND pending_until > $4",
                &params![id, to.as_str(), &by, now],
            )?,
            ElevationState::Approved => conn.execute(
                "UPDATE elevations SET state = $2, closed_by = $3, grant_end = $4
                 WHERE id = $1 AND state = 'approved' AND grant_end > $4",
                &params![id, to.as_str(), &by, now],
            )?,
            _ => 0,
        };
        if total > 0 {
            break;
        }
    }
    Ok(Updated::from_rows(total))
}

/// Mark every pending request past its deadline and every grant past its
/// end `expired`; returns the rows that changed (as they were before).
pub fn expire_due(conn: &mut dyn Conn, now: u64) -> Result<Vec<Row>, DbError> {
    let due = rows(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM elevations
             WHERE (state = 'pending' AND pending_until <= $1)
                OR (state = 'approved' AND grant_end <= $1)
             ORDER BY created_at LIMIT 1000"
        ),
        &params![now],
    )?;
    let mut changed = Vec::with_capacity(due.len());
    for row in due {
        // Another replica may have expired it first: report only ours.
        if conn.execute(
            "UPDATE elevations SET state = 'expired' WHERE id = $1 AND state = $2",
            &params![&row.id, row.state.as_str()],
        )? == 1
        {
            changed.push(row);
        }
    }
    Ok(changed)
}

/// Requests of `issuer` + `subject` still pending at `now`.
pub fn pending_count(
    conn: &mut dyn Conn,
    issuer: &str,
    subject: &str,
    now: u64,
) -> Result<u64, DbError> {
    conn.query_one(
        "SELECT count(*) FROM elevations WHERE issuer = $1 AND subject = $2
         AND state = 'pending' AND pending_until > $3",
        &params![issuer, subject, now],
    )?
    .u64(0)
}

/// Approved grants still active at `now`.
pub fn active(conn: &mut dyn Conn, now: u64) -> Result<Vec<Row>, DbError> {
    rows(
        conn,
        &format!("SELECT {COLUMNS} FROM elevations WHERE state = 'approved' AND grant_end > $1"),
        &params![now],
    )
}

/// Approved grants of one requester still active at `now`.
pub fn active_of(
    conn: &mut dyn Conn,
    issuer: &str,
    subject: &str,
    now: u64,
) -> Result<Vec<Row>, DbError> {
    rows(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM elevations WHERE issuer = $1 AND subject = $2
             AND state = 'approved' AND grant_end > $3"
        ),
        &params![issuer, subject, now],
    )
}

/// What `list` scans: the caller's own requests (newest first) and every
/// pending one, at most `limit` of each.
pub fn candidates(
    conn: &mut dyn Conn,
    who: &Party,
    limit: usize,
) -> Result<(Vec<Row>, Vec<Row>), DbError> {
    let limit = i64::try_from(limit).unwrap_or(1000);
    let own = rows(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM elevations WHERE issuer = $1 AND subject = $2
             ORDER BY created_at DESC, id LIMIT $3"
        ),
        &params![&who.issuer, &who.subject, limit],
    )?;
    let pending = rows(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM elevations WHERE state = 'pending'
             ORDER BY created_at DESC, id LIMIT $1"
        ),
        &params![limit],
    )?;
    Ok((own, pending))
}

/// Every elevation, newest first (for `jitssh-ca elevation list`).
pub fn all(conn: &mut dyn Conn, limit: usize) -> Result<Vec<Row>, DbError> {
    let limit = i64::try_from(limit).unwrap_or(1000);
    rows(
        conn,
        &format!("SELECT {COLUMNS} FROM elevations ORDER BY created_at DESC, id LIMIT $1"),
        &params![limit],
    )
}

/// The pending requests' ids with their vote counts (at most 1,000), for
/// noticing changes made by another replica.
pub fn pending_votes(conn: &mut dyn Conn) -> Result<Vec<(String, u64)>, DbError> {
    conn.query(
        "SELECT e.id, (SELECT count(*) FROM elevation_votes v WHERE v.elevation_id = e.id)
         FROM elevations e WHERE e.state = 'pending' ORDER BY e.id LIMIT 1000",
        &[],
    )?
    .iter()
    .map(|r| Ok((r.text(0)?, r.u64(1)?)))
    .collect()
}

/// Grants active at `now`, soonest to end first, at most `limit` (the
/// console's Grants page; issuance reads [`active`]).
pub fn active_bounded(conn: &mut dyn Conn, now: u64, limit: usize) -> Result<Vec<Row>, DbError> {
    let limit = i64::try_from(limit).unwrap_or(1000);
    rows(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM elevations WHERE state = 'approved' AND grant_end > $1
             ORDER BY grant_end, id LIMIT $2"
        ),
        &params![now, limit],
    )
}

/// Grants that ended (expired, dropped or revoked) between `since` and
/// `now`, most recently ended first, strictly after the keyset cursor
/// `before` (`(grant_end, id)` of the last row of the previous page), at
/// most `limit`. Keyset paging on the `grant_end` index: each page costs
/// the same however far back it is.
pub fn ended(
    conn: &mut dyn Conn,
    now: u64,
    since: u64,
    before: Option<(u64, &str)>,
    limit: usize,
) -> Result<Vec<Row>, DbError> {
    let limit = i64::try_from(limit).unwrap_or(1000);
    let (end, id) = before.unwrap_or((u64::MAX, ""));
    rows(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM elevations
             WHERE grant_start IS NOT NULL AND grant_end <= $1 AND grant_end >= $2
               AND (grant_end < $3 OR (grant_end = $3 AND id < $4))
             ORDER BY grant_end DESC, id DESC LIMIT $5"
        ),
        &params![now, since, end, id, limit],
    )
}
