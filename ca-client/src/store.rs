//! Private files: the cached refresh token and the record of the last login,
//! written atomically as 0600 files in 0700 directories.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A private file could not be written, read or removed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot write {}: {source}; check that its directory is yours and writable", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot remove {}: {source}; remove it by hand", path.display())]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Create `dir` (and its parents) with mode 0700 for the new ones.
pub fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StoreError::Write {
            path: dir.to_owned(),
            source,
        })
}

/// Write `bytes` to `path` as a 0600 file, atomically: a reader sees the old
/// content or the new, and the file is never readable by others, not even
/// briefly.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let err = |source| StoreError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// Read a file that must be private; `Ok(None)` when it does not exist or is
/// readable by others (then it is not trusted, and a warning says why).
pub fn read_private(path: &Path) -> Option<Vec<u8>> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.permissions().mode() & 0o077 != 0 {
        eprintln!(
            "warning: ignoring {}: it must be a regular file with mode 0600",
            path.display()
        );
        return None;
    }
    std::fs::read(path).ok()
}

/// Remove a file; a missing file is fine. Returns whether it existed.
pub fn remove(path: &Path) -> Result<bool, StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(StoreError::Remove {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Remove `dir` if it is empty (and then its parents up to, not including, `stop`).
pub fn remove_empty_dirs(dir: &Path, stop: &Path) {
    let mut d = Some(dir);
    while let Some(current) = d {
        if current == stop || !current.starts_with(stop) || std::fs::remove_dir(current).is_err() {
            break;
        }
        d = current.parent();
    }
}

/// The cached refresh token of one profile (`token.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenCache {
    /// The provider and client it belongs to: a cache for another is ignored.
    pub issuer: String,
    pub client_id: String,
    pub refresh_token: String,
    /// Unix time it was saved.
    pub saved_at: u64,
}

/// What the last login of a profile did (`session.json`): enough for
/// `status`, `logout` and `ensure` to work without asking the CA.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    /// The CA URL.
    pub ca: String,
    /// The CA's user CA public keys (OpenSSH lines): certificates signed by
    /// one of them are this CA's.
    pub user_ca: Vec<String>,
    /// What was asked for, so `ensure` asks for the same again.
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
    /// Key and certificate files written by `--write` (or for want of an agent).
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// The directory they were written to; `ensure` writes there again.
    #[serde(default)]
    pub write_dir: Option<PathBuf>,
}

/// The two files of a profile's state directory.
#[derive(Clone, Debug)]
pub struct ProfileStore {
    pub dir: PathBuf,
}

impl ProfileStore {
    pub fn new(dir: PathBuf) -> ProfileStore {
        ProfileStore { dir }
    }

    pub fn token_path(&self) -> PathBuf {
        self.dir.join("token.json")
    }

    pub fn session_path(&self) -> PathBuf {
        self.dir.join("session.json")
    }

    /// The cached refresh token for `issuer` and `client_id`, if any.
    pub fn load_token(&self, issuer: &str, client_id: &str) -> Option<TokenCache> {
        let bytes = read_private(&self.token_path())?;
        let cache: TokenCache = serde_json::from_slice(&bytes).ok()?;
        (cache.issuer == issuer && cache.client_id == client_id).then_some(cache)
    }

    pub fn save_token(&self, cache: &TokenCache) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(cache).unwrap_or_default();
        write_private(&self.token_path(), &json)
    }

    pub fn forget_token(&self) -> Result<bool, StoreError> {
        remove(&self.token_path())
    }

    pub fn load_session(&self) -> Option<Session> {
        let bytes = read_private(&self.session_path())?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn save_session(&self, session: &Session) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(session).unwrap_or_default();
        write_private(&self.session_path(), &json)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn token_cache_is_private_and_scoped_to_its_provider() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ProfileStore::new(tmp.path().join("state/jitssh/default"));
        let cache = TokenCache {
            issuer: "https://idp.example.com".into(),
            client_id: "jitssh".into(),
            refresh_token: "r1".into(),
            saved_at: 1,
        };
        store.save_token(&cache).unwrap();
        assert_eq!(mode(&store.token_path()), 0o600);
        assert_eq!(mode(&store.dir), 0o700);
        assert_eq!(mode(&tmp.path().join("state")), 0o700);
        assert_eq!(
            store.load_token("https://idp.example.com", "jitssh"),
            Some(cache.clone())
        );
        assert_eq!(
            store.load_token("https://other.example.com", "jitssh"),
            None
        );
        assert_eq!(store.load_token("https://idp.example.com", "other"), None);
        // Overwriting keeps the mode and leaves no temporary file behind.
        store
            .save_token(&TokenCache {
                refresh_token: "r2".into(),
                ..cache
            })
            .unwrap();
        assert_eq!(mode(&store.token_path()), 0o600);
        assert_eq!(std::fs::read_dir(&store.dir).unwrap().count(), 1);
        assert!(store.forget_token().unwrap());
        assert!(!store.forget_token().unwrap());
    }

    #[test]
    fn a_readable_cache_is_not_trusted() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ProfileStore::new(tmp.path().to_owned());
        store
            .save_token(&TokenCache {
                issuer: "i".into(),
                client_id: "c".into(),
                refresh_token: "r".into(),
                saved_at: 0,
            })
            .unwrap();
        std::fs::set_permissions(store.token_path(), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        assert_eq!(store.load_token("i", "c"), None);
    }

    #[test]
    fn empty_dirs_are_removed_up_to_the_stop() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b/c");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(tmp.path().join("a/keep"), "").unwrap();
        remove_empty_dirs(&deep, tmp.path());
        assert!(!tmp.path().join("a/b").exists());
        assert!(tmp.path().join("a").exists());
    }
}
