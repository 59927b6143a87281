//! The host side of the authority's state: one-time join tokens (stored
//! hashed beside the audit log) and renewal challenges (stateless, checkable
//! by any replica, spent in the database). The issuance steps that use them
//! are `issue::host`.

use base64::Engine as _;
use ca_core::Ttl;
use ca_core::audit::AuditEvent;
use ca_core::host::JoinToken;
use ca_core::hostname::HostName;
use ca_core::wire::HostChallenge;
use rand_core::{OsRng, RngCore as _};

use crate::audit::{AuditError, AuditStore, UsedToken};
use crate::db::{Db, DbError};
use crate::params;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS host_join_tokens (
    -- Hex SHA-256 of the token; the token itself is never stored.
    token_hash TEXT PRIMARY KEY,
    -- JSON array of the host names the token may claim.
    hostnames  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    -- Set once, atomically, by the request that spends the token.
    used_at    INTEGER,
    used_by    TEXT
) WITHOUT ROWID;";

/// The same table for PostgreSQL.
const POSTGRES: &str = "
CREATE TABLE IF NOT EXISTS host_join_tokens (
    token_hash TEXT PRIMARY KEY,
    hostnames  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    used_by    TEXT
);";

/// How long a renewal challenge may be answered.
pub const CHALLENGE_TTL_SECS: u64 = 60;

/// The join token table could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenStoreError {
    #[error("join token store: {0}")]
    Db(#[from] DbError),
    #[error("join token store {db}: a stored row is unreadable ({message})")]
    Corrupt { db: String, message: String },
    #[error("join token store: the database task failed: {0}")]
    Task(String),
}

/// A join token as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredToken {
    pub hostnames: Vec<HostName>,
    pub created_at: u64,
    pub expires_at: u64,
    pub used_at: Option<u64>,
}

/// The `host_join_tokens` table beside the audit log (tokens are rare: a
/// pooled connection per operation; the audit writer keeps its own).
#[derive(Clone, Debug)]
pub struct JoinTokenStore {
    db: Db,
}

impl JoinTokenStore {
    /// Open the store in `db`, creating the table.
    pub fn open(db: impl Into<Db>) -> Result<Self, TokenStoreError> {
        let db = db.into();
        crate::audit::ensure_tables(&db, SCHEMA, POSTGRES)?;
        Ok(JoinTokenStore { db })
    }

    fn corrupt(&self, message: String) -> TokenStoreError {
        TokenStoreError::Corrupt {
            db: self.db.describe(),
            message,
        }
    }

    /// Store a new token's hash with the names it may claim.
    pub fn insert(
        &self,
        token: &JoinToken,
        hostnames: &[HostName],
        created_at: u64,
        expires_at: u64,
    ) -> Result<(), TokenStoreError> {
        let names = serde_json::to_string(hostnames).map_err(|e| self.corrupt(e.to_string()))?;
        let hash = token.hash();
        self.db.with(|c| {
            c.execute(
                "INSERT INTO host_join_tokens (token_hash, hostnames, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                &params![&hash, &names, created_at, expires_at],
            )
        })?;
        Ok(())
    }

    /// Remove a token (used when its creation could not be audited).
    pub fn delete(&self, token: &JoinToken) -> Result<(), TokenStoreError> {
        let hash = token.hash();
        self.db.with(|c| {
            c.execute(
                "DELETE FROM host_join_tokens WHERE token_hash = $1",
                &params![&hash],
            )
        })?;
        Ok(())
    }

    /// The stored token with this hash, if any.
    pub fn lookup(&self, token_hash: &str) -> Result<Option<StoredToken>, TokenStoreError> {
        let row = self.db.with(|c| {
            c.query_opt(
                "SELECT hostnames, created_at, expires_at, used_at FROM host_join_tokens WHERE token_hash = $1",
                &params![token_hash],
            )
        })?;
        let Some(row) = row else {
            return Ok(None);
        };
        let names = row.text(0)?;
        let hostnames: Vec<HostName> =
            serde_json::from_str(&names).map_err(|e| self.corrupt(e.to_string()))?;
        Ok(Some(StoredToken {
            hostnames,
            created_at: row.int(1)?.max(0) as u64,
            expires_at: row.int(2)?.max(0) as u64,
            used_at: row.opt_int(3)?.map(|u| u.max(0) as u64),
        }))
    }

    /// Spend the token for `claimant` if it is unused and unexpired at `now`.
    /// One statement, so of any number of concurrent claims (on any
    /// replica) exactly one wins.
    pub fn claim(
        &self,
        token_hash: &str,
        now: u64,
        claimant: &str,
    ) -> Result<bool, TokenStoreError> {
        let changed = self.db.with(|c| {
            c.execute(
                "UPDATE host_join_tokens SET used_at = $2, used_by = $3
                 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
                &params![token_hash, now, claimant],
            )
        })?;
        Ok(changed == 1)
    }

    /// Undo `claimant`'s claim (no certificate was issued for it).
    pub fn release(&self, token_hash: &str, claimant: &str) -> Result<(), TokenStoreError> {
        self.db.with(|c| {
            c.execute(
                "UPDATE host_join_tokens SET used_at = NULL, used_by = NULL
                 WHERE token_hash = $1 AND used_by = $2",
                &params![token_hash, claimant],
            )
        })?;
        Ok(())
    }

    /// Run a store operation off the async runtime.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&JoinTokenStore) -> Result<T, TokenStoreError> + Send + 'static,
    ) -> Result<T, TokenStoreError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| TokenStoreError::Task(e.to_string()))?
    }
}

/// Why `jitssh-ca host token create` made no token.
#[derive(Debug, thiserror::Error)]
pub enum CreateTokenError {
    #[error("name at least one host (--hostname H)")]
    NoHostnames,
    #[error(transparent)]
    Store(#[from] TokenStoreError),
    #[error("the token was not created")]
    Audit(#[source] AuditError),
}

/// Create a join token for `hostnames`, valid for `ttl` from `now`: stored
/// hashed, and audited (`host_token_create`) before it is returned. If the
/// audit row cannot be written the token is removed again.
pub async fn create_join_token(
    store: &JoinTokenStore,
    audit: &AuditStore,
    hostnames: &[HostName],
    ttl: Ttl,
    now: u64,
) -> Result<(JoinToken, u64), CreateTokenError> {
    if hostnames.is_empty() {
        return Err(CreateTokenError::NoHostnames);
    }
    let token = JoinToken::generate(&mut OsRng);
    let expires_at = now + ttl.as_secs();
    store.insert(&token, hostnames, now, expires_at)?;
    let names: Vec<String> = hostnames.iter().map(|h| h.to_string()).collect();
    let event = AuditEvent {
        time: now,
        action: "host_token_create".into(),
        outcome: "created".into(),
        requested_principals: Some(names),
        ttl_seconds: Some(ttl.as_secs()),
        token_hash: Some(token.hash()),
        details: Some(serde_json::json!({ "expires_at": expires_at })),
        ..Default::default()
    };
    if let Err(e) = audit.append(event, None).await {
        let _ = store.delete(&token);
        return Err(CreateTokenError::Audit(e));
    }
    Ok((token, expires_at))
}

/// Renewal challenges, stateless so that any replica can check a challenge
/// another one handed out: `jitssh-renew-` + base64url(nonce ‖ expiry ‖
/// MAC), the MAC keyed by a secret every replica reads from the database.
/// Single use is enforced where it matters, at issuance: the challenge's
/// hash is recorded as a used token with the audit row, so the database
/// refuses a second renewal with it on any replica.
pub struct Challenges {
    key: [u8; 32],
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Challenges { .. }")
    }
}

/// Bytes of nonce, expiry and MAC in a challenge.
const NONCE_LEN: usize = 16;
const MAC_LEN: usize = 16;

impl Challenges {
    pub fn new(key: [u8; 32]) -> Self {
        Challenges { key }
    }

    fn mac(&self, nonce: &[u8], expires_at: u64) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(b"jitssh-renew-v1\0");
        mac.update(nonce);
        mac.update(&expires_at.to_be_bytes());
        mac
    }

    /// A fresh challenge, valid for [`CHALLENGE_TTL_SECS`]. Costs no state.
    pub fn issue(&self, now: u64) -> HostChallenge {
        use hmac::Mac as _;
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let expires_at = now + CHALLENGE_TTL_SECS;
        let tag = self.mac(&nonce, expires_at).finalize().into_bytes();
        let mut raw = Vec::with_capacity(NONCE_LEN + 8 + MAC_LEN);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&expires_at.to_be_bytes());
        raw.extend_from_slice(&tag[..MAC_LEN]);
        HostChallenge {
            challenge: format!(
                "jitssh-renew-{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
            ),
            expires_at,
        }
    }

    /// Whether `challenge` was made by a replica of this CA and is unexpired
    /// at `now`: its expiry, or `None`. (Single use: see the type.)
    pub fn check(&self, challenge: &str, now: u64) -> Option<u64> {
        use hmac::Mac as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(challenge.strip_prefix("jitssh-renew-")?)
            .ok()?;
        if raw.len() != NONCE_LEN + 8 + MAC_LEN {
            return None;
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let (exp, tag) = rest.split_at(8);
        let expires_at = u64::from_be_bytes(exp.try_into().ok()?);
        self.mac(nonce, expires_at)
            .verify_truncated_left(tag)
            .ok()?;
        (expires_at > now && expires_at <= now + CHALLENGE_TTL_SECS + 60).then_some(expires_at)
    }
}

/// The used-token record that makes a renewal challenge single use.
pub fn spent_challenge(challenge: &str, expires_at: u64) -> UsedToken {
    use sha2::Digest as _;
    UsedToken {
        token_hash: format!(
            "host-challenge:{}",
            hex::encode(sha2::Sha256::digest(challenge.as_bytes()))
        ),
        expires_at,
    }
}

/// The host side of the authority: join tokens, challenges, lifetime ceiling.
#[derive(Debug)]
pub struct Hosts {
    pub tokens: JoinTokenStore,
    pub challenges: Challenges,
    /// `certs.host_max_ttl`.
    pub max_ttl: Ttl,
}

impl Hosts {
    /// `challenge_key`: the secret shared by every replica
    /// ([`AuditStore::shared_secret`]).
    pub fn new(tokens: JoinTokenStore, max_ttl: Ttl, challenge_key: [u8; 32]) -> Self {
        Hosts {
            tokens,
            challenges: Challenges::new(challenge_key),
            max_ttl,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<HostName> {
        v.iter().map(|s| HostName::parse(s).unwrap()).collect()
    }

    #[test]
    fn tokens_are_stored_hashed_and_spent_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        crate::audit::AuditStore::open(&db).unwrap();
        let s = JoinTokenStore::open(&db).unwrap();
        let t = JoinToken::generate(&mut OsRng);
        s.insert(&t, &names(&["web01", "web01.example"]), 1000, 2000)
            .unwrap();
        let raw = std::fs::read(&db).unwrap();
        assert!(
            !raw.windows(t.expose().len())
                .any(|w| w == t.expose().as_bytes()),
            "the token itself is never stored"
        );
        let got = s.lookup(&t.hash()).unwrap().unwrap();
        assert_eq!(got.hostnames, names(&["web01", "web01.example"]));
        assert_eq!((got.expires_at, got.used_at), (2000, None));
        assert!(s.lookup("00").unwrap().is_none());

        assert!(!s.claim(&t.hash(), 2000, "late").unwrap(), "expired");
        assert!(s.claim(&t.hash(), 1500, "a").unwrap());
        assert!(!s.claim(&t.hash(), 1500, "b").unwrap(), "already spent");
        s.release(&t.hash(), "b").unwrap();
        assert!(
            !s.claim(&t.hash(), 1500, "b").unwrap(),
            "only the claimant releases"
        );
        s.release(&t.hash(), "a").unwrap();
        assert!(s.claim(&t.hash(), 1500, "b").unwrap());
        assert_eq!(s.lookup(&t.hash()).unwrap().unwrap().used_at, Some(1500));
    }

    #[test]
    fn challenges_are_checked_by_any_replica_and_expire() {
        let a = Challenges::new([7; 32]);
        let b = Challenges::new([7; 32]);
        let other = Challenges::new([8; 32]);
        let ch = a.issue(100);
        assert_eq!(ch.expires_at, 100 + CHALLENGE_TTL_SECS);
        assert_eq!(
            b.check(&ch.challenge, 150),
            Some(ch.expires_at),
            "another replica"
        );
        assert_eq!(other.check(&ch.challenge, 150), None, "another CA");
        assert_eq!(
            a.check(&ch.challenge, 100 + CHALLENGE_TTL_SECS),
            None,
            "expired"
        );
        let again = a.issue(100);
        assert_ne!(ch.challenge, again.challenge);
        // Tampering with any byte (here: a later expiry) breaks the MAC.
        let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(ch.challenge.strip_prefix("jitssh-renew-").unwrap())
            .unwrap();
        raw[NONCE_LEN + 7] ^= 1;
        let forged = format!(
            "jitssh-renew-{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        assert_eq!(a.check(&forged, 150), None);
        for junk in ["made-up", "jitssh-renew-", "jitssh-renew-!!!", ""] {
            assert_eq!(a.check(junk, 150), None, "{junk}");
        }
        // The used-token record is per challenge.
        assert_ne!(
            spent_challenge(&ch.challenge, 1).token_hash,
            spent_challenge(&again.challenge, 1).token_hash
        );
    }
}
