//! Keys and certificates: a fresh Ed25519 key in memory, checking what the CA
//! returned, recognising this CA's certificates, key files for `--write`, and
//! the `@cert-authority` lines of the managed known_hosts file.

use std::path::{Path, PathBuf};

use ssh_key::{Algorithm, Certificate, HashAlg, LineEnding, PrivateKey, PublicKey};

use crate::duration::local_time;
use crate::store::{StoreError, write_private};

/// The certificate the CA returned cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(
        "the CA returned something that is not an OpenSSH certificate ({0}); report this to the CA's operator"
    )]
    Parse(String),
    #[error(
        "the CA returned a certificate for another public key; report this to the CA's operator"
    )]
    WrongKey,
    #[error(
        "the certificate is not signed by the CA's published user CA key ({0}); report this to the CA's operator"
    )]
    WrongSigner(String),
    #[error(
        "the certificate is valid from {from} to {until}, but your clock says {now}: your clock is off. Sync it (e.g. `sudo timedatectl set-ntp true`) and run `jitssh login` again"
    )]
    ClockSkew {
        from: String,
        until: String,
        now: String,
    },
    #[error("cannot generate a key: {0}")]
    KeyGen(String),
}

/// A fresh Ed25519 key; it never touches the disk unless `--write` asks.
pub fn generate_key() -> Result<PrivateKey, CertError> {
    PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519)
        .map_err(|e| CertError::KeyGen(e.to_string()))
}

/// The OpenSSH public key line of `key`.
pub fn public_line(key: &PrivateKey) -> Result<String, CertError> {
    key.public_key()
        .to_openssh()
        .map_err(|e| CertError::KeyGen(e.to_string()))
}

/// Parse the user CA public key lines (unparseable ones are skipped).
pub fn parse_ca_keys(lines: &[String]) -> Vec<PublicKey> {
    lines
        .iter()
        .filter_map(|l| PublicKey::from_openssh(l.trim()).ok())
        .collect()
}

/// Whether `cert` was signed by one of `user_ca`.
pub fn signed_by(cert: &Certificate, user_ca: &[PublicKey]) -> bool {
    user_ca.iter().any(|k| k.key_data() == cert.signature_key())
}

/// Check the certificate the CA returned: it certifies our key, carries a
/// valid signature by the CA's user key, and its validity contains `now`.
pub fn check_issued(
    certificate: &str,
    key: &PrivateKey,
    user_ca: &[PublicKey],
    now: u64,
) -> Result<Certificate, CertError> {
    let cert = Certificate::from_openssh(certificate.trim())
        .map_err(|e| CertError::Parse(e.to_string()))?;
    if cert.public_key() != key.public_key().key_data() {
        return Err(CertError::WrongKey);
    }
    let fingerprints: Vec<_> = user_ca
        .iter()
        .map(|k| k.fingerprint(HashAlg::Sha256))
        .collect();
    // Signature and signer, checked at a time inside the validity window;
    // the window itself against our clock below, for a clearer message.
    cert.validate_at(cert.valid_after(), fingerprints.iter())
        .map_err(|e| CertError::WrongSigner(e.to_string()))?;
    if now < cert.valid_after() || now >= cert.valid_before() {
        return Err(CertError::ClockSkew {
            from: local_time(cert.valid_after(), now),
            until: local_time(cert.valid_before(), now),
            now: local_time(now, now),
        });
    }
    Ok(cert)
}

/// Write `key` and `cert` as `DIR/id_jitssh[_PROFILE]` and `...-cert.pub`, both 0600.
pub fn write_files(
    dir: &Path,
    profile: &str,
    key: &PrivateKey,
    cert: &Certificate,
) -> Result<(PathBuf, PathBuf), StoreError> {
    let key_path = crate::paths::Paths::key_file(dir, profile);
    let cert_path = crate::paths::Paths::cert_file(&key_path);
    let io = |path: &Path, e: ssh_key::Error| StoreError::Write {
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    };
    let key_text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| io(&key_path, e))?;
    let cert_text = cert.to_openssh().map_err(|e| io(&cert_path, e))?;
    write_private(&key_path, key_text.as_bytes())?;
    write_private(&cert_path, format!("{cert_text}\n").as_bytes())?;
    Ok((key_path, cert_path))
}

/// The comment that marks a known_hosts line as this profile's.
pub fn known_hosts_marker(profile: &str) -> String {
    format!("jitssh:{profile}")
}

/// `@cert-authority PATTERNS KEY jitssh:PROFILE` for one host CA key line.
pub fn known_hosts_line(host_ca: &str, patterns: &str, profile: &str) -> Option<String> {
    let key = PublicKey::from_openssh(host_ca.trim()).ok()?;
    let mut key = key;
    key.set_comment(known_hosts_marker(profile));
    let text = key.to_openssh().ok()?;
    // known_hosts separates patterns with commas; ssh_config with spaces.
    let patterns = patterns
        .split([',', ' '])
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(",");
    Some(format!("@cert-authority {patterns} {text}"))
}

/// `existing` with this profile's lines replaced by `lines` (other lines kept).
pub fn merge_known_hosts(existing: &str, profile: &str, lines: &[String]) -> String {
    let marker = format!(" {}", known_hosts_marker(profile));
    let mut out: Vec<&str> = existing
        .lines()
        .filter(|l| !l.trim_end().ends_with(&marker))
        .collect();
    out.extend(lines.iter().map(String::as_str));
    let mut text = out.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    text
}

/// Replace this profile's lines in the managed known_hosts file; an empty
/// result removes the file. Returns whether the file still exists.
pub fn update_known_hosts(
    path: &Path,
    profile: &str,
    lines: &[String],
) -> Result<bool, StoreError> {
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let merged = merge_known_hosts(&existing, profile, lines);
    if merged.is_empty() {
        crate::store::remove(path)?;
        return Ok(false);
    }
    if merged != existing {
        write_private(path, merged.as_bytes())?;
    }
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HOST_CA: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHq1/B1BMTxhtTbYDtMfAHd8zxjbfnBwaPFl4KIxAyY7 jitssh host CA";

    #[test]
    fn known_hosts_lines() {
        let line = known_hosts_line(HOST_CA, "*", "default").unwrap();
        assert_eq!(
            line,
            "@cert-authority * ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHq1/B1BMTxhtTbYDtMfAHd8zxjbfnBwaPFl4KIxAyY7 jitssh:default"
        );
        let line = known_hosts_line(HOST_CA, "*.prod !bastion", "prod").unwrap();
        assert!(
            line.starts_with("@cert-authority *.prod,!bastion ssh-ed25519 "),
            "{line}"
        );
        assert_eq!(known_hosts_line("not a key", "*", "p"), None);
    }

    #[test]
    fn known_hosts_merge_replaces_only_this_profile() {
        let existing = "github.com ssh-ed25519 AAAA\n@cert-authority * ssh-ed25519 OLD jitssh:default\n@cert-authority * ssh-ed25519 P jitssh:prod\n";
        let merged = merge_known_hosts(
            existing,
            "default",
            &["@cert-authority * ssh-ed25519 NEW jitssh:default".into()],
        );
        assert_eq!(
            merged,
            "github.com ssh-ed25519 AAAA\n@cert-authority * ssh-ed25519 P jitssh:prod\n@cert-authority * ssh-ed25519 NEW jitssh:default\n"
        );
        assert_eq!(
            merge_known_hosts("@cert-authority * k jitssh:default\n", "default", &[]),
            ""
        );
    }

    #[test]
    fn known_hosts_file_is_removed_when_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("ssh/jitssh/known_hosts");
        let line = known_hosts_line(HOST_CA, "*", "default").unwrap();
        assert!(update_known_hosts(&path, "default", std::slice::from_ref(&line)).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{line}\n"));
        assert!(!update_known_hosts(&path, "default", &[]).unwrap());
        assert!(!path.exists());
    }

    #[test]
    fn issued_certificates_are_checked() {
        use ssh_key::certificate::{Builder, CertType};
        let ca = generate_key().unwrap();
        let ours = generate_key().unwrap();
        let other = generate_key().unwrap();
        let sign = |subject: &PrivateKey, signer: &PrivateKey| {
            let mut b = Builder::new_with_random_nonce(
                &mut rand_core::OsRng,
                subject.public_key().key_data().clone(),
                1000,
                2000,
            )
            .unwrap();
            b.cert_type(CertType::User).unwrap();
            b.valid_principal("ann").unwrap();
            b.sign(signer).unwrap().to_openssh().unwrap()
        };
        let user_ca = vec![ca.public_key().clone()];
        let good = sign(&ours, &ca);
        let cert = check_issued(&good, &ours, &user_ca, 1500).unwrap();
        assert!(signed_by(&cert, &user_ca));
        assert!(!signed_by(&cert, &[other.public_key().clone()]));
        assert!(matches!(
            check_issued(&good, &other, &user_ca, 1500),
            Err(CertError::WrongKey)
        ));
        assert!(matches!(
            check_issued(&sign(&ours, &other), &ours, &user_ca, 1500),
            Err(CertError::WrongSigner(_))
        ));
        let skew = check_issued(&good, &ours, &user_ca, 2500).unwrap_err();
        assert!(skew.to_string().contains("your clock is off"), "{skew}");
        assert!(matches!(
            check_issued("garbage", &ours, &user_ca, 1500),
            Err(CertError::Parse(_))
        ));
    }

    #[test]
    fn files_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let ca = generate_key().unwrap();
        let key = generate_key().unwrap();
        let mut b = ssh_key::certificate::Builder::new_with_random_nonce(
            &mut rand_core::OsRng,
            key.public_key().key_data().clone(),
            0,
            4_000_000_000,
        )
        .unwrap();
        b.valid_principal("ann").unwrap();
        let cert = b.sign(&ca).unwrap();
        let (k, c) = write_files(&tmp.path().join("jitssh"), "default", &key, &cert).unwrap();
        for p in [&k, &c] {
            assert_eq!(
                std::fs::metadata(p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert!(c.to_str().unwrap().ends_with("jitssh/id_jitssh-cert.pub"));
        assert_eq!(
            PrivateKey::read_openssh_file(&k).unwrap().public_key(),
            key.public_key()
        );
    }
}
