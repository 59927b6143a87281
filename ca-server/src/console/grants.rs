//! Grants: everyone's active grants (time left, who approved) and those
//! that ended in the last week (how and when), keyset-paged, from the
//! `Elevations` service; people the policy gives `end_grants` get an "End
//! now" form that calls the revocation `jitssh-ca elevation revoke` makes.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use ca_core::elevation::ElevationState;
use ca_core::wire::{Elevation, ElevationVote};

use super::auth::{person, post_person};
use super::nav::Nav;
use super::render::{Refused, problem, render, unavailable};
use super::rights::Capability;
use super::role_guide::duration_words;
use super::state::{UiState, see_other};
use crate::audit::format_time;
use crate::clock::now_unix;
use crate::elevation::GrantCursor;

/// How far back ended grants are listed.
const RECENT_SECS: u64 = 7 * 86_400;
/// Active grants shown at most (more: the page says so).
const MAX_ACTIVE: usize = 200;
/// Ended grants per page.
const PER_PAGE: usize = 25;

#[derive(Template)]
#[template(path = "console/grants.html")]
struct GrantsPage {
    nav: Nav,
    csrf: String,
    can_end: bool,
    notice: Option<String>,
    active: Vec<GrantView>,
    more_active: bool,
    ended: Vec<GrantView>,
    next: Option<String>,
    first_page: bool,
}

struct GrantView {
    id: String,
    requester: String,
    role: String,
    principals: Vec<String>,
    reason: String,
    /// "23 min left" or how it ended and when.
    status: String,
    /// Who approved, with their comments; or that the policy did.
    approvals: Vec<String>,
}

#[derive(serde::Deserialize)]
pub(super) struct GrantsQuery {
    after: Option<String>,
    ended: Option<String>,
}

/// `GET /ui/grants[?after=CURSOR]`.
pub(super) async fn grants(
    State(s): State<UiState>,
    query: Result<Query<GrantsQuery>, QueryRejection>,
    req: Request,
) -> Response {
    let me = match person(&s, &req, Capability::Grants).await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let bad_link = || {
        problem(
            StatusCode::BAD_REQUEST,
            "This link is not valid",
            "The page link is malformed. Open Grants from the navigation bar.",
        )
    };
    let Ok(Query(q)) = query else {
        return bad_link();
    };
    let after = match q.after.as_deref() {
        None => None,
        Some(a) => match GrantCursor::parse(a) {
            Some(c) => Some(c),
            None => return bad_link(),
        },
    };
    let now = now_unix();
    let page = match s.authority.elevations.grants_page(
        now,
        now.saturating_sub(RECENT_SECS),
        after.as_ref(),
        MAX_ACTIVE,
        PER_PAGE,
    ) {
        Ok(p) => p,
        Err(e) => return unavailable("listing grants", e),
    };
    let notice = q.ended.and_then(|id| {
        page.ended.iter().find(|e| e.id == id).map(|e| {
            format!(
                "The grant of {} to {} has ended.",
                e.role,
                who(&e.requester)
            )
        })
    });
    render(
        StatusCode::OK,
        &GrantsPage {
            can_end: me.rights.has(Capability::EndGrants),
            csrf: me.csrf(&s),
            nav: me.nav(&s, "/ui/grants"),
            notice,
            active: page.active.iter().map(|e| view(e, now)).collect(),
            more_active: page.more_active,
            ended: page.ended.iter().map(|e| view(e, now)).collect(),
            next: page.next.map(|c| c.to_string()),
            first_page: after.is_none(),
        },
    )
}

/// `POST /ui/grants/{id}/end`: field `reason` (required). Ends the grant
/// now, as `jitssh-ca elevation revoke` does: its certificates are revoked
/// in the same transaction, and new ones for its principals refused.
pub(super) async fn end(
    State(s): State<UiState>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let (me, form) = match post_person(&s, req, Capability::EndGrants).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let page = Refused {
        title: "Grant not ended",
        back: "/ui/grants",
        back_label: "Grants",
    };
    let reason = form.field("reason").unwrap_or_default();
    let reason = match ca_core::request::parse_reason(&reason) {
        Ok(r) if !r.is_empty() => r,
        Ok(_) => {
            return page.page(
                StatusCode::BAD_REQUEST,
                me.nav(&s, "/ui/grants"),
                "Say why you are ending this grant: the requester and the audit log see the reason.",
                &[],
            );
        }
        Err(e) => {
            return page.page(
                StatusCode::BAD_REQUEST,
                me.nav(&s, "/ui/grants"),
                &e.to_string(),
                &[],
            );
        }
    };
    match s
        .authority
        .elevations
        .revoke_as(&me.caller(), &id, Some(reason), now_unix())
        .await
    {
        Ok(e) => {
            // Its certificates were revoked: the KRL serves them now.
            s.authority.revocations.refresh_now().await;
            see_other(&format!("/ui/grants?ended={}", e.id))
        }
        Err(e) => page.elevation(me.nav(&s, "/ui/grants"), &e),
    }
}

/// `t` as people read it: `2026-12-06 21:01 UTC`.
fn when(t: u64) -> String {
    let iso = format_time(t);
    match (iso.get(..10), iso.get(11..16)) {
        (Some(day), Some(hm)) => format!("{day} {hm} UTC"),
        _ => iso,
    }
}

fn who(p: &ca_core::identity::Party) -> String {
    p.email
        .clone()
        .unwrap_or_else(|| format!("{}#{}", p.issuer, p.subject))
}

fn voter(v: &ElevationVote) -> String {
    v.email
        .clone()
        .unwrap_or_else(|| format!("{}#{}", v.issuer, v.subject))
}

fn view(e: &Elevation, now: u64) -> GrantView {
    let ended_at = e.grant_ends_at.map(when).unwrap_or_default();
    let status = match (e.state, &e.closed_by) {
        (ElevationState::Approved, _) => format!(
            "{} left",
            duration_words(e.grant_ends_at.unwrap_or(now).saturating_sub(now))
        ),
        (ElevationState::Revoked, Some(by))
            if by.issuer == e.requester.issuer && by.subject == e.requester.subject =>
        {
            format!("Dropped by the requester at {ended_at}")
        }
        (ElevationState::Revoked, Some(by)) => format!(
            "Ended by {} at {ended_at}{}",
            voter(by),
            by.comment
                .as_ref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        ),
        (ElevationState::Expired, _) => format!("Expired at {ended_at}"),
        (state, _) => format!("{state} at {ended_at}"),
    };
    let approvals = if e.approvals.is_empty() {
        vec![format!(
            "Approved by the policy: {}",
            if e.reasons.is_empty() {
                "no reason given".to_owned()
            } else {
                e.reasons.join("; ")
            }
        )]
    } else {
        e.approvals
            .iter()
            .map(|v| match &v.comment {
                Some(c) => format!("{}: “{c}”", voter(v)),
                None => voter(v),
            })
            .collect()
    };
    GrantView {
        id: e.id.clone(),
        requester: who(&e.requester),
        role: e.role.clone(),
        principals: e.principals.clone(),
        reason: e.reason.clone(),
        status,
        approvals,
    }
}
