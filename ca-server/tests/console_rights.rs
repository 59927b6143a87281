//! Who sees what in the console is the policy's `ui_decision`, asked on
//! every request and failing closed: no rule, an undefined answer or one
//! the server cannot read opens nothing, even to a signed-in person.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use axum::http::StatusCode;
use ca_server::policy::{EMBEDDED_FILES, PolicyEngine};
use common::build;
use common::ui::{alice, send, sign_in, with_session};

/// The default policy with `console.rego` replaced by `console` (left out
/// when `None`).
fn policy_with_console(console: Option<&str>) -> (tempfile::TempDir, PolicyEngine) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in EMBEDDED_FILES {
        if name.starts_with("console") {
            continue;
        }
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    if let Some(rego) = console {
        std::fs::write(dir.path().join("console.rego"), rego).unwrap();
    }
    let engine = PolicyEngine::load_dir(dir.path()).unwrap();
    (dir, engine)
}

async fn my_access_with(console: Option<&str>) -> (StatusCode, String) {
    let (_dir, policy) = policy_with_console(console);
    let h = build(policy, vec![alice()], |_| {}).await;
    let id = sign_in(&h).await;
    let page = send(&h, "GET", "/ui/", Some(&with_session(&id)), None, None).await;
    (page.status, page.body)
}

#[tokio::test]
async fn the_default_policy_gives_everyone_their_own_access_and_no_more() {
    let (status, body) = my_access_with(Some(
        EMBEDDED_FILES
            .iter()
            .find(|(n, _)| *n == "console.rego")
            .unwrap()
            .1,
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains(r#"<a href="/ui/" aria-current="page">My access</a>"#),
        "{body}"
    );
    for other in ["/ui/audit", "/ui/revocations", "/ui/policy", "/ui/grants"] {
        assert!(
            !body.contains(&format!("href=\"{other}\"")),
            "{other} in {body}"
        );
    }
}

#[tokio::test]
async fn a_policy_without_ui_decision_shows_nothing() {
    let (status, body) = my_access_with(None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("Not available to you"), "{body}");
    assert!(!body.contains("Active grants"), "{body}");
}

#[tokio::test]
async fn an_undefined_or_unreadable_ui_decision_shows_nothing() {
    for rego in [
        // Undefined for this person.
        "package jitssh\nui_decision := {\"capabilities\": [\"my_access\"]} if { input.identity.kind == \"robot\" }\n",
        // A capability this server does not know spoils the whole answer.
        "package jitssh\nui_decision := {\"capabilities\": [\"my_access\", \"everything\"]}\n",
        // Not the documented shape.
        "package jitssh\nui_decision := [\"my_access\"]\n",
        // An error while deciding.
        "package jitssh\nui_decision := {\"capabilities\": [x]} if { x := to_number(\"my_access\") }\n",
    ] {
        let (status, body) = my_access_with(Some(rego)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{rego}: {body}");
        assert!(!body.contains("Active grants"), "{rego}: {body}");
    }
}
