//! Revocation reaching everything, through the real router: a revoked
//! identity can no longer create, approve, deny or cancel elevations; ending
//! a grant early (the requester's cancel, an operator's revoke, an
//! approver's deny after approval) revokes the certificates issued under it
//! that carry the role's principals, in the same transaction; a revoked host
//! is in the host KRL (`GET /v1/krl/hosts`, checked by the real
//! `ssh-keygen -Q`) with its renewed certificates and its key; and the host
//! path refuses every published CA key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use axum::http::StatusCode;
use ca_core::Ttl;
use ca_core::host::RENEW_NAMESPACE;
use ca_core::hostname::HostName;
use ca_server::policy::PolicyEngine;
use ca_server::revocation::{RevocationStore, Target};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use ssh_key::{HashAlg, LineEnding, PrivateKey};

mod common;
use common::{AUD, Harness, MintExt as _, now};

async fn harness(tweak: impl FnOnce(&mut ca_server::config::Config)) -> Harness {
    common::build(
        PolicyEngine::load_embedded_default().unwrap(),
        vec![],
        |c: &mut ca_server::config::Config| {
            c.rate_per_minute = 0;
            tweak(c)
        },
    )
    .await
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn new_key() -> PrivateKey {
    PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap()
}

impl Harness {
    fn token(&self, sub: &str, groups: &[&str]) -> String {
        self.idp.mint(
            Algorithm::ES256,
            json!({
                "iss": self.idp.issuer(), "sub": sub, "aud": AUD, "iat": now(), "exp": now() + 300,
                "email": format!("{sub}@example.com"), "email_verified": true,
                "preferred_username": sub, "groups": groups,
                "jti": format!("{:x}", rand_core::RngCore::next_u64(&mut rand_core::OsRng)),
            }),
        )
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        self.json(method, path, token, body).await
    }

    async fn elevate(&self, token: &str, reason: &str) -> (StatusCode, Value) {
        self.call(
            "POST",
            "/v1/elevations",
            Some(token),
            json!({"role": "db-admin", "reason": reason}),
        )
        .await
    }

    async fn act(&self, token: &str, id: &str, action: &str) -> (StatusCode, Value) {
        self.call(
            "POST",
            &format!("/v1/elevations/{id}/{action}"),
            Some(token),
            json!({}),
        )
        .await
    }

    /// A certificate for `principals`: its serial.
    async fn cert(&self, token: &str, principals: &[&str]) -> u64 {
        let body = json!({
            "public_key": new_key().public_key().to_openssh().unwrap(),
            "principals": principals,
        });
        let (s, b) = self.call("POST", "/v1/certs/user", Some(token), body).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["serial"].as_str().unwrap().parse().unwrap()
    }

    /// `POST /v1/certs/host` for `public_key` with a fresh join token for `name`.
    async fn enrol(&self, name: &str, public_key: &str) -> (StatusCode, Value) {
        let a = &self.state.authority;
        let (token, _) = ca_server::hosts::create_join_token(
            &a.hosts.tokens,
            &a.audit,
            &[HostName::parse(name).unwrap()],
            Ttl::from_secs(600).unwrap(),
            now(),
        )
        .await
        .unwrap();
        let body = json!({"token": token.expose(), "public_key": public_key});
        self.call("POST", "/v1/certs/host", None, body).await
    }

    fn store(&self) -> RevocationStore {
        RevocationStore::open(self.state.authority.audit.db()).unwrap()
    }

    /// The serials in force, as the database holds them now.
    fn revoked_serials(&self) -> Vec<u64> {
        self.store().snapshot(now()).unwrap().serials
    }

    fn revoke_subject(&self, sub: &str) {
        self.store()
            .revoke(
                &Target::Subject {
                    issuer: self.idp.issuer().to_owned(),
                    subject: sub.into(),
                },
                Some("left"),
                now(),
                Ttl::ABSOLUTE_MAX,
            )
            .unwrap();
    }
}

async fn a_revoked_identity_cannot_create_approve_deny_or_cancel_elevations() {
    let h = harness(|_| {}).await;
    let alice = || h.token("alice", &["dba"]);
    let bob = || h.token("bob", &["dba-leads"]);
    let (s, p1) = h.elevate(&alice(), "vacuum").await;
    assert_eq!(
        (s, p1["state"].as_str()),
        (StatusCode::CREATED, Some("pending")),
        "{p1}"
    );
    let (_, p2) = h.elevate(&alice(), "reindex").await;
    let (p1, p2) = (p1["id"].as_str().unwrap(), p2["id"].as_str().unwrap());

    // A revoked approver decides nothing.
    h.revoke_subject("bob");
    for action in ["approve", "deny"] {
        let (s, b) = h.act(&bob(), p1, action).await;
        assert_eq!(
            (s, code(&b)),
            (StatusCode::FORBIDDEN, "revoked"),
            "{action}: {b}"
        );
    }
    // A revoked requester neither asks nor withdraws.
    h.revoke_subject("alice");
    let (s, b) = h.elevate(&alice(), "more").await;
    assert_eq!((s, code(&b)), (StatusCode::FORBIDDEN, "revoked"), "{b}");
    let (s, b) = h.act(&alice(), p2, "cancel").await;
    assert_eq!((s, code(&b)), (StatusCode::FORBIDDEN, "revoked"), "{b}");

    // Nothing changed, and every refusal is on record.
    let (s, b) = h
        .call(
            "GET",
            &format!("/v1/elevations/{p1}"),
            Some(&h.token("carol", &["dba-leads"])),
            Value::Null,
        )
        .await;
    assert_eq!(
        (s, b["state"].as_str()),
        (StatusCode::OK, Some("pending")),
        "{b}"
    );
    for action in [
        "elevation_approve",
        "elevation_deny",
        "elevation_request",
        "elevation_cancel",
    ] {
        assert!(
            h.rows(action)
                .iter()
                .any(|r| r.outcome == "denied" && r.code.as_deref() == Some("revoked")),
            "{action}: {:#?}",
            h.rows(action)
        );
    }
    // Others still decide.
    let (s, b) = h
        .act(&h.token("carol", &["dba-leads"]), p1, "approve")
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

async fn ending_a_grant_revokes_the_certificates_issued_under_it() {
    let h = harness(|_| {}).await;
    let oncall = || h.token("alice", &["dba", "oncall"]);

    // The requester drops the grant: its role certificate is revoked, at
    // once (the KRL this CA serves has it), the personal one is not.
    let (_, e) = h.elevate(&oncall(), "INC-1 restore").await;
    assert_eq!(e["state"], "approved", "{e}");
    let role = h.cert(&oncall(), &["postgres"]).await;
    let personal = h.cert(&oncall(), &["alice"]).await;
    let both = h.cert(&oncall(), &["alice", "postgres"]).await;
    let (s, d) = h.act(&oncall(), e["id"].as_str().unwrap(), "cancel").await;
    assert_eq!(
        (s, d["state"].as_str()),
        (StatusCode::OK, Some("revoked")),
        "{d}"
    );
    let serials = h.revoked_serials();
    assert!(
        serials.contains(&role) && serials.contains(&both),
        "{serials:?}"
    );
    assert!(!serials.contains(&personal), "{serials:?}");
    let served = h.state.authority.revocations.get().serials.clone();
    assert!(served.contains(&role), "served at once: {served:?}");
    let row = h.rows("elevation_cancel").pop().unwrap();
    let mut listed = row.details.unwrap()["revoked_serials"].clone();
    listed
        .as_array_mut()
        .unwrap()
        .sort_by_key(|v| v.as_str().unwrap().parse::<u64>().unwrap());
    let mut want = [role, both];
    want.sort();
    assert_eq!(
        listed,
        json!(want.map(|s| s.to_string())),
        "on the audit row"
    );

    // An operator revokes the grant (`jitssh-ca elevation revoke`).
    let (_, e) = h.elevate(&oncall(), "INC-2 restore").await;
    let second = h.cert(&oncall(), &["postgres"]).await;
    h.state
        .authority
        .elevations
        .revoke(e["id"].as_str().unwrap(), "root", None, now())
        .await
        .unwrap();
    assert!(h.revoked_serials().contains(&second));

    // An approver denies after approving: the grant ends, and its certificate.
    let alice = || h.token("alice", &["dba"]);
    let (_, e) = h.elevate(&alice(), "vacuum").await;
    let id = e["id"].as_str().unwrap();
    let (s, a) = h.act(&h.token("bob", &["dba-leads"]), id, "approve").await;
    assert_eq!(
        (s, a["state"].as_str()),
        (StatusCode::OK, Some("approved")),
        "{a}"
    );
    let third = h.cert(&alice(), &["postgres"]).await;
    assert!(!h.revoked_serials().contains(&third));
    // Not by the requester (who cancels instead).
    let (s, b) = h.act(&alice(), id, "deny").await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::FORBIDDEN, "self_approval"),
        "{b}"
    );
    let (s, d) = h.act(&h.token("carol", &["dba-leads"]), id, "deny").await;
    assert_eq!(
        (s, d["state"].as_str()),
        (StatusCode::OK, Some("revoked")),
        "{d}"
    );
    assert_eq!(d["closed_by"]["subject"], "carol");
    assert!(h.revoked_serials().contains(&third));
    assert!(!h.revoked_serials().contains(&personal));
    let (s, b) = h
        .call(
            "POST",
            "/v1/certs/user",
            Some(&alice()),
            json!({
                "public_key": new_key().public_key().to_openssh().unwrap(),
                "principals": ["postgres"],
            }),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no new one either: {b}");
    assert_eq!(h.rows("elevation_deny").pop().unwrap().outcome, "revoked");
    assert!(h.state.authority.audit.verify().unwrap().is_ok());
}

async fn a_certificate_racing_the_end_of_its_grant_never_leaves() {
    let h = harness(|_| {}).await;
    let oncall = || h.token("alice", &["dba", "oncall"]);
    let (_, e) = h.elevate(&oncall(), "INC-7 restore").await;
    assert_eq!(e["state"], "approved", "{e}");
    // A replica whose view of the grants is a moment old (on SQLite: its
    // index, refreshed every second; here never).
    let stale = h.another_ca(PolicyEngine::load_embedded_default().unwrap());
    let (s, d) = h.act(&oncall(), e["id"].as_str().unwrap(), "cancel").await;
    assert_eq!(
        (s, d["state"].as_str()),
        (StatusCode::OK, Some("revoked")),
        "{d}"
    );
    let body = json!({
        "public_key": new_key().public_key().to_openssh().unwrap(),
        "principals": ["postgres"],
    });
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/certs/user")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", oncall()))
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let resp = tower::ServiceExt::oneshot(stale, req).await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::FORBIDDEN,
        "no certificate leaves"
    );
    // Whatever was signed and recorded for the role after the grant ended
    // is revoked.
    let revoked = h.revoked_serials();
    for row in h.rows("user_cert") {
        if row.outcome == "issued" && row.granted_principals.contains(&"postgres".to_owned()) {
            let serial: u64 = row.serial.as_deref().unwrap().parse().unwrap();
            assert!(
                revoked.contains(&serial),
                "{serial} not revoked: {revoked:?}"
            );
        }
    }
}

async fn the_host_path_refuses_every_published_ca_key() {
    let next = std::sync::Mutex::new(Vec::new());
    let h = harness(|c| {
        // A rotation in progress: next keys published for both kinds.
        for key in [&c.user_ca_key, &c.host_ca_key] {
            next.lock()
                .unwrap()
                .push(ca_server::rotation::add_next(key, "next").unwrap());
        }
    })
    .await;
    let a = &h.state.authority;
    assert_eq!((a.published.user.len(), a.published.host.len()), (2, 2));
    for key in next.into_inner().unwrap() {
        let (s, b) = h.enrol("web01", &key.to_openssh().unwrap()).await;
        assert_eq!(
            (s, code(&b)),
            (StatusCode::BAD_REQUEST, "invalid_public_key"),
            "{b}"
        );
    }
}

/// `ssh-keygen -Q -f KRL CERT`: whether the KRL revokes the certificate.
fn revoked_by_ssh_keygen(krl: &Path, cert: &str) -> bool {
    let dir = krl.parent().unwrap();
    let file = dir.join(format!(
        "c{}-cert.pub",
        rand_core::RngCore::next_u64(&mut rand_core::OsRng)
    ));
    std::fs::write(&file, format!("{cert}\n")).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-Q")
        .arg("-f")
        .arg(krl)
        .arg(&file)
        .output()
        .unwrap();
    match out.status.code() {
        Some(0) => false,
        Some(1) => true,
        other => panic!(
            "ssh-keygen -Q: {other:?} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

async fn a_revoked_host_is_in_the_host_krl_with_its_renewed_certificates() {
    let h = harness(|_| {}).await;
    let a = &h.state.authority;
    let enrol = async |name: &str| {
        let key = new_key();
        let (s, b) = h.enrol(name, &key.public_key().to_openssh().unwrap()).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        (key, b["certificate"].as_str().unwrap().to_owned())
    };
    let renew = async |key: &PrivateKey, cert: &str| {
        let (_, c) = h
            .call("POST", "/v1/certs/host/challenge", None, json!({}))
            .await;
        let challenge = c["challenge"].as_str().unwrap();
        let signature = key
            .sign(RENEW_NAMESPACE, HashAlg::Sha512, challenge.as_bytes())
            .unwrap()
            .to_pem(LineEnding::LF)
            .unwrap();
        h.call(
            "POST",
            "/v1/certs/host/renew",
            None,
            json!({"certificate": cert, "challenge": challenge, "signature": signature}),
        )
        .await
    };
    let (web_key, first) = enrol("web01.example.com").await;
    let (s, b) = renew(&web_key, &first).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let renewed = b["certificate"].as_str().unwrap().to_owned();
    let (_, other) = enrol("web02.example.com").await;

    let dir = tempfile::tempdir().unwrap();
    let krl = dir.path().join("hosts.krl");
    let fetch = async || {
        let (s, bytes, headers) = h
            .request("GET", "/v1/krl/hosts", None, axum::body::Body::empty())
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(headers["content-type"], "application/octet-stream");
        std::fs::write(&krl, bytes).unwrap();
    };
    fetch().await;
    assert!(!revoked_by_ssh_keygen(&krl, &first), "nothing revoked yet");

    let added = h
        .store()
        .revoke(
            &Target::Host(HostName::parse("web01.example.com").unwrap()),
            Some("stolen"),
            now(),
            Ttl::ABSOLUTE_MAX,
        )
        .unwrap();
    let mut kinds: Vec<&str> = added.iter().map(|(k, _)| k.as_str()).collect();
    kinds.sort();
    assert_eq!(kinds, ["key", "serial", "serial"], "{added:?}");
    a.revocations.refresh(now()).unwrap();
    fetch().await;
    assert!(revoked_by_ssh_keygen(&krl, &first));
    assert!(
        revoked_by_ssh_keygen(&krl, &renewed),
        "its renewed certificate too"
    );
    assert!(!revoked_by_ssh_keygen(&krl, &other), "other hosts are fine");

    // Its key renews and enrols no more.
    let (s, b) = renew(&web_key, &renewed).await;
    assert_eq!((s, code(&b)), (StatusCode::FORBIDDEN, "revoked"), "{b}");
    // An unknown host is an error, not a silent no-op.
    assert!(
        h.store()
            .revoke(
                &Target::Host(HostName::parse("nope.example.com").unwrap()),
                None,
                now(),
                Ttl::ABSOLUTE_MAX
            )
            .is_err()
    );
}

on_both_backends!(
    a_revoked_identity_cannot_create_approve_deny_or_cancel_elevations,
    ending_a_grant_revokes_the_certificates_issued_under_it,
    the_host_path_refuses_every_published_ca_key,
    a_certificate_racing_the_end_of_its_grant_never_leaves,
    a_revoked_host_is_in_the_host_krl_with_its_renewed_certificates,
);
