//! Audit charts: certificates issued and refused per hour over the last day
//! or week, refusals by code, elevation requests by role. SVG drawn here
//! (no script; colours from the stylesheet's classes), each with a title,
//! a description, a sentence in words and its numbers in a table.

use askama::Template;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::audit_query::AuditQuery;
use super::auth::person;
use super::nav::Nav;
use super::render::{blocking, problem, render, unavailable};
use super::rights::Capability;
use super::state::UiState;
use crate::audit::{Activity, format_time};
use crate::clock::now_unix;

/// Bars shown in the two ranking charts.
const TOP: usize = 8;

#[derive(Template)]
#[template(path = "console/audit_charts.html")]
struct ChartsPage {
    nav: Nav,
    week: bool,
    span: &'static str,
    hourly: Svg,
    issued: u64,
    refused: u64,
    busiest: Option<(String, u64)>,
    hours: Vec<(String, u64, u64)>,
    codes: Svg,
    code_rows: Vec<(String, u64)>,
    roles: Svg,
    role_rows: Vec<(String, u64, u64)>,
}

/// An SVG chart: its accessible name and description, size, shapes, text.
pub(super) struct Svg {
    id: &'static str,
    title: String,
    desc: String,
    width: u32,
    height: u32,
    rects: Vec<Rect>,
    texts: Vec<Text>,
}

struct Rect {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
    class: &'static str,
    tip: String,
}

struct Text {
    x: u32,
    y: u32,
    anchor: &'static str,
    label: String,
}

/// `GET /ui/audit/charts?window=day|week`.
pub(super) async fn charts(State(s): State<UiState>, req: Request) -> Response {
    let me = match person(&s, &req, Capability::Audit).await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let week = match AuditQuery::parse(req.uri().query()) {
        Ok(q) => q.week,
        Err(bad) => return problem(StatusCode::BAD_REQUEST, "No such chart", &bad.message),
    };
    let now = now_unix();
    let hours: u64 = if week { 168 } else { 24 };
    let since = (now / 3600 + 1 - hours) * 3600;
    let store = s.authority.audit.clone();
    let a = match blocking(move || store.activity(since, now + 1)).await {
        Ok(a) => a,
        Err(e) => return unavailable("counting audit events", e),
    };
    render(StatusCode::OK, &page(me.nav(&s, "/ui/audit"), week, &a))
}

fn page(nav: Nav, week: bool, a: &Activity) -> ChartsPage {
    let span = if week {
        "the last 7 days"
    } else {
        "the last 24 hours"
    };
    let issued = a.hours.iter().map(|h| h.0).sum();
    let refused = a.hours.iter().map(|h| h.1).sum();
    let hour_label =
        |i: usize| format_time(a.since + 3600 * i as u64)[..13].replace('T', " ") + ":00";
    let busiest = a
        .hours
        .iter()
        .enumerate()
        .max_by_key(|(i, h)| (h.0 + h.1, std::cmp::Reverse(*i)))
        .filter(|(_, h)| h.0 + h.1 > 0)
        .map(|(i, h)| (hour_label(i), h.0 + h.1));
    let hours = a
        .hours
        .iter()
        .enumerate()
        .filter(|(_, h)| h.0 + h.1 > 0)
        .map(|(i, h)| (hour_label(i), h.0, h.1))
        .collect();
    let codes: Vec<(String, u64)> = a.refusal_codes.iter().take(TOP).cloned().collect();
    let roles: Vec<(String, u64, u64)> = a.roles.iter().take(TOP).cloned().collect();
    ChartsPage {
        nav,
        week,
        span,
        hourly: hourly(a, week, issued, refused, span),
        issued,
        refused,
        busiest,
        hours,
        codes: ranking(
            "codes",
            format!("Top refusal reasons, {span}"),
            codes.iter().map(|(c, n)| (c.clone(), 0, *n)).collect(),
        ),
        code_rows: codes,
        roles: ranking(
            "roles",
            format!("Elevation requests by role, {span}"),
            roles.clone(),
        ),
        role_rows: roles,
    }
}

/// Stacked bars per hour: issued below, refused above.
fn hourly(a: &Activity, week: bool, issued: u64, refused: u64, span: &str) -> Svg {
    let (bar, gap) = if week { (5, 1) } else { (30, 6) };
    let (left, top, plot) = (44u32, 10u32, 160u32);
    let n = u32::try_from(a.hours.len()).unwrap_or(0);
    let width = left + n * (bar + gap) + 4;
    let max = a.hours.iter().map(|h| h.0 + h.1).max().unwrap_or(0).max(1);
    let scale = |v: u64| u32::try_from(v * u64::from(plot) / max).unwrap_or(plot);
    let mut rects = Vec::new();
    let mut texts = vec![
        text(left - 6, top + 4, "end", max.to_string()),
        text(left - 6, top + plot, "end", "0".into()),
    ];
    for (i, &(ok, no)) in a.hours.iter().enumerate() {
        let x = left + u32::try_from(i).unwrap_or(0) * (bar + gap);
        let (h_ok, h_all) = (scale(ok), scale(ok + no));
        let label = format_time(a.since + 3600 * i as u64);
        if ok > 0 {
            rects.push(Rect {
                x,
                y: top + plot - h_ok,
                w: bar,
                h: h_ok.max(1),
                class: "bar-issued",
                tip: format!("{}:00 UTC: {ok} issued", &label[..13]),
            });
        }
        if no > 0 {
            rects.push(Rect {
                x,
                y: top + plot - h_all,
                w: bar,
                h: (h_all - h_ok).max(1),
                class: "bar-refused",
                tip: format!("{}:00 UTC: {no} refused", &label[..13]),
            });
        }
        let every = if week { 24 } else { 6 };
        if i % every == 0 {
            let tick = if week {
                label[5..10].to_owned()
            } else {
                label[11..16].to_owned()
            };
            texts.push(text(x, top + plot + 16, "start", tick));
        }
    }
    rects.push(Rect {
        x: left,
        y: top + plot,
        w: width - left - 4,
        h: 1,
        class: "axis",
        tip: String::new(),
    });
    Svg {
        id: "hourly",
        title: format!("Certificates issued and refused per hour, {span}"),
        desc: format!(
            "{issued} issued and {refused} refused in {span}, in {} hourly bars; the tallest hour had {max}.",
            a.hours.len()
        ),
        width,
        height: top + plot + 24,
        rects,
        texts,
    }
}

/// Horizontal bars, one per row: a label, the first count (green), the
/// second (red) after it, and the total at the end.
fn ranking(id: &'static str, title: String, rows: Vec<(String, u64, u64)>) -> Svg {
    let (label_w, bar_w, row_h) = (180u32, 260u32, 26u32);
    let max = rows.iter().map(|r| r.1 + r.2).max().unwrap_or(0).max(1);
    let scale = |v: u64| u32::try_from(v * u64::from(bar_w) / max).unwrap_or(bar_w);
    let mut rects = Vec::new();
    let mut texts = Vec::new();
    for (i, (name, ok, no)) in rows.iter().enumerate() {
        let y = u32::try_from(i).unwrap_or(0) * row_h + 4;
        let shown: String = name.chars().take(24).collect();
        texts.push(text(label_w - 8, y + 15, "end", shown));
        let (w_ok, w_no) = (scale(*ok), scale(*no));
        if *ok > 0 {
            rects.push(Rect {
                x: label_w,
                y,
                w: w_ok.max(1),
                h: row_h - 8,
                class: "bar-issued",
                tip: format!("{name}: {ok} granted or pending"),
            });
        }
        if *no > 0 {
            rects.push(Rect {
                x: label_w + w_ok,
                y,
                w: w_no.max(1),
                h: row_h - 8,
                class: "bar-refused",
                tip: format!("{name}: {no} refused"),
            });
        }
        texts.push(text(
            label_w + w_ok + w_no + 6,
            y + 15,
            "start",
            (ok + no).to_string(),
        ));
    }
    let desc = if rows.is_empty() {
        "Nothing to show in this window.".to_owned()
    } else {
        rows.iter()
            .map(|(n, ok, no)| format!("{n}: {}", ok + no))
            .collect::<Vec<_>>()
            .join("; ")
    };
    Svg {
        id,
        title,
        desc,
        width: label_w + bar_w + 60,
        height: (u32::try_from(rows.len()).unwrap_or(0) * row_h).max(row_h) + 8,
        rects,
        texts,
    }
}

fn text(x: u32, y: u32, anchor: &'static str, label: String) -> Text {
    Text {
        x,
        y,
        anchor,
        label,
    }
}
