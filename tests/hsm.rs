//! CA keys in a PKCS#11 token (SoftHSM2, `CKM_EDDSA`): `jitssh-ca init
//! --pkcs11` creates them inside the token, `serve` signs there, and a
//! certificate signed through the HSM logs in to a real sshd. When the token
//! goes away the CA answers 503 and signs nothing: there is no key file to
//! fall back to.

use std::path::{Path, PathBuf};
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
    let pin = pin_file(dir.path());
    let init = ok(init_pkcs11(dir.path(), &issuer, &token, &pin));
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
    let out = serve_once(&ca);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PKCS#11"),
        "{out:?}"
    );
}

/// `jitssh-ca serve` on `ca`'s config, run to its end (a start that fails).
fn serve_once(ca: &CaServer) -> Output {
    Command::new(bin("jitssh-ca"))
        .args(["serve", "--config"])
        .arg(ca.config())
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap()
}

fn pin_file(dir: &Path) -> PathBuf {
    let pin = dir.join("hsm.pin");
    std::fs::write(&pin, "87654321\n").unwrap();
    std::fs::set_permissions(&pin, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    pin
}

/// `jitssh-ca init --pkcs11` into `dir`: both CA keys created in `token`.
fn init_pkcs11(dir: &Path, issuer: &Issuer, token: &Token, pin: &Path) -> Output {
    Command::new(bin("jitssh-ca"))
        .args(["init", "--dir"])
        .arg(dir)
        .args(["--login-claim", "preferred_username"])
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
        .arg(pin)
        .output()
        .unwrap()
}

/// A CA serving with its keys in a fresh token.
fn hsm_ca(issuer: &Issuer, token: &Token) -> CaServer {
    let dir = tempfile::tempdir().unwrap();
    let pin = pin_file(dir.path());
    ok(init_pkcs11(dir.path(), issuer, token, &pin));
    CaServer::serve_dir(dir)
}

/// The token as the CA's config names it (for the test's own PKCS#11 calls).
fn admin(ca: &CaServer) -> ca_server::hsm::TokenAdmin {
    let config = ca_server::config::Config::load(&ca.config()).unwrap();
    ca_server::hsm::TokenAdmin::open(config.pkcs11.as_ref().unwrap()).unwrap()
}

#[test]
fn hsm_rotation_never_fails_a_login() {
    require_e2e();
    let token = Token::new();
    let issuer = Issuer::start("jitssh-e2e", vec![]);
    let mut ca = hsm_ca(&issuer, &token);
    crate::rotation::rotation_never_fails_a_login(&mut ca, &issuer);
    // Nothing but the token holds keys, and the retired key is gone from it.
    assert!(!ca.dir.path().join("user_ca").exists());
    let admin = admin(&ca);
    assert_eq!(admin.has("jitssh-user-ca").unwrap(), (true, true));
    assert_eq!(
        admin.has("jitssh-user-ca.retiring").unwrap(),
        (false, false)
    );
    assert_eq!(admin.has("jitssh-user-ca.next").unwrap(), (false, false));
}

/// A switch that stopped part-way — after renaming only the signing key's
/// private half, or after its first rename — leaves no complete signing
/// key: the CA refuses to start, and running `switch` again finishes it;
/// the switch record written before the crash stands.
#[test]
fn an_interrupted_hsm_switch_is_finished_by_running_it_again() {
    require_e2e();
    use ca_server::hsm::KeyHalf;
    let issuer = Issuer::start("jitssh-e2e", vec![]);
    let crash_points: [&[KeyHalf]; 2] = [&[KeyHalf::Private], &[KeyHalf::Private, KeyHalf::Public]];
    for renamed in crash_points {
        let token = Token::new();
        let mut ca = hsm_ca(&issuer, &token);
        let before = crate::rotation::fingerprints(&ca);
        ok(crate::rotation::rotate(&ca, &["--kind", "user", "next"]));
        ca.restart();
        let both = crate::rotation::fingerprints(&ca);
        assert_eq!(both.len(), 2);
        assert_eq!(both[0], before[0]);

        // What `switch` does, stopped after renaming `renamed`.
        let admin = admin(&ca);
        admin
            .write_data(
                "jitssh-user-ca.rotation",
                br#"{"switched_at":5,"retire_after":4000000000}"#,
            )
            .unwrap();
        for half in renamed {
            admin
                .relabel_half(*half, "jitssh-user-ca", "jitssh-user-ca.retiring")
                .unwrap();
        }
        assert_ne!(admin.has("jitssh-user-ca").unwrap(), (true, true));
        drop(admin);

        let refused = serve_once(&ca);
        assert!(!refused.status.success(), "{renamed:?}: {refused:?}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("jitssh-user-ca"),
            "{refused:?}"
        );

        ok(crate::rotation::rotate(&ca, &["--kind", "user", "switch"]));
        ca.restart();
        assert_eq!(
            crate::rotation::fingerprints(&ca),
            [both[1].clone(), both[0].clone()],
            "{renamed:?}: the next key signs, the old one is published as retiring"
        );
        let status = ok(Command::new(bin("jitssh-ca"))
            .args(["ca", "status", "--config"])
            .arg(ca.config())
            .output()
            .unwrap());
        let status = String::from_utf8_lossy(&status.stdout).into_owned();
        assert!(status.contains("user retiring"), "{status}");
        assert!(
            status.contains("retired after 2096"),
            "the record written before the crash stands: {status}"
        );
        // Its retire_after is far away: refused without --force.
        let early = crate::rotation::rotate(&ca, &["--kind", "user", "retire"]);
        assert!(!early.status.success());
        assert!(
            String::from_utf8_lossy(&early.stderr).contains("--force"),
            "{early:?}"
        );
    }
}
