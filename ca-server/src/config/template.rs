//! The documented config `jitssh-ca init` writes, and its variants (a login
//! rule set, CA keys in a PKCS#11 token).

use super::error::ConfigError;

/// The documented config `jitssh-ca init` writes. Every option appears,
/// commented with its meaning; the file works as written.
pub fn template(issuer: &str, audience: &str) -> String {
    format!(
        r#"# jitssh-ca configuration. Relative paths are relative to this file's directory.

[server]
# Address to listen on. Plain HTTP is only allowed on a loopback address.
listen = "127.0.0.1:8443"
# TLS certificate chain and private key (PEM). With both set the server speaks HTTPS.
# The key file, like every secret file here, must be mode 0600 (not a symlink).
# tls_cert = "tls.crt"
# tls_key = "tls.key"
# Allow plain HTTP on a non-loopback address (only behind a TLS-terminating proxy you control).
danger_allow_plain_http = false
# Whole-request timeout and time allowed to send request headers, in seconds.
request_timeout_seconds = 10
header_read_timeout_seconds = 5
# A connection with no request in progress is closed after this many seconds (keep a
# proxy's upstream keep-alive timeout below it), and at most this many connections are
# held at once (also kept below the open-file limit).
idle_timeout_seconds = 30
max_connections = 16384
# Largest request body accepted, in bytes.
max_body_bytes = 65536
# Log format: "human" or "json".
log_format = "human"

[ca]
# CA private keys (OpenSSH format, Ed25519, mode 0600). The server refuses
# keys readable by group or others, symlinks, and keys that do not parse.
user_key = "user_ca"
host_key = "host_ca"

[database]
# SQLite audit database (WAL, synchronous=FULL): one jitssh-ca process.
path = "audit.db"
# Or PostgreSQL, for several replicas behind a load balancer (then no path):
# url = "postgresql://jitssh@db.example.internal:5432/jitssh"
# password_file = "/etc/jitssh/db-password"
# TLS to PostgreSQL, never falling back to plaintext: "verify-full" checks the server's
# certificate against ca_file and the url's host name; "require" encrypts but accepts any
# certificate (no defence against an active attacker on the path); "disable" sends all in
# clear. Default: "verify-full", or "disable" when the url's host is a loopback address,
# localhost or a Unix socket (where PostgreSQL has no TLS).
# tls = "verify-full"
# ca_file = "/etc/jitssh/db-ca.pem"   # PEM: the CA that signed the server's certificate

[policy]
# Folder of Rego files (*.rego, *_test.rego) and data*.json. Reloaded on SIGHUP and
# when files change; a policy that fails to compile or whose tests fail is refused.
dir = "policies"
reload_interval_seconds = 2

[certs]
# Hard ceiling on certificate lifetime, whatever the policy says ("15m", "1h" or seconds).
max_ttl = "1h"
# Hard ceiling on host certificate lifetime, whatever the host policy says ("1d", "7d";
# 7 days at most). Hosts renew before expiry with `jitssh host renew`.
host_max_ttl = "7d"
# Extensions and critical options a policy may grant.
allowed_extensions = ["permit-pty", "permit-port-forwarding", "permit-agent-forwarding", "permit-X11-forwarding"]
allowed_critical_options = ["force-command", "source-address", "verify-required"]

[rate_limit]
# Certificate requests per identity per minute (0 disables), and the burst allowed.
per_identity_per_minute = 60
burst = 20
# Refused requests without valid credentials one address may send per minute before
# it gets 429 (valid credentials always pass); such refusals are summarised in the
# audit log once a minute per address, never one row each.
unauthenticated_per_source_per_minute = 120

[elevation]
# Just-in-time roles are defined in the policy (data.json -> roles). An undecided
# request expires after pending_timeout; no grant lasts longer than max_grant.
pending_timeout = "1h"
max_grant = "8h"
# Optional JSON POST on new pending requests and every decision (never blocks requests).
# https only (plain http only to loopback): it names requesters and reasons.
# webhook_url = "https://chat.example.com/hooks/jitssh"
# webhook_timeout_seconds = 5
# webhook_retries = 3
# webhook_secret_file = "webhook.secret"   # adds X-Jitssh-Signature: sha256=HMAC-SHA256 of the body

[ui]
# The web console under /ui/ (approvers and people reading their access, in a browser).
# People sign in with the [login] provider (authorization code + PKCE); register
# {{public_url}}/ui/callback as a redirect URI of client_id there.
enabled = false
# The address browsers use: https (plain http only on loopback), no path.
# public_url = "https://ca.example.com"
# The console's client ID; default: [login] client_id. Must be among the issuer's audiences.
# client_id = "{audience}"
# When the provider registers web sign-ins as confidential clients: a file (mode 600)
# holding the client secret, sent as HTTP Basic at the token endpoint.
# client_secret_file = "console-client.secret"
# A session unused for idle_timeout ends, and every session ends max_session after sign-in.
idle_timeout = "30m"
max_session = "8h"

# What `GET /v1/config` tells `jitssh login`.
[login]
issuer = "{issuer}"
client_id = "{audience}"
scopes = ["openid", "email", "profile", "groups", "offline_access"]

# Trusted OpenID providers. `issuer` must equal the token's `iss` exactly (HTTPS,
# or plain HTTP on loopback only). `audiences` are the accepted client IDs.
[[issuers]]
issuer = "{issuer}"
audiences = ["{audience}"]
groups_claim = "groups"
# ca_bundle = "idp-ca.pem"   # PEM bundle for a private IdP's TLS certificate
kind = "human"               # "workload" for CI/service token issuers
# How a person's login name (their own principal) is derived. Required for kind = "human":
# without it nobody from this issuer gets a personal principal. "email" takes the local part
# of a verified email, only for email_domains (exact, case-insensitive; no subdomains);
# "preferred_username" only if users cannot edit it at this IdP. A login name belongs to the
# first issuer + subject that receives it (`jitssh-ca login-name` lists, releases, maps).
# login_claim = "email"
# email_domains = ["example.com"]
# Workload issuers only: also accept RFC 9068 JWT access tokens (`typ: at+jwt`, e.g. from
# `jitssh cert --client-id`) whose `aud` contains access_token_audience (the resource indicator).
# accept_access_tokens = false
# access_token_audience = "urn:jitssh:ca"
"#
    )
}

/// The commented-out login rule [`template`] writes.
const TEMPLATE_LOGIN_RULE: &str =
    "# login_claim = \"email\"\n# email_domains = [\"example.com\"]\n";

/// `template` with the login rule set (`jitssh-ca init --login-claim
/// --email-domain`): `claim` defaults to `"email"` when domains are given.
/// Checked as the config load checks it. Without either, the template is
/// unchanged (the rule stays commented out: people get no personal principal).
pub fn with_login_rule(
    template: &str,
    claim: Option<&str>,
    email_domains: &[String],
) -> Result<String, ConfigError> {
    let claim = match claim {
        None if email_domains.is_empty() => return Ok(template.to_owned()),
        None => "email",
        Some(c) => c,
    };
    let rule = ca_core::LoginRule::new(Some(claim), email_domains)
        .map_err(|e| ConfigError::Invalid(format!("[[issuers]]: {e}")))?;
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let mut lines = format!("login_claim = {}\n", quote(claim));
    if !rule.email_domains().is_empty() {
        let domains: Vec<String> = rule.email_domains().iter().map(|d| quote(d)).collect();
        lines.push_str(&format!("email_domains = [{}]\n", domains.join(", ")));
    }
    Ok(template.replacen(TEMPLATE_LOGIN_RULE, &lines, 1))
}

/// [`template`] for CA keys inside a PKCS#11 token (`jitssh-ca init --pkcs11`).
pub fn template_pkcs11(issuer: &str, audience: &str, hsm: &crate::hsm::Pkcs11Config) -> String {
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let mut ca = format!(
        "[ca]\n# CA keys inside a PKCS#11 token (HSM): the private keys never leave it, and\n\
         # when it cannot sign the CA answers 503; there is no fallback to key files.\n\
         [ca.pkcs11]\nmodule = {}\ntoken_label = {}\n",
        quote(&hsm.module.display().to_string()),
        quote(&hsm.token_label)
    );
    if let Some(f) = &hsm.pin_file {
        ca.push_str(&format!("pin_file = {}\n", quote(&f.display().to_string())));
    }
    if let Some(v) = &hsm.pin_env {
        ca.push_str(&format!("pin_env = {}\n", quote(v)));
    }
    ca.push_str(&format!(
        "user_key_label = {}\nhost_key_label = {}\n",
        quote(&hsm.user_key_label),
        quote(&hsm.host_key_label)
    ));
    let files = template(issuer, audience);
    let start = files.find("[ca]\n").unwrap_or(0);
    let end = files.find("[database]").unwrap_or(files.len());
    format!("{}{ca}\n{}", &files[..start], &files[end..])
}
