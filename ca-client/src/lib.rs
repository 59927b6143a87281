//! `jitssh`, the engineer's client: sign in with the CA's OpenID provider, get
//! a short-lived OpenSSH certificate for a fresh in-memory key, and load both
//! into ssh-agent with a lifetime, so plain `ssh` works and no key touches the
//! disk.
//!
//! Code map: `cli` (clap) → [`run`] → one module per command: `login`,
//! `status` (also `logout`), `ensure`, `sshconfig` (`config`). Below them:
//! `profile` (flags, env and config.toml → `Target`), `paths` (HOME/XDG),
//! `ca` (the CA's HTTP API), `oidc` (openidconnect: code + PKCE, device,
//! refresh, revocation) with `loopback` (the RFC 8252 redirect listener),
//! `certs` (key, certificate checks, key files, known_hosts lines), `agent`
//! (ssh-agent-lib), `store` (0600 files: token cache, last-login record),
//! `ui` (stderr, spinner, browser), `duration`.
//!
//! Invariants:
//! - A private key reaches the disk only with `--write` or when no agent runs
//!   (`SSH_AUTH_SOCK` unset), and then as a 0600 file; in the agent it carries
//!   a lifetime equal to the certificate's remaining validity.
//! - Tokens and the last-login record are 0600 files in 0700 directories,
//!   written atomically; a cache readable by others is ignored.
//! - ID tokens travel only over https, or http to loopback (development).
//! - The ID token is verified before use: signature (provider JWKS), issuer,
//!   audience, expiry, and the nonce of the authorization request; the
//!   redirect's `state` (and `iss`, when sent) must match.
//! - stdout carries results only (summary, status lines, the config block);
//!   prompts, progress and errors go to stderr.
#![forbid(unsafe_code)]

pub mod agent;
pub mod ca;
pub mod certs;
pub mod cli;
pub mod doctor;
pub mod duration;
pub mod elevate;
pub mod ensure;
pub mod host;
pub mod hostkrl;
pub mod login;
pub mod loopback;
pub mod oidc;
pub mod paths;
pub mod profile;
pub mod sshconfig;
pub mod status;
pub mod store;
pub mod ui;
pub mod workload;

use std::process::ExitCode;
use std::time::Duration;

use cli::{Cli, Command};
use duration::unix_now;
use login::{Delivery, LoginError, LoginOptions};
use paths::{NoHome, Paths};
use profile::ProfileError;
use ui::Ui;

/// Timeout of one request to the CA.
pub const CA_TIMEOUT: Duration = Duration::from_secs(30);

/// What every command needs: the user's directories, one HTTP client, the terminal.
#[derive(Debug)]
pub struct Context {
    pub paths: Paths,
    pub http: reqwest::Client,
    pub ui: Ui,
    pub ca_timeout: Duration,
}

/// A command failed; each variant is one operation's error.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Home(#[from] NoHome),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Login(#[from] LoginError),
    #[error(transparent)]
    Status(#[from] status::StatusError),
    #[error(transparent)]
    Logout(#[from] status::LogoutError),
    #[error(transparent)]
    Host(#[from] host::HostError),
    #[error("{0}")]
    Usage(String),
    #[error("cannot set up HTTPS: {0}")]
    Http(String),
}

/// The HTTP client for the CA and the OpenID provider. Redirects are not
/// followed: a bearer token or a token request must not wander elsewhere.
pub fn http_client() -> Result<reqwest::Client, CliError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(CA_TIMEOUT)
        .user_agent(concat!("jitssh/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| CliError::Http(e.to_string()))
}

fn sign_in(a: cli::SignInArgs) -> elevate::SignIn {
    elevate::SignIn {
        device: a.device,
        open_browser: !a.no_browser,
    }
}

/// Print a command's stdout text, or its error with the command's exit code.
fn print_or_exit<E: std::fmt::Display>(
    result: Result<String, E>,
    exit_code: impl Fn(&E) -> ExitCode,
) -> Result<ExitCode, CliError> {
    match result {
        Ok(text) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(exit_code(&e))
        }
    }
}

/// For `jitssh config`: refresh the profile's host KRL (or keep the last
/// copy, or write an empty valid one) and return its absolute path (ssh
/// expands `~` from the password database, not HOME: this names the very
/// file checked here); `None` (with a warning) if no readable file could be
/// put there, since ssh refuses every host when `RevokedHostKeys` is
/// unreadable.
async fn host_krl_for_config(ctx: &Context, target: &profile::Target) -> Option<String> {
    let krl = hostkrl::path(&ctx.paths, &target.profile);
    if !ctx.paths.home.is_dir() {
        ctx.ui.warn(&format!(
            "{} does not exist, so the block leaves out RevokedHostKeys (revoked hosts are not refused)",
            ctx.paths.home.display()
        ));
        return None;
    }
    let result = match &target.ca {
        Some(url) => {
            let timeout = ctx.ca_timeout.min(Duration::from_secs(10));
            let ca = ca::CaClient::new(url.clone(), ctx.http.clone(), timeout);
            hostkrl::refresh(&ca, &krl).await.map(|_| ())
        }
        None => hostkrl::ensure_exists(&krl).map_err(hostkrl::KrlError::from),
    };
    if let Err(e) = result {
        ctx.ui.warn(&format!(
            "{e}; {} keeps the last list",
            ctx.paths.tilde(&krl)
        ));
    }
    if std::fs::read(&krl).is_ok_and(|b| host::check_krl(&b).is_ok()) {
        Some(krl.display().to_string())
    } else {
        ctx.ui.warn(&format!(
            "cannot write {}; the block leaves out RevokedHostKeys, so revoked hosts are not refused",
            ctx.paths.tilde(&krl)
        ));
        None
    }
}

/// After a login with `--ca` (or `JITSSH_CA`): that CA becomes the profile's,
/// so `status`, `elevate`, `requests`, ... need no flag; said once, when it
/// changes. A failure to write only warns: the login itself succeeded.
fn remember_ca(ctx: &Context, target: &profile::Target, ca: &reqwest::Url) {
    let file = ctx.paths.tilde(&target.config_file);
    let profile = &target.profile;
    match profile::remember_ca(&target.config_file, profile, ca) {
        Ok(profile::Remembered::Unchanged) => {}
        Ok(profile::Remembered::New) => ctx.ui.info(&format!(
            "Remembered {ca} as the CA of profile {profile} in {file}: later jitssh commands need no --ca."
        )),
        Ok(profile::Remembered::Replaced(old)) => ctx.ui.info(&format!(
            "Profile {profile} now uses {ca} (was {old}), in {file}: later jitssh commands need no --ca."
        )),
        Err(e) => ctx.ui.warn(&format!(
            "could not remember the CA in {file} ({e}); pass --ca again next time"
        )),
    }
}

/// Run one command; the exit code is 0 on success, 1 when `status`/`ensure`
/// found nothing valid.
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    // Generated from the command line's definition: nothing else needed.
    let mut generated = Vec::new();
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "jitssh", &mut generated);
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd)
                .render(&mut generated)
                .map_err(|e| CliError::Usage(format!("cannot render the man page: {e}")))?;
        }
        _ => {}
    }
    if !generated.is_empty() {
        // A reader that stops early (`| head`) is not an error.
        let _ = std::io::Write::write_all(&mut std::io::stdout(), &generated);
        return Ok(ExitCode::SUCCESS);
    }
    // Host commands run as root from systemd: no HOME, no profile.
    if let Command::Host(command) = cli.command {
        return Ok(host::run(cli.ca.as_deref(), command).await?);
    }
    let quiet = matches!(&cli.command, Command::Ensure(a) if a.quiet);
    let paths = Paths::from_env()?;
    let target = profile::resolve(
        &paths.config_file,
        cli.ca.as_deref(),
        cli.profile.as_deref(),
    )?;
    let ctx = Context {
        paths,
        http: http_client()?,
        ui: Ui::new(quiet),
        ca_timeout: CA_TIMEOUT,
    };
    match cli.command {
        Command::Login(a) => {
            let ttl_seconds = match a.ttl {
                Some(d) => Some(
                    ca_core::Ttl::from_secs(d.as_secs())
                        .map_err(|e| CliError::Usage(format!("--ttl: {e}")))?
                        .as_secs(),
                ),
                None => target.defaults.ttl_seconds,
            };
            let opts = LoginOptions {
                principals: if a.principals.is_empty() {
                    target.defaults.principals.clone()
                } else {
                    a.principals
                },
                ttl_seconds,
                reason: a.reason,
                device: a.device,
                open_browser: !a.no_browser,
                write: a.write,
                force: a.force,
            };
            let outcome = login::login(&ctx, &target, &opts).await?;
            println!("{}", outcome.summary(&ctx.paths, unix_now()));
            if cli.ca.as_deref().is_some_and(|c| !c.is_empty())
                && let Ok(ca) = target.ca()
            {
                remember_ca(&ctx, &target, ca);
            }
            if let Delivery::Files { key, .. } = &outcome.delivery {
                let key = ctx.paths.tilde(key);
                println!(
                    "Use it with `ssh -i {key} HOST`, or in ~/.ssh/config: IdentityFile {key} and CertificateFile {key}-cert.pub"
                );
            }
            let ssh_config = std::fs::read_to_string(ctx.paths.home.join(".ssh/config"));
            if !ssh_config.is_ok_and(|c| c.contains("jitssh")) {
                ctx.ui.info(&format!(
                    "Hosts certified by this CA are trusted through {}; `jitssh config >> ~/.ssh/config` sets ssh up to use it and to renew certificates.",
                    ctx.paths.tilde(&ctx.paths.known_hosts())
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cert(a) => print_or_exit(
            workload::cert(&ctx, &target, &a).await,
            workload::WorkloadError::exit_code,
        ),
        Command::Status => {
            let valid = status::status(&ctx, &target).await?;
            if let Some(grants) = elevate::active_grants(&ctx, &target).await {
                let now = unix_now();
                for g in grants
                    .iter()
                    .filter(|g| g.state == ca_core::elevation::ElevationState::Approved)
                {
                    println!("elevation {}", elevate::describe(g, now));
                }
            }
            Ok(if valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Elevate(a) => {
            let how = sign_in(a.sign_in);
            let result =
                elevate::elevate(&ctx, &target, &a.role, &a.reason, a.ttl, a.wait, how).await;
            print_or_exit(result, elevate::ElevateError::exit_code)
        }
        Command::Requests(a) => print_or_exit(
            elevate::requests(&ctx, &target, sign_in(a)).await,
            elevate::ElevateError::exit_code,
        ),
        Command::Approve(a) => print_or_exit(
            elevate::decide(&ctx, &target, &a.id, true, a.comment, sign_in(a.sign_in)).await,
            elevate::ElevateError::exit_code,
        ),
        Command::Deny(a) => print_or_exit(
            elevate::decide(&ctx, &target, &a.id, false, a.comment, sign_in(a.sign_in)).await,
            elevate::ElevateError::exit_code,
        ),
        Command::Cancel(a) => print_or_exit(
            elevate::cancel(&ctx, &target, &a.id, a.comment, sign_in(a.sign_in)).await,
            elevate::ElevateError::exit_code,
        ),
        Command::Logout => {
            let removed = status::logout(&ctx, &target).await?;
            if removed.is_empty() {
                println!("Nothing to remove: no jitssh certificate, file or cached sign-in.");
            } else {
                println!("Logged out; removed {}.", removed.join(", "));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor => {
            let checks = doctor::doctor(&ctx, &target).await;
            Ok(if doctor::report(&checks) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        // Printed before HOME or a profile were needed.
        Command::Completions { .. } | Command::Man => Ok(ExitCode::SUCCESS),
        Command::Ensure(a) => {
            match ensure::ensure(&ctx, &target, a.min_left, !a.no_browser).await? {
                ensure::EnsureOutcome::Fresh(_) => {}
                ensure::EnsureOutcome::Renewed(outcome) => {
                    if !a.quiet {
                        println!("{}", outcome.summary(&ctx.paths, unix_now()));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Host(_) => unreachable!("host commands return before the user's paths are read"),
        Command::Config(a) => {
            let exe = std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "jitssh".into());
            let session =
                store::ProfileStore::new(ctx.paths.profile_state(&target.profile)).load_session();
            let identity = session
                .as_ref()
                .and_then(|s| s.write_dir.as_ref())
                .map(|d| ctx.paths.tilde(&Paths::key_file(d, &target.profile)));
            let hosts = a
                .host
                .or_else(|| target.defaults.hosts.clone())
                .unwrap_or_else(|| "*".into());
            let bastion = a.bastion.or_else(|| target.defaults.bastion.clone());
            let known_hosts = ctx.paths.tilde(&ctx.paths.known_hosts());
            let revoked_host_keys = host_krl_for_config(&ctx, &target).await;
            let ca = target
                .ca
                .as_ref()
                .map(|u| u.as_str().trim_end_matches('/').to_owned());
            print!(
                "{}",
                sshconfig::render(&sshconfig::BlockSpec {
                    exe: &exe,
                    profile: &target.profile,
                    ca: ca.as_deref(),
                    hosts: &hosts,
                    bastion: bastion.as_deref(),
                    min_left: a.min_left,
                    known_hosts: &known_hosts,
                    revoked_host_keys: revoked_host_keys.as_deref(),
                    identity_file: identity.as_deref(),
                })
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
