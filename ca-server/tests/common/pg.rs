//! A throwaway PostgreSQL server for tests: one cluster per test process,
//! started on first use in a temp dir on a free loopback port, trusting every
//! local connection, with a fresh empty database per test.
//!
//! Needs the PostgreSQL server binaries (Debian: `apt-get install postgresql`,
//! found in the newest `/usr/lib/postgresql/*/bin`, else on `PATH`). As root
//! the server runs as the `postgres` system user, since it refuses to run as
//! root.
//!
//! The cluster lives in a `static` that is never dropped, so a small shell
//! watchdog (the server's parent) stops the server and deletes its files once
//! the test process is gone, however it ended.
//!
//! [`tls_cluster`] is a second server that requires TLS on TCP, with a
//! throwaway CA made by the `openssl` command (Debian: `apt-get install
//! openssl`).
//!
//! Depends only on std, tempfile and postgres: the end-to-end crate includes
//! this file by path.

use std::fs::{self, File};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{PermissionsExt as _, chown};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A running PostgreSQL server on `127.0.0.1`, superuser `postgres`, no
/// password.
pub struct PgCluster {
    port: u16,
    /// Where the server's Unix socket is, for the harness's own connections.
    socket_dir: PathBuf,
    /// The [`tls_cluster`]'s certificates.
    tls: Option<TlsFiles>,
}

/// A TLS cluster's throwaway PKI (PEM files in the cluster's dir).
struct TlsFiles {
    /// The CA that signed the server's certificate (for `127.0.0.1` and
    /// `localhost`).
    ca: PathBuf,
    /// Another CA, which signed nothing the server uses.
    other_ca: PathBuf,
}

/// The process's cluster, started on first use. A failed start is kept too,
/// so every later test fails at once with the same message instead of
/// waiting for its own start to time out.
static CLUSTER: OnceLock<Result<PgCluster, String>> = OnceLock::new();

/// The process's TLS cluster, the same way.
static TLS_CLUSTER: OnceLock<Result<PgCluster, String>> = OnceLock::new();

/// A login role of the TLS cluster that authenticates with SCRAM-SHA-256
/// (password [`SCRAM_PASSWORD`]), over TLS only: channel binding applies.
pub const SCRAM_USER: &str = "jitssh_scram";
pub const SCRAM_PASSWORD: &str = "scram-test-password";

/// The TLS cluster's client authentication: Unix socket (the harness) as
/// before; on TCP, TLS or nothing.
const TLS_HBA: &str = "\
local     all all                    trust
hostssl   all jitssh_scram 127.0.0.1/32 scram-sha-256
hostssl   all all          127.0.0.1/32 trust
hostnossl all all          127.0.0.1/32 reject
";

/// `openssl req`/`x509` settings for the throwaway CAs and server
/// certificate.
const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = jitssh test
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// How long the server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A port found free a moment earlier can be taken by another process
/// before the server binds it; each retry takes a new port.
const START_ATTEMPTS: u32 = 5;

/// Runs the server as its parent: waits while both the test process ($1) and
/// the server are alive (polling once a second), then stops the server (fast
/// shutdown, which also disconnects clients such as a CA server that outlives
/// the test, then SIGKILL after 10 s), records its exit status for the test
/// process to see, and once the test process is gone deletes the cluster's
/// dir ($2). $3 is the port, the rest the server's command line.
const WATCHDOG: &str = r#"
test_pid=$1 dir=$2 port=$3
shift 3
"$@" &
pg=$!
while kill -0 "$test_pid" 2>/dev/null && kill -0 "$pg" 2>/dev/null; do sleep 1; done
if kill -0 "$pg" 2>/dev/null; then
  kill -INT "$pg"
  i=0
  while kill -0 "$pg" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
  kill -KILL "$pg" 2>/dev/null
fi
wait "$pg"
echo "$?" >"$dir/exited-$port"
while kill -0 "$test_pid" 2>/dev/null; do sleep 1; done
rm -rf "$dir"
"#;

/// The process's cluster, starting it on first use.
pub fn cluster() -> &'static PgCluster {
    match CLUSTER.get_or_init(|| on_plain_thread(|| PgCluster::start(false))) {
        Ok(cluster) => cluster,
        Err(e) => panic!("{e}"),
    }
}

/// The process's TLS cluster, starting it on first use: `ssl = on` with a
/// certificate for `127.0.0.1` and `localhost` signed by [`PgCluster::ca_file`],
/// and TCP connections without TLS refused by `pg_hba.conf`. Its URLs (from
/// [`PgCluster::fresh_database`]) carry no TLS settings of their own.
pub fn tls_cluster() -> &'static PgCluster {
    match TLS_CLUSTER.get_or_init(|| on_plain_thread(|| PgCluster::start(true))) {
        Ok(cluster) => cluster,
        Err(e) => panic!("{e}"),
    }
}

impl PgCluster {
    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM CA certificate that signed a TLS cluster's server
    /// certificate.
    pub fn ca_file(&self) -> &Path {
        &self.tls_files().ca
    }

    /// A PEM CA certificate that signed nothing a TLS cluster uses.
    pub fn other_ca_file(&self) -> &Path {
        &self.tls_files().other_ca
    }

    fn tls_files(&self) -> &TlsFiles {
        self.tls
            .as_ref()
            .expect("only the tls_cluster() has certificates")
    }

    /// A URL for the superuser on the `postgres` maintenance database.
    pub fn admin_url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates a new empty database and returns a URL to it as the
    /// superuser. Names carry the process ID and a counter, so they are
    /// unique even if clusters were ever shared.
    pub fn fresh_database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "jitssh_t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        on_plain_thread(|| {
            let mut admin = connect(&self.socket_dir, self.port).unwrap_or_else(|e| {
                panic!(
                    "connecting to the test PostgreSQL on port {}: {e}",
                    self.port
                )
            });
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        });
        format!("postgresql://postgres@127.0.0.1:{}/{name}", self.port)
    }

    fn start(tls: bool) -> Result<Self, String> {
        let started = Instant::now();
        let bin = bin_dir();
        let run_as = server_user()?;
        // As root, in /tmp rather than $TMPDIR: the postgres user must be
        // able to reach the dir, and $TMPDIR may be under /root.
        let base = if run_as.is_some() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let tmp = tempfile::Builder::new()
            .prefix("jitssh-pg-")
            .tempdir_in(&base)
            .map_err(|e| format!("creating a temp dir in {}: {e}", base.display()))?;
        if let Some((uid, gid)) = run_as {
            chown(tmp.path(), Some(uid), Some(gid))
                .map_err(|e| format!("chown {} to postgres: {e}", tmp.path().display()))?;
        }
        let data = tmp.path().join("data");

        // initdb before the watchdog exists: if it fails, dropping `tmp`
        // removes the dir. --no-sync: the cluster is thrown away anyway.
        let out = as_server_user(run_as, &program(&bin, "initdb"))
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .arg("-D")
            .arg(&data)
            .current_dir(tmp.path())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                format!(
                    "running initdb ({}): {e}{}",
                    program(&bin, "initdb").display(),
                    INSTALL_HINT
                )
            })?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }

        let (tls, ssl_args) = if tls {
            let files = make_certs(tmp.path(), run_as)?;
            fs::write(data.join("pg_hba.conf"), TLS_HBA)
                .map_err(|e| format!("writing pg_hba.conf: {e}"))?;
            let args = [
                "ssl=on".to_owned(),
                format!("ssl_cert_file={}", tmp.path().join("server.crt").display()),
                format!("ssl_key_file={}", tmp.path().join("server.key").display()),
            ];
            (Some(files), args.to_vec())
        } else {
            (None, Vec::new())
        };

        // From here on a watchdog deletes the dir, or this function does when
        // no server is left running.
        let dir = tmp.keep();
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            // A marker left by an earlier attempt on the same port would
            // report this one as exited at once.
            let _ = fs::remove_file(dir.join(format!("exited-{port}")));
            let log_path = dir.join(format!("postgres-{port}.log"));
            let log = File::create(&log_path)
                .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
            let log_err = log
                .try_clone()
                .map_err(|e| format!("duplicating the log file handle: {e}"))?;
            let mut server = as_server_user(run_as, &program(&bin, "postgres"));
            server
                .arg("-D")
                .arg(&data)
                .arg("-p")
                .arg(port.to_string())
                .arg("-k")
                .arg(&dir)
                .args(["-c", "listen_addresses=127.0.0.1"])
                // Durability is pointless for a throwaway cluster.
                .args(["-c", "fsync=off"])
                .args(["-c", "full_page_writes=off"])
                .args(["-c", "synchronous_commit=off"])
                .args(["-c", "max_connections=200"]);
            for arg in &ssl_args {
                server.arg("-c").arg(arg);
            }
            let spawned = Command::new("sh")
                .arg("-c")
                .arg(WATCHDOG)
                .arg("jitssh-pg-watchdog")
                .arg(std::process::id().to_string())
                .arg(&dir)
                .arg(port.to_string())
                .arg(server.get_program())
                .args(server.get_args())
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                // Out of the terminal's process group: Ctrl-C on the test run
                // must not kill the watchdog before it has cleaned up.
                .process_group(0)
                .spawn();
            // Once the server is up the watchdog is never waited for: it
            // outlives this process on purpose.
            let mut watchdog = match spawned {
                Ok(child) => child,
                Err(e) => {
                    let _ = fs::remove_dir_all(&dir);
                    return Err(format!("spawning sh for the PostgreSQL watchdog: {e}"));
                }
            };

            match wait_ready(&dir, port, &log_path) {
                Startup::Ready => {
                    eprintln!(
                        "test PostgreSQL{} ready on 127.0.0.1:{port} in {} ms ({})",
                        if tls.is_some() { " (TLS)" } else { "" },
                        started.elapsed().as_millis(),
                        dir.display()
                    );
                    if tls.is_some() {
                        // The server runs; its watchdog cleans up whatever
                        // happens here.
                        connect(&dir, port)
                            .and_then(|mut admin| {
                                admin.batch_execute(&format!(
                                    "SET password_encryption = 'scram-sha-256'; \
                                     CREATE ROLE {SCRAM_USER} LOGIN PASSWORD '{SCRAM_PASSWORD}'"
                                ))
                            })
                            .map_err(|e| format!("creating the role {SCRAM_USER}: {e}"))?;
                    }
                    return Ok(Self {
                        port,
                        socket_dir: dir,
                        tls,
                    });
                }
                // The server still runs; its watchdog stops it and deletes the
                // dir when this process is gone.
                Startup::TimedOut(log) => {
                    return Err(format!(
                        "the test PostgreSQL did not accept connections on port {port} within \
                         {READY_TIMEOUT:?}; its log:\n{log}"
                    ));
                }
                Startup::Exited(log) => {
                    // Its server is gone, so this watchdog has nothing left to
                    // stop, and must not delete the dir under the next one.
                    let _ = watchdog.kill();
                    let _ = watchdog.wait();
                    // Lost the port race: try again on another one.
                    if log.contains("could not bind") || log.contains("already in use") {
                        last_log = log;
                        continue;
                    }
                    let _ = fs::remove_dir_all(&dir);
                    return Err(format!(
                        "the test PostgreSQL exited during startup; its log:\n{log}"
                    ));
                }
            }
        }
        let _ = fs::remove_dir_all(&dir);
        Err(format!(
            "the test PostgreSQL could not bind a port in {START_ATTEMPTS} attempts; last log:\n{last_log}"
        ))
    }
}

enum Startup {
    Ready,
    /// With the server's log so far.
    TimedOut(String),
    /// With the server's log.
    Exited(String),
}

/// Polls until the server on `port` accepts connections, its watchdog
/// reports it exited, or [`READY_TIMEOUT`] passes.
fn wait_ready(dir: &Path, port: u16, log_path: &Path) -> Startup {
    let exited = dir.join(format!("exited-{port}"));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if connect(dir, port).is_ok() {
            return Startup::Ready;
        }
        let log = || fs::read_to_string(log_path).unwrap_or_default();
        if exited.exists() {
            return Startup::Exited(log());
        }
        if Instant::now() > deadline {
            return Startup::TimedOut(log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

const INSTALL_HINT: &str = "\n(the PostgreSQL server is needed: apt-get install postgresql)";

/// A CA, another CA, and a server key and certificate (for `127.0.0.1` and
/// `localhost`, signed by the first CA) in `dir`, made with the `openssl`
/// command; the server's files owned by the server's user, its key 0600 as
/// PostgreSQL demands.
fn make_certs(dir: &Path, run_as: Option<(u32, u32)>) -> Result<TlsFiles, String> {
    let openssl = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                format!(
                    "running openssl: {e}\n(the openssl command is needed: apt-get install openssl)"
                )
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "openssl {} failed ({}):\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    fs::write(dir.join("openssl.cnf"), OPENSSL_CNF)
        .map_err(|e| format!("writing openssl.cnf: {e}"))?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    for (name, cn) in [
        ("ca", "/CN=jitssh test CA"),
        ("other-ca", "/CN=jitssh other CA"),
    ] {
        let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
        let mut args = vec!["req", "-x509", "-new", "-config", "openssl.cnf"];
        args.extend(ec);
        args.extend([
            "-keyout",
            key.as_str(),
            "-out",
            crt.as_str(),
            "-days",
            "2",
            "-subj",
            cn,
        ]);
        args.extend(["-extensions", "ca_ext"]);
        openssl(&args)?;
    }
    let mut args = vec!["req", "-new", "-config", "openssl.cnf"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(&args)?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-set_serial",
        "2",
        "-days",
        "2",
        "-out",
        "server.crt",
        "-extfile",
        "openssl.cnf",
        "-extensions",
        "server_ext",
    ])?;
    let key = dir.join("server.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", key.display()))?;
    if let Some((uid, gid)) = run_as {
        for file in ["server.key", "server.crt"] {
            chown(dir.join(file), Some(uid), Some(gid))
                .map_err(|e| format!("chown {file} to postgres: {e}"))?;
        }
    }
    Ok(TlsFiles {
        ca: dir.join("ca.crt"),
        other_ca: dir.join("other-ca.crt"),
    })
}

/// A client for the maintenance database, or the error if the server does
/// not (yet) accept connections. Through the Unix socket in the cluster's
/// own dir rather than TCP: if another process took the port before the
/// server could, a TCP probe would reach that process instead (and could
/// hang: the timeout covers only the socket connect, not the startup
/// handshake). The server creates that socket only once it listens on TCP.
fn connect(socket_dir: &Path, port: u16) -> Result<postgres::Client, postgres::Error> {
    postgres::Config::new()
        .host_path(socket_dir)
        .port(port)
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(5))
        .connect(postgres::NoTls)
}

/// Runs `f` on a thread of its own: the blocking `postgres` client drives a
/// Tokio runtime of its own, which panics when created or dropped on a
/// thread already inside one (any `#[tokio::test]`).
fn on_plain_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// The newest `/usr/lib/postgresql/<version>/bin`: Debian keeps the server
/// binaries off `PATH`. `None` means look them up on `PATH`.
fn bin_dir() -> Option<PathBuf> {
    fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

fn program(bin: &Option<PathBuf>, name: &str) -> PathBuf {
    match bin {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    }
}

/// When running as root, the uid and gid of the `postgres` system user to
/// run the server as; `None` to run it as the current user.
fn server_user() -> Result<Option<(u32, u32)>, String> {
    if id(&["-u"])? != 0 {
        return Ok(None);
    }
    let uid = id(&["-u", "postgres"]);
    let gid = id(&["-g", "postgres"]);
    match (uid, gid) {
        (Ok(uid), Ok(gid)) => Ok(Some((uid, gid))),
        (Err(e), _) | (_, Err(e)) => Err(format!(
            "running as root, but no `postgres` user to run the server as: {e}{INSTALL_HINT}"
        )),
    }
}

/// A number printed by `id` (std has no getuid; unsafe code is forbidden).
fn id(args: &[&str]) -> Result<u32, String> {
    let out = Command::new("id")
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("running id: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "id {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    text.trim()
        .parse()
        .map_err(|e| format!("id {} printed {text:?}: {e}", args.join(" ")))
}

/// `program` as a command run as `run_as` (via setpriv, which execs in place
/// so the watchdog's child is the server itself), or as is.
fn as_server_user(run_as: Option<(u32, u32)>, program: &Path) -> Command {
    match run_as {
        Some((uid, gid)) => {
            let mut cmd = Command::new("setpriv");
            cmd.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg("--")
                .arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// A loopback port nothing listens on right now (the OS picks it).
fn free_port() -> Result<u16, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("finding a free loopback port: {e}"))
}
