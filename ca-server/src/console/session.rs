//! Console sessions: the `console_sessions` table beside the audit log, so
//! every replica sees every session. Only the SHA-256 of a session id is
//! stored; the id itself lives in the browser's cookie alone.

use ca_core::{IdentityKind, LoginName, VerifiedIdentity};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::db::{Db, DbError};
use crate::params;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS console_sessions (
    -- Hex SHA-256 of the session id; the id itself is never stored.
    id_hash    TEXT PRIMARY KEY,
    issuer     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    -- JSON: the identity the verified ID token gave at sign-in.
    identity   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS console_sessions_by_identity ON console_sessions (issuer, subject);";

/// The same table for PostgreSQL.
const POSTGRES: &str = "
CREATE TABLE IF NOT EXISTS console_sessions (
    id_hash    TEXT PRIMARY KEY,
    issuer     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    identity   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS console_sessions_by_identity ON console_sessions (issuer, subject);";

/// Sessions one identity may hold at once; signing in again past this ends
/// its oldest (every row needs a sign-in at the provider, so the table grows
/// only with people, not with requests).
pub const MAX_SESSIONS_PER_IDENTITY: u64 = 10;

/// A session as stored (its id is known only to the browser).
#[derive(Clone, Debug)]
pub struct StoredSession {
    pub identity: VerifiedIdentity,
    pub created_at: u64,
    pub last_seen: u64,
    pub expires_at: u64,
}

/// The hex SHA-256 of a session id: the row's key.
pub fn id_hash(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// The `console_sessions` table.
#[derive(Clone, Debug)]
pub struct SessionStore {
    db: Db,
}

impl SessionStore {
    /// Open the store in `db`, creating the table.
    pub fn open(db: impl Into<Db>) -> Result<Self, DbError> {
        let db = db.into();
        crate::audit::ensure_tables(&db, SCHEMA, POSTGRES)?;
        Ok(SessionStore { db })
    }

    /// Store a new session `id` for `identity`, ending at `expires_at`; in
    /// the same transaction, drop every ended session (`idle` past its last
    /// use, or past its end) and the identity's oldest beyond
    /// [`MAX_SESSIONS_PER_IDENTITY`].
    pub fn create(
        &self,
        id: &str,
        identity: &VerifiedIdentity,
        now: u64,
        expires_at: u64,
        idle: u64,
    ) -> Result<(), DbError> {
        let json = serde_json::to_string(&Stored::from(identity))
            .map_err(|e| DbError::decode(e.to_string()))?;
        let hash = id_hash(id);
        let idle_before = now.saturating_sub(idle);
        self.db.transaction(crate::db::TxMode::Write, |c| {
            c.execute(
                "DELETE FROM console_sessions WHERE expires_at <= $1 OR last_seen <= $2",
                &params![now, idle_before],
            )?;
            c.execute(
                "DELETE FROM console_sessions WHERE id_hash IN (
                     SELECT id_hash FROM console_sessions WHERE issuer = $1 AND subject = $2
                     ORDER BY created_at DESC, id_hash LIMIT 1000000 OFFSET $3)",
                &params![
                    &identity.issuer,
                    &identity.subject,
                    MAX_SESSIONS_PER_IDENTITY - 1
                ],
            )?;
            c.execute(
                "INSERT INTO console_sessions (id_hash, issuer, subject, identity, created_at, last_seen, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $5, $6)",
                &params![&hash, &identity.issuer, &identity.subject, &json, now, expires_at],
            )?;
            Ok(())
        })
    }

    /// The session with this id, if stored (ended or not: the caller judges).
    pub fn get(&self, id: &str) -> Result<Option<StoredSession>, DbError> {
        let hash = id_hash(id);
        let row = self.db.with(|c| {
            c.query_opt(
                "SELECT identity, created_at, last_seen, expires_at FROM console_sessions WHERE id_hash = $1",
                &params![&hash],
            )
        })?;
        let Some(row) = row else {
            return Ok(None);
        };
        let stored: Stored =
            serde_json::from_str(&row.text(0)?).map_err(|e| DbError::decode(e.to_string()))?;
        Ok(Some(StoredSession {
            identity: stored.into_identity()?,
            created_at: row.u64(1)?,
            last_seen: row.u64(2)?,
            expires_at: row.u64(3)?,
        }))
    }

    /// Record a use of the session at `now`.
    pub fn touch(&self, id: &str, now: u64) -> Result<(), DbError> {
        let hash = id_hash(id);
        self.db.with(|c| {
            c.execute(
                "UPDATE console_sessions SET last_seen = $1 WHERE id_hash = $2 AND last_seen < $1",
                &params![now, &hash],
            )
        })?;
        Ok(())
    }

    /// End the session: its row is gone, so its cookie opens nothing.
    pub fn delete(&self, id: &str) -> Result<(), DbError> {
        let hash = id_hash(id);
        self.db.with(|c| {
            c.execute(
                "DELETE FROM console_sessions WHERE id_hash = $1",
                &params![&hash],
            )
        })?;
        Ok(())
    }

    /// How many sessions are stored (for tests and operators).
    pub fn count(&self) -> Result<u64, DbError> {
        self.db.with(|c| {
            c.query_one("SELECT COUNT(*) FROM console_sessions", &[])?
                .u64(0)
        })
    }
}

/// [`VerifiedIdentity`] as a session row keeps it (its login name re-parsed
/// when read, so a row cannot smuggle in a name the rules refuse).
#[derive(Serialize, Deserialize)]
struct Stored {
    workload: bool,
    issuer: String,
    subject: String,
    email: Option<String>,
    email_verified: bool,
    groups: Vec<String>,
    login: Option<String>,
    login_problem: Option<String>,
    claims: serde_json::Map<String, serde_json::Value>,
}

impl From<&VerifiedIdentity> for Stored {
    fn from(i: &VerifiedIdentity) -> Self {
        Stored {
            workload: i.kind == IdentityKind::Workload,
            issuer: i.issuer.clone(),
            subject: i.subject.clone(),
            email: i.email.clone(),
            email_verified: i.email_verified,
            groups: i.groups.clone(),
            login: i.login.as_ref().map(|l| l.as_str().to_owned()),
            login_problem: i.login_problem.clone(),
            claims: i.claims.clone(),
        }
    }
}

impl Stored {
    fn into_identity(self) -> Result<VerifiedIdentity, DbError> {
        let login = match self.login {
            Some(l) => Some(LoginName::parse(&l).map_err(|e| DbError::decode(e.to_string()))?),
            None => None,
        };
        Ok(VerifiedIdentity {
            kind: if self.workload {
                IdentityKind::Workload
            } else {
                IdentityKind::Human
            },
            issuer: self.issuer,
            subject: self.subject,
            email: self.email,
            email_verified: self.email_verified,
            groups: self.groups,
            login,
            login_problem: self.login_problem,
            claims: self.claims,
        })
    }
}
