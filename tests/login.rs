//! `jitssh login` end to end: a real OpenID provider (npm `oidc-provider`), a
//! real `jitssh-ca serve` trusting it, a real `ssh-agent` and `sshd`. The
//! person at the browser is `Provider::browser_login` / `device_approve`;
//! `ssh` authenticates with the agent only, and no key file is ever written.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use jitssh_e2e::*;

use crate::provider::{CLIENT_ID, Provider, ProviderUser};

const WAIT: Duration = Duration::from_secs(60);

/// An isolated user: HOME in a temp dir, their own ssh-agent, one CA.
pub(crate) struct User {
    pub(crate) home: tempfile::TempDir,
    pub(crate) agent: SshAgent,
    ca_url: String,
}

impl User {
    pub(crate) fn new(ca_url: &str) -> User {
        User {
            home: tempfile::tempdir().unwrap(),
            agent: SshAgent::start(),
            ca_url: ca_url.to_owned(),
        }
    }

    /// `jitssh ARGS` with nothing from the test runner's environment but PATH.
    pub(crate) fn jitssh(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("jitssh"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("SSH_AUTH_SOCK", &self.agent.socket)
            .env("JITSSH_CA", &self.ca_url)
            .env("JITSSH_LOGIN_TIMEOUT", "60s")
            .args(args);
        cmd
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.jitssh(args).output().unwrap()
    }

    /// Every regular file under HOME but the profile config (the CA that
    /// `login --ca` remembered: no credential, and kept by `logout`).
    fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.home.path(), &mut out);
        let config = self.home.path().join(".config/jitssh/config.toml");
        out.retain(|f| *f != config);
        out
    }

    /// What logout leaves: the host KRL only (no secret; the `jitssh config`
    /// block names it, and ssh refuses every host if it is missing).
    fn kept_after_logout(&self) -> Vec<PathBuf> {
        vec![self.home.path().join(".ssh/jitssh/revoked_hosts.krl")]
    }

    pub(crate) fn assert_no_private_key_on_disk(&self) {
        for f in self.files() {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            assert!(
                !text.contains("PRIVATE KEY"),
                "{} holds a private key",
                f.display()
            );
            assert!(
                !text.contains("-cert-v01@openssh.com"),
                "{} holds a certificate",
                f.display()
            );
        }
    }

    /// `ssh USER@127.0.0.1 true` with the agent as the only source of keys.
    pub(crate) fn ssh(&self, sshd: &Sshd, user: &str) -> Output {
        Command::new("ssh")
            .args(sshd.base_args())
            .arg("-o")
            .arg(format!("IdentityAgent={}", self.agent.socket.display()))
            .arg(format!("{user}@127.0.0.1"))
            .arg("true")
            .env_remove("SSH_AUTH_SOCK")
            .output()
            .unwrap()
    }
}

pub(crate) fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The serial in `Certificate for ... (serial N) ...`.
fn serial_of(summary: &str) -> String {
    summary
        .split("(serial ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no serial in {summary:?}"))
        .to_owned()
}

fn ssh_logged_in_with(sshd: &Sshd, serial: &str) -> bool {
    sshd.log()
        .lines()
        .any(|l| l.contains("Accepted") && l.contains("ED25519-CERT") && l.contains(serial))
}

#[test]
fn browser_login_then_ssh_through_the_agent_refresh_and_logout() {
    require_e2e();
    let ann = ProviderUser::new("e2e-ann", &["developers"]);
    ensure_user(&ann.username);
    let provider = Provider::start(std::slice::from_ref(&ann));
    let ca = CaServer::start(&provider.issuer, CLIENT_ID);
    let sshd = Sshd::start(&ca.user_ca_pub(), &[]);
    let me = User::new(&ca.url);

    // The authorization URL is printed; the "browser" signs in and follows
    // the redirect to jitssh's loopback listener.
    let mut login = Running::spawn(&mut me.jitssh(&["login", "--no-browser"]));
    let issuer = format!("{}/", provider.issuer);
    let url = login.wait_for(WAIT, |l| {
        let l = l.trim();
        l.starts_with(&issuer).then(|| l.to_owned())
    });
    for part in [
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "nonce=",
        "redirect_uri=http%3A%2F%2F127.0.0.1%3A",
    ] {
        assert!(url.contains(part), "{part} missing from {url}");
    }
    provider.browser_login(&url, &ann.username, &ann.password, true);
    let (status, stdout, stderr) = login.finish(WAIT);
    assert!(
        status.success(),
        "login failed\n{stdout}\n{stderr}\n{}",
        provider.log()
    );
    assert!(
        stdout.contains("Certificate for dev, e2e-ann (serial ")
            && stdout.contains(" in ssh-agent, valid until "),
        "{stdout}"
    );
    let serial = serial_of(&stdout);
    let listed = me.agent.list();
    assert!(
        listed.contains("(ED25519-CERT)") && listed.contains(&format!("serial={serial}")),
        "{listed}"
    );

    // Plain ssh, keys from the agent only.
    let out = me.ssh(&sshd, &ann.username);
    assert!(
        out.status.success(),
        "ssh failed: {}\n{}",
        text(&out),
        sshd.log()
    );
    assert!(ssh_logged_in_with(&sshd, &serial), "{}", sshd.log());
    me.assert_no_private_key_on_disk();

    // What is on disk: the managed known_hosts with the host CA, and the
    // cached refresh token, readable by the user only.
    let host_ca = reqwest::blocking::get(format!("{}/v1/ca/host.pub", ca.url))
        .unwrap()
        .text()
        .unwrap();
    let host_ca_blob = host_ca.split_whitespace().nth(1).unwrap();
    let known_hosts =
        std::fs::read_to_string(me.home.path().join(".ssh/jitssh/known_hosts")).unwrap();
    assert_eq!(
        known_hosts,
        format!("@cert-authority * ssh-ed25519 {host_ca_blob} jitssh:default\n")
    );
    let token = me
        .home
        .path()
        .join(".local/state/jitssh/default/token.json");
    let mode = std::fs::metadata(&token).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", token.display());

    // The CA came from JITSSH_CA: the profile remembers it (said once), so
    // later commands need neither the flag nor the variable.
    assert!(
        stderr.contains("Remembered") && stderr.contains("need no --ca"),
        "{stderr}"
    );
    let config =
        std::fs::read_to_string(me.home.path().join(".config/jitssh/config.toml")).unwrap();
    assert!(config.contains(&format!("ca = \"{}", ca.url)), "{config}");
    let status = me
        .jitssh(&["status"])
        .env_remove("JITSSH_CA")
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", text(&status));

    let status = me.run(&["status"]);
    assert!(status.status.success(), "{}", text(&status));
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(
        shown.contains(&format!("ssh-agent: dev, e2e-ann (serial {serial})"))
            && shown.contains("min left"),
        "{shown}"
    );

    // Again: the cached refresh token signs in with no browser. Were the
    // browser needed, the URL would be printed and the login would time out.
    let again = me
        .jitssh(&["login", "--no-browser"])
        .env("JITSSH_LOGIN_TIMEOUT", "10s")
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}\n{}\nCA LOG {}",
        text(&again),
        provider.log(),
        text(
            &Command::new(bin("jitssh-ca"))
                .args(["audit", "list", "--db"])
                .arg(ca.dir.path().join("audit.db"))
                .output()
                .unwrap()
        )
    );
    let again_err = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again_err.contains(&provider.issuer),
        "a URL was printed: {again_err}"
    );
    let serial2 = serial_of(&String::from_utf8_lossy(&again.stdout));
    assert_ne!(serial2, serial);
    // The new certificate replaced the old one in the agent.
    let listed = me.agent.list();
    assert!(listed.contains(&format!("serial={serial2}")), "{listed}");
    assert!(!listed.contains(&format!("serial={serial} ")), "{listed}");
    assert_eq!(listed.lines().count(), 1, "{listed}");

    // A request the policy refuses: its reasons are shown.
    let denied = me.run(&["login", "--principal", "root"]);
    assert!(!denied.status.success());
    let denied_err = String::from_utf8_lossy(&denied.stderr);
    assert!(
        denied_err.contains("the CA's policy refused the certificate:")
            && denied_err
                .contains("\n  - none of the requested principals (root) is allowed for e2e-ann"),
        "{}",
        text(&denied)
    );

    // Logout leaves nothing: no agent identity, no file, no token; and the
    // refresh token is revoked at the provider.
    let cached: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&token).unwrap()).unwrap();
    let refresh_token = cached["refresh_token"].as_str().unwrap().to_owned();
    let out = me.run(&["logout"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("1 certificate from ssh-agent")
            && said.contains("the cached sign-in (revoked at the provider)"),
        "{said}"
    );
    assert_eq!(me.agent.list(), "");
    assert_eq!(me.files(), me.kept_after_logout());
    let (status, body) = provider.token_request(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", &refresh_token),
        ("client_id", CLIENT_ID),
    ]);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let status = me.run(&["status"]);
    assert_eq!(status.status.code(), Some(1), "{}", text(&status));
    assert!(
        String::from_utf8_lossy(&status.stderr).contains("no valid jitssh certificate"),
        "{}",
        text(&status)
    );
    let out = me.ssh(&sshd, &ann.username);
    assert!(!out.status.success(), "ssh still works after logout");
}

#[test]
fn device_login_and_the_agent_forgets_the_key_at_expiry() {
    require_e2e();
    let dee = ProviderUser::new("e2e-dee", &[]);
    ensure_user(&dee.username);
    let provider = Provider::start(std::slice::from_ref(&dee));
    let ca = CaServer::start(&provider.issuer, CLIENT_ID);
    let sshd = Sshd::start(&ca.user_ca_pub(), &[]);
    let me = User::new(&ca.url);

    let ttl = 12;
    let mut login =
        Running::spawn(&mut me.jitssh(&["login", "--device", "--ttl", &format!("{ttl}s")]));
    let (uri, code) = login.wait_for(WAIT, |l| {
        let rest = l.trim().strip_prefix("To sign in, open ")?;
        let (uri, code) = rest.split_once(" on any device and enter the code ")?;
        Some((uri.to_owned(), code.trim().to_owned()))
    });
    assert!(uri.starts_with(&provider.issuer), "{uri}");
    provider.device_approve(&uri, &code, &dee.username, &dee.password);
    let (status, stdout, stderr) = login.finish(WAIT);
    let issued_at = Instant::now();
    assert!(
        status.success(),
        "login failed\n{stdout}\n{stderr}\n{}",
        provider.log()
    );
    assert!(
        stdout.contains("Certificate for e2e-dee (serial "),
        "{stdout}"
    );
    let serial = serial_of(&stdout);
    assert!(
        me.agent.list().contains("(ED25519-CERT)"),
        "{}",
        me.agent.list()
    );

    let out = me.ssh(&sshd, &dee.username);
    assert!(
        out.status.success(),
        "ssh failed: {}\n{}",
        text(&out),
        sshd.log()
    );
    assert!(ssh_logged_in_with(&sshd, &serial), "{}", sshd.log());
    me.assert_no_private_key_on_disk();

    // The lifetime constraint: the agent drops the identity when the
    // certificate expires, not before.
    let gone_after = loop {
        if me.agent.list().is_empty() {
            break issued_at.elapsed();
        }
        assert!(
            issued_at.elapsed() < Duration::from_secs(ttl + 15),
            "the agent still holds the certificate {ttl} s after issuance: {}",
            me.agent.list()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        gone_after >= Duration::from_secs(ttl / 2),
        "the identity left the agent after {gone_after:?}, well before the {ttl} s expiry"
    );
    let out = me.ssh(&sshd, &dee.username);
    assert!(
        !out.status.success(),
        "ssh works with an expired certificate"
    );
    let status = me.run(&["status"]);
    assert_eq!(status.status.code(), Some(1), "{}", text(&status));
}

#[test]
fn dev_ca_without_an_agent_writes_files_and_ensure_renews_silently() {
    require_e2e();
    ensure_user("e2e-fay");
    // The README's first steps: `jitssh-ca dev`, then `jitssh login`.
    let mut dev = Running::spawn(Command::new(bin("jitssh-ca")).args([
        "dev",
        "--listen",
        "127.0.0.1:0",
        "--user",
        "e2e-fay",
    ]));
    let base = dev.wait_for(WAIT, |l| l.strip_prefix("CA:").map(|u| u.trim().to_owned()));
    let user_ca = reqwest::blocking::get(format!("{base}/v1/ca/user.pub"))
        .unwrap()
        .text()
        .unwrap();
    let sshd = Sshd::start(&user_ca, &[]);
    let me = User::new(&base);
    // The dev IdP signs in at once and redirects to the loopback listener.
    let browser = reqwest::blocking::Client::new();

    let mut login = Running::spawn(
        me.jitssh(&["login", "--no-browser"])
            .env_remove("SSH_AUTH_SOCK"),
    );
    let url = login.wait_for(WAIT, |l| {
        let l = l.trim();
        l.starts_with(&format!("{base}/dev-idp/authorize?"))
            .then(|| l.to_owned())
    });
    let page = browser.get(&url).send().unwrap();
    assert!(page.status().is_success(), "{:?}", page.text());
    let (status, stdout, stderr) = login.finish(WAIT);
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("no ssh-agent is running"), "{stderr}");
    let key = me.home.path().join(".ssh/jitssh/id_jitssh");
    let cert = me.home.path().join(".ssh/jitssh/id_jitssh-cert.pub");
    assert!(
        stdout.contains("Certificate for dev, e2e-fay (serial ")
            && stdout.contains("in ~/.ssh/jitssh/id_jitssh,"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ssh -i ~/.ssh/jitssh/id_jitssh HOST"),
        "{stdout}"
    );
    for f in [&key, &cert] {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    let out = sshd.login_with_files("e2e-fay", &key, &cert);
    assert!(out.status.success(), "{}\n{}", text(&out), sshd.log());

    let status = me
        .jitssh(&["status"])
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", text(&status));
    let first = std::fs::read_to_string(&cert).unwrap();

    // Enough time left: nothing to do, no network needed.
    let ok = me
        .jitssh(&["ensure", "--quiet", "--min-left", "1m"])
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", text(&ok));
    assert_eq!((ok.stdout.len(), ok.stderr.len()), (0, 0), "{}", text(&ok));
    assert_eq!(std::fs::read_to_string(&cert).unwrap(), first);
    // Not enough left (the dev policy gives 15 minutes): renewed with the
    // cached refresh token, silently, into the same files.
    let renewed = me
        .jitssh(&["ensure", "--quiet", "--min-left", "20m"])
        .env_remove("SSH_AUTH_SOCK")
        .env("JITSSH_LOGIN_TIMEOUT", "10s")
        .output()
        .unwrap();
    assert!(renewed.status.success(), "{}", text(&renewed));
    assert_eq!(String::from_utf8_lossy(&renewed.stderr), "");
    assert_ne!(std::fs::read_to_string(&cert).unwrap(), first);

    // The ssh_config block uses the files and the managed known_hosts.
    let config = me.run(&["config", "--host", "*.corp"]);
    let block = String::from_utf8_lossy(&config.stdout);
    assert!(
        block.contains("Match host \"*.corp\" exec \"")
            && block.contains("ensure --quiet --min-left 5m\"")
            && block
                .contains("    UserKnownHostsFile ~/.ssh/jitssh/known_hosts ~/.ssh/known_hosts\n")
            && block.contains("    IdentityFile ~/.ssh/jitssh/id_jitssh\n"),
        "{block}"
    );

    let out = me
        .jitssh(&["logout"])
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(me.files(), me.kept_after_logout());
}

/// The `jitssh config` block makes plain `ssh` renew an expired certificate
/// itself: its `Match exec "jitssh ensure"` runs before the connection and
/// logs in again silently with the cached refresh token.
#[test]
fn plain_ssh_renews_through_the_generated_config() {
    require_e2e();
    let gus = ProviderUser::new("e2e-gus", &[]);
    ensure_user(&gus.username);
    let provider = Provider::start(std::slice::from_ref(&gus));
    let ca = CaServer::start(&provider.issuer, CLIENT_ID);
    let sshd = Sshd::start(&ca.user_ca_pub(), &[]);
    let me = User::new(&ca.url);

    let mut login = Running::spawn(&mut me.jitssh(&["login", "--no-browser", "--ttl", "8s"]));
    let issuer = format!("{}/", provider.issuer);
    let url = login.wait_for(WAIT, |l| {
        l.trim().starts_with(&issuer).then(|| l.trim().to_owned())
    });
    provider.browser_login(&url, &gus.username, &gus.password, true);
    let (status, stdout, stderr) = login.finish(WAIT);
    assert!(status.success(), "{stdout}\n{stderr}");
    let first = serial_of(&stdout);

    // Let it expire: the agent forgets it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !me.agent.list().is_empty() {
        assert!(
            Instant::now() < deadline,
            "certificate never left the agent"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let block = me.run(&["config", "--host", "127.0.0.1"]);
    assert!(block.status.success(), "{}", text(&block));
    let block = String::from_utf8_lossy(&block.stdout).into_owned();
    assert!(block.contains("ensure"), "{block}");
    // Test-only settings first (first value wins in ssh_config): this sshd
    // has no host certificate.
    let cfg = me.home.path().join("ssh_config");
    std::fs::write(
        &cfg,
        format!(
            "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  BatchMode yes\n  LogLevel ERROR\n  IdentityAgent {}\n\n{block}",
            me.agent.socket.display()
        ),
    )
    .unwrap();
    let out = Command::new("ssh")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", me.home.path())
        .env("SSH_AUTH_SOCK", &me.agent.socket)
        .env("JITSSH_CA", &me.ca_url)
        .arg("-F")
        .arg(&cfg)
        .args(["-p", &sshd.port.to_string()])
        .arg(format!("{}@127.0.0.1", gus.username))
        .arg("true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "plain ssh did not renew: {}\n{}",
        text(&out),
        sshd.log()
    );
    let accepted: Vec<_> = sshd
        .log()
        .lines()
        .filter(|l| l.contains("Accepted"))
        .map(String::from)
        .collect();
    assert!(
        accepted
            .iter()
            .any(|l| l.contains("ED25519-CERT") && !l.contains(&format!("serial {first} "))),
        "expected a login with a fresh certificate: {accepted:?}"
    );
}

/// A provider that follows OIDC Core §11 strictly (npm `oidc-provider`'s
/// default): a refresh token only with `offline_access`, which it drops
/// unless the request says `prompt=consent`. jitssh asks that way, so one
/// browser sign-in is enough: `ensure` and `login` renew with no browser.
#[test]
fn a_strict_provider_grants_offline_access_and_renewal_needs_no_browser() {
    require_e2e();
    let gil = ProviderUser::new("e2e-gil", &["developers"]);
    ensure_user(&gil.username);
    let provider = Provider::start_with(
        std::slice::from_ref(&gil),
        serde_json::json!({"client": {"refresh_requires_offline_access": true}}),
    );
    let ca = CaServer::start(&provider.issuer, CLIENT_ID);
    let me = User::new(&ca.url);

    let mut login = Running::spawn(&mut me.jitssh(&["login", "--no-browser"]));
    let issuer = format!("{}/", provider.issuer);
    let url = login.wait_for(WAIT, |l| {
        let l = l.trim();
        l.starts_with(&issuer).then(|| l.to_owned())
    });
    assert!(
        url.contains("prompt=consent") && url.contains("offline_access"),
        "{url}"
    );
    provider.browser_login(&url, &gil.username, &gil.password, true);
    let (status, stdout, stderr) = login.finish(WAIT);
    assert!(status.success(), "{stdout}\n{stderr}\n{}", provider.log());
    assert!(!stderr.contains("no refresh token"), "{stderr}");
    assert!(
        me.home
            .path()
            .join(".local/state/jitssh/default/token.json")
            .exists(),
        "{stderr}"
    );

    // The certificate has 15 minutes: asking for 20 left is renewing an
    // expired one, without a browser (none would answer within 10 s).
    let out = me
        .jitssh(&["ensure", "--min-left", "20m", "--no-browser"])
        .env("JITSSH_LOGIN_TIMEOUT", "10s")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), provider.log());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("open this URL"),
        "{}",
        text(&out)
    );
    let out = me
        .jitssh(&["login", "--no-browser"])
        .env("JITSSH_LOGIN_TIMEOUT", "10s")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), provider.log());
}
