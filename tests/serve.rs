//! `jitssh-ca serve` with a real sshd: a certificate from the CA logs in as the
//! granted principal and nothing else.

use std::process::Command;

use jitssh_e2e::*;

#[test]
fn certificate_logs_in_as_granted_principal_only() {
    require_e2e();
    ensure_user("e2e-alice");
    ensure_user("e2e-bob");
    let issuer = Issuer::start("jitssh-e2e", vec![user("e2e-alice", &[])]);
    let ca = CaServer::start(&issuer.url, "jitssh-e2e");
    let sshd = Sshd::start(&ca.user_ca_pub(), &[]);

    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path(), "id_ed25519");
    let alice = user("e2e-alice", &[]);
    let (status, body) = ca.request_cert(
        &issuer.token(&alice),
        serde_json::json!({"public_key": public}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["principals"], serde_json::json!(["e2e-alice"]));
    let cert_path = work.path().join("id_ed25519-cert.pub");
    std::fs::write(
        &cert_path,
        format!("{}\n", body["certificate"].as_str().unwrap()),
    )
    .unwrap();

    // ssh-keygen reads it back: principal, serial, key ID, validity in minutes.
    let shown = run_ok(
        Command::new("ssh-keygen")
            .arg("-L")
            .arg("-f")
            .arg(&cert_path),
    );
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("e2e-alice"), "{shown}");
    assert!(
        shown.contains(&format!("Serial: {}", body["serial"].as_str().unwrap())),
        "{shown}"
    );
    assert!(
        shown.contains("Key ID: \"e2e-alice@example.com serial="),
        "{shown}"
    );
    let valid = body["valid_before"].as_u64().unwrap() - body["valid_after"].as_u64().unwrap();
    assert!(valid <= 3600 + 60, "valid for {valid} s");

    let ok = sshd.login_with_files("e2e-alice", &key, &cert_path);
    assert!(
        ok.status.success(),
        "login as granted principal failed: {}\n{}",
        String::from_utf8_lossy(&ok.stderr),
        sshd.log()
    );
    let refused = sshd.login_with_files("e2e-bob", &key, &cert_path);
    assert!(!refused.status.success(), "login as another user must fail");

    // The issuance is in the audit log and the chain verifies.
    let verify = ca.ca_command(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let list = ca.ca_command(&["audit", "list", "--principal", "e2e-alice"]);
    let list = String::from_utf8_lossy(&list.stdout);
    let serial = body["serial"].as_str().unwrap();
    assert!(list.contains(serial), "{list}");
    // The console's filters, on the command line too: exactly this row.
    let one = ca.ca_command(&["audit", "list", "--serial", serial, "--outcome", "issued"]);
    assert!(
        one.status.success(),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    let one = String::from_utf8_lossy(&one.stdout);
    assert_eq!(one.lines().count(), 1, "{one}");
    assert!(one.contains(serial), "{one}");
    let none = ca.ca_command(&["audit", "list", "--serial", serial, "--outcome", "denied"]);
    assert_eq!(String::from_utf8_lossy(&none.stdout).trim(), "");
    let bad = ca.ca_command(&["audit", "list", "--serial", "not-a-number"]);
    assert!(!bad.status.success());
}

#[test]
fn replayed_token_gets_no_second_certificate() {
    require_e2e();
    let issuer = Issuer::start("jitssh-e2e", vec![]);
    let ca = CaServer::start(&issuer.url, "jitssh-e2e");
    let work = tempfile::tempdir().unwrap();
    let (_, public) = keygen(work.path(), "k");
    let token = issuer.token(&user("e2e-carol", &[]));
    let (first, _) = ca.request_cert(&token, serde_json::json!({"public_key": public}));
    assert_eq!(first, 200);
    let (second, body) = ca.request_cert(&token, serde_json::json!({"public_key": public}));
    assert_eq!(second, 401, "{body}");
    assert_eq!(body["error"]["code"], "token_replayed");
}

#[test]
fn spent_tokens_stay_spent_across_a_crash() {
    require_e2e();
    let issuer = Issuer::start("jitssh-e2e", vec![]);
    let mut ca = CaServer::start(&issuer.url, "jitssh-e2e");
    let work = tempfile::tempdir().unwrap();
    let (_, public) = keygen(work.path(), "k");
    let token = issuer.token(&user("e2e-judy", &[]));
    let (first, body) = ca.request_cert(&token, serde_json::json!({"public_key": public}));
    assert_eq!(first, 200, "{body}");
    ca.restart();
    let (again, body) = ca.request_cert(&token, serde_json::json!({"public_key": public}));
    assert_eq!(
        (again, body["error"]["code"].as_str()),
        (401, Some("token_replayed")),
        "{body}"
    );
    let verify = ca.ca_command(&["audit", "verify"]);
    assert!(verify.status.success());
}

#[test]
fn id_token_from_a_real_openid_provider_gets_a_certificate() {
    require_e2e();
    use crate::provider::{Provider, ProviderUser};
    let alice = ProviderUser::new("e2e-kate", &["developers"]);
    let provider = Provider::start(std::slice::from_ref(&alice));
    let ca = CaServer::start(&provider.issuer, crate::provider::CLIENT_ID);
    let tokens = provider.login_tokens(&alice.username, &alice.password);
    let id_token = tokens["id_token"].as_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (_, public) = keygen(work.path(), "k");
    let (status, body) = ca.request_cert(id_token, serde_json::json!({"public_key": public}));
    assert_eq!(status, 200, "{body}");
    assert!(
        body["principals"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("e2e-kate"))
    );
    let list = ca.ca_command(&["audit", "list", "--subject", &alice.subject()]);
    assert!(String::from_utf8_lossy(&list.stdout).contains(body["serial"].as_str().unwrap()));
}
