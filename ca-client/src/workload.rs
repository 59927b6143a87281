//! `jitssh cert`: non-interactive certificates for automation. A CI job or
//! service hands over its workload OIDC token, or a service account's OAuth2
//! client credentials (`--client-id`, `--client-secret-file`) that jitssh
//! trades at the identity provider's token endpoint for an RFC 9068 JWT access
//! token (oauth2 crate); jitssh then generates a key, gets it certified and
//! writes key + certificate (0600), prints JSON, or loads them into an agent.
//! No browser, no prompt.
//!
//! Exit codes: 0 issued; 2 usage (bad flags, unreadable token or secret
//! file); 3 the CA or the identity provider refused (token or client
//! credentials not accepted, denied by policy, rate limited); 4 the CA or the
//! identity provider is unreachable or unavailable; 1 anything else.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ca_core::wire::UserCertRequest;
use oauth2::basic::{BasicClient, BasicTokenType};
use oauth2::{
    AuthType, ClientId, ClientSecret, HttpClientError, RequestTokenError, Scope,
    TokenResponse as _, TokenUrl,
};
use reqwest::Url;
use ssh_key::LineEnding;

use crate::Context;
use crate::agent::{Agent, AgentError};
use crate::ca::{CaClient, CaError};
use crate::certs::{self, CertError};
use crate::cli::{CertArgs, CertFormat, ClientAuth};
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
    #[error(transparent)]
    Idp(#[from] IdpError),
}

/// Getting an access token with client credentials failed.
#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    #[error(
        "the identity provider refused the token request of client {client_id:?} ({}); {}",
        describe(.error, .description.as_deref()),
        advice(.error)
    )]
    Refused {
        client_id: String,
        error: String,
        description: Option<String>,
    },
    #[error(
        "the identity provider is unavailable ({}); try again later",
        describe(.error, .description.as_deref())
    )]
    Unavailable {
        error: String,
        description: Option<String>,
    },
    #[error("cannot reach the identity provider at {url}: {detail}; check the URL and the network")]
    Unreachable { url: String, detail: String },
    #[error("the identity provider at {url} answered something unusable: {detail}")]
    BadResponse { url: String, detail: String },
    #[error(
        "the identity provider issued an opaque access token; the CA needs a JWT access token (RFC 9068): \
         configure the client or its resource at the identity provider to issue JWT access tokens, or pass --resource"
    )]
    NotJwt,
}

fn describe(error: &str, description: Option<&str>) -> String {
    match description {
        Some(d) if !d.is_empty() => format!("{error}: {}", ca_core::escape_control(d)),
        _ => ca_core::escape_control(error),
    }
}

/// What to do about an OAuth error code (RFC 6749 §5.2, RFC 8707 §2).
fn advice(error: &str) -> &'static str {
    match error {
        "invalid_client" => {
            "check --client-id and the secret in --client-secret-file (and --client-auth, if the provider wants client_secret_post)"
        }
        "unauthorized_client" | "unsupported_grant_type" => {
            "ask the identity provider's administrator to allow the client_credentials grant for this client"
        }
        "invalid_scope" => "check --scope",
        "invalid_target" => {
            "check --resource: it must name a resource this client may get tokens for"
        }
        _ => "check the client's registration at the identity provider",
    }
}

impl IdpError {
    fn is_refusal(&self) -> bool {
        matches!(self, IdpError::Refused { .. })
    }
}

impl WorkloadError {
    /// The documented exit code.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            WorkloadError::Usage(_) | WorkloadError::Profile(_) => ExitCode::from(2),
            WorkloadError::Ca(CaError::Api { status, .. }) if *status < 500 => ExitCode::from(3),
            WorkloadError::Ca(_) => ExitCode::from(4),
            WorkloadError::Idp(e) if e.is_refusal() => ExitCode::from(3),
            WorkloadError::Idp(IdpError::NotJwt) => ExitCode::from(1),
            WorkloadError::Idp(_) => ExitCode::from(4),
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
                "give exactly one of --token-file PATH, --token-env VAR, --token - or --client-id ID --client-secret-file PATH".into(),
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
    let token = match &a.client_id {
        Some(client_id) => client_credentials(&ctx.http, a, client_id).await?,
        None => read_token(a)?,
    };
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

/// Largest client secret file read.
const MAX_SECRET_BYTES: u64 = 4096;
/// Largest access token or discovery document taken from the identity provider.
const MAX_IDP_BYTES: usize = 1024 * 1024;

/// Reads the client secret strictly: a regular file not accessible by group
/// or others (as ssh demands of private keys), UTF-8, one line of visible
/// ASCII (RFC 6749 `VSCHAR`); one trailing newline is dropped.
pub fn read_client_secret(path: &Path) -> Result<String, WorkloadError> {
    let usage = |why: String| {
        WorkloadError::Usage(format!("--client-secret-file {}: {why}", path.display()))
    };
    // Checked on the opened file, so a swap between check and read cannot slip by.
    let file = std::fs::File::open(path).map_err(|e| usage(format!("cannot open it: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| usage(format!("cannot read its metadata: {e}")))?;
    if !meta.is_file() {
        return Err(usage("is not a regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(usage(format!(
            "permissions {mode:04o} are too open: a client secret must not be accessible by group or others; \
             run `chmod 600 {}` (in Kubernetes, mount the secret with defaultMode: 0400)",
            path.display()
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| usage(format!("cannot read it: {e}")))?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(usage(format!(
            "is larger than {MAX_SECRET_BYTES} bytes; it must hold the client secret alone"
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| usage("is not UTF-8 text; it must hold the client secret alone".into()))?;
    let secret = match text.strip_suffix('\n') {
        Some(line) => line.strip_suffix('\r').unwrap_or(line),
        None => &text,
    };
    if secret.is_empty() {
        return Err(usage("is empty; write the client secret into it".into()));
    }
    if !secret.chars().all(|c| (' '..='~').contains(&c)) {
        return Err(usage(
            "contains a line break, a control or a non-ASCII character; it must hold the client secret alone, on one line"
                .into(),
        ));
    }
    Ok(secret.to_owned())
}

/// An identity provider URL from a flag: https, or plain http to loopback
/// only (a client secret never crosses a network in clear text).
fn idp_url(flag: &str, text: &str) -> Result<Url, WorkloadError> {
    let usage = |why: &str| WorkloadError::Usage(format!("{flag} {text:?}: {why}"));
    let url = Url::parse(text)
        .map_err(|e| usage(&format!("{e}; write it like https://idp.example.com/...")))?;
    let loopback = url.host_str().is_some_and(|h| {
        let h = h.trim_start_matches('[').trim_end_matches(']');
        h.eq_ignore_ascii_case("localhost")
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(usage(
                "plain http is only allowed to loopback addresses; use https://",
            ));
        }
        _ => return Err(usage("use an https:// URL")),
    }
    if url.host_str().is_none() || !url.username().is_empty() || url.password().is_some() {
        return Err(usage("it needs a host and no user name or password"));
    }
    if url.fragment().is_some() {
        return Err(usage("remove the #fragment"));
    }
    Ok(url)
}

/// The token endpoint: `--token-endpoint`, or `token_endpoint` from the
/// discovery document of `--issuer` (whose `issuer` must be exactly it).
async fn token_endpoint(http: &reqwest::Client, a: &CertArgs) -> Result<Url, WorkloadError> {
    match (&a.token_endpoint, &a.issuer) {
        (Some(endpoint), None) => idp_url("--token-endpoint", endpoint),
        (None, Some(issuer)) => {
            let base = idp_url("--issuer", issuer)?;
            if base.query().is_some() {
                return Err(WorkloadError::Usage(format!(
                    "--issuer {issuer:?}: an issuer has no ?query"
                )));
            }
            let url = format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            );
            let doc = get_json(http, &url).await?;
            let bad = |detail: String| IdpError::BadResponse {
                url: url.clone(),
                detail,
            };
            match doc.get("issuer").and_then(serde_json::Value::as_str) {
                Some(named) if named == issuer => {}
                Some(named) => {
                    return Err(WorkloadError::Usage(format!(
                        "--issuer {issuer:?}: the discovery document names the issuer {:?}; pass exactly that",
                        ca_core::escape_control(named)
                    )));
                }
                None => return Err(bad("the discovery document has no issuer".into()).into()),
            }
            let endpoint = doc
                .get("token_endpoint")
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| bad("the discovery document has no token_endpoint".into()))?;
            idp_url("the discovered token_endpoint", endpoint)
        }
        _ => Err(WorkloadError::Usage(
            "--client-id needs exactly one of --token-endpoint URL or --issuer URL".into(),
        )),
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<serde_json::Value, IdpError> {
    let unreachable = |e: &reqwest::Error| IdpError::Unreachable {
        url: url.to_owned(),
        detail: crate::ca::transport_detail(e),
    };
    let bad = |detail: String| IdpError::BadResponse {
        url: url.to_owned(),
        detail,
    };
    let mut resp = http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| unreachable(&e))?;
    let status = resp.status();
    if !status.is_success() {
        let err = format!("HTTP {status}");
        return Err(if status.is_server_error() {
            IdpError::Unavailable {
                error: err,
                description: None,
            }
        } else {
            bad(format!("{err}; check --issuer"))
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| unreachable(&e))? {
        if body.len() + chunk.len() > MAX_IDP_BYTES {
            return Err(bad(format!("larger than {MAX_IDP_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| bad(format!("not JSON: {e}")))
}

/// The OAuth2 client-credentials grant (RFC 6749 §4.4): the access token to
/// present to the CA instead of an ID token.
async fn client_credentials(
    http: &reqwest::Client,
    a: &CertArgs,
    client_id: &str,
) -> Result<String, WorkloadError> {
    if client_id.is_empty() || client_id.chars().any(char::is_control) {
        return Err(WorkloadError::Usage(
            "--client-id is empty or contains control characters".into(),
        ));
    }
    let secret_file = a.client_secret_file.as_deref().ok_or_else(|| {
        WorkloadError::Usage("--client-id needs --client-secret-file PATH".into())
    })?;
    let secret = read_client_secret(secret_file)?;
    if let Some(resource) = &a.resource {
        // RFC 8707 §2: an absolute URI without a fragment.
        let ok = Url::parse(resource).is_ok_and(|u| u.fragment().is_none());
        if !ok {
            return Err(WorkloadError::Usage(format!(
                "--resource {resource:?} is not an absolute URI without #fragment (e.g. urn:jitssh:ca)"
            )));
        }
    }
    let endpoint = token_endpoint(http, a).await?;
    let endpoint_text = endpoint.to_string();
    let client = BasicClient::new(ClientId::new(client_id.to_owned()))
        .set_client_secret(ClientSecret::new(secret))
        .set_auth_type(match a.client_auth {
            Some(ClientAuth::Post) => AuthType::RequestBody,
            Some(ClientAuth::Basic) | None => AuthType::BasicAuth,
        })
        .set_token_uri(TokenUrl::from_url(endpoint));
    let mut request = client
        .exchange_client_credentials()
        .add_scopes(a.scopes.iter().cloned().map(Scope::new));
    if let Some(resource) = &a.resource {
        request = request.add_extra_param("resource", resource.clone());
    }
    let response = request.request_async(http).await.map_err(|e| match e {
        RequestTokenError::ServerResponse(r) => {
            let error = r.error().to_string();
            let description = r.error_description().cloned();
            // RFC 6749 §5.2 has no such codes, but providers send them.
            if matches!(error.as_str(), "server_error" | "temporarily_unavailable") {
                IdpError::Unavailable { error, description }
            } else {
                IdpError::Refused {
                    client_id: client_id.to_owned(),
                    error,
                    description,
                }
            }
        }
        RequestTokenError::Request(HttpClientError::Reqwest(e)) => IdpError::Unreachable {
            url: endpoint_text.clone(),
            detail: crate::ca::transport_detail(&e),
        },
        other => IdpError::BadResponse {
            url: endpoint_text.clone(),
            detail: crate::oidc::error_chain(&other),
        },
    })?;
    if *response.token_type() != BasicTokenType::Bearer {
        return Err(IdpError::BadResponse {
            url: endpoint_text,
            detail: format!(
                "the access token is of type {:?}, not Bearer",
                response.token_type().as_ref()
            ),
        }
        .into());
    }
    let token = response.access_token().secret();
    if token.is_empty()
        || token.len() > MAX_IDP_BYTES
        || token.contains(|c: char| !c.is_ascii_graphic())
    {
        return Err(IdpError::BadResponse {
            url: endpoint_text,
            detail: "the access token is empty, too large or not printable".into(),
        }
        .into());
    }
    if token.split('.').count() != 3 {
        return Err(IdpError::NotJwt.into());
    }
    Ok(token.clone())
}

#[cfg(test)]
mod tests;
