//! The web console in-process: sign-in through the dev provider's
//! authorization endpoint, the session cookie's flags, the headers of every
//! console answer, CSRF on POST, logout and expiry ending sessions
//! server-side.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use ca_server::policy::PolicyEngine;
use common::ui::{alice, callback, send, sessions, sign_in, through_the_provider, with_session};
use common::{AUD, Harness, MintExt as _, build};
use serde_json::json;

async fn console(tweak: impl FnOnce(&mut ca_server::config::Config)) -> Harness {
    build(
        PolicyEngine::load_embedded_default().unwrap(),
        vec![alice()],
        tweak,
    )
    .await
}

#[tokio::test]
async fn without_a_session_every_page_sends_you_to_sign_in() {
    let h = console(|_| {}).await;
    let audit_rows = h.state.authority.audit.verify().unwrap().rows;
    // Every page and every action of the console, each of its routes.
    for (method, path) in [
        ("GET", "/ui/"),
        ("GET", "/ui"),
        ("POST", "/ui/logout"),
        ("GET", "/ui/decide"),
        ("GET", "/ui/decide?part=list"),
        ("GET", "/ui/decide/events"),
        ("GET", "/ui/decide/el_x"),
        ("POST", "/ui/decide/el_x/approve"),
        ("POST", "/ui/decide/el_x/deny"),
        ("POST", "/ui/elevations"),
        ("POST", "/ui/elevations/el_x/cancel"),
        ("GET", "/ui/grants"),
        ("POST", "/ui/grants/el_x/end"),
        ("GET", "/ui/audit"),
        ("GET", "/ui/audit/1"),
        ("GET", "/ui/audit/charts"),
        ("GET", "/ui/audit/export?format=csv"),
        ("POST", "/ui/audit/verify"),
        ("GET", "/ui/revocations"),
        ("POST", "/ui/revocations"),
        ("GET", "/ui/policy"),
        ("POST", "/ui/policy/try"),
    ] {
        let a = send(&h, method, path, None, Some("csrf=x"), None).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{method} {path}");
        assert!(
            a.location().starts_with("/ui/login") || a.location() == "/ui/",
            "{method} {path}: {}",
            a.location()
        );
    }
    // A made-up session id opens nothing, and the cookie is cleared.
    let a = send(&h, "GET", "/ui/", Some(&with_session("forged")), None, None).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.location(), "/ui/login?ended=1");
    assert!(
        a.set_cookie("jitssh_session")
            .unwrap()
            .contains("Max-Age=0")
    );
    // The sign-in page itself and the stylesheet need none.
    assert_eq!(
        send(&h, "GET", "/ui/login", None, None, None).await.status,
        StatusCode::OK
    );
    let css = send(&h, "GET", "/ui/static/console.css", None, None, None).await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(
        css.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert_eq!(sessions(&h), 0, "nothing stored before a sign-in");
    assert_eq!(
        h.state.authority.audit.verify().unwrap().rows,
        audit_rows,
        "nothing audited either"
    );
}

#[tokio::test]
async fn signing_in_shows_my_identity_grants_and_pending_requests() {
    let h = console(|_| {}).await;
    // One auto-approved grant, one request waiting, through the API.
    let token = h.idp.id_token_for(&alice(), AUD, None, 300);
    let (s, b) = h
        .json(
            "POST",
            "/v1/elevations",
            Some(&token),
            json!({"role": "db-admin", "reason": "INC-42 disk full", "ttl_seconds": 1800})
                .to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["state"], "approved", "{b}");
    let (s, b) = h
        .json(
            "POST",
            "/v1/elevations",
            Some(&token),
            json!({"role": "prod-root", "reason": "look at <script>alert(1)</script> logs"})
                .to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["state"], "pending", "{b}");

    let id = sign_in(&h).await;
    assert_eq!(sessions(&h), 1);
    let page = send(&h, "GET", "/ui/", Some(&with_session(&id)), None, None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    for shown in [
        "My access",
        "<code>alice</code>",
        h.idp.issuer(),
        "db-admin",
        "30 min",
        "postgres",
        "prod-root",
        "0 of 2 approvals",
        "dev|alice",
        "Sign out",
    ] {
        assert!(
            page.body.contains(shown),
            "{shown:?} missing from\n{}",
            page.body
        );
    }
    // Text from people is escaped, never markup.
    assert!(
        page.body.contains("&#60;script&#62;") || page.body.contains("&lt;script&gt;"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script>alert"));
    // The sign-in is audited.
    let rows = h.rows("console_signin");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].subject.as_deref(), Some("dev|alice"));
}

#[tokio::test]
async fn the_session_cookie_is_httponly_lax_and_scoped_to_the_console() {
    let h = console(|_| {}).await;
    let start = send(&h, "GET", "/ui/login/start", None, None, None).await;
    let id = sign_in(&h).await;
    assert_eq!(id.len(), 43, "32 random bytes");
    // Loopback plain HTTP (dev): no Secure, which the browser would refuse there.
    let start_cookie = start.set_cookie("jitssh_login").unwrap();
    for flag in ["Path=/ui", "HttpOnly", "SameSite=Lax", "Max-Age=600"] {
        assert!(start_cookie.contains(flag), "{start_cookie}");
    }
    assert!(!start_cookie.contains("Secure"), "{start_cookie}");
    // Only the hash of the id is stored.
    let db = h.state.authority.audit.db().clone();
    let stored: Vec<String> = db
        .with(|c| {
            Ok(c.query("SELECT id_hash FROM console_sessions", &[])?
                .into_iter()
                .map(|r| r.text(0).unwrap())
                .collect())
        })
        .unwrap();
    assert_eq!(stored, vec![ca_server::console::session::id_hash(&id)]);
    assert!(!stored.contains(&id));

    // Behind https: Secure too.
    let h = console(|c| {
        c.ui.as_mut().unwrap().public_url = reqwest::Url::parse("https://ca.example.com/").unwrap();
    })
    .await;
    let start = send(&h, "GET", "/ui/login/start", None, None, None).await;
    let cookie = start.set_cookie("jitssh_login").unwrap();
    for flag in ["Path=/ui", "HttpOnly", "SameSite=Lax", "Secure"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(
        start
            .location()
            .contains("redirect_uri=https%3A%2F%2Fca.example.com%2Fui%2Fcallback"),
        "{}",
        start.location()
    );
    assert!(
        start
            .headers
            .contains_key(header::STRICT_TRANSPORT_SECURITY)
    );
}

#[tokio::test]
async fn every_console_answer_carries_the_security_headers() {
    let h = console(|_| {}).await;
    let id = sign_in(&h).await;
    let me = with_session(&id);
    let answers = vec![
        (
            "/ui/login",
            send(&h, "GET", "/ui/login", None, None, None).await,
        ),
        (
            "/ui/ no session",
            send(&h, "GET", "/ui/", None, None, None).await,
        ),
        ("/ui/", send(&h, "GET", "/ui/", Some(&me), None, None).await),
        (
            "/ui/static/console.css",
            send(&h, "GET", "/ui/static/console.css", None, None, None).await,
        ),
        (
            "/ui/nope",
            send(&h, "GET", "/ui/nope", Some(&me), None, None).await,
        ),
        (
            "/ui/callback",
            send(&h, "GET", "/ui/callback?code=x&state=y", None, None, None).await,
        ),
        (
            "/ui/login/start",
            send(&h, "GET", "/ui/login/start", None, None, None).await,
        ),
        (
            "/ui/logout forged",
            send(
                &h,
                "POST",
                "/ui/logout",
                Some(&me),
                Some("csrf=forged"),
                None,
            )
            .await,
        ),
        ("/ui", send(&h, "GET", "/ui", None, None, None).await),
    ];
    for (what, a) in &answers {
        let csp = a.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        for part in [
            "default-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'self'",
            "object-src 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(part), "{what}: {csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{what}: {csp}"
        );
        assert_eq!(a.headers[header::REFERRER_POLICY], "no-referrer", "{what}");
        assert_eq!(
            a.headers[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff",
            "{what}"
        );
        assert_eq!(a.headers[header::X_FRAME_OPTIONS], "DENY", "{what}");
        if !what.contains("static") {
            assert_eq!(a.headers[header::CACHE_CONTROL], "no-store", "{what}");
        }
    }
    // Pages are HTML without inline script or style.
    let page = &answers[2].1;
    assert!(
        page.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        !page.body.contains("<script") && !page.body.contains("style="),
        "{}",
        page.body
    );
    // The API is untouched by them.
    let (_, _, api) = h.request("GET", "/healthz", None, Body::empty()).await;
    assert!(!api.contains_key(header::CONTENT_SECURITY_POLICY));
}

#[tokio::test]
async fn a_post_without_the_right_csrf_token_or_from_another_origin_is_refused() {
    let h = console(|_| {}).await;
    let id = sign_in(&h).await;
    let me = with_session(&id);
    let csrf = send(&h, "GET", "/ui/", Some(&me), None, None).await.csrf();
    let another = sign_in(&h).await;
    let theirs = send(&h, "GET", "/ui/", Some(&with_session(&another)), None, None)
        .await
        .csrf();
    assert_ne!(csrf, theirs, "a token belongs to one session");
    for (form, origin) in [
        (None, None),
        (Some(String::new()), None),
        (Some("csrf=".to_owned()), None),
        (Some("csrf=forged".to_owned()), None),
        (Some(format!("csrf={theirs}")), None),
        (Some(format!("csrf={}", &csrf[..42])), None),
        (Some(format!("csrf={csrf}")), Some("https://evil.example")),
        (Some("csrf=forged".to_owned()), Some("null")),
    ] {
        let a = send(&h, "POST", "/ui/logout", Some(&me), form.as_deref(), origin).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{form:?} {origin:?}");
        assert!(a.body.contains("Form refused"));
    }
    // None of those ended the session.
    assert_eq!(
        send(&h, "GET", "/ui/", Some(&me), None, None).await.status,
        StatusCode::OK
    );
    assert_eq!(sessions(&h), 2);
    // The right token from our own origin does.
    let ours = "http://127.0.0.1:0";
    let a = send(
        &h,
        "POST",
        "/ui/logout",
        Some(&me),
        Some(&format!("csrf={csrf}")),
        Some(ours),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
}

#[tokio::test]
async fn logout_ends_the_session_server_side() {
    let h = console(|_| {}).await;
    let id = sign_in(&h).await;
    let me = with_session(&id);
    let csrf = send(&h, "GET", "/ui/", Some(&me), None, None).await.csrf();
    let out = send(
        &h,
        "POST",
        "/ui/logout",
        Some(&me),
        Some(&format!("csrf={csrf}")),
        None,
    )
    .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), "/ui/login?signed_out=1");
    assert!(
        out.set_cookie("jitssh_session")
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(sessions(&h), 0, "the row is gone");
    // A kept copy of the cookie opens nothing.
    let again = send(&h, "GET", "/ui/", Some(&me), None, None).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    assert!(again.location().starts_with("/ui/login"));
    let page = send(&h, "GET", "/ui/login?signed_out=1", None, None, None).await;
    assert!(page.body.contains("You are signed out."));
}

#[tokio::test]
async fn an_idle_session_ends() {
    let h = console(|c| c.ui.as_mut().unwrap().idle_timeout = Duration::from_secs(2)).await;
    let me = with_session(&sign_in(&h).await);
    assert_eq!(
        send(&h, "GET", "/ui/", Some(&me), None, None).await.status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let a = send(&h, "GET", "/ui/", Some(&me), None, None).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.location(), "/ui/login?ended=1");
    assert_eq!(sessions(&h), 0);
}

#[tokio::test]
async fn a_busy_session_still_ends_at_its_maximum_age() {
    let h = console(|c| {
        let ui = c.ui.as_mut().unwrap();
        ui.idle_timeout = Duration::from_secs(3);
        // 1.5 s of slack for a loaded machine before the last OK answer.
        ui.max_session = Duration::from_secs(6);
    })
    .await;
    let me = with_session(&sign_in(&h).await);
    for _ in 0..3 {
        assert_eq!(
            send(&h, "GET", "/ui/", Some(&me), None, None).await.status,
            StatusCode::OK
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    assert_eq!(
        send(&h, "GET", "/ui/", Some(&me), None, None).await.status,
        StatusCode::OK,
        "used within its idle timeout"
    );
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let a = send(&h, "GET", "/ui/", Some(&me), None, None).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "past max_session");
    assert_eq!(sessions(&h), 0);
}

#[tokio::test]
async fn a_callback_this_browser_did_not_begin_stores_nothing() {
    let h = console(|_| {}).await;
    // No pending cookie.
    let a = send(&h, "GET", "/ui/callback?code=x&state=y", None, None, None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.contains("Sign-in expired"));
    // Someone else's pending sign-in (a forged or another browser's state).
    let start = send(&h, "GET", "/ui/login/start", None, None, None).await;
    let pending = start.cookie_value("jitssh_login").unwrap();
    let a = send(
        &h,
        "GET",
        "/ui/callback?code=x&state=not-mine",
        Some(&format!("jitssh_login={pending}")),
        None,
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    // A tampered cookie.
    let tampered = format!("jitssh_login=A{}", &pending[1..]);
    let state = pending.split('.').next().unwrap();
    let a = send(
        &h,
        "GET",
        &format!("/ui/callback?code=x&state={state}"),
        Some(&tampered),
        None,
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    // The right state with a code the provider never gave.
    let a = send(
        &h,
        "GET",
        &format!("/ui/callback?code=made-up&state={state}"),
        Some(&format!("jitssh_login={pending}")),
        None,
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(sessions(&h), 0);
    assert!(h.rows("console_signin").is_empty());
}

#[tokio::test]
async fn revoking_the_person_ends_their_session() {
    let h = console(|_| {}).await;
    let me = with_session(&sign_in(&h).await);
    assert_eq!(
        send(&h, "GET", "/ui/", Some(&me), None, None).await.status,
        StatusCode::OK
    );
    let revocations = &h.state.authority.revocations;
    revocations
        .store()
        .revoke(
            &ca_server::revocation::Target::Subject {
                issuer: h.idp.issuer().to_owned(),
                subject: alice().subject(),
            },
            Some("left the company"),
            common::now(),
            3600,
        )
        .unwrap();
    revocations.refresh(common::now()).unwrap();
    let a = send(&h, "GET", "/ui/", Some(&me), None, None).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.body.contains("Your access was revoked"), "{}", a.body);
    assert_eq!(sessions(&h), 0, "the row is gone");
    // Signing in again is refused before a session is stored.
    let (pending, path) = through_the_provider(&h).await;
    let a = callback(&h, &pending, &path).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(sessions(&h), 0);
}
