//! Automation: a CI job's OIDC token (GitHub Actions-shaped claims from a test
//! issuer configured as a *workload* issuer) becomes a short certificate for
//! the `deploy` principal, bound by repository id, never by name.

use jitssh_e2e::*;
use serde_json::{Value, json};

const GH_AUD: &str = "jitssh-ca";

fn claims(issuer: &str, overrides: Value) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut c = json!({
        "iss": issuer, "aud": GH_AUD, "iat": now, "exp": now + 300,
        "sub": "repo:example/deployer:ref:refs/heads/main",
        "repository": "example/deployer", "repository_id": "123456789",
        "repository_owner": "example", "repository_owner_id": "4242",
        "ref": "refs/heads/main", "event_name": "push",
        "jti": format!("{}", rand_core::RngCore::next_u64(&mut rand_core::OsRng)),
    });
    for (k, v) in overrides.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

#[test]
fn ci_job_on_main_gets_deploy_and_nothing_else_does() {
    require_e2e();
    ensure_user("deploy");
    let people = Issuer::start("jitssh-e2e", vec![]);
    let ci = Issuer::start(GH_AUD, vec![]);
    let mut ca = CaServer::start(&people.url, "jitssh-e2e");
    // Trust the CI issuer as a workload issuer, and bind the policy's example
    // workload to it (the shipped data.json names GitHub's issuer).
    let config = std::fs::read_to_string(ca.config()).unwrap()
        + &format!(
            "\n[[issuers]]\nissuer = \"{}\"\naudiences = [\"{GH_AUD}\"]\nkind = \"workload\"\n",
            ci.url
        );
    std::fs::write(ca.config(), config).unwrap();
    let data = ca.dir.path().join("policies/data.json");
    let text = std::fs::read_to_string(&data)
        .unwrap()
        .replace("https://token.actions.githubusercontent.com", &ci.url);
    std::fs::write(&data, text).unwrap();
    ca.restart();

    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path(), "ci");
    let mint = |o: Value| {
        ci.idp
            .mint(jsonwebtoken::Algorithm::ES256, claims(&ci.url, o))
    };

    let (s, body) = ca.request_cert(&mint(json!({})), json!({"public_key": public}));
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["principals"], json!(["deploy"]));
    let life = body["valid_before"].as_u64().unwrap() - body["valid_after"].as_u64().unwrap();
    assert!(
        life <= 300 + 60,
        "five minutes (plus backdating), got {life}"
    );
    let cert = work.path().join("ci-cert.pub");
    std::fs::write(
        &cert,
        format!("{}\n", body["certificate"].as_str().unwrap()),
    )
    .unwrap();
    let sshd = Sshd::start(&ca.user_ca_pub(), &[]);
    let out = sshd.login_with_files("deploy", &key, &cert);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        sshd.log()
    );

    for (what, o) in [
        (
            "pull request ref",
            json!({"ref": "refs/pull/7/merge", "event_name": "pull_request"}),
        ),
        ("other branch", json!({"ref": "refs/heads/feature"})),
        (
            "other repository",
            json!({"repository": "example/other", "repository_id": "555"}),
        ),
        (
            "re-created repository, same name, new id",
            json!({"repository_id": "987654321"}),
        ),
        ("other owner", json!({"repository_owner_id": "1"})),
    ] {
        let (s, body) = ca.request_cert(&mint(o), json!({"public_key": public}));
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (403, Some("denied_by_policy")),
            "{what}: {body}"
        );
    }

    // A workload token is not a person: the human rules never apply to it.
    let (s, _) = ca.request_cert(
        &mint(json!({"preferred_username": "alice", "email": "alice@example.com", "email_verified": true})),
        json!({"public_key": public, "principals": ["alice"]}),
    );
    assert_eq!(s, 403);
}
