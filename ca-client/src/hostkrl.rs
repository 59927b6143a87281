//! The local copy of the CA's host KRL (`GET /v1/krl/hosts`), which ssh
//! reads through `RevokedHostKeys` to refuse revoked host certificates and
//! keys.
//!
//! ssh refuses *every* host when the `RevokedHostKeys` file cannot be read,
//! so the file must always exist and hold a valid KRL: a fetched list is
//! checked before it replaces the old one (atomically), the last good copy
//! is kept when the CA cannot be reached, and where there has never been
//! one an empty, valid KRL stands in until the first fetch.

use std::path::{Path, PathBuf};

use crate::ca::{CaClient, CaError};
use crate::host::check_krl;
use crate::paths::Paths;
use crate::store::{StoreError, write_private};

/// The KRL file of `profile`, under `~/.ssh/jitssh/`.
pub fn path(paths: &Paths, profile: &str) -> PathBuf {
    if profile == crate::profile::DEFAULT_PROFILE {
        paths.ssh_dir.join("revoked_hosts.krl")
    } else {
        paths.ssh_dir.join(format!("revoked_hosts_{profile}.krl"))
    }
}

/// What a refresh did.
#[derive(Debug, PartialEq, Eq)]
pub enum Refreshed {
    /// A new list was written (its KRL version).
    Written(u64),
    /// The file already held exactly this list.
    Unchanged,
}

/// Why the local copy was not refreshed (the old one, or an empty list, is
/// still in place).
#[derive(Debug, thiserror::Error)]
pub enum KrlError {
    #[error("cannot fetch the host revocation list: {0}")]
    Fetch(#[from] CaError),
    #[error("the CA's host revocation list was refused: {0}")]
    Invalid(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Fetch the CA's host KRL and replace `path` with it if it is a valid KRL
/// and differs. On any failure `path` is left as it was, then made to exist
/// (see [`ensure_exists`]), and the error says why it was not refreshed.
pub async fn refresh(ca: &CaClient, path: &Path) -> Result<Refreshed, KrlError> {
    let fetched = match ca.host_krl().await {
        Ok(body) => check_krl(&body)
            .map(|v| (v, body))
            .map_err(KrlError::Invalid),
        Err(e) => Err(KrlError::Fetch(e)),
    };
    let (version, body) = match fetched {
        Ok(got) => got,
        Err(e) => {
            ensure_exists(path)?;
            return Err(e);
        }
    };
    if std::fs::read(path).is_ok_and(|old| old == body) {
        return Ok(Refreshed::Unchanged);
    }
    write_private(path, &body)?;
    Ok(Refreshed::Written(version))
}

/// Make sure `path` holds a readable KRL: keep it if it does, else write an
/// empty, valid one (revoking nothing) so that ssh can start.
pub fn ensure_exists(path: &Path) -> Result<(), StoreError> {
    if std::fs::read(path).is_ok_and(|b| check_krl(&b).is_ok()) {
        return Ok(());
    }
    write_private(path, &empty())
}

/// A valid KRL that revokes nothing.
fn empty() -> Vec<u8> {
    ca_core::krl::write_krl(&ca_core::krl::KrlSpec {
        comment: "jitssh: no host revocation list fetched yet".into(),
        ..Default::default()
    })
    .unwrap_or_else(|_| unreachable!("an empty KRL with a printable comment always encodes"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn per_profile_files() {
        let p = Paths::from_vars(|n| (n == "HOME").then(|| "/home/ann".into())).unwrap();
        assert_eq!(
            path(&p, "default"),
            Path::new("/home/ann/.ssh/jitssh/revoked_hosts.krl")
        );
        assert_eq!(
            path(&p, "prod"),
            Path::new("/home/ann/.ssh/jitssh/revoked_hosts_prod.krl")
        );
    }

    #[test]
    fn an_empty_valid_list_stands_in_and_a_good_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sub/revoked_hosts.krl");
        ensure_exists(&f).unwrap();
        let empty = std::fs::read(&f).unwrap();
        assert_eq!(check_krl(&empty), Ok(0));
        // A real list is kept as it is.
        let mut real = empty.clone();
        real[19] = 7; // KRL version 7
        std::fs::write(&f, &real).unwrap();
        ensure_exists(&f).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), real);
        // Garbage (say, a truncated file) is replaced by a valid empty list.
        std::fs::write(&f, b"SSHKRL").unwrap();
        ensure_exists(&f).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), empty);
    }

    #[tokio::test]
    async fn an_unreachable_ca_keeps_the_last_good_copy() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("revoked_hosts.krl");
        let mut good = empty();
        good[19] = 9;
        std::fs::write(&f, &good).unwrap();
        // Nothing listens on port 9 of loopback (discard; refused here).
        let ca = CaClient::new(
            "http://127.0.0.1:9".parse().unwrap(),
            reqwest::Client::new(),
            std::time::Duration::from_secs(2),
        );
        assert!(matches!(refresh(&ca, &f).await, Err(KrlError::Fetch(_))));
        assert_eq!(std::fs::read(&f).unwrap(), good);
        // With no copy at all, an empty valid one is written.
        let g = dir.path().join("none.krl");
        assert!(refresh(&ca, &g).await.is_err());
        assert_eq!(check_krl(&std::fs::read(&g).unwrap()), Ok(0));
    }
}
