//! CA keys in a PKCS#11 token (SoftHSM2, `CKM_EDDSA`): `jitssh-ca init
//! --pkcs11` creates them inside the token, `serve` signs there, and a
//! certificate signed through the HSM logs in to a real sshd. When the token
//! goes away the CA answers 503 and signs nothing: there is no key file to
//! fall back to.

use std::process::{Command, Output};

use jitssh_e2e::*;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A token of its own in SoftHSM's default store; deleted on drop.
struct Token {
    label: String,
}

impl Token {
    fn new() -> Token {
        assert!(
            std::path::Path::new(MODULE).exists(),
            "{MODULE} is missing: apt-get install -y softhsm2 (tests/run does)"
        );
        let label = format!(
            "jitssh-e2e-{}-{:x}",
            std::process::id(),
            rand_core::RngCore::next_u32(&mut rand_core::OsRng)
        );
        ok(Command::new("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                &label,
                "--so-pin",
                "12345678",
                "--pin",
                "87654321",
            ])
            .output()
            .unwrap());
        Token { label }
    }

    fn delete(&self) -> Output {
        Command::new("softhsm2-util")
            .args(["--delete-token", "--token", &self.label])
            .output()
            .unwrap()
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        let _ = self.delete();
    }
}

#[test]
fn certificates_signed_in_the_hsm_log_in_and_a_lost_token_means_503() {
    require_e2e();
    ensure_user("e2e-hsm");
    let token = Token::new();
    let issuer = Issuer::start("jitssh-e2e", vec![]);
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("hsm.pin");
    std::fs::write(&pin, "87654321\n").unwrap();
    std::fs::set_permissions(&pin, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    let init = ok(Command::new(bin("jitssh-ca"))
        .args(["init", "--dir"])
        .arg(dir.path())
        .args([
            "--issuer",
            &issuer.url,
            "--audience",
            "jitssh-e2e",
            "--pkcs11",
            MODULE,
            "--token-label",
            &token.label,
            "--pin-file",
        ])
        .arg(&pin)
        .output()
        .unwrap());
    let init = String::from_utf8_lossy(&init.stdout).into_owned();
    let user_line = init
        .lines()
        .find_map(|l| l.trim().strip_prefix("user CA:"))
        .unwrap()
        .trim()
        .to_owned();
    // No key file was written: the keys exist only in the token.
    assert!(!dir.path().join("user_ca").exists() && !dir.path().join("host_ca").exists());
    let config = std::fs::read_to_string(dir.path().join("config.toml")).unwrap();
    assert!(
        config.contains("[ca.pkcs11]") && config.contains(&token.label),
        "{config}"
    );
    // A second init into the same token refuses to create more keys.
    let other = tempfile::tempdir().unwrap();
    let again = Command::new(bin("jitssh-ca"))
        .args(["init", "--dir"])
        .arg(other.path())
        .args([
            "--pkcs11",
            MODULE,
            "--token-label",
            &token.label,
            "--pin-file",
        ])
        .arg(&pin)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{again:?}"
    );

    let ca = CaServer::serve_dir(dir);
    let published = ca.user_ca_pub();
    assert_eq!(
        published.split_whitespace().take(2).collect::<Vec<_>>(),
        user_line.split_whitespace().take(2).collect::<Vec<_>>(),
        "the CA publishes the token's key"
    );
    let sshd = Sshd::start(&published, &[]);
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path(), "id");
    let (status, body) = ca.request_cert(
        &issuer.token(&user("e2e-hsm", &[])),
        serde_json::json!({"public_key": public}),
    );
    assert_eq!(status, 200, "{body}");
    let cert = work.path().join("id-cert.pub");
    std::fs::write(
        &cert,
        format!("{}\n", body["certificate"].as_str().unwrap()),
    )
    .unwrap();
    let login = sshd.login_with_files("e2e-hsm", &key, &cert);
    assert!(
        login.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&login.stderr),
        sshd.log()
    );

    // The token goes away: no certificate, 503, not ready; nothing else signs.
    ok(token.delete());
    let (status, body) = ca.request_cert(
        &issuer.token(&user("e2e-hsm", &[])),
        serde_json::json!({"public_key": keygen(work.path(), "id2").1}),
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "ca_key_unavailable", "{body}");
    assert!(body.get("certificate").is_none());
    let ready = reqwest::blocking::get(format!("{}/readyz", ca.url)).unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    ok(ca.ca_command(&["audit", "verify"]));

    // A CA whose token is gone, or whose PIN is wrong, does not start.
    let out = Command::new(bin("jitssh-ca"))
        .args(["serve", "--config"])
        .arg(ca.config())
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PKCS#11"),
        "{out:?}"
    );
}
