//! The console's Revocations page in-process: an operator revokes a serial,
//! a key and an identity through the same operation as `jitssh-ca revoke`
//! (audit rows with `"channel": "console"`, the served KRL and issuance
//! honour them at once); an auditor sees the list but no forms and a forged
//! POST is refused and audited; bad input is a 400 page that changes
//! nothing; the list pages.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::process::Command;

use axum::http::StatusCode;
use ca_server::dev::idp::DevUser;
use ca_server::policy::PolicyEngine;
use ca_server::revocation::Target;
use common::ui::{Answer, alice, dev_user, send, sign_in_as, with_session};
use common::{AUD, Harness, MintExt as _, build, now};
use serde_json::json;
use ssh_key::PrivateKey;

async fn console() -> Harness {
    build(
        PolicyEngine::load_embedded_default().unwrap(),
        vec![
            alice(),
            dev_user("olga", &["ca-operators"]),
            dev_user("audrey", &["security-audit"]),
            dev_user("bob", &["sre"]),
        ],
        |c| c.rate_per_minute = 0,
    )
    .await
}

fn new_key() -> PrivateKey {
    PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap()
}

/// A certificate for `who` through the API: its serial and OpenSSH text,
/// or the refusal's status.
async fn certificate(
    h: &Harness,
    who: &DevUser,
    key: &PrivateKey,
) -> Result<(u64, String), StatusCode> {
    let token = h.idp.id_token_for(who, AUD, None, 300);
    let body = json!({"public_key": key.public_key().to_openssh().unwrap()});
    let (s, b) = h
        .json("POST", "/v1/certs/user", Some(&token), body.to_string())
        .await;
    if s != StatusCode::OK {
        return Err(s);
    }
    Ok((
        b["serial"].as_str().unwrap().parse().unwrap(),
        b["certificate"].as_str().unwrap().to_owned(),
    ))
}

/// Whether the KRL the API serves revokes `cert`, as `ssh-keygen -Q` says.
async fn krl_revokes(h: &Harness, cert: &str) -> bool {
    let req = axum::http::Request::get("/v1/krl")
        .body(axum::body::Body::empty())
        .unwrap();
    let (s, krl, _) = h.send(req).await;
    assert_eq!(s, StatusCode::OK);
    let (k, c) = (h.dir.path().join("krl"), h.dir.path().join("c-cert.pub"));
    std::fs::write(&k, krl).unwrap();
    std::fs::write(&c, format!("{cert}\n")).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-Q")
        .arg("-f")
        .arg(&k)
        .arg(&c)
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

async fn post(h: &Harness, session: &str, csrf: &str, fields: &[(&str, &str)]) -> Answer {
    send(
        h,
        "POST",
        "/ui/revocations",
        Some(&with_session(session)),
        Some(&encode(csrf, fields)),
        None,
    )
    .await
}

/// A form body: `csrf` and `fields`, URL-encoded.
pub fn encode(csrf: &str, fields: &[(&str, &str)]) -> String {
    let mut u = reqwest::Url::parse("http://form.invalid/").unwrap();
    u.query_pairs_mut().append_pair("csrf", csrf);
    for (k, v) in fields {
        u.query_pairs_mut().append_pair(k, v);
    }
    u.query().unwrap().to_owned()
}

async fn page(h: &Harness, session: &str, query: &str) -> Answer {
    send(
        h,
        "GET",
        &format!("/ui/revocations{query}"),
        Some(&with_session(session)),
        None,
        None,
    )
    .await
}

fn stored(h: &Harness) -> usize {
    h.state
        .authority
        .revocations
        .store()
        .page(None, 1000)
        .unwrap()
        .len()
}

#[tokio::test]
async fn an_operator_revokes_a_serial_a_key_and_an_identity() {
    let h = console().await;
    let olga = sign_in_as(&h, Some("olga")).await;
    let first = page(&h, &olga, "").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert!(first.body.contains("Nothing is revoked"), "{}", first.body);
    assert!(first.body.contains(r#"action="/ui/revocations""#));
    let csrf = first.csrf();

    // A serial: the served KRL revokes the certificate at once.
    let (serial, cert) = certificate(&h, &alice(), &new_key()).await.unwrap();
    assert!(!krl_revokes(&h, &cert).await);
    let done = post(
        &h,
        &olga,
        &csrf,
        &[
            ("kind", "serial"),
            ("serial", &serial.to_string()),
            ("reason", "lost laptop"),
        ],
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(
        done.body.contains(&format!("<code>Serial {serial}</code>")),
        "{}",
        done.body
    );
    assert!(krl_revokes(&h, &cert).await, "the served KRL revokes it");
    assert!(
        done.body.contains("In this server&#39;s KRL since"),
        "{}",
        done.body
    );
    assert!(
        done.body.contains("by olga@example.com (console)"),
        "{}",
        done.body
    );
    assert!(done.body.contains("Reason: lost laptop"));

    // A key: no new certificate for it.
    let key = new_key();
    assert!(certificate(&h, &alice(), &key).await.is_ok());
    let line = key.public_key().to_openssh().unwrap();
    let done = post(
        &h,
        &olga,
        &csrf,
        &[("kind", "key"), ("key", &line), ("reason", "leaked")],
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let fp = key
        .public_key()
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string();
    assert!(done.body.contains(&fp), "{}", done.body);
    assert_eq!(
        certificate(&h, &alice(), &key).await.unwrap_err(),
        StatusCode::FORBIDDEN
    );

    // An identity: bob's certificate already issued is revoked by serial,
    // and he gets no new one.
    let bob = dev_user("bob", &["sre"]);
    let (_, bobs) = certificate(&h, &bob, &new_key()).await.unwrap();
    let done = post(
        &h,
        &olga,
        &csrf,
        &[
            ("kind", "subject"),
            ("issuer", h.idp.issuer()),
            ("subject", &bob.subject()),
            ("reason", "left the company"),
        ],
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("Identity dev|bob"), "{}", done.body);
    assert!(krl_revokes(&h, &bobs).await);
    assert_eq!(
        certificate(&h, &bob, &new_key()).await.unwrap_err(),
        StatusCode::FORBIDDEN
    );

    // One audit row each, from olga through the console.
    let rows = h.rows("revoke");
    assert_eq!(rows.len(), 3);
    for (row, reason) in rows
        .iter()
        .zip(["lost laptop", "leaked", "left the company"])
    {
        assert_eq!(row.channel.as_deref(), Some("console"), "{row:?}");
        assert_eq!(row.subject.as_deref(), Some("dev|olga"));
        assert_eq!(row.outcome, "revoked");
        assert_eq!(row.reason.as_deref(), Some(reason));
    }
    assert!(h.state.authority.audit.verify().unwrap().is_ok());
}

#[tokio::test]
async fn an_auditor_sees_the_list_but_cannot_revoke() {
    let h = console().await;
    h.state
        .authority
        .revocations
        .store()
        .revoke(&Target::Serial(77), Some("from the CLI"), now(), 3600)
        .unwrap();
    let audrey = sign_in_as(&h, Some("audrey")).await;
    let list = page(&h, &audrey, "").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert!(list.body.contains("<code>77</code>"), "{}", list.body);
    assert!(
        !list.body.contains(r#"action="/ui/revocations""#),
        "no forms"
    );
    assert!(
        !list.body.contains(r#"href="/ui/policy""#),
        "no Policy link"
    );

    // Her own session's token on a POST she was never offered.
    let forged = post(
        &h,
        &audrey,
        &list.csrf(),
        &[("kind", "serial"), ("serial", "42"), ("reason", "x")],
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);
    let row = h.rows("console_action").pop().unwrap();
    assert_eq!(row.code.as_deref(), Some("console_forbidden"));
    assert_eq!(row.subject.as_deref(), Some("dev|audrey"));
    assert_eq!(row.channel.as_deref(), Some("console"));
    assert_eq!(stored(&h), 1, "nothing revoked");

    // Someone with My access only does not see the page at all.
    let alice = sign_in_as(&h, Some("alice")).await;
    assert_eq!(page(&h, &alice, "").await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn bad_input_is_a_400_page_that_changes_nothing() {
    let h = console().await;
    let olga = sign_in_as(&h, Some("olga")).await;
    let csrf = page(&h, &olga, "").await.csrf();
    let issuer = h.idp.issuer().to_owned();
    for (fields, says) in [
        (
            vec![("kind", "serial"), ("serial", "abc"), ("reason", "r")],
            "is not a serial",
        ),
        (
            vec![("kind", "serial"), ("serial", "0"), ("reason", "r")],
            "serial 0 is never issued",
        ),
        (
            vec![("kind", "serial"), ("serial", "5"), ("reason", " ")],
            "Give a reason",
        ),
        (
            vec![
                ("kind", "key"),
                ("key", "ssh-ed25519 AAAA"),
                ("reason", "r"),
            ],
            "public_key",
        ),
        (
            vec![
                ("kind", "key"),
                ("key", "ssh-ed25519-cert-v01@openssh.com AAAA"),
                ("reason", "r"),
            ],
            "is a certificate",
        ),
        (
            vec![
                ("kind", "subject"),
                ("issuer", "https://evil.example"),
                ("subject", "x"),
                ("reason", "r"),
            ],
            "must be one of this CA",
        ),
        (
            vec![
                ("kind", "subject"),
                ("issuer", &issuer),
                ("subject", ""),
                ("reason", "r"),
            ],
            "subject must be",
        ),
        (
            vec![("kind", "everything"), ("reason", "r")],
            "Use one of the three forms",
        ),
    ] {
        let a = post(&h, &olga, &csrf, &fields).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{fields:?}: {}", a.body);
        assert!(a.body.contains("Nothing was revoked"), "{fields:?}");
        assert!(a.body.contains(says), "{fields:?}: {}", a.body);
    }
    // What was typed comes back, escaped.
    let a = post(
        &h,
        &olga,
        &csrf,
        &[("kind", "serial"), ("serial", "<b>12"), ("reason", "r")],
    )
    .await;
    assert!(a.body.contains(r#"value="&#60;b&#62;12""#), "{}", a.body);
    let a = page(&h, &olga, "?before=x").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(stored(&h), 0);
    assert!(h.rows("revoke").is_empty());
}

#[tokio::test]
async fn the_list_pages_newest_first() {
    let h = console().await;
    let store = h.state.authority.revocations.store();
    for serial in 1..=55u64 {
        store
            .revoke(&Target::Serial(serial), None, now(), 3600)
            .unwrap();
    }
    let olga = sign_in_as(&h, Some("olga")).await;
    let first = page(&h, &olga, "").await;
    assert!(first.body.contains("<code>55</code>"));
    assert!(first.body.contains("<code>6</code>"));
    assert!(!first.body.contains("<code>5</code>"), "50 a page");
    assert!(
        first.body.contains(r#"href="/ui/revocations?before=6""#),
        "{}",
        first.body
    );
    let older = page(&h, &olga, "?before=6").await;
    assert_eq!(older.status, StatusCode::OK);
    assert!(older.body.contains("<code>5</code>") && older.body.contains("<code>1</code>"));
    assert!(!older.body.contains("<code>6</code>"));
    assert!(!older.body.contains("?before="), "no older page");
    // Revoked by the store directly: no revoke row names who.
    assert!(older.body.contains("the CA itself"), "{}", older.body);
}
