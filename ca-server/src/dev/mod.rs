//! `jitssh-ca dev`: a complete CA for a first try in one command: keys, audit
//! database, the default policy and a built-in OpenID provider, all on
//! loopback. Never for production, and it says so on every start.

pub mod idp;

use std::sync::Arc;

use anyhow::{Context as _, bail};
use ca_core::Limits;
use idp::{DevIdp, DevUser};

use crate::cli::DevArgs;
use crate::config::{Config, LogFormat, RawLogin};
use crate::oidc::IssuerConfig;
use crate::policy::PolicyEngine;

pub const DEV_CLIENT_ID: &str = "jitssh-dev";
pub const DEV_IDP_PATH: &str = "/dev-idp";

pub async fn run(a: DevArgs) -> anyhow::Result<()> {
    if !a.listen.ip().is_loopback() {
        bail!(
            "jitssh-ca dev listens on loopback only (got {}); use `jitssh-ca serve` for anything else",
            a.listen
        );
    }
    // A throw-away directory lives as long as this process.
    let (_tmp, dir) = match &a.dir {
        Some(d) => {
            claim_dir(d)?;
            (None, d.clone())
        }
        None => {
            let t = tempfile::Builder::new().prefix("jitssh-dev-").tempdir()?;
            let p = t.path().to_owned();
            (Some(t), p)
        }
    };
    for (file, comment) in [
        ("user_ca", "jitssh dev user CA"),
        ("host_ca", "jitssh dev host CA"),
    ] {
        let p = dir.join(file);
        if !p.exists() {
            crate::keys::generate(&p, comment)?;
        }
    }

    let listener =
        std::net::TcpListener::bind(a.listen).with_context(|| format!("binding {}", a.listen))?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");
    let issuer = format!("{base}{DEV_IDP_PATH}");

    let policy = Arc::new(match &a.policy_dir {
        Some(d) => PolicyEngine::load_dir(d)?,
        None => PolicyEngine::load_embedded_default()?,
    });
    let config = dev_config(&dir, addr, &issuer, a.policy_dir.clone())?;

    let (username, why) = pick_user(
        a.user.as_deref(),
        env_user(),
        &a.groups,
        &policy,
        &config.limits,
    );
    let email = a
        .email
        .clone()
        .unwrap_or_else(|| format!("{username}@example.com"));
    let user = DevUser {
        username: username.clone(),
        email: email.clone(),
        groups: a.groups.clone(),
    };
    let idp = DevIdp::new(issuer.clone(), DEV_CLIENT_ID.into(), vec![user]);
    let authority = crate::serve::build_authority(&config, policy)?;
    let extra = axum::Router::new().nest(DEV_IDP_PATH, idp.router());
    let state = crate::serve::app_state(&config, authority, Some(extra))?;

    eprintln!("==============================================================");
    eprintln!(" jitssh-ca dev: DEVELOPMENT MODE, NOT FOR PRODUCTION");
    eprintln!(" The built-in OpenID provider logs anyone in as the dev user.");
    eprintln!("==============================================================");
    println!("CA:        {base}");
    println!("Console:   {base}/ui/");
    println!(
        "OIDC:      {issuer} (dev user {username} <{email}>, groups {})",
        a.groups.join(",")
    );
    println!("User:      {username}: {why}");
    println!(
        "Data:      {}{}",
        dir.display(),
        if a.dir.is_none() {
            " (deleted on exit)"
        } else {
            ""
        }
    );
    println!(
        "User CA:   {}",
        state.authority.user_ca.public_openssh("jitssh dev user CA")
    );
    println!();
    println!("Next:      jitssh login --ca {base}");
    crate::serve::run(&config, state, listener, crate::serve::shutdown_signal()).await
}

/// The file `dev` writes into a `--dir` it creates; only a directory that
/// holds it (or is empty) is used again.
pub const DEV_MARKER: &str = "jitssh-dev-ca";

/// Make `dir` a dev directory, or check that it already is one. A
/// directory with anything else in it (a CA made by `jitssh-ca init`, its
/// keys, config or database) is refused: `dev` would serve those keys behind
/// an OpenID provider that logs anyone in.
pub fn claim_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let marker = dir.join(DEV_MARKER);
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    let refuse = |why: String| -> anyhow::Result<()> {
        bail!(
            "refusing to run `jitssh-ca dev` on {}: {why}. Its built-in OpenID provider logs \
             anyone in, so it must never hold a real CA's keys; give --dir a new or empty directory",
            dir.display()
        )
    };
    if entries.iter().any(|e| e == "config.toml") {
        return refuse("it holds a config.toml (a CA made by `jitssh-ca init`)".into());
    }
    match std::fs::symlink_metadata(&marker) {
        Ok(m) if m.is_file() => return Ok(()),
        Ok(_) => return refuse(format!("{DEV_MARKER} is not a regular file")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", marker.display())),
    }
    if !entries.is_empty() {
        let mut names = entries;
        names.sort();
        names.truncate(5);
        return refuse(format!(
            "it is not a jitssh-ca dev directory (no {DEV_MARKER} file) and is not empty ({}{})",
            names.join(", "),
            if names.len() == 5 { ", ..." } else { "" }
        ));
    }
    std::fs::write(
        &marker,
        "Made by `jitssh-ca dev`: development keys behind an OpenID provider that logs anyone in.\n\
         Never trust these CA keys on a real host.\n",
    )
    .with_context(|| format!("writing {}", marker.display()))
}

/// The dev user when `$USER` cannot be: a name the default policy gives a
/// personal principal (not reserved, not a group's shared account).
pub const FALLBACK_USER: &str = "jitssh-dev";

/// Who runs `dev`, by the usual variables (`USER` is unset in most
/// containers and CI runners, where `LOGNAME` may be set).
fn env_user() -> Option<String> {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
}

/// The dev user's name and why it was chosen: `--user` as given; else the
/// login name of whoever runs `dev` if the serving policy would give it a
/// personal principal (root and the groups' shared accounts, like the
/// default policy's `dev`, it would not); else [`FALLBACK_USER`]. The policy
/// itself is asked (a preview evaluation, nothing issued), so a custom
/// policy is honoured too.
pub fn pick_user(
    explicit: Option<&str>,
    env_user: Option<String>,
    groups: &[String],
    policy: &PolicyEngine,
    limits: &Limits,
) -> (String, String) {
    if let Some(u) = explicit {
        return (u.to_owned(), "from --user".into());
    }
    let refused = match env_user {
        Some(u) => {
            let name = u.to_ascii_lowercase();
            if grants_personal_principal(policy, limits, &name, groups) {
                return (name, "your login name ($USER)".into());
            }
            format!(
                "$USER {:?} would get no personal principal from the policy",
                ca_core::escape_control(&u)
            )
        }
        None => "$USER is not set".into(),
    };
    let why = if grants_personal_principal(policy, limits, FALLBACK_USER, groups) {
        format!("{refused}; choose another with --user NAME")
    } else {
        format!(
            "{refused}, and the policy gives none to {FALLBACK_USER:?} either: pass --user NAME"
        )
    };
    (FALLBACK_USER.into(), why)
}

/// Would `policy` certify `name` as a dev user's own login name?
fn grants_personal_principal(
    policy: &PolicyEngine,
    limits: &Limits,
    name: &str,
    groups: &[String],
) -> bool {
    let Ok(login) = ca_core::LoginName::parse(name) else {
        return false;
    };
    let identity = ca_core::VerifiedIdentity {
        kind: ca_core::IdentityKind::Human,
        issuer: "https://dev.invalid".into(),
        subject: name.into(),
        email: Some(format!("{name}@example.com")),
        email_verified: true,
        groups: groups.to_vec(),
        login: Some(login),
        login_problem: None,
        claims: serde_json::Map::new(),
    };
    let key = ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
        .ok()
        .and_then(|k| k.public_key().to_openssh().ok());
    let Some(public_key) = key else {
        return false;
    };
    let Ok(req) = ca_core::CertRequest::parse(&ca_core::wire::UserCertRequest {
        public_key,
        principals: Some(vec![name.to_owned()]),
        ttl_seconds: None,
        reason: None,
    }) else {
        return false;
    };
    let input = ca_core::policy::PolicyInput::user_cert(
        &identity,
        &req,
        "127.0.0.1".into(),
        crate::clock::now_unix(),
    );
    let Ok(input) = serde_json::to_value(&input) else {
        return false;
    };
    policy
        .evaluate(&input)
        .ok()
        .and_then(|eval| ca_core::policy::enforce(eval.decision.as_ref(), &req, limits).ok())
        .is_some_and(|grant| grant.principals().iter().any(|p| p.to_string() == name))
}

/// The configuration `dev` runs with, as if written by hand.
pub fn dev_config(
    dir: &std::path::Path,
    listen: std::net::SocketAddr,
    issuer: &str,
    policy_dir: Option<std::path::PathBuf>,
) -> anyhow::Result<Config> {
    let max_ttl = ca_core::Ttl::from_secs(3600).map_err(|e| anyhow::anyhow!(e))?;
    Ok(Config {
        listen,
        tls: None,
        request_timeout: std::time::Duration::from_secs(10),
        header_read_timeout: std::time::Duration::from_secs(5),
        idle_timeout: crate::config::DEFAULT_IDLE_TIMEOUT,
        max_connections: crate::config::DEFAULT_MAX_CONNECTIONS,
        max_body_bytes: 64 * 1024,
        log_format: LogFormat::Human,
        user_ca_key: dir.join("user_ca"),
        host_ca_key: dir.join("host_ca"),
        pkcs11: None,
        database: crate::config::Database::Sqlite(dir.join("audit.db")),
        policy_dir: policy_dir.unwrap_or_else(|| dir.join("policies")),
        policy_reload: std::time::Duration::from_secs(2),
        limits: Limits::new(max_ttl),
        host_max_ttl: ca_core::Ttl::from_secs(ca_core::Ttl::ABSOLUTE_MAX)
            .map_err(|e| anyhow::anyhow!(e))?,
        login: Some(RawLogin {
            issuer: issuer.to_owned(),
            client_id: DEV_CLIENT_ID.into(),
            scopes: ["openid", "email", "profile", "groups", "offline_access"]
                .map(String::from)
                .to_vec(),
            authorization_params: Default::default(),
        }),
        issuers: vec![IssuerConfig {
            issuer: issuer.to_owned(),
            audiences: vec![DEV_CLIENT_ID.into()],
            groups_claim: "groups".into(),
            ca_bundle: None,
            kind: ca_core::IdentityKind::Human,
            access_token_audience: None,
            // The built-in IdP's usernames are set by whoever runs `dev`.
            login: ca_core::LoginRule::claim("preferred_username"),
        }],
        rate_per_minute: 60,
        rate_burst: 20,
        unauthenticated_per_minute: crate::config::DEFAULT_UNAUTHENTICATED_PER_MINUTE,
        elevation: crate::config::ElevationConfig::default(),
        // The console, on the address `dev` listens on (plain HTTP: loopback).
        ui: Some(crate::config::UiConfig {
            public_url: reqwest::Url::parse(&format!("http://{listen}/"))?,
            issuer: issuer.to_owned(),
            client_id: DEV_CLIENT_ID.into(),
            client_secret_file: None,
            scopes: ["openid", "email", "profile", "groups"]
                .map(String::from)
                .to_vec(),
            idle_timeout: std::time::Duration::from_secs(30 * 60),
            max_session: std::time::Duration::from_secs(8 * 3600),
        }),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_dev_user_is_one_the_policy_gives_a_personal_principal() {
        let policy = PolicyEngine::load_embedded_default().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dev_config(
            dir.path(),
            "127.0.0.1:0".parse().unwrap(),
            "http://127.0.0.1:1/dev-idp",
            None,
        )
        .unwrap();
        let limits = &config.limits;
        let groups = vec!["dba".to_owned(), "oncall".to_owned()];
        let pick =
            |env: Option<&str>| pick_user(None, env.map(str::to_owned), &groups, &policy, limits);
        // Root (no $USER in most containers), reserved and shared names fall
        // back, saying why; an ordinary name is kept, lowercased.
        for (env, why) in [
            (None, "$USER is not set"),
            (Some("root"), "would get no personal principal"),
            (Some("dev"), "would get no personal principal"),
            (Some("postgres"), "would get no personal principal"),
            (Some("x y"), "would get no personal principal"),
        ] {
            let (name, reason) = pick(env);
            assert_eq!(name, FALLBACK_USER, "{env:?}");
            assert!(
                reason.contains(why) && reason.contains("--user"),
                "{env:?}: {reason}"
            );
        }
        assert_eq!(pick(Some("alice")).0, "alice");
        assert_eq!(pick(Some("Alice")).0, "alice");
        assert_eq!(
            pick_user(Some("bob"), None, &groups, &policy, limits),
            ("bob".to_owned(), "from --user".to_owned())
        );
        assert!(grants_personal_principal(
            &policy,
            limits,
            FALLBACK_USER,
            &[]
        ));
        assert!(!grants_personal_principal(&policy, limits, "root", &groups));
    }

    #[test]
    fn dev_uses_only_new_empty_or_its_own_directories() {
        let root = tempfile::tempdir().unwrap();
        // New, then empty: claimed, and again later.
        let new = root.path().join("new");
        claim_dir(&new).unwrap();
        assert!(new.join(DEV_MARKER).is_file());
        crate::keys::generate(&new.join("user_ca"), "jitssh dev user CA").unwrap();
        claim_dir(&new).unwrap();
        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        claim_dir(&empty).unwrap();
        // Anything else: refused, nothing written.
        let prod = root.path().join("prod");
        std::fs::create_dir(&prod).unwrap();
        crate::keys::generate(&prod.join("user_ca"), "jitssh user CA").unwrap();
        let e = claim_dir(&prod).unwrap_err().to_string();
        assert!(
            e.contains("not a jitssh-ca dev directory") && e.contains("user_ca"),
            "{e}"
        );
        assert!(!prod.join(DEV_MARKER).exists());
        // A config.toml means `jitssh-ca init`, even beside a marker.
        std::fs::write(new.join("config.toml"), "").unwrap();
        let e = claim_dir(&new).unwrap_err().to_string();
        assert!(e.contains("config.toml"), "{e}");
    }
}
