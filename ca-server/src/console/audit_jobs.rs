//! The audit page's heavy jobs, each bounded: verifying the whole chain
//! (off the runtime, one at a time per server) and exporting the events of
//! a search as JSON Lines or CSV (streamed in keyset batches, at most
//! [`EXPORT_ROWS`] rows, a few exports at once, each recorded in the log).

use std::time::{Duration, Instant};

use askama::Template;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;

use super::audit::SCAN_WINDOW;
use super::audit_query::{AuditQuery, Format};
use super::auth::{person, post_person};
use super::nav::Nav;
use super::render::{problem, render, unavailable};
use super::rights::Capability;
use super::state::{Slot, UiState};
use crate::audit::{AuditStore, Cursor, Filter, StoredEvent, VerifyReport, format_time};
use crate::clock::now_unix;

/// Most rows in one export; the file says so when it stops there.
pub(super) const EXPORT_ROWS: u64 = 100_000;
/// Rows read per batch of an export.
const EXPORT_BATCH: usize = 1_000;
/// Most batches of one export, so a filter that rarely matches examines at
/// most this many windows of [`SCAN_WINDOW`] rows.
const EXPORT_BATCHES: u32 = 200;

#[derive(Template)]
#[template(path = "console/audit_verify.html")]
struct VerifyPage {
    nav: Nav,
    ok: bool,
    rows: u64,
    last_hash: String,
    broken: Option<String>,
    index: Option<String>,
    took: String,
}

/// `POST /ui/audit/verify`: the check `jitssh-ca audit verify` runs
/// (`AuditStore::verify`), on a blocking thread, one at a time per server.
pub(super) async fn verify(State(s): State<UiState>, req: Request) -> Response {
    let me = match post_person(&s, req, Capability::Audit).await {
        Ok((me, _)) => me,
        Err(r) => return r,
    };
    let Some(slot) = s.console.jobs.verify.try_take() else {
        return problem(
            StatusCode::CONFLICT,
            "A verification is already running",
            "Someone is verifying the chain on this server now. Wait until it finishes (a large log takes a minute), then press Verify chain again.",
        );
    };
    let store = s.authority.audit.clone();
    let started = Instant::now();
    // The slot goes with the job: a person who leaves does not free it
    // before the work ends.
    let report = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        store.verify()
    })
    .await;
    let report: VerifyReport = match report {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return unavailable("verifying the audit chain", e),
        Err(e) => return unavailable("verifying the audit chain", e),
    };
    render(
        StatusCode::OK,
        &VerifyPage {
            nav: me.nav(&s, "/ui/audit"),
            ok: report.is_ok(),
            rows: report.rows,
            broken: report.error.as_ref().map(ToString::to_string),
            index: report.index_error.as_ref().map(ToString::to_string),
            last_hash: report.last_hash,
            took: took(started.elapsed()),
        },
    )
}

fn took(d: Duration) -> String {
    if d.as_secs() >= 10 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// `GET /ui/audit/export?format=jsonl|csv&…filters`: the matching events,
/// newest first, as a download.
pub(super) async fn export(State(s): State<UiState>, req: Request) -> Response {
    let me = match person(&s, &req, Capability::Audit).await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let q = match AuditQuery::parse(req.uri().query()) {
        Ok(q) => q,
        Err(bad) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "Nothing was exported",
                &bad.message,
            );
        }
    };
    let Some(format) = q.format else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Nothing was exported",
            "Choose format=jsonl or format=csv (the links on the Audit page do).",
        );
    };
    let Some(slot) = s.console.jobs.export.try_take() else {
        return problem(
            StatusCode::TOO_MANY_REQUESTS,
            "Exports are busy",
            "Other exports are running on this server. Try again when they have finished.",
        );
    };
    // Who took which events out of the CA is itself audited, before any
    // leaves; no row, no export.
    let now = now_unix();
    let mut event = me.caller().event("audit_export", now);
    event.outcome = "done".into();
    event.details = Some(serde_json::json!({
        "format": if format == Format::Csv { "csv" } else { "jsonl" },
        "filters": q.filters(),
        "max_rows": EXPORT_ROWS,
    }));
    if let Err(e) = s.authority.audit.append(event, None).await {
        return unavailable("auditing an export", e);
    }
    let (ext, mime) = match format {
        Format::Jsonl => ("jsonl", "application/x-ndjson"),
        Format::Csv => ("csv", "text/csv; charset=utf-8"),
    };
    let job = Export {
        store: s.authority.audit.clone(),
        filter: q.filter.clone(),
        cursor: q.cursor,
        format,
        rows: 0,
        batches: 0,
        next_link: q.link("/ui/audit/export", &format!("format={ext}")),
        state: Stage::Header,
        _slot: slot,
    };
    let body = Body::from_stream(futures_util::stream::unfold(job, |mut job| async move {
        let chunk = job.next().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), job))
    }));
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"jitssh-audit-{now}.{ext}\""
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert("x-export-limit", HeaderValue::from(EXPORT_ROWS));
    resp
}

/// Where an export is.
enum Stage {
    Header,
    Rows,
    Done,
}

/// One running export: its search, where it is, and its slot (given back
/// when the download ends or is abandoned).
struct Export {
    store: AuditStore,
    filter: Filter,
    cursor: Option<Cursor>,
    format: Format,
    rows: u64,
    batches: u32,
    next_link: String,
    state: Stage,
    _slot: Slot,
}

impl Export {
    /// The next chunk of the file, `None` at its end. Each batch is a short
    /// read of its own: a slow download holds no transaction open.
    async fn next(&mut self) -> Option<Bytes> {
        match self.state {
            Stage::Done => return None,
            Stage::Header => {
                self.state = Stage::Rows;
                if self.format == Format::Csv {
                    return Some(Bytes::from(csv_line(CSV_HEADER.iter().copied())));
                }
            }
            Stage::Rows => {}
        }
        if self.rows >= EXPORT_ROWS || self.batches >= EXPORT_BATCHES {
            self.state = Stage::Done;
            let at = match self.cursor {
                Some(Cursor::Older(s)) => s,
                _ => 0,
            };
            let why = if self.rows >= EXPORT_ROWS {
                format!("stopped at the limit of {EXPORT_ROWS} rows")
            } else {
                format!(
                    "stopped after examining {} batches of events",
                    EXPORT_BATCHES
                )
            };
            let next = format!("{}&before={at}", self.next_link);
            return Some(Bytes::from(self.trailer(&why, &next)));
        }
        let (store, filter, cursor) = (self.store.clone(), self.filter.clone(), self.cursor);
        let batch = tokio::task::spawn_blocking(move || {
            store.search(&filter, cursor, EXPORT_BATCH, SCAN_WINDOW)
        })
        .await;
        self.batches += 1;
        let page = match batch {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Some(self.failed(&e.to_string())),
            Err(e) => return Some(self.failed(&e.to_string())),
        };
        let mut out = String::new();
        for r in &page.rows {
            match self.format {
                Format::Jsonl => match self.store.export_row(r) {
                    Ok(line) => out.push_str(&line),
                    Err(e) => return Some(self.failed(&e.to_string())),
                },
                Format::Csv => out.push_str(&csv_line(csv_cells(r).iter().map(String::as_str))),
            }
        }
        self.rows += page.rows.len() as u64;
        match page.older {
            Some(c) => self.cursor = Some(Cursor::Older(c)),
            None => self.state = Stage::Done,
        }
        Some(Bytes::from(out))
    }

    /// The file's last line when it stops early: why, and where to go on.
    fn trailer(&self, why: &str, next: &str) -> String {
        match self.format {
            Format::Jsonl => format!(
                "{}\n",
                serde_json::json!({"incomplete": why, "rows": self.rows, "continue": next})
            ),
            Format::Csv => csv_line(
                [format!(
                    "# incomplete: {why} after {} rows; continue with {next}",
                    self.rows
                )]
                .iter()
                .map(String::as_str),
            ),
        }
    }

    fn failed(&mut self, e: &str) -> Bytes {
        tracing::warn!(error = %e, "console: an audit export failed");
        self.state = Stage::Done;
        Bytes::from(self.trailer(
            "the audit log could not be read; this file is incomplete, export again",
            &self.next_link,
        ))
    }
}

const CSV_HEADER: [&str; 16] = [
    "seq",
    "time",
    "kind",
    "outcome",
    "code",
    "issuer",
    "subject",
    "email",
    "source_ip",
    "serial",
    "principals",
    "ttl_seconds",
    "reason",
    "decision_reasons",
    "channel",
    "hash",
];

fn csv_cells(r: &StoredEvent) -> [String; 16] {
    let e = &r.event;
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    [
        r.seq.to_string(),
        format_time(e.time),
        e.action.clone(),
        e.outcome.clone(),
        opt(&e.code),
        opt(&e.issuer),
        opt(&e.subject),
        opt(&e.email),
        opt(&e.source_ip),
        opt(&e.serial),
        e.granted_principals.join(" "),
        e.ttl_seconds.map(|t| t.to_string()).unwrap_or_default(),
        opt(&e.reason),
        e.decision_reasons.join("; "),
        opt(&e.channel),
        r.hash.clone(),
    ]
}

/// One CSV record: every cell quoted (quotes doubled), and a cell that a
/// spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`,
/// tab or carriage return) prefixed with `'` so it stays text.
pub(super) fn csv_line<'a>(cells: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            out.push('\'');
        }
        out.push_str(&cell.replace('"', "\"\""));
        out.push('"');
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_formulas_neutralised() {
        let line = csv_line(
            [
                "=cmd|' /C calc'!A0",
                "+1",
                "-2",
                "@SUM(A1)",
                "\tx",
                "\rx",
                "say \"hi\", ok",
                "plain",
            ]
            .into_iter(),
        );
        assert_eq!(
            line,
            "\"'=cmd|' /C calc'!A0\",\"'+1\",\"'-2\",\"'@SUM(A1)\",\"'\tx\",\"'\rx\",\"say \"\"hi\"\", ok\",\"plain\"\r\n"
        );
    }
}
