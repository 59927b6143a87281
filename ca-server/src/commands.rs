//! What each `jitssh-ca` subcommand does; `main` only parses and dispatches.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};

use crate::audit::{AuditStore, Filter};
use crate::cli::{
    AuditArgs, AuditCommand, AuditFilter, Command, HostCommand, HostTokenCommand,
    HostTokenCreateArgs, InitArgs, PolicyCommand, RevokeArgs, ServeArgs,
};
use crate::config::Config;
use crate::policy::{PolicyEngine, TestReport};

/// `--log-format` wins; `serve` otherwise uses its config file's setting.
pub fn log_format(cli: &crate::cli::Cli) -> Option<crate::config::LogFormat> {
    cli.log_format.or_else(|| match &cli.command {
        Command::Serve(a) => Config::load(&a.config).ok().map(|c| c.log_format),
        _ => None,
    })
}

/// A generated script or page on stdout; a reader that stops early (`| head`)
/// is not an error.
fn print_generated(text: &[u8]) -> anyhow::Result<ExitCode> {
    match std::io::stdout().write_all(text) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(ExitCode::SUCCESS),
    }
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Init(a) => init(a).map(|_| ExitCode::SUCCESS),
        Command::Serve(a) => serve(a).await.map(|_| ExitCode::SUCCESS),
        Command::Dev(a) => crate::dev::run(a).await.map(|_| ExitCode::SUCCESS),
        Command::Policy(p) => policy(p),
        Command::Audit(a) => audit(a),
        Command::Revoke(a) => revoke(a).await.map(|_| ExitCode::SUCCESS),
        Command::Elevation(e) => elevation(e).await,
        Command::Ca(c) => ca_keys(c).await,
        Command::Db(c) => database(c),
        Command::LoginName(c) => login_name(c).await,
        Command::Completions { shell } => {
            let mut cmd = <crate::cli::Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "jitssh-ca", &mut out);
            print_generated(&out)
        }
        Command::Man => {
            let cmd = <crate::cli::Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .section("8")
                .render(&mut out)
                .context("rendering the man page")?;
            print_generated(&out)
        }
        Command::Host(HostCommand::Token(HostTokenCommand::Create(a))) => {
            host_token_create(a).await.map(|_| ExitCode::SUCCESS)
        }
    }
}

/// `jitssh-ca host token create`: the token on stdout (for scripts), what
/// to do with it on stderr.
async fn host_token_create(a: HostTokenCreateArgs) -> anyhow::Result<()> {
    let config = Config::load(&a.config)?;
    let hostnames = ca_core::hostname::parse_hostnames(&a.hostnames, ca_core::host::MAX_HOSTNAMES)
        .context("--hostname")?;
    let now = crate::clock::now_unix();
    let db = config.database.open()?;
    let store = crate::hosts::JoinTokenStore::open(&db)?;
    let audit = AuditStore::open(&db)?;
    let (token, expires_at) =
        crate::hosts::create_join_token(&store, &audit, &hostnames, a.ttl, now).await?;
    println!("{}", token.expose());
    let names: Vec<&str> = hostnames.iter().map(|h| h.as_str()).collect();
    eprintln!(
        "Single-use join token for {}, valid for {} (until {}). On the host, as root:\n  \
         jitssh host enroll --ca https://CA --token TOKEN\n\
         Treat it like a password: whoever holds it first gets a host certificate for these names.",
        names.join(", "),
        a.ttl,
        crate::audit::format_time(expires_at),
    );
    Ok(())
}

fn init(a: InitArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let config_path = a.dir.join("config.toml");
    if config_path.exists() {
        bail!(
            "{} already exists; refusing to overwrite it",
            config_path.display()
        );
    }
    // The login rule is checked before any key is made.
    let login_rule = |template: String| {
        crate::config::with_login_rule(&template, a.login_claim.as_deref(), &a.email_domains)
    };
    login_rule(crate::config::template(&a.issuer, &a.audience))?;
    let (user, host, template) = match &a.pkcs11 {
        None => {
            let user = crate::keys::generate(&a.dir.join("user_ca"), "jitssh user CA")?;
            let host = crate::keys::generate(&a.dir.join("host_ca"), "jitssh host CA")?;
            (
                user.public_openssh("jitssh user CA"),
                host.public_openssh("jitssh host CA"),
                crate::config::template(&a.issuer, &a.audience),
            )
        }
        Some(module) => {
            let hsm = crate::hsm::Pkcs11Config {
                module: module.clone(),
                token_label: a.token_label.clone().unwrap_or_default(),
                pin_file: a
                    .pin_file
                    .as_ref()
                    .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
                pin_env: a.pin_env.clone(),
                user_key_label: "jitssh-user-ca".into(),
                host_key_label: "jitssh-host-ca".into(),
            };
            let line = |k: ssh_key::public::KeyData, c: &str| {
                ssh_key::PublicKey::new(k, c)
                    .to_openssh()
                    .unwrap_or_default()
            };
            let user = crate::hsm::generate(&hsm, &hsm.user_key_label)?;
            let host = crate::hsm::generate(&hsm, &hsm.host_key_label)?;
            (
                line(user, "jitssh user CA"),
                line(host, "jitssh host CA"),
                crate::config::template_pkcs11(&a.issuer, &a.audience, &hsm),
            )
        }
    };
    let template = login_rule(template)?;
    write_policies(&a.dir.join("policies"))?;
    std::fs::write(&config_path, template)
        .with_context(|| format!("writing {}", config_path.display()))?;
    AuditStore::open(&a.dir.join("audit.db"))?;
    println!("Created {}", a.dir.display());
    println!("  config:   {}", config_path.display());
    println!("  user CA:  {user}");
    println!("  host CA:  {host}");
    println!();
    println!("Next steps:");
    println!(
        "  1. Edit [login] and [[issuers]] in {} for your OpenID provider.",
        config_path.display()
    );
    if a.login_claim.is_none() && a.email_domains.is_empty() {
        println!(
            "     Set login_claim (and email_domains) there too, or rerun with --email-domain: until then nobody gets a personal principal."
        );
    }
    println!("  2. Add TLS (server.tls_cert / tls_key) before listening beyond loopback.");
    println!(
        "  3. jitssh-ca policy test {}",
        a.dir.join("policies").display()
    );
    println!("  4. jitssh-ca serve --config {}", config_path.display());
    println!(
        "  5. On hosts: put the user CA line in /etc/ssh/trusted_user_ca_keys and set TrustedUserCAKeys (see deploy/sshd)."
    );
    Ok(())
}

/// Write the embedded default policy into `dir`, for `init` to start from.
fn write_policies(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in crate::policy::EMBEDDED_FILES {
        let p = dir.join(name);
        if !p.exists() {
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        }
    }
    Ok(())
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::load(&a.config)?;
    if let Some(listen) = a.listen {
        let danger = false;
        config.set_listen(listen, danger)?;
    }
    let policy = Arc::new(
        PolicyEngine::load_dir(&config.policy_dir)
            .with_context(|| format!("loading policy from {}", config.policy_dir.display()))?,
    );
    let authority = crate::serve::build_authority(&config, policy)?;
    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, tls = config.tls.is_some(), "jitssh-ca listening");
    println!(
        "jitssh-ca listening on {}://{addr}",
        if config.tls.is_some() {
            "https"
        } else {
            "http"
        }
    );
    let state = crate::serve::app_state(&config, authority, None)?;
    crate::serve::run(&config, state, listener, crate::serve::shutdown_signal()).await
}

fn policy(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    let default_dir = || PathBuf::from("policies");
    match cmd {
        PolicyCommand::Test { dir } => {
            let dir = dir.unwrap_or_else(default_dir);
            let report = crate::policy::run_tests(&dir)?;
            print_report(&report);
            Ok(if report.failed() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        PolicyCommand::Eval { input, dir } => {
            let dir = dir.unwrap_or_else(default_dir);
            let engine = PolicyEngine::load_dir(&dir)?;
            let text = std::fs::read_to_string(&input)
                .with_context(|| format!("reading {}", input.display()))?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", input.display()))?;
            let eval = engine.evaluate(&value)?;
            match eval.decision {
                Some(d) => println!("{}", serde_json::to_string_pretty(&d)?),
                None => {
                    println!("undefined (the server denies)");
                    return Ok(ExitCode::FAILURE);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_report(report: &TestReport) {
    for r in &report.results {
        match (&r.passed, &r.error) {
            (true, _) => println!("PASS {}", r.name),
            (false, Some(e)) => println!("FAIL {}: {e}", r.name),
            (false, None) => println!("FAIL {}", r.name),
        }
    }
    println!("{} passed, {} failed", report.passed(), report.failed());
}

fn audit(a: AuditArgs) -> anyhow::Result<ExitCode> {
    let db = match (&a.db, &a.config) {
        (Some(db), _) => crate::config::Database::Sqlite(db.clone()),
        (None, Some(c)) => Config::load(c)?.database,
        (None, None) => bail!(
            "which CA? add --config FILE (the CA's config) or --db FILE (its SQLite audit database), before or after the subcommand"
        ),
    };
    if let Some(path) = db.sqlite_path()
        && !path.exists()
    {
        bail!("audit database {} does not exist", path.display());
    }
    let db = db.open()?;
    // Read-only: creates nothing and starts no writer, so it is safe beside a
    // running server.
    let store = AuditStore::open_read_only(&db)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match a.command {
        AuditCommand::List(f) => {
            for e in store.list(&filter(f))? {
                writeln!(out, "{}", crate::audit::format_event_line(&e))?;
            }
        }
        AuditCommand::Show { seq } => match store.show(seq)? {
            Some(e) => writeln!(out, "{}", crate::audit::format_event_detail(&e))?,
            None => bail!("no audit row {seq}"),
        },
        AuditCommand::Verify => {
            let report = store.verify()?;
            if report.is_ok() {
                writeln!(
                    out,
                    "ok: {} rows, chain head {}",
                    report.rows, report.last_hash
                )?;
            } else {
                if let Some(e) = &report.error {
                    writeln!(out, "BROKEN: {e}")?;
                }
                if let Some(m) = &report.index_error {
                    writeln!(
                        out,
                        "BROKEN: row {}: column {} disagrees with the hashed event",
                        m.seq, m.column
                    )?;
                }
                return Ok(ExitCode::FAILURE);
            }
        }
        AuditCommand::Export(f) => {
            drop(out);
            store.export(&filter(f), &mut std::io::stdout())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn filter(f: AuditFilter) -> Filter {
    Filter {
        subject: f.subject,
        principal: f.principal,
        since: f.since,
        until: f.until,
        action: f.action,
        outcome: f.outcome,
        serial: f.serial.map(|s| s.to_string()),
        limit: f.limit,
        ..Filter::default()
    }
}

async fn ca_keys(command: crate::cli::CaCommand) -> anyhow::Result<ExitCode> {
    use crate::cli::{CaCommand, KeyKind, RotateStep};
    use crate::rotation;
    match command {
        CaCommand::Status { config } => {
            let config = Config::load(&config)?;
            if let Some(p) = &config.pkcs11 {
                let admin = crate::hsm::TokenAdmin::open_read_only(p)?;
                for (kind, label) in [("user", &p.user_key_label), ("host", &p.host_key_label)] {
                    for k in rotation::token::published(&admin, label)? {
                        println!(
                            "{kind} {:<8} {} (PKCS#11 token {:?}, key {:?})",
                            k.state,
                            k.key.fingerprint(Default::default()),
                            p.token_label,
                            match k.state {
                                "signing" => label.clone(),
                                state => format!("{label}.{state}"),
                            }
                        );
                    }
                    if let Some(r) = rotation::token::last_switch(&admin, label)? {
                        println!(
                            "{kind} last switch {}; the retiring key may be retired after {}",
                            crate::audit::format_time(r.switched_at),
                            crate::audit::format_time(r.retire_after)
                        );
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            for (kind, path) in [("user", &config.user_ca_key), ("host", &config.host_ca_key)] {
                for p in rotation::published(path)? {
                    println!(
                        "{kind} {:<8} {}",
                        p.state,
                        p.key.fingerprint(Default::default())
                    );
                }
                if let Some(r) = rotation::last_switch(path)? {
                    println!(
                        "{kind} last switch {}; the retiring key may be retired after {}",
                        crate::audit::format_time(r.switched_at),
                        crate::audit::format_time(r.retire_after)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        CaCommand::Rotate {
            config: config_path,
            kind,
            step,
            force,
        } => {
            let config = Config::load(&config_path)?;
            let (name, path, label, lifetime) = match kind {
                KeyKind::User => (
                    "user",
                    &config.user_ca_key,
                    config.pkcs11.as_ref().map(|p| p.user_key_label.as_str()),
                    config.limits.max_ttl.as_secs(),
                ),
                KeyKind::Host => (
                    "host",
                    &config.host_ca_key,
                    config.pkcs11.as_ref().map(|p| p.host_key_label.as_str()),
                    config.host_max_ttl.as_secs(),
                ),
            };
            // Keys in a PKCS#11 token rotate by label (rotation::token).
            let token = match (&config.pkcs11, label) {
                (Some(p), Some(label)) => Some((crate::hsm::TokenAdmin::open(p)?, label)),
                _ => None,
            };
            let lifetime = lifetime + ca_core::cert::BACKDATE_SECS;
            let now = crate::clock::now_unix();
            let (what, detail) = match step {
                RotateStep::Next => {
                    let k = match &token {
                        Some((admin, label)) => rotation::token::add_next(admin, label)?,
                        None => rotation::add_next(path, &format!("jitssh {name} CA"))?,
                    };
                    let fp = k.fingerprint(Default::default()).to_string();
                    println!("created the next {name} CA key {fp}");
                    println!(
                        "restart jitssh-ca to publish it; switch once every host has synced it (jitssh host sync / the jitssh-host-sync timer) and clients have logged in again"
                    );
                    ("next", serde_json::json!({"fingerprint": fp}))
                }
                RotateStep::Switch => {
                    let r = match &token {
                        Some((admin, label)) => {
                            rotation::token::switch(admin, label, now, lifetime)?
                        }
                        None => rotation::switch(path, now, lifetime)?,
                    };
                    println!(
                        "the next {name} CA key signs from the next start of jitssh-ca; restart it now. The previous key stays published until {} (then: jitssh-ca ca rotate --kind {name} retire)",
                        crate::audit::format_time(r.retire_after)
                    );
                    (
                        "switch",
                        serde_json::json!({"retire_after": r.retire_after}),
                    )
                }
                RotateStep::Retire => {
                    match &token {
                        Some((admin, label)) => rotation::token::retire(admin, label, now, force)?,
                        None => rotation::retire(path, now, force)?,
                    }
                    println!(
                        "retired the previous {name} CA key; restart jitssh-ca to stop publishing it"
                    );
                    ("retire", serde_json::json!({"forced": force}))
                }
            };
            drop(token);
            let audit = AuditStore::open(config.database.open()?)?;
            let mut details = detail;
            details["kind"] = serde_json::json!(name);
            details["step"] = serde_json::json!(what);
            audit
                .append(
                    ca_core::audit::AuditEvent {
                        time: now,
                        action: "ca_rotate".into(),
                        outcome: what.into(),
                        details: Some(details),
                        ..Default::default()
                    },
                    None,
                )
                .await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn database(command: crate::cli::DbCommand) -> anyhow::Result<ExitCode> {
    use crate::cli::DbCommand;
    match command {
        DbCommand::Migrate { config, from } => {
            let config = Config::load(&config)?;
            let target = config.database.open()?;
            let source = crate::db::Db::from(&from);
            let report = crate::migrate::migrate(&source, &target)?;
            for (table, rows) in &report.tables {
                println!("{table:<18} {rows} rows");
            }
            println!(
                "copied into {}; audit chain verified there over {} rows (last hash {}). Start the replicas on it; keep {} as the record of the move",
                target.describe(),
                report.chain_rows,
                report.last_hash,
                from.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The elevation service over a CA's database, for the operator commands.
fn elevations(config_path: &std::path::Path) -> anyhow::Result<crate::elevation::Elevations> {
    let config = Config::load(config_path)?;
    let policy = std::sync::Arc::new(PolicyEngine::load_dir(&config.policy_dir)?);
    let db = config.database.open()?;
    let audit = AuditStore::open(&db)?;
    Ok(crate::elevation::Elevations::open(
        &db,
        audit,
        policy,
        config.elevation.clone(),
        crate::clock::now_unix(),
    )?)
}

async fn elevation(command: crate::cli::ElevationCommand) -> anyhow::Result<ExitCode> {
    use crate::cli::ElevationCommand;
    let now = crate::clock::now_unix();
    match command {
        ElevationCommand::List {
            config,
            state,
            limit,
            json,
        } => {
            use ca_core::elevation::ElevationState;
            // `active` means approved; a name that is no state matches
            // nothing (it has never been an error here).
            let want: Option<Option<ElevationState>> = state.as_deref().map(|s| match s {
                "active" => Some(ElevationState::Approved),
                s => s.parse().ok(),
            });
            let service = elevations(&config)?;
            for row in service.all(limit)? {
                let e = row.to_wire(vec![], now, false);
                if want.is_some_and(|w| w != Some(e.state)) {
                    continue;
                }
                if json {
                    println!("{}", serde_json::to_string(&e)?);
                } else {
                    let who = e.requester.email.clone().unwrap_or_else(|| {
                        format!("{}#{}", e.requester.issuer, e.requester.subject)
                    });
                    println!(
                        "{} {} {} {} by {} until {} reason={:?}",
                        e.id,
                        crate::audit::format_time(e.created_at),
                        e.state,
                        e.role,
                        ca_core::escape_control(&who),
                        crate::audit::format_time(e.expires_at),
                        ca_core::escape_control(&e.reason),
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ElevationCommand::Show { config, id } => {
            let e = elevations(&config)?.show(&id, now)?;
            println!("{}", serde_json::to_string_pretty(&e)?);
            Ok(ExitCode::SUCCESS)
        }
        ElevationCommand::Revoke {
            config,
            id,
            reason,
            operator,
        } => {
            let reason = reason
                .as_deref()
                .map(ca_core::request::parse_reason)
                .transpose()?;
            let operator = operator
                .or_else(|| std::env::var("SUDO_USER").ok())
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "operator".into());
            let e = elevations(&config)?
                .revoke(&id, &operator, reason, now)
                .await?;
            let issued = if e.grant_starts_at.is_some() {
                "certificates already issued under it are revoked (hosts refuse them after their next `jitssh host sync`), and "
            } else {
                ""
            };
            println!(
                "elevation {} is {}; {issued}new certificates for {} are refused within a second",
                e.id,
                e.state,
                e.principals.join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn revoke(a: RevokeArgs) -> anyhow::Result<()> {
    use crate::revocation::Target;
    let config = Config::load(&a.config)?;
    let issuers = config.issuers.iter().map(|i| i.issuer.as_str());
    let target = if let Some(serial) = a.serial {
        Target::Serial(serial)
    } else if let Some(id) = a.key_id {
        Target::KeyId(id)
    } else if let Some(s) = a.subject {
        crate::revoke::parse_issuer_subject(issuers, &s)?
    } else if let Some(path) = a.key {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        crate::revoke::parse_key(&text).with_context(|| format!("{}", path.display()))?
    } else if let Some(host) = a.host {
        Target::Host(ca_core::hostname::HostName::parse(&host).with_context(|| "--host")?)
    } else {
        bail!("say what to revoke: --serial, --key-id, --subject, --key or --host");
    };
    let reason = crate::revoke::parse_reason(a.reason.as_deref())?;
    let now = crate::clock::now_unix();
    let db = config.database.open()?;
    // The table exists before the first revocation is recorded in it.
    crate::revocation::RevocationStore::open(&db)?;
    let audit = AuditStore::open(&db)?;
    // No signed-in identity here: the row says the command line revoked.
    let event = ca_core::audit::AuditEvent {
        time: now,
        ..Default::default()
    };
    let added = crate::revoke::revoke(
        &audit,
        &target,
        reason,
        event,
        config.limits.max_ttl.as_secs(),
    )
    .await?;
    for (kind, value) in &added {
        println!("revoked {kind} {}", ca_core::escape_control(value));
    }
    println!(
        "In force within a second on the CA; hosts pick it up with their next KRL sync (GET /v1/krl), clients with their next `jitssh login` or `jitssh config` (GET /v1/krl/hosts)."
    );
    Ok(())
}

async fn login_name(command: crate::cli::LoginNameCommand) -> anyhow::Result<ExitCode> {
    use crate::cli::LoginNameCommand;
    use crate::logins::LoginNames;
    let open = |config: &Path| -> anyhow::Result<(Config, LoginNames)> {
        let config = Config::load(config)?;
        let audit = AuditStore::open(config.database.open()?)?;
        let names = LoginNames::open(audit)?;
        Ok((config, names))
    };
    let reason = |r: Option<String>| r.as_deref().map(ca_core::request::parse_reason).transpose();
    let now = crate::clock::now_unix();
    match command {
        LoginNameCommand::List { config, json } => {
            let (_, names) = open(&config)?;
            for b in names.list()? {
                if json {
                    println!("{}", serde_json::to_string(&b)?);
                } else {
                    println!(
                        "{} {} {} {} since {}",
                        b.login,
                        ca_core::escape_control(&b.issuer),
                        ca_core::escape_control(&b.subject),
                        b.bound_by,
                        crate::audit::format_time(b.bound_at),
                    );
                }
            }
        }
        LoginNameCommand::Import { config, dry_run } => {
            let (config, names) = open(&config)?;
            let report = names.import(&config.issuers, dry_run, now).await?;
            let verb = if dry_run { "would bind" } else { "bound" };
            for b in &report.bound {
                println!(
                    "{verb} {} to {} {}",
                    b.login,
                    ca_core::escape_control(&b.issuer),
                    ca_core::escape_control(&b.subject)
                );
            }
            for (name, issuer, subject) in &report.refused {
                println!(
                    "not {name} for {} {}: another identity received or holds it (`jitssh-ca login-name map` if it is theirs)",
                    ca_core::escape_control(issuer),
                    ca_core::escape_control(subject)
                );
            }
            println!(
                "{} names {verb}, {} refused",
                report.bound.len(),
                report.refused.len()
            );
        }
        LoginNameCommand::Release {
            config,
            name,
            reason: why,
        } => {
            let why = reason(why)?;
            let (_, names) = open(&config)?;
            let old = names.release(&name, why, now).await?;
            println!(
                "released {} (held by {} {}); the next identity to use it gets it, on running servers within a second",
                old.login,
                ca_core::escape_control(&old.issuer),
                ca_core::escape_control(&old.subject)
            );
        }
        LoginNameCommand::Map {
            config,
            name,
            issuer,
            subject,
            reason: why,
        } => {
            let why = reason(why)?;
            let (config, names) = open(&config)?;
            if !config.issuers.iter().any(|i| i.issuer == issuer) {
                bail!(
                    "--issuer {:?} is not one of the configured [[issuers]]",
                    ca_core::escape_control(&issuer)
                );
            }
            let previous = names.map(&name, &issuer, &subject, why, now).await?;
            let before = previous.map_or_else(
                || "nobody".to_owned(),
                |p| {
                    format!(
                        "{} {}",
                        ca_core::escape_control(&p.issuer),
                        ca_core::escape_control(&p.subject)
                    )
                },
            );
            println!(
                "{} now belongs to {} {} (before: {before}); on running servers within a second",
                name.to_ascii_lowercase(),
                ca_core::escape_control(&issuer),
                ca_core::escape_control(&subject)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
