//! CA key rotation, one kind (user or host) at a time, so that no login
//! fails at any step: add the next key → it is published (hosts and clients
//! trust it) → switch signing to it (the old key stays published) → retire
//! the old key once every certificate it signed has expired.
//!
//! Files beside the signing key `K` (the path the config names):
//!
//! | file | |
//! |---|---|
//! | `K`, `K.pub` | the signing key |
//! | `K.next`, `K.next.pub` | the next key: published, not signing yet |
//! | `K.retiring`, `K.retiring.pub` | the previous key: published until `retire_after` |
//! | `K.rotation.json` | `{"switched_at", "retire_after"}` of the last switch |
//!
//! With `[ca.pkcs11]` the same three keys live in the token under labels
//! (`L`, `L.next`, `L.retiring` for the configured label `L`) and the switch
//! record is a data object `L.rotation` there ([`token`]).
//!
//! The server reads them at start (`jitssh-ca serve` after each step;
//! `systemctl restart` drains requests first). Every step is idempotent or
//! refuses with what to do, and a switch interrupted by a crash resumes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use ssh_key::PublicKey;

use crate::keys::{KeyError, generate_at, load};

/// A published CA key and its role in the rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedKey {
    pub key: PublicKey,
    /// `signing`, `next` or `retiring`.
    pub state: &'static str,
}

/// Why a rotation step cannot run.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Hsm(#[from] crate::hsm::HsmError),
    #[error("a next key already exists ({0}); switch to it with `jitssh-ca ca rotate ... switch`")]
    NextExists(String),
    #[error(
        "no next key ({0}); add one first with `jitssh-ca ca rotate ... next`, restart the CA and let hosts sync"
    )]
    NoNext(String),
    #[error(
        "the previous key is still published ({0}); retire it first with `jitssh-ca ca rotate ... retire`"
    )]
    RetiringExists(String),
    #[error("no retiring key ({0}); nothing to retire")]
    NoRetiring(String),
    #[error(
        "no switch record ({0}): cannot tell when the retiring key's certificates expire; retire with --force once they have"
    )]
    NoRecord(String),
    #[error("the switch record {what} is unreadable: {message}")]
    BadRecord { what: String, message: String },
    #[error(
        "certificates signed by the retiring key may be valid until {retire_after} (unix); retiring it now would lock their holders out. Wait, or pass --force"
    )]
    TooEarly { retire_after: u64 },
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a usable public key: {message}")]
    BadPublic { path: PathBuf, message: String },
}

/// `K` + `suffix`, e.g. `user_ca` → `user_ca.next`.
pub fn sibling(key: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = key.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RotationError + '_ {
    move |source| RotationError::Io {
        path: path.to_owned(),
        source,
    }
}

fn read_public(path: &Path) -> Result<Option<PublicKey>, RotationError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            PublicKey::from_openssh(text.trim())
                .map(Some)
                .map_err(|e| RotationError::BadPublic {
                    path: path.to_owned(),
                    message: e.to_string(),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// Every key to publish for the signing key at `key`: the signing key first,
/// then the next and the retiring one when present.
pub fn published(key: &Path) -> Result<Vec<PublishedKey>, RotationError> {
    let signer = load(key)?;
    let signing = PublicKey::new(signer.public_key().clone(), "");
    let mut out = vec![PublishedKey {
        key: signing,
        state: "signing",
    }];
    for (suffix, state) in [(".next.pub", "next"), (".retiring.pub", "retiring")] {
        if let Some(k) = read_public(&sibling(key, suffix))? {
            if k.algorithm() != ssh_key::Algorithm::Ed25519 {
                return Err(RotationError::BadPublic {
                    path: sibling(key, suffix),
                    message: "not an Ed25519 key".into(),
                });
            }
            out.push(PublishedKey { key: k, state });
        }
    }
    Ok(out)
}

/// The last switch: when, and when the previous key may be retired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SwitchRecord {
    pub switched_at: u64,
    pub retire_after: u64,
}

pub fn last_switch(key: &Path) -> Result<Option<SwitchRecord>, RotationError> {
    let path = sibling(key, ".rotation.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RotationError::Io {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Step 1: create the next key (0600) and its public half.
pub fn add_next(key: &Path, comment: &str) -> Result<PublicKey, RotationError> {
    let next = sibling(key, ".next");
    if next.exists() {
        return Err(RotationError::NextExists(next.display().to_string()));
    }
    let retiring = sibling(key, ".retiring.pub");
    if retiring.exists() {
        return Err(RotationError::RetiringExists(
            retiring.display().to_string(),
        ));
    }
    let signer = generate_at(&next, &sibling(key, ".next.pub"), comment)?;
    Ok(PublicKey::new(signer.public_key().clone(), comment))
}

/// Step 2: the next key signs from now on; the previous one stays published
/// until `now + lifetime` (the longest a certificate it signed can live).
/// Resumes a switch a crash interrupted.
pub fn switch(key: &Path, now: u64, lifetime: u64) -> Result<SwitchRecord, RotationError> {
    let next = sibling(key, ".next");
    let next_pub = sibling(key, ".next.pub");
    let retiring = sibling(key, ".retiring");
    let retiring_pub = sibling(key, ".retiring.pub");
    let state = sibling(key, ".rotation.json");
    let resuming = !key.exists() && retiring.exists() && next.exists();
    if !resuming {
        if !next.exists() || !next_pub.exists() {
            return Err(RotationError::NoNext(next.display().to_string()));
        }
        if retiring_pub.exists() {
            return Err(RotationError::RetiringExists(
                retiring_pub.display().to_string(),
            ));
        }
        // Both keys must load before anything moves.
        load(&next)?;
        load(key)?;
        std::fs::copy(sibling(key, ".pub"), &retiring_pub).map_err(io(&retiring_pub))?;
        let record = SwitchRecord {
            switched_at: now,
            retire_after: now.saturating_add(lifetime),
        };
        write_durably(
            &state,
            &serde_json::to_vec_pretty(&record).unwrap_or_default(),
        )?;
        std::fs::rename(key, &retiring).map_err(io(key))?;
    }
    std::fs::rename(&next, key).map_err(io(&next))?;
    std::fs::rename(&next_pub, sibling(key, ".pub")).map_err(io(&next_pub))?;
    sync_dir(key)?;
    last_switch(key)?.ok_or_else(|| RotationError::Io {
        path: state,
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "switch record missing"),
    })
}

/// Step 3: stop publishing the previous key and delete it. Refused before
/// its certificates can have expired, unless `force`.
pub fn retire(key: &Path, now: u64, force: bool) -> Result<(), RotationError> {
    let retiring_pub = sibling(key, ".retiring.pub");
    if !retiring_pub.exists() {
        return Err(RotationError::NoRetiring(
            retiring_pub.display().to_string(),
        ));
    }
    if !force {
        // Without the record nothing says when the old key's certificates
        // expire: refuse, as for keys in a token.
        match last_switch(key)? {
            None => {
                return Err(RotationError::NoRecord(
                    sibling(key, ".rotation.json").display().to_string(),
                ));
            }
            Some(r) if now < r.retire_after => {
                return Err(RotationError::TooEarly {
                    retire_after: r.retire_after,
                });
            }
            Some(_) => {}
        }
    }
    for path in [sibling(key, ".retiring"), retiring_pub] {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
    }
    sync_dir(key)
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), RotationError> {
    use std::io::Write as _;
    let tmp = sibling(path, ".tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn sync_dir(key: &Path) -> Result<(), RotationError> {
    let dir = key
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// The same rotation for keys in a PKCS#11 token. For the configured label
/// `L`: `L` signs, `L.next` is published before it signs, `L.retiring` is
/// published until its certificates have expired; the switch record is the
/// data object `L.rotation`. A switch writes the record, renames `L` to
/// `L.retiring` and then `L.next` to `L`, one key half at a time; run again
/// after a crash it finishes what is left. Meanwhile `L` is incomplete and
/// the server refuses to start, as with files.
pub mod token {
    use ssh_key::PublicKey;

    use super::{PublishedKey, RotationError, SwitchRecord};
    use crate::hsm::{HsmError, TokenAdmin};

    fn next(label: &str) -> String {
        format!("{label}.next")
    }
    fn retiring(label: &str) -> String {
        format!("{label}.retiring")
    }
    fn record(label: &str) -> String {
        format!("{label}.rotation")
    }
    fn describe(label: &str) -> String {
        format!("key {label:?} in the PKCS#11 token")
    }

    const NONE: (bool, bool) = (false, false);
    const BOTH: (bool, bool) = (true, true);

    /// Every key to publish for `label`: the signing key first, then the
    /// next and the retiring one when present.
    pub fn published(admin: &TokenAdmin, label: &str) -> Result<Vec<PublishedKey>, RotationError> {
        let signing = admin
            .public_key(label)?
            .ok_or_else(|| HsmError::NoKey(label.to_owned()))?;
        let mut out = vec![PublishedKey {
            key: PublicKey::new(signing, ""),
            state: "signing",
        }];
        for (l, state) in [(next(label), "next"), (retiring(label), "retiring")] {
            if let Some(k) = admin.public_key(&l)? {
                out.push(PublishedKey {
                    key: PublicKey::new(k, ""),
                    state,
                });
            }
        }
        Ok(out)
    }

    /// The last switch (the latest, should an interrupted write have left two).
    pub fn last_switch(
        admin: &TokenAdmin,
        label: &str,
    ) -> Result<Option<SwitchRecord>, RotationError> {
        let mut last: Option<SwitchRecord> = None;
        for value in admin.read_data(&record(label))? {
            let r: SwitchRecord =
                serde_json::from_slice(&value).map_err(|e| RotationError::BadRecord {
                    what: format!("{:?} in the PKCS#11 token", record(label)),
                    message: e.to_string(),
                })?;
            if last.is_none_or(|l| r.retire_after > l.retire_after) {
                last = Some(r);
            }
        }
        Ok(last)
    }

    /// No previous key still published, and a complete signing key: where
    /// `next` and a fresh `switch` start.
    fn idle(admin: &TokenAdmin, label: &str, rt: &str) -> Result<(), RotationError> {
        if admin.has(rt)? != NONE {
            return Err(RotationError::RetiringExists(describe(rt)));
        }
        if admin.has(label)? != BOTH {
            return Err(HsmError::NoKey(label.to_owned()).into());
        }
        Ok(())
    }

    /// Step 1: create the next key in the token.
    pub fn add_next(admin: &TokenAdmin, label: &str) -> Result<PublicKey, RotationError> {
        let (nx, rt) = (next(label), retiring(label));
        if admin.has(&nx)? != NONE {
            return Err(RotationError::NextExists(describe(&nx)));
        }
        idle(admin, label, &rt)?;
        Ok(PublicKey::new(admin.generate(&nx)?, ""))
    }

    /// Step 2: `L.next` signs from now on; the previous key stays published
    /// as `L.retiring` until `now + lifetime`. Resumes an interrupted switch.
    pub fn switch(
        admin: &TokenAdmin,
        label: &str,
        now: u64,
        lifetime: u64,
    ) -> Result<SwitchRecord, RotationError> {
        let (nx, rt) = (next(label), retiring(label));
        let resuming = admin.has(&rt)? != NONE && admin.has(&nx)? != NONE;
        if !resuming {
            if admin.has(&nx)? != BOTH {
                return Err(RotationError::NoNext(describe(&nx)));
            }
            idle(admin, label, &rt)?;
            let r = SwitchRecord {
                switched_at: now,
                retire_after: now.saturating_add(lifetime),
            };
            admin.write_data(&record(label), &serde_json::to_vec(&r).unwrap_or_default())?;
        }
        // Renaming `L` away is complete once both halves are `L.retiring`;
        // only then does `L.next` take the label.
        if admin.has(&rt)? != BOTH {
            admin.relabel(label, &rt)?;
        }
        admin.relabel(&nx, label)?;
        if admin.has(label)? != BOTH || admin.has(&rt)? != BOTH {
            return Err(HsmError::Call(format!(
                "after the switch {label:?} and {rt:?} should each be a complete key pair; check the token's objects"
            ))
            .into());
        }
        last_switch(admin, label)?.ok_or_else(|| RotationError::NoRecord(describe(&record(label))))
    }

    /// Step 3: destroy `L.retiring`. Refused before its certificates can
    /// have expired (or with no switch record), unless `force`.
    pub fn retire(
        admin: &TokenAdmin,
        label: &str,
        now: u64,
        force: bool,
    ) -> Result<(), RotationError> {
        let rt = retiring(label);
        if admin.has(&rt)? == NONE {
            return Err(RotationError::NoRetiring(describe(&rt)));
        }
        if !force {
            match last_switch(admin, label)? {
                None => return Err(RotationError::NoRecord(describe(&record(label)))),
                Some(r) if now < r.retire_after => {
                    return Err(RotationError::TooEarly {
                        retire_after: r.retire_after,
                    });
                }
                Some(_) => {}
            }
        }
        admin.destroy(&rt)?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fp(k: &PublicKey) -> String {
        k.fingerprint(Default::default()).to_string()
    }

    #[test]
    fn the_whole_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("user_ca");
        let first = crate::keys::generate(&k, "ca").unwrap();
        let first_pub = PublicKey::new(first.public_key().clone(), "");
        assert_eq!(published(&k).unwrap().len(), 1);
        assert!(matches!(switch(&k, 0, 10), Err(RotationError::NoNext(_))));
        assert!(matches!(
            retire(&k, 0, false),
            Err(RotationError::NoRetiring(_))
        ));

        // next: published, not signing.
        let next = add_next(&k, "ca next").unwrap();
        assert!(matches!(
            add_next(&k, "again"),
            Err(RotationError::NextExists(_))
        ));
        let p = published(&k).unwrap();
        assert_eq!(
            p.iter().map(|p| p.state).collect::<Vec<_>>(),
            ["signing", "next"]
        );
        assert_eq!(fp(&p[0].key), fp(&first_pub));
        assert_eq!(fp(&p[1].key), fp(&next));
        let mode =
            std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(sibling(&k, ".next")).unwrap());
        assert_eq!(mode & 0o777, 0o600);

        // switch: the next key signs, the old one stays published.
        let rec = switch(&k, 1000, 3600).unwrap();
        assert_eq!(
            rec,
            SwitchRecord {
                switched_at: 1000,
                retire_after: 4600
            }
        );
        let p = published(&k).unwrap();
        assert_eq!(
            p.iter().map(|p| p.state).collect::<Vec<_>>(),
            ["signing", "retiring"]
        );
        assert_eq!(fp(&p[0].key), fp(&next));
        assert_eq!(fp(&p[1].key), fp(&first_pub));
        assert_eq!(
            fp(&PublicKey::new(load(&k).unwrap().public_key().clone(), "")),
            fp(&next)
        );
        assert!(matches!(
            add_next(&k, "x"),
            Err(RotationError::RetiringExists(_))
        ));

        // retire: not before the old certificates expired.
        assert!(matches!(
            retire(&k, 4599, false),
            Err(RotationError::TooEarly { retire_after: 4600 })
        ));
        retire(&k, 4600, false).unwrap();
        assert_eq!(published(&k).unwrap().len(), 1);

        // A retiring key whose switch record is gone: refused unless forced.
        add_next(&k, "third").unwrap();
        switch(&k, 5000, 10).unwrap();
        std::fs::remove_file(sibling(&k, ".rotation.json")).unwrap();
        assert!(matches!(
            retire(&k, 1_000_000, false),
            Err(RotationError::NoRecord(_))
        ));
        retire(&k, 1_000_000, true).unwrap();
        assert_eq!(published(&k).unwrap().len(), 1);
        assert!(!sibling(&k, ".retiring").exists());
    }

    #[test]
    fn an_interrupted_switch_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("host_ca");
        crate::keys::generate(&k, "ca").unwrap();
        let next = add_next(&k, "n").unwrap();
        // Crash after the old key moved away, before the next one moved in.
        std::fs::copy(sibling(&k, ".pub"), sibling(&k, ".retiring.pub")).unwrap();
        write_durably(
            &sibling(&k, ".rotation.json"),
            br#"{"switched_at":5,"retire_after":9}"#,
        )
        .unwrap();
        std::fs::rename(&k, sibling(&k, ".retiring")).unwrap();
        assert!(published(&k).is_err(), "the server would refuse to start");
        let rec = switch(&k, 7, 100).unwrap();
        assert_eq!(rec.retire_after, 9, "the original record stands");
        assert_eq!(fp(&published(&k).unwrap()[0].key), fp(&next));
    }
}
