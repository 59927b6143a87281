//! Command-line interface of `jitssh` (clap derive).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::duration::parse_duration;

#[derive(Debug, Parser)]
#[command(
    name = "jitssh",
    version,
    about = "Short-lived SSH certificates from your jitssh CA",
    long_about = "Short-lived SSH certificates from your jitssh CA.\n\n\
        `jitssh login` signs you in with your OpenID provider and loads a fresh key \
        and its certificate into ssh-agent, valid for minutes; plain `ssh` then works.",
    after_help = "Profiles live in $XDG_CONFIG_HOME/jitssh/config.toml (default ~/.config/jitssh/config.toml):\n\n    \
        default_profile = \"prod\"\n    [profiles.prod]\n    ca = \"https://ca.example.com\"\n    \
        principals = [\"deploy\"]   # optional defaults for `login`\n    ttl = \"30m\""
)]
pub struct Cli {
    /// CA URL, e.g. https://ca.example.com (overrides the profile's `ca`).
    #[arg(
        long,
        env = "JITSSH_CA",
        global = true,
        value_name = "URL",
        hide_env_values = true
    )]
    pub ca: Option<String>,
    /// Profile in the config file [default: the file's default_profile, else "default"].
    #[arg(
        long,
        env = "JITSSH_PROFILE",
        global = true,
        value_name = "NAME",
        hide_env_values = true
    )]
    pub profile: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sign in and load a short-lived certificate into ssh-agent.
    Login(LoginArgs),
    /// Show the certificates from this CA in the agent and on disk; exit 1 when none is valid.
    Status,
    /// Remove this CA's certificates from the agent and delete jitssh's files and cached tokens.
    Logout,
    /// Print an ~/.ssh/config block that renews the certificate before ssh connects.
    Config(ConfigArgs),
    /// Exit 0 if a valid certificate is loaded; otherwise log in again (silently when possible).
    Ensure(EnsureArgs),
    /// Non-interactive: trade a workload OIDC token (CI job, service) for a short certificate.
    Cert(Box<CertArgs>),
    /// Request a just-in-time role; with --wait, load a certificate with its principals once approved.
    Elevate(ElevateArgs),
    /// List pending elevation requests you may approve or deny (and your own).
    Requests(SignInArgs),
    /// Approve a pending elevation request.
    Approve(DecideArgs),
    /// Deny a pending elevation request, or end an active grant (its certificates are revoked).
    Deny(DecideArgs),
    /// Withdraw your pending elevation request, or drop your active grant early.
    Cancel(DecideArgs),
    /// On servers (as root): enrol the host key, renew its host certificate, sync sshd's CA keys and revocation list.
    #[command(subcommand)]
    Host(crate::host::HostCommand),
    /// Check the CA, clock, ssh-agent, OpenSSH, ~/.ssh/config, known_hosts, certificate and cached sign-in; print a fix for each failure (exit 1).
    Doctor,
    /// Print a shell completion script: `jitssh completions bash > /etc/bash_completion.d/jitssh`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), as packaged in jitssh.1.
    #[command(hide = true)]
    Man,
}

/// Output format of `jitssh cert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CertFormat {
    Openssh,
    Json,
}

/// How `jitssh cert --client-id` authenticates to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientAuth {
    /// HTTP Basic (client_secret_basic).
    Basic,
    /// In the form body (client_secret_post).
    Post,
}

/// `jitssh cert`. Exit codes: 0 issued, 2 usage, 3 refused by the CA or the
/// identity provider, 4 CA or identity provider unreachable or unavailable, 1 other.
#[derive(Debug, Args)]
#[command(
    group(clap::ArgGroup::new("credential").args(["token_file", "token_env", "token", "client_id"])),
    group(clap::ArgGroup::new("token_endpoint_source").args(["token_endpoint", "issuer"])),
    after_help = "Exit codes: 0 issued; 2 usage (bad flags, unreadable token or secret file); \
        3 refused by the CA or the identity provider (token or client credentials not accepted, \
        denied by policy, rate limited); 4 the CA or the identity provider is unreachable or unavailable; 1 other."
)]
pub struct CertArgs {
    /// Read the OIDC token from this file.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,
    /// Read the OIDC token from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
    /// `-`: read the OIDC token from standard input.
    #[arg(long, value_name = "-")]
    pub token: Option<String>,
    /// OAuth2 client credentials instead of a token: this service account's client id at the identity provider.
    #[arg(
        long,
        value_name = "ID",
        requires = "client_secret_file",
        requires = "token_endpoint_source"
    )]
    pub client_id: Option<String>,
    /// File holding the client secret alone (one line; not readable by group or others, like an ssh key).
    #[arg(long, value_name = "PATH", requires = "client_id")]
    pub client_secret_file: Option<PathBuf>,
    /// The identity provider's token endpoint (https, or http on loopback).
    #[arg(long, value_name = "URL", requires = "client_id")]
    pub token_endpoint: Option<String>,
    /// Or: the issuer whose discovery document (/.well-known/openid-configuration) names the token endpoint.
    #[arg(long, value_name = "URL", requires = "client_id")]
    pub issuer: Option<String>,
    /// Scope to ask the identity provider for (repeatable).
    #[arg(long = "scope", value_name = "SCOPE", requires = "client_id")]
    pub scopes: Vec<String>,
    /// Resource indicator (RFC 8707) the access token is for: the CA's `access_token_audience`.
    #[arg(long, value_name = "URI", requires = "client_id")]
    pub resource: Option<String>,
    /// How to send the client secret to the token endpoint [default: basic].
    #[arg(long, value_enum, value_name = "METHOD", requires = "client_id")]
    pub client_auth: Option<ClientAuth>,
    /// Principal to ask for (repeatable) [default: all the policy allows].
    #[arg(long = "principal", short = 'p', value_name = "P")]
    pub principals: Vec<String>,
    /// Certificate lifetime, e.g. 5m.
    #[arg(long, value_parser = crate::duration::parse_duration)]
    pub ttl: Option<std::time::Duration>,
    /// Reason recorded in the CA's audit log.
    #[arg(long)]
    pub reason: Option<String>,
    /// Write id_ed25519, id_ed25519-cert.pub (0600) and known_hosts into DIR.
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
    /// openssh: a summary line; json: one JSON document (with the private key when neither --out nor --agent).
    #[arg(long, value_enum, default_value = "openssh")]
    pub format: CertFormat,
    /// Add key and certificate to the agent at SSH_AUTH_SOCK, with the certificate's lifetime.
    #[arg(long)]
    pub agent: bool,
}

/// How to sign in when the cached sign-in cannot be used.
#[derive(Debug, Clone, Copy, Args)]
pub struct SignInArgs {
    /// Use the device flow (for SSH sessions, headless machines).
    #[arg(long)]
    pub device: bool,
    /// Do not open a browser; print the URL to open instead.
    #[arg(long)]
    pub no_browser: bool,
}

/// `jitssh elevate`. Exit codes: 0 requested (or approved and loaded with
/// --wait), 3 refused, denied or ended undecided, 1 other.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 requested (with --wait: approved and loaded); 3 refused by policy, denied, cancelled or expired; 1 other."
)]
pub struct ElevateArgs {
    /// The role to request (the CA's policy defines them; an unknown name lists them).
    pub role: String,
    /// Why you need it, e.g. the ticket (recorded and shown to approvers).
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// How long the grant should last once approved, e.g. 30m [default: the role's maximum].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// Wait until it is decided, then load a certificate with the role's principals (valid no longer than the grant).
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub sign_in: SignInArgs,
}

/// `jitssh approve|deny|cancel ID`.
#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The elevation id (el_...), from `jitssh requests`.
    pub id: String,
    /// A comment recorded with the decision.
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
    #[command(flatten)]
    pub sign_in: SignInArgs,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Ask for this principal (repeatable) [default: all the policy allows].
    #[arg(long = "principal", short = 'p', value_name = "P")]
    pub principals: Vec<String>,
    /// Ask for this lifetime, e.g. 15m, 1h, 90s [default: the policy's].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// Why you need access (recorded in the CA's audit log).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Use the device flow: open a URL on any device and enter a code (for SSH sessions, headless machines).
    #[arg(long)]
    pub device: bool,
    /// Do not open a browser; print the URL to open instead.
    #[arg(long)]
    pub no_browser: bool,
    /// Write the key and certificate as files (0600) instead of using ssh-agent [default DIR: ~/.ssh/jitssh].
    #[arg(long, value_name = "DIR", num_args = 0..=1)]
    pub write: Option<Option<PathBuf>>,
    /// Sign in again even if a cached refresh token could be used.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Hosts the block applies to (ssh_config pattern list) [default: the profile's `hosts`, else *].
    #[arg(long, value_name = "PATTERN")]
    pub host: Option<String>,
    /// Reach the hosts through this jump host (ProxyJump).
    #[arg(long, value_name = "HOST")]
    pub bastion: Option<String>,
    /// Renew when less than this is left.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m")]
    pub min_left: Duration,
}

#[derive(Debug, Args)]
pub struct EnsureArgs {
    /// Renew when less than this is left.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m")]
    pub min_left: Duration,
    /// Print nothing when the certificate is fine or renewed silently.
    #[arg(long, short)]
    pub quiet: bool,
    /// Do not open a browser if a new sign-in is needed; print the URL instead.
    #[arg(long)]
    pub no_browser: bool,
}
