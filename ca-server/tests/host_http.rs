//! In-process HTTP tests of host certificates: `POST /v1/certs/host` with
//! one-time join tokens, and `POST /v1/certs/host/{challenge,renew}` with a
//! proof of possession. The real router (`app(state)`) driven with
//! `oneshot`; user ID tokens minted by the dev OpenID provider to show they
//! never yield a host certificate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::http::StatusCode;
use ca_core::cert::sign_host_cert;
use ca_core::host::{RENEW_NAMESPACE, enforce_host};
use ca_core::hostname::HostName;
use ca_core::{SubjectKey, Ttl};
use ca_server::dev::idp::DevUser;
use ca_server::policy::PolicyEngine;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use ssh_key::certificate::CertType;
use ssh_key::{Certificate, HashAlg, LineEnding, PrivateKey};

mod common;
use common::{AUD, Harness, MintExt as _, now};

async fn harness() -> Harness {
    harness_with(PolicyEngine::load_embedded_default().unwrap(), |_| {}).await
}

async fn harness_with(
    policy: PolicyEngine,
    tweak: impl FnOnce(&mut ca_server::config::Config),
) -> Harness {
    let alice = DevUser {
        username: "alice".into(),
        email: "alice@example.com".into(),
        groups: vec!["developers".into()],
    };
    common::build(policy, vec![alice], tweak).await
}

fn names(v: &[&str]) -> Vec<HostName> {
    v.iter().map(|s| HostName::parse(s).unwrap()).collect()
}

fn host_key() -> PrivateKey {
    PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap()
}

fn public(key: &PrivateKey) -> String {
    key.public_key().to_openssh().unwrap()
}

fn sign(key: &PrivateKey, msg: &str) -> String {
    key.sign(RENEW_NAMESPACE, HashAlg::Sha512, msg.as_bytes())
        .unwrap()
        .to_pem(LineEnding::LF)
        .unwrap()
}

type Reply = (StatusCode, Value);

impl Harness {
    /// A user ID token from the test IdP, as `jitssh login` would send it.
    fn id_token(&self) -> String {
        self.idp.mint(
            Algorithm::ES256,
            json!({
                "iss": self.idp.issuer(), "sub": "alice", "aud": AUD,
                "iat": now(), "exp": now() + 300,
                "email": "alice@example.com", "email_verified": true,
                "preferred_username": "alice", "groups": ["developers"],
                "jti": format!("{:x}", rand_core::RngCore::next_u64(&mut rand_core::OsRng)),
            }),
        )
    }

    async fn join_token_at(&self, hostnames: &[&str], created: u64, ttl: u64) -> String {
        let a = &self.state.authority;
        let (token, _) = ca_server::hosts::create_join_token(
            &a.hosts.tokens,
            &a.audit,
            &names(hostnames),
            Ttl::from_secs(ttl).unwrap(),
            created,
        )
        .await
        .unwrap();
        token.expose().to_owned()
    }

    async fn join_token(&self, hostnames: &[&str]) -> String {
        self.join_token_at(hostnames, now(), 3600).await
    }

    async fn post(&self, path: &str, bearer: Option<&str>, body: Value) -> Reply {
        self.json("POST", path, bearer, body.to_string()).await
    }

    async fn enrol(&self, token: &str, key: &PrivateKey, hostnames: Option<&[&str]>) -> Reply {
        let mut body = json!({"token": token, "public_key": public(key)});
        if let Some(h) = hostnames {
            body["hostnames"] = json!(h);
        }
        self.post("/v1/certs/host", None, body).await
    }

    async fn challenge(&self) -> String {
        let (s, b) = self.post("/v1/certs/host/challenge", None, json!({})).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert!(b["expires_at"].as_u64().unwrap() <= now() + 60);
        b["challenge"].as_str().unwrap().to_owned()
    }

    async fn renew(&self, certificate: &str, challenge: &str, signature: &str) -> Reply {
        self.post(
            "/v1/certs/host/renew",
            None,
            json!({"certificate": certificate, "challenge": challenge, "signature": signature}),
        )
        .await
    }

    fn host_ca_fp(&self) -> ssh_key::Fingerprint {
        self.state
            .authority
            .host_ca
            .public_key()
            .fingerprint(HashAlg::Sha256)
    }

    fn user_ca_fp(&self) -> ssh_key::Fingerprint {
        self.state
            .authority
            .user_ca
            .public_key()
            .fingerprint(HashAlg::Sha256)
    }

    fn host_rows(&self) -> Vec<ca_core::audit::AuditEvent> {
        self.state
            .authority
            .audit
            .list(&Default::default())
            .unwrap()
            .into_iter()
            .map(|r| r.event)
            .filter(|e| e.action == "host_cert")
            .collect()
    }
}

fn assert_error(got: Reply, status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{}", got.1);
    assert!(!got.1["error"]["message"].as_str().unwrap_or("").is_empty());
    assert!(got.1.get("certificate").is_none());
}

fn cert_of(reply: &Reply) -> Certificate {
    assert_eq!(reply.0, StatusCode::OK, "{}", reply.1);
    Certificate::from_openssh(reply.1["certificate"].as_str().unwrap()).unwrap()
}

async fn join_token_gets_a_host_certificate_signed_by_the_host_ca() {
    let h = harness().await;
    let token = h.join_token(&["web01.example.com", "web01"]).await;
    let key = host_key();
    let reply = h.enrol(&token, &key, None).await;
    let cert = cert_of(&reply);
    assert_eq!(cert.cert_type(), CertType::Host);
    assert_eq!(
        cert.valid_principals(),
        ["web01.example.com".to_string(), "web01".to_string()]
    );
    assert_eq!(reply.1["hostnames"], json!(["web01.example.com", "web01"]));
    assert_eq!(cert.public_key(), key.public_key().key_data());
    assert!(
        cert.key_id()
            .starts_with("host web01.example.com,web01 serial=")
    );
    assert_eq!(
        cert.serial().to_string(),
        reply.1["serial"].as_str().unwrap()
    );
    assert!(now() - cert.valid_after() <= 60, "backdated at most 60 s");
    let lifetime = cert.valid_before() - now();
    assert!(
        (7 * 86400 - 10..=7 * 86400).contains(&lifetime),
        "the default host policy's 7 days, got {lifetime}"
    );
    assert!(cert.extensions().is_empty() && cert.critical_options().is_empty());
    cert.validate_at(now(), &[h.host_ca_fp()])
        .expect("signed by the host CA");
    assert!(
        cert.validate_at(now(), &[h.user_ca_fp()]).is_err(),
        "never by the user CA"
    );

    // Audited: the token's creation, then the issuance, linked by the token hash.
    let rows = h.state.authority.audit.list(&Default::default()).unwrap();
    let created = &rows[0].event;
    assert_eq!(
        (created.action.as_str(), created.outcome.as_str()),
        ("host_token_create", "created")
    );
    let issued = h.host_rows();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].outcome, "issued");
    assert_eq!(issued[0].token_hash, created.token_hash);
    assert_eq!(issued[0].serial.as_deref(), reply.1["serial"].as_str());
    assert_eq!(issued[0].granted_principals, ["web01.example.com", "web01"]);
    assert!(issued[0].policy_hash.is_some());
    assert!(
        !rows.iter().any(|r| r.raw.contains(&token)),
        "the token itself is never in the audit log"
    );
    assert!(h.state.authority.audit.verify().unwrap().error.is_none());
}

async fn a_join_token_is_single_use() {
    let h = harness().await;
    let token = h.join_token(&["web01"]).await;
    cert_of(&h.enrol(&token, &host_key(), None).await);
    assert_error(
        h.enrol(&token, &host_key(), None).await,
        StatusCode::UNAUTHORIZED,
        "join_token_used",
    );
    let rows = h.host_rows();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].outcome, "denied");
    assert_eq!(rows[1].code.as_deref(), Some("join_token_used"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_token_get_exactly_one_certificate() {
    let h = Arc::new(harness().await);
    for _ in 0..5 {
        let token = h.join_token(&["web01"]).await;
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (h, token) = (h.clone(), token.clone());
                tokio::spawn(async move { h.enrol(&token, &host_key(), None).await })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            let (status, body) = t.await.unwrap();
            match status {
                StatusCode::OK => ok += 1,
                _ => assert_error((status, body), StatusCode::UNAUTHORIZED, "join_token_used"),
            }
        }
        assert_eq!(ok, 1, "exactly one certificate per token");
    }
}

async fn expired_and_unknown_tokens_are_refused() {
    let h = harness().await;
    let expired = h.join_token_at(&["web01"], now() - 7200, 3600).await;
    assert_error(
        h.enrol(&expired, &host_key(), None).await,
        StatusCode::UNAUTHORIZED,
        "join_token_expired",
    );
    let unknown = ca_core::host::JoinToken::generate(&mut rand_core::OsRng);
    assert_error(
        h.enrol(unknown.expose(), &host_key(), None).await,
        StatusCode::UNAUTHORIZED,
        "join_token_invalid",
    );
    assert_error(
        h.enrol("", &host_key(), None).await,
        StatusCode::UNAUTHORIZED,
        "join_token_invalid",
    );
}

async fn only_hostnames_the_token_names() {
    let h = harness().await;
    let token = h.join_token(&["web01", "web01.example.com"]).await;
    let got = h.enrol(&token, &host_key(), Some(&["web01", "db01"])).await;
    assert_error(got.clone(), StatusCode::FORBIDDEN, "hostname_not_allowed");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("db01"));
    // The refusal did not spend the token; a subset is fine.
    let cert = cert_of(&h.enrol(&token, &host_key(), Some(&["web01"])).await);
    assert_eq!(cert.valid_principals(), ["web01".to_string()]);
}

async fn wildcard_and_malformed_hostnames_are_refused() {
    let h = harness().await;
    let token = h.join_token(&["web01.example.com"]).await;
    for bad in [
        json!(["*.example.com"]),
        json!(["web?.example.com"]),
        json!(["*"]),
        json!(["web01.example.com."]),
        json!([]),
        json!(["a,b"]),
    ] {
        let body = json!({"token": token, "public_key": public(&host_key()), "hostnames": bad});
        assert_error(
            h.post("/v1/certs/host", None, body).await,
            StatusCode::BAD_REQUEST,
            "invalid_hostname",
        );
    }
    // Nor can a token be made for a wildcard.
    assert!(
        ca_core::hostname::parse_hostnames(&["*.example.com".to_string()], 32)
            .unwrap_err()
            .is_wildcard()
    );
    cert_of(&h.enrol(&token, &host_key(), None).await);
}

async fn a_user_id_token_never_gets_a_host_certificate() {
    let h = harness().await;
    let id_token = h.id_token();
    let key = host_key();
    // As the bearer, with no join token: the header is not even read.
    assert_error(
        h.post(
            "/v1/certs/host",
            Some(&id_token),
            json!({"public_key": public(&key)}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    // In place of the join token, with or without the header.
    for bearer in [None, Some(id_token.as_str())] {
        assert_error(
            h.post(
                "/v1/certs/host",
                bearer,
                json!({"token": id_token, "public_key": public(&key)}),
            )
            .await,
            StatusCode::UNAUTHORIZED,
            "join_token_invalid",
        );
    }
    // A user certificate (from the user path) presented for renewal.
    let (s, user) = h
        .post(
            "/v1/certs/user",
            Some(&id_token),
            json!({"public_key": public(&key)}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{user}");
    let user_cert = user["certificate"].as_str().unwrap();
    let challenge = h.challenge().await;
    assert_error(
        h.renew(user_cert, &challenge, &sign(&key, &challenge))
            .await,
        StatusCode::UNAUTHORIZED,
        "renewal_certificate_invalid",
    );
    // A join token is no bearer token for the user path either.
    let token = h.join_token(&["web01"]).await;
    let (s, body) = h
        .post(
            "/v1/certs/user",
            Some(&token),
            json!({"public_key": public(&key)}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert!(h.host_rows().iter().all(|r| r.outcome != "issued"));
}

async fn the_cas_own_keys_are_refused() {
    let h = harness().await;
    for ca in [&h.state.authority.host_ca, &h.state.authority.user_ca] {
        let token = h.join_token(&["web01"]).await;
        let body = json!({"token": token, "public_key": ca.public_openssh("")});
        assert_error(
            h.post("/v1/certs/host", None, body).await,
            StatusCode::BAD_REQUEST,
            "invalid_public_key",
        );
    }
}

async fn lifetime_is_capped_by_host_max_ttl() {
    let h = harness_with(PolicyEngine::load_embedded_default().unwrap(), |c| {
        c.host_max_ttl = Ttl::from_secs(86400).unwrap()
    })
    .await;
    let token = h.join_token(&["web01"]).await;
    let cert = cert_of(&h.enrol(&token, &host_key(), None).await);
    let lifetime = cert.valid_before() - now();
    assert!((86400 - 10..=86400).contains(&lifetime), "{lifetime}");
}

fn policy_dir(rego: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.rego"), rego).unwrap();
    d
}

async fn the_host_policy_decides_and_fails_closed() {
    // No host_decision at all: every host certificate is denied.
    let dir = policy_dir("package jitssh\ndecision := {\"allow\": false}\n");
    let h = harness_with(PolicyEngine::load_dir(dir.path()).unwrap(), |_| {}).await;
    let token = h.join_token(&["web01"]).await;
    let got = h.enrol(&token, &host_key(), None).await;
    assert_error(got.clone(), StatusCode::FORBIDDEN, "policy_error");
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("host_decision")
    );

    // A deny carries the policy's reasons; an unusable decision is an error.
    for (rego, code) in [
        (
            "host_decision := {\"allow\": false, \"hostnames\": [], \"reasons\": [\"maintenance\"]}",
            "denied_by_policy",
        ),
        (
            "host_decision := {\"allow\": true, \"hostnames\": [\"*\"], \"ttl_seconds\": 60}",
            "policy_error",
        ),
        (
            "host_decision := {\"allow\": true, \"hostnames\": input.request.hostnames}",
            "policy_error",
        ),
    ] {
        let dir = policy_dir(&format!(
            "package jitssh\ndecision := {{\"allow\": false}}\n{rego}\n"
        ));
        let h = harness_with(PolicyEngine::load_dir(dir.path()).unwrap(), |_| {}).await;
        let token = h.join_token(&["web01"]).await;
        let got = h.enrol(&token, &host_key(), None).await;
        assert_error(got.clone(), StatusCode::FORBIDDEN, code);
        if code == "denied_by_policy" {
            assert_eq!(got.1["error"]["reasons"], json!(["maintenance"]));
            let row = h.host_rows().pop().unwrap();
            assert_eq!(row.decision_reasons, ["maintenance"]);
        }
    }
}

#[tokio::test]
async fn database_unavailable_is_503_and_the_token_stays_unspent() {
    // Each of the store and the audit writer waits 5 s for the lock.
    let h = harness_with(PolicyEngine::load_embedded_default().unwrap(), |c| {
        c.request_timeout = std::time::Duration::from_secs(60)
    })
    .await;
    let token = h.join_token(&["web01"]).await;
    let lock = rusqlite::Connection::open(h.dir.path().join("audit.db")).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let got = h.enrol(&token, &host_key(), None).await;
    assert_eq!(got.0, StatusCode::SERVICE_UNAVAILABLE, "{}", got.1);
    assert!(got.1.get("certificate").is_none());
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    cert_of(&h.enrol(&token, &host_key(), None).await);
}

/// Enrol a fresh key; returns the key and its certificate line.
async fn enrolled(h: &Harness, hostnames: &[&str]) -> (PrivateKey, String) {
    let key = host_key();
    let token = h.join_token(hostnames).await;
    let reply = h.enrol(&token, &key, None).await;
    cert_of(&reply);
    (key, reply.1["certificate"].as_str().unwrap().to_owned())
}

async fn renewal_with_the_current_certificate_and_a_signed_challenge() {
    let h = harness().await;
    let (key, cert) = enrolled(&h, &["web01.example.com"]).await;
    let old = Certificate::from_openssh(&cert).unwrap();
    let challenge = h.challenge().await;
    let reply = h.renew(&cert, &challenge, &sign(&key, &challenge)).await;
    let new = cert_of(&reply);
    assert_eq!(new.cert_type(), CertType::Host);
    assert_eq!(new.public_key(), old.public_key(), "same host key");
    assert_eq!(new.valid_principals(), old.valid_principals());
    assert_ne!(new.serial(), old.serial());
    new.validate_at(now(), &[h.host_ca_fp()]).unwrap();
    let row = h.host_rows().pop().unwrap();
    assert_eq!(row.outcome, "issued");
    assert_eq!(row.details.as_ref().unwrap()["via"], "renewal");
    assert_eq!(
        row.details.as_ref().unwrap()["previous_serial"],
        old.serial().to_string()
    );
    // The renewed certificate renews too.
    let challenge = h.challenge().await;
    let again = reply.1["certificate"].as_str().unwrap();
    cert_of(&h.renew(again, &challenge, &sign(&key, &challenge)).await);
}

async fn renewal_refusals() {
    let h = harness().await;
    let (key, cert) = enrolled(&h, &["web01.example.com"]).await;

    // Signed over something else, or by another key.
    let c = h.challenge().await;
    assert_error(
        h.renew(&cert, &c, &sign(&key, "something else")).await,
        StatusCode::UNAUTHORIZED,
        "renewal_proof_invalid",
    );
    let c = h.challenge().await;
    assert_error(
        h.renew(&cert, &c, &sign(&host_key(), &c)).await,
        StatusCode::UNAUTHORIZED,
        "renewal_proof_invalid",
    );
    let c = h.challenge().await;
    assert_error(
        h.renew(&cert, &c, "garbage").await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );

    // A challenge buys one certificate (spent in the database with its audit
    // row, so on any replica), and must be ours.
    let c = h.challenge().await;
    cert_of(&h.renew(&cert, &c, &sign(&key, &c)).await);
    assert_error(
        h.renew(&cert, &c, &sign(&key, &c)).await,
        StatusCode::UNAUTHORIZED,
        "challenge_invalid",
    );
    assert_error(
        h.renew(
            &cert,
            "jitssh-renew-made-up",
            &sign(&key, "jitssh-renew-made-up"),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "challenge_invalid",
    );

    // Certificates this CA's host key did not sign now: expired, or signed by
    // the user CA key.
    let subject = SubjectKey::parse(&public(&key)).unwrap();
    let grant = enforce_host(
        Some(&json!({"allow": true, "hostnames": ["web01.example.com"], "ttl_seconds": 600})),
        &names(&["web01.example.com"]),
        Ttl::from_secs(600).unwrap(),
    )
    .unwrap();
    let forge = |signer: &ca_server::keys::CaKey, at: u64| {
        sign_host_cert(&grant, &subject, 99, "x", at, &mut rand_core::OsRng, signer)
            .unwrap()
            .to_openssh()
            .unwrap()
    };
    let a = &h.state.authority;
    for stale in [forge(&a.host_ca, now() - 3600), forge(&a.user_ca, now())] {
        let c = h.challenge().await;
        assert_error(
            h.renew(&stale, &c, &sign(&key, &c)).await,
            StatusCode::UNAUTHORIZED,
            "renewal_certificate_invalid",
        );
    }

    // A revoked serial gets nothing.
    let serial = Certificate::from_openssh(&cert).unwrap().serial();
    let store = ca_server::revocation::RevocationStore::open(h.state.authority.audit.db()).unwrap();
    store
        .revoke(
            &ca_server::revocation::Target::Serial(serial),
            Some("test"),
            now(),
            Ttl::ABSOLUTE_MAX,
        )
        .unwrap();
    a.revocations.refresh(now()).unwrap();
    let c = h.challenge().await;
    assert_error(
        h.renew(&cert, &c, &sign(&key, &c)).await,
        StatusCode::FORBIDDEN,
        "revoked",
    );
    // The refusal after a valid proof is a row of its own; the seven before
    // any credential held are counted for the source, then summarised.
    let denied = h
        .host_rows()
        .into_iter()
        .filter(|r| r.outcome == "denied")
        .count();
    assert_eq!(denied, 1);
    a.flush_unauthenticated(now() + 120, true).await;
    let summaries: Vec<_> = a
        .audit
        .list(&Default::default())
        .unwrap()
        .into_iter()
        .filter(|r| r.event.action == "unauthenticated")
        .collect();
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].event.details.as_ref().unwrap()["count"], 7);
}

async fn a_revoked_host_key_cannot_enrol_or_renew() {
    let h = harness().await;
    let (key, cert) = enrolled(&h, &["web01"]).await;
    let store = ca_server::revocation::RevocationStore::open(h.state.authority.audit.db()).unwrap();
    store
        .revoke(
            &ca_server::revocation::Target::Key(SubjectKey::parse(&public(&key)).unwrap()),
            None,
            now(),
            Ttl::ABSOLUTE_MAX,
        )
        .unwrap();
    h.state.authority.revocations.refresh(now()).unwrap();
    let c = h.challenge().await;
    assert_error(
        h.renew(&cert, &c, &sign(&key, &c)).await,
        StatusCode::FORBIDDEN,
        "revoked",
    );
    let token = h.join_token(&["web01"]).await;
    assert_error(
        h.enrol(&token, &key, None).await,
        StatusCode::FORBIDDEN,
        "revoked",
    );
}

on_both_backends!(
    join_token_gets_a_host_certificate_signed_by_the_host_ca,
    a_join_token_is_single_use,
    expired_and_unknown_tokens_are_refused,
    only_hostnames_the_token_names,
    wildcard_and_malformed_hostnames_are_refused,
    a_user_id_token_never_gets_a_host_certificate,
    the_cas_own_keys_are_refused,
    lifetime_is_capped_by_host_max_ttl,
    the_host_policy_decides_and_fails_closed,
    renewal_with_the_current_certificate_and_a_signed_challenge,
    renewal_refusals,
    a_revoked_host_key_cannot_enrol_or_renew,
);
