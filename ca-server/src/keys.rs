//! CA key files: create them safely, load them only when they are safe.
//! Only this module reads CA private keys.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ca_core::CaSigner;
use rand_core::OsRng;
use ssh_key::{Algorithm, LineEnding, PrivateKey};

use crate::secret_file::{self, SecretFileError};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("CA key {0} does not exist; create keys with `jitssh-ca init --dir DIR`")]
    Missing(PathBuf),
    /// Symlink, permissions, not a file, unreadable.
    #[error(transparent)]
    File(SecretFileError),
    #[error("CA key {path} does not parse as an OpenSSH private key: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "CA key {0} is encrypted; jitssh-ca needs an unencrypted key file (protect it with file permissions) or an HSM"
    )]
    Encrypted(PathBuf),
    #[error(
        "CA key {path} is {algorithm}; jitssh-ca signs with Ed25519 keys (create one with `jitssh-ca init`)"
    )]
    Algorithm { path: PathBuf, algorithm: String },
    #[error(
        "refusing to overwrite existing key {0}; move it away first if you really want a new CA"
    )]
    Exists(PathBuf),
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("generating key failed: {0}")]
    Generate(String),
}

/// Create a new Ed25519 CA key at `path` (mode 0600, never overwriting) and
/// its public half at `path.pub`. Returns the signer.
pub fn generate(path: &Path, comment: &str) -> Result<CaSigner, KeyError> {
    generate_at(path, &path.with_extension("pub"), comment)
}

/// [`generate`] with an explicit path for the public half (rotation names
/// keys `user_ca.next` / `user_ca.next.pub`).
pub fn generate_at(path: &Path, pub_path: &Path, comment: &str) -> Result<CaSigner, KeyError> {
    let mut key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519)
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    key.set_comment(comment);
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    write_new(path, pem.as_bytes(), 0o600)?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    write_new(pub_path, format!("{public}\n").as_bytes(), 0o644)?;
    signer_from(&key, path)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists(path.to_owned()),
            _ => KeyError::Io {
                path: path.to_owned(),
                source,
            },
        })?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })
}

/// Load a CA key, refusing symlinks, group/other-readable files, encrypted
/// keys and anything but Ed25519.
pub fn load(path: &Path) -> Result<CaSigner, KeyError> {
    let bytes = secret_file::read(path, "CA key").map_err(|e| match e {
        SecretFileError::Missing { .. } => KeyError::Missing(path.to_owned()),
        e => KeyError::File(e),
    })?;
    let text = String::from_utf8(bytes).map_err(|_| KeyError::Parse {
        path: path.to_owned(),
        message: "not UTF-8 text".into(),
    })?;
    let key = PrivateKey::from_openssh(&text).map_err(|e| KeyError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if key.is_encrypted() {
        return Err(KeyError::Encrypted(path.to_owned()));
    }
    signer_from(&key, path)
}

fn signer_from(key: &PrivateKey, path: &Path) -> Result<CaSigner, KeyError> {
    match key.key_data().ed25519() {
        Some(kp) => Ok(CaSigner::new(ed25519_dalek::SigningKey::from_bytes(
            &kp.private.to_bytes(),
        ))),
        None => Err(KeyError::Algorithm {
            path: path.to_owned(),
            algorithm: key.algorithm().to_string(),
        }),
    }
}

/// A CA signing key: a file decoded once, or a key inside a PKCS#11 token.
// Two of these live per process and never move on the hot path; boxing the
// file key would add a pointer chase to every signature for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum CaKey {
    File(CaSigner),
    Pkcs11(std::sync::Arc<crate::hsm::Pkcs11Signer>),
}

impl CaKey {
    pub fn public_key(&self) -> &ssh_key::public::KeyData {
        match self {
            CaKey::File(s) => s.public_key(),
            CaKey::Pkcs11(s) => s.public_key(),
        }
    }

    /// The public key as an OpenSSH line.
    pub fn public_openssh(&self, comment: &str) -> String {
        ssh_key::PublicKey::new(self.public_key().clone(), comment)
            .to_openssh()
            .unwrap_or_default()
    }

    pub fn fingerprint(&self) -> String {
        self.public_key()
            .fingerprint(ssh_key::HashAlg::Sha256)
            .to_string()
    }

    /// Whether signing can fail for reasons outside this process (an HSM):
    /// such failures are "try again later" (503), never a fallback.
    pub fn is_external(&self) -> bool {
        matches!(self, CaKey::Pkcs11(_))
    }

    /// For `/readyz`: can this key sign right now?
    pub fn check(&self) -> Result<(), String> {
        match self {
            CaKey::File(_) => Ok(()),
            CaKey::Pkcs11(s) => s.check().map_err(|e| e.to_string()),
        }
    }
}

impl From<CaSigner> for CaKey {
    fn from(s: CaSigner) -> Self {
        CaKey::File(s)
    }
}

impl signature::Signer<ssh_key::Signature> for CaKey {
    fn try_sign(&self, msg: &[u8]) -> Result<ssh_key::Signature, signature::Error> {
        match self {
            CaKey::File(s) => s.try_sign(msg),
            CaKey::Pkcs11(s) => {
                let sig = s.sign_raw(msg).map_err(|e| {
                    tracing::error!(error = %e, "the HSM could not sign");
                    signature::Error::new()
                })?;
                ssh_key::Signature::new(ssh_key::Algorithm::Ed25519, sig)
                    .map_err(|_| signature::Error::new())
            }
        }
    }
}

impl From<&CaKey> for ssh_key::public::KeyData {
    fn from(k: &CaKey) -> Self {
        k.public_key().clone()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn generate_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("user_ca");
        let s = generate(&p, "test").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(load(&p).unwrap().fingerprint(), s.fingerprint());
        let pubtext = std::fs::read_to_string(p.with_extension("pub")).unwrap();
        assert!(pubtext.starts_with("ssh-ed25519 "));
        assert!(matches!(generate(&p, "again"), Err(KeyError::Exists(_))));
    }

    #[test]
    fn refuses_unsafe_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        generate(&p, "t").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            load(&p),
            Err(KeyError::File(SecretFileError::Permissions { .. }))
        ));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(matches!(
            load(&link),
            Err(KeyError::File(SecretFileError::Symlink { .. }))
        ));
        let junk = dir.path().join("junk");
        write_new(&junk, b"not a key", 0o600).unwrap();
        assert!(matches!(load(&junk), Err(KeyError::Parse { .. })));
        assert!(matches!(
            load(&dir.path().join("none")),
            Err(KeyError::Missing(_))
        ));
    }
}
