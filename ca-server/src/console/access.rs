//! My access: who I am, my active grants and my requests waiting for a
//! decision, fed by the `Elevations` service.

use askama::Template;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use ca_core::wire::Elevation;

use super::auth::person;
use super::nav::Nav;
use super::render::{render, unavailable};
use super::rights::Capability;
use super::state::UiState;
use crate::clock::now_unix;

#[derive(Template)]
#[template(path = "console/access.html")]
struct AccessPage<'a> {
    nav: Nav,
    issuer: &'a str,
    subject: &'a str,
    email: Option<&'a str>,
    login: Option<&'a str>,
    login_problem: Option<&'a str>,
    groups: &'a [String],
    grants: Vec<GrantRow>,
    pending: Vec<PendingRow>,
}

struct GrantRow {
    id: String,
    role: String,
    principals: Vec<String>,
    reason: String,
    minutes_left: u64,
}

struct PendingRow {
    id: String,
    role: String,
    reason: String,
    approvals: usize,
    required: u32,
    minutes_left: u64,
}

/// `GET /ui/`: who I am, my active grants, my requests waiting for a decision.
pub(super) async fn my_access(State(s): State<UiState>, req: Request) -> Response {
    let me = match person(&s, &req, Capability::MyAccess).await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let caller = me.caller();
    let now = now_unix();
    let mine = match s.authority.elevations.list(&caller, None, now) {
        Ok(list) => list
            .into_iter()
            .filter(|e| {
                e.requester.issuer == me.identity.issuer
                    && e.requester.subject == me.identity.subject
            })
            .collect::<Vec<Elevation>>(),
        Err(e) => return unavailable("listing elevations", e),
    };
    let minutes = |until: u64| until.saturating_sub(now).div_ceil(60);
    let mut grants = Vec::new();
    let mut pending = Vec::new();
    for e in mine {
        match e.state.as_str() {
            "approved" => grants.push(GrantRow {
                minutes_left: minutes(e.grant_ends_at.unwrap_or(e.expires_at)),
                id: e.id,
                role: e.role,
                principals: e.principals,
                reason: e.reason,
            }),
            "pending" => pending.push(PendingRow {
                minutes_left: minutes(e.expires_at),
                approvals: e.approvals.len(),
                required: e.approvals_required,
                id: e.id,
                role: e.role,
                reason: e.reason,
            }),
            _ => {}
        }
    }
    let id = &me.identity;
    render(
        StatusCode::OK,
        &AccessPage {
            nav: me.nav(&s, "/ui/"),
            issuer: &id.issuer,
            subject: &id.subject,
            email: id.email.as_deref(),
            login: id.login.as_ref().map(|l| l.as_str()),
            login_problem: id.login_problem.as_deref(),
            groups: &id.groups,
            grants,
            pending,
        },
    )
}
