//! Grants in-process: who sees the page and who gets "End now" (the
//! policy's `grants` and `end_grants`, enforced on the POST too, with an
//! audited 403), ending a grant through the CLI's revocation (new
//! certificates for its principals refused at once), bad input, and paging;
//! on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use axum::http::StatusCode;
use ca_server::policy::PolicyEngine;
use common::ui::{alice, dev_user, elevation_state, get, post_form, post_form_with, sign_in_as};
use common::{AUD, Harness, MintExt as _, build};
use serde_json::json;

on_both_backends!(
    an_auditor_sees_grants_but_cannot_end_them,
    an_operator_ends_a_grant_and_its_principal_is_refused_at_once,
    ended_grants_page_by_keyset_and_bad_links_are_refused,
);

/// Alice requests roles; Olga operates the CA; Audrey audits it.
async fn console() -> Harness {
    build(
        PolicyEngine::load_embedded_default().unwrap(),
        vec![
            alice(),
            dev_user("olga", &["ca-operators"]),
            dev_user("audrey", &["security-audit"]),
        ],
        |c| c.rate_per_minute = 0,
    )
    .await
}

/// Alice gets db-admin at once (on call, with a ticket): its id.
async fn alice_grant(h: &Harness, alice: &str) -> String {
    let a = post_form(
        h,
        alice,
        "/ui/elevations",
        "role=db-admin&reason=INC-1+restore",
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    a.location().strip_prefix("/ui/?el=").unwrap().to_owned()
}

/// A certificate for `principal` through the API, for Alice.
async fn alice_cert(h: &Harness, principal: &str) -> (StatusCode, serde_json::Value) {
    let token = h.idp.id_token_for(&alice(), AUD, None, 300);
    let key =
        ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
    let body =
        json!({"public_key": key.public_key().to_openssh().unwrap(), "principals": [principal]});
    h.json("POST", "/v1/certs/user", Some(&token), body.to_string())
        .await
}

async fn an_auditor_sees_grants_but_cannot_end_them() {
    let h = console().await;
    let alice = sign_in_as(&h, Some("alice")).await;
    let id = alice_grant(&h, &alice).await;
    let audrey = sign_in_as(&h, Some("audrey")).await;
    let page = get(&h, &audrey, "/ui/grants").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let body = &page.body;
    assert!(
        body.contains(r#"<a href="/ui/grants" aria-current="page">Grants</a>"#),
        "{body}"
    );
    for want in [
        id.as_str(),
        "db-admin",
        "<h3>alice@example.com</h3>",
        "Holds <strong>db-admin</strong>",
        "<code>postgres</code>",
        "Reason: INC-1 restore",
        "Approved by the policy: auto-approved: member of oncall",
        " left</strong>",
    ] {
        assert!(body.contains(want), "{want}: {body}");
    }
    assert!(
        !body.contains("/end\""),
        "no End button for an auditor: {body}"
    );
    assert!(!body.contains("End now"), "{body}");

    // A forged End: refused, audited, nothing changed.
    let forged = post_form(
        &h,
        &audrey,
        &format!("/ui/grants/{id}/end"),
        "reason=forged",
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);
    let row = h.rows("console_action").pop().expect("an audit row");
    assert_eq!(row.outcome, "denied");
    assert_eq!(row.code.as_deref(), Some("console_forbidden"));
    assert_eq!(row.channel.as_deref(), Some("console"));
    assert!(h.rows("elevation_revoke").is_empty());
    assert_eq!(elevation_state(&h, &id), "approved");

    // Alice (no `grants`) sees neither the page nor the link.
    let hers = get(&h, &alice, "/ui/grants").await;
    assert_eq!(hers.status, StatusCode::FORBIDDEN);
    assert!(
        !get(&h, &alice, "/ui/")
            .await
            .body
            .contains("href=\"/ui/grants\"")
    );
}

async fn an_operator_ends_a_grant_and_its_principal_is_refused_at_once() {
    let h = console().await;
    let alice = sign_in_as(&h, Some("alice")).await;
    let id = alice_grant(&h, &alice).await;
    let (status, cert) = alice_cert(&h, "postgres").await;
    assert_eq!(status, StatusCode::OK, "while the grant is active: {cert}");

    let olga = sign_in_as(&h, Some("olga")).await;
    let page = get(&h, &olga, "/ui/grants").await.body;
    assert!(
        page.contains(&format!("action=\"/ui/grants/{id}/end\"")),
        "{page}"
    );
    assert!(page.contains("End now"), "{page}");

    // Without a reason: refused, nothing changed.
    let path = format!("/ui/grants/{id}/end");
    let no_reason = post_form(&h, &olga, &path, "reason=+").await;
    assert_eq!(
        no_reason.status,
        StatusCode::BAD_REQUEST,
        "{}",
        no_reason.body
    );
    assert!(no_reason.body.contains("Say why"), "{}", no_reason.body);
    assert_eq!(elevation_state(&h, &id), "approved");

    let done = post_form(&h, &olga, &path, "reason=restore+finished").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), format!("/ui/grants?ended={id}"));
    assert_eq!(elevation_state(&h, &id), "revoked");
    let body = get(&h, &olga, done.location()).await.body;
    assert!(
        body.contains("The grant of db-admin to alice@example.com has ended."),
        "{body}"
    );
    let ended = &body[body.find("id=\"ended\"").unwrap()..];
    assert!(
        ended.contains("Ended by olga@example.com at ") && ended.contains(" UTC: restore finished"),
        "{ended}"
    );
    // The CLI's revocation, its row naming the operator and the console.
    let row = h.rows("elevation_revoke").pop().unwrap();
    assert_eq!(row.outcome, "revoked");
    assert_eq!(row.channel.as_deref(), Some("console"));
    assert_eq!(row.email.as_deref(), Some("olga@example.com"));
    assert_eq!(row.reason.as_deref(), Some("restore finished"));
    let revoked = row.details.unwrap()["revoked_serials"].clone();
    assert_eq!(
        revoked,
        json!([cert["serial"]]),
        "the grant's certificate is revoked"
    );

    // New certificates for the role's principal are refused at once.
    let (status, refused) = alice_cert(&h, "postgres").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");

    // Ending it again is a conflict.
    let again = post_form(&h, &olga, &path, "reason=again").await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
}

async fn ended_grants_page_by_keyset_and_bad_links_are_refused() {
    let h = console().await;
    let alice = sign_in_as(&h, Some("alice")).await;
    let csrf = get(&h, &alice, "/ui/").await.csrf();
    let mut ids = Vec::new();
    for n in 0..27 {
        let a = post_form_with(
            &h,
            &alice,
            &csrf,
            "/ui/elevations",
            &format!("role=db-admin&reason=INC-{n}+x"),
        )
        .await;
        let id = a.location().strip_prefix("/ui/?el=").unwrap().to_owned();
        let dropped = post_form_with(
            &h,
            &alice,
            &csrf,
            &format!("/ui/elevations/{id}/cancel"),
            "",
        )
        .await;
        assert_eq!(dropped.status, StatusCode::SEE_OTHER, "{}", dropped.body);
        ids.push(id);
    }
    let audrey = sign_in_as(&h, Some("audrey")).await;
    let first = get(&h, &audrey, "/ui/grants").await.body;
    assert!(first.contains("Nobody holds a role now."), "{first}");
    assert!(first.contains("Dropped by the requester at "), "{first}");
    let link = first
        .split("href=\"/ui/grants?after=")
        .nth(1)
        .expect("a link to older grants")
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let second = get(&h, &audrey, &format!("/ui/grants?after={link}"))
        .await
        .body;
    assert!(!second.contains("?after="), "the last page: {second}");
    let on = |body: &str| ids.iter().filter(|id| body.contains(id.as_str())).count();
    assert_eq!(on(&first), 25);
    assert_eq!(on(&second), 2);
    assert_eq!(
        ids.iter()
            .filter(|id| first.contains(id.as_str()) && second.contains(id.as_str()))
            .count(),
        0,
        "no grant on both pages"
    );

    for bad in [
        "?after=x",
        "?after=12-EL",
        "?after=-el_1",
        "?after=1-el_1%0a",
    ] {
        let a = get(&h, &audrey, &format!("/ui/grants{bad}")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {}", a.body);
    }
}
