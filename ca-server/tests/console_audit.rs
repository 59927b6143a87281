//! The console's Audit pages, in-process on SQLite and PostgreSQL: filters
//! narrow to exactly the matching events, keyset pages neither skip nor
//! repeat (also when a page stops at its scan bound), bad filters are a 400
//! that searches nothing, an event's chain link is recomputed, chain
//! verification tells an intact log from a tampered one and runs one at a
//! time, exports parse and neutralise spreadsheet formulas, charts count,
//! and only auditors get any of it.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use axum::http::StatusCode;
use ca_core::audit::AuditEvent;
use ca_server::audit::{Cursor, Filter, StoredEvent};
use ca_server::dev::idp::DevUser;
use ca_server::policy::PolicyEngine;
use common::ui::{Answer, alice, send, sign_in_as, with_session};
use common::{Harness, build, now};

/// The provider's auditor: in the default policy's `security-audit` group.
fn audra() -> DevUser {
    DevUser {
        username: "audra".into(),
        email: "audra@example.com".into(),
        groups: vec!["security-audit".into()],
    }
}

async fn harness() -> Harness {
    build(
        PolicyEngine::load_embedded_default().unwrap(),
        vec![alice(), audra()],
        |_| {},
    )
    .await
}

/// Event `n` of the seeded log: a mix of kinds, outcomes, people, serials
/// and times (one a minute, ending now).
fn seeded(n: u64, base: u64) -> AuditEvent {
    let elevation = n.is_multiple_of(3);
    let denied = n.is_multiple_of(4);
    let who = n % 5;
    AuditEvent {
        time: base + n * 60,
        action: if elevation {
            "elevation_request"
        } else {
            "user_cert"
        }
        .into(),
        outcome: if denied { "denied" } else { "issued" }.into(),
        code: denied.then(|| {
            if n.is_multiple_of(8) {
                "policy_denied"
            } else {
                "rate_limited"
            }
            .into()
        }),
        issuer: Some("https://idp.example".into()),
        subject: Some(format!("user-{who}")),
        email: (who != 0).then(|| format!("u{who}@example.com")),
        serial: (!elevation && !denied).then(|| (1_000 + n).to_string()),
        granted_principals: if elevation || denied {
            vec![]
        } else {
            vec![format!("p{who}")]
        },
        reason: Some(if n == 7 {
            "=cmd|' /C calc'!A0".into()
        } else {
            format!("ticket {n}")
        }),
        details: elevation.then(
            || serde_json::json!({"role": if n.is_multiple_of(2) { "db-admin" } else { "prod-root" }}),
        ),
        ..AuditEvent::default()
    }
}

const SEEDED: u64 = 130;

/// Seed the log and sign the auditor in: the session cookie.
async fn seeded_auditor(h: &Harness) -> String {
    let base = now() - SEEDED * 60 - 120;
    for n in 1..=SEEDED {
        h.state
            .authority
            .audit
            .append(seeded(n, base), None)
            .await
            .unwrap();
    }
    with_session(&sign_in_as(h, Some("audra")).await)
}

fn all(h: &Harness) -> Vec<StoredEvent> {
    h.state.authority.audit.list(&Filter::default()).unwrap()
}

/// The seqs a results page lists, in order.
fn seqs(page: &Answer) -> Vec<u64> {
    let re = regex::Regex::new(r#"data-label="\#"><a href="/ui/audit/(\d+)""#).unwrap();
    re.captures_iter(&page.body)
        .map(|c| c[1].parse().unwrap())
        .collect()
}

fn link(page: &Answer, rel: &str) -> Option<String> {
    let re = regex::Regex::new(&format!(r#"<a href="([^"]+)" rel="{rel}">"#)).unwrap();
    re.captures(&page.body)
        .map(|c| c[1].replace("&#38;", "&").replace("&amp;", "&"))
}

/// Every page of a search, following "older" from `first`: the seqs.
async fn walk(h: &Harness, cookie: &str, first: &str) -> (Vec<u64>, Answer) {
    let mut out = Vec::new();
    let mut at = first.to_owned();
    for _ in 0..50 {
        let page = send(h, "GET", &at, Some(cookie), None, None).await;
        assert_eq!(page.status, StatusCode::OK, "{at}: {}", page.body);
        out.extend(seqs(&page));
        match link(&page, "next") {
            Some(next) => at = next,
            None => return (out, page),
        }
    }
    panic!("more than 50 pages");
}

/// Which events a search should find.
type Keep = Box<dyn Fn(&AuditEvent) -> bool>;

fn newest_first(h: &Harness, keep: impl Fn(&AuditEvent) -> bool) -> Vec<u64> {
    let mut v: Vec<u64> = all(h)
        .iter()
        .filter(|r| keep(&r.event))
        .map(|r| r.seq)
        .collect();
    v.reverse();
    v
}

async fn filters_narrow_and_pages_neither_skip_nor_repeat() {
    let h = harness().await;
    let cookie = seeded_auditor(&h).await;

    // No filter: every event, newest first, over three pages.
    let (got, last) = walk(&h, &cookie, "/ui/audit").await;
    assert_eq!(got, newest_first(&h, |_| true));
    assert!(got.len() > 100, "{}", got.len());
    // And back again from the last page through "newer".
    let mut back = seqs(&last);
    let mut page = last;
    while let Some(newer) = link(&page, "prev") {
        page = send(&h, "GET", &newer, Some(&cookie), None, None).await;
        let mut these = seqs(&page);
        these.extend(back);
        back = these;
    }
    assert_eq!(back, got, "newer pages lead back to the first without gaps");

    let base = all(&h)[0].event.time;
    let cases: Vec<(String, Keep)> = vec![
        (
            "person=user-2".into(),
            Box::new(|e: &AuditEvent| e.subject.as_deref() == Some("user-2")),
        ),
        (
            "person=u3%40example.com".into(),
            Box::new(|e: &AuditEvent| e.email.as_deref() == Some("u3@example.com")),
        ),
        (
            "kind=elevation_request".into(),
            Box::new(|e: &AuditEvent| e.action == "elevation_request"),
        ),
        (
            "outcome=denied".into(),
            Box::new(|e: &AuditEvent| e.outcome == "denied"),
        ),
        (
            "serial=1010".into(),
            Box::new(|e: &AuditEvent| e.serial.as_deref() == Some("1010")),
        ),
        (
            format!("from={}&to={}", base + 60 * 30, base + 60 * 90),
            Box::new(move |e: &AuditEvent| e.time >= base + 60 * 30 && e.time < base + 60 * 90),
        ),
        (
            format!(
                "person=user-1&outcome=issued&kind=user_cert&from={}",
                base + 60 * 20
            ),
            Box::new(move |e: &AuditEvent| {
                e.subject.as_deref() == Some("user-1")
                    && e.outcome == "issued"
                    && e.action == "user_cert"
                    && e.time >= base + 60 * 20
            }),
        ),
    ];
    for (query, keep) in cases {
        let expected = newest_first(&h, keep);
        assert!(!expected.is_empty(), "{query} matches something");
        let (got, _) = walk(&h, &cookie, &format!("/ui/audit?{query}")).await;
        assert_eq!(got, expected, "{query}");
    }
    // Nothing matches: said in words.
    let none = send(
        &h,
        "GET",
        "/ui/audit?person=nobody",
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert_eq!(none.status, StatusCode::OK);
    assert!(
        none.body.contains("No event matches these filters"),
        "{}",
        none.body
    );
}

/// The store's page bound: with a window of a few rows, pages stop early,
/// say what they searched, and the walk still finds every match once.
async fn a_bounded_scan_continues_where_it_stopped() {
    let h = harness().await;
    let _ = seeded_auditor(&h).await;
    let store = &h.state.authority.audit;
    for (filter, keep) in [
        (
            Filter {
                outcome: Some("denied".into()),
                ..Filter::default()
            },
            Box::new(|e: &AuditEvent| e.outcome == "denied") as Keep,
        ),
        (
            Filter {
                subject: Some("user-4".into()),
                action: Some("user_cert".into()),
                ..Filter::default()
            },
            Box::new(|e: &AuditEvent| {
                e.subject.as_deref() == Some("user-4") && e.action == "user_cert"
            }),
        ),
    ] {
        let expected = newest_first(&h, keep);
        let mut got = Vec::new();
        let mut cursor = None;
        let mut stopped_early = 0;
        for _ in 0..500 {
            let page = store.search(&filter, cursor, 4, 7).unwrap();
            if page.searched.is_some() {
                stopped_early += 1;
            }
            got.extend(page.rows.iter().map(|r| r.seq));
            match page.older {
                Some(c) => cursor = Some(Cursor::Older(c)),
                None => break,
            }
        }
        assert_eq!(got, expected, "{filter:?}");
        assert!(
            stopped_early > 0,
            "{filter:?}: the window bound was reached"
        );
    }
}

async fn bad_filters_are_a_400_that_says_what_to_type() {
    let h = harness().await;
    let cookie = seeded_auditor(&h).await;
    for (query, says) in [
        ("serial=12ab", "decimal number"),
        ("from=2026-02-30", "UTC date and time"),
        ("from=2026-12-07&to=2026-12-06", "must be after its start"),
        ("kind=User%20Cert", "lowercase letters"),
        ("before=-1", "start again from the first page"),
        ("person=a%01b", "subject or an email"),
    ] {
        let page = send(
            &h,
            "GET",
            &format!("/ui/audit?{query}"),
            Some(&cookie),
            None,
            None,
        )
        .await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(
            page.body.contains("Nothing was searched"),
            "{query}: {}",
            page.body
        );
        assert!(page.body.contains(says), "{query}: {}", page.body);
        assert!(seqs(&page).is_empty(), "{query}");
    }
    for (path, status) in [
        ("/ui/audit/x1", StatusCode::BAD_REQUEST),
        ("/ui/audit/99999999", StatusCode::NOT_FOUND),
        ("/ui/audit/export?format=xlsx", StatusCode::BAD_REQUEST),
        ("/ui/audit/export", StatusCode::BAD_REQUEST),
        ("/ui/audit/charts?window=year", StatusCode::BAD_REQUEST),
    ] {
        let page = send(&h, "GET", path, Some(&cookie), None, None).await;
        assert_eq!(page.status, status, "{path}: {}", page.body);
    }
}

/// Drop the append-only triggers and run `sql` on the CA's database.
fn tamper(h: &Harness, sql: &str) {
    use ca_server::db::Backend;
    let db = h.config.database.open().unwrap();
    let drop = match db.backend() {
        Backend::Sqlite => "DROP TRIGGER audit_no_update",
        Backend::Postgres => "DROP TRIGGER audit_append_only ON audit",
    };
    db.with(|c| c.batch(&format!("{drop}; {sql}"))).unwrap();
}

async fn an_event_shows_its_chain_link_and_verify_tells_intact_from_tampered() {
    let h = harness().await;
    let cookie = seeded_auditor(&h).await;
    let rows = all(&h);
    let (four, five) = (&rows[3], &rows[4]);

    let page = send(&h, "GET", "/ui/audit/5", Some(&cookie), None, None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    for shown in [
        "Event 5",
        five.hash.as_str(),
        four.hash.as_str(),
        "Verifies: its hash is its content",
        "&#34;reason&#34;: &#34;ticket 5&#34;",
        r#"href="/ui/audit/4""#,
        r#"href="/ui/audit/6">next event"#,
    ] {
        assert!(page.body.contains(shown), "{shown} missing: {}", page.body);
    }
    // The newest event links back but not forward (no link to a 404).
    let newest = rows.last().unwrap().seq;
    let last = send(
        &h,
        "GET",
        &format!("/ui/audit/{newest}"),
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert_eq!(last.status, StatusCode::OK, "{}", last.body);
    assert!(!last.body.contains("next event"), "{}", last.body);
    assert!(
        last.body
            .contains(&format!(r#"href="/ui/audit/{}""#, newest - 1)),
        "{}",
        last.body
    );

    let csrf = page.csrf();
    let verify = |cookie: String, csrf: String| {
        let h = &h;
        async move {
            send(
                h,
                "POST",
                "/ui/audit/verify",
                Some(&cookie),
                Some(&format!("csrf={csrf}")),
                None,
            )
            .await
        }
    };
    let intact = verify(cookie.clone(), csrf.clone()).await;
    assert_eq!(intact.status, StatusCode::OK, "{}", intact.body);
    assert!(
        intact.body.contains("The chain is intact"),
        "{}",
        intact.body
    );
    assert!(
        intact
            .body
            .contains(&format!("All {} events verified", all(&h).len())),
        "{}",
        intact.body
    );

    // One at a time: while a verification runs, another is refused.
    let running = h
        .state
        .console
        .as_ref()
        .unwrap()
        .jobs
        .verify
        .try_take()
        .unwrap();
    let busy = verify(cookie.clone(), csrf.clone()).await;
    assert_eq!(busy.status, StatusCode::CONFLICT);
    assert!(
        busy.body.contains("A verification is already running"),
        "{}",
        busy.body
    );
    drop(running);

    tamper(
        &h,
        "UPDATE audit SET event = replace(event, 'ticket 9', 'ticket 0') WHERE seq = 9",
    );
    let broken = verify(cookie.clone(), csrf).await;
    assert_eq!(broken.status, StatusCode::OK);
    assert!(
        broken.body.contains("The chain is broken"),
        "{}",
        broken.body
    );
    assert!(
        broken
            .body
            .contains("row 9: content does not match its hash"),
        "{}",
        broken.body
    );
    assert!(
        broken.body.contains("8 events verified before it"),
        "{}",
        broken.body
    );
    let nine = send(&h, "GET", "/ui/audit/9", Some(&cookie), None, None).await;
    assert!(
        nine.body
            .contains("Does not verify: its content does not match"),
        "{}",
        nine.body
    );
    let ten = send(&h, "GET", "/ui/audit/10", Some(&cookie), None, None).await;
    assert!(
        ten.body.contains("Verifies:"),
        "the next link only depends on 9's stored hash"
    );
}

async fn exports_parse_neutralise_formulas_and_are_audited() {
    let h = harness().await;
    let cookie = seeded_auditor(&h).await;

    let jsonl = send(
        &h,
        "GET",
        "/ui/audit/export?format=jsonl&outcome=denied",
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert_eq!(jsonl.status, StatusCode::OK, "{}", jsonl.body);
    assert!(
        jsonl.headers["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"jitssh-audit-"),
    );
    assert_eq!(jsonl.headers["x-export-limit"], "100000");
    let lines: Vec<serde_json::Value> = jsonl
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let expected = newest_first(&h, |e| e.outcome == "denied");
    assert_eq!(
        lines
            .iter()
            .map(|l| l["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        expected
    );
    for l in &lines {
        // The stored event byte for byte: its hash recomputes.
        let event = serde_json::to_string(&l["event"]).unwrap();
        assert_eq!(l["event"]["outcome"], "denied");
        assert_eq!(l["hash"].as_str().unwrap().len(), 64, "{event}");
    }

    let csv = send(
        &h,
        "GET",
        "/ui/audit/export?format=csv&serial=1007",
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let records: Vec<&str> = csv.body.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(records.len(), 2, "{}", csv.body);
    assert!(
        records[0].starts_with("\"seq\",\"time\",\"kind\""),
        "{}",
        records[0]
    );
    assert!(
        records[1].contains("\"'=cmd|' /C calc'!A0\""),
        "{}",
        records[1]
    );
    assert!(!records[1].contains(",\"=cmd"), "{}", records[1]);

    // Each export is in the log, with who and what.
    let exports = h.rows("audit_export");
    assert_eq!(exports.len(), 2);
    assert_eq!(exports[1].subject.as_deref(), Some("dev|audra"));
    assert_eq!(exports[1].channel.as_deref(), Some("console"));
    assert_eq!(exports[1].details.as_ref().unwrap()["format"], "csv");
    assert_eq!(
        exports[1].details.as_ref().unwrap()["filters"],
        "serial=1007"
    );

    // A few exports at once per server, then "busy".
    let jobs = &h.state.console.as_ref().unwrap().jobs;
    let held: Vec<_> = std::iter::from_fn(|| jobs.export.try_take())
        .take(10)
        .collect();
    assert_eq!(held.len(), 2);
    let busy = send(
        &h,
        "GET",
        "/ui/audit/export?format=csv",
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert_eq!(busy.status, StatusCode::TOO_MANY_REQUESTS);
}

async fn charts_count_certificates_refusals_and_roles() {
    let h = harness().await;
    let cookie = seeded_auditor(&h).await;
    let events: Vec<AuditEvent> = all(&h).into_iter().map(|r| r.event).collect();
    let certs = |outcome: &str| {
        events
            .iter()
            .filter(|e| e.action == "user_cert" && e.outcome == outcome)
            .count()
    };
    let page = send(&h, "GET", "/ui/audit/charts", Some(&cookie), None, None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let said = format!(
        "<strong>{}</strong> certificates issued, <strong>{}</strong> refused",
        certs("issued"),
        certs("denied")
    );
    assert!(page.body.contains(&said), "{said}: {}", page.body);
    let count = |f: &dyn Fn(&AuditEvent) -> bool| events.iter().filter(|e| f(e)).count();
    let policy_denied = count(&|e| e.code.as_deref() == Some("policy_denied"));
    assert!(
        page.body.contains(&format!(
            "<td><code>policy_denied</code></td><td>{policy_denied}</td>"
        )),
        "{}",
        page.body
    );
    let role = |r: &str, o: &str| {
        count(&|e| {
            e.action == "elevation_request"
                && e.outcome == o
                && e.details.as_ref().unwrap()["role"] == r
        })
    };
    assert!(
        page.body.contains(&format!(
            "<td>db-admin</td><td>{}</td><td>{}</td>",
            role("db-admin", "issued"),
            role("db-admin", "denied")
        )),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("<svg role=\"img\" aria-labelledby=\"hourly-t hourly-d\"")
    );
    assert!(
        page.body
            .contains("<title id=\"hourly-t\">Certificates issued and refused per hour")
    );
    let week = send(
        &h,
        "GET",
        "/ui/audit/charts?window=week",
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert!(week.body.contains(&said), "{}", week.body);
    assert!(week.body.contains("the last 7 days"));
}

on_both_backends!(
    filters_narrow_and_pages_neither_skip_nor_repeat,
    a_bounded_scan_continues_where_it_stopped,
    bad_filters_are_a_400_that_says_what_to_type,
    an_event_shows_its_chain_link_and_verify_tells_intact_from_tampered,
    exports_parse_neutralise_formulas_and_are_audited,
    charts_count_certificates_refusals_and_roles,
);

#[tokio::test]
async fn only_auditors_see_audit_and_a_forged_verify_is_refused_and_audited() {
    let h = harness().await;
    let audra = with_session(&sign_in_as(&h, Some("audra")).await);
    let page = send(&h, "GET", "/ui/", Some(&audra), None, None).await;
    assert!(
        page.body.contains(r#"<a href="/ui/audit">Audit</a>"#),
        "{}",
        page.body
    );
    for path in [
        "/ui/audit",
        "/ui/audit/1",
        "/ui/audit/charts",
        "/ui/audit/export?format=jsonl",
    ] {
        let page = send(&h, "GET", path, Some(&audra), None, None).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
    }

    let alice = with_session(&sign_in_as(&h, Some("alice")).await);
    let mine = send(&h, "GET", "/ui/", Some(&alice), None, None).await;
    assert!(!mine.body.contains("/ui/audit"), "{}", mine.body);
    for path in [
        "/ui/audit",
        "/ui/audit?outcome=denied",
        "/ui/audit/1",
        "/ui/audit/charts",
        "/ui/audit/export?format=csv",
    ] {
        let page = send(&h, "GET", path, Some(&alice), None, None).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        assert!(page.body.contains("Not available to you"), "{path}");
    }
    // Her own, valid form token on a form she was never shown.
    let forged = send(
        &h,
        "POST",
        "/ui/audit/verify",
        Some(&alice),
        Some(&format!("csrf={}", mine.csrf())),
        None,
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(!forged.body.contains("The chain is"), "{}", forged.body);
    let refused = h.rows("console_action");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].code.as_deref(), Some("console_forbidden"));
    assert_eq!(refused[0].subject.as_deref(), Some("dev|alice"));
    assert_eq!(
        refused[0].details.as_ref().unwrap()["path"],
        "/ui/audit/verify"
    );
    assert!(h.rows("audit_export").len() == 1, "only audra's export");
}
