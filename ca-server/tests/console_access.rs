//! My access in-process: the preview of what the policy grants (nothing
//! written), the role guide (who approves, the auto-approve rule in words),
//! requesting a role through the console (the same service and audit row as
//! the API, channel console), a denial with the policy's reasons, and
//! cancelling only one's own request.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use axum::http::StatusCode;
use ca_server::policy::PolicyEngine;
use common::ui::{Answer, alice, dev_user, elevation_state, get, post_form, sign_in_as};
use common::{Harness, build};

/// Alice (dba, oncall, sre), Bob (dba) and Carol (developers).
async fn console() -> Harness {
    build(
        PolicyEngine::load_embedded_default().unwrap(),
        vec![
            alice(),
            dev_user("bob", &["dba"]),
            dev_user("carol", &["developers"]),
        ],
        |_| {},
    )
    .await
}

/// The part of `body` from the heading with id `from` to the one with `to`.
fn section<'a>(body: &'a str, from: &str, to: &str) -> &'a str {
    let start = body.find(&format!("id=\"{from}\"")).expect(from);
    let end = body[start..]
        .find(&format!("id=\"{to}\""))
        .map_or(body.len(), |e| start + e);
    &body[start..end]
}

fn all_audit_rows(h: &Harness) -> usize {
    h.state
        .authority
        .audit
        .list(&ca_server::audit::Filter::default())
        .unwrap()
        .len()
}

/// The elevation id a form's redirect names.
fn redirected_id(a: &Answer) -> String {
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    a.location()
        .strip_prefix("/ui/?el=")
        .unwrap_or_else(|| panic!("{}", a.location()))
        .to_owned()
}

#[tokio::test]
async fn the_preview_shows_what_the_policy_grants_and_writes_nothing() {
    let h = console().await;
    let alice = sign_in_as(&h, Some("alice")).await;
    let before = all_audit_rows(&h);
    let body = get(&h, &alice, "/ui/").await.body;
    let now = section(&body, "now", "grants");
    // Her own name and what her groups map to (sre: web, deploy; dba: db);
    // no role principal without a grant.
    for p in ["alice", "web", "deploy", "db"] {
        assert!(now.contains(&format!("<code>{p}</code>")), "{p}: {now}");
    }
    assert!(!now.contains("postgres"), "{now}");
    assert!(now.contains("15 min"), "the default lifetime: {now}");
    assert!(now.contains("permit-pty"), "{now}");
    assert!(now.contains("nothing was issued"), "{now}");
    // A preview spends nothing: no audit row, no certificate, no serial.
    assert_eq!(all_audit_rows(&h), before);
    assert!(h.rows("user_cert").is_empty());

    // Carol has no login-name problem but her group maps to `dev`.
    let carol = sign_in_as(&h, Some("carol")).await;
    let body = get(&h, &carol, "/ui/").await.body;
    let now = section(&body, "now", "grants");
    assert!(
        now.contains("<code>carol</code>") && now.contains("<code>dev</code>"),
        "{now}"
    );
}

#[tokio::test]
async fn the_preview_fails_closed_with_the_policy_reason() {
    // A policy that denies everyone a certificate still serves the console.
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in ca_server::policy::EMBEDDED_FILES {
        let text = if *name == "jitssh.rego" {
            text.replace(
                "decision := workload_decision if {",
                "decision := {\"allow\": false, \"reasons\": [\"closed for maintenance\"]} if {\n\tinput.request.preview\n} else := workload_decision if {",
            )
        } else {
            text.to_string()
        };
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let policy = PolicyEngine::load_dir(dir.path()).unwrap();
    let h = build(policy, vec![alice()], |_| {}).await;
    let alice = sign_in_as(&h, Some("alice")).await;
    let body = get(&h, &alice, "/ui/").await.body;
    let now = section(&body, "now", "grants");
    assert!(now.contains("The policy gives you nothing now"), "{now}");
    assert!(now.contains("closed for maintenance"), "{now}");
}

#[tokio::test]
async fn the_role_guide_says_who_approves_and_when_it_is_automatic() {
    let h = console().await;
    let alice = sign_in_as(&h, Some("alice")).await;
    let body = get(&h, &alice, "/ui/").await.body;
    let guide = section(&body, "request", "who");
    assert!(guide.contains("<h3>db-admin</h3>"), "{guide}");
    assert!(
        guide.contains("PostgreSQL superuser (the postgres account) on database hosts"),
        "{guide}"
    );
    assert!(
        guide.contains("Needs 1 approval from a member of dba-leads or sre-leads"),
        "{guide}"
    );
    assert!(
        guide.contains(
            "Auto-approved for members of oncall when the reason starts with an incident or change ticket (INC-… or CHG-…)"
        ),
        "{guide}"
    );
    assert!(guide.contains("at most 1 h"), "{guide}");
    // prod-root (sre, two approvals) is open to her too.
    assert!(
        guide.contains("Needs 2 approvals from members of sre-leads"),
        "{guide}"
    );

    // Bob (dba) may not ask for prod-root: it is not offered to him.
    let bob = sign_in_as(&h, Some("bob")).await;
    let body = get(&h, &bob, "/ui/").await.body;
    let guide = section(&body, "request", "who");
    assert!(!guide.contains("<option value=\"prod-root\""), "{guide}");
    assert!(
        guide.contains("Not open to you: prod-root (members of sre)"),
        "{guide}"
    );
}

#[tokio::test]
async fn without_a_role_guide_the_roles_are_shown_and_the_page_says_so() {
    for broken in [
        // No rule at all.
        "role_guide_gone[name] := {",
        // An entry out of shape (a field the server does not know).
        "role_guide[name] := {\n\t\"colour\": \"red\",",
    ] {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in ca_server::policy::EMBEDDED_FILES {
            // The guide's own tests would (rightly) refuse the broken set.
            let text = match text.find("# --- The console's role guide.") {
                Some(at) if *name == "elevation_test.rego" => text[..at].to_owned(),
                _ => text.replace("role_guide[name] := {", broken),
            };
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let h = build(
            PolicyEngine::load_dir(dir.path()).unwrap(),
            vec![alice()],
            |_| {},
        )
        .await;
        let alice = sign_in_as(&h, Some("alice")).await;
        let body = get(&h, &alice, "/ui/").await.body;
        let guide = section(&body, "request", "who");
        assert!(
            guide.contains("does not describe who may request or approve these roles"),
            "{broken}: {guide}"
        );
        assert!(guide.contains("<h3>db-admin</h3>") && guide.contains("<h3>prod-root</h3>"));
        assert!(!guide.contains("Needs "), "{guide}");
        assert!(guide.contains("<option value=\"db-admin\""), "{guide}");
    }
}

#[tokio::test]
async fn a_request_with_a_ticket_from_on_call_is_approved_through_the_console() {
    let h = console().await;
    let alice = sign_in_as(&h, Some("alice")).await;
    let done = post_form(
        &h,
        &alice,
        "/ui/elevations",
        "role=db-admin&reason=INC-4711+restore+the+replica&ttl_minutes=",
    )
    .await;
    let id = redirected_id(&done);
    let body = get(&h, &alice, done.location()).await.body;
    assert!(
        body.contains("Your request for db-admin was approved"),
        "{body}"
    );
    let grants = section(&body, "grants", "pending");
    assert!(
        grants.contains(&id) && grants.contains("<code>postgres</code>"),
        "{grants}"
    );
    // The preview now includes the role's principal, until the grant ends.
    assert!(section(&body, "now", "grants").contains("<code>postgres</code>"));
    // The same audit row the API writes, saying the console was the door.
    let rows = h.rows("elevation_request");
    let row = rows.last().unwrap();
    assert_eq!(row.outcome, "approved");
    assert_eq!(row.channel.as_deref(), Some("console"));
    assert_eq!(row.reason.as_deref(), Some("INC-4711 restore the replica"));
    assert_eq!(row.granted_principals, ["postgres"]);
}

#[tokio::test]
async fn a_denied_request_shows_the_policy_reasons_and_bad_input_changes_nothing() {
    let h = console().await;
    let carol = sign_in_as(&h, Some("carol")).await;
    let denied = post_form(
        &h,
        &carol,
        "/ui/elevations",
        "role=db-admin&reason=INC-1+please",
    )
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.body);
    assert!(denied.body.contains("Request denied"), "{}", denied.body);
    assert!(
        denied
            .body
            .contains("role db-admin may be requested only by members of dba, sre"),
        "{}",
        denied.body
    );
    let row = h.rows("elevation_request").pop().unwrap();
    assert_eq!(row.outcome, "denied");
    assert_eq!(row.channel.as_deref(), Some("console"));

    let before = h.rows("elevation_request").len();
    for (fields, says) in [
        (
            "role=db-admin&reason=x&ttl_minutes=soon",
            "Minutes must be a whole number",
        ),
        (
            "role=db-admin&reason=x&ttl_minutes=0",
            "Minutes must be a whole number",
        ),
        ("role=no-such&reason=INC-1", "no role no-such is defined"),
    ] {
        let a = post_form(&h, &carol, "/ui/elevations", fields).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{fields}: {}", a.body);
        assert!(a.body.contains(says), "{fields}: {}", a.body);
    }
    // Only the unknown role reached the service (and was audited there).
    assert!(h.rows("elevation_request").len() <= before + 1);
    assert!(
        h.rows("elevation_request")
            .iter()
            .all(|r| r.outcome != "approved" && r.outcome != "pending")
    );
}

#[tokio::test]
async fn only_the_requester_cancels_a_request() {
    let h = console().await;
    let bob = sign_in_as(&h, Some("bob")).await;
    let alice = sign_in_as(&h, Some("alice")).await;
    // Bob has no ticket: his request waits for an approver.
    let id = redirected_id(
        &post_form(
            &h,
            &bob,
            "/ui/elevations",
            "role=db-admin&reason=vacuum+the+big+table",
        )
        .await,
    );
    let body = get(&h, &bob, &format!("/ui/?el={id}")).await.body;
    assert!(body.contains("is waiting for 1 approval"), "{body}");
    assert!(section(&body, "pending", "request").contains(&id), "{body}");

    // Alice cannot withdraw it (she cannot even see it).
    let path = format!("/ui/elevations/{id}/cancel");
    let refused = post_form(&h, &alice, &path, "").await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND, "{}", refused.body);
    assert_eq!(elevation_state(&h, &id), "pending");

    // Bob can.
    let done = post_form(&h, &bob, &path, "comment=done+without+it").await;
    assert_eq!(redirected_id(&done), id);
    let body = get(&h, &bob, done.location()).await.body;
    assert!(body.contains("was withdrawn"), "{body}");
    assert!(section(&body, "pending", "request").contains("No request of yours is waiting"));
    let row = h.rows("elevation_cancel").pop().unwrap();
    assert_eq!(row.outcome, "cancelled");
    assert_eq!(row.channel.as_deref(), Some("console"));
    // Twice is a conflict, not a second change.
    assert_eq!(
        post_form(&h, &bob, &path, "").await.status,
        StatusCode::CONFLICT
    );
}

#[tokio::test]
async fn dropping_my_grant_ends_it_at_once() {
    let h = console().await;
    let alice = sign_in_as(&h, Some("alice")).await;
    let id = redirected_id(
        &post_form(
            &h,
            &alice,
            "/ui/elevations",
            "role=db-admin&reason=CHG-7+migrate",
        )
        .await,
    );
    let done = post_form(&h, &alice, &format!("/ui/elevations/{id}/cancel"), "").await;
    let body = get(&h, &alice, done.location()).await.body;
    assert!(body.contains("Your grant of db-admin has ended"), "{body}");
    assert!(!section(&body, "now", "grants").contains("postgres"));
    assert_eq!(elevation_state(&h, &id), "revoked");
}
