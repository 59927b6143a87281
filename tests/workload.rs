//! Automation: a CI job's OIDC token (GitHub Actions-shaped claims from a test
//! issuer configured as a *workload* issuer) becomes a short certificate for
//! the `deploy` principal, bound by repository id, never by name. And a
//! service account's OAuth2 client credentials, traded at the real
//! `oidc-provider` for a JWT access token, do the same.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Output;

use jitssh_e2e::*;
use serde_json::{Value, json};

use crate::provider::{
    AUTOMATION_CLIENT_ID, AUTOMATION_CLIENT_SECRET, AUTOMATION_RESOURCE, CLIENT_ID, Provider,
};

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

/// `[[issuers]]` for the real provider as a workload issuer, with or without
/// the access-token opt-in.
fn provider_issuer(provider: &Provider, accept_access_tokens: bool) -> String {
    let mut entry = format!(
        "\n[[issuers]]\nissuer = \"{}\"\naudiences = [\"{CLIENT_ID}\"]\nkind = \"workload\"\n",
        provider.issuer
    );
    if accept_access_tokens {
        entry.push_str(&format!(
            "accept_access_tokens = true\naccess_token_audience = \"{AUTOMATION_RESOURCE}\"\n"
        ));
    }
    entry
}

/// `jitssh ARGS` with nothing from the runner's environment but PATH.
fn jitssh_in(home: &Path, ca: &str, args: &[&str]) -> Output {
    std::process::Command::new(bin("jitssh"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("JITSSH_CA", ca)
        .args(args)
        .output()
        .unwrap()
}

fn secret_file(dir: &Path, name: &str, content: &str, mode: u32) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `jitssh cert --client-id`: the client-credentials grant at the real
/// `oidc-provider` yields an RFC 9068 access token (`typ: at+jwt`, `aud` =
/// the resource); the CA takes it only because this workload issuer opted
/// in, the policy's service-account binding grants `deploy`, and the
/// certificate logs in to a real sshd. A wrong or exposed secret, and an
/// issuer without the opt-in, are refused with the documented exit codes.
#[test]
fn client_credentials_service_account_gets_deploy() {
    require_e2e();
    ensure_user("deploy");
    let provider = Provider::start(&[]);
    let people = Issuer::start("jitssh-e2e", vec![]);
    let mut ca = CaServer::start(&people.url, "jitssh-e2e");
    let base_config = std::fs::read_to_string(ca.config()).unwrap();
    std::fs::write(
        ca.config(),
        format!("{base_config}{}", provider_issuer(&provider, true)),
    )
    .unwrap();
    // The shipped binding names an example issuer: point it at the provider.
    let data = ca.dir.path().join("policies/data.json");
    let text = std::fs::read_to_string(&data).unwrap();
    assert!(text.contains("\"https://idp.example.com\""), "{text}");
    std::fs::write(
        &data,
        text.replace("https://idp.example.com", &provider.issuer),
    )
    .unwrap();
    ca.restart();
    let sshd = Sshd::start(&ca.user_ca_pub(), &[]);

    let home = tempfile::tempdir().unwrap();
    let out_dir = home.path().join("out");
    let good = secret_file(
        home.path(),
        "secret",
        &format!("{AUTOMATION_CLIENT_SECRET}\n"),
        0o600,
    );
    let cert = |ca_url: &str, secret: &str, extra: &[&str]| {
        let mut args = vec![
            "cert",
            "--client-id",
            AUTOMATION_CLIENT_ID,
            "--client-secret-file",
            secret,
        ];
        args.extend_from_slice(extra);
        jitssh_in(home.path(), ca_url, &args)
    };
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();

    // Token endpoint discovered from the issuer; files out; ssh logs in as deploy.
    let out = cert(
        &ca.url,
        &good,
        &[
            "--issuer",
            &provider.issuer,
            "--resource",
            AUTOMATION_RESOURCE,
            "--scope",
            "issue",
            "--principal",
            "deploy",
            "--ttl",
            "5m",
            "--out",
            out_dir.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}\nprovider log:\n{}",
        stderr(&out),
        provider.log()
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Certificate for deploy"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let login = sshd.login_with_files(
        "deploy",
        &out_dir.join("id_ed25519"),
        &out_dir.join("id_ed25519-cert.pub"),
    );
    assert!(login.status.success(), "{}\n{}", stderr(&login), sshd.log());
    let login_root = sshd.login_with_files(
        "root",
        &out_dir.join("id_ed25519"),
        &out_dir.join("id_ed25519-cert.pub"),
    );
    assert!(!login_root.status.success(), "only the granted principal");

    // Explicit token endpoint, the provider's default resource, JSON out:
    // the certificate names the service account (sub = client id).
    let out = cert(
        &ca.url,
        &good,
        &[
            "--token-endpoint",
            &provider.endpoint("token_endpoint"),
            "--format",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["principals"], json!(["deploy"]), "{doc}");
    assert!(
        doc["key_id"]
            .as_str()
            .unwrap()
            .contains(AUTOMATION_CLIENT_ID),
        "{doc}"
    );
    let life = doc["valid_before"].as_u64().unwrap() - doc["valid_after"].as_u64().unwrap();
    assert!(life <= 300 + 60, "the binding's five minutes, got {life}");

    // A wrong secret: the provider refuses (exit 3) and the message says what to check.
    let wrong = secret_file(home.path(), "wrong", "not-the-secret\n", 0o600);
    let out = cert(
        &ca.url,
        &wrong,
        &["--issuer", &provider.issuer, "--format", "json"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("invalid_client") && err.contains("--client-secret-file"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // A secret others can read is refused before anything is sent (exit 2).
    let exposed = secret_file(
        home.path(),
        "exposed",
        &format!("{AUTOMATION_CLIENT_SECRET}\n"),
        0o644,
    );
    let out = cert(
        &ca.url,
        &exposed,
        &["--issuer", &provider.issuer, "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));

    // Mixed with a token flag: a usage error from the flag parser (exit 2).
    let out = cert(
        &ca.url,
        &good,
        &[
            "--issuer",
            &provider.issuer,
            "--token-file",
            &good,
            "--format",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // The same issuer without the opt-in: access tokens are refused (exit 3).
    std::fs::write(
        ca.config(),
        format!("{base_config}{}", provider_issuer(&provider, false)),
    )
    .unwrap();
    ca.restart();
    let out = cert(
        &ca.url,
        &good,
        &["--issuer", &provider.issuer, "--format", "json"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("token_type_not_allowed") && err.contains("accept_access_tokens"),
        "{err}"
    );
}
