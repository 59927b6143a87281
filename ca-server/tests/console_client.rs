//! The console as a confidential client: with `[ui] client_secret_file` it
//! authenticates at the provider's token endpoint (HTTP Basic), and a
//! provider that wants a secret refuses a console without the right one.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::os::unix::fs::PermissionsExt as _;

use axum::http::StatusCode;
use ca_server::policy::PolicyEngine;
use common::ui::{alice, callback, send, sessions, through_the_provider, with_session};
use common::{Harness, build};

/// A console whose `[ui] client_secret_file` holds `secret` (none when
/// `None`), at a provider that wants `wanted` (a public client when `None`).
async fn console(secret: Option<&str>, wanted: Option<&str>) -> (tempfile::TempDir, Harness) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("console-client-secret");
    if let Some(s) = secret {
        std::fs::write(&file, format!("{s}\n")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let h = build(
        PolicyEngine::load_embedded_default().unwrap(),
        vec![alice()],
        |c| {
            if secret.is_some() {
                c.ui.as_mut().unwrap().client_secret_file = Some(file.clone());
            }
        },
    )
    .await;
    if let Some(w) = wanted {
        assert!(h.idp.require_client_secret(w));
    }
    (dir, h)
}

/// Run a sign-in to its callback: the callback's status and, on success,
/// the session cookie.
async fn sign_in(h: &Harness) -> (StatusCode, Option<String>, String) {
    let (pending, path) = through_the_provider(h).await;
    let done = callback(h, &pending, &path).await;
    (done.status, done.cookie_value("jitssh_session"), done.body)
}

#[tokio::test]
async fn a_confidential_client_signs_in_with_its_secret() {
    let (_dir, h) = console(Some("s3cret: with = and &"), Some("s3cret: with = and &")).await;
    let (status, session, body) = sign_in(&h).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let page = send(
        &h,
        "GET",
        "/ui/",
        Some(&with_session(&session.unwrap())),
        None,
        None,
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
}

#[tokio::test]
async fn a_wrong_or_missing_secret_stores_no_session() {
    for (secret, wanted) in [(Some("wrong"), "s3cret"), (None, "s3cret")] {
        let (_dir, h) = console(secret, Some(wanted)).await;
        let (status, session, body) = sign_in(&h).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{secret:?}: {body}");
        assert!(body.contains("did not accept the sign-in code"), "{body}");
        assert!(session.is_none());
        assert_eq!(sessions(&h), 0);
    }
}
