//! The elevation tables beside the audit log, and the SQL every transition
//! runs. Writes run inside [`crate::audit::AuditStore::transact`], so a
//! state change and its audit row commit together; conditional `UPDATE`s
//! (`WHERE state = 'pending'`) settle races.

use std::path::Path;
use std::time::Duration;

use ca_core::elevation::Party;
use ca_core::wire::{Elevation, ElevationVote};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

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

/// Create the tables if missing (idempotent; run at start).
pub fn create_tables(path: &Path) -> rusqlite::Result<()> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)
}

/// A read-only connection for listing and showing.
pub fn reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
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
    /// As stored: `pending`, `approved`, `denied`, `expired`, `cancelled`, `revoked`.
    pub state: String,
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
    pub fn state_at(&self, now: u64) -> &str {
        match self.state.as_str() {
            "pending" if now >= self.pending_until => "expired",
            "approved" if self.grant_end.is_none_or(|end| now >= end) => "expired",
            s => s,
        }
    }

    pub fn to_wire(&self, votes: Vec<ElevationVote>, now: u64, can_decide: bool) -> Elevation {
        let state = self.state_at(now).to_owned();
        Elevation {
            id: self.id.clone(),
            role: self.role.clone(),
            principals: self.principals.clone(),
            expires_at: match (self.state.as_str(), self.grant_end) {
                ("approved" | "revoked" | "expired", Some(end)) => end,
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

fn from_json<T: serde::de::DeserializeOwned>(idx: usize, s: &str) -> rusqlite::Result<T> {
    serde_json::from_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

const COLUMNS: &str = "id, issuer, subject, email, requester_groups, role, principals, ttl_seconds, reason, reasons, approvals_required, state, created_at, pending_until, grant_start, grant_end, closed_by, request_hash, policy_hash";

fn row_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let closed: Option<String> = r.get(16)?;
    Ok(Row {
        id: r.get(0)?,
        requester: Party {
            issuer: r.get(1)?,
            subject: r.get(2)?,
            email: r.get(3)?,
        },
        requester_groups: from_json(4, &r.get::<_, String>(4)?)?,
        role: r.get(5)?,
        principals: from_json(6, &r.get::<_, String>(6)?)?,
        ttl_seconds: u(r.get(7)?),
        reason: r.get(8)?,
        reasons: from_json(9, &r.get::<_, String>(9)?)?,
        approvals_required: u32::try_from(r.get::<_, i64>(10)?).unwrap_or(u32::MAX),
        state: r.get(11)?,
        created_at: u(r.get(12)?),
        pending_until: u(r.get(13)?),
        grant_start: r.get::<_, Option<i64>>(14)?.map(u),
        grant_end: r.get::<_, Option<i64>>(15)?.map(u),
        closed_by: closed.map(|c| from_json(16, &c)).transpose()?,
        request_hash: r.get(17)?,
        policy_hash: r.get(18)?,
    })
}

pub fn insert(conn: &Connection, row: &Row) -> rusqlite::Result<()> {
    conn.execute(
        &format!(
            "INSERT INTO elevations ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"
        ),
        params![
            row.id,
            row.requester.issuer,
            row.requester.subject,
            row.requester.email,
            json(&row.requester_groups),
            row.role,
            json(&row.principals),
            i(row.ttl_seconds),
            row.reason,
            json(&row.reasons),
            row.approvals_required,
            row.state,
            i(row.created_at),
            i(row.pending_until),
            row.grant_start.map(i),
            row.grant_end.map(i),
            row.closed_by.as_ref().map(json),
            row.request_hash,
            row.policy_hash,
        ],
    )?;
    Ok(())
}

pub fn load(conn: &Connection, id: &str) -> rusqlite::Result<Option<Row>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM elevations WHERE id = ?1"),
        [id],
        row_from,
    )
    .optional()
}

/// Votes (approvals) on `id`, oldest first, with the request hash each was
/// given for.
pub fn votes(conn: &Connection, id: &str) -> rusqlite::Result<Vec<(ElevationVote, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT issuer, subject, email, comment, time, request_hash FROM elevation_votes
         WHERE elevation_id = ?1 ORDER BY time, issuer, subject",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok((
            ElevationVote {
                issuer: r.get(0)?,
                subject: r.get(1)?,
                email: r.get(2)?,
                comment: r.get(3)?,
                time: u(r.get(4)?),
            },
            r.get::<_, String>(5)?,
        ))
    })?;
    rows.collect()
}

pub fn insert_vote(
    conn: &Connection,
    id: &str,
    vote: &ElevationVote,
    request_hash: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO elevation_votes (elevation_id, issuer, subject, email, comment, time, request_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            id,
            vote.issuer,
            vote.subject,
            vote.email,
            vote.comment,
            i(vote.time),
            request_hash
        ],
    )?;
    Ok(())
}

/// pending → approved, only if still pending and not past its deadline.
pub fn approve(conn: &Connection, id: &str, now: u64, ttl: u64) -> rusqlite::Result<bool> {
    let n = conn.execute(
        "UPDATE elevations SET state = 'approved', grant_start = ?2, grant_end = ?3
         WHERE id = ?1 AND state = 'pending' AND pending_until > ?2",
        params![id, i(now), i(now.saturating_add(ttl))],
    )?;
    Ok(n == 1)
}

/// Close an elevation: `to` from one of `from`, with who closed it. For an
/// approved grant the condition also requires it still active, and its end
/// moves to `now` (so the record shows when it stopped).
pub fn close(
    conn: &Connection,
    id: &str,
    from: &[&str],
    to: &str,
    by: Option<&ElevationVote>,
    now: u64,
) -> rusqlite::Result<bool> {
    let mut total = 0;
    for state in from {
        total += match *state {
            "pending" => conn.execute(
                "UPDATE elevations SET state = ?2, closed_by = ?3
                 WHERE id = ?1 AND state = 'pending' AND pending_until > ?4",
                params![id, to, by.map(json), i(now)],
            )?,
            "approved" => conn.execute(
                "UPDATE elevations SET state = ?2, closed_by = ?3, grant_end = ?4
                 WHERE id = ?1 AND state = 'approved' AND grant_end > ?4",
                params![id, to, by.map(json), i(now)],
            )?,
            _ => 0,
        };
        if total > 0 {
            break;
        }
    }
    Ok(total == 1)
}

/// Mark every pending request past its deadline and every grant past its
/// end `expired`; returns the rows that changed (as they were before).
pub fn expire_due(conn: &Connection, now: u64) -> rusqlite::Result<Vec<Row>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM elevations
         WHERE (state = 'pending' AND pending_until <= ?1)
            OR (state = 'approved' AND grant_end <= ?1)
         ORDER BY created_at LIMIT 1000"
    ))?;
    let due: Vec<Row> = stmt
        .query_map([i(now)], row_from)?
        .collect::<rusqlite::Result<_>>()?;
    for row in &due {
        conn.execute(
            "UPDATE elevations SET state = 'expired' WHERE id = ?1 AND state = ?2",
            params![row.id, row.state],
        )?;
    }
    Ok(due)
}

/// Requests of `issuer` + `subject` still pending at `now`.
pub fn pending_count(
    conn: &Connection,
    issuer: &str,
    subject: &str,
    now: u64,
) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT count(*) FROM elevations WHERE issuer = ?1 AND subject = ?2
         AND state = 'pending' AND pending_until > ?3",
        params![issuer, subject, i(now)],
        |r| r.get::<_, i64>(0),
    )
    .map(u)
}

/// Approved grants still active at `now`.
pub fn active(conn: &Connection, now: u64) -> rusqlite::Result<Vec<Row>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM elevations WHERE state = 'approved' AND grant_end > ?1"
    ))?;
    stmt.query_map([i(now)], row_from)?.collect()
}

/// What `list` scans: the caller's own requests (newest first) and every
/// pending one, at most `limit` of each.
pub fn candidates(
    conn: &Connection,
    who: &Party,
    limit: usize,
) -> rusqlite::Result<(Vec<Row>, Vec<Row>)> {
    let limit = i64::try_from(limit).unwrap_or(1000);
    let mut own = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM elevations WHERE issuer = ?1 AND subject = ?2
         ORDER BY created_at DESC, id LIMIT ?3"
    ))?;
    let own: Vec<Row> = own
        .query_map(params![who.issuer, who.subject, limit], row_from)?
        .collect::<rusqlite::Result<_>>()?;
    let mut pending = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM elevations WHERE state = 'pending'
         ORDER BY created_at DESC, id LIMIT ?1"
    ))?;
    let pending: Vec<Row> = pending
        .query_map([limit], row_from)?
        .collect::<rusqlite::Result<_>>()?;
    Ok((own, pending))
}

/// Every elevation, newest first (for `jitssh-ca elevation list`).
pub fn all(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<Row>> {
    let limit = i64::try_from(limit).unwrap_or(1000);
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM elevations ORDER BY created_at DESC, id LIMIT ?1"
    ))?;
    stmt.query_map([limit], row_from)?.collect()
}
