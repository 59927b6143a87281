//! Hosts and bastions end to end: machines provisioned the way
//! `deploy/sshd/README.md` says (the shipped drop-ins, `jitssh host sync`,
//! `jitssh host enroll` with a join token from `jitssh-ca host token create`),
//! real sshds presenting host certificates, and a real `ssh` that trusts them
//! through one `@cert-authority` line with `StrictHostKeyChecking=yes` — also
//! through a bastion with `ProxyJump`. `jitssh host renew` and `sync` against a
//! CA that is down or answers garbage.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use jitssh_e2e::*;
use serde_json::json;

/// A stand-in for one machine's `/etc/ssh`: its own Ed25519 host key, an
/// `sshd_config.d` directory, and room for what `jitssh host` writes.
pub(crate) struct EtcSsh {
    pub(crate) dir: PathBuf,
}

impl EtcSsh {
    fn new(work: &Path, name: &str) -> EtcSsh {
        let dir = work.join(name);
        std::fs::create_dir_all(dir.join("sshd_config.d")).unwrap();
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(dir.join("ssh_host_ed25519_key")),
        );
        EtcSsh { dir }
    }

    pub(crate) fn host_key(&self) -> PathBuf {
        self.dir.join("ssh_host_ed25519_key")
    }

    fn host_pub(&self) -> PathBuf {
        self.dir.join("ssh_host_ed25519_key.pub")
    }

    pub(crate) fn host_cert(&self) -> PathBuf {
        self.dir.join("ssh_host_ed25519_key-cert.pub")
    }

    fn dropin(&self, name: &str) -> PathBuf {
        self.dir.join("sshd_config.d").join(name)
    }

    /// Install a shipped drop-in from `deploy/sshd`, its `/etc/ssh/` paths
    /// pointing here.
    fn install(&self, name: &str) {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/sshd")
            .join(name);
        let text = std::fs::read_to_string(&shipped).unwrap();
        let here = format!("{}/", self.dir.display());
        std::fs::write(self.dropin(name), text.replace("/etc/ssh/", &here)).unwrap();
    }

    /// `auth_principals/USER`: the certificate principals that may log in as USER.
    fn allow(&self, user: &str, principals: &[&str]) {
        let dir = self.dir.join("auth_principals");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(user), format!("{}\n", principals.join("\n"))).unwrap();
    }
}

/// A real sshd configured like a Debian host: `Include sshd_config.d/*.conf`
/// first (so the drop-ins win), then the bare essentials of a test server.
pub(crate) struct HostSshd {
    pub(crate) port: u16,
    log: PathBuf,
    child: Child,
}

impl HostSshd {
    fn start(etc: &EtcSsh) -> HostSshd {
        let d = &etc.dir;
        let port = free_port();
        let config = format!(
            "Include {d}/sshd_config.d/*.conf\nPort {port}\nListenAddress 127.0.0.1\n\
             HostKey {d}/ssh_host_ed25519_key\nPidFile {d}/sshd.pid\nUsePAM no\n\
             AuthorizedKeysFile none\nStrictModes no\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let log = d.join("sshd.log");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        let mut sshd = HostSshd { port, log, child };
        sshd.wait_listening(1);
        sshd
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_listening(&mut self, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.log().matches("Server listening on").count() < times {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sshd exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `systemctl reload ssh`: SIGHUP makes sshd re-execute with its files
    /// read afresh (a new host certificate, say).
    pub(crate) fn reload(&mut self) {
        let before = self.log().matches("Server listening on").count();
        run_ok(
            Command::new("kill")
                .arg("-HUP")
                .arg(self.child.id().to_string()),
        );
        self.wait_listening(before + 1);
    }
}

impl Drop for HostSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `jitssh host ARGS --ca URL`, as root on the host would run it.
pub(crate) fn jitssh_host(ca_url: &str, args: &[&str]) -> Output {
    Command::new(bin("jitssh"))
        .arg("host")
        .args(args)
        .args(["--ca", ca_url])
        .env_remove("JITSSH_CA")
        .env_remove("JITSSH_JOIN_TOKEN")
        .output()
        .unwrap()
}

pub(crate) fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `jitssh-ca host token create --hostname ...`: the token is all of stdout.
pub(crate) fn join_token(ca: &CaServer, hostnames: &[&str]) -> String {
    let mut cmd = Command::new(bin("jitssh-ca"));
    cmd.args(["host", "token", "create", "--config"])
        .arg(ca.config());
    for h in hostnames {
        cmd.args(["--hostname", h]);
    }
    let out = run_ok(&mut cmd);
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("jitssh-join-"), "{token}");
    let guidance = String::from_utf8_lossy(&out.stderr);
    assert!(guidance.contains("jitssh host enroll"), "{guidance}");
    token
}

/// A machine set up as deploy/sshd/README.md describes: the shipped
/// drop-ins, principals for `users`, `jitssh host sync`, then
/// `jitssh host enroll` for `hostnames`, then sshd started.
pub(crate) fn provision(
    ca: &CaServer,
    work: &Path,
    name: &str,
    hostnames: &[&str],
    dropins: &[&str],
    users: &[&str],
) -> (EtcSsh, HostSshd) {
    let etc = EtcSsh::new(work, name);
    for d in dropins {
        etc.install(d);
    }
    for u in users {
        etc.allow(u, &[u]);
    }
    ok(jitssh_host(
        &ca.url,
        &["sync", "--dir", etc.dir.to_str().unwrap()],
    ));
    let token = join_token(ca, hostnames);
    let enrolled = ok(jitssh_host(
        &ca.url,
        &[
            "enroll",
            "--token",
            &token,
            "--key",
            etc.host_pub().to_str().unwrap(),
            "--sshd-dropin",
            etc.dropin("jitssh-host.conf").to_str().unwrap(),
        ],
    ));
    let said = String::from_utf8_lossy(&enrolled.stdout);
    assert!(said.contains("Reload sshd"), "{said}");
    let dropin = std::fs::read_to_string(etc.dropin("jitssh-host.conf")).unwrap();
    assert!(
        dropin.contains(&format!("HostCertificate {}", etc.host_cert().display())),
        "{dropin}"
    );
    let sshd = HostSshd::start(&etc);
    assert!(
        !sshd.log().contains("Could not load host certificate"),
        "{}",
        sshd.log()
    );
    (etc, sshd)
}

/// A user key and its certificate from the CA, as files KEY and KEY-cert.pub.
pub(crate) fn user_cert(
    ca: &CaServer,
    issuer: &Issuer,
    dir: &Path,
    name: &str,
) -> (PathBuf, PathBuf) {
    let (key, public) = keygen(dir, &format!("{name}-{}", rand_suffix()));
    let (status, body) = ca.request_cert(
        &issuer.token(&user(name, &[])),
        json!({"public_key": public}),
    );
    assert_eq!(status, 200, "{body}");
    let mut cert = key.clone().into_os_string();
    cert.push("-cert.pub");
    let cert = PathBuf::from(cert);
    std::fs::write(
        &cert,
        format!("{}\n", body["certificate"].as_str().unwrap()),
    )
    .unwrap();
    (key, cert)
}

/// A known_hosts file with only `@cert-authority * HOST_CA_KEY`.
pub(crate) fn cert_authority_known_hosts(ca: &CaServer, dir: &Path) -> PathBuf {
    let host_ca = reqwest::blocking::get(format!("{}/v1/ca/host.pub", ca.url))
        .unwrap()
        .text()
        .unwrap();
    let path = dir.join("known_hosts");
    std::fs::write(&path, format!("@cert-authority * {}", host_ca.trim())).unwrap();
    path
}

pub(crate) fn host_cert_serial(cert: &Path) -> u64 {
    ssh_key::Certificate::read_file(cert).unwrap().serial()
}

fn rand_suffix() -> u64 {
    rand_core::RngCore::next_u64(&mut rand_core::OsRng)
}

/// `ssh -F CONFIG DEST CMD` with extra options.
pub(crate) fn ssh(config: &Path, extra: &[&str], dest: &str, cmd: &str) -> Output {
    Command::new("ssh")
        .arg("-F")
        .arg(config)
        .args(extra)
        .arg(dest)
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn enrolled_host_is_trusted_through_one_cert_authority_line() {
    require_e2e();
    let login = "e2e-hostcert";
    ensure_user(login);
    let issuer = Issuer::start("jitssh-e2e", vec![]);
    let ca = CaServer::start(&issuer.url, "jitssh-e2e");
    let work = tempfile::tempdir().unwrap();
    let (etc, mut sshd) = provision(
        &ca,
        work.path(),
        "web",
        &["web01.e2e.test", "web01"],
        &["jitssh.conf"],
        &[login],
    );
    let (key, cert) = user_cert(&ca, &issuer, work.path(), login);
    let known_hosts = cert_authority_known_hosts(&ca, work.path());
    let known_before = std::fs::read(&known_hosts).unwrap();
    let config = work.path().join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host *\n  HostName 127.0.0.1\n  Port {port}\n  User {login}\n  \
             StrictHostKeyChecking yes\n  UserKnownHostsFile {kh}\n  GlobalKnownHostsFile /dev/null\n  \
             CheckHostIP no\n  BatchMode yes\n  ConnectTimeout 10\n  LogLevel ERROR\n  \
             IdentityAgent none\n  IdentitiesOnly yes\n  IdentityFile {key}\n  CertificateFile {cert}\n",
            port = sshd.port,
            kh = known_hosts.display(),
            key = key.display(),
            cert = cert.display(),
        ),
    )
    .unwrap();

    // Every server here is 127.0.0.1; `HostKeyAlias` gives ssh the name it
    // would otherwise have looked up in DNS, and checks the certificate against.
    let alias = |name: &str| format!("HostKeyAlias={name}");

    // Under each certified name: no prompt, nothing learnt, logged in.
    for name in ["web01.e2e.test", "web01"] {
        let out = ssh(&config, &["-o", &alias(name)], name, "id -un");
        assert!(
            out.status.success(),
            "{name}: {}\n{}",
            text(&out.stderr),
            sshd.log()
        );
        assert_eq!(text(&out.stdout).trim(), login);
    }
    assert_eq!(std::fs::read(&known_hosts).unwrap(), known_before);

    // The same server reached under a name its certificate does not carry:
    // another host name, or its bare address.
    for name in [
        "other.example",
        "web01.e2e.test.evil.example",
        "[127.0.0.1]",
    ] {
        let out = ssh(&config, &["-o", &alias(name)], "web01.e2e.test", "true");
        assert!(!out.status.success(), "{name} must be refused");
        let said = text(&out.stderr);
        assert!(
            said.contains("name is not a listed principal")
                && said.contains("Host key verification failed"),
            "{name}: {said}"
        );
    }

    // Renewal: proof of possession of the host key, no token; sshd presents
    // the new certificate after a reload, and clients still trust it.
    let before = host_cert_serial(&etc.host_cert());
    let renewed = ok(jitssh_host(
        &ca.url,
        &["renew", "--key", etc.host_key().to_str().unwrap()],
    ));
    assert!(
        text(&renewed.stdout).contains("Renewed"),
        "{}",
        text(&renewed.stdout)
    );
    let after = host_cert_serial(&etc.host_cert());
    assert_ne!(before, after);
    sshd.reload();
    let out = ssh(
        &config,
        &["-o", "LogLevel=DEBUG", "-o", &alias("web01.e2e.test")],
        "web01.e2e.test",
        "true",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("serial {after} ")),
        "sshd presents the renewed certificate: {}",
        text(&out.stderr)
    );

    // A host whose certificate is signed by the *user* CA key (which the CA
    // never does): same name, refused.
    let rogue = EtcSsh::new(work.path(), "rogue");
    rogue.install("jitssh.conf");
    rogue.allow(login, &[login]);
    ok(jitssh_host(
        &ca.url,
        &["sync", "--dir", rogue.dir.to_str().unwrap()],
    ));
    run_ok(
        Command::new("ssh-keygen")
            .arg("-s")
            .arg(ca.dir.path().join("user_ca"))
            .args(["-h", "-I", "rogue", "-n", "web01.e2e.test", "-V", "-5m:+1h"])
            .arg(rogue.host_pub()),
    );
    std::fs::write(
        rogue.dropin("jitssh-host.conf"),
        format!("HostCertificate {}\n", rogue.host_cert().display()),
    )
    .unwrap();
    let rogue_sshd = HostSshd::start(&rogue);
    let out = ssh(
        &config,
        &[
            "-p",
            &rogue_sshd.port.to_string(),
            "-o",
            &alias("web01.e2e.test"),
            "-o",
            "LogLevel=DEBUG",
        ],
        "web01.e2e.test",
        "true",
    );
    assert!(
        !out.status.success(),
        "a host certificate from the user CA must not be trusted"
    );
    let said = text(&out.stderr);
    assert!(
        said.contains("Server host certificate: ssh-ed25519-cert-v01@openssh.com")
            && said.contains("ID \"rogue\"")
            && said.contains("No matching CA found")
            && said.contains("Host key verification failed"),
        "the rogue presented its certificate and ssh refused its CA: {said}"
    );

    // Every step is in the CA's audit log.
    let list = text(&ca.ca_command(&["audit", "list"]).stdout);
    assert!(list.contains("host_token_create"), "{list}");
    assert!(list.contains("host_cert"), "{list}");
    assert!(ca.ca_command(&["audit", "verify"]).status.success());
}

#[test]
fn proxyjump_through_a_bastion_with_one_certificate_from_the_agent() {
    require_e2e();
    let login = "e2e-jumper";
    ensure_user(login);
    let issuer = Issuer::start("jitssh-e2e", vec![]);
    let ca = CaServer::start(&issuer.url, "jitssh-e2e");
    let work = tempfile::tempdir().unwrap();
    let (_b, bastion) = provision(
        &ca,
        work.path(),
        "bastion",
        &["bastion.e2e.test"],
        &["jitssh.conf", "jitssh-bastion.conf"],
        &[login],
    );
    let (_t, target) = provision(
        &ca,
        work.path(),
        "target",
        &["target.e2e.test"],
        &["jitssh.conf"],
        &[login],
    );

    // One certificate, in a real ssh-agent; the files are gone afterwards.
    let (key, cert) = user_cert(&ca, &issuer, work.path(), login);
    let agent = SshAgent::start();
    run_ok(
        Command::new("ssh-add")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &agent.socket),
    );
    assert!(agent.list().contains("ED25519-CERT"), "{}", agent.list());
    std::fs::remove_file(&key).unwrap();
    std::fs::remove_file(&cert).unwrap();

    let known_hosts = cert_authority_known_hosts(&ca, work.path());
    let config = work.path().join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host bastion.e2e.test\n  HostName 127.0.0.1\n  HostKeyAlias bastion.e2e.test\n  Port {b}\n\
             Host target.e2e.test\n  HostName 127.0.0.1\n  HostKeyAlias target.e2e.test\n  Port {t}\n  \
             ProxyJump bastion.e2e.test\n\
             Host *\n  User {login}\n  IdentityAgent {sock}\n  ForwardAgent no\n  \
             StrictHostKeyChecking yes\n  UserKnownHostsFile {kh}\n  GlobalKnownHostsFile /dev/null\n  \
             CheckHostIP no\n  BatchMode yes\n  ConnectTimeout 10\n  LogLevel ERROR\n",
            b = bastion.port,
            t = target.port,
            sock = agent.socket.display(),
            kh = known_hosts.display(),
        ),
    )
    .unwrap();

    let out = ssh(&config, &[], "target.e2e.test", "id -un");
    assert!(
        out.status.success(),
        "ssh -J failed: {}\nbastion:\n{}\ntarget:\n{}",
        text(&out.stderr),
        bastion.log(),
        target.log()
    );
    assert_eq!(text(&out.stdout).trim(), login);
    for (name, sshd) in [("bastion", &bastion), ("target", &target)] {
        assert!(
            sshd.log()
                .contains(&format!("Accepted publickey for {login}")),
            "{name} saw no certificate login:\n{}",
            sshd.log()
        );
    }

    // The bastion relays, and nothing else: a command there does not run.
    let out = ssh(&config, &[], "bastion.e2e.test", "echo ran-on-the-bastion");
    assert!(!out.status.success());
    assert!(!text(&out.stdout).contains("ran-on-the-bastion"));
    assert!(
        text(&out.stdout).contains("not available") || text(&out.stderr).contains("not available"),
        "nologin answered: {} {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A CA impostor: answers every request with 200 and an HTML page.
fn garbage_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = "<html><body>502 Bad Gateway, but said with a 200</body></html>";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn host_sync_feeds_sshd_and_keeps_the_last_good_copy() {
    require_e2e();
    let login = "e2e-synced";
    ensure_user(login);
    let issuer = Issuer::start("jitssh-e2e", vec![]);
    let ca = CaServer::start(&issuer.url, "jitssh-e2e");
    let work = tempfile::tempdir().unwrap();
    let etc = EtcSsh::new(work.path(), "synced");
    etc.install("jitssh.conf");
    etc.allow(login, &[login]);
    let sshd = HostSshd::start(&etc);
    let (k1, c1) = user_cert(&ca, &issuer, work.path(), login);
    let (k2, c2) = user_cert(&ca, &issuer, work.path(), login);
    let login_with = |key: &Path, cert: &Path| {
        Command::new("ssh")
            .args(["-F", "/dev/null", "-p", &sshd.port.to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "IdentityAgent=none",
            ])
            .args(["-o", "IdentitiesOnly=yes", "-i"])
            .arg(key)
            .arg("-o")
            .arg(format!("CertificateFile={}", cert.display()))
            .arg(format!("{login}@127.0.0.1"))
            .arg("true")
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .status
            .success()
    };

    // Nothing synced yet: no trusted CA and no KRL, so sshd refuses.
    assert!(!login_with(&k1, &c1));

    let dir = etc.dir.to_str().unwrap();
    let out = ok(jitssh_host(&ca.url, &["sync", "--dir", dir]));
    assert!(text(&out.stdout).contains("Wrote"), "{}", text(&out.stdout));
    let trusted = etc.dir.join("trusted_user_ca_keys");
    let krl = etc.dir.join("revoked_keys");
    assert_eq!(std::fs::read_to_string(&trusted).unwrap(), ca.user_ca_pub());
    assert!(std::fs::read(&krl).unwrap().starts_with(b"SSHKRL\n\0"));
    assert!(login_with(&k1, &c1), "{}", sshd.log());
    assert!(login_with(&k2, &c2));

    // Revoke the first certificate; the next sync (once the CA has it, within
    // a second) makes sshd refuse it and only it.
    let serial = ssh_key::Certificate::read_file(&c1).unwrap().serial();
    let revoke = ca.ca_command(&["revoke", "--serial", &serial.to_string(), "--reason", "e2e"]);
    assert!(revoke.status.success(), "{}", text(&revoke.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        ok(jitssh_host(&ca.url, &["sync", "--dir", dir]));
        let q = Command::new("ssh-keygen")
            .arg("-Q")
            .arg("-f")
            .arg(&krl)
            .arg(&c1)
            .output()
            .unwrap();
        if q.status.code() == Some(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the KRL never listed serial {serial}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!login_with(&k1, &c1), "revoked");
    assert!(login_with(&k2, &c2), "not revoked");

    // The CA down, or something else answering in its place: sync fails
    // loudly and sshd keeps working from the last good copies.
    let good = (
        std::fs::read(&trusted).unwrap(),
        std::fs::read(&krl).unwrap(),
    );
    let down = format!("http://127.0.0.1:{}", free_port());
    for url in [down, garbage_server()] {
        let out = jitssh_host(&url, &["sync", "--dir", dir]);
        assert!(!out.status.success(), "{url}: sync must fail");
        let err = text(&out.stderr);
        assert_eq!(
            err.matches("kept the last good copy").count(),
            2,
            "{url}: {err}"
        );
        assert_eq!(
            (
                std::fs::read(&trusted).unwrap(),
                std::fs::read(&krl).unwrap()
            ),
            good,
            "{url}: files untouched"
        );
        assert!(!login_with(&k1, &c1), "{url}: still revoked");
        assert!(login_with(&k2, &c2), "{url}: still trusted");
    }
}
