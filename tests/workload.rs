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

/// A CA trusting `ci` as a workload issuer, with the policy's example
/// binding pointed at it (the shipped data.json names GitHub's issuer).
fn workload_ca(people: &Issuer, ci: &Issuer) -> CaServer {
    let mut ca = CaServer::start(&people.url, "jitssh-e2e");
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
    ca
}

#[test]
fn ci_job_on_main_gets_deploy_and_nothing_else_does() {
    require_e2e();
    ensure_user("deploy");
    let people = Issuer::start("jitssh-e2e", vec![]);
    let ci = Issuer::start(GH_AUD, vec![]);
    let ca = workload_ca(&people, &ci);

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

/// `jitssh cert`: the non-interactive client a CI step runs.
#[test]
fn jitssh_cert_writes_files_fills_an_agent_and_reports_refusals() {
    require_e2e();
    ensure_user("deploy");
    let people = Issuer::start("jitssh-e2e", vec![]);
    let ci = Issuer::start(GH_AUD, vec![]);
    let ca = workload_ca(&people, &ci);
    let sshd = Sshd::start(&ca.user_ca_pub(), &[]);
    let home = tempfile::tempdir().unwrap();
    let out_dir = home.path().join("out");
    let token_file = home.path().join("token");
    let mint = |o: Value| {
        ci.idp
            .mint(jsonwebtoken::Algorithm::ES256, claims(&ci.url, o))
    };
    let jitssh = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(bin("jitssh"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("JITSSH_CA", &ca.url)
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };

    // Files: key and certificate 0600, usable by plain ssh.
    std::fs::write(&token_file, mint(json!({}))).unwrap();
    let out = jitssh(
        &[
            "cert",
            "--token-file",
            token_file.to_str().unwrap(),
            "--principal",
            "deploy",
            "--ttl",
            "5m",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt as _;
    for f in ["id_ed25519", "id_ed25519-cert.pub"] {
        let mode = std::fs::metadata(out_dir.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let login = sshd.login_with_files(
        "deploy",
        &out_dir.join("id_ed25519"),
        &out_dir.join("id_ed25519-cert.pub"),
    );
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );

    // Agent: from an environment variable, into a real ssh-agent.
    let agent = SshAgent::start();
    let token = mint(json!({}));
    let out = jitssh(
        &["cert", "--token-env", "CI_TOKEN", "--agent"],
        &[
            ("CI_TOKEN", &token),
            ("SSH_AUTH_SOCK", agent.socket.to_str().unwrap()),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(agent.list().contains("ED25519-CERT"), "{}", agent.list());

    // JSON only: the key comes back on stdout.
    std::fs::write(&token_file, mint(json!({}))).unwrap();
    let out = jitssh(
        &[
            "cert",
            "--token-file",
            token_file.to_str().unwrap(),
            "--format",
            "json",
        ],
        &[],
    );
    assert!(out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        doc["private_key"]
            .as_str()
            .unwrap()
            .contains("OPENSSH PRIVATE KEY")
    );
    assert_eq!(doc["principals"], json!(["deploy"]));

    // Refusals have documented exit codes: 3 refused, 2 usage, 4 unreachable.
    std::fs::write(&token_file, mint(json!({"ref": "refs/pull/1/merge"}))).unwrap();
    let out = jitssh(
        &[
            "cert",
            "--token-file",
            token_file.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no workload binding"));
    let out = jitssh(&["cert", "--out", out_dir.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let mut cmd = std::process::Command::new(bin("jitssh"));
    let out = cmd
        .env("HOME", home.path())
        .args([
            "cert",
            "--ca",
            &format!("http://127.0.0.1:{}", free_port()),
            "--token-file",
        ])
        .arg(&token_file)
        .args(["--out", out_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
