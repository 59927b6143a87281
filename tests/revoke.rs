//! Revocation: `jitssh-ca revoke`, `GET /v1/krl` read by the real
//! `ssh-keygen -Q` and enforced by a real sshd's `RevokedKeys`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use jitssh_e2e::*;
use serde_json::json;

struct Issued {
    key: PathBuf,
    cert: PathBuf,
    public: String,
    serial: String,
    key_id: String,
}

fn issue(ca: &CaServer, issuer: &Issuer, dir: &Path, name: &str) -> Issued {
    let (key, public) = keygen(dir, name);
    let (s, b) = ca.request_cert(
        &issuer.token(&user(name, &[])),
        json!({"public_key": public}),
    );
    assert_eq!(s, 200, "{b}");
    let cert = dir.join(format!("{name}-cert.pub"));
    std::fs::write(&cert, format!("{}\n", b["certificate"].as_str().unwrap())).unwrap();
    Issued {
        key,
        cert,
        public,
        serial: b["serial"].as_str().unwrap().into(),
        key_id: b["key_id"].as_str().unwrap().into(),
    }
}

fn revoked_by_ssh_keygen(krl: &Path, cert: &Path) -> bool {
    let out = Command::new("ssh-keygen")
        .arg("-Q")
        .arg("-f")
        .arg(krl)
        .arg(cert)
        .output()
        .unwrap();
    match out.status.code() {
        Some(0) => false,
        Some(1) => true,
        other => panic!(
            "ssh-keygen -Q failed ({other:?}): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn revoked_certificates_are_refused_by_sshd_and_new_requests_denied() {
    require_e2e();
    let names = ["e2e-rev-a", "e2e-rev-b", "e2e-rev-c", "e2e-rev-d"];
    for n in names {
        ensure_user(n);
    }
    let issuer = Issuer::start("jitssh-e2e", vec![]);
    let ca = CaServer::start(&issuer.url, "jitssh-e2e");
    let work = tempfile::tempdir().unwrap();
    let [a, b, c, d] = names.map(|n| issue(&ca, &issuer, work.path(), n));

    let config = ca.config();
    let revoke = |args: &[&str]| {
        let out = Command::new(bin("jitssh-ca"))
            .args([
                "revoke",
                "--config",
                config.to_str().unwrap(),
                "--reason",
                "e2e",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    revoke(&["--serial", &a.serial]);
    revoke(&["--key-id", &b.key_id]);
    revoke(&["--key", d.key.with_extension("pub").to_str().unwrap()]);

    // The CA picks revocations up within a second; fetch until it has them.
    let krl = work.path().join("revoked.krl");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let bytes = reqwest::blocking::get(format!("{}/v1/krl", ca.url))
            .unwrap()
            .bytes()
            .unwrap();
        std::fs::write(&krl, &bytes).unwrap();
        if revoked_by_ssh_keygen(&krl, &d.cert) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "KRL never listed the revocations"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(revoked_by_ssh_keygen(&krl, &a.cert), "by serial");
    assert!(revoked_by_ssh_keygen(&krl, &b.cert), "by key ID");
    assert!(revoked_by_ssh_keygen(&krl, &d.cert), "by key");
    assert!(!revoked_by_ssh_keygen(&krl, &c.cert), "others are fine");

    let sshd = Sshd::start(
        &ca.user_ca_pub(),
        &[format!("RevokedKeys {}", krl.display())],
    );
    for (who, name, ok) in [
        (&a, names[0], false),
        (&b, names[1], false),
        (&c, names[2], true),
        (&d, names[3], false),
    ] {
        let out = sshd.login_with_files(name, &who.key, &who.cert);
        assert_eq!(
            out.status.success(),
            ok,
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A revoked key gets no new certificate; nor does a revoked identity.
    let (s, body) = ca.request_cert(
        &issuer.token(&user("e2e-rev-d", &[])),
        json!({"public_key": d.public}),
    );
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (403, Some("revoked")),
        "{body}"
    );
    let subject = format!("{}/dev|e2e-rev-c", issuer.url);
    revoke(&["--subject", &subject]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, public) = keygen(work.path(), &format!("fresh{}", rand_suffix()));
        let (s, body) = ca.request_cert(
            &issuer.token(&user("e2e-rev-c", &[])),
            json!({"public_key": public}),
        );
        if s == 403 {
            assert_eq!(body["error"]["code"], "revoked");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "subject revocation never took effect"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // ...and its certificate already issued is in the KRL now.
    let bytes = reqwest::blocking::get(format!("{}/v1/krl", ca.url))
        .unwrap()
        .bytes()
        .unwrap();
    std::fs::write(&krl, &bytes).unwrap();
    assert!(revoked_by_ssh_keygen(&krl, &c.cert));
    let out = ca.ca_command(&["audit", "verify"]);
    assert!(out.status.success());
}

fn rand_suffix() -> u64 {
    rand_core::RngCore::next_u64(&mut rand_core::OsRng)
}
