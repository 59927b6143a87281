//! Harness for the end-to-end suites: real `jitssh-ca` processes, real
//! OpenSSH (`sshd`, `ssh`, `ssh-keygen`, `ssh-agent`), a token issuer on
//! loopback. Everything binds 127.0.0.1 on free ports and is torn down on drop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use ca_server::dev::idp::{DevIdp, DevUser};
pub use mint::MintExt;

#[path = "../ca-server/tests/common/mint.rs"]
mod mint;

/// End-to-end prerequisites are mandatory: in CI a missing `sshd` or a
/// non-root user fails the suite instead of skipping it.
pub fn require_e2e() {
    let mut missing = Vec::new();
    if !Path::new("/usr/sbin/sshd").exists() {
        missing.push("OpenSSH server (apt-get install -y openssh-server)");
    }
    if !is_root() {
        missing.push("root (sshd must run as root to log in as other users)");
    }
    for tool in ["ssh", "ssh-keygen", "ssh-agent", "ssh-add"] {
        if Command::new(tool).arg("-V").output().is_err() && which(tool).is_none() {
            missing.push("OpenSSH client tools");
        }
    }
    if !missing.is_empty() {
        panic!(
            "end-to-end prerequisites missing: {}. Run `tests/run`, which installs them.",
            missing.join(", ")
        );
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.exists())
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

/// Path of a workspace binary built by `cargo test --workspace`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/e2e-HASH → target/debug/NAME
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built; run the suite with `cargo test --workspace` (or `cargo build --workspace --bins` first)",
        p.display()
    );
    p
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early with {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on port {port} within 20 s");
}

/// A self-signed P-256 TLS certificate for 127.0.0.1 in `dir`: `tls.crt`
/// and `tls.key` (openssl).
pub fn self_signed_tls(dir: &Path) {
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1"])
            // webpki refuses a CA certificate as a server's own certificate.
            .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
            .arg(dir.join("tls.key"))
            .arg("-out")
            .arg(dir.join("tls.crt")),
    );
}

/// A local account for sshd to log in as (created once, no password).
pub fn ensure_user(name: &str) {
    let exists = Command::new("id")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    if exists.success() {
        return;
    }
    // `-p '*'`: no usable password, but not "locked" (sshd refuses locked accounts).
    let out = Command::new("useradd")
        .args(["-M", "-s", "/bin/sh", "-p", "*", name])
        .output()
        .unwrap();
    // A parallel test may have created it meanwhile.
    let again = Command::new("id")
        .arg(name)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(
        again.success(),
        "useradd {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A token issuer (the dev OpenID provider) served on loopback from a
/// background runtime.
pub struct Issuer {
    pub idp: Arc<DevIdp>,
    pub url: String,
    _rt: tokio::runtime::Runtime,
}

impl Issuer {
    pub fn start(client_id: &str, users: Vec<DevUser>) -> Issuer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let idp = DevIdp::new(url.clone(), client_id.into(), users);
        let router = idp.clone().router();
        rt.spawn(async move { axum::serve(listener, router).await });
        Issuer { idp, url, _rt: rt }
    }

    pub fn token(&self, user: &DevUser) -> String {
        self.idp.id_token_for(user, self.idp.client_id(), None, 300)
    }
}

pub fn user(name: &str, groups: &[&str]) -> DevUser {
    DevUser {
        username: name.into(),
        email: format!("{name}@example.com"),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

/// `jitssh-ca serve --config CONFIG` on a free loopback port, once it
/// listens: its URL and process.
pub fn spawn_serve(config: &Path) -> (String, Child) {
    spawn_serve_on(config, free_port())
}

/// [`spawn_serve`] on `port` (for a config that names its own address,
/// like the console's `public_url`).
pub fn spawn_serve_on(config: &Path, port: u16) -> (String, Child) {
    let mut child = Command::new(bin("jitssh-ca"))
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_for_port(port, &mut child, "jitssh-ca serve");
    (format!("http://127.0.0.1:{port}"), child)
}

/// `jitssh-ca init` a CA in `dir` trusting `issuer` for `audience`, login
/// names from `preferred_username` (the test issuers' usernames are set by
/// the tests).
pub fn init_ca(dir: &Path, issuer: &str, audience: &str) {
    let out = Command::new(bin("jitssh-ca"))
        .args(["init", "--dir"])
        .arg(dir)
        .args(["--issuer", issuer, "--audience", audience])
        .args(["--login-claim", "preferred_username"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `jitssh-ca serve` process with its own config, keys and database.
pub struct CaServer {
    pub url: String,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl CaServer {
    /// `init` a fresh CA trusting `issuer`, then `serve` it.
    pub fn start(issuer: &str, audience: &str) -> CaServer {
        Self::start_with(issuer, audience, |_| {})
    }

    /// [`CaServer::start`], with `prepare(dir)` run between `init` and
    /// `serve` (to edit `config.toml` or the `policies/` folder).
    pub fn start_with(issuer: &str, audience: &str, prepare: impl FnOnce(&Path)) -> CaServer {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), issuer, audience);
        prepare(dir.path());
        let (url, child) = Self::spawn(dir.path());
        CaServer { url, dir, child }
    }

    /// `serve` a CA directory prepared by the caller (e.g. `init --pkcs11`).
    pub fn serve_dir(dir: tempfile::TempDir) -> CaServer {
        let (url, child) = Self::spawn(dir.path());
        CaServer { url, dir, child }
    }

    fn spawn(dir: &Path) -> (String, Child) {
        spawn_serve(&dir.join("config.toml"))
    }

    /// Kill the server (SIGKILL: no chance to flush anything) and start it
    /// again on the same config, keys and database.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (url, child) = Self::spawn(self.dir.path());
        self.url = url;
        self.child = child;
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    pub fn user_ca_pub(&self) -> String {
        reqwest::blocking::get(format!("{}/v1/ca/user.pub", self.url))
            .unwrap()
            .text()
            .unwrap()
    }

    /// `POST /v1/certs/user`; returns status and JSON body.
    pub fn request_cert(&self, token: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.post("/v1/certs/user", token, body)
    }

    /// `POST path` with a bearer token and a JSON body; status and JSON answer.
    pub fn post(
        &self,
        path: &str,
        token: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let resp = reqwest::blocking::Client::new()
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(serde_json::Value::Null))
    }

    /// Run `jitssh-ca` with this server's config (e.g. `audit verify`).
    pub fn ca_command(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(bin("jitssh-ca"));
        let (first, rest) = args.split_first().unwrap();
        cmd.arg(first).arg("--config").arg(self.config()).args(rest);
        cmd.output().unwrap()
    }
}

impl Drop for CaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real `sshd` on a loopback port.
pub struct Sshd {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Sshd {
    /// Start sshd trusting `user_ca_pub`. `extra` lines are appended to its config.
    pub fn start(user_ca_pub: &str, extra: &[String]) -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join("host_key")),
        );
        std::fs::write(d.join("trusted_user_ca_keys"), user_ca_pub).unwrap();
        let port = free_port();
        let mut conf = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {pid}\nUsePAM no\n\
             AuthorizedKeysFile none\nTrustedUserCAKeys {ca}\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPermitRootLogin no\nStrictModes no\nLogLevel VERBOSE\n",
            hk = d.join("host_key").display(),
            pid = d.join("sshd.pid").display(),
            ca = d.join("trusted_user_ca_keys").display(),
        );
        for l in extra {
            conf.push_str(l);
            conf.push('\n');
        }
        std::fs::write(d.join("sshd_config"), conf).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let mut child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(d.join("sshd.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        wait_for_port(port, &mut child, "sshd");
        Sshd { port, dir, child }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// `ssh USER@127.0.0.1 true` with exactly this key and certificate.
    pub fn login_with_files(&self, user: &str, key: &Path, cert: &Path) -> Output {
        Command::new("ssh")
            .args(self.base_args())
            .arg("-o")
            .arg(format!("CertificateFile={}", cert.display()))
            .arg("-i")
            .arg(key)
            .args(["-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"])
            .arg(format!("{user}@127.0.0.1"))
            .arg("true")
            .output()
            .unwrap()
    }

    pub fn base_args(&self) -> Vec<String> {
        [
            "-F",
            "/dev/null",
            "-p",
            &self.port.to_string(),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A fresh Ed25519 key pair on disk (for tests that need files).
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key),
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public)
}

impl CaServer {
    /// Send a signal (e.g. "HUP", "TERM") to the server process.
    pub fn signal(&self, sig: &str) {
        run_ok(
            Command::new("sh")
                .arg("-c")
                .arg(format!("kill -{sig} {}", self.child.id())),
        );
    }
}

/// A real `ssh-agent` on its own socket in a temp dir; dropped = killed.
pub struct SshAgent {
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
    child: Child,
}

impl SshAgent {
    pub fn start() -> SshAgent {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let mut child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("ssh-agent exited early with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "ssh-agent made no socket in 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        SshAgent {
            socket,
            _dir: dir,
            child,
        }
    }

    /// `ssh-add -l`: the listing (empty when the agent has no identities).
    pub fn list(&self) -> String {
        let out = Command::new("ssh-add")
            .arg("-l")
            .env("SSH_AUTH_SOCK", &self.socket)
            .output()
            .unwrap();
        match out.status.code() {
            Some(0) => String::from_utf8_lossy(&out.stdout).into_owned(),
            // 1: the agent has no identities.
            Some(1) => String::new(),
            _ => panic!(
                "ssh-add -l failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process whose stdout and stderr lines are read as they come, so a
/// test can react to what it prints (a URL, a code) while it keeps running.
pub struct Running {
    child: Child,
    lines: std::sync::mpsc::Receiver<(bool, String)>,
    pub stdout: String,
    pub stderr: String,
}

impl Running {
    pub fn spawn(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for (is_err, stream) in [
            (false, Box::new(out) as Box<dyn std::io::Read + Send>),
            (true, Box::new(err)),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                use std::io::BufRead as _;
                for line in std::io::BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((is_err, line)).is_err() {
                        break;
                    }
                }
            });
        }
        Running {
            child,
            lines,
            stdout: String::new(),
            stderr: String::new(),
        }
    }

    fn record(&mut self, is_err: bool, line: &str) {
        let buf = if is_err {
            &mut self.stderr
        } else {
            &mut self.stdout
        };
        buf.push_str(line);
        buf.push('\n');
    }

    /// The first line (stdout or stderr) for which `find` returns something.
    pub fn wait_for<T>(&mut self, timeout: Duration, find: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((is_err, line)) => {
                    self.record(is_err, &line);
                    if let Some(found) = find(&line) {
                        return found;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "the expected line did not come within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                        self.stdout, self.stderr
                    );
                }
            }
        }
    }

    /// Wait for the process to exit (killing it after `timeout`); all its output is then in `stdout`/`stderr`.
    pub fn finish(mut self, timeout: Duration) -> (std::process::ExitStatus, String, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                while let Ok((is_err, line)) = self.lines.try_recv() {
                    self.record(is_err, &line);
                }
                panic!(
                    "still running after {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout, self.stderr
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader threads end at EOF, which follows the exit.
        while let Ok((is_err, line)) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.record(is_err, &line);
        }
        (
            status,
            std::mem::take(&mut self.stdout),
            std::mem::take(&mut self.stderr),
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---- Faults harness: servers with a prepared directory, process limits and
// ---- memory, scratch filesystems (tests/faults.rs).

impl CaServer {
    /// The server's process id (for `/proc/PID/...`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// This process's soft and hard `RLIMIT_NOFILE` (from `/proc/self/limits`).
pub fn open_files_limits() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("/proc/self/limits has a Max open files line");
    let mut fields = line["Max open files".len()..]
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(u64::MAX));
    (fields.next().unwrap(), fields.next().unwrap())
}

/// Make sure this process (and the servers it starts, which inherit the
/// limit) may hold `n` open files: raise the soft limit with `prlimit` up to
/// the hard limit, or fail saying how to raise the hard limit.
pub fn ensure_open_files(n: u64) {
    let (soft, hard) = open_files_limits();
    if soft >= n {
        return;
    }
    assert!(
        hard >= n,
        "this test needs {n} open files but the hard limit (ulimit -Hn) is {hard}: \
         raise it for the test run (as root `ulimit -Hn 65536`; systemd LimitNOFILE=; \
         docker --ulimit nofile=65536:65536)"
    );
    run_ok(
        Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={n}:")),
    );
    let (soft, _) = open_files_limits();
    assert!(soft >= n, "prlimit left the soft limit at {soft}");
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`).
pub fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// How many file descriptors process `pid` holds.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A scratch filesystem mounted on a temporary directory (tests run as root),
/// unmounted on drop, also when the test panics. Mounting is required, not
/// optional: where it fails the test fails and says why.
pub struct Mount {
    point: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mount {
    /// A tmpfs of `bytes` (disk-full tests: it fills up exactly).
    pub fn tmpfs(bytes: u64) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let point = dir.path().join("mnt");
        std::fs::create_dir(&point).unwrap();
        Self::mount(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={bytes},mode=0700"))
                .arg("tmpfs")
                .arg(&point),
            "a tmpfs",
        );
        Mount { point, _dir: dir }
    }

    /// An ext4 filesystem of `megabytes` in an image file on a loop device
    /// (ext4 enforces the immutable attribute on files already open; tmpfs
    /// does not).
    pub fn ext4_image(megabytes: u64) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("fs.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(megabytes << 20)
            .unwrap();
        run_ok(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0"])
                .arg(&image),
        );
        let point = dir.path().join("mnt");
        std::fs::create_dir(&point).unwrap();
        Self::mount(
            Command::new("mount")
                .args(["-t", "ext4", "-o", "loop"])
                .arg(&image)
                .arg(&point),
            "an ext4 image on a loop device",
        );
        Mount { point, _dir: dir }
    }

    fn mount(cmd: &mut Command, what: &str) {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "mounting {what} failed: {}. These fault tests need root with \
             CAP_SYS_ADMIN (and /dev/loop-control for images), as on the CI VM; \
             in a container run it --privileged.",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    pub fn path(&self) -> &Path {
        &self.point
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.point)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a process not yet reaped): detach it anyway.
            let _ = Command::new("umount").arg("-l").arg(&self.point).status();
        }
    }
}
