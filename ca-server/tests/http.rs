//! In-process HTTP tests: the real router (`app(state)`) driven with
//! `oneshot`, tokens minted by the dev OpenID provider serving its JWKS on a
//! loopback port inside the test. Each rejection the API promises is here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::StatusCode;
use ca_server::dev::idp::DevUser;
use ca_server::policy::PolicyEngine;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

mod common;
use common::{AUD, Harness, MintExt as _, now};

fn alice() -> DevUser {
    DevUser {
        username: "alice".into(),
        email: "alice@example.com".into(),
        groups: vec!["developers".into()],
    }
}

async fn harness() -> Harness {
    harness_with(PolicyEngine::load_embedded_default().unwrap(), |_| {}).await
}

async fn harness_with(
    policy: PolicyEngine,
    tweak: impl FnOnce(&mut ca_server::config::Config),
) -> Harness {
    common::build(policy, vec![alice()], tweak).await
}

fn claims(sub: &str) -> Value {
    json!({
        "iss": "", "sub": sub, "aud": AUD, "iat": now(), "exp": now() + 300,
        "email": format!("{sub}@example.com"), "email_verified": true,
        "preferred_username": sub, "groups": ["developers"],
        // Real IdPs make every token unique; ES256 signatures here are deterministic.
        "jti": format!("{:x}", rand_core::RngCore::next_u64(&mut rand_core::OsRng)),
    })
}

impl Harness {
    fn claims(&self, sub: &str) -> Value {
        let mut c = claims(sub);
        c["iss"] = json!(self.idp.issuer());
        c
    }

    fn token(&self) -> String {
        self.idp.mint(Algorithm::ES256, self.claims("alice"))
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Body,
    ) -> (StatusCode, Vec<u8>, axum::http::HeaderMap) {
        self.request(method, path, token, body).await
    }

    async fn cert(&self, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        let (s, b, _) = self
            .call(
                "POST",
                "/v1/certs/user",
                token,
                Body::from(body.to_string()),
            )
            .await;
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    fn audit_rows(&self) -> Vec<ca_server::audit::StoredEvent> {
        self.state
            .authority
            .audit
            .list(&Default::default())
            .unwrap()
    }
}

fn pubkey() -> String {
    let k =
        ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
    k.public_key().to_openssh().unwrap()
}

fn assert_error(got: (StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{}", got.1);
    assert!(!got.1["error"]["message"].as_str().unwrap_or("").is_empty());
}

async fn issues_certificate_for_verified_user() {
    let h = harness().await;
    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let token = h.idp.mint(alg, h.claims("alice"));
        let (status, body) = h
            .cert(
                Some(&token),
                json!({"public_key": pubkey(), "reason": "deploy"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{alg:?}: {body}");
        // Own username, plus the principal data.json maps the "developers" group to.
        assert_eq!(body["principals"], json!(["alice", "dev"]));
        let cert =
            ssh_key::Certificate::from_openssh(body["certificate"].as_str().unwrap()).unwrap();
        assert_eq!(
            cert.valid_principals(),
            ["alice".to_string(), "dev".to_string()]
        );
        assert_eq!(cert.serial().to_string(), body["serial"].as_str().unwrap());
        assert!(cert.key_id().starts_with("alice@example.com serial="));
        let lifetime = cert.valid_before() - now();
        assert!(
            (890..=900).contains(&lifetime),
            "default 15 minutes, got {lifetime}"
        );
        assert!(now() - cert.valid_after() <= 60, "backdated at most 60 s");
        let ca_fp = h
            .state
            .authority
            .user_ca
            .public_key()
            .fingerprint(Default::default());
        cert.validate_at(now(), &[ca_fp]).unwrap();
    }
    let mut rows = h.audit_rows();
    // The first certificate bound the login name to alice's identity.
    let bind = rows.remove(0);
    assert_eq!(
        (bind.event.action.as_str(), bind.event.details.clone()),
        (
            "login_name_bind",
            Some(json!({"login": "alice", "bound_by": "first_use"}))
        )
    );
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|r| r.event.outcome == "issued" && r.event.policy_hash.is_some())
    );
    assert!(
        rows.iter()
            .all(|r| r.event.token_hash.as_ref().is_some_and(|t| t.len() == 64))
    );
    assert_eq!(rows[0].event.reason.as_deref(), Some("deploy"));
    assert!(h.state.authority.audit.verify().unwrap().error.is_none());
}

async fn token_rejections() {
    let h = harness().await;
    let body = || json!({"public_key": pubkey()});
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = h.claims("alice");
        f(&mut c);
        h.idp.mint(Algorithm::ES256, c)
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "token_expired",
            with(&|c| {
                c["exp"] = json!(now() - 120);
                c["iat"] = json!(now() - 600);
            }),
        ),
        (
            "token_not_yet_valid",
            with(&|c| c["nbf"] = json!(now() + 600)),
        ),
        (
            "token_issued_in_future",
            with(&|c| c["iat"] = json!(now() + 600)),
        ),
        (
            "token_claim_type",
            with(&|c| c["exp"] = json!((now() + 300).to_string())),
        ),
        (
            "token_audience_mismatch",
            with(&|c| c["aud"] = json!("someone-else")),
        ),
        (
            "token_azp_mismatch",
            with(&|c| {
                c["aud"] = json!([AUD, "other"]);
                c["azp"] = json!("other");
            }),
        ),
        (
            "token_issuer_unknown",
            with(&|c| c["iss"] = json!("https://evil.example.com")),
        ),
        (
            "token_issuer_unknown",
            with(&|c| c["iss"] = json!(format!("{}/", h.idp.issuer()))),
        ),
        (
            "token_claim_missing",
            with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
        ),
        (
            "token_algorithm_not_allowed",
            h.idp.mint_raw(
                json!({"alg": "none", "kid": "x"}),
                h.claims("alice"),
                Algorithm::ES256,
            ),
        ),
        (
            "token_algorithm_not_allowed",
            h.idp.mint_raw(
                json!({"alg": "HS256", "kid": "x"}),
                h.claims("alice"),
                Algorithm::ES256,
            ),
        ),
        (
            "token_header_key_refused",
            h.idp.mint_raw(
                json!({"alg": "ES256", "kid": "x", "jwk": {"kty": "EC"}}),
                h.claims("alice"),
                Algorithm::ES256,
            ),
        ),
        (
            "token_header_key_refused",
            h.idp.mint_raw(
                json!({"alg": "ES256", "kid": "x", "jku": "http://127.0.0.1:1/jwks"}),
                h.claims("alice"),
                Algorithm::ES256,
            ),
        ),
        (
            "token_header_key_refused",
            h.idp.mint_raw(
                json!({"alg": "ES256", "kid": "x", "x5u": "http://127.0.0.1:1/x"}),
                h.claims("alice"),
                Algorithm::ES256,
            ),
        ),
        (
            "token_header_key_refused",
            h.idp.mint_raw(
                json!({"alg": "ES256", "kid": "x", "x5c": ["AAAA"]}),
                h.claims("alice"),
                Algorithm::ES256,
            ),
        ),
        (
            "token_key_unknown",
            h.idp.mint_raw(
                json!({"alg": "ES256", "kid": "no-such-kid"}),
                h.claims("alice"),
                Algorithm::ES256,
            ),
        ),
        ("token_malformed", "not.a.jwt".into()),
        ("token_too_large", "a".repeat(17 * 1024)),
    ];
    for (code, token) in cases {
        assert_error(
            h.cert(Some(&token), body()).await,
            StatusCode::UNAUTHORIZED,
            code,
        );
    }
    // A valid token whose signature was tampered with.
    let t = h.token();
    let mut parts: Vec<String> = t.split('.').map(String::from).collect();
    let mut c = h.claims("mallory");
    c["iss"] = json!(h.idp.issuer());
    parts[1] = base64_url(&c.to_string());
    assert_error(
        h.cert(Some(&parts.join(".")), body()).await,
        StatusCode::UNAUTHORIZED,
        "token_signature_invalid",
    );
    assert_error(
        h.cert(None, body()).await,
        StatusCode::UNAUTHORIZED,
        "token_missing",
    );
    // Nobody authenticated: no row each (an anonymous loop must not grow
    // the chain), one summary for the source once its minute is over.
    assert!(
        h.audit_rows().is_empty(),
        "token refusals are counted, not chained one by one"
    );
    h.state
        .authority
        .flush_unauthenticated(now() + 120, true)
        .await;
    let rows = h.audit_rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event.action, "unauthenticated");
    let count = rows[0].event.details.as_ref().unwrap()["count"]
        .as_u64()
        .unwrap();
    assert!(count >= 19, "{count}");
}

fn base64_url(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

async fn replay_is_refused_and_audited() {
    let h = harness().await;
    let token = h.token();
    assert_eq!(
        h.cert(Some(&token), json!({"public_key": pubkey()}))
            .await
            .0,
        StatusCode::OK
    );
    assert_error(
        h.cert(Some(&token), json!({"public_key": pubkey()})).await,
        StatusCode::UNAUTHORIZED,
        "token_replayed",
    );
    let rows = h.audit_rows();
    assert_eq!(
        rows.last().unwrap().event.code.as_deref(),
        Some("token_replayed")
    );

    // A denied request does not spend the token.
    let t2 = h.token();
    assert_eq!(
        h.cert(
            Some(&t2),
            json!({"public_key": pubkey(), "principals": ["root"]})
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        h.cert(Some(&t2), json!({"public_key": pubkey()})).await.0,
        StatusCode::OK
    );
}

async fn bad_public_keys_are_400() {
    let h = harness().await;
    // A real 2048-bit RSA key from ssh-keygen: well-formed, but too short.
    let rsa2048 = {
        let p = h.dir.path().join("rsa2048");
        let st = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::read_to_string(p.with_extension("pub")).unwrap()
    };
    let ca_own = h.state.authority.user_ca.public_openssh("");
    let cert_line = {
        let token = h.token();
        let (_, b) = h.cert(Some(&token), json!({"public_key": pubkey()})).await;
        b["certificate"].as_str().unwrap().to_string()
    };
    let ed = pubkey();
    let garbage = {
        use base64::Engine as _;
        let b64 = ed.split(' ').nth(1).unwrap();
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        raw.extend_from_slice(b"trailing");
        format!(
            "ssh-ed25519 {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    };
    for key in [
        "ssh-dss AAAAB3NzaC1kc3MAAACBAP".to_string(),
        rsa2048.clone(),
        cert_line,
        ca_own,
        garbage,
        "".into(),
        "ssh-ed25519 not-base64!".into(),
    ] {
        let token = h.token();
        assert_error(
            h.cert(Some(&token), json!({"public_key": key})).await,
            StatusCode::BAD_REQUEST,
            "invalid_public_key",
        );
    }
}

async fn bad_requests_are_400_and_change_nothing() {
    let h = harness().await;
    let before = h
        .audit_rows()
        .iter()
        .filter(|r| r.event.outcome == "issued")
        .count();
    let cases = [
        (
            json!({"public_key": pubkey(), "principals": ["a,b"]}),
            "invalid_principals",
        ),
        (
            json!({"public_key": pubkey(), "principals": []}),
            "invalid_principals",
        ),
        (
            json!({"public_key": pubkey(), "principals": ["*"]}),
            "invalid_principals",
        ),
        (
            json!({"public_key": pubkey(), "ttl_seconds": 0}),
            "invalid_ttl",
        ),
        (
            json!({"public_key": pubkey(), "ttl_seconds": -5}),
            "invalid_request",
        ),
        (
            json!({"public_key": pubkey(), "reason": "a\u{1b}[2Jb"}),
            "invalid_reason",
        ),
        (
            json!({"public_key": pubkey(), "ttl": 60}),
            "invalid_request",
        ),
        (json!({"principals": ["alice"]}), "invalid_request"),
        (json!([1, 2, 3]), "invalid_request"),
    ];
    for (body, code) in cases {
        let token = h.token();
        assert_error(
            h.cert(Some(&token), body).await,
            StatusCode::BAD_REQUEST,
            code,
        );
    }
    let token = h.token();
    let (s, b, _) = h
        .call(
            "POST",
            "/v1/certs/user",
            Some(&token),
            Body::from("{not json"),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&b)
    );
    let after = h
        .audit_rows()
        .iter()
        .filter(|r| r.event.outcome == "issued")
        .count();
    assert_eq!(before, after, "no certificate for bad input");
}

async fn oversize_body_is_413() {
    let h = harness().await;
    let token = h.token();
    let big = json!({"public_key": pubkey(), "reason": "x".repeat(70 * 1024)});
    assert_error(
        h.cert(Some(&token), big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
    );
}

/// Over a real socket, oversized bodies get an answer the client can read
/// and no connection left in a state a client pool would misuse:
///
/// - a body somewhat over the limit, still on its way when the server has
///   seen enough, is read to its end: the client reads the 413 and the same
///   connection serves its next request;
/// - a body that does not arrive in time, or whose announced length is
///   beyond what would be drained (answered without reading it), gets a 413
///   with `Connection: close`.
///
/// Before this, the server answered after 64 KiB and closed with the rest
/// unread and no `Connection: close`: a client pool could reuse the
/// connection, and the rest arriving made the kernel reset it (a flaky e2e
/// failure, "IncompleteMessage", on a busy CI machine).
async fn oversize_bodies_get_a_readable_413_over_tcp() {
    use std::io::{Read, Write};
    let h = harness().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = ca_server::http::app(h.state.clone())
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let token = h.token();
    let (modest, stalled, hostile) = tokio::task::spawn_blocking(move || {
        let connect = || {
            let s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            s
        };
        let head = |len: usize| {
            format!(
                "POST /v1/certs/user HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
            )
        };
        let read_all = |s: &mut std::net::TcpStream| {
            let mut got = Vec::new();
            let read = s.read_to_end(&mut got);
            format!("{read:?}\n{}", String::from_utf8_lossy(&got))
        };
        // 100 KiB in two parts with a pause, then a second request on the
        // same connection (which asks the server to close after it).
        let mut s = connect();
        s.write_all(head(100 * 1024).as_bytes()).unwrap();
        s.write_all(&[b'['; 70 * 1024]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        s.write_all(&[b'['; 30 * 1024]).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let modest = read_all(&mut s);
        // 512 KiB announced, 70 KiB sent, then nothing: drained until the
        // drain gives up.
        let mut s = connect();
        s.write_all(head(512 * 1024).as_bytes()).unwrap();
        s.write_all(&[b'['; 70 * 1024]).unwrap();
        let stalled = read_all(&mut s);
        // 10 MiB announced, nothing sent: answered without reading.
        let mut s = connect();
        s.write_all(head(10 << 20).as_bytes()).unwrap();
        let hostile = read_all(&mut s);
        (modest, stalled, hostile)
    })
    .await
    .unwrap();
    let modest_lc = modest.to_ascii_lowercase();
    assert!(modest.starts_with("Ok("), "{modest}");
    assert!(modest.contains("HTTP/1.1 413"), "{modest}");
    assert!(modest.contains("request_too_large"), "{modest}");
    let second = modest
        .find("HTTP/1.1 200")
        .unwrap_or_else(|| panic!("the connection did not serve its next request: {modest}"));
    assert!(
        !modest_lc[..second].contains("connection: close"),
        "{modest}"
    );
    for answer in [stalled, hostile] {
        assert!(answer.starts_with("Ok("), "{answer}");
        assert!(answer.contains("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("request_too_large"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
    }
}

async fn policy_denial_is_403_with_reasons() {
    let h = harness().await;
    let token = h.token();
    let got = h
        .cert(
            Some(&token),
            json!({"public_key": pubkey(), "principals": ["root"]}),
        )
        .await;
    assert_error(got.clone(), StatusCode::FORBIDDEN, "denied_by_policy");
    assert!(
        !got.1["error"]["reasons"].as_array().unwrap().is_empty(),
        "{}",
        got.1
    );
    let row = h.audit_rows().pop().unwrap();
    assert_eq!(row.event.outcome, "denied");
    assert!(!row.event.decision_reasons.is_empty());
}

fn policy_dir(rego: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.rego"), rego).unwrap();
    d
}

async fn broken_policy_decisions_deny() {
    let cases = [
        // Undefined decision.
        (
            "package jitssh\nimport rego.v1\ndecision := x if { false; x := 1 }\n",
            "policy_error",
        ),
        // Empty principals: never a certificate valid for anyone.
        (
            "package jitssh\nimport rego.v1\ndecision := {\"allow\": true, \"principals\": [], \"ttl_seconds\": 60}\n",
            "denied_by_policy",
        ),
        // Malformed principal.
        (
            "package jitssh\nimport rego.v1\ndecision := {\"allow\": true, \"principals\": [\"a,b\"], \"ttl_seconds\": 60}\n",
            "policy_error",
        ),
        // Extension outside the allowlist.
        (
            "package jitssh\nimport rego.v1\ndecision := {\"allow\": true, \"principals\": [\"alice\"], \"ttl_seconds\": 60, \"extensions\": [\"permit-user-rc\"]}\n",
            "policy_error",
        ),
        // Wrong shape.
        (
            "package jitssh\nimport rego.v1\ndecision := \"yes\"\n",
            "policy_error",
        ),
        // An array is not a decision, even one whose items line up with the
        // decision's fields (serde reads structs from arrays by position).
        (
            "package jitssh\nimport rego.v1\ndecision := [true, [\"alice\"], 60]\n",
            "policy_error",
        ),
        // Runtime error in the policy.
        (
            // (jti exists only in the test's tokens, so the load-time sample
            // check, which finds errors on the example input, passes.)
            "package jitssh\nimport rego.v1\nttl := to_number(concat(\"\", [\"x\", input.identity.claims.jti]))\ndecision := {\"allow\": true, \"principals\": [\"alice\"], \"ttl_seconds\": ttl}\n",
            "policy_error",
        ),
    ];
    for (rego, code) in cases {
        let dir = policy_dir(rego);
        let policy = PolicyEngine::load_dir(dir.path()).unwrap();
        let h = harness_with(policy, |_| {}).await;
        let token = h.token();
        assert_error(
            h.cert(Some(&token), json!({"public_key": pubkey()})).await,
            StatusCode::FORBIDDEN,
            code,
        );
    }
}

async fn ttl_above_ceiling_is_clamped() {
    let dir = policy_dir(
        "package jitssh\nimport rego.v1\ndecision := {\"allow\": true, \"principals\": [\"alice\"], \"ttl_seconds\": 999999}\n",
    );
    let h = harness_with(PolicyEngine::load_dir(dir.path()).unwrap(), |_| {}).await;
    let token = h.token();
    let (s, b) = h.cert(Some(&token), json!({"public_key": pubkey()})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b["valid_before"].as_u64().unwrap() <= now() + 3600);
}

async fn rate_limit_is_429_with_retry_after() {
    let h = harness_with(PolicyEngine::load_embedded_default().unwrap(), |c| {
        c.rate_per_minute = 1;
        c.rate_burst = 2;
    })
    .await;
    for _ in 0..2 {
        let t = h.token();
        assert_eq!(
            h.cert(Some(&t), json!({"public_key": pubkey()})).await.0,
            StatusCode::OK
        );
    }
    let t = h.token();
    let (s, b, headers) = h
        .call(
            "POST",
            "/v1/certs/user",
            Some(&t),
            Body::from(json!({"public_key": pubkey()}).to_string()),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        String::from_utf8_lossy(&b)
    );
    assert!(headers.get("retry-after").is_some());
}

#[tokio::test]
async fn unwritable_database_is_503_and_no_certificate() {
    let h = harness().await;
    let db = h.dir.path().join("audit.db");
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let token = h.token();
    let got = h.cert(Some(&token), json!({"public_key": pubkey()})).await;
    assert_error(
        got.clone(),
        StatusCode::SERVICE_UNAVAILABLE,
        "audit_unavailable",
    );
    assert!(got.1.get("certificate").is_none());
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    // Recovers by itself, and the same token was not spent.
    let got = h.cert(Some(&token), json!({"public_key": pubkey()})).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
}

async fn idp_down_is_503() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("http://127.0.0.1:{port}");
    let d = dead.clone();
    let h = harness_with(PolicyEngine::load_embedded_default().unwrap(), move |c| {
        c.issuers[0].issuer = d
    })
    .await;
    let mut claims = h.claims("alice");
    claims["iss"] = json!(dead);
    let token = h.idp.mint(Algorithm::ES256, claims);
    assert_error(
        h.cert(Some(&token), json!({"public_key": pubkey()})).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "idp_unavailable",
    );
    let (s, _, _) = h.call("GET", "/readyz", None, Body::empty()).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
}

async fn public_endpoints() {
    let h = harness().await;
    let (s, b, _) = h.call("GET", "/v1/ca", None, Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    let keys: Value = serde_json::from_slice(&b).unwrap();
    assert!(
        keys["user_ca"][0]
            .as_str()
            .unwrap()
            .starts_with("ssh-ed25519 ")
    );
    assert_ne!(
        keys["user_ca"][0], keys["host_ca"][0],
        "separate user and host CA keys"
    );
    let (_, b, _) = h.call("GET", "/v1/ca/user.pub", None, Body::empty()).await;
    assert_eq!(
        String::from_utf8(b).unwrap().trim(),
        keys["user_ca"][0].as_str().unwrap()
    );
    let (_, b, _) = h.call("GET", "/v1/ca/host.pub", None, Body::empty()).await;
    assert_eq!(
        String::from_utf8(b).unwrap().trim(),
        keys["host_ca"][0].as_str().unwrap()
    );
    let (s, b, _) = h.call("GET", "/v1/config", None, Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    let cfg: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(cfg["issuer"], h.idp.issuer());
    assert!(cfg["scopes"].as_array().unwrap().contains(&json!("openid")));
    assert_eq!(
        h.call("GET", "/healthz", None, Body::empty()).await.0,
        StatusCode::OK
    );
    let (s, b, _) = h.call("GET", "/readyz", None, Body::empty()).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let t = h.token();
    h.cert(Some(&t), json!({"public_key": pubkey()})).await;
    h.cert(None, json!({"public_key": pubkey()})).await;
    let (_, b, _) = h.call("GET", "/metrics", None, Body::empty()).await;
    let m = String::from_utf8(b).unwrap();
    assert!(m.contains("jitssh_certificates_issued_total 1"), "{m}");
    assert!(
        m.contains("jitssh_requests_denied_total{code=\"token_missing\"} 1"),
        "{m}"
    );
    assert!(m.contains("jitssh_policy_evaluation_seconds"), "{m}");
    let (s, b, _) = h.call("GET", "/nope", None, Body::empty()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(serde_json::from_slice::<Value>(&b).is_ok());
    assert_eq!(
        h.call("GET", "/v1/certs/user", None, Body::empty()).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

async fn accepts_every_supported_key_type() {
    let h = harness().await;
    let mut keys = Vec::new();
    for (t, bits) in [
        ("ecdsa", "256"),
        ("ecdsa", "384"),
        ("ecdsa", "521"),
        ("rsa", "3072"),
        ("ed25519", "256"),
    ] {
        let p = h.dir.path().join(format!("{t}{bits}"));
        let st = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", t, "-b", bits, "-N", "", "-f"])
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success());
        keys.push(std::fs::read_to_string(p.with_extension("pub")).unwrap());
    }
    // FIDO keys cannot be generated without an authenticator; build their public halves.
    let sk_ed = ssh_key::public::KeyData::SkEd25519(ssh_key::public::SkEd25519::new(
        ssh_key::public::Ed25519PublicKey([9u8; 32]),
        "ssh:".to_string(),
    ));
    keys.push(ssh_key::PublicKey::new(sk_ed, "").to_openssh().unwrap());
    let ecdsa = ssh_key::PublicKey::from_openssh(&keys[0]).unwrap();
    let ssh_key::public::EcdsaPublicKey::NistP256(point) = *ecdsa.key_data().ecdsa().unwrap()
    else {
        panic!("first key is P-256")
    };
    let sk_ec = ssh_key::public::KeyData::SkEcdsaSha2NistP256(
        ssh_key::public::SkEcdsaSha2NistP256::new(point, "ssh:".to_string()),
    );
    keys.push(ssh_key::PublicKey::new(sk_ec, "").to_openssh().unwrap());
    for key in keys {
        let token = h.token();
        let (s, b) = h.cert(Some(&token), json!({"public_key": key})).await;
        assert_eq!(s, StatusCode::OK, "{key}: {b}");
        let cert = ssh_key::Certificate::from_openssh(b["certificate"].as_str().unwrap()).unwrap();
        assert_eq!(
            cert.public_key(),
            ssh_key::PublicKey::from_openssh(&key).unwrap().key_data()
        );
    }
}

/// An IdP whose clock is off: within the 60 s leeway tokens are accepted,
/// beyond it they are refused, and validity never exceeds the ceiling.
async fn clock_skew_is_bounded_by_the_leeway() {
    let h = harness().await;
    let skewed = |iat_shift: i64, exp_shift: i64| {
        let mut c = h.claims("alice");
        c["iat"] = json!((now() as i64 + iat_shift) as u64);
        c["exp"] = json!((now() as i64 + exp_shift) as u64);
        h.idp.mint(Algorithm::ES256, c)
    };
    // IdP 45 s ahead: iat in our future, but within leeway.
    let (s, b) = h
        .cert(Some(&skewed(45, 345)), json!({"public_key": pubkey()}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b["valid_before"].as_u64().unwrap() <= now() + 3600);
    // IdP 5 minutes ahead: refused.
    assert_error(
        h.cert(Some(&skewed(300, 600)), json!({"public_key": pubkey()}))
            .await,
        StatusCode::UNAUTHORIZED,
        "token_issued_in_future",
    );
    // IdP 5 minutes behind: a 4-minute token is already expired for us.
    assert_error(
        h.cert(
            Some(&skewed(-300, -60 - 5)),
            json!({"public_key": pubkey()}),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "token_expired",
    );
    // Expired 30 s ago: within leeway, accepted.
    let (s, b) = h
        .cert(Some(&skewed(-300, -30)), json!({"public_key": pubkey()}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

on_both_backends!(
    issues_certificate_for_verified_user,
    token_rejections,
    replay_is_refused_and_audited,
    bad_public_keys_are_400,
    bad_requests_are_400_and_change_nothing,
    oversize_body_is_413,
    oversize_bodies_get_a_readable_413_over_tcp,
    policy_denial_is_403_with_reasons,
    broken_policy_decisions_deny,
    ttl_above_ceiling_is_clamped,
    rate_limit_is_429_with_retry_after,
    idp_down_is_503,
    public_endpoints,
    accepts_every_supported_key_type,
    clock_skew_is_bounded_by_the_leeway,
);
