//! Command-line interface of `jitssh-ca` (clap derive).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "jitssh-ca",
    version,
    about = "jitssh certificate authority: OIDC in, Rego decides, short-lived OpenSSH certificates out"
)]
pub struct Cli {
    /// Log format (overrides the config file).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a config file, CA keys and the audit database in DIR.
    Init(InitArgs),
    /// Run the CA server.
    Serve(ServeArgs),
    /// Run a throw-away CA with a built-in development OpenID provider (loopback only; not for production).
    Dev(DevArgs),
    /// Test or evaluate Rego policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Read and verify the audit log.
    Audit(AuditArgs),
    /// Revoke certificates, an identity or a key (published in `GET /v1/krl`).
    Revoke(RevokeArgs),
    /// Host certificates: one-time join tokens for `jitssh host enroll`.
    #[command(subcommand)]
    Host(HostCommand),
    /// Just-in-time elevations: list, show, and revoke grants.
    #[command(subcommand)]
    Elevation(ElevationCommand),
    /// CA keys: the published keys and their rotation.
    #[command(subcommand)]
    Ca(CaCommand),
    /// The CA's database.
    #[command(subcommand)]
    Db(DbCommand),
    /// Login names: which identity (issuer + subject) each belongs to.
    #[command(subcommand)]
    LoginName(LoginNameCommand),
    /// Print a shell completion script: `jitssh-ca completions bash > /etc/bash_completion.d/jitssh-ca`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), as packaged in jitssh-ca.8.
    #[command(hide = true)]
    Man,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Copy a single-process CA's SQLite database (audit chain, spent tokens, elevations, join tokens, revocations, serial blocks) into the empty PostgreSQL database the config names. Stop the CA first.
    Migrate {
        /// Config file of the CA; its [database] is the PostgreSQL target.
        #[arg(long, short)]
        config: PathBuf,
        /// The SQLite database the CA used until now.
        #[arg(long)]
        from: PathBuf,
    },
}

/// Which CA key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyKind {
    User,
    Host,
}

/// One step of a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RotateStep {
    /// Create the next key; after a restart it is published (hosts sync it), not signing.
    Next,
    /// The next key signs from now on; the old one stays published until its certificates expire.
    Switch,
    /// Stop publishing the old key and delete it (refused while its certificates may be valid).
    Retire,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// The published keys of each kind and the rotation state.
    Status {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Rotate a CA key without failing a login: next → (restart, hosts sync) → switch → (restart; wait out the longest certificate lifetime) → retire.
    Rotate {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, value_enum)]
        kind: KeyKind,
        #[arg(value_enum)]
        step: RotateStep,
        /// Retire even though certificates signed by the old key may still be valid.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ElevationCommand {
    /// One line per elevation, newest first.
    List {
        /// Config file of the CA.
        #[arg(long, short)]
        config: PathBuf,
        /// Only this state: pending, active, approved, denied, expired, cancelled, revoked.
        #[arg(long)]
        state: Option<String>,
        /// At most this many (newest).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON document per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One elevation in full (JSON).
    Show {
        #[arg(long, short)]
        config: PathBuf,
        id: String,
    },
    /// End a pending request or an active grant now (in force on the CA within a second).
    Revoke {
        #[arg(long, short)]
        config: PathBuf,
        id: String,
        /// Why (recorded in the audit log and sent to the webhook).
        #[arg(long)]
        reason: Option<String>,
        /// Who is revoking, for the audit log [default: $SUDO_USER, else $USER].
        #[arg(long)]
        operator: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// One-time join tokens that let a host enrol for a host certificate.
    #[command(subcommand)]
    Token(HostTokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum HostTokenCommand {
    /// Create a single-use join token naming the hosts it may claim; prints the token on stdout.
    Create(HostTokenCreateArgs),
}

#[derive(Debug, Args)]
pub struct HostTokenCreateArgs {
    /// Config file of the CA.
    #[arg(long, short)]
    pub config: PathBuf,
    /// A host name the token may claim (repeatable): an exact DNS name, no wildcards.
    #[arg(long = "hostname", value_name = "H", required = true)]
    pub hostnames: Vec<String>,
    /// How long the token may be used, e.g. 15m, 1h, 2d (at most 7d).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = ca_core::Ttl::parse_human)]
    pub ttl: ca_core::Ttl,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["serial", "key_id", "subject", "key", "host"])))]
pub struct RevokeArgs {
    /// Config file of the CA.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Revoke the certificate with this serial.
    #[arg(long)]
    pub serial: Option<u64>,
    /// Revoke certificates with this key ID (as sshd logs it).
    #[arg(long)]
    pub key_id: Option<String>,
    /// Revoke an identity, ISSUER/SUBJECT: its valid certificates, and every new request.
    #[arg(long)]
    pub subject: Option<String>,
    /// Revoke a public key (file in OpenSSH format): every certificate for it, and new requests.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Revoke a host for clients (`GET /v1/krl/hosts`): its valid host certificates and every key
    /// it was certified for, so renewed certificates and renewals are refused too.
    #[arg(long, value_name = "HOSTNAME")]
    pub host: Option<String>,
    /// Why (recorded in the audit log).
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to create the config, keys and database in.
    #[arg(long)]
    pub dir: PathBuf,
    /// OpenID provider issuer URL (exactly as in its tokens' `iss`).
    #[arg(long, default_value = "https://idp.example.com")]
    pub issuer: String,
    /// OAuth client ID of jitssh at the provider (the ID token audience).
    #[arg(long, default_value = "jitssh")]
    pub audience: String,
    /// A domain whose verified emails name people: the local part of
    /// `alice@DOMAIN` becomes the login name `alice` (repeatable). Emails in
    /// other domains give no login name.
    #[arg(long = "email-domain", value_name = "DOMAIN")]
    pub email_domains: Vec<String>,
    /// The claim login names come from: `email` (the default with
    /// --email-domain), `preferred_username` (only if users cannot edit it
    /// at your IdP) or another claim. Without this and --email-domain,
    /// nobody gets a personal principal until `login_claim` is set.
    #[arg(long, value_name = "CLAIM")]
    pub login_claim: Option<String>,
    /// Create the CA keys inside a PKCS#11 token (HSM) instead of files: the module (shared library).
    #[arg(long, value_name = "MODULE", requires = "token_label")]
    pub pkcs11: Option<PathBuf>,
    /// With --pkcs11: the token's label.
    #[arg(long, value_name = "LABEL", requires = "pkcs11")]
    pub token_label: Option<String>,
    /// With --pkcs11: a file (mode 0600) holding the user PIN.
    #[arg(
        long,
        value_name = "FILE",
        requires = "pkcs11",
        conflicts_with = "pin_env"
    )]
    pub pin_file: Option<PathBuf>,
    /// With --pkcs11: an environment variable holding the user PIN.
    #[arg(long, value_name = "VAR", requires = "pkcs11")]
    pub pin_env: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file written by `jitssh-ca init`.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Listen address (overrides server.listen).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Keep data (keys, audit database) in DIR instead of a throw-away directory.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Listen address; must be loopback.
    #[arg(long, default_value = "127.0.0.1:8400")]
    pub listen: SocketAddr,
    /// Username of the development user (default: $USER when the policy
    /// gives it a personal principal, else "jitssh-dev"; `dev` prints which
    /// and why).
    #[arg(long)]
    pub user: Option<String>,
    /// Email of the development user (default: USER@example.com).
    #[arg(long)]
    pub email: Option<String>,
    /// Comma-separated groups of the development user.
    #[arg(long, value_delimiter = ',', default_value = "developers")]
    pub groups: Vec<String>,
    /// Policy folder to use instead of the embedded default.
    #[arg(long)]
    pub policy_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Run the `test_*` rules of the policy folder.
    Test {
        /// Policy folder (default: ./policies).
        dir: Option<PathBuf>,
    },
    /// Print the decision for an input document.
    Eval {
        /// JSON input document (see policies/README.md).
        #[arg(long)]
        input: PathBuf,
        /// Policy folder (default: ./policies).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Config file (its database.path is used); before or after the subcommand.
    // Not `required_unless_present`: clap checks that on `audit` before a
    // global value given after the subcommand reaches it; `commands`
    // refuses neither being given.
    #[arg(long, short, global = true, conflicts_with = "db")]
    pub config: Option<PathBuf>,
    /// Audit database file; before or after the subcommand.
    #[arg(long, global = true)]
    pub db: Option<PathBuf>,
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// One line per event.
    List(AuditFilter),
    /// One event in full.
    Show { seq: u64 },
    /// Check the hash chain; names the first bad row.
    Verify,
    /// Events as JSON Lines.
    Export(AuditFilter),
}

#[derive(Debug, Args)]
pub struct AuditFilter {
    /// Only this subject (the token's `sub`).
    #[arg(long)]
    pub subject: Option<String>,
    /// Only events naming this principal (requested or granted).
    #[arg(long)]
    pub principal: Option<String>,
    /// Only events at or after this time (unix seconds).
    #[arg(long)]
    pub since: Option<u64>,
    /// Only events before this time (unix seconds).
    #[arg(long)]
    pub until: Option<u64>,
    /// Only this action, e.g. user_cert, host_cert, elevation_request, elevation_approve, revoke, ca_rotate.
    #[arg(long)]
    pub action: Option<String>,
    /// Only this outcome: issued, denied, failed, recorded...
    #[arg(long)]
    pub outcome: Option<String>,
    /// Only events about this certificate serial (as `ssh-keygen -L` shows it).
    #[arg(long)]
    pub serial: Option<u64>,
    /// At most this many events (the newest).
    #[arg(long)]
    pub limit: Option<usize>,
}

/// `jitssh-ca login-name`: a login name belongs to the first identity that
/// uses it; these show and change that. Each change is audited, and counts
/// on running servers within about a second.
#[derive(Debug, Subcommand)]
pub enum LoginNameCommand {
    /// Every login name and the identity holding it.
    List {
        /// Config file of the CA.
        #[arg(long, short)]
        config: PathBuf,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Free NAME: the next identity that uses it gets it.
    Release {
        /// Config file of the CA.
        #[arg(long, short)]
        config: PathBuf,
        name: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Bind the login names of certificates issued before this version
    /// kept bindings: in audit-log order, the first identity that received
    /// a name gets it (names already bound stay). Run once after upgrading,
    /// before people log in; lists the names another identity also received.
    Import {
        /// Config file of the CA (its [[issuers]] rules say which name each
        /// certificate carried).
        #[arg(long, short)]
        config: PathBuf,
        /// Show what would be bound, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Give NAME to one identity (whoever held it loses it): a person who
    /// moved to another issuer, or an account reassigned at the IdP. The
    /// identity still gets NAME only when its issuer's rule derives it.
    Map {
        /// Config file of the CA.
        #[arg(long, short)]
        config: PathBuf,
        name: String,
        /// The identity's issuer, exactly as in [[issuers]].
        #[arg(long)]
        issuer: String,
        /// The identity's subject (the token's `sub`).
        #[arg(long)]
        subject: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
}
