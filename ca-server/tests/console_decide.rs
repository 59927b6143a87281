//! To decide in-process: an approver sees a requester's pending request
//! with its hash and approves it through the console, with the same
//! service rules and audit rows as the API (self-approval, a stale hash, a
//! person the policy does not make an approver, a forged POST from someone
//! without `decide`, a POST without its CSRF token), and the live-update
//! stream says "changed" when a request arrives and ends with the session.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use ca_server::dev::idp::DevUser;
use ca_server::policy::PolicyEngine;
use common::ui::{Answer, alice, dev_user, send, sign_in_as, with_session};
use common::{AUD, Harness, MintExt as _, build};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// alice requests; bob approves db-admin (dba-leads) but not prod-root;
/// erin may both request and approve db-admin; carol and frank approve
/// both (sre-leads); dave decides nothing.
async fn console() -> Harness {
    build(
        PolicyEngine::load_embedded_default().unwrap(),
        vec![
            alice(),
            dev_user("bob", &["dba-leads"]),
            dev_user("erin", &["dba", "dba-leads"]),
            dev_user("dave", &["developers"]),
            dev_user("carol", &["sre-leads"]),
            dev_user("frank", &["sre-leads"]),
        ],
        |c| c.rate_per_minute = 0,
    )
    .await
}

/// `who` asks for `role` through the API: the request as the API answers.
async fn request(h: &Harness, who: &DevUser, role: &str, reason: &str) -> Value {
    let token = h.idp.id_token_for(who, AUD, None, 300);
    let (s, b) = h
        .json(
            "POST",
            "/v1/elevations",
            Some(&token),
            json!({"role": role, "reason": reason, "ttl_seconds": 1800}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["state"], "pending", "{b}");
    b
}

async fn page(h: &Harness, session: &str, path: &str) -> Answer {
    send(h, "GET", path, Some(&with_session(session)), None, None).await
}

/// POST `form` to `path` with the session's own CSRF token (read from a
/// page it was shown).
async fn post(h: &Harness, session: &str, path: &str, form: &str) -> Answer {
    let csrf = page(h, session, "/ui/").await.csrf();
    send(
        h,
        "POST",
        path,
        Some(&with_session(session)),
        Some(&format!("csrf={csrf}&{form}")),
        None,
    )
    .await
}

fn state_of(h: &Harness, id: &str) -> String {
    let now = common::now();
    h.state
        .authority
        .elevations
        .show(id, now)
        .unwrap()
        .state
        .to_string()
}

#[tokio::test]
async fn an_approver_sees_the_request_with_its_hash_and_approves_it_from_the_console() {
    let h = console().await;
    let asked = request(&h, &alice(), "db-admin", "restore the orders table").await;
    let id = asked["id"].as_str().unwrap();
    let hash = asked["request_hash"].as_str().unwrap();
    let bob = sign_in_as(&h, Some("bob")).await;

    // The list: newest first, linked, with the request's facts.
    let list = page(&h, &bob, "/ui/decide").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    for shown in [
        &format!("href=\"/ui/decide/{id}\""),
        "db-admin for alice@example.com",
        "<code>postgres</code>",
        "restore the orders table",
        "0 of 1 approvals",
        r#"<a href="/ui/decide" aria-current="page">To decide</a>"#,
        "/ui/static/decide.js",
    ] {
        assert!(list.body.contains(shown), "{shown:?} in {}", list.body);
    }
    // The fragment the live page swaps in: the list, not the page.
    let part = page(&h, &bob, "/ui/decide?part=list").await;
    assert_eq!(part.status, StatusCode::OK);
    assert!(part.body.contains(&format!("/ui/decide/{id}")));
    assert!(!part.body.contains("<html"), "{}", part.body);

    // The request in full: who, what, the policy's reasons and the hash,
    // and a form that carries that hash.
    let detail = page(&h, &bob, &format!("/ui/decide/{id}")).await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.body);
    for shown in [
        "alice@example.com",
        "dev|alice",
        h.idp.issuer(),
        "30 min from the final approval",
        "restore the orders table",
        "0 of 1: nobody has approved it yet",
        hash,
        &format!("name=\"request_hash\" value=\"{hash}\""),
        "Approve: <strong>alice@example.com</strong> gets <code>postgres</code> for 30 min.",
    ] {
        assert!(detail.body.contains(shown), "{shown:?} in {}", detail.body);
    }
    for reason in asked["reasons"].as_array().unwrap() {
        let reason = reason.as_str().unwrap();
        assert!(detail.body.contains(reason), "{reason:?}");
    }

    let done = post(
        &h,
        &bob,
        &format!("/ui/decide/{id}/approve"),
        &format!("request_hash={hash}&comment=go+ahead"),
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), format!("/ui/decide?done=approved&id={id}"));
    assert_eq!(state_of(&h, id), "approved");
    let after = page(&h, &bob, done.location()).await;
    assert!(
        after
            .body
            .contains(&format!("You approved {id}: its grant has started.")),
        "{}",
        after.body
    );
    assert!(after.body.contains("Nothing is waiting for your decision."));

    // The same audit row as the API's, saying the console was the channel.
    let rows = h.rows("elevation_approve");
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.outcome, "approved");
    assert_eq!(row.subject.as_deref(), Some("dev|bob"));
    assert_eq!(row.granted_principals, vec!["postgres".to_owned()]);
    let json = serde_json::to_value(row).unwrap();
    assert_eq!(json["channel"], "console", "{json}");
    assert_eq!(json["details"]["comment"], "go ahead", "{json}");
    assert_eq!(json["details"]["request_hash"], hash, "{json}");
}

#[tokio::test]
async fn votes_so_far_show_and_the_last_approval_or_a_denial_decides() {
    let h = console().await;
    let root = request(&h, &alice(), "prod-root", "kernel upgrade on web-7").await;
    let (id, hash) = (
        root["id"].as_str().unwrap(),
        root["request_hash"].as_str().unwrap(),
    );
    let carol = sign_in_as(&h, Some("carol")).await;
    let detail = page(&h, &carol, &format!("/ui/decide/{id}")).await;
    assert!(
        detail
            .body
            .contains("gets <code>root</code> for 30 min, once one more approver agrees."),
        "{}",
        detail.body
    );
    let done = post(
        &h,
        &carol,
        &format!("/ui/decide/{id}/approve"),
        &format!("request_hash={hash}&comment=looks+right"),
    )
    .await;
    assert_eq!(done.location(), format!("/ui/decide?done=recorded&id={id}"));
    assert_eq!(state_of(&h, id), "pending");
    // Hers is recorded: it leaves her list, and a second vote is refused.
    let list = page(&h, &carol, done.location()).await;
    assert!(
        list.body.contains("is recorded; it needs more approvals"),
        "{}",
        list.body
    );
    assert!(
        !list.body.contains(&format!("/ui/decide/{id}\"")),
        "{}",
        list.body
    );

    // frank sees her vote, and his approval completes it.
    let frank = sign_in_as(&h, Some("frank")).await;
    let detail = page(&h, &frank, &format!("/ui/decide/{id}")).await;
    for shown in [
        "1 of 2",
        "<strong>carol@example.com</strong> at ",
        "“looks right”",
        "gets <code>root</code> for 30 min. Deny",
    ] {
        assert!(detail.body.contains(shown), "{shown:?} in {}", detail.body);
    }
    let done = post(
        &h,
        &frank,
        &format!("/ui/decide/{id}/approve"),
        &format!("request_hash={hash}"),
    )
    .await;
    assert_eq!(done.location(), format!("/ui/decide?done=approved&id={id}"));
    assert_eq!(state_of(&h, id), "approved");
    // Decided: no forms any more, and a late vote is refused as not pending.
    let detail = page(&h, &carol, &format!("/ui/decide/{id}")).await;
    assert!(detail.body.contains("no longer waiting"), "{}", detail.body);
    let late = post(
        &h,
        &carol,
        &format!("/ui/decide/{id}/approve"),
        &format!("request_hash={hash}"),
    )
    .await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{}", late.body);
    assert!(late.body.contains("Already decided"), "{}", late.body);

    // A denial ends a request at once.
    let other = request(&h, &alice(), "db-admin", "look around").await;
    let (other_id, other_hash) = (
        other["id"].as_str().unwrap(),
        other["request_hash"].as_str().unwrap(),
    );
    let done = post(
        &h,
        &frank,
        &format!("/ui/decide/{other_id}/deny"),
        &format!("request_hash={other_hash}&comment=use+the+replica"),
    )
    .await;
    assert_eq!(
        done.location(),
        format!("/ui/decide?done=denied&id={other_id}")
    );
    assert_eq!(state_of(&h, other_id), "denied");
    let rows = h.rows("elevation_deny");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].outcome, "denied");
    assert_eq!(rows[0].channel.as_deref(), Some("console"));
}

#[tokio::test]
async fn the_services_rules_hold_in_the_console() {
    let h = console().await;
    let own = request(
        &h,
        &dev_user("erin", &["dba", "dba-leads"]),
        "db-admin",
        "vacuum",
    )
    .await;
    let (own_id, own_hash) = (
        own["id"].as_str().unwrap(),
        own["request_hash"].as_str().unwrap(),
    );
    let erin = sign_in_as(&h, Some("erin")).await;

    // Her own request is not hers to decide: not listed, no form, and a
    // POST is refused as the API refuses it.
    let list = page(&h, &erin, "/ui/decide").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(!list.body.contains(own_id), "{}", list.body);
    let detail = page(&h, &erin, &format!("/ui/decide/{own_id}")).await;
    assert_eq!(detail.status, StatusCode::OK);
    assert!(detail.body.contains("You cannot decide this request"));
    assert!(!detail.body.contains("formaction"), "{}", detail.body);
    let a = post(
        &h,
        &erin,
        &format!("/ui/decide/{own_id}/approve"),
        &format!("request_hash={own_hash}"),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert!(a.body.contains("This is your own request"), "{}", a.body);
    assert_eq!(state_of(&h, own_id), "pending");

    // A hash that is not the request's: what was reviewed is not what is
    // there, so nothing is decided.
    let bob = sign_in_as(&h, Some("bob")).await;
    let stale = format!("sha256:{}", "0".repeat(64));
    let a = post(
        &h,
        &bob,
        &format!("/ui/decide/{own_id}/approve"),
        &format!("request_hash={stale}"),
    )
    .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    assert!(a.body.contains("The request changed"), "{}", a.body);
    assert!(a.body.contains("Open it again"), "{}", a.body);
    assert_eq!(state_of(&h, own_id), "pending");
    // No hash at all: the form did not come from the request's page.
    let a = post(&h, &bob, &format!("/ui/decide/{own_id}/deny"), "comment=no").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(state_of(&h, own_id), "pending");

    // bob approves db-admin, not prod-root: alice's prod-root request is
    // not on his list, and to him it does not exist, as through the API.
    let root = request(&h, &alice(), "prod-root", "kernel upgrade").await;
    let (root_id, root_hash) = (
        root["id"].as_str().unwrap(),
        root["request_hash"].as_str().unwrap(),
    );
    let list = page(&h, &bob, "/ui/decide").await;
    assert!(!list.body.contains(root_id), "{}", list.body);
    assert!(list.body.contains(own_id), "{}", list.body);
    let detail = page(&h, &bob, &format!("/ui/decide/{root_id}")).await;
    assert_eq!(detail.status, StatusCode::NOT_FOUND, "{}", detail.body);
    let a = post(
        &h,
        &bob,
        &format!("/ui/decide/{root_id}/approve"),
        &format!("request_hash={root_hash}"),
    )
    .await;
    let api = h
        .json(
            "POST",
            &format!("/v1/elevations/{root_id}/approve"),
            Some(
                &h.idp
                    .id_token_for(&dev_user("bob", &["dba-leads"]), AUD, None, 300),
            ),
            json!({"request_hash": root_hash}).to_string(),
        )
        .await;
    assert_eq!(a.status, api.0, "the console answers as the API: {}", api.1);
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    assert_eq!(state_of(&h, root_id), "pending");

    // Bad ids and actions: a 404 page, nothing changed.
    for path in [
        "/ui/decide/el_nope".to_owned(),
        format!("/ui/decide/{}", "x".repeat(200)),
        "/ui/decide/%ff%fe".to_owned(),
    ] {
        let a = page(&h, &bob, &path).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}: {}", a.body);
        assert!(a.body.contains("No such request"), "{}", a.body);
    }
    let a = post(&h, &bob, &format!("/ui/decide/{own_id}/explode"), "").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    for (method, path) in [
        ("POST", format!("/ui/decide/{own_id}")),
        ("GET", format!("/ui/decide/{own_id}/approve")),
    ] {
        let a = send(&h, method, &path, Some(&with_session(&bob)), None, None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert!(
            a.body.contains("Page not found"),
            "{method} {path}: {}",
            a.body
        );
    }
    assert_eq!(state_of(&h, own_id), "pending");

    // Each refused decision was audited, from the console.
    let refused: Vec<_> = h
        .rows("elevation_approve")
        .into_iter()
        .chain(h.rows("elevation_deny"))
        .collect();
    assert!(refused.len() >= 3, "{refused:?}");
    for row in &refused {
        assert_ne!(row.outcome, "approved");
    }
    let codes: Vec<_> = refused.iter().filter_map(|r| r.code.clone()).collect();
    for code in ["self_approval", "request_changed"] {
        assert!(codes.iter().any(|c| c == code), "{code} in {codes:?}");
    }
    let console_rows = refused
        .iter()
        .filter(|r| r.channel.as_deref() == Some("console"))
        .count();
    assert!(console_rows >= 3, "{refused:?}");
}

#[tokio::test]
async fn without_decide_nothing_shows_and_a_forged_post_is_refused_and_audited() {
    let h = console().await;
    let asked = request(&h, &alice(), "db-admin", "restore").await;
    let (id, hash) = (
        asked["id"].as_str().unwrap(),
        asked["request_hash"].as_str().unwrap(),
    );
    let dave = sign_in_as(&h, Some("dave")).await;

    let home = page(&h, &dave, "/ui/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(!home.body.contains("/ui/decide"), "{}", home.body);
    for path in [
        "/ui/decide".to_owned(),
        format!("/ui/decide/{id}"),
        "/ui/decide?part=list".to_owned(),
        "/ui/decide/events".to_owned(),
    ] {
        let a = page(&h, &dave, &path).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path}: {}", a.body);
        assert!(!a.body.contains(id), "{path}");
    }

    // His own valid CSRF token does not make the POST his to make.
    let a = post(
        &h,
        &dave,
        &format!("/ui/decide/{id}/approve"),
        &format!("request_hash={hash}"),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert_eq!(state_of(&h, id), "pending");
    let rows = h.rows("console_action");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].code.as_deref(), Some("console_forbidden"));
    assert_eq!(rows[0].subject.as_deref(), Some("dev|dave"));
    assert_eq!(rows[0].channel.as_deref(), Some("console"));
    assert_eq!(
        rows[0].details.as_ref().unwrap()["path"],
        format!("/ui/decide/{id}/approve")
    );
    assert!(h.rows("elevation_approve").is_empty());

    // An approver's POST without the token (a cross-site form) is refused
    // before anything is decided, and so is one from another origin.
    let bob = sign_in_as(&h, Some("bob")).await;
    let a = send(
        &h,
        "POST",
        &format!("/ui/decide/{id}/approve"),
        Some(&with_session(&bob)),
        Some(&format!("request_hash={hash}")),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert!(a.body.contains("Form refused"), "{}", a.body);
    let csrf = page(&h, &bob, "/ui/").await.csrf();
    let a = send(
        &h,
        "POST",
        &format!("/ui/decide/{id}/approve"),
        Some(&with_session(&bob)),
        Some(&format!("csrf={csrf}&request_hash={hash}")),
        Some("https://evil.example"),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert_eq!(state_of(&h, id), "pending");
    assert!(h.rows("elevation_approve").is_empty());
}

/// The next chunk of an event stream, within 10 s; `None` when it ended.
async fn next_chunk(body: &mut Body) -> Option<String> {
    let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("an event within 10 s")?
        .unwrap();
    Some(String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap())
}

async fn open_events(h: &Harness, session: &str) -> (StatusCode, axum::http::HeaderMap, Body) {
    let req = Request::get("/ui/decide/events")
        .header(header::COOKIE, with_session(session))
        .body(Body::empty())
        .unwrap();
    let resp = h.router.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    (parts.status, parts.headers, body)
}

#[tokio::test]
async fn the_event_stream_says_changed_when_a_request_arrives_and_ends_with_the_session() {
    let h = console().await;
    let bob = sign_in_as(&h, Some("bob")).await;
    let (status, headers, mut body) = open_events(&h, &bob).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    let first = next_chunk(&mut body).await.unwrap();
    assert!(first.contains("retry: 3000"), "{first:?}");
    let streams = || h.state.console.as_ref().unwrap().streams_open();
    assert_eq!(streams(), 1);

    // A request arrives: the stream says so (nothing about it, only that
    // something changed).
    let asked = request(&h, &alice(), "db-admin", "restore").await;
    let event = next_chunk(&mut body).await.unwrap();
    assert!(event.contains("event: change"), "{event:?}");
    assert!(!event.contains(asked["id"].as_str().unwrap()), "{event:?}");

    // The session ends (sign-out); at the next change the stream checks
    // it, says so and ends.
    let csrf = page(&h, &bob, "/ui/").await.csrf();
    let out = send(
        &h,
        "POST",
        "/ui/logout",
        Some(&with_session(&bob)),
        Some(&format!("csrf={csrf}")),
        None,
    )
    .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    request(&h, &alice(), "prod-root", "kernel upgrade").await;
    let event = next_chunk(&mut body).await.unwrap();
    assert!(event.contains("event: ended"), "{event:?}");
    assert_eq!(next_chunk(&mut body).await, None, "the stream ended");
    drop(body);
    assert_eq!(streams(), 0, "its place is free");
    // A stream cannot be opened without a live session.
    let (status, _, _) = open_events(&h, &bob).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn holding_a_stream_does_not_keep_an_idle_session_alive() {
    let h = console().await;
    let bob = sign_in_as(&h, Some("bob")).await;
    let store = h.state.console.as_ref().unwrap().sessions();
    let seen = || store.get(&bob).unwrap().expect("the session").last_seen;
    // Two minutes without a page view: the next page view records activity.
    let quiet = common::now() - 120;
    h.state
        .authority
        .audit
        .db()
        .with(|c| {
            c.execute(
                "UPDATE console_sessions SET last_seen = $1",
                &ca_server::params![quiet],
            )
        })
        .unwrap();
    assert_eq!(seen(), quiet);
    let (status, _, mut body) = open_events(&h, &bob).await;
    assert_eq!(status, StatusCode::OK);
    next_chunk(&mut body).await.unwrap();
    request(&h, &alice(), "db-admin", "restore").await;
    assert!(
        next_chunk(&mut body)
            .await
            .unwrap()
            .contains("event: change")
    );
    assert_eq!(
        seen(),
        quiet,
        "opening and holding the stream is not activity"
    );
    // A page view is (so the line above could have failed).
    page(&h, &bob, "/ui/decide?part=list").await;
    assert!(seen() > quiet);
}

#[tokio::test]
async fn a_change_made_on_another_replica_reaches_this_ones_watchers() {
    common::on_postgres(async {
        let h = console().await;
        // A second replica on the same database, with its background work
        // (where the poll of the others' changes runs).
        let other = ca_server::serve::build_authority(
            &h.config,
            std::sync::Arc::new(PolicyEngine::load_embedded_default().unwrap()),
        )
        .unwrap();
        other.elevations.spawn_background();
        let mut watching = other.elevations.changes();
        let poll = ca_server::elevation::REPLICA_POLL;
        // Let it read the state once, then change it on the first replica.
        tokio::time::sleep(poll + Duration::from_secs(1)).await;
        assert!(!watching.has_changed().unwrap(), "nothing changed yet");
        request(&h, &alice(), "db-admin", "restore").await;
        tokio::time::timeout(poll * 3, watching.changed())
            .await
            .expect("the other replica noticed within a few polls")
            .unwrap();
    })
    .await;
}
