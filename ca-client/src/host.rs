//! `jitssh host enroll|renew|sync`: the server side of jitssh, run as root on
//! bastions and targets (by hand once, then from systemd timers).
//!
//! - `enroll` sends the host's existing public key with a one-time join
//!   token, checks that what came back is a host certificate for that key
//!   signed by the CA's published host CA key, and writes it beside the key
//!   (`KEY-cert.pub`) plus an sshd drop-in with `HostCertificate`.
//! - `renew` proves possession of the host key (an SSHSIG over a fresh
//!   server challenge; Ed25519 host keys only) and presents the current
//!   certificate; no token is needed while the certificate is valid.
//! - `sync` fetches the user CA keys and the KRL for sshd's
//!   `TrustedUserCAKeys` and `RevokedKeys`, checks them, and replaces the
//!   files only with something valid: an unreachable CA or a garbled answer
//!   leaves the last good copies in place (sshd refuses every key when its
//!   `RevokedKeys` file is missing or unreadable).
//!
//! Every file is written atomically: a temporary file in the same
//! directory, fsync, rename, fsync of the directory. These commands need no
//! HOME and no profile; the CA comes from `--ca` or `JITSSH_CA`.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ca_core::host::RENEW_NAMESPACE;
use ca_core::wire::{
    ErrorBody, HostCertRequest, HostCertResponse, HostChallenge, HostRenewRequest,
};
use clap::{Args, Subcommand};
use reqwest::Url;
use ssh_key::certificate::CertType;
use ssh_key::{Algorithm, Certificate, HashAlg, LineEnding, PrivateKey, PublicKey};

use crate::ca::{CaClient, CaError, transport_detail};
use crate::duration::unix_now;

/// Where Debian and most distributions keep sshd's files.
pub const DEFAULT_SSH_DIR: &str = "/etc/ssh";
/// The drop-in `enroll` writes (Debian's sshd_config includes sshd_config.d/*.conf).
pub const DEFAULT_DROPIN: &str = "/etc/ssh/sshd_config.d/jitssh-host.conf";
/// What `sync` writes into `--dir`.
pub const TRUSTED_USER_CA_KEYS: &str = "trusted_user_ca_keys";
pub const REVOKED_KEYS: &str = "revoked_keys";
/// The first bytes of every OpenSSH KRL (PROTOCOL.krl).
pub const KRL_MAGIC: &[u8; 8] = b"SSHKRL\n\0";

/// `jitssh host ...` (clap). Defined here rather than in `cli.rs` so the
/// host commands stay in one module.
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Enrol this host: send its public host key with a one-time join token, write the host certificate beside the key and an sshd drop-in with HostCertificate.
    Enroll(EnrollArgs),
    /// Renew this host's certificate before it expires, proving possession of the host key (no token needed).
    Renew(RenewArgs),
    /// Fetch the user CA keys and the revocation list into trusted_user_ca_keys and revoked_keys, keeping the last good copies on failure.
    Sync(SyncArgs),
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// One-time join token from `jitssh-ca host token create`.
    #[arg(
        long,
        env = "JITSSH_JOIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: String,
    /// The host's public key; the certificate is written beside it as KEY-cert.pub.
    #[arg(
        long,
        value_name = "PUBLIC_KEY",
        default_value = "/etc/ssh/ssh_host_ed25519_key.pub"
    )]
    pub key: PathBuf,
    /// Certify only these of the token's names (repeatable) [default: all of them].
    #[arg(long = "hostname", value_name = "H")]
    pub hostnames: Vec<String>,
    /// The sshd drop-in to write with the HostCertificate line.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_DROPIN)]
    pub sshd_dropin: PathBuf,
}

#[derive(Debug, Args)]
pub struct RenewArgs {
    /// The host's private key (Ed25519); its certificate is KEY-cert.pub.
    #[arg(
        long,
        value_name = "PRIVATE_KEY",
        default_value = "/etc/ssh/ssh_host_ed25519_key"
    )]
    pub key: PathBuf,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Directory to write trusted_user_ca_keys and revoked_keys into.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_SSH_DIR)]
    pub dir: PathBuf,
}

/// A host command failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("say which CA to use: --ca https://ca.example.com (or set JITSSH_CA)")]
    NoCa,
    #[error(transparent)]
    Url(#[from] crate::profile::ProfileError),
    #[error("cannot set up HTTPS: {0}")]
    Http(String),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("cannot use the host key {}: {detail}; point --key at the host's key", path.display())]
    Key { path: PathBuf, detail: String },
    #[error(
        "cannot read the current host certificate {}: {detail}; enrol first with `jitssh host enroll --token TOKEN`",
        path.display()
    )]
    CurrentCert { path: PathBuf, detail: String },
    #[error(
        "the CA returned a certificate this host cannot use ({0}); nothing was written. Report this to the CA operator"
    )]
    BadCert(String),
    #[error("cannot write {}: {source}; run as root (or check the directory)", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot sign the renewal challenge: {0}")]
    Sign(String),
    #[error("{}", .0.join("\n"))]
    Sync(Vec<String>),
}

/// Run one `jitssh host` command against the CA at `ca`.
pub async fn run(ca: Option<&str>, command: HostCommand) -> Result<ExitCode, HostError> {
    let url = crate::profile::parse_ca_url(ca.filter(|c| !c.is_empty()).ok_or(HostError::NoCa)?)?;
    let http = crate::http_client().map_err(|e| HostError::Http(e.to_string()))?;
    let client = HostClient { url, http };
    match command {
        HostCommand::Enroll(a) => enroll(&client, &a).await,
        HostCommand::Renew(a) => renew(&client, &a).await,
        HostCommand::Sync(a) => sync(&client, &a).await,
    }
    .map(|()| ExitCode::SUCCESS)
}

/// The few CA endpoints a host uses.
struct HostClient {
    url: Url,
    http: reqwest::Client,
}

impl HostClient {
    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url.as_str().trim_end_matches('/'))
    }

    fn base(&self) -> String {
        self.url.as_str().trim_end_matches('/').to_owned()
    }

    fn transport(&self, e: &reqwest::Error) -> CaError {
        if e.is_timeout() {
            return CaError::Timeout {
                url: self.base(),
                secs: crate::CA_TIMEOUT.as_secs(),
            };
        }
        CaError::Unreachable {
            url: self.base(),
            detail: transport_detail(e),
        }
    }

    /// The body of a successful answer, or the CA's error.
    async fn bytes(&self, req: reqwest::RequestBuilder, path: &str) -> Result<Vec<u8>, CaError> {
        let resp = req.send().await.map_err(|e| self.transport(&e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| self.transport(&e))?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        Err(match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(ErrorBody { error }) => CaError::Api {
                status: status.as_u16(),
                code: error.code,
                message: error.message,
                reasons: error.reasons,
            },
            Err(_) => CaError::BadResponse {
                url: self.endpoint(path),
                detail: format!("HTTP {status} without a jitssh error body"),
            },
        })
    }

    async fn get(&self, path: &str) -> Result<Vec<u8>, CaError> {
        self.bytes(self.http.get(self.endpoint(path)), path).await
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, CaError> {
        let bytes = self
            .bytes(self.http.post(self.endpoint(path)).json(body), path)
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| CaError::BadResponse {
            url: self.endpoint(path),
            detail: format!("the body is not the expected JSON: {e}"),
        })
    }

    /// The CA's published host CA keys (`GET /v1/ca`).
    async fn host_ca_keys(&self) -> Result<Vec<PublicKey>, CaError> {
        let ca = CaClient::new(self.url.clone(), self.http.clone(), crate::CA_TIMEOUT);
        Ok(crate::certs::parse_ca_keys(&ca.keys().await?.value.host_ca))
    }
}

async fn enroll(client: &HostClient, a: &EnrollArgs) -> Result<(), HostError> {
    let key = PublicKey::read_openssh_file(&a.key).map_err(|e| HostError::Key {
        path: a.key.clone(),
        detail: e.to_string(),
    })?;
    let public_key = key.to_openssh().map_err(|e| HostError::Key {
        path: a.key.clone(),
        detail: e.to_string(),
    })?;
    let cert_path = cert_path_for_public(&a.key);
    let request = HostCertRequest {
        token: a.token.trim().to_owned(),
        public_key,
        hostnames: (!a.hostnames.is_empty()).then(|| a.hostnames.clone()),
    };
    let issued: HostCertResponse = client.post("/v1/certs/host", &request).await?;
    let host_ca = client.host_ca_keys().await?;
    let cert = check_host_cert(&issued.certificate, &key, &host_ca, unix_now())?;
    write_cert(&cert_path, &cert)?;
    let dropin = merge_dropin(
        &std::fs::read_to_string(&a.sshd_dropin).unwrap_or_default(),
        &cert_path,
    );
    write_atomic(&a.sshd_dropin, dropin.as_bytes(), 0o644)?;

    println!(
        "Host certificate for {} (serial {}), valid until {}: {}",
        cert.valid_principals().join(", "),
        cert.serial(),
        utc(cert.valid_before()),
        cert_path.display()
    );
    println!(
        "sshd drop-in {}: HostCertificate {}",
        a.sshd_dropin.display(),
        cert_path.display()
    );
    println!(
        "Reload sshd to present it: `sshd -t && systemctl reload ssh` (the unit is `sshd` on some systems)."
    );
    println!(
        "Renew it before it expires with `jitssh host renew --ca {}` (deploy/systemd/jitssh-host-renew.timer does it daily).",
        client.base()
    );
    Ok(())
}

async fn renew(client: &HostClient, a: &RenewArgs) -> Result<(), HostError> {
    let key = PrivateKey::read_openssh_file(&a.key).map_err(|e| HostError::Key {
        path: a.key.clone(),
        detail: e.to_string(),
    })?;
    if key.is_encrypted() {
        return Err(HostError::Key {
            path: a.key.clone(),
            detail: "it is passphrase-protected; host keys are not".into(),
        });
    }
    if key.algorithm() != Algorithm::Ed25519 {
        return Err(HostError::Key {
            path: a.key.clone(),
            detail: format!(
                "renewal proves possession with Ed25519 host keys only, and this is {}; renew other keys with a new join token (`jitssh host enroll`)",
                key.algorithm().as_str()
            ),
        });
    }
    let cert_path = cert_path_for_private(&a.key);
    let current = std::fs::read_to_string(&cert_path).map_err(|e| HostError::CurrentCert {
        path: cert_path.clone(),
        detail: e.to_string(),
    })?;
    let parsed = Certificate::from_openssh(current.trim()).map_err(|e| HostError::CurrentCert {
        path: cert_path.clone(),
        detail: e.to_string(),
    })?;
    if parsed.public_key() != key.public_key().key_data() {
        return Err(HostError::CurrentCert {
            path: cert_path,
            detail: format!("it certifies another key than {}", a.key.display()),
        });
    }

    let challenge: HostChallenge = client
        .post("/v1/certs/host/challenge", &serde_json::json!({}))
        .await?;
    let signature = key
        .sign(
            RENEW_NAMESPACE,
            HashAlg::Sha512,
            challenge.challenge.as_bytes(),
        )
        .and_then(|sig| sig.to_pem(LineEnding::LF))
        .map_err(|e| HostError::Sign(e.to_string()))?;
    let renewed: HostCertResponse = client
        .post(
            "/v1/certs/host/renew",
            &HostRenewRequest {
                certificate: current.trim().to_owned(),
                challenge: challenge.challenge,
                signature,
            },
        )
        .await?;
    let host_ca = client.host_ca_keys().await?;
    let cert = check_host_cert(&renewed.certificate, key.public_key(), &host_ca, unix_now())?;
    write_cert(&cert_path, &cert)?;
    println!(
        "Renewed the host certificate for {} (serial {}), valid until {}: {}",
        cert.valid_principals().join(", "),
        cert.serial(),
        utc(cert.valid_before()),
        cert_path.display()
    );
    println!("Reload sshd to present it: `systemctl reload ssh` (or `sshd`).");
    Ok(())
}

async fn sync(client: &HostClient, a: &SyncArgs) -> Result<(), HostError> {
    let mut failures = Vec::new();
    let ca_path = a.dir.join(TRUSTED_USER_CA_KEYS);
    match client.get("/v1/ca/user.pub").await {
        Ok(body) => match check_user_ca_keys(&body) {
            Ok(count) => match replace_if_changed(&ca_path, &body)? {
                true => println!("Wrote {} ({count} user CA key(s)).", ca_path.display()),
                false => println!("{} is up to date.", ca_path.display()),
            },
            Err(why) => failures.push(kept(&ca_path, &why)),
        },
        Err(e) => failures.push(kept(&ca_path, &e.to_string())),
    }
    let krl_path = a.dir.join(REVOKED_KEYS);
    match client.get("/v1/krl").await {
        Ok(body) => match check_krl(&body) {
            Ok(version) => match replace_if_changed(&krl_path, &body)? {
                true => println!(
                    "Wrote {} (KRL version {version}, {} bytes).",
                    krl_path.display(),
                    body.len()
                ),
                false => println!("{} is up to date.", krl_path.display()),
            },
            Err(why) => failures.push(kept(&krl_path, &why)),
        },
        Err(e) => failures.push(kept(&krl_path, &e.to_string())),
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(HostError::Sync(failures))
    }
}

/// The message for a file `sync` left alone.
fn kept(path: &Path, why: &str) -> String {
    let state = if path.exists() {
        "kept the last good copy"
    } else {
        "it does not exist yet, so sshd refuses certificates until a sync succeeds"
    };
    format!("{}: not updated ({why}); {state}", path.display())
}

/// The number of keys if `body` is a `TrustedUserCAKeys` file sshd can use:
/// UTF-8, at least one key, every non-comment line an OpenSSH public key.
pub fn check_user_ca_keys(body: &[u8]) -> Result<usize, String> {
    let text = std::str::from_utf8(body)
        .map_err(|_| "the CA sent user CA keys that are not text".to_owned())?;
    let mut count = 0;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        PublicKey::from_openssh(line).map_err(|e| {
            format!(
                "the CA sent a user CA key line that does not parse ({e}): {:?}",
                line.chars().take(60).collect::<String>()
            )
        })?;
        count += 1;
    }
    if count == 0 {
        return Err("the CA sent no user CA key".into());
    }
    Ok(count)
}

/// The KRL version if `body` looks like an OpenSSH KRL: the magic, format
/// version 1, and the rest of the fixed header.
pub fn check_krl(body: &[u8]) -> Result<u64, String> {
    // magic, u32 format version, u64 KRL version, u64 date, u64 flags,
    // string reserved, string comment: 44 bytes at least.
    if body.len() < 44 || !body.starts_with(KRL_MAGIC) {
        return Err("the CA sent something that is not an OpenSSH KRL (no SSHKRL header)".into());
    }
    let format = u32::from_be_bytes([body[8], body[9], body[10], body[11]]);
    if format != 1 {
        return Err(format!(
            "the CA sent a KRL of unknown format version {format}"
        ));
    }
    let mut version = [0u8; 8];
    version.copy_from_slice(&body[12..20]);
    Ok(u64::from_be_bytes(version))
}

/// Check what the CA returned: a host certificate, for `key`, signed by one
/// of the CA's published host CA keys, naming at least one host.
pub fn check_host_cert(
    line: &str,
    key: &PublicKey,
    host_ca: &[PublicKey],
    now: u64,
) -> Result<Certificate, HostError> {
    let cert = Certificate::from_openssh(line.trim())
        .map_err(|e| HostError::BadCert(format!("not an OpenSSH certificate: {e}")))?;
    if cert.cert_type() != CertType::Host {
        return Err(HostError::BadCert("it is not a host certificate".into()));
    }
    if cert.public_key() != key.key_data() {
        return Err(HostError::BadCert("it certifies another key".into()));
    }
    if cert.valid_principals().is_empty() {
        return Err(HostError::BadCert("it names no host".into()));
    }
    let fingerprints: Vec<_> = host_ca
        .iter()
        .map(|k| k.fingerprint(HashAlg::Sha256))
        .collect();
    cert.validate_at(cert.valid_after(), fingerprints.iter())
        .map_err(|e| {
            HostError::BadCert(format!("it is not signed by the CA's host CA key ({e})"))
        })?;
    if now >= cert.valid_before() {
        return Err(HostError::BadCert(
            "it has already expired; check this host's clock".into(),
        ));
    }
    Ok(cert)
}

/// `/etc/ssh/ssh_host_ed25519_key.pub` → `/etc/ssh/ssh_host_ed25519_key-cert.pub`.
pub fn cert_path_for_public(public: &Path) -> PathBuf {
    let text = public.as_os_str().to_string_lossy();
    let base = text.strip_suffix(".pub").unwrap_or(&text);
    PathBuf::from(format!("{base}-cert.pub"))
}

/// `/etc/ssh/ssh_host_ed25519_key` → `/etc/ssh/ssh_host_ed25519_key-cert.pub`.
pub fn cert_path_for_private(private: &Path) -> PathBuf {
    let mut name = private.as_os_str().to_owned();
    name.push("-cert.pub");
    PathBuf::from(name)
}

/// The drop-in with a `HostCertificate` line for `cert`, keeping the lines
/// for other host keys' certificates that an earlier enrolment wrote.
pub fn merge_dropin(existing: &str, cert: &Path) -> String {
    let ours = format!("HostCertificate {}", cert.display());
    let mut lines: Vec<String> = existing
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("HostCertificate ") && *l != ours)
        .map(str::to_owned)
        .collect();
    lines.push(ours);
    format!(
        "# Written by `jitssh host enroll`: present the host certificate(s) signed by\n\
         # the jitssh host CA. Each certified private key must be one of sshd's HostKeys\n\
         # (the default keys in /etc/ssh are). Reload sshd after a change.\n{}\n",
        lines.join("\n")
    )
}

fn write_cert(path: &Path, cert: &Certificate) -> Result<(), HostError> {
    let text = cert
        .to_openssh()
        .map_err(|e| HostError::BadCert(e.to_string()))?;
    write_atomic(path, format!("{text}\n").as_bytes(), 0o644)
}

/// Replace `path` with `bytes` unless it already holds exactly that.
/// Returns whether it wrote.
fn replace_if_changed(path: &Path, bytes: &[u8]) -> Result<bool, HostError> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    write_atomic(path, bytes, 0o644)?;
    Ok(true)
}

/// Write `bytes` to `path` atomically with `mode`: a reader (sshd) sees the
/// old file or the new one, never a half-written one, even across a crash.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), HostError> {
    let err = |source| HostError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(err)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{}.jitssh-tmp{}",
        name.as_deref().unwrap_or("file"),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode; sshd's files are world-readable.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// A Unix time as `2026-03-01 14:05 UTC` (hosts log in UTC).
fn utc(t: u64) -> String {
    i64::try_from(t)
        .ok()
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| format!("@{t}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn certificate_paths_sit_beside_the_key() {
        assert_eq!(
            cert_path_for_public(Path::new("/etc/ssh/ssh_host_ed25519_key.pub")),
            Path::new("/etc/ssh/ssh_host_ed25519_key-cert.pub")
        );
        assert_eq!(
            cert_path_for_private(Path::new("/etc/ssh/ssh_host_ed25519_key")),
            Path::new("/etc/ssh/ssh_host_ed25519_key-cert.pub")
        );
        assert_eq!(
            cert_path_for_public(Path::new("k")),
            Path::new("k-cert.pub")
        );
    }

    #[test]
    fn dropin_keeps_other_certificates_once() {
        let a = Path::new("/etc/ssh/ssh_host_ed25519_key-cert.pub");
        let b = Path::new("/etc/ssh/ssh_host_ecdsa_key-cert.pub");
        let first = merge_dropin("", a);
        assert!(first.ends_with(&format!("\nHostCertificate {}\n", a.display())));
        let both = merge_dropin(&first, b);
        let again = merge_dropin(&both, a);
        let lines: Vec<&str> = again
            .lines()
            .filter(|l| l.starts_with("HostCertificate"))
            .collect();
        assert_eq!(
            lines,
            [
                format!("HostCertificate {}", b.display()),
                format!("HostCertificate {}", a.display())
            ]
        );
        assert!(
            again
                .lines()
                .all(|l| l.is_empty() || l.starts_with('#') || l.starts_with("HostCertificate "))
        );
    }

    #[test]
    fn user_ca_keys_must_parse() {
        let key = PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519).unwrap();
        let line = key.public_key().to_openssh().unwrap();
        assert_eq!(check_user_ca_keys(format!("{line}\n").as_bytes()), Ok(1));
        assert_eq!(
            check_user_ca_keys(format!("# comment\n{line}\n\n{line}\n").as_bytes()),
            Ok(2)
        );
        for bad in [
            &b""[..],
            b"\n# only a comment\n",
            b"<html>502 Bad Gateway</html>",
            b"\xff\xfe",
        ] {
            assert!(check_user_ca_keys(bad).is_err(), "{bad:?}");
        }
        assert!(check_user_ca_keys(format!("{line}\nssh-ed25519 AAAA\n").as_bytes()).is_err());
    }

    #[test]
    fn krl_must_have_the_header() {
        let mut krl = Vec::from(&KRL_MAGIC[..]);
        krl.extend_from_slice(&1u32.to_be_bytes());
        krl.extend_from_slice(&7u64.to_be_bytes());
        krl.extend_from_slice(&[0u8; 24]);
        assert_eq!(check_krl(&krl), Ok(7));
        assert!(check_krl(&krl[..40]).is_err(), "truncated");
        assert!(
            check_krl(b"<html>Service Unavailable</html> and some more padding bytes").is_err()
        );
        let mut v2 = krl.clone();
        v2[11] = 2;
        assert!(check_krl(&v2).is_err());
    }

    #[test]
    fn atomic_writes_replace_whole_files_with_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/revoked_keys");
        write_atomic(&p, b"one", 0o644).unwrap();
        write_atomic(&p, b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(
            std::fs::read_dir(p.parent().unwrap()).unwrap().count(),
            1,
            "no temporary file left behind"
        );
        assert!(!replace_if_changed(&p, b"two").unwrap());
        assert!(replace_if_changed(&p, b"three").unwrap());
    }
}
