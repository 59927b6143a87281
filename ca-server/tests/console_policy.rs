//! The console's Policy page in-process: the serving files, hash and test
//! results; "try it" answers what the serving policy answers, is audited by
//! the input's hash, and refuses malformed (400, with the position) and
//! oversized (413) input; a refused reload shows as the last reload; and
//! a person without the `policy` capability gets 403.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use axum::http::StatusCode;
use ca_server::dev::idp::DevUser;
use ca_server::policy::{EMBEDDED_FILES, PolicyEngine, TrialDecision};
use common::ui::{Answer, alice, send, sign_in_as, with_session};
use common::{Harness, build};
use sha2::{Digest as _, Sha256};

fn author() -> DevUser {
    DevUser {
        username: "paula".into(),
        email: "paula@example.com".into(),
        groups: vec!["policy-authors".into()],
    }
}

/// The default policy, copied into a directory (so it can be reloaded).
fn policy_dir() -> (tempfile::TempDir, PolicyEngine) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in EMBEDDED_FILES {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let engine = PolicyEngine::load_dir(dir.path()).unwrap();
    (dir, engine)
}

async fn page(h: &Harness, session: &str) -> Answer {
    send(
        h,
        "GET",
        "/ui/policy",
        Some(&with_session(session)),
        None,
        None,
    )
    .await
}

fn form(csrf: &str, decision: &str, input: &str) -> String {
    let mut u = reqwest::Url::parse("http://form.invalid/").unwrap();
    u.query_pairs_mut()
        .append_pair("csrf", csrf)
        .append_pair("decision", decision)
        .append_pair("input", input);
    u.query().unwrap().to_owned()
}

async fn try_it(h: &Harness, session: &str, body: &str) -> Answer {
    send(
        h,
        "POST",
        "/ui/policy/try",
        Some(&with_session(session)),
        Some(body),
        None,
    )
    .await
}

/// What askama's escaping makes of `text`.
fn escaped(text: &str) -> String {
    text.replace('&', "&#38;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
}

#[tokio::test]
async fn the_page_shows_the_serving_files_hash_and_tests() {
    let (_dir, engine) = policy_dir();
    let hash = engine.policy_hash();
    let h = build(engine, vec![author()], |_| {}).await;
    let paula = sign_in_as(&h, Some("paula")).await;
    let p = page(&h, &paula).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(p.body.contains(&hash), "{}", p.body);
    let rego = EMBEDDED_FILES
        .iter()
        .find(|(n, _)| *n == "jitssh.rego")
        .unwrap();
    assert!(
        p.body.contains(&format!(
            "<code>jitssh.rego</code> <span class=\"muted\">{} bytes",
            rego.1.len()
        )),
        "{}",
        p.body
    );
    assert!(
        !p.body.contains("<code>README.md</code>"),
        "not part of the set"
    );
    assert!(p.body.contains("data.jitssh.test_"), "{}", p.body);
    let report = ca_server::policy::run_embedded_tests().unwrap();
    assert!(p.body.contains(&format!("{} passed", report.passed())));
    assert!(p.body.contains("none since the server started"));
    // The form comes with the user decision's example input.
    assert!(
        p.body
            .contains(&escaped(TrialDecision::User.example_input()))
    );
}

#[tokio::test]
async fn try_it_answers_what_the_serving_policy_answers_and_is_audited() {
    let h = build(
        PolicyEngine::load_embedded_default().unwrap(),
        vec![author()],
        |_| {},
    )
    .await;
    let paula = sign_in_as(&h, Some("paula")).await;
    let csrf = page(&h, &paula).await.csrf();
    for d in TrialDecision::ALL {
        let input = d.example_input();
        let a = try_it(&h, &paula, &form(&csrf, d.name(), input)).await;
        assert_eq!(a.status, StatusCode::OK, "{d:?}: {}", a.body);
        let value: serde_json::Value = serde_json::from_str(input).unwrap();
        let policy = h.state.authority.policy.snapshot();
        let expected = match d {
            TrialDecision::User => policy.evaluate(&value),
            TrialDecision::Host => policy.evaluate_host(&value),
            TrialDecision::Elevation => policy.evaluate_elevation(&value),
            TrialDecision::Approval => policy.evaluate_approval(&value),
        }
        .unwrap()
        .decision
        .unwrap();
        let pretty = serde_json::to_string_pretty(&expected).unwrap();
        assert!(a.body.contains(&escaped(&pretty)), "{d:?}: {}", a.body);
    }
    // The user example: the invariants' verdict and the policy's reasons.
    let input = TrialDecision::User.example_input();
    let a = try_it(&h, &paula, &form(&csrf, "user", input)).await;
    assert!(
        a.body
            .contains("The CA would issue a certificate for alice"),
        "{}",
        a.body
    );
    let rows = h.rows("console_policy_try");
    assert_eq!(rows.len(), 5);
    let last = rows.last().unwrap();
    assert_eq!(last.channel.as_deref(), Some("console"));
    assert_eq!(last.subject.as_deref(), Some("dev|paula"));
    assert_eq!(last.outcome, "granted");
    let details = last.details.as_ref().unwrap();
    assert_eq!(details["decision"], "user");
    assert_eq!(
        details["input_sha256"],
        hex::encode(Sha256::digest(input.as_bytes()))
    );
    assert!(
        !details.to_string().contains("alice@example.com"),
        "not the input itself"
    );
    assert!(h.rows("user_cert").is_empty(), "nothing issued");
}

#[tokio::test]
async fn malformed_or_oversized_input_is_refused_precisely() {
    let h = build(
        PolicyEngine::load_embedded_default().unwrap(),
        vec![author()],
        |_| {},
    )
    .await;
    let paula = sign_in_as(&h, Some("paula")).await;
    let csrf = page(&h, &paula).await.csrf();

    let a = try_it(&h, &paula, &form(&csrf, "user", "{\n  \"identity\": ,\n}")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert!(a.body.contains("is not JSON"), "{}", a.body);
    assert!(a.body.contains("(line 2, column 15)"), "{}", a.body);
    assert!(
        a.body.contains("&#34;identity&#34;: ,"),
        "what was typed stays"
    );

    let a = try_it(&h, &paula, &form(&csrf, "user", "[]")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    let a = try_it(&h, &paula, &form(&csrf, "root", "{}")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert!(a.body.contains("Choose a decision"), "{}", a.body);

    // Over 64 KiB of JSON; then a body over the form's own limit.
    let big = format!("{{\"pad\": \"{}\"}}", "a".repeat(70 * 1024));
    let a = try_it(&h, &paula, &form(&csrf, "user", &big)).await;
    assert_eq!(
        a.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        &a.body[..300]
    );
    assert!(a.body.contains("at most 65536"));
    let huge = form(&csrf, "user", &"\u{e9}".repeat(120 * 1024));
    let a = try_it(&h, &paula, &huge).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(a.body.contains("Form too large"), "{}", a.body);
    assert!(
        h.rows("console_policy_try").is_empty(),
        "nothing was evaluated"
    );

    let a = send(
        &h,
        "GET",
        "/ui/policy?decision=root",
        Some(&with_session(&paula)),
        None,
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = send(
        &h,
        "GET",
        "/ui/policy?decision=host",
        Some(&with_session(&paula)),
        None,
        None,
    )
    .await;
    assert!(
        a.body
            .contains(&escaped(TrialDecision::Host.example_input()))
    );
}

#[tokio::test]
async fn a_refused_reload_is_the_last_reload_shown() {
    let (dir, engine) = policy_dir();
    let serving = engine.policy_hash();
    let h = build(engine, vec![author()], |_| {}).await;
    let paula = sign_in_as(&h, Some("paula")).await;
    std::fs::write(dir.path().join("broken.rego"), "package jitssh\nx := {\n").unwrap();
    assert!(h.state.authority.policy.reload().is_err());
    let p = page(&h, &paula).await;
    assert!(
        p.body.contains("refused, the policy above keeps serving"),
        "{}",
        p.body
    );
    assert!(
        p.body.contains("broken.rego"),
        "the message names the file: {}",
        p.body
    );
    assert!(p.body.contains(&serving), "the old policy still serves");

    // Fixed: a real change reloads and the page says so.
    std::fs::write(dir.path().join("broken.rego"), "package jitssh\nx := 1\n").unwrap();
    h.state.authority.policy.reload().unwrap();
    let p = page(&h, &paula).await;
    assert!(
        p.body.contains("reloaded: a new policy serves"),
        "{}",
        p.body
    );
    assert!(p.body.contains(&h.state.authority.policy.policy_hash()));
    assert!(p.body.contains("<code>broken.rego</code>"));
}

#[tokio::test]
async fn without_the_policy_capability_nothing_is_shown_or_tried() {
    let h = build(
        PolicyEngine::load_embedded_default().unwrap(),
        vec![alice()],
        |_| {},
    )
    .await;
    let alice = sign_in_as(&h, Some("alice")).await;
    let p = page(&h, &alice).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    assert!(!p.body.contains("Try it"));
    // Her own token, from her My access page, on the try-it POST.
    let mine = send(&h, "GET", "/ui/", Some(&with_session(&alice)), None, None).await;
    let a = try_it(&h, &alice, &form(&mine.csrf(), "user", "{}")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let row = h.rows("console_action").pop().unwrap();
    assert_eq!(row.code.as_deref(), Some("console_forbidden"));
    assert!(h.rows("console_policy_try").is_empty());
}
