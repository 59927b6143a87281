//! `jitssh-ca dev`: a complete CA for a first try in one command: keys, audit
//! database, the default policy and a built-in OpenID provider, all on
//! loopback. Never for production, and it says so on every start.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use ca_core::Limits;

use crate::cli::DevArgs;
use crate::config::{Config, LogFormat, RawLogin};
use crate::devidp::{DevIdp, DevUser};
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

    let username = a.user.clone().unwrap_or_else(default_user);
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

    let policy = Arc::new(match &a.policy_dir {
        Some(d) => PolicyEngine::load_dir(d)?,
        None => PolicyEngine::load_embedded_default()?,
    });
    let config = dev_config(&dir, addr, &issuer, a.policy_dir.clone())?;
    let authority = crate::serve::build_authority(&config, policy)?;
    let extra = axum::Router::new().nest(DEV_IDP_PATH, idp.router());
    let state = crate::serve::app_state(&config, authority, Some(extra));

    eprintln!("==============================================================");
    eprintln!(" jitssh-ca dev: DEVELOPMENT MODE, NOT FOR PRODUCTION");
    eprintln!(" The built-in OpenID provider logs anyone in as the dev user.");
    eprintln!("==============================================================");
    println!("CA:        {base}");
    println!(
        "OIDC:      {issuer} (dev user {username} <{email}>, groups {})",
        a.groups.join(",")
    );
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

fn default_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| ca_core::Principal::parse(u).is_ok() && u != "root")
        .unwrap_or_else(|| "dev".into())
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
        idle_timeout: crate::serve::IDLE_TIMEOUT,
        max_connections: crate::serve::MAX_CONNECTIONS,
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
        unauthenticated_per_minute: crate::issue::DEFAULT_UNAUTHENTICATED_PER_MINUTE,
        elevation: crate::config::ElevationConfig::default(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
