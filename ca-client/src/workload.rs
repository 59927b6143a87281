//! `jitssh cert`: non-interactive certificates for automation. A CI job or
//! service hands over its workload OIDC token; jitssh generates a key, gets it
//! certified and writes key + certificate (0600), prints JSON, or loads them
//! into an agent. No browser, no prompt.
//!
//! Exit codes: 0 issued; 2 usage (bad flags, unreadable token); 3 the CA
//! refused (token not accepted, denied by policy, rate limited); 4 the CA is
//! unreachable or unavailable; 1 anything else.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ca_core::wire::UserCertRequest;
use ssh_key::LineEnding;

use crate::Context;
use crate::agent::{Agent, AgentError};
use crate::ca::{CaClient, CaError};
use crate::certs::{self, CertError};
use crate::cli::{CertArgs, CertFormat};
use crate::duration::unix_now;
use crate::profile::{ProfileError, Target};
use crate::store::{self, StoreError};

/// `jitssh cert` failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Ca(CaError),
    #[error("the CA's certificate is unusable: {0}")]
    Cert(#[from] CertError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Agent(#[from] AgentError),
}

impl WorkloadError {
    /// The documented exit code.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            WorkloadError::Usage(_) | WorkloadError::Profile(_) => ExitCode::from(2),
            WorkloadError::Ca(CaError::Api { status, .. }) if *status < 500 => ExitCode::from(3),
            WorkloadError::Ca(_) => ExitCode::from(4),
            _ => ExitCode::from(1),
        }
    }
}

/// Where the token comes from: exactly one of the three flags.
fn read_token(a: &CertArgs) -> Result<String, WorkloadError> {
    let token = match (&a.token_file, &a.token_env, &a.token) {
        (Some(path), None, None) => std::fs::read_to_string(path).map_err(|e| {
            WorkloadError::Usage(format!("cannot read --token-file {}: {e}", path.display()))
        })?,
        (None, Some(var), None) => std::env::var(var).map_err(|_| {
            WorkloadError::Usage(format!("--token-env {var}: the variable is not set"))
        })?,
        (None, None, Some(dash)) if dash == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .take(64 * 1024)
                .read_to_string(&mut s)
                .map_err(|e| {
                    WorkloadError::Usage(format!("cannot read the token from stdin: {e}"))
                })?;
            s
        }
        (None, None, Some(_)) => {
            return Err(WorkloadError::Usage(
                "--token takes only `-` (read from stdin); a token on the command line would show in process lists"
                    .into(),
            ));
        }
        _ => {
            return Err(WorkloadError::Usage(
                "give exactly one of --token-file PATH, --token-env VAR or --token -".into(),
            ));
        }
    };
    let token = token.trim().to_owned();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(WorkloadError::Usage(
            "the token is empty or contains whitespace; pass the raw OIDC ID token".into(),
        ));
    }
    Ok(token)
}

/// Run `jitssh cert`; returns the text for stdout.
pub async fn cert(ctx: &Context, target: &Target, a: &CertArgs) -> Result<String, WorkloadError> {
    if a.out.is_none() && !a.agent && a.format != CertFormat::Json {
        return Err(WorkloadError::Usage(
            "say where the certificate goes: --out DIR, --agent, or --format json".into(),
        ));
    }
    let token = read_token(a)?;
    let ttl_seconds = a
        .ttl
        .map(|d| ca_core::Ttl::from_secs(d.as_secs()).map(|t| t.as_secs()))
        .transpose()
        .map_err(|e| WorkloadError::Usage(format!("--ttl: {e}")))?;
    let ca = CaClient::new(target.ca()?.clone(), ctx.http.clone(), ctx.ca_timeout);
    let keys = ca.keys().await.map_err(WorkloadError::Ca)?.value;
    let user_ca = certs::parse_ca_keys(&keys.user_ca);
    let key = certs::generate_key()?;
    let request = UserCertRequest {
        public_key: certs::public_line(&key)?,
        principals: (!a.principals.is_empty()).then(|| a.principals.clone()),
        ttl_seconds,
        reason: a.reason.clone(),
    };
    let resp = ca
        .issue(&token, &request)
        .await
        .map_err(WorkloadError::Ca)?
        .value;
    let now = unix_now();
    let cert = certs::check_issued(&resp.certificate, &key, &user_ca, now)?;
    let known_hosts: Vec<String> = keys
        .host_ca
        .iter()
        .filter_map(|k| certs::known_hosts_line(k, "*", "workload"))
        .collect();

    let mut out = String::new();
    if let Some(dir) = &a.out {
        let (key_path, cert_path) = write_out(dir, &key, &resp.certificate, &known_hosts)?;
        if a.format == CertFormat::Openssh {
            out.push_str(&format!(
                "Certificate for {} (serial {}) valid until {}\nssh -i {} -o CertificateFile={} -o UserKnownHostsFile={} HOST\n",
                resp.principals.join(", "),
                resp.serial,
                resp.valid_before,
                key_path.display(),
                cert_path.display(),
                dir.join("known_hosts").display()
            ));
        }
    }
    if a.agent {
        let lifetime = u32::try_from(cert.valid_before().saturating_sub(now)).unwrap_or(u32::MAX);
        Agent::from_env()?.add_certificate(&key, &cert, lifetime, &resp.key_id)?;
        if a.format == CertFormat::Openssh {
            out.push_str(&format!(
                "Certificate for {} (serial {}) in ssh-agent for {} s\n",
                resp.principals.join(", "),
                resp.serial,
                lifetime
            ));
        }
    }
    if a.format == CertFormat::Json {
        let private = if a.out.is_none() && !a.agent {
            // Asked for JSON only: the caller takes the key from stdout.
            Some(
                key.to_openssh(LineEnding::LF)
                    .map_err(|e| CertError::Parse(e.to_string()))?
                    .to_string(),
            )
        } else {
            None
        };
        let doc = serde_json::json!({
            "certificate": resp.certificate,
            "serial": resp.serial,
            "key_id": resp.key_id,
            "principals": resp.principals,
            "valid_after": resp.valid_after,
            "valid_before": resp.valid_before,
            "private_key": private,
            "known_hosts": known_hosts,
        });
        out.push_str(&format!("{doc}\n"));
    }
    Ok(out)
}

/// DIR/id_ed25519, DIR/id_ed25519-cert.pub (0600) and DIR/known_hosts.
fn write_out(
    dir: &Path,
    key: &ssh_key::PrivateKey,
    certificate: &str,
    known_hosts: &[String],
) -> Result<(PathBuf, PathBuf), WorkloadError> {
    store::create_private_dir(dir)?;
    let key_path = dir.join("id_ed25519");
    let cert_path = dir.join("id_ed25519-cert.pub");
    let key_text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| CertError::Parse(e.to_string()))?;
    store::write_private(&key_path, key_text.as_bytes())?;
    store::write_private(&cert_path, format!("{}\n", certificate.trim()).as_bytes())?;
    let mut hosts = known_hosts.join("\n");
    hosts.push('\n');
    store::write_private(&dir.join("known_hosts"), hosts.as_bytes())?;
    Ok((key_path, cert_path))
}
