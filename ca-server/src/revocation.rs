//! Revocations: stored beside the audit log, enforced at issuance, published
//! as an OpenSSH KRL (`GET /v1/krl`) for sshd's `RevokedKeys`.
//!
//! Expiry is jitssh's normal revocation; this is for the exceptions (a stolen
//! laptop, a leaked key, someone leaving now). Revoking a serial or key ID
//! affects certificates already issued; revoking a subject or key also
//! refuses every new certificate for it. Ending an elevation grant early
//! revokes the certificates issued under it ([`revoke_grant_certificates`],
//! run inside the grant's closing transaction), and revoking a host
//! ([`Target::Host`]) revokes its live certificates and its keys.
//!
//! One list serves both KRLs: `GET /v1/krl` keys the certificate records by
//! the user CA keys (for sshd's `RevokedKeys`), `GET /v1/krl/hosts` by the
//! host CA keys (for ssh's `RevokedHostKeys`). Serials are unique across
//! both kinds, so listing a user serial under a host CA revokes nothing else.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ca_core::SubjectKey;
use ca_core::hostname::HostName;
use ca_core::krl::{KrlSpec, RevokedCerts, write_krl};

use crate::db::{Conn, Db, DbError, TxMode};
use crate::params;
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

/// The same table for PostgreSQL; `id` comes from a sequence.
const POSTGRES: &str = "
CREATE TABLE IF NOT EXISTS revocations (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('serial', 'key_id', 'subject', 'key')),
    value      TEXT NOT NULL,
    reason     TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    UNIQUE (kind, value)
);";

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("revocation store: {0}")]
    Db(#[from] DbError),
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
    Subject {
        issuer: String,
        subject: String,
    },
    Key(SubjectKey),
    /// A host: every host certificate naming it that can still be valid,
    /// and every key it was certified for (so its renewed certificates, and
    /// any renewal or enrolment with those keys, are refused too).
    Host(HostName),
}

/// One row to insert: kind, value, and until when it must stay in the KRL
/// (`None`: forever).
type Entry = (&'static str, String, Option<u64>);

/// The revocations table beside the audit log.
#[derive(Clone, Debug)]
pub struct RevocationStore {
    db: Db,
}

impl RevocationStore {
    /// Open the store in `db`, creating the table.
    pub fn open(db: impl Into<Db>) -> Result<Self, RevocationError> {
        let db = db.into();
        crate::audit::ensure_tables(&db, SCHEMA, POSTGRES)?;
        Ok(RevocationStore { db })
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
        let unknown_expiry = now + max_ttl + ca_core::cert::BACKDATE_SECS;
        // What to insert, worked out before the transaction.
        let mut entries: Vec<Entry> = Vec::new();
        match target {
            Target::Serial(serial) => {
                if *serial == 0 {
                    return Err(RevocationError::Invalid(
                        "serial 0 is never issued by jitssh".into(),
                    ));
                }
                entries.push(("serial", serial.to_string(), None));
            }
            Target::KeyId(id) => {
                if id.is_empty() || ca_core::has_control_chars(id) {
                    return Err(RevocationError::Invalid(
                        "key ID must be non-empty printable text".into(),
                    ));
                }
                entries.push(("key_id", id.clone(), Some(unknown_expiry)));
            }
            Target::Subject { issuer, subject } => {
                entries.push(("subject", subject_key(issuer, subject), None));
            }
            Target::Key(key) => {
                let line = key
                    .public_key()
                    .to_openssh()
                    .map_err(|e| RevocationError::Invalid(e.to_string()))?;
                entries.push(("key", line, None));
            }
            Target::Host(_) => {}
        }
        let added = self.db.transaction(TxMode::Write, |c| {
            if let Target::Serial(serial) = target {
                let expiry = issued_expiry(c, *serial)?.unwrap_or(unknown_expiry);
                entries[0].2 = Some(expiry);
            }
            if let Target::Subject { issuer, subject } = target {
                // Certificates already issued to the subject, still valid.
                for (serial, expiry) in issued_to(c, issuer, subject, now)? {
                    entries.push(("serial", serial.to_string(), Some(expiry)));
                }
            }
            if let Target::Host(name) = target {
                entries.extend(issued_to_host(c, name, now)?);
                if entries.is_empty() {
                    return Ok(None);
                }
            }
            insert_entries(c, &entries, reason, now).map(Some)
        })?;
        added.ok_or_else(|| match target {
            Target::Host(name) => RevocationError::Invalid(format!(
                "no host certificate issued by this CA names {name}; nothing revoked (check the name with `jitssh-ca audit list`)"
            )),
            _ => RevocationError::Invalid("nothing to revoke".into()),
        })
    }

    /// Everything still in force at `now`.
    pub fn snapshot(&self, now: u64) -> Result<Snapshot, RevocationError> {
        let (rows, version) = self.db.with(|c| {
            let rows = c.query(
                "SELECT kind, value FROM revocations WHERE expires_at IS NULL OR expires_at > $1 ORDER BY id",
                &params![now],
            )?;
            let version = c
                .query_one("SELECT coalesce(max(id), 0) FROM revocations", &[])?
                .u64(0)?;
            Ok((rows, version))
        })?;
        let mut snap = Snapshot::default();
        for row in rows {
            let (kind, value) = (row.text(0)?, row.text(1)?);
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
        snap.version = version;
        Ok(snap)
    }
}

/// Insert (or widen) revocation rows in the caller's transaction.
fn insert_entries(
    c: &mut dyn Conn,
    entries: &[Entry],
    reason: Option<&str>,
    now: u64,
) -> Result<Vec<(String, String)>, DbError> {
    let mut added = Vec::new();
    for (kind, value, expires) in entries {
        c.execute(
            "INSERT INTO revocations (kind, value, reason, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (kind, value) DO UPDATE SET expires_at = CASE
               WHEN excluded.expires_at IS NULL OR revocations.expires_at IS NULL THEN NULL
               WHEN excluded.expires_at > revocations.expires_at THEN excluded.expires_at
               ELSE revocations.expires_at END",
            &params![*kind, value, reason, now, *expires],
        )?;
        added.push(((*kind).to_owned(), value.clone()));
    }
    Ok(added)
}

/// How far before a grant's start a certificate under it may be stamped
/// (replicas' clocks differ a little): such certificates are revoked too.
const GRANT_CLOCK_SLACK_SECS: u64 = 300;

/// Revoke, inside the caller's transaction (the one that ends an elevation
/// grant), every user certificate issued to `issuer` + `subject` since the
/// grant started that carries any of the role's `principals` and can still
/// be valid at `now`. A certificate carrying such a principal under another
/// grant of the same person is revoked too: which grant covered it is not
/// recorded, so this errs on the side of refusing (a new certificate is one
/// `jitssh login` away). Returns the serials revoked.
pub fn revoke_grant_certificates(
    conn: &mut dyn Conn,
    issuer: &str,
    subject: &str,
    principals: &[String],
    grant_start: u64,
    now: u64,
    reason: &str,
) -> Result<Vec<u64>, DbError> {
    let since = grant_start.saturating_sub(GRANT_CLOCK_SLACK_SECS);
    let rows = conn.query(
        "SELECT serial, event FROM audit WHERE subject = $1 AND issuer = $2 AND action = 'user_cert'
         AND outcome = 'issued' AND serial IS NOT NULL AND time >= $3",
        &params![subject, issuer, since],
    )?;
    let mut entries: Vec<Entry> = Vec::new();
    let mut serials = Vec::new();
    for row in rows {
        let (serial, event) = (row.text(0)?, row.text(1)?);
        let Ok(e) = serde_json::from_str::<ca_core::audit::AuditEvent>(&event) else {
            continue;
        };
        let carries = e.granted_principals.iter().any(|p| principals.contains(p));
        if let (true, Ok(serial), Some(exp)) = (carries, serial.parse::<u64>(), expiry_of(&event))
            && exp > now
            && serial != 0
        {
            entries.push(("serial", serial.to_string(), Some(exp)));
            serials.push(serial);
        }
    }
    insert_entries(conn, &entries, Some(reason), now)?;
    Ok(serials)
}

/// Revocation rows for host `name`: the serials of its host certificates
/// that can still be valid, and every key it was certified for (recorded in
/// the issuance rows' details since host revocation exists).
fn issued_to_host(conn: &mut dyn Conn, name: &HostName, now: u64) -> Result<Vec<Entry>, DbError> {
    let rows = conn.query(
        "SELECT a.serial, a.event FROM audit a JOIN audit_principals p ON p.seq = a.seq
         WHERE p.principal = $1 AND a.action = 'host_cert' AND a.outcome = 'issued' AND a.serial IS NOT NULL",
        &params![name.as_str()],
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (serial, event) = (row.text(0)?, row.text(1)?);
        let Ok(e) = serde_json::from_str::<ca_core::audit::AuditEvent>(&event) else {
            continue;
        };
        if !e.granted_principals.iter().any(|p| p == name.as_str()) {
            continue; // only asked for, not granted
        }
        if let (Ok(serial), Some(exp)) = (serial.parse::<u64>(), expiry_of(&event))
            && exp > now
            && serial != 0
        {
            out.push(("serial", serial.to_string(), Some(exp)));
        }
        let key = e
            .details
            .as_ref()
            .and_then(|d| d.get("public_key"))
            .and_then(|k| k.as_str())
            .and_then(|k| ssh_key::PublicKey::from_openssh(k).ok())
            .and_then(|k| {
                ssh_key::PublicKey::new(k.key_data().clone(), "")
                    .to_openssh()
                    .ok()
            });
        if let Some(line) = key
            && !out.iter().any(|(kind, v, _)| *kind == "key" && *v == line)
        {
            out.push(("key", line, None));
        }
    }
    Ok(out)
}

/// Whether `issuer` + `subject` is revoked, read from the database (for
/// calls that must see a revocation made on any replica at once).
pub fn subject_revoked(conn: &mut dyn Conn, issuer: &str, subject: &str) -> Result<bool, DbError> {
    Ok(conn
        .query_opt(
            "SELECT 1 FROM revocations WHERE kind = 'subject' AND value = $1",
            &params![&subject_key(issuer, subject)],
        )?
        .is_some())
}

fn subject_key(issuer: &str, subject: &str) -> String {
    format!("{issuer}\n{subject}")
}

/// valid_before of the certificate with this serial, from its audit row.
fn issued_expiry(conn: &mut dyn Conn, serial: u64) -> Result<Option<u64>, DbError> {
    let serial = serial.to_string();
    let event = conn.query_opt(
        "SELECT event FROM audit WHERE serial = $1 AND outcome = 'issued' LIMIT 1",
        &params![&serial],
    )?;
    Ok(event
        .map(|r| r.text(0))
        .transpose()?
        .and_then(|e| expiry_of(&e)))
}

fn expiry_of(event_json: &str) -> Option<u64> {
    let e: ca_core::audit::AuditEvent = serde_json::from_str(event_json).ok()?;
    Some(e.time + e.ttl_seconds? + ca_core::cert::BACKDATE_SECS)
}

/// (serial, expiry) of every unexpired certificate issued to the subject.
fn issued_to(
    conn: &mut dyn Conn,
    issuer: &str,
    subject: &str,
    now: u64,
) -> Result<Vec<(u64, u64)>, DbError> {
    let rows = conn.query(
        "SELECT serial, event FROM audit WHERE subject = $1 AND issuer = $2 AND outcome = 'issued' AND serial IS NOT NULL",
        &params![subject, issuer],
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (serial, event) = (row.text(0)?, row.text(1)?);
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

    /// The table behind the snapshot.
    pub fn store(&self) -> &RevocationStore {
        &self.store
    }

    /// Reload from the database now. Errors keep the previous snapshot
    /// (failing open here would only matter for the seconds a database is
    /// unreadable, and issuance fails closed on the audit write anyway).
    pub fn refresh(&self, now: u64) -> Result<(), RevocationError> {
        let snap = self.store.snapshot(now)?;
        self.current.store(Arc::new(snap));
        Ok(())
    }

    /// [`Self::refresh`] off the async runtime, after a change this process
    /// made (an ended grant's certificates): the KRL serves it at once. A
    /// failure is logged; the periodic refresh catches up.
    pub async fn refresh_after_change(self: &Arc<Self>) {
        let me = self.clone();
        let now = crate::clock::now_unix();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || me.refresh(now)).await {
            tracing::warn!(error = %e, "could not refresh revocations after a change; the next refresh will");
        }
    }

    pub fn spawn_refresher(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let me = self.clone();
                let res =
                    tokio::task::spawn_blocking(move || me.refresh(crate::clock::now_unix())).await;
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
