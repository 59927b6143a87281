//! Operating `jitssh-ca`: init, key-file checks, TLS, plain-HTTP refusal,
//! graceful shutdown, policy reload, `policy` and `audit` commands, `dev`.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jitssh_e2e::*;
use serde_json::json;

fn ca(args: &[&str]) -> std::process::Output {
    Command::new(bin("jitssh-ca")).args(args).output().unwrap()
}

fn init(dir: &std::path::Path) {
    let out = ca(&[
        "init",
        "--dir",
        dir.to_str().unwrap(),
        "--issuer",
        "http://127.0.0.1:9",
        "--audience",
        "x",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn serve_fails(config: &std::path::Path, listen: &str) -> String {
    let out = Command::new(bin("jitssh-ca"))
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            listen,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve should refuse to start");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn init_creates_private_keys_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    for k in ["user_ca", "host_ca"] {
        let mode = std::fs::metadata(dir.path().join(k))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{k}");
    }
    assert_ne!(
        std::fs::read(dir.path().join("user_ca.pub")).unwrap(),
        std::fs::read(dir.path().join("host_ca.pub")).unwrap()
    );
    let before = std::fs::read(dir.path().join("user_ca")).unwrap();
    let again = ca(&["init", "--dir", dir.path().to_str().unwrap()]);
    assert!(!again.status.success());
    assert_eq!(
        before,
        std::fs::read(dir.path().join("user_ca")).unwrap(),
        "key untouched"
    );
}

#[test]
fn serve_refuses_unsafe_ca_keys_and_plain_http_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let config = dir.path().join("config.toml");
    let key = dir.path().join("user_ca");
    let listen = format!("127.0.0.1:{}", free_port());

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(serve_fails(&config, &listen).contains("chmod 600"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    std::fs::rename(&key, dir.path().join("real_key")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("real_key"), &key).unwrap();
    assert!(serve_fails(&config, &listen).contains("symbolic link"));
    std::fs::remove_file(&key).unwrap();

    std::fs::write(&key, "garbage").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(serve_fails(&config, &listen).contains("does not parse"));
    std::fs::rename(dir.path().join("real_key"), &key).unwrap();

    let err = serve_fails(&config, &format!("0.0.0.0:{}", free_port()));
    assert!(err.contains("refusing plain HTTP"), "{err}");
}

#[test]
fn serve_speaks_tls_and_stops_on_sigterm() {
    require_e2e();
    let issuer = Issuer::start("jitssh-e2e", vec![]);
    let dir = tempfile::tempdir().unwrap();
    let out = ca(&[
        "init",
        "--dir",
        dir.path().to_str().unwrap(),
        "--issuer",
        &issuer.url,
        "--audience",
        "jitssh-e2e",
        "--login-claim",
        "preferred_username",
    ]);
    assert!(out.status.success());
    self_signed_tls(dir.path());
    let config = dir.path().join("config.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("# tls_cert = \"tls.crt\"", "tls_cert = \"tls.crt\"")
        .replace("# tls_key = \"tls.key\"", "tls_key = \"tls.key\"");
    std::fs::write(&config, text).unwrap();
    // The TLS key is checked like a CA key.
    let tls_key = dir.path().join("tls.key");
    std::fs::set_permissions(&tls_key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = serve_fails(&config, &format!("127.0.0.1:{}", free_port()));
    assert!(
        err.contains("server.tls_key") && err.contains("chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&tls_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = free_port();
    let mut child = Command::new(bin("jitssh-ca"))
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pem = std::fs::read(dir.path().join("tls.crt")).unwrap();
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        match client.get(format!("{url}/healthz")).send() {
            Ok(r) => break r,
            Err(e) if Instant::now() > deadline => panic!("no TLS answer: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert_eq!(health.status(), 200);
    let (_, public) = keygen(dir.path(), "k");
    let resp = client
        .post(format!("{url}/v1/certs/user"))
        .bearer_auth(issuer.token(&user("e2e-tls", &[])))
        .json(&json!({"public_key": public}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Plain HTTP on the TLS port gets no certificate.
    assert!(
        reqwest::blocking::get(format!("http://127.0.0.1:{port}/healthz"))
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
    );

    run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {}", child.id())),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "clean exit on SIGTERM, got {status}");
}

#[test]
fn policy_reloads_on_sighup_and_refuses_broken_policies() {
    require_e2e();
    let issuer = Issuer::start("jitssh-e2e", vec![]);
    let server = CaServer::start(&issuer.url, "jitssh-e2e");
    let policies = server.dir.path().join("policies");
    let (_, public) = keygen(server.dir.path(), "k");
    let ask = || {
        server.request_cert(
            &issuer.token(&user("e2e-erin", &[])),
            json!({"public_key": public}),
        )
    };
    assert_eq!(ask().0, 200);

    // Replace the policy with one that denies everything.
    for f in std::fs::read_dir(&policies).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    std::fs::write(
        policies.join("jitssh.rego"),
        "package jitssh\nimport rego.v1\ndecision := {\"allow\": false, \"reasons\": [\"maintenance window\"]}\n",
    )
    .unwrap();
    server.signal("HUP");
    let (s, body) = wait_for(|| {
        let r = ask();
        (r.0 == 403).then_some(r)
    });
    assert_eq!(s, 403);
    assert_eq!(body["error"]["reasons"][0], "maintenance window");

    // A policy that does not compile is refused; the old one keeps serving.
    std::fs::write(
        policies.join("jitssh.rego"),
        "package jitssh\ndecision := {{{ not rego",
    )
    .unwrap();
    server.signal("HUP");
    std::thread::sleep(Duration::from_secs(3));
    let (s, body) = ask();
    assert_eq!(
        (s, body["error"]["reasons"][0].as_str()),
        (403, Some("maintenance window"))
    );

    // A policy whose own tests fail is refused too.
    std::fs::write(
        policies.join("jitssh.rego"),
        "package jitssh\nimport rego.v1\ndecision := {\"allow\": true, \"principals\": [\"e2e-erin\"], \"ttl_seconds\": 60}\n",
    )
    .unwrap();
    std::fs::write(
        policies.join("jitssh_test.rego"),
        "package jitssh\nimport rego.v1\ntest_fails if { false }\n",
    )
    .unwrap();
    server.signal("HUP");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(ask().0, 403, "a policy with failing tests must not serve");
}

fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not reached in 15 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn policy_commands() {
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let out = ca(&["policy", "test", policies.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(" passed, 0 failed"), "{text}");

    let broken = tempfile::tempdir().unwrap();
    std::fs::write(
        broken.path().join("p.rego"),
        "package jitssh\nimport rego.v1\nx := 1\ndecision := {\"allow\": false}\n",
    )
    .unwrap();
    std::fs::write(
        broken.path().join("p_test.rego"),
        "package jitssh\nimport rego.v1\ntest_x if { x == 2 }\n",
    )
    .unwrap();
    let out = ca(&["policy", "test", broken.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL"));

    let out = ca(&[
        "policy",
        "eval",
        "--dir",
        policies.to_str().unwrap(),
        "--input",
        policies.join("example-input.json").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decision: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(decision["allow"], true);
    assert!(
        decision["principals"]
            .as_array()
            .unwrap()
            .contains(&json!("alice"))
    );
}

#[test]
fn audit_commands_list_export_and_detect_tampering() {
    require_e2e();
    let issuer = Issuer::start("jitssh-e2e", vec![]);
    let server = CaServer::start(&issuer.url, "jitssh-e2e");
    let (_, public) = keygen(server.dir.path(), "k");
    let mut serials = Vec::new();
    for name in ["e2e-frank", "e2e-grace", "e2e-heidi"] {
        let (s, b) = server.request_cert(
            &issuer.token(&user(name, &[])),
            json!({"public_key": public}),
        );
        assert_eq!(s, 200);
        serials.push(b["serial"].as_str().unwrap().to_string());
    }
    // A denial is audited too.
    let (s, _) = server.request_cert(
        &issuer.token(&user("e2e-frank", &[])),
        json!({"public_key": public, "principals": ["root"]}),
    );
    assert_eq!(s, 403);

    let out = server.ca_command(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = server.ca_command(&["audit", "list", "--principal", "e2e-grace"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(list.contains(&serials[1]));
    // (Each person's first certificate also bound their login name: a
    // login_name_bind row before it.)
    let out = server.ca_command(&["audit", "export", "--action", "user_cert"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3]["event"]["outcome"], "denied");
    let grace = lines[1]["seq"].as_i64().unwrap();
    let out = server.ca_command(&["audit", "show", &grace.to_string()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&serials[1]));

    // Edit grace's row behind the CA's back: verify names it.
    let db = rusqlite::Connection::open(server.dir.path().join("audit.db")).unwrap();
    // The schema's append-only triggers stop mistakes, not someone with the file.
    db.execute_batch("DROP TRIGGER audit_no_update").unwrap();
    db.execute(
        "UPDATE audit SET event = replace(event, 'e2e-grace', 'e2e-mallory') WHERE seq = ?1",
        [grace],
    )
    .unwrap();
    drop(db);
    let out = server.ca_command(&["audit", "verify"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("row {grace}")), "{text}");
}

#[test]
fn dev_refuses_a_directory_holding_another_ca() {
    let dev = |dir: &std::path::Path| {
        let mut child = Command::new(bin("jitssh-ca"))
            .args(["dev", "--listen", "127.0.0.1:0", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!("dev is serving {}", dir.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "dev should refuse {}", dir.display());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // A CA made by `init`: production keys must not go behind the dev IdP.
    let prod = tempfile::tempdir().unwrap();
    init(prod.path());
    let err = dev(prod.path());
    assert!(err.contains("config.toml"), "{err}");
    // Keys without a config, or anything else that is not a dev directory.
    std::fs::remove_file(prod.path().join("config.toml")).unwrap();
    let err = dev(prod.path());
    assert!(
        err.contains("not a jitssh-ca dev directory") && err.contains("host_ca"),
        "{err}"
    );
    assert!(!prod.path().join("jitssh-dev-ca").exists());
}

#[test]
fn dev_mode_issues_certificates_with_its_own_idp() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin("jitssh-ca"))
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--user",
            "e2e-ivan",
            "--groups",
            "ops",
            "--dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Keep the pipe open for the server's later output.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut base = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(url) = line.strip_prefix("CA:") {
            base = Some(url.trim().to_string());
            break;
        }
    }
    let base = base.expect("dev prints the CA URL");
    let cfg: serde_json::Value = reqwest::blocking::get(format!("{base}/v1/config"))
        .unwrap()
        .json()
        .unwrap();
    let issuer = cfg["issuer"].as_str().unwrap();
    assert!(issuer.starts_with(&base));

    // Authorization code + PKCE against the built-in IdP.
    let verifier = "e2e-verifier-0123456789-0123456789-0123456789";
    let challenge = {
        use base64::Engine as _;
        use sha2::Digest as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()))
    };
    let redirect = "http://127.0.0.1:9/callback";
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .get(format!("{issuer}/authorize"))
        .query(&[
            ("client_id", cfg["client_id"].as_str().unwrap()),
            ("response_type", "code"),
            ("redirect_uri", redirect),
            ("scope", "openid email profile groups"),
            ("state", "s1"),
            ("nonce", "n1"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .unwrap();
    assert_eq!(resp.status(), 302);
    let location = reqwest::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .to_string();
    let tokens: serde_json::Value = client
        .post(format!("{issuer}/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("client_id", cfg["client_id"].as_str().unwrap()),
            ("code_verifier", verifier),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id_token = tokens["id_token"].as_str().unwrap();
    let (_, public) = keygen(dir.path(), "k");
    let resp: serde_json::Value = client
        .post(format!("{base}/v1/certs/user"))
        .bearer_auth(id_token)
        .json(&json!({"public_key": public}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let principals = resp["principals"].as_array().expect("certificate issued");
    assert!(principals.contains(&json!("e2e-ivan")), "{resp}");

    run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {}", child.id())),
    );
    drop(lines);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NOT FOR PRODUCTION"), "{stderr}");
    assert!(dir.path().join("audit.db").exists());
}
