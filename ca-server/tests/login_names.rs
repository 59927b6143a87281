//! A login name belongs to one person (issue #16): the server derives it per
//! issuer by the configured rule (a foreign email domain or an untrusted
//! `preferred_username` names nobody), binds it to the first issuer +
//! subject that uses it (another identity, at another issuer or after an
//! email was reassigned, is refused until an operator maps or releases it),
//! and the elevation rules compare people by it. On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::http::StatusCode;
use ca_core::LoginRule;
use ca_server::dev::idp::DevIdp;
use ca_server::oidc::IssuerConfig;
use ca_server::policy::PolicyEngine;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

mod common;
use common::{AUD, Harness, MintExt as _, now};

/// A second OpenID provider on a loopback port.
async fn second_idp() -> Arc<DevIdp> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let idp = DevIdp::new(issuer, AUD.into(), vec![]);
    let router = idp.clone().router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    idp
}

/// A CA whose first issuer (the harness's) has `rule`, and which also trusts
/// `second` (if any) with `preferred_username` as its login claim.
async fn harness(rule: LoginRule, second: Option<&DevIdp>) -> Harness {
    let second = second.map(|idp| IssuerConfig {
        login: LoginRule::claim("preferred_username"),
        ..IssuerConfig::new(idp.issuer(), vec![AUD.into()], ca_core::IdentityKind::Human)
    });
    common::build(
        PolicyEngine::load_embedded_default().unwrap(),
        vec![],
        |c| {
            c.rate_per_minute = 0;
            c.issuers[0].login = rule;
            c.issuers.extend(second);
        },
    )
    .await
}

fn token(idp: &DevIdp, sub: &str, extra: Value) -> String {
    let mut claims = json!({
        "iss": idp.issuer(), "sub": sub, "aud": AUD, "iat": now(), "exp": now() + 300,
        "groups": ["developers"],
        "jti": format!("{:x}", rand_core::RngCore::next_u64(&mut rand_core::OsRng)),
    });
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    idp.mint(Algorithm::ES256, claims)
}

fn username(name: &str) -> Value {
    json!({"preferred_username": name})
}

async fn cert_with(router: &axum::Router, token: &str) -> (StatusCode, Value) {
    use tower::ServiceExt as _;
    let key =
        ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
    let body = json!({"public_key": key.public_key().to_openssh().unwrap()}).to_string();
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/certs/user")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(axum::body::Body::from(body))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

impl Harness {
    async fn cert(&self, token: &str) -> (StatusCode, Value) {
        cert_with(&self.router, token).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.json("POST", path, Some(token), body.to_string()).await
    }

    fn verify_chain(&self) {
        let report = self.state.authority.audit.verify().unwrap();
        assert!(report.is_ok(), "audit chain: {report:?}");
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn denied_because(got: &(StatusCode, Value), fragment: &str) {
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);
    assert_eq!(code(&got.1), "denied_by_policy", "{}", got.1);
    let reasons = got.1["error"]["reasons"].as_array().unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().unwrap().contains(fragment)),
        "wanted {fragment:?} in {reasons:?}"
    );
}

fn email(addr: &str) -> Value {
    json!({"email": addr, "email_verified": true})
}

async fn foreign_domain_email_gives_no_personal_principal() {
    let rule = LoginRule::new(Some("email"), &["example.com".into()]).unwrap();
    let h = harness(rule, None).await;
    for (sub, addr) in [
        ("u1", "alice@anything.example"),
        ("u2", "alice@example.com.evil"),
        ("u3", "alice@sub.example.com"),
    ] {
        let got = h.cert(&token(&h.idp, sub, email(addr))).await;
        denied_because(&got, "not among this issuer's email_domains (example.com)");
        denied_because(&got, "no personal login name");
    }
    let got = h
        .cert(&token(&h.idp, "u4", email("alice+root@example.com")))
        .await;
    denied_because(&got, "not a valid login name");
    // An unverified address in the right domain names nobody either.
    let unverified = json!({"email": "alice@example.com", "email_verified": false});
    denied_because(
        &h.cert(&token(&h.idp, "u5", unverified)).await,
        "no verified email",
    );
    // The company domain, any case: alice.
    let (status, body) = h
        .cert(&token(&h.idp, "u6", email("Alice@EXAMPLE.com")))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["principals"], json!(["alice", "dev"]));
    h.verify_chain();
}

async fn preferred_username_from_an_issuer_not_trusted_for_it_is_refused() {
    let rule = LoginRule::new(Some("email"), &["example.com".into()]).unwrap();
    let h = harness(rule, None).await;
    let got = h.cert(&token(&h.idp, "u1", username("alice"))).await;
    denied_because(&got, "preferred_username is not trusted from this issuer");
    // With a verified company email, the email decides, not the username.
    let mut both = email("bob@example.com");
    both["preferred_username"] = json!("alice");
    let (status, body) = h.cert(&token(&h.idp, "u2", both)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["principals"], json!(["bob", "dev"]));

    // An issuer with no rule at all: nobody gets a personal principal, and
    // the reason names the setting to add.
    let h = harness(LoginRule::none(), None).await;
    let mut all = email("alice@example.com");
    all["preferred_username"] = json!("alice");
    let got = h.cert(&token(&h.idp, "u1", all)).await;
    denied_because(&got, "has no rule for login names: add login_claim");
    denied_because(&got, &format!("issuer {:?}", h.idp.issuer()));
}

async fn a_second_identity_cannot_take_a_bound_login_name() {
    let idp2 = second_idp().await;
    let h = harness(LoginRule::claim("preferred_username"), Some(&idp2)).await;
    let alice1 = || token(&h.idp, "alice-1", username("alice"));
    let (status, body) = h.cert(&alice1()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        h.state.authority.logins.owner("alice"),
        Some((h.idp.issuer().to_owned(), "alice-1".to_owned()))
    );

    // Another issuer, and the same issuer with another subject (a
    // reassigned account), claiming "alice": refused, and audited.
    for t in [
        token(&idp2, "alice-2", username("alice")),
        token(&h.idp, "alice-new", username("Alice")),
    ] {
        let (status, body) = h.cert(&t).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(code(&body), "login_name_taken", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("\"alice\"")
        );
    }
    let refused: Vec<_> = h
        .rows("user_cert")
        .into_iter()
        .filter(|e| e.code.as_deref() == Some("login_name_taken"))
        .collect();
    assert_eq!(refused.len(), 2);
    assert!(refused.iter().all(|e| e.serial.is_none()));
    // Still alice's after a restart or on another replica (from the database).
    let other = h.another_ca(PolicyEngine::load_embedded_default().unwrap());
    let t = token(&idp2, "alice-2", username("alice"));
    assert_eq!(code(&cert_with(&other, &t).await.1), "login_name_taken");
    let (status, _) = cert_with(&other, &alice1()).await;
    assert_eq!(status, StatusCode::OK);

    // The operator maps alice to the second issuer's account: it gets
    // "alice", the first no longer does.
    let logins = &h.state.authority.logins;
    let previous = logins
        .map(
            "alice",
            idp2.issuer(),
            "alice-2",
            Some("moved IdP".into()),
            now(),
        )
        .await
        .unwrap();
    assert_eq!(previous.unwrap().subject, "alice-1");
    let (status, body) = h.cert(&token(&idp2, "alice-2", username("alice"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(code(&h.cert(&alice1()).await.1), "login_name_taken");

    // Released: the next identity to use it binds it.
    logins.release("alice", None, now()).await.unwrap();
    assert!(matches!(
        logins.release("alice", None, now()).await,
        Err(ca_server::logins::LoginNameError::NotBound(_))
    ));
    assert_eq!(h.cert(&alice1()).await.0, StatusCode::OK);
    assert_eq!(
        code(&h.cert(&token(&idp2, "alice-2", username("alice"))).await.1),
        "login_name_taken"
    );
    let actions: Vec<_> = ["login_name_bind", "login_name_map", "login_name_release"]
        .iter()
        .map(|a| h.rows(a).len())
        .collect();
    assert_eq!(actions, [2, 1, 1]);
    assert_eq!(
        h.rows("login_name_map")[0].details,
        Some(json!({
            "login": "alice", "bound_by": "operator",
            "previous": {"issuer": h.idp.issuer(), "subject": "alice-1"}
        }))
    );

    // Two identities racing for a fresh name: exactly one gets it.
    let (c1, c2) = (
        token(&h.idp, "carol-1", username("carol")),
        token(&idp2, "carol-2", username("carol")),
    );
    let (a, b) = tokio::join!(h.cert(&c1), h.cert(&c2));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::FORBIDDEN],
        "{a:?} {b:?}"
    );
    assert_eq!(h.rows("login_name_bind").len(), 3);
    h.verify_chain();
}

async fn one_person_across_issuers_cannot_approve_their_own_request_or_vote_twice() {
    let idp2 = second_idp().await;
    let h = harness(LoginRule::claim("preferred_username"), Some(&idp2)).await;
    let person = |idp: &DevIdp, sub: &str, name: &str, mail: &str, groups: &[&str]| {
        token(
            idp,
            sub,
            json!({
                "preferred_username": name, "email": mail, "email_verified": true,
                "groups": groups,
            }),
        )
    };
    // prod-root needs two approvals from sre-leads (data.json).
    let (status, req) = h
        .post(
            "/v1/elevations",
            &person(&h.idp, "alice-1", "alice", "alice@example.com", &["sre"]),
            json!({"role": "prod-root", "reason": "INC-1 disk full"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{req}");
    let id = req["id"].as_str().unwrap().to_owned();
    let approve = |t: String| {
        let path = format!("/v1/elevations/{id}/approve");
        let h = &h;
        async move { h.post(&path, &t, json!({})).await }
    };

    // Alice's account at the second issuer: other subject, other email,
    // same login name: her own request.
    let alice2 = || person(&idp2, "a2", "alice", "alice@other.example", &["sre-leads"]);
    let (status, body) = approve(alice2()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "self_approval"),
        "{body}"
    );

    // Bob approves once; his account at the second issuer cannot add a vote.
    let bob1 = person(&h.idp, "bob-1", "bob", "bob@example.com", &["sre-leads"]);
    let (status, body) = approve(bob1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "pending");
    let bob2 = || person(&idp2, "b2", "bob", "bob@other.example", &["sre-leads"]);
    let (status, body) = approve(bob2()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "login_name_taken"),
        "{body}"
    );

    // Even once the operator moves the names to the second issuer's
    // accounts, they are still the same people.
    let logins = &h.state.authority.logins;
    let second = idp2.issuer();
    logins
        .map("alice", second, "a2", None, now())
        .await
        .unwrap();
    logins.map("bob", second, "b2", None, now()).await.unwrap();
    let (status, body) = approve(alice2()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "self_approval"),
        "{body}"
    );
    let (status, body) = approve(bob2()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "already_approved"),
        "{body}"
    );

    // A second person completes it.
    let carol = person(
        &h.idp,
        "carol-1",
        "carol",
        "carol@example.com",
        &["sre-leads"],
    );
    let (status, body) = approve(carol).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "approved");
    h.verify_chain();
}

/// An issued (or denied) `user_cert` row as versions before bindings wrote it.
fn old_row(
    issuer: &str,
    subject: &str,
    email: &str,
    granted: &[&str],
    reason: &str,
) -> ca_core::audit::AuditEvent {
    ca_core::audit::AuditEvent {
        time: now() - 3600,
        action: "user_cert".into(),
        outcome: if granted.is_empty() {
            "denied"
        } else {
            "issued"
        }
        .into(),
        issuer: Some(issuer.into()),
        subject: Some(subject.into()),
        email: Some(email.into()),
        granted_principals: granted.iter().map(|p| p.to_string()).collect(),
        decision_reasons: vec![reason.into()],
        ..Default::default()
    }
}

async fn import_binds_the_names_of_earlier_certificates_first_come() {
    let idp2 = second_idp().await;
    let rule = LoginRule::new(Some("email"), &["example.com".into()]).unwrap();
    let h = harness(rule, Some(&idp2)).await;
    let (one, two) = (h.idp.issuer().to_owned(), idp2.issuer().to_owned());
    let own = |n: &str| format!("{n}: the user's own login, from the preferred_username claim");
    for e in [
        old_row(&one, "a1", "alice@example.com", &["alice", "dev"], "dev"),
        old_row(&two, "a2", "alice@other.example", &["alice"], &own("alice")),
        old_row(&two, "b2", "bob@other.example", &["bob"], &own("bob")),
        old_row(
            &one,
            "x1",
            "mallory@evil.example",
            &["mallory"],
            &own("mallory"),
        ),
        old_row(&two, "c2", "carol@other.example", &["dev"], &own("carol")),
        old_row(&two, "d2", "dave@other.example", &[], &own("dave")),
    ] {
        h.state.authority.audit.append(e, None).await.unwrap();
    }
    let logins = &h.state.authority.logins;
    let issuers = &h.config.issuers;
    let names = |r: &ca_server::logins::ImportReport| {
        let b: Vec<_> = r
            .bound
            .iter()
            .map(|b| (b.login.clone(), b.subject.clone()))
            .collect();
        let n: Vec<_> = r
            .refused
            .iter()
            .map(|(l, _, s)| (l.clone(), s.clone()))
            .collect();
        (b, n)
    };
    let expected_bound = vec![
        ("alice".to_owned(), "a1".to_owned()),
        ("bob".into(), "b2".into()),
    ];
    let refused = vec![("alice".to_owned(), "a2".to_owned())];
    let dry = logins.import(issuers, true, now()).await.unwrap();
    assert_eq!(names(&dry), (expected_bound.clone(), refused.clone()));
    assert!(
        logins.list().unwrap().is_empty(),
        "a dry run changes nothing"
    );
    assert!(h.rows("login_name_bind").is_empty());

    let done = logins.import(issuers, false, now()).await.unwrap();
    assert_eq!(names(&done), (expected_bound, refused.clone()));
    let rows = h.rows("login_name_bind");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].details.as_ref().unwrap()["bound_by"], "import");
    // The second issuer's alice is refused; the first gets her name.
    let t = token(&idp2, "a2", username("alice"));
    assert_eq!(code(&h.cert(&t).await.1), "login_name_taken");
    let (status, body) = h
        .cert(&token(&h.idp, "a1", email("alice@example.com")))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Again: nothing new, the same refusal.
    let again = logins.import(issuers, false, now()).await.unwrap();
    assert_eq!(names(&again), (vec![], refused));
    h.verify_chain();
}

on_both_backends!(
    import_binds_the_names_of_earlier_certificates_first_come,
    foreign_domain_email_gives_no_personal_principal,
    preferred_username_from_an_issuer_not_trusted_for_it_is_refused,
    a_second_identity_cannot_take_a_bound_login_name,
    one_person_across_issuers_cannot_approve_their_own_request_or_vote_twice,
);
