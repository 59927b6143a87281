//! Audit, for auditors: search the log (time range, person, kind, outcome,
//! serial) newest first with keyset pages, and one event in full with its
//! place in the chain. Reads through `AuditStore::search` and
//! `chain_link`, the store's bounded reads.

use askama::Template;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::audit_query::{AuditQuery, BadField, Shown};
use super::auth::person;
use super::nav::Nav;
use super::render::{blocking, problem, render, unavailable};
use super::rights::Capability;
use super::state::UiState;
use crate::audit::{LinkVerdict, StoredEvent, format_time};

/// Rows on one page.
pub(super) const PAGE_ROWS: usize = 50;
/// Rows one page examines at most when a condition has no index.
pub(super) const SCAN_WINDOW: u64 = 20_000;

/// Kinds the log records, offered as suggestions (any kind may be typed).
const KINDS: &[&str] = &[
    "user_cert",
    "host_cert",
    "elevation_request",
    "elevation_approve",
    "elevation_deny",
    "elevation_cancel",
    "elevation_revoke",
    "elevation_expire",
    "revoke",
    "ca_rotate",
    "console_signin",
    "console_action",
    "audit_export",
    "login_name_bind",
    "host_token_create",
    "unauthenticated",
];
/// Outcomes the log records.
const OUTCOMES: &[&str] = &[
    "issued",
    "denied",
    "failed",
    "pending",
    "approved",
    "cancelled",
    "expired",
    "revoked",
    "recorded",
    "done",
    "bound",
];

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    nav: Nav,
    csrf: String,
    shown: Shown,
    kinds: &'static [&'static str],
    outcomes: &'static [&'static str],
    error: Option<BadField>,
    rows: Vec<Line>,
    older: Option<String>,
    newer: Option<String>,
    searched: Option<(u64, u64)>,
    filtered: bool,
    export_jsonl: String,
    export_csv: String,
}

/// One row of the results table.
struct Line {
    seq: u64,
    time: String,
    kind: String,
    outcome: String,
    refused: bool,
    who: String,
    what: String,
}

impl Line {
    fn of(r: &StoredEvent) -> Line {
        let e = &r.event;
        let who = e
            .email
            .clone()
            .or_else(|| e.subject.clone())
            .unwrap_or_else(|| "—".into());
        let mut what = Vec::new();
        if let Some(s) = &e.serial {
            what.push(format!("serial {s}"));
        }
        if !e.granted_principals.is_empty() {
            what.push(e.granted_principals.join(", "));
        }
        if let Some(role) = e.details.as_ref().and_then(|d| d.get("role")?.as_str()) {
            what.push(format!("role {role}"));
        }
        if let Some(code) = &e.code {
            what.push(code.clone());
        }
        Line {
            seq: r.seq,
            time: format_time(e.time),
            kind: e.action.clone(),
            refused: e.outcome == "denied" || e.outcome == "failed",
            outcome: e.outcome.clone(),
            who,
            what: what.join(" · "),
        }
    }
}

/// `GET /ui/audit`: the search form and one page of results.
pub(super) async fn search(State(s): State<UiState>, req: Request) -> Response {
    let me = match person(&s, &req, Capability::Audit).await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let parsed = AuditQuery::parse(req.uri().query());
    let mut page = AuditPage {
        nav: me.nav(&s, "/ui/audit"),
        csrf: me.csrf(&s),
        shown: Shown::default(),
        kinds: KINDS,
        outcomes: OUTCOMES,
        error: None,
        rows: Vec::new(),
        older: None,
        newer: None,
        searched: None,
        filtered: false,
        export_jsonl: "/ui/audit/export?format=jsonl".into(),
        export_csv: "/ui/audit/export?format=csv".into(),
    };
    let q = match parsed {
        Ok(q) => q,
        Err(bad) => {
            page.error = Some(bad);
            return render(StatusCode::BAD_REQUEST, &page);
        }
    };
    let store = s.authority.audit.clone();
    let (filter, cursor) = (q.filter.clone(), q.cursor);
    let found = blocking(move || store.search(&filter, cursor, PAGE_ROWS, SCAN_WINDOW)).await;
    let found = match found {
        Ok(f) => f,
        Err(e) => return unavailable("searching the audit log", e),
    };
    page.rows = found.rows.iter().map(Line::of).collect();
    page.older = found
        .older
        .map(|c| q.link("/ui/audit", &format!("before={c}")));
    page.newer = found
        .newer
        .map(|c| q.link("/ui/audit", &format!("after={c}")));
    page.searched = found.searched;
    page.filtered = !q.filters().is_empty();
    page.export_jsonl = q.link("/ui/audit/export", "format=jsonl");
    page.export_csv = q.link("/ui/audit/export", "format=csv");
    page.shown = q.shown;
    render(StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "console/audit_detail.html")]
struct DetailPage {
    nav: Nav,
    seq: u64,
    line: Line,
    json: String,
    prev_hash: String,
    hash: String,
    verdict: &'static str,
    verifies: bool,
    previous: Option<u64>,
    /// Whether an event follows (no "next event" link on the newest).
    has_next: bool,
}

/// `GET /ui/audit/{seq}`: one event, every field, and its chain link.
pub(super) async fn detail(
    State(s): State<UiState>,
    Path(seq): Path<String>,
    req: Request,
) -> Response {
    let me = match person(&s, &req, Capability::Audit).await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let Ok(seq) = seq.parse::<u64>() else {
        return problem(
            StatusCode::BAD_REQUEST,
            "No such event number",
            "An event's address is /ui/audit/ and its sequence number, e.g. /ui/audit/42. Find it from the Audit page.",
        );
    };
    let store = s.authority.audit.clone();
    let link = match blocking(move || store.chain_link(seq)).await {
        Ok(Some(link)) => link,
        Ok(None) => {
            return problem(
                StatusCode::NOT_FOUND,
                "No such event",
                "The audit log has no event with this number. Search for it from the Audit page.",
            );
        }
        Err(e) => return unavailable("reading an audit event", e),
    };
    let json = serde_json::from_str::<serde_json::Value>(&link.row.raw)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| link.row.raw.clone());
    let verdict = match link.verdict {
        LinkVerdict::Verifies => {
            "Verifies: its hash is its content's, chained to the event before it."
        }
        LinkVerdict::Edited => {
            "Does not verify: its content does not match its hash, so it was edited. Run Verify chain and restore the log from a backup."
        }
        LinkVerdict::Unlinked => {
            "Does not verify: its previous hash is not the event before it's hash, so events were inserted, deleted or reordered. Run Verify chain."
        }
        LinkVerdict::NoPredecessor => {
            "Does not verify: the event before it is missing from the log. Run Verify chain."
        }
    };
    render(
        StatusCode::OK,
        &DetailPage {
            nav: me.nav(&s, "/ui/audit"),
            seq,
            line: Line::of(&link.row),
            json,
            hash: link.row.hash.clone(),
            prev_hash: link.row.prev_hash.clone(),
            verifies: link.verdict == LinkVerdict::Verifies,
            verdict,
            previous: seq.checked_sub(1).filter(|&p| p > 0),
            has_next: link.has_next,
        },
    )
}
