//! `jitssh doctor` against what a client meets when something is wrong that
//! the quickstart test cannot show: a CA whose TLS certificate this machine
//! does not trust (here `openssl s_server` with a self-signed certificate),
//! an agent that refuses certificates, an agent socket that is not there.
//! The quickstart test covers the missing pieces before login and a clean
//! bill of health after it.

use std::process::{Command, Stdio};

use jitssh_e2e::*;

#[test]
fn doctor_says_when_the_cas_tls_certificate_is_not_trusted() {
    require_e2e();
    let dir = tempfile::tempdir().unwrap();
    self_signed_tls(dir.path());
    let port = free_port();
    let mut server = Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-www",
            "-accept",
            &port.to_string(),
            "-cert",
        ])
        .arg(dir.path().join("tls.crt"))
        .arg("-key")
        .arg(dir.path().join("tls.key"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port, &mut server, "openssl s_server");

    let home = tempfile::tempdir().unwrap();
    let out = Command::new(bin("jitssh"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .args(["doctor", "--ca", &format!("https://127.0.0.1:{port}")])
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("FAIL  CA ") && said.contains("UnknownIssuer"),
        "{said}"
    );
    assert!(
        said.contains("fix: the CA's TLS certificate is not trusted here"),
        "{said}"
    );
}

/// An agent that answers every request with SSH_AGENT_FAILURE (some agents
/// refuse certificates or lifetime constraints): doctor says so and how to
/// fix it; and a socket that is not there.
#[test]
fn doctor_says_when_the_agent_refuses_certificates_or_is_not_there() {
    require_e2e();
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            loop {
                let mut len = [0u8; 4];
                if stream.read_exact(&mut len).is_err() {
                    break;
                }
                let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                if stream.read_exact(&mut body).is_err() {
                    break;
                }
                // SSH_AGENT_FAILURE, whatever was asked.
                if stream.write_all(&[0, 0, 0, 1, 5]).is_err() {
                    break;
                }
            }
        }
    });
    let home = tempfile::tempdir().unwrap();
    let doctor = |sock: &std::path::Path| {
        let out = Command::new(bin("jitssh"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("SSH_AUTH_SOCK", sock)
            .args(["doctor", "--ca", "http://127.0.0.1:9"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = doctor(&socket);
    assert!(
        said.contains("FAIL  ssh-agent ") && said.contains("refused to add the certificate"),
        "{said}"
    );
    assert!(said.contains("use OpenSSH's ssh-agent"), "{said}");
    let said = doctor(&dir.path().join("no-such.sock"));
    assert!(
        said.contains("FAIL  ssh-agent ") && said.contains("cannot connect to ssh-agent"),
        "{said}"
    );
}
