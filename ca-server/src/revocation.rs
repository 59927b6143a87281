//! Revocations: stored beside the audit log, enforced at issuance, published
//! as an OpenSSH KRL (`GET /v1/krl`) for sshd's `RevokedKeys`.
//!
//! Expiry is jitssh's normal revocation; this is for the exceptions (a stolen
//! laptop, a leaked key, someone leaving now). Revoking a serial or key ID
//! affects certificates already issued; revoking a subject or key also
//! refuses every new certificate for it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ca_core::SubjectKey;
use ca_core::krl::{KrlSpec, RevokedCerts, write_krl};
use rusqlite::{Connection, OptionalExtension, params};
use ssh_key::public::KeyData;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS revocations (
    id         INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('serial', 'key_id', 'subject', 'key')),
    value      TEXT NOT NULL,
    reason     TEXT,
    created_at INTEGER NOT NULL,
    -- After this the entry no longer needs to be in the KRL (the certificates
    -- it names have expired). NULL: forever (subjects and keys).
    expires_at INTEGER,
    UNIQUE (kind, value)
);";

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("revocation store {path}: {source}; check that the database exists and is writable")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("building the KRL failed: {0}")]
    Krl(#[from] ca_core::krl::KrlError),
}

/// What to revoke.
#[derive(Clone, Debug)]
pub enum Target {
    Serial(u64),
    KeyId(String),
    Subject { issuer: String, subject: String },
    Key(SubjectKey),
}

/// The revocations table in the audit database.
#[derive(Clone, Debug)]
pub struct RevocationStore {
    path: PathBuf,
}

impl RevocationStore {
    /// Open the store in the audit database at `path`, creating the table.
    pub fn open(path: &Path) -> Result<Self, RevocationError> {
        let s = RevocationStore {
            path: path.to_owned(),
        };
        s.conn()?.execute_batch(SCHEMA).map_err(|e| s.db(e))?;
        Ok(s)
    }

    fn db(&self, source: rusqlite::Error) -> RevocationError {
        RevocationError::Db {
            path: self.path.clone(),
            source,
        }
    }

    fn conn(&self) -> Result<Connection, RevocationError> {
        let c = Connection::open(&self.path).map_err(|e| self.db(e))?;
        c.busy_timeout(Duration::from_secs(5))
            .map_err(|e| self.db(e))?;
        Ok(c)
    }

    /// Record a revocation. `max_ttl` bounds how long an unknown certificate
    /// could still be valid. Returns the entries added (kind, value).
    pub fn revoke(
        &self,
        target: &Target,
        reason: Option<&str>,
        now: u64,
        max_ttl: u64,
    ) -> Result<Vec<(String, String)>, RevocationError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(|e| self.db(e))?;
        let mut added = Vec::new();
        let mut insert = |kind: &str,
                          value: String,
                          expires: Option<u64>|
         -> Result<(), rusqlite::Error> {
            tx.execute(
                "INSERT INTO revocations (kind, value, reason, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (kind, value) DO UPDATE SET expires_at = CASE
                   WHEN excluded.expires_at IS NULL OR expires_at IS NULL THEN NULL
                   ELSE max(expires_at, excluded.expires_at) END",
                params![kind, value, reason, now as i64, expires.map(|e| e as i64)],
            )?;
            added.push((kind.to_owned(), value));
            Ok(())
        };
        let unknown_expiry = now + max_ttl + ca_core::cert::BACKDATE_SECS;
        match target {
            Target::Serial(serial) => {
                if *serial == 0 {
                    return Err(RevocationError::Invalid(
                        "serial 0 is never issued by jitssh".into(),
                    ));
                }
                let expiry = issued_expiry(&tx, *serial)
                    .map_err(|e| self.db(e))?
                    .unwrap_or(unknown_expiry);
                insert("serial", serial.to_string(), Some(expiry)).map_err(|e| self.db(e))?;
            }
            Target::KeyId(id) => {
                if id.is_empty() || ca_core::has_control_chars(id) {
                    return Err(RevocationError::Invalid(
                        "key ID must be non-empty printable text".into(),
                    ));
                }
                insert("key_id", id.clone(), Some(unknown_expiry)).map_err(|e| self.db(e))?;
            }
            Target::Subject { issuer, subject } => {
                insert("subject", subject_key(issuer, subject), None).map_err(|e| self.db(e))?;
                // Certificates already issued to the subject, still valid.
                for (serial, expiry) in
                    issued_to(&tx, issuer, subject, now).map_err(|e| self.db(e))?
                {
                    insert("serial", serial.to_string(), Some(expiry)).map_err(|e| self.db(e))?;
                }
            }
            Target::Key(key) => {
                let line = key
                    .public_key()
                    .to_openssh()
                    .map_err(|e| RevocationError::Invalid(e.to_string()))?;
                insert("key", line, None).map_err(|e| self.db(e))?;
            }
        }
        tx.commit().map_err(|e| self.db(e))?;
        Ok(added)
    }

    /// Everything still in force at `now`.
    pub fn snapshot(&self, now: u64) -> Result<Snapshot, RevocationError> {
        let conn = self.conn()?;
        let mut snap = Snapshot::default();
        let mut stmt = conn
            .prepare("SELECT kind, value FROM revocations WHERE expires_at IS NULL OR expires_at > ?1 ORDER BY id")
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map([now as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.db(e))?;
        for row in rows {
            let (kind, value) = row.map_err(|e| self.db(e))?;
            match kind.as_str() {
                "serial" => snap.serials.extend(value.parse::<u64>().ok()),
                "key_id" => snap.key_ids.push(value),
                "subject" => {
                    snap.subjects.insert(value);
                }
                "key" => {
                    if let Ok(k) = ssh_key::PublicKey::from_openssh(&value) {
                        snap.key_fingerprints
                            .insert(k.fingerprint(ssh_key::HashAlg::Sha256).to_string());
                        snap.keys.push(k.key_data().clone());
                    }
                }
                _ => {}
            }
        }
        snap.version = self.version(&conn)?;
        Ok(snap)
    }

    fn version(&self, conn: &Connection) -> Result<u64, RevocationError> {
        conn.query_row("SELECT coalesce(max(id), 0) FROM revocations", [], |r| {
            r.get::<_, i64>(0)
        })
        .map(|v| v as u64)
        .map_err(|e| self.db(e))
    }
}

fn subject_key(issuer: &str, subject: &str) -> String {
    format!("{issuer}\n{subject}")
}

/// valid_before of the certificate with this serial, from its audit row.
fn issued_expiry(conn: &Connection, serial: u64) -> Result<Option<u64>, rusqlite::Error> {
    let event: Option<String> = conn
        .query_row(
            "SELECT event FROM audit WHERE serial = ?1 AND outcome = 'issued' LIMIT 1",
            [serial.to_string()],
            |r| r.get(0),
        )
        .optional()?;
    Ok(event.and_then(|e| expiry_of(&e)))
}

fn expiry_of(event_json: &str) -> Option<u64> {
    let e: ca_core::audit::AuditEvent = serde_json::from_str(event_json).ok()?;
    Some(e.time + e.ttl_seconds? + ca_core::cert::BACKDATE_SECS)
}

/// (serial, expiry) of every unexpired certificate issued to the subject.
fn issued_to(
    conn: &Connection,
    issuer: &str,
    subject: &str,
    now: u64,
) -> Result<Vec<(u64, u64)>, rusqlite::Error> {
    let mut stmt = conn.prepare(
        "SELECT serial, event FROM audit WHERE subject = ?1 AND issuer = ?2 AND outcome = 'issued' AND serial IS NOT NULL",
    )?;
    let rows = stmt.query_map(params![subject, issuer], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (serial, event) = row?;
        if let (Ok(serial), Some(exp)) = (serial.parse::<u64>(), expiry_of(&event))
            && exp > now
        {
            out.push((serial, exp));
        }
    }
    Ok(out)
}

/// Revocations in force, as loaded at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Highest revocation id seen: changes whenever something is revoked.
    pub version: u64,
    pub serials: Vec<u64>,
    pub key_ids: Vec<String>,
    pub keys: Vec<KeyData>,
    subjects: HashSet<String>,
    key_fingerprints: HashSet<String>,
}

impl Snapshot {
    pub fn subject_revoked(&self, issuer: &str, subject: &str) -> bool {
        self.subjects.contains(&subject_key(issuer, subject))
    }

    pub fn key_revoked(&self, fingerprint: &str) -> bool {
        self.key_fingerprints.contains(fingerprint)
    }

    /// The OpenSSH KRL for certificates signed by any of `user_cas` (more
    /// than one during a rotation: serials and key IDs are revoked under each).
    pub fn krl(&self, user_cas: &[KeyData], now: u64) -> Result<Vec<u8>, RevocationError> {
        let certs = user_cas
            .iter()
            .map(|ca| {
                let mut certs = RevokedCerts::new(ca.clone());
                certs.serials = self.serials.clone();
                certs.key_ids = self.key_ids.clone();
                certs
            })
            .collect();
        Ok(write_krl(&KrlSpec {
            version: self.version,
            generated_at: now,
            comment: "jitssh".into(),
            certs,
            keys: self.keys.clone(),
        })?)
    }
}

/// The snapshot the server enforces, refreshed in the background so a
/// revocation made with `jitssh-ca revoke` takes effect within a second.
pub struct RevocationCache {
    store: RevocationStore,
    current: ArcSwap<Snapshot>,
}

impl RevocationCache {
    pub fn load(store: RevocationStore, now: u64) -> Result<Self, RevocationError> {
        let snap = store.snapshot(now)?;
        Ok(RevocationCache {
            store,
            current: ArcSwap::from_pointee(snap),
        })
    }

    pub fn get(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Reload from the database now. Errors keep the previous snapshot
    /// (failing open here would only matter for the seconds a database is
    /// unreadable, and issuance fails closed on the audit write anyway).
    pub fn refresh(&self, now: u64) -> Result<(), RevocationError> {
        let snap = self.store.snapshot(now)?;
        self.current.store(Arc::new(snap));
        Ok(())
    }

    pub fn spawn_refresher(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let me = self.clone();
                let res =
                    tokio::task::spawn_blocking(move || me.refresh(crate::issue::now_unix())).await;
                if let Ok(Err(e)) = res {
                    tracing::warn!(error = %e, "could not refresh revocations; keeping the last list");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_and_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        crate::audit::AuditStore::open(&db).unwrap();
        let s = RevocationStore::open(&db).unwrap();
        s.revoke(&Target::Serial(42), Some("lost laptop"), 1000, 3600)
            .unwrap();
        s.revoke(&Target::KeyId("alice serial=7".into()), None, 1000, 3600)
            .unwrap();
        s.revoke(
            &Target::Subject {
                issuer: "https://idp".into(),
                subject: "u1".into(),
            },
            None,
            1000,
            3600,
        )
        .unwrap();
        let snap = s.snapshot(1000).unwrap();
        assert_eq!(snap.serials, vec![42]);
        assert_eq!(snap.key_ids, vec!["alice serial=7".to_string()]);
        assert!(snap.subject_revoked("https://idp", "u1"));
        assert!(!snap.subject_revoked("https://idp", "u2"));
        assert_eq!(snap.version, 3);
        // Entries for certificates that have expired drop out of the KRL.
        let later = s.snapshot(1000 + 3600 + 31).unwrap();
        assert!(later.serials.is_empty() && later.key_ids.is_empty());
        assert!(
            later.subject_revoked("https://idp", "u1"),
            "subjects stay revoked"
        );
        assert!(matches!(
            s.revoke(&Target::Serial(0), None, 1, 1),
            Err(RevocationError::Invalid(_))
        ));
    }
}
