//! Revocation: `jitssh-ca revoke`, `GET /v1/krl` read by the real
//! `ssh-keygen -Q` and enforced by a real sshd's `RevokedKeys`; a grant ended
//! early takes its certificates with it (`jitssh host sync` → sshd refuses
//! them); a revoked host is refused by a strict `ssh` through the
//! `RevokedHostKeys` file `jitssh config` keeps.

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

/// A role whose principal is the local account `account`, auto-approved
/// for on-call members citing a ticket; the default policy's Rego tests
/// (written for the default roles) are left out.
fn role_for(account: &'static str) -> impl FnOnce(&Path) {
    move |dir: &Path| {
        let policies = dir.join("policies");
        for entry in std::fs::read_dir(&policies).unwrap() {
            let path = entry.unwrap().path();
            if path.to_string_lossy().ends_with("_test.rego") {
                std::fs::remove_file(path).unwrap();
            }
        }
        let data_path = policies.join("data.json");
        let mut data: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&data_path).unwrap()).unwrap();
        data["jitssh_config"]["roles"] = json!({
            "db-admin": {
                "description": "the role account",
                "principals": [account],
                "max_ttl_seconds": 3600,
                "requester_groups": ["dba"],
                "approval": {
                    "auto_approve": {"groups": ["oncall"], "reason_pattern": "^INC-[0-9]+"},
                    "approvals_required": 1,
                    "approver_groups": ["dba-leads"],
                },
            }
        });
        std::fs::write(&data_path, serde_json::to_vec_pretty(&data).unwrap()).unwrap();
    }
}

/// A key and the CA's certificate for it with `principals`, as files.
fn cert_for(
    ca: &CaServer,
    token: &str,
    dir: &Path,
    name: &str,
    principals: &[&str],
) -> (PathBuf, PathBuf) {
    let (key, public) = keygen(dir, name);
    let (s, b) = ca.request_cert(
        token,
        json!({"public_key": public, "principals": principals}),
    );
    assert_eq!(s, 200, "{b}");
    let cert = dir.join(format!("{name}-cert.pub"));
    std::fs::write(&cert, format!("{}\n", b["certificate"].as_str().unwrap())).unwrap();
    (key, cert)
}

#[test]
fn ending_a_grant_revokes_its_certificates_at_sshd() {
    require_e2e();
    let (account, person) = ("e2e-rev-dba", "e2e-rev-eve");
    ensure_user(account);
    ensure_user(person);
    let issuer = Issuer::start("jitssh-e2e", vec![]);
    let ca = CaServer::start_with(&issuer.url, "jitssh-e2e", role_for(account));
    let work = tempfile::tempdir().unwrap();
    let eve = || issuer.token(&user(person, &["dba", "oncall"]));

    // The host: `jitssh host sync` writes the user CA keys and the KRL.
    let etc = work.path().join("etc-ssh");
    let sync = || {
        let out = Command::new(bin("jitssh"))
            .args([
                "host",
                "sync",
                "--dir",
                etc.to_str().unwrap(),
                "--ca",
                &ca.url,
            ])
            .env_remove("JITSSH_CA")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sync();
    let sshd = Sshd::start(
        &ca.user_ca_pub(),
        &[format!(
            "RevokedKeys {}",
            etc.join("revoked_keys").display()
        )],
    );

    // Elevated (auto-approved): a certificate for the role's account.
    let (s, e) = ca.post(
        "/v1/elevations",
        &eve(),
        json!({"role": "db-admin", "reason": "INC-42 restore"}),
    );
    assert_eq!((s, e["state"].as_str()), (201, Some("approved")), "{e}");
    let (role_key, role_cert) = cert_for(&ca, &eve(), work.path(), "role", &[account]);
    let (own_key, own_cert) = cert_for(&ca, &eve(), work.path(), "own", &[person]);
    let login = |who: &str, key: &Path, cert: &Path| sshd.login_with_files(who, key, cert);
    let out = login(account, &role_key, &role_cert);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        sshd.log()
    );
    assert!(login(person, &own_key, &own_cert).status.success());

    // The grant is dropped early; the next sync carries its certificate.
    let id = e["id"].as_str().unwrap();
    let (s, d) = ca.post(&format!("/v1/elevations/{id}/cancel"), &eve(), json!({}));
    assert_eq!((s, d["state"].as_str()), (200, Some("revoked")), "{d}");
    sync();
    let krl = etc.join("revoked_keys");
    assert!(revoked_by_ssh_keygen(&krl, &role_cert));
    assert!(!revoked_by_ssh_keygen(&krl, &own_cert));
    let out = login(account, &role_key, &role_cert);
    assert!(!out.status.success(), "the same certificate is refused now");
    assert!(sshd.log().contains("revoked"), "{}", sshd.log());
    let out = login(person, &own_key, &own_cert);
    assert!(
        out.status.success(),
        "the personal one still works: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ca.ca_command(&["audit", "verify"]).status.success());
}

/// `jitssh [--ca URL] config` with HOME=`home`: its stdout, and the
/// `RevokedHostKeys` file it names, if any.
fn jitssh_config(home: &Path, ca_url: &str) -> (String, Option<PathBuf>) {
    let out = Command::new(bin("jitssh"))
        .args(["--ca", ca_url, "config"])
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("JITSSH_CA")
        .env_remove("JITSSH_PROFILE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let block = String::from_utf8(out.stdout).unwrap();
    let krl = block
        .lines()
        .find_map(|l| l.trim().strip_prefix("RevokedHostKeys "))
        .map(PathBuf::from);
    (block, krl)
}

#[test]
fn a_revoked_host_is_refused_by_a_strict_ssh() {
    use crate::hosts::{
        cert_authority_known_hosts, host_cert_serial, jitssh_host, ok, provision, ssh, user_cert,
    };
    require_e2e();
    let login = "e2e-rev-hostuser";
    ensure_user(login);
    let issuer = Issuer::start("jitssh-e2e", vec![]);
    let ca = CaServer::start(&issuer.url, "jitssh-e2e");
    let work = tempfile::tempdir().unwrap();
    let name = "web07.e2e.test";
    let (etc, mut sshd) = provision(
        &ca,
        work.path(),
        "web07",
        &[name],
        &["jitssh.conf"],
        &[login],
    );
    let (key, cert) = user_cert(&ca, &issuer, work.path(), login);
    let known_hosts = cert_authority_known_hosts(&ca, work.path());

    // A new user's first `jitssh config`, the CA out of reach: an empty,
    // valid list stands in (an unreadable one would refuse every host).
    let home = work.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let (block, krl) = jitssh_config(&home, "http://127.0.0.1:1");
    let krl = krl.unwrap_or_else(|| panic!("no RevokedHostKeys: {block}"));
    assert_eq!(krl, home.join(".ssh/jitssh/revoked_hosts.krl"), "{block}");
    assert!(
        block.contains(&format!("    RevokedHostKeys {}\n", krl.display())),
        "{block}"
    );
    let port = sshd.port;
    let strict = |krl: &Path| {
        let config = work.path().join("ssh_config");
        std::fs::write(
            &config,
            format!(
                "Host *\n  HostName 127.0.0.1\n  Port {port}\n  User {login}\n  \
                 StrictHostKeyChecking yes\n  UserKnownHostsFile {kh}\n  GlobalKnownHostsFile /dev/null\n  \
                 RevokedHostKeys {krl}\n  CheckHostIP no\n  BatchMode yes\n  ConnectTimeout 10\n  \
                 IdentityAgent none\n  IdentitiesOnly yes\n  IdentityFile {key}\n  CertificateFile {cert}\n",
                kh = known_hosts.display(),
                krl = krl.display(),
                key = key.display(),
                cert = cert.display(),
            ),
        )
        .unwrap();
        ssh(
            &config,
            &["-o", &format!("HostKeyAlias={name}")],
            name,
            "true",
        )
    };
    let out = strict(&krl);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // With the CA reachable the list is fetched; nothing is revoked yet.
    let (_, fetched) = jitssh_config(&home, &ca.url);
    assert_eq!(fetched.as_deref(), Some(krl.as_path()));
    assert!(strict(&krl).status.success());

    // The host renews (sshd presents the new certificate), then is revoked
    // by name: both of its certificates and its key.
    let before = host_cert_serial(&etc.host_cert());
    ok(jitssh_host(
        &ca.url,
        &["renew", "--key", etc.host_key().to_str().unwrap()],
    ));
    assert_ne!(host_cert_serial(&etc.host_cert()), before);
    sshd.reload();
    let out = ca.ca_command(&["revoke", "--host", name, "--reason", "e2e"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The CA serves the revocation within a second; `jitssh config` fetches it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        jitssh_config(&home, &ca.url);
        if revoked_by_ssh_keygen(&krl, &etc.host_cert()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the host KRL never listed the host"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = strict(&krl);
    assert!(!out.status.success(), "a revoked host must be refused");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("REVOKED") || said.contains("revoked"),
        "{said}"
    );

    // The CA out of reach again: the last good copy is kept, still refusing.
    let kept = std::fs::read(&krl).unwrap();
    jitssh_config(&home, "http://127.0.0.1:1");
    assert_eq!(std::fs::read(&krl).unwrap(), kept);
    assert!(!strict(&krl).status.success());

    // The revoked key renews no more.
    let out = jitssh_host(
        &ca.url,
        &["renew", "--key", etc.host_key().to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(ca.ca_command(&["audit", "verify"]).status.success());
}

#[test]
fn jitssh_login_keeps_the_host_krl_fresh() {
    use crate::provider::{CLIENT_ID, Provider, ProviderUser};
    require_e2e();
    let ann = ProviderUser::new("e2e-rev-ann", &[]);
    ensure_user(&ann.username);
    let provider = Provider::start(std::slice::from_ref(&ann));
    let ca = CaServer::start(&provider.issuer, CLIENT_ID);
    let me = crate::login::User::new(&ca.url);

    // A host enrolled with a join token, then revoked by name.
    let name = "db09.e2e.test";
    let token = crate::hosts::join_token(&ca, &[name]);
    let work = tempfile::tempdir().unwrap();
    let (_, public) = keygen(work.path(), "db09");
    let cert = reqwest::blocking::Client::new()
        .post(format!("{}/v1/certs/host", ca.url))
        .json(&json!({"token": token.trim(), "public_key": public}))
        .send()
        .unwrap()
        .json::<serde_json::Value>()
        .unwrap()["certificate"]
        .as_str()
        .unwrap()
        .to_owned();
    let cert_file = work.path().join("db09-cert.pub");
    std::fs::write(&cert_file, format!("{cert}\n")).unwrap();
    let out = ca.ca_command(&["revoke", "--host", name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(1500)); // the CA's refresh

    // `jitssh login` writes the profile's copy; it revokes that host.
    crate::elevation::browser_login(&provider, &ann, &me);
    let krl = me.home.path().join(".ssh/jitssh/revoked_hosts.krl");
    assert!(revoked_by_ssh_keygen(&krl, &cert_file), "{}", krl.display());
}
