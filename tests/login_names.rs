//! Login names end to end: `jitssh-ca init --email-domain`, a certificate
//! for the email's local part that logs in at a real sshd, a foreign domain
//! and a second identity refused, and `jitssh-ca login-name list|map|release`
//! changing a running server's answers within seconds.

use std::process::Command;
use std::time::{Duration, Instant};

use ca_server::dev::idp::DevUser;
use jitssh_e2e::*;

fn login_name(config: &std::path::Path, args: &[&str]) -> (bool, String) {
    let (sub, rest) = args.split_first().unwrap();
    let out = Command::new(bin("jitssh-ca"))
        .args(["login-name", sub, "--config"])
        .arg(config)
        .args(rest)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn person(username: &str, email: &str) -> DevUser {
    DevUser {
        username: username.into(),
        email: email.into(),
        groups: vec![],
    }
}

#[test]
fn email_domain_login_names_belong_to_one_identity() {
    require_e2e();
    ensure_user("e2e-carol");
    let carol = person("carol", "e2e-carol@example.com");
    let foreign = person("mallory", "e2e-carol@evil.example");
    let second = person("carol-new", "E2E-Carol@Example.com");
    let issuer = Issuer::start(
        "jitssh-e2e",
        vec![carol.clone(), foreign.clone(), second.clone()],
    );
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        Command::new(bin("jitssh-ca"))
            .args(["init", "--dir"])
            .arg(dir.path())
            .args(["--issuer", &issuer.url, "--audience", "jitssh-e2e"])
            .args(["--email-domain", "Example.com"]),
    );
    let text = std::fs::read_to_string(dir.path().join("config.toml")).unwrap();
    assert!(
        text.contains("login_claim = \"email\"\nemail_domains = [\"example.com\"]\n"),
        "{text}"
    );
    let ca = CaServer::serve_dir(dir);
    let config = ca.config();
    let sshd = Sshd::start(&ca.user_ca_pub(), &[]);
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path(), "id_ed25519");
    let body = serde_json::json!({ "public_key": public });

    // The company email's local part is the login name (the username claim,
    // "carol", is not trusted from this issuer), and it logs in.
    let (status, got) = ca.request_cert(&issuer.token(&carol), body.clone());
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["principals"], serde_json::json!(["e2e-carol"]));
    let cert = work.path().join("id_ed25519-cert.pub");
    std::fs::write(&cert, format!("{}\n", got["certificate"].as_str().unwrap())).unwrap();
    let ok = sshd.login_with_files("e2e-carol", &key, &cert);
    assert!(ok.status.success(), "{}", sshd.log());

    // Another domain names nobody; another subject with the same address
    // (an account reassigned at the IdP) is refused the name.
    let (status, got) = ca.request_cert(&issuer.token(&foreign), body.clone());
    assert_eq!(status, 403, "{got}");
    assert!(got.to_string().contains("email_domains"), "{got}");
    let (status, got) = ca.request_cert(&issuer.token(&second), body.clone());
    assert_eq!(
        (status, got["error"]["code"].as_str()),
        (403, Some("login_name_taken"))
    );

    let (ok, listed) = login_name(&config, &["list"]);
    assert!(ok, "{listed}");
    assert!(
        listed.contains(&format!("e2e-carol {} dev|carol first_use", issuer.url)),
        "{listed}"
    );

    // The operator gives the name to the new account: the running server
    // follows within seconds, and the old account is refused.
    let (ok, out) = login_name(
        &config,
        &[
            "map",
            "E2E-Carol",
            "--issuer",
            &issuer.url,
            "--subject",
            "dev|carol-new",
            "--reason",
            "account moved",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("before: "), "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, got) = ca.request_cert(&issuer.token(&second), body.clone());
        if status == 200 {
            assert_eq!(got["principals"], serde_json::json!(["e2e-carol"]));
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {got}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, _) = ca.request_cert(&issuer.token(&carol), body.clone());
    assert_eq!(status, 403);

    let (ok, out) = login_name(&config, &["release", "e2e-carol"]);
    assert!(ok, "{out}");
    let (ok, out) = login_name(&config, &["release", "e2e-carol"]);
    assert!(!ok && out.contains("no identity holds"), "{out}");
    let (ok, out) = login_name(
        &config,
        &[
            "map",
            "bob",
            "--issuer",
            "https://elsewhere.example",
            "--subject",
            "x",
        ],
    );
    assert!(!ok && out.contains("not one of the configured"), "{out}");

    // Every change is in the chain.
    let verify = ca.ca_command(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    for action in ["login_name_bind", "login_name_map", "login_name_release"] {
        let list = ca.ca_command(&["audit", "list", "--action", action]);
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(list.contains(action), "{action}: {list}");
    }
}
