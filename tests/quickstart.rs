//! README's quickstart, as written, for a newcomer: `jitssh-ca dev` with the
//! README's `--groups dba,oncall`, `jitssh login --ca URL` (the browser step
//! is an HTTP GET: the dev provider signs in at once), then `jitssh status`
//! and `jitssh elevate db-admin --reason "INC-1 ..." --wait` with no `--ca`,
//! then plain ssh to a real sshd as the personal principal and as the role's
//! `postgres` — as root with `USER` unset (containers, CI runners) and with
//! `USER=alice`.

use std::process::{Command, Output};
use std::time::Duration;

use jitssh_e2e::*;

const WAIT: Duration = Duration::from_secs(60);
/// The account a host maps the role's `postgres` principal to.
const DB_ACCOUNT: &str = "e2e-qs-db";

/// `jitssh ARGS` as a newcomer types it: no JITSSH_CA, nothing but HOME,
/// the agent and PATH from the environment.
fn jitssh(home: &std::path::Path, agent: &SshAgent, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("jitssh"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("SSH_AUTH_SOCK", &agent.socket)
        .env("JITSSH_LOGIN_TIMEOUT", "60s")
        .args(args);
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ssh(sshd: &Sshd, agent: &SshAgent, user: &str) -> Output {
    Command::new("ssh")
        .args(sshd.base_args())
        .arg("-o")
        .arg(format!("IdentityAgent={}", agent.socket.display()))
        .arg(format!("{user}@127.0.0.1"))
        .arg("true")
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap()
}

/// The quickstart with `USER` as given (`None`: unset), expecting the dev
/// user `expected`.
fn quickstart(user_env: Option<&str>, expected: &str) {
    require_e2e();
    let mut cmd = Command::new(bin("jitssh-ca"));
    cmd.args(["dev", "--listen", "127.0.0.1:0", "--groups", "dba,oncall"])
        .env_remove("USER")
        .env_remove("LOGNAME");
    if let Some(u) = user_env {
        cmd.env("USER", u);
    }
    let mut dev = Running::spawn(&mut cmd);
    let base = dev.wait_for(WAIT, |l| l.strip_prefix("CA:").map(|u| u.trim().to_owned()));
    let (name, why) = dev.wait_for(WAIT, |l| {
        l.strip_prefix("User:").map(|rest| {
            let (name, why) = rest.trim().split_once(": ").unwrap();
            (name.to_owned(), why.to_owned())
        })
    });
    assert_eq!(name, expected, "dev picked {name:?}: {why}");
    ensure_user(&name);
    // The role's principal is `postgres`; the machine's own postgres account
    // (if PostgreSQL is installed) is locked, which sshd refuses whatever
    // the key. A host maps principals to accounts: `e2e-qs-db` accepts
    // `postgres`, every other account its own name.
    ensure_user(DB_ACCOUNT);
    let user_ca = reqwest::blocking::get(format!("{base}/v1/ca/user.pub"))
        .unwrap()
        .text()
        .unwrap();
    let principals = tempfile::tempdir().unwrap();
    std::fs::write(principals.path().join(&name), format!("{name}\n")).unwrap();
    std::fs::write(principals.path().join(DB_ACCOUNT), "postgres\n").unwrap();
    let sshd = Sshd::start(
        &user_ca,
        &[format!(
            "AuthorizedPrincipalsFile {}/%u",
            principals.path().display()
        )],
    );
    let home = tempfile::tempdir().unwrap();
    let agent = SshAgent::start();

    // Before anything: `jitssh doctor` says what is missing, and how to fix it.
    let out = jitssh(home.path(), &agent, &["doctor", "--ca", &base])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "doctor before login: {}",
        text(&out)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    for line in [
        "ok    CA ",
        "ok    clock ",
        "ok    ssh-agent ",
        "ok    OpenSSH ",
        "FAIL  ssh config ",
        "FAIL  known_hosts ",
        "FAIL  certificate ",
        "FAIL  sign-in ",
    ] {
        assert!(said.contains(line), "{line:?} missing: {said}");
    }

    // `jitssh login --ca URL`; the browser is a GET that follows the dev
    // provider's redirect to jitssh's loopback listener.
    let mut login = Running::spawn(&mut jitssh(
        home.path(),
        &agent,
        &["login", "--ca", &base, "--no-browser"],
    ));
    let url = login.wait_for(WAIT, |l| {
        let l = l.trim();
        l.starts_with(&format!("{base}/dev-idp/authorize?"))
            .then(|| l.to_owned())
    });
    let page = reqwest::blocking::get(&url).unwrap();
    assert!(page.status().is_success(), "{:?}", page.text());
    let (status, stdout, stderr) = login.finish(WAIT);
    assert!(
        status.success(),
        "login: {stdout}\n{stderr}\n{}",
        dev.stderr
    );
    assert!(
        stdout.contains(&format!("Certificate for {name}"))
            || stdout.contains(&format!(", {name} (serial")),
        "{stdout}"
    );
    assert!(stderr.contains("need no --ca"), "{stderr}");

    // No --ca from here on.
    let out = jitssh(home.path(), &agent, &["status"]).output().unwrap();
    assert!(out.status.success(), "status: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&name),
        "{}",
        text(&out)
    );
    let out = ssh(&sshd, &agent, &name);
    assert!(
        out.status.success(),
        "ssh {name}: {}\n{}",
        text(&out),
        sshd.log()
    );

    let out = ssh(&sshd, &agent, DB_ACCOUNT);
    assert!(!out.status.success(), "no grant yet: {}", text(&out));

    // On call and citing a ticket: approved at once, a certificate with
    // `postgres` in the agent.
    let out = jitssh(
        home.path(),
        &agent,
        &["elevate", "db-admin", "--reason", "INC-1 try it", "--wait"],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "elevate: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("db-admin (postgres): active until"),
        "{}",
        text(&out)
    );
    let out = ssh(&sshd, &agent, DB_ACCOUNT);
    assert!(
        out.status.success(),
        "ssh as postgres: {}\n{}",
        text(&out),
        sshd.log()
    );
    let out = jitssh(home.path(), &agent, &["requests"]).output().unwrap();
    assert!(out.status.success(), "requests: {}", text(&out));

    // Set up as the README says: `jitssh config >> ~/.ssh/config`; then
    // doctor finds nothing to fix.
    let out = jitssh(home.path(), &agent, &["config"]).output().unwrap();
    assert!(out.status.success(), "config: {}", text(&out));
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    std::fs::write(home.path().join(".ssh/config"), &out.stdout).unwrap();
    let out = jitssh(home.path(), &agent, &["doctor"]).output().unwrap();
    assert!(out.status.success(), "doctor after login: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("All 8 checks passed."),
        "{}",
        text(&out)
    );
}

#[test]
fn quickstart_as_root_with_user_unset() {
    quickstart(None, "jitssh-dev");
}

#[test]
fn quickstart_with_user_alice() {
    quickstart(Some("alice"), "alice");
}
