//! Just-in-time elevation through the real router: request, approve, deny,
//! cancel, revoke, expire; the server's own rules (no self-approval, each
//! approver once, only pending requests are decided, approvals bound to the
//! request); certificates carrying role principals only under an active
//! grant and never past its end; audit rows for every transition; and the
//! webhook, including a receiver that never answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use ca_server::policy::PolicyEngine;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

mod common;
use common::{AUD, Harness, MintExt as _, now};

async fn harness(tweak: impl FnOnce(&mut ca_server::config::Config)) -> Harness {
    harness_with(PolicyEngine::load_embedded_default().unwrap(), tweak).await
}

async fn harness_with(
    policy: PolicyEngine,
    tweak: impl FnOnce(&mut ca_server::config::Config),
) -> Harness {
    common::build(policy, vec![], |c: &mut ca_server::config::Config| {
        c.rate_per_minute = 0;
        tweak(c)
    })
    .await
}

impl Harness {
    /// An ID token for `sub` (also its username) in `groups`.
    fn token(&self, sub: &str, groups: &[&str]) -> String {
        self.token_with_email(sub, &format!("{sub}@example.com"), groups)
    }

    fn token_with_email(&self, sub: &str, email: &str, groups: &[&str]) -> String {
        self.idp.mint(
            Algorithm::ES256,
            json!({
                "iss": self.idp.issuer(), "sub": sub, "aud": AUD, "iat": now(), "exp": now() + 300,
                "email": email, "email_verified": true,
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
        body: &str,
    ) -> (StatusCode, Value) {
        self.json(method, path, token, body.to_owned()).await
    }

    async fn elevate(
        &self,
        token: &str,
        role: &str,
        reason: &str,
        ttl: Option<u64>,
    ) -> (StatusCode, Value) {
        let mut body = json!({"role": role, "reason": reason});
        if let Some(t) = ttl {
            body["ttl_seconds"] = json!(t);
        }
        self.call("POST", "/v1/elevations", Some(token), &body.to_string())
            .await
    }

    async fn act(&self, token: &str, id: &str, action: &str, body: Value) -> (StatusCode, Value) {
        self.call(
            "POST",
            &format!("/v1/elevations/{id}/{action}"),
            Some(token),
            &body.to_string(),
        )
        .await
    }

    async fn cert_with_reason(&self, token: &str, reason: &str) -> (StatusCode, Value) {
        let key = ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .unwrap();
        let body = json!({"public_key": key.public_key().to_openssh().unwrap(), "reason": reason});
        self.call("POST", "/v1/certs/user", Some(token), &body.to_string())
            .await
    }

    async fn cert(&self, token: &str, principals: Option<&[&str]>) -> (StatusCode, Value) {
        let key = ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .unwrap();
        let mut body = json!({"public_key": key.public_key().to_openssh().unwrap()});
        if let Some(p) = principals {
            body["principals"] = json!(p);
        }
        self.call("POST", "/v1/certs/user", Some(token), &body.to_string())
            .await
    }

    fn verify_chain(&self) {
        let report = self.state.authority.audit.verify().unwrap();
        assert!(report.is_ok(), "audit chain: {report:?}");
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

async fn auto_approval_grants_role_principals_until_the_grant_ends() {
    let h = harness(|_| {}).await;
    let alice = || h.token("alice", &["dba", "oncall"]);

    // Before any elevation the role's principal is refused, with what to do.
    let (s, b) = h.cert(&alice(), Some(&["postgres"])).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    let says = |b: &Value, what: &str| {
        b["error"]["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains(what))
    };
    assert!(says(&b, "run `jitssh elevate db-admin"), "{b}");

    // On call, reason cites a ticket: approved at once, clock starts now.
    let (s, e) = h
        .elevate(&alice(), "db-admin", "INC-4711 restore orders", Some(600))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    assert_eq!(e["state"], "approved");
    assert_eq!(e["principals"], json!(["postgres"]));
    let end = e["grant_ends_at"].as_u64().unwrap();
    assert!((600..=602).contains(&(end - now())), "{e}");
    assert_eq!(e["expires_at"].as_u64().unwrap(), end);
    assert!(e["reasons"][0].as_str().unwrap().contains("auto-approved"));

    // Now the principal is granted, and the certificate ends with the grant.
    let (s, c) = h.cert(&alice(), Some(&["postgres"])).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["principals"], json!(["postgres"]));
    assert!(c["valid_before"].as_u64().unwrap() <= end, "{c} vs {end}");
    // Asking for everything includes it too, still capped at the grant's end.
    let (s, c) = h.cert(&alice(), None).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert!(
        c["principals"]
            .as_array()
            .unwrap()
            .contains(&json!("postgres"))
    );
    assert!(c["valid_before"].as_u64().unwrap() <= end);

    // Someone else gets nothing from alice's grant.
    let (s, _) = h.cert(&h.token("bob", &["dba"]), Some(&["postgres"])).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // `status` view: alice sees her active grant.
    let (s, l) = h
        .call("GET", "/v1/elevations?state=active", Some(&alice()), "")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(l["elevations"].as_array().unwrap().len(), 1);

    let rows = h.rows("elevation_request");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].outcome, "approved");
    assert_eq!(rows[0].granted_principals, vec!["postgres".to_string()]);
    assert!(rows[0].policy_hash.is_some());
    h.verify_chain();
}

async fn two_different_approvers_each_counted_once() {
    let h = harness(|_| {}).await;
    let alice = h.token("alice", &["sre"]);
    let (s, e) = h
        .elevate(&alice, "prod-root", "rotate the disk", None)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    assert_eq!(e["state"], "pending");
    assert_eq!(e["approvals_required"], 2);
    let id = e["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("el_") && id.len() == 27, "{id}");
    assert!(
        e["expires_at"].as_u64().unwrap() >= now() + 3590,
        "pending 1 h by default"
    );

    // The requester cannot approve, not even as a second account with the
    // same verified email.
    let (s, b) = h
        .act(&h.token("alice", &["sre-leads"]), &id, "approve", json!({}))
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::FORBIDDEN, "self_approval"),
        "{b}"
    );
    let twin = h.token_with_email("alice-admin", "alice@example.com", &["sre-leads"]);
    let (s, b) = h.act(&twin, &id, "approve", json!({})).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::FORBIDDEN, "self_approval"),
        "{b}"
    );

    // Someone outside the approver groups cannot see it at all.
    let (s, b) = h
        .act(&h.token("dave", &["dba-leads"]), &id, "approve", json!({}))
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::NOT_FOUND, "elevation_not_found"),
        "{b}"
    );
    let (s, _) = h
        .call(
            "GET",
            &format!("/v1/elevations/{id}"),
            Some(&h.token("dave", &[])),
            "",
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // bob sees it in his queue, with the hash to bind his approval to.
    let bob = h.token("bob", &["sre-leads"]);
    let (s, l) = h
        .call("GET", "/v1/elevations?state=pending", Some(&bob), "")
        .await;
    assert_eq!(s, StatusCode::OK);
    let listed = &l["elevations"][0];
    assert_eq!(listed["id"], id.as_str());
    assert_eq!(listed["can_decide"], true);
    let hash = listed["request_hash"].as_str().unwrap().to_owned();

    // An approval for a different request hash is refused.
    let (s, b) = h
        .act(&bob, &id, "approve", json!({"request_hash": "00"}))
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::CONFLICT, "request_changed"),
        "{b}"
    );

    let (s, e) = h
        .act(
            &bob,
            &id,
            "approve",
            json!({"comment": "ok", "request_hash": hash}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert_eq!(e["state"], "pending", "one of two approvals");
    assert_eq!(e["approvals"].as_array().unwrap().len(), 1);
    // bob again: counted once.
    let (s, b) = h
        .act(&h.token("bob", &["sre-leads"]), &id, "approve", json!({}))
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::CONFLICT, "already_approved"),
        "{b}"
    );
    // Still no certificate for root.
    let (s, _) = h.cert(&h.token("alice", &["sre"]), Some(&["root"])).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let (s, e) = h
        .act(&h.token("carol", &["sre-leads"]), &id, "approve", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert_eq!(e["state"], "approved");
    let start = e["grant_starts_at"].as_u64().unwrap();
    assert!(now() - start <= 2, "the grant's clock starts at approval");
    assert_eq!(
        e["grant_ends_at"].as_u64().unwrap() - start,
        1800,
        "prod-root's maximum"
    );

    let (s, c) = h.cert(&h.token("alice", &["sre"]), Some(&["root"])).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    // Approving a decided request fails.
    let (s, b) = h
        .act(&h.token("erin", &["sre-leads"]), &id, "approve", json!({}))
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::CONFLICT, "elevation_not_pending"),
        "{b}"
    );

    let approves = h.rows("elevation_approve");
    let outcomes: Vec<&str> = approves.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        [
            "denied", "denied", "denied", "denied", "recorded", "denied", "approved", "denied"
        ],
        "every attempt is audited: {approves:#?}"
    );
    h.verify_chain();
}

async fn denial_closes_the_request() {
    let h = harness(|_| {}).await;
    let (_, e) = h
        .elevate(&h.token("alice", &["dba"]), "db-admin", "vacuum", None)
        .await;
    assert_eq!(e["state"], "pending");
    assert_eq!(e["approvals_required"], 1);
    let id = e["id"].as_str().unwrap();
    let (s, e) = h
        .act(
            &h.token("bob", &["dba-leads"]),
            id,
            "deny",
            json!({"comment": "use the replica"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert_eq!(e["state"], "denied");
    assert_eq!(e["closed_by"]["comment"], "use the replica");
    let (s, b) = h
        .act(&h.token("carol", &["dba-leads"]), id, "approve", json!({}))
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::CONFLICT, "elevation_not_pending"),
        "{b}"
    );
    let (s, _) = h
        .cert(&h.token("alice", &["dba"]), Some(&["postgres"]))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(h.rows("elevation_deny")[0].outcome, "denied");

    // Policy denials: unknown role, a role the requester may not ask for.
    let (s, b) = h
        .elevate(&h.token("alice", &["dba"]), "nope", "x", None)
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::BAD_REQUEST, "unknown_role"),
        "{b}"
    );
    assert!(b["error"]["message"].as_str().unwrap().contains("db-admin"));
    let (s, b) = h
        .elevate(
            &h.token("dev", &["developers", "oncall"]),
            "db-admin",
            "INC-1",
            None,
        )
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::FORBIDDEN, "denied_by_policy"),
        "{b}"
    );
    assert!(
        b["error"]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("only by members")
    );
    let denied = h.rows("elevation_request");
    assert_eq!(denied.len(), 3);
    assert!(denied[1..].iter().all(|r| r.outcome == "denied"));
}

async fn bad_input_changes_nothing() {
    let h = harness(|_| {}).await;
    let t = h.token("alice", &["dba"]);
    for (body, want) in [
        (json!({"role": "db-admin"}).to_string(), "invalid_request"),
        (
            json!({"role": "db-admin", "reason": "  "}).to_string(),
            "invalid_reason",
        ),
        (
            json!({"role": "db-admin", "reason": "a\u{1b}[2J"}).to_string(),
            "invalid_reason",
        ),
        (
            json!({"role": "DB", "reason": "x"}).to_string(),
            "invalid_role",
        ),
        (
            json!({"role": "db-admin", "reason": "x", "ttl_seconds": 0}).to_string(),
            "invalid_ttl",
        ),
        (
            json!({"role": "db-admin", "reason": "x", "principals": ["root"]}).to_string(),
            "invalid_request",
        ),
        ("{".to_string(), "invalid_request"),
    ] {
        let (s, b) = h.call("POST", "/v1/elevations", Some(&t), &body).await;
        assert_eq!(
            (s, code(&b)),
            (StatusCode::BAD_REQUEST, want),
            "{body}: {b}"
        );
    }
    let (s, b) = h.call("POST", "/v1/elevations", None, "{}").await;
    assert_eq!((s, code(&b)), (StatusCode::UNAUTHORIZED, "token_missing"));
    let (s, b) = h
        .call("GET", "/v1/elevations?state=bogus", Some(&t), "")
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "{b}"
    );
    let (s, _) = h.call("GET", "/v1/elevations/el_nope", Some(&t), "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h
        .call("POST", "/v1/elevations/el_nope/explode", Some(&t), "{}")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = h.act(&t, "el_nope", "approve", json!({"bogus": 1})).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "{b}"
    );
    let (s, l) = h.call("GET", "/v1/elevations", Some(&t), "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(l["elevations"], json!([]), "nothing was created");
}

async fn pending_requests_expire_undecided() {
    let h = harness(|c| c.elevation.pending_timeout = ca_core::Ttl::from_secs(1).unwrap()).await;
    let (_, e) = h
        .elevate(&h.token("alice", &["dba"]), "db-admin", "vacuum", None)
        .await;
    let id = e["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, b) = h
        .act(&h.token("bob", &["dba-leads"]), &id, "approve", json!({}))
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::CONFLICT, "elevation_not_pending"),
        "{b}"
    );
    assert!(b["error"]["message"].as_str().unwrap().contains("expired"));
    // The sweeper records the transition once.
    let swept = h.state.authority.elevations.sweep(now()).await.unwrap();
    assert_eq!(swept, 1);
    assert_eq!(h.state.authority.elevations.sweep(now()).await.unwrap(), 0);
    let rows = h.rows("elevation_expire");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].details.as_ref().unwrap()["from"], "pending");
    h.verify_chain();
}

async fn grants_end_by_themselves_and_can_be_dropped_or_revoked() {
    let h = harness(|_| {}).await;
    let alice = || h.token("alice", &["dba", "oncall"]);

    // A two-second grant: usable, then over.
    let (_, e) = h
        .elevate(&alice(), "db-admin", "INC-1 quick look", Some(2))
        .await;
    assert_eq!(e["state"], "approved");
    let (s, c) = h.cert(&alice(), Some(&["postgres"])).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert!(c["valid_before"].as_u64().unwrap() <= e["grant_ends_at"].as_u64().unwrap());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, _) = h.cert(&alice(), Some(&["postgres"])).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "the grant ended");
    let id = e["id"].as_str().unwrap();
    let (_, g) = h
        .call("GET", &format!("/v1/elevations/{id}"), Some(&alice()), "")
        .await;
    assert_eq!(g["state"], "expired");

    // Dropped early by the requester: refused at once.
    let (_, e) = h.elevate(&alice(), "db-admin", "INC-2 restore", None).await;
    let id = e["id"].as_str().unwrap().to_owned();
    assert_eq!(
        h.cert(&alice(), Some(&["postgres"])).await.0,
        StatusCode::OK
    );
    // Only the requester can drop it.
    let (s, b) = h
        .act(&h.token("bob", &["dba-leads"]), &id, "cancel", json!({}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    let (s, d) = h
        .act(&alice(), &id, "cancel", json!({"comment": "done"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["state"], "revoked");
    assert_eq!(
        h.cert(&alice(), Some(&["postgres"])).await.0,
        StatusCode::FORBIDDEN
    );
    let (s, b) = h.act(&alice(), &id, "cancel", json!({})).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::CONFLICT, "elevation_not_cancellable"),
        "{b}"
    );

    // Revoked by an operator (`jitssh-ca elevation revoke`): refused at once.
    let (_, e) = h.elevate(&alice(), "db-admin", "INC-3 restore", None).await;
    let id = e["id"].as_str().unwrap().to_owned();
    assert_eq!(
        h.cert(&alice(), Some(&["postgres"])).await.0,
        StatusCode::OK
    );
    let r = h
        .state
        .authority
        .elevations
        .revoke(&id, "root", Some("incident over".into()), now())
        .await
        .unwrap();
    assert_eq!(r.state, ca_core::elevation::ElevationState::Revoked);
    assert_eq!(
        h.cert(&alice(), Some(&["postgres"])).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(h.rows("elevation_revoke")[0].outcome, "revoked");
    assert_eq!(
        h.rows("elevation_cancel")
            .iter()
            .filter(|r| r.outcome == "revoked")
            .count(),
        1
    );

    // A pending request withdrawn by its requester is cancelled.
    let (_, e) = h
        .elevate(&h.token("alice", &["dba"]), "db-admin", "later", None)
        .await;
    let (s, d) = h
        .act(&alice(), e["id"].as_str().unwrap(), "cancel", json!({}))
        .await;
    assert_eq!(
        (s, d["state"].as_str()),
        (StatusCode::OK, Some("cancelled")),
        "{d}"
    );
    h.verify_chain();
}

async fn concurrent_approve_and_cancel_end_in_exactly_one_state() {
    let h = Arc::new(harness(|_| {}).await);
    for _ in 0..20 {
        let (_, e) = h
            .elevate(&h.token("alice", &["dba"]), "db-admin", "race", None)
            .await;
        let id = e["id"].as_str().unwrap().to_owned();
        let (a, b) = (h.clone(), h.clone());
        let (ida, idb) = (id.clone(), id.clone());
        let approve = tokio::spawn(async move {
            a.act(&a.token("bob", &["dba-leads"]), &ida, "approve", json!({}))
                .await
        });
        let cancel = tokio::spawn(async move {
            b.act(&b.token("alice", &["dba"]), &idb, "cancel", json!({}))
                .await
        });
        let (ra, rc) = (approve.await.unwrap(), cancel.await.unwrap());
        let (_, g) = h
            .call(
                "GET",
                &format!("/v1/elevations/{id}"),
                Some(&h.token("alice", &[])),
                "",
            )
            .await;
        match g["state"].as_str().unwrap() {
            // Approved first; the cancel then dropped the grant.
            "revoked" => {
                assert_eq!(ra.0, StatusCode::OK, "{ra:?}");
                assert_eq!(rc.0, StatusCode::OK, "{rc:?}");
                assert_eq!(ra.1["state"], "approved");
            }
            // Cancelled first; the approval found nothing pending.
            "cancelled" => {
                assert_eq!(rc.0, StatusCode::OK, "{rc:?}");
                assert_eq!(
                    (ra.0, code(&ra.1)),
                    (StatusCode::CONFLICT, "elevation_not_pending")
                );
            }
            other => panic!("unexpected final state {other}: {ra:?} {rc:?}"),
        }
    }
    h.verify_chain();
}

/// A webhook receiver: records (event header, signature, body).
async fn receiver() -> (String, Arc<Mutex<Vec<(String, String, Value)>>>) {
    let got: Arc<Mutex<Vec<(String, String, Value)>>> = Arc::default();
    let g = got.clone();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let g = g.clone();
                async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default()
                    };
                    let sig = h("x-jitssh-signature");
                    assert_eq!(
                        sig,
                        ca_server::elevation::webhook::signature(b"s3cret", &body)
                    );
                    g.lock().unwrap().push((
                        h("x-jitssh-event"),
                        sig,
                        serde_json::from_slice(&body).unwrap(),
                    ));
                    StatusCode::NO_CONTENT
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, got)
}

fn webhook(
    url: &str,
    dir: &std::path::Path,
    timeout: u64,
    retries: u32,
) -> ca_server::config::WebhookConfig {
    let secret = dir.join("hook.secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    // Secret files are refused when others may read them.
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    ca_server::config::WebhookConfig {
        url: url.parse().unwrap(),
        timeout: Duration::from_secs(timeout),
        retries,
        secret_file: Some(secret),
    }
}

async fn webhook_hears_new_requests_and_decisions() {
    let (url, got) = receiver().await;
    let tmp = tempfile::tempdir().unwrap();
    let h = harness(|c| c.elevation.webhook = Some(webhook(&url, tmp.path(), 2, 1))).await;
    h.state.authority.elevations.spawn_background();
    let (_, e) = h
        .elevate(&h.token("alice", &["dba"]), "db-admin", "vacuum", None)
        .await;
    let id = e["id"].as_str().unwrap();
    h.act(
        &h.token("bob", &["dba-leads"]),
        id,
        "approve",
        json!({"comment": "go"}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.lock().unwrap().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = got.lock().unwrap();
    let events: Vec<&str> = got.iter().map(|(e, _, _)| e.as_str()).collect();
    assert_eq!(events, ["elevation.pending", "elevation.approved"]);
    assert_eq!(got[0].2["elevation"]["id"], id);
    assert_eq!(got[0].2["elevation"]["reason"], "vacuum");
    assert_eq!(got[1].2["actor"]["subject"], "bob");
    assert_eq!(got[1].2["comment"], "go");
    assert!(got[1].1.starts_with("sha256="));
}

async fn a_webhook_that_never_answers_does_not_block_requests() {
    // Accepts connections and never replies.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", hole.local_addr().unwrap());
    // And one where nothing listens at all.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    };
    for url in [url, closed] {
        let tmp = tempfile::tempdir().unwrap();
        let h = harness(|c| c.elevation.webhook = Some(webhook(&url, tmp.path(), 5, 3))).await;
        h.state.authority.elevations.spawn_background();
        let started = Instant::now();
        for i in 0..5 {
            let (s, e) = h
                .elevate(
                    &h.token("alice", &["dba"]),
                    "db-admin",
                    &format!("job {i}"),
                    None,
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{e}");
            let (s, _) = h
                .act(
                    &h.token("bob", &["dba-leads"]),
                    e["id"].as_str().unwrap(),
                    "approve",
                    json!({}),
                )
                .await;
            assert_eq!(s, StatusCode::OK);
        }
        // Each delivery would wait 5 s × 4 attempts if the flow waited for it.
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{url}: {:?}",
            started.elapsed()
        );
    }
    drop(hole);
}

/// A careless policy that grants a role's principal to everyone and lets
/// anyone approve: the server's own rules still hold.
const CARELESS: &str = r#"
package jitssh
decision := {"allow": true, "principals": ["alice", "postgres"], "ttl_seconds": 900, "reasons": ["careless"]}
roles := {"db-admin": {"principals": ["postgres"], "max_ttl_seconds": 60}}
elevation_decision := {"outcome": "pending", "approvals_required": 1, "ttl_seconds": 86400}
approval_decision := {"allow": true}
"#;

async fn server_rules_hold_whatever_the_policy_says() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("careless.rego"), CARELESS).unwrap();
    let h = harness_with(PolicyEngine::load_dir(dir.path()).unwrap(), |_| {}).await;
    let alice = || h.token("alice", &[]);

    // The policy grants postgres without any elevation: refused.
    let (s, b) = h.cert(&alice(), None).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::FORBIDDEN, "denied_by_policy"),
        "{b}"
    );
    assert!(
        b["error"]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("active elevation"),
        "{b}"
    );

    // The policy lets anyone approve, alice included: the server does not.
    let (_, e) = h.elevate(&alice(), "db-admin", "x", None).await;
    assert_eq!(
        e["ttl_seconds"], 60,
        "a grant never outlives its role's maximum"
    );
    let id = e["id"].as_str().unwrap();
    let (s, b) = h.act(&alice(), id, "approve", json!({})).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::FORBIDDEN, "self_approval"),
        "{b}"
    );
    let (s, e) = h.act(&h.token("bob", &[]), id, "approve", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert_eq!(e["state"], "approved");

    // Under the grant: issued, but ending with the grant, not after 900 s.
    let (s, c) = h.cert(&alice(), None).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert!(c["valid_before"].as_u64().unwrap() <= e["grant_ends_at"].as_u64().unwrap());
    assert!(c["valid_before"].as_u64().unwrap() <= now() + 60);
}

async fn floods_are_refused() {
    let h = harness(|c| {
        c.rate_per_minute = 60;
        c.rate_burst = 15;
    })
    .await;
    let alice = h.token("alice", &["dba"]);
    for i in 0..ca_server::elevation::MAX_PENDING_PER_REQUESTER {
        let (s, e) = h
            .elevate(&alice, "db-admin", &format!("task {i}"), None)
            .await;
        assert_eq!(s, StatusCode::CREATED, "{e}");
    }
    let (s, b) = h.elevate(&alice, "db-admin", "one more", None).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_pending"),
        "{b}"
    );
    // Someone else is not affected by alice's queue.
    let (s, _) = h
        .elevate(&h.token("bob", &["dba"]), "db-admin", "mine", None)
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // Past the burst, every elevation call of that identity gets 429.
    let mut limited = None;
    for _ in 0..10 {
        let (s, b) = h.call("GET", "/v1/elevations", Some(&alice), "").await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(b);
            break;
        }
    }
    assert_eq!(code(&limited.expect("rate limited")), "rate_limited");
    // Certificates have their own bucket.
    assert_eq!(h.cert(&alice, None).await.0, StatusCode::OK);
}

/// Make every `UPDATE` of the elevations table change no row (`on`), as if
/// the stored request were no longer in the state the writer read; or undo it.
fn skip_elevation_updates(h: &Harness, on: bool) {
    use ca_server::db::Backend;
    let db = h.config.database.open().unwrap();
    let sql = match (db.backend(), on) {
        (Backend::Sqlite, true) => {
            "CREATE TRIGGER skip_updates BEFORE UPDATE ON elevations BEGIN SELECT RAISE(IGNORE); END"
        }
        (Backend::Sqlite, false) => "DROP TRIGGER skip_updates",
        (Backend::Postgres, true) => {
            "CREATE FUNCTION skip_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
             CREATE TRIGGER skip_updates BEFORE UPDATE ON elevations FOR EACH ROW EXECUTE FUNCTION skip_row()"
        }
        (Backend::Postgres, false) => "DROP TRIGGER skip_updates ON elevations",
    };
    db.with(|c| c.batch(sql)).unwrap();
}

/// A transition whose conditional `UPDATE` changes no row fails (409
/// `elevation_changed`) and writes nothing: no vote, no grant, no
/// `approved` row, the request as it was; only the refusal is audited.
async fn transitions_that_change_no_row_fail_and_write_nothing() {
    let h = harness(|_| {}).await;
    let alice = || h.token("alice", &["dba"]);
    let (_, e) = h.elevate(&alice(), "db-admin", "vacuum", None).await;
    assert_eq!(e["state"], "pending", "{e}");
    let id = e["id"].as_str().unwrap().to_owned();

    skip_elevation_updates(&h, true);
    for (who, action) in [
        (h.token("bob", &["dba-leads"]), "approve"),
        (h.token("carol", &["dba-leads"]), "deny"),
        (alice(), "cancel"),
    ] {
        let (s, b) = h.act(&who, &id, action, json!({})).await;
        assert_eq!(
            (s, code(&b)),
            (StatusCode::CONFLICT, "elevation_changed"),
            "{action}: {b}"
        );
    }
    let revoked = h
        .state
        .authority
        .elevations
        .revoke(&id, "ops", None, now())
        .await;
    assert_eq!(revoked.unwrap_err().code(), "elevation_changed");

    let (s, e) = h
        .call("GET", &format!("/v1/elevations/{id}"), Some(&alice()), "")
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert_eq!(e["state"], "pending", "{e}");
    assert_eq!(e["approvals"], json!([]), "the vote rolled back: {e}");
    let (s, _) = h.cert(&alice(), Some(&["postgres"])).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no grant");
    for action in [
        "elevation_approve",
        "elevation_deny",
        "elevation_cancel",
        "elevation_revoke",
    ] {
        let rows = h.rows(action);
        assert_eq!(rows.len(), 1, "{action}: {rows:?}");
        assert_eq!(rows[0].outcome, "denied", "{action}");
        assert_eq!(
            rows[0].code.as_deref(),
            Some("elevation_changed"),
            "{action}"
        );
    }

    // The same approval goes through once the row can change again.
    skip_elevation_updates(&h, false);
    let (s, e) = h
        .act(&h.token("bob", &["dba-leads"]), &id, "approve", json!({}))
        .await;
    assert_eq!(
        (s, e["state"].as_str()),
        (StatusCode::OK, Some("approved")),
        "{e}"
    );
}

/// Version 1 of a policy for [`a_reload_during_a_decision_does_not_mix_policy_versions`]:
/// `x` is a role principal, and the decision grants it (slowly) to a
/// request whose reason is "slow". Version 2 has no roles and grants `x`.
const SLOW_V1: &str = r#"package jitssh
import rego.v1

roles := {"r": {"principals": ["x"], "max_ttl_seconds": 600}}
elevation_decision := {"outcome": "deny", "reasons": ["v1"]}
approval_decision := {"allow": false}

slow if {
    input.request.reason == "slow"
    count([n | some n in numbers.range(1, SLOW_N); n % 7 == 0]) > 0
}

decision := {"allow": true, "principals": ["x"], "ttl_seconds": 60, "reasons": ["v1"]} if slow
decision := {"allow": false, "reasons": ["v1"]} if not slow
"#;

const FAST_V2: &str = r#"package jitssh
decision := {"allow": true, "principals": ["x"], "ttl_seconds": 60, "reasons": ["v2"]}
"#;

/// A reload that lands while a request's decision is being evaluated: the
/// role table that limits the certificate is the one of the version that
/// decided (the old code read the table again after evaluating, so version
/// 1's decision met version 2's empty table and `x` left without a grant).
async fn a_reload_during_a_decision_does_not_mix_policy_versions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.rego");
    let v1_with = |n: u64| SLOW_V1.replace("SLOW_N", &n.to_string());
    // Size the slow decision to ~400 ms on this machine (the evaluation
    // limit is 1 s), so the reload below lands well inside it.
    std::fs::write(&file, v1_with(100_000)).unwrap();
    let probe = PolicyEngine::load_dir(dir.path()).unwrap();
    let started = Instant::now();
    probe
        .evaluate(&json!({"request": {"reason": "slow"}}))
        .unwrap();
    let per_100k = started.elapsed().as_secs_f64().max(1e-4);
    let n = ((0.4 / per_100k) * 100_000.0).clamp(100_000.0, 20_000_000.0) as u64;
    std::fs::write(&file, v1_with(n)).unwrap();

    let h = harness_with(PolicyEngine::load_dir(dir.path()).unwrap(), |_| {}).await;
    let engine = h.state.authority.policy.clone();
    let v1 = engine.policy_hash();
    let reloader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        std::fs::write(&file, FAST_V2).unwrap();
        let outcome = engine.reload().unwrap();
        (outcome, Instant::now())
    });
    let (s, b) = h.cert_with_reason(&h.token("alice", &[]), "slow").await;
    let answered = Instant::now();
    let (outcome, reloaded) = reloader.join().unwrap();
    assert!(
        matches!(outcome, ca_server::policy::ReloadOutcome::Reloaded { .. }),
        "{outcome:?}"
    );
    assert!(
        reloaded < answered,
        "the reload must land while the decision is evaluated"
    );
    // Version 1 decided, and version 1's table holds `x` to a grant the
    // caller does not have: denied (not a policy error, not a certificate).
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    let row = h.rows("user_cert").pop().unwrap();
    assert!(
        code(&b) == "denied_by_policy" && b.to_string().contains("active elevation of role r"),
        "{b}"
    );
    assert_eq!(row.policy_hash.as_deref(), Some(v1.as_str()));
    assert!(row.granted_principals.is_empty(), "{row:?}");
}

on_both_backends!(
    a_reload_during_a_decision_does_not_mix_policy_versions,
    transitions_that_change_no_row_fail_and_write_nothing,
    auto_approval_grants_role_principals_until_the_grant_ends,
    two_different_approvers_each_counted_once,
    denial_closes_the_request,
    bad_input_changes_nothing,
    pending_requests_expire_undecided,
    grants_end_by_themselves_and_can_be_dropped_or_revoked,
    concurrent_approve_and_cancel_end_in_exactly_one_state,
    webhook_hears_new_requests_and_decisions,
    a_webhook_that_never_answers_does_not_block_requests,
    server_rules_hold_whatever_the_policy_says,
    floods_are_refused,
);
