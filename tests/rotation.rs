//! CA key rotation with a real sshd that trusts what `jitssh host sync`
//! fetches: next → switch → retire, restarting the CA after each step as the
//! operator would. Certificates from before and after the switch keep
//! logging in until the old key is retired.

use std::path::Path;
use std::process::{Command, Output};

use jitssh_e2e::*;

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub(crate) fn rotate(ca: &CaServer, args: &[&str]) -> Output {
    Command::new(bin("jitssh-ca"))
        .args(["ca", "rotate", "--config"])
        .arg(ca.config())
        .args(args)
        .output()
        .unwrap()
}

/// What the host's timer does: fetch the CA keys (and KRL) into sshd's files.
fn host_sync(ca: &CaServer, sshd: &Sshd) {
    ok(Command::new(bin("jitssh"))
        .args(["host", "sync", "--dir"])
        .arg(sshd.dir.path())
        .args(["--ca", &ca.url])
        .env_remove("JITSSH_CA")
        .output()
        .unwrap());
}

fn trusted(sshd: &Sshd) -> Vec<String> {
    std::fs::read_to_string(sshd.dir.path().join("trusted_user_ca_keys"))
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

/// A fresh key and certificate for `name`, written into `dir`.
fn cert(
    ca: &CaServer,
    issuer: &Issuer,
    dir: &Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let (key, public) = keygen(dir, name);
    let (status, body) = ca.request_cert(
        &issuer.token(&user("e2e-rot", &[])),
        serde_json::json!({"public_key": public}),
    );
    assert_eq!(status, 200, "{body}");
    let cert = dir.join(format!("{name}-cert.pub"));
    std::fs::write(
        &cert,
        format!("{}\n", body["certificate"].as_str().unwrap()),
    )
    .unwrap();
    let shown = ok(Command::new("ssh-keygen")
        .arg("-L")
        .arg("-f")
        .arg(&cert)
        .output()
        .unwrap());
    let signer = String::from_utf8_lossy(&shown.stdout)
        .lines()
        .find(|l| l.trim_start().starts_with("Signing CA:"))
        .unwrap()
        .split_whitespace()
        .nth(3)
        .unwrap()
        .to_owned();
    (key, cert, signer)
}

pub(crate) fn fingerprints(ca: &CaServer) -> Vec<String> {
    let keys: serde_json::Value = reqwest::blocking::get(format!("{}/v1/ca", ca.url))
        .unwrap()
        .json()
        .unwrap();
    keys["user_ca"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            ssh_key::PublicKey::from_openssh(l.as_str().unwrap())
                .unwrap()
                .fingerprint(Default::default())
                .to_string()
        })
        .collect()
}

#[test]
fn user_ca_rotation_never_fails_a_login() {
    require_e2e();
    ensure_user("e2e-rot");
    let issuer = Issuer::start("jitssh-e2e", vec![]);
    let mut ca = CaServer::start(&issuer.url, "jitssh-e2e");
    rotation_never_fails_a_login(&mut ca, &issuer);
}

/// next → switch → retire on `ca` (key files or a PKCS#11 token), with a
/// real sshd that trusts what `jitssh host sync` fetches after each step.
pub(crate) fn rotation_never_fails_a_login(ca: &mut CaServer, issuer: &Issuer) {
    ensure_user("e2e-rot");
    let sshd = Sshd::start(&ca.user_ca_pub(), &[]);
    host_sync(ca, &sshd);
    let work = tempfile::tempdir().unwrap();
    let login =
        |key: &Path, cert: &Path| sshd.login_with_files("e2e-rot", key, cert).status.success();

    let old_fp = fingerprints(ca);
    assert_eq!(old_fp.len(), 1);
    let (ka, ca_, signer_a) = cert(ca, issuer, work.path(), "a");
    assert_eq!(signer_a, old_fp[0]);
    assert!(login(&ka, &ca_), "{}", sshd.log());

    // 1. next: published after the restart, hosts trust it, nothing signs with it yet.
    assert!(
        !rotate(ca, &["--kind", "user", "switch"]).status.success(),
        "no next key yet"
    );
    ok(rotate(ca, &["--kind", "user", "next"]));
    ca.restart();
    let both = fingerprints(ca);
    assert_eq!(both.len(), 2);
    assert_eq!(both[0], old_fp[0], "the old key still signs");
    host_sync(ca, &sshd);
    assert_eq!(trusted(&sshd).len(), 2);
    let (kb, cb, signer_b) = cert(ca, issuer, work.path(), "b");
    assert_eq!(signer_b, old_fp[0]);
    assert!(login(&ka, &ca_) && login(&kb, &cb), "{}", sshd.log());

    // 2. switch: the new key signs; certificates from the old one still log in.
    ok(rotate(ca, &["--kind", "user", "switch"]));
    ca.restart();
    let after = fingerprints(ca);
    assert_eq!(
        after,
        [both[1].clone(), both[0].clone()],
        "new key first, old still published"
    );
    let (kc, cc, signer_c) = cert(ca, issuer, work.path(), "c");
    assert_eq!(signer_c, both[1]);
    assert!(
        login(&kc, &cc),
        "new certificate before any sync: {}",
        sshd.log()
    );
    host_sync(ca, &sshd);
    assert!(
        login(&ka, &ca_) && login(&kb, &cb) && login(&kc, &cc),
        "{}",
        sshd.log()
    );

    // 3. retire: refused while old certificates may be valid; forced here
    // (the test cannot wait out the hour), after which only the new key is
    // trusted and only certificates it signed log in.
    let early = rotate(ca, &["--kind", "user", "retire"]);
    assert!(!early.status.success());
    assert!(
        String::from_utf8_lossy(&early.stderr).contains("--force"),
        "{:?}",
        early
    );
    ok(rotate(ca, &["--kind", "user", "retire", "--force"]));
    ca.restart();
    assert_eq!(fingerprints(ca), [both[1].clone()]);
    host_sync(ca, &sshd);
    assert_eq!(trusted(&sshd).len(), 1);
    assert!(login(&kc, &cc), "{}", sshd.log());
    assert!(
        !login(&ka, &ca_),
        "the retired key's certificates no longer log in"
    );

    // Every step is audited and the chain verifies.
    let list = String::from_utf8_lossy(&ok(ca.ca_command(&["audit", "list"])).stdout).into_owned();
    for step in ["ca_rotate next", "ca_rotate switch", "ca_rotate retire"] {
        assert!(list.contains(step), "{step}: {list}");
    }
    ok(ca.ca_command(&["audit", "verify"]));
}
