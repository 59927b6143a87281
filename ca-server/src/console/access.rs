//! My access: what the policy gives me now (a preview, nothing issued), my
//! active grants and my requests waiting for a decision, the roles I may
//! request and who approves them, and who I am; fed by the issuance
//! preview, the `Elevations` service and the policy's role guide. Its
//! forms post to `access_actions`.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use ca_core::elevation::ElevationState;
use ca_core::wire::Elevation;

use super::auth::person;
use super::nav::Nav;
use super::render::{render, unavailable};
use super::rights::Capability;
use super::role_guide::{Guide, duration_words};
use super::state::UiState;
use crate::clock::now_unix;
use crate::issue::preview::{Nothing, Preview};

#[derive(Template)]
#[template(path = "console/access.html")]
struct AccessPage<'a> {
    nav: Nav,
    csrf: String,
    notice: Option<String>,
    preview: Result<PreviewView, Nothing>,
    issuer: &'a str,
    subject: &'a str,
    email: Option<&'a str>,
    login: Option<&'a str>,
    login_problem: Option<&'a str>,
    groups: &'a [String],
    grants: Vec<GrantRow>,
    pending: Vec<PendingRow>,
    guide: Guide,
}

struct PreviewView {
    principals: Vec<String>,
    ttl: String,
    extensions: Vec<String>,
    critical_options: Vec<String>,
    reasons: Vec<String>,
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

/// `?el=ID`: after a form, the elevation it changed (its notice is read
/// from the stored state, never from the URL).
#[derive(serde::Deserialize)]
pub(super) struct AccessQuery {
    el: Option<String>,
}

/// `GET /ui/`: the page.
pub(super) async fn my_access(
    State(s): State<UiState>,
    query: Result<Query<AccessQuery>, QueryRejection>,
    req: Request,
) -> Response {
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
    let notice = query
        .ok()
        .and_then(|q| q.0.el)
        .and_then(|id| mine.iter().find(|e| e.id == id).map(notice));
    let minutes = |until: u64| until.saturating_sub(now).div_ceil(60);
    let mut grants = Vec::new();
    let mut pending = Vec::new();
    for e in mine {
        match e.state {
            ElevationState::Approved => grants.push(GrantRow {
                minutes_left: minutes(e.grant_ends_at.unwrap_or(e.expires_at)),
                id: e.id,
                role: e.role,
                principals: e.principals,
                reason: e.reason,
            }),
            ElevationState::Pending => pending.push(PendingRow {
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
    let preview = s
        .authority
        .preview_user_cert(&me.identity, &me.source_ip, now)
        .await
        .map(preview_view);
    let guide = Guide::for_person(
        &s.authority.policy.snapshot(),
        &me.identity,
        &me.source_ip,
        now,
    );
    let id = &me.identity;
    render(
        StatusCode::OK,
        &AccessPage {
            nav: me.nav(&s, "/ui/"),
            csrf: me.csrf(&s),
            notice,
            preview,
            issuer: &id.issuer,
            subject: &id.subject,
            email: id.email.as_deref(),
            login: id.login.as_ref().map(|l| l.as_str()),
            login_problem: id.login_problem.as_deref(),
            groups: &id.groups,
            grants,
            pending,
            guide,
        },
    )
}

fn preview_view(p: Preview) -> PreviewView {
    PreviewView {
        principals: p.principals,
        ttl: duration_words(p.ttl_seconds),
        extensions: p.extensions,
        critical_options: p.critical_options,
        reasons: p.reasons,
    }
}

/// What happened to my elevation `e`, in a sentence.
fn notice(e: &Elevation) -> String {
    let role = &e.role;
    match e.state {
        ElevationState::Approved => format!(
            "Your request for {role} was approved: you hold {} until the grant ends. Run jitssh login to get a certificate with it.",
            e.principals.join(", ")
        ),
        ElevationState::Pending => format!(
            "Your request for {role} is waiting for {} approval{}. {}",
            e.approvals_required,
            if e.approvals_required == 1 { "" } else { "s" },
            e.reasons.join(" ")
        ),
        ElevationState::Cancelled => format!("Your request for {role} was withdrawn."),
        ElevationState::Revoked => format!(
            "Your grant of {role} has ended; new certificates no longer carry {}.",
            e.principals.join(", ")
        ),
        ElevationState::Denied => format!("Your request for {role} was denied."),
        ElevationState::Expired => format!("Your request or grant of {role} has expired."),
    }
}
