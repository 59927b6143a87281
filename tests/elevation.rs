//! Just-in-time elevation end to end: the real `jitssh` CLI for requester
//! and approver, a real OpenID provider, `jitssh-ca serve`, `ssh-agent` and
//! `sshd`. Before approval the role's account is out of reach; after it,
//! `jitssh elevate --wait` loads a certificate and plain ssh works; when the
//! grant ends, the agent has forgotten the certificate and no new one is
//! issued.

use std::time::{Duration, Instant};

use jitssh_e2e::*;
use serde_json::{Value, json};

use crate::login::{User, text};
use crate::provider::{CLIENT_ID, Provider, ProviderUser};

const WAIT: Duration = Duration::from_secs(60);
/// The test role's maximum grant: long enough for a loaded machine to get
/// through approval, certificate and ssh; short enough to wait out.
const GRANT_SECS: u64 = 15;

/// `jitssh login` as `who`, the test playing the person at the browser.
pub(crate) fn browser_login(provider: &Provider, who: &ProviderUser, me: &User) {
    let mut login = Running::spawn(&mut me.jitssh(&["login", "--no-browser"]));
    let issuer = format!("{}/", provider.issuer);
    let url = login.wait_for(WAIT, |l| {
        let l = l.trim();
        l.starts_with(&issuer).then(|| l.to_owned())
    });
    provider.browser_login(&url, &who.username, &who.password, true);
    let (status, stdout, stderr) = login.finish(WAIT);
    assert!(
        status.success(),
        "login as {}: {stdout}\n{stderr}",
        who.username
    );
}

/// The default policy, with a test role whose principal is a local account
/// and whose grant is short; its Rego tests (written for the default roles)
/// are left out.
fn test_role(dir: &std::path::Path) {
    let policies = dir.join("policies");
    for entry in std::fs::read_dir(&policies).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with("_test.rego") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let data_path = policies.join("data.json");
    let mut data: Value = serde_json::from_slice(&std::fs::read(&data_path).unwrap()).unwrap();
    data["jitssh_config"]["roles"] = json!({
        "db-admin": {
            "description": "the e2e-dba account",
            "principals": ["e2e-dba"],
            "max_ttl_seconds": GRANT_SECS,
            "requester_groups": ["dba"],
            "approval": {"approvals_required": 1, "approver_groups": ["dba-leads"]},
        }
    });
    std::fs::write(&data_path, serde_json::to_vec_pretty(&data).unwrap()).unwrap();
}

#[test]
fn elevate_wait_approve_ssh_then_the_grant_ends() {
    require_e2e();
    let carl = ProviderUser::new("e2e-carl", &["dba"]);
    let lead = ProviderUser::new("e2e-lead", &["dba-leads"]);
    ensure_user("e2e-dba");
    ensure_user(&carl.username);
    let provider = Provider::start(&[carl.clone(), lead.clone()]);
    let ca = CaServer::start_with(&provider.issuer, CLIENT_ID, test_role);
    let sshd = Sshd::start(&ca.user_ca_pub(), &[]);
    let me = User::new(&ca.url);
    let approver = User::new(&ca.url);

    // Signed in, but the role's account is out of reach.
    browser_login(&provider, &carl, &me);
    assert!(
        me.ssh(&sshd, &carl.username).status.success(),
        "{}",
        sshd.log()
    );
    let out = me.ssh(&sshd, "e2e-dba");
    assert!(!out.status.success(), "no grant yet: {}", text(&out));
    let out = me.run(&["login", "-p", "e2e-dba"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("jitssh elevate db-admin"),
        "{}",
        text(&out)
    );

    // Request and wait (silently re-using the cached sign-in).
    let elevate = Running::spawn(&mut me.jitssh(&[
        "elevate",
        "db-admin",
        "--reason",
        "restore the orders table",
        "--wait",
    ]));

    // The approver finds it in `jitssh requests` ...
    browser_login(&provider, &lead, &approver);
    let deadline = Instant::now() + WAIT;
    let id = loop {
        let out = approver.run(&["requests"]);
        assert!(out.status.success(), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(line) = stdout.lines().find(|l| l.starts_with("el_")) {
            assert!(
                line.contains("db-admin (e2e-dba): pending, 0 of 1"),
                "{stdout}"
            );
            assert!(stdout.contains("restore the orders table"), "{stdout}");
            assert!(stdout.contains("e2e-carl@example.com"), "{stdout}");
            break line.split_whitespace().next().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the request never showed up: {stdout}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    // ... the requester cannot approve it ...
    let out = me.run(&["approve", &id]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("your own"), "{}", text(&out));
    // ... the approver does.
    let out = approver.run(&["approve", &id, "--comment", "go ahead"]);
    assert!(out.status.success(), "{}", text(&out));
    let approved_at = Instant::now();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("active until"),
        "{}",
        text(&out)
    );

    let (status, stdout, stderr) = elevate.finish(WAIT);
    assert!(status.success(), "elevate --wait: {stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("{id} db-admin (e2e-dba): active until")),
        "{stdout}"
    );
    assert!(
        stdout.contains("Certificate for ") && stdout.contains("e2e-dba"),
        "{stdout}"
    );

    // Plain ssh as the role's account, keys from the agent only.
    let out = me.ssh(&sshd, "e2e-dba");
    assert!(
        out.status.success(),
        "after approval: {}\n{}",
        text(&out),
        sshd.log()
    );
    me.assert_no_private_key_on_disk();
    let out = me.run(&["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("elevation {id} db-admin (e2e-dba): active until")),
        "{}",
        text(&out)
    );

    // The grant ends by itself: the certificate is gone from the agent (its
    // lifetime matched the grant), ssh fails, and no new one is issued.
    let end = approved_at + Duration::from_secs(GRANT_SECS + 2);
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    let out = me.ssh(&sshd, "e2e-dba");
    assert!(!out.status.success(), "after the grant: {}", text(&out));
    assert!(
        !me.agent.list().contains("ED25519-CERT"),
        "{}",
        me.agent.list()
    );
    let out = me.run(&["login", "-p", "e2e-dba"]);
    assert!(!out.status.success(), "{}", text(&out));

    // Every step is in the audit chain.
    let verify = ca.ca_command(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify));
    let list = String::from_utf8_lossy(&ca.ca_command(&["audit", "list"]).stdout).into_owned();
    for action in [
        "elevation_request pending",
        "elevation_approve denied",
        "elevation_approve approved",
    ] {
        assert!(list.contains(action), "{action}: {list}");
    }
    let approvals = ca.ca_command(&["audit", "list", "--action", "elevation_approve"]);
    let approvals = String::from_utf8_lossy(&approvals.stdout).into_owned();
    assert_eq!(approvals.lines().count(), 2, "{approvals}");
    assert!(
        approvals.lines().all(|l| l.contains("elevation_approve")),
        "{approvals}"
    );
    let shown = std::process::Command::new(bin("jitssh-ca"))
        .args(["elevation", "show", "--config"])
        .arg(ca.config())
        .arg(&id)
        .output()
        .unwrap();
    assert!(shown.status.success(), "{}", text(&shown));
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["state"], "expired");
    assert_eq!(shown["approvals"][0]["comment"], "go ahead");
}
