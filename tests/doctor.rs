//! `jitssh doctor` against what a client meets when something is wrong that
//! the quickstart test cannot show: a CA whose TLS certificate this machine
//! does not trust (here `openssl s_server` with a self-signed certificate).
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
