//! To decide: the pending requests this person may decide (newest first;
//! the list alone is also served for the live updates of `decide_events`),
//! one request in full, and approving or denying it through the
//! `Elevations` service, the form carrying the hash of the request it
//! showed, so what was shown is what is decided.

use askama::Template;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use ca_core::elevation::ElevationState;
use ca_core::wire::{Elevation, ElevationDecide};
use serde::Deserialize;

use super::auth::{Person, person, post_person};
use super::nav::Nav;
use super::render::{render, unavailable};
use super::rights::Capability;
use super::state::{UiState, see_other};
use crate::audit::format_time;
use crate::clock::now_unix;
use crate::elevation::ElevationOpError;

/// The page's path (also its navigation entry).
pub(super) const PATH: &str = "/ui/decide";

/// A pending request as a row of the list.
pub(super) struct ListRow {
    id: String,
    requester: String,
    role: String,
    principals: Vec<String>,
    ttl: String,
    reason: String,
    approvals: usize,
    required: u32,
    expires_in: String,
    asked: String,
}

#[derive(Template)]
#[template(path = "console/decide.html")]
struct DecidePage {
    nav: Nav,
    notice: Option<String>,
    rows: Vec<ListRow>,
}

/// The list alone (`?part=list`): what the live page swaps in.
#[derive(Template)]
#[template(path = "console/decide_list.html")]
struct ListPart {
    rows: Vec<ListRow>,
}

struct VoteRow {
    who: String,
    when: String,
    comment: Option<String>,
}

#[derive(Template)]
#[template(path = "console/decide_detail.html")]
struct DetailPage {
    nav: Nav,
    csrf: String,
    e: Elevation,
    requester: String,
    ttl: String,
    created: String,
    expires: String,
    expires_in: String,
    votes: Vec<VoteRow>,
    /// Approvals still needed after this one.
    more_needed: u32,
    /// Why no form is shown, when none is.
    no_forms: Option<&'static str>,
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    part: Option<String>,
    done: Option<String>,
    id: Option<String>,
}

/// `GET /ui/decide`: the pending requests this person may decide; with
/// `?part=list` only the list (for the live updates).
pub(super) async fn list(
    State(s): State<UiState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Response {
    let me = match person(&s, &req, Capability::Decide).await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let rows = match decidable(&s, &me) {
        Ok(rows) => rows,
        Err(e) => return unavailable("listing elevations to decide", e),
    };
    // A query this page does not understand is ignored, not refused.
    let q = query.ok().map(|q| q.0);
    if q.as_ref().and_then(|q| q.part.as_deref()) == Some("list") {
        return render(StatusCode::OK, &ListPart { rows });
    }
    let notice = q.and_then(|q| notice(q.done.as_deref()?, q.id.as_deref()?));
    render(
        StatusCode::OK,
        &DecidePage {
            nav: me.nav(&s, PATH),
            notice,
            rows,
        },
    )
}

/// The pending requests `me` may decide now, newest first.
fn decidable(s: &UiState, me: &Person) -> Result<Vec<ListRow>, ElevationOpError> {
    let now = now_unix();
    let list = s
        .authority
        .elevations
        .list(&me.caller(), Some("pending"), now)?;
    Ok(list
        .into_iter()
        .filter(|e| e.can_decide && e.state == ElevationState::Pending)
        .map(|e| ListRow {
            requester: name(&e.requester),
            ttl: duration(e.ttl_seconds),
            approvals: e.approvals.len(),
            required: e.approvals_required,
            expires_in: duration(e.expires_at.saturating_sub(now)),
            asked: duration(now.saturating_sub(e.created_at)),
            id: e.id,
            role: e.role,
            principals: e.principals,
            reason: e.reason,
        })
        .collect())
}

/// What a decision redirected here says (fixed sentences: nothing from the
/// query is shown but an id of the service's own shape).
fn notice(done: &str, id: &str) -> Option<String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return None;
    }
    Some(match done {
        "approved" => format!("You approved {id}: its grant has started."),
        "recorded" => format!("Your approval of {id} is recorded; it needs more approvals."),
        "denied" => format!("You denied {id}."),
        "revoked" => format!("You ended the grant of {id}; its certificates are revoked."),
        _ => return None,
    })
}

/// `GET /ui/decide/{id}`: one request in full, with the approve and deny
/// forms when this person may decide it.
pub(super) async fn detail(
    State(s): State<UiState>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    req: Request,
) -> Response {
    let me = match person(&s, &req, Capability::Decide).await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let Ok(Path(id)) = id else {
        return refused(&s, &me, &ElevationOpError::NotFound(String::new()));
    };
    let now = now_unix();
    let e = match s.authority.elevations.get(&me.caller(), &id, now) {
        Ok(e) => e,
        Err(e) => return refused(&s, &me, &e),
    };
    let no_forms = if e.state != ElevationState::Pending {
        Some("This request is no longer waiting for a decision.")
    } else if !e.can_decide {
        Some(
            "You cannot decide this request: it is your own, or the policy does not make you one of its approvers.",
        )
    } else {
        None
    };
    let page = DetailPage {
        nav: me.nav(&s, PATH),
        csrf: me.csrf(&s),
        requester: name(&e.requester),
        ttl: duration(e.ttl_seconds),
        created: format_time(e.created_at),
        expires: format_time(e.expires_at),
        expires_in: duration(e.expires_at.saturating_sub(now)),
        votes: e
            .approvals
            .iter()
            .map(|v| VoteRow {
                who: ca_core::escape_control(v.email.as_deref().unwrap_or(&v.subject)),
                when: format_time(v.time),
                comment: v.comment.clone(),
            })
            .collect(),
        more_needed: e
            .approvals_required
            .saturating_sub(u32::try_from(e.approvals.len()).unwrap_or(u32::MAX))
            .saturating_sub(1),
        no_forms,
        e,
    };
    render(StatusCode::OK, &page)
}

/// `POST /ui/decide/{id}/approve` and `/deny`: the same service call as
/// the API's, with the hash of the request the page showed.
pub(super) async fn act(
    State(s): State<UiState>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    req: Request,
) -> Response {
    let (me, form) = match post_person(&s, req, Capability::Decide).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Ok(Path((id, action))) = path else {
        return refused(&s, &me, &ElevationOpError::NotFound(String::new()));
    };
    let approve = match action.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return refused(&s, &me, &ElevationOpError::NotFound(id)),
    };
    // The API lets a script leave the hash out; a page always had one to
    // show, so a form without it did not come from that page.
    let Some(request_hash) = form.field("request_hash").filter(|h| !h.is_empty()) else {
        return problem(
            &s,
            &me,
            StatusCode::BAD_REQUEST,
            "Open the request first",
            "The form did not say which version of the request you reviewed. Open the request from To decide and decide there. Nothing was changed.",
        );
    };
    let body = ElevationDecide {
        comment: form.field("comment"),
        request_hash: Some(request_hash),
    };
    let Ok(body) = serde_json::to_vec(&body) else {
        return unavailable("encoding a decision", "serialisation failed");
    };
    let el = &s.authority.elevations;
    let now = now_unix();
    let done = if approve {
        el.approve(&me.caller(), &id, &body, now).await
    } else {
        el.deny(&me.caller(), &id, &body, now).await
    };
    match done {
        Ok(e) => {
            let what = match e.state {
                ElevationState::Approved => "approved",
                ElevationState::Pending => "recorded",
                ElevationState::Revoked => {
                    // A grant ended early revoked its certificates: serve
                    // them in the KRL now, as the API does.
                    s.authority.revocations.refresh_now().await;
                    "revoked"
                }
                _ => "denied",
            };
            see_other(&format!("{PATH}?done={what}&id={}", e.id))
        }
        Err(e) => refused(&s, &me, &e),
    }
}

/// A refusal of the service as a page: its status from the table the API
/// shares, and what to do in the console's words.
fn refused(s: &UiState, me: &Person, e: &ElevationOpError) -> Response {
    let status = crate::status::elevation(e);
    if status.is_server_error() {
        return unavailable("deciding an elevation", e);
    }
    let text = e.to_string();
    let (title, message) = match e {
        ElevationOpError::NotFound(_) => (
            "No such request",
            "There is no request here that you may see. It may have been withdrawn; go back to To decide.",
        ),
        ElevationOpError::RequestChanged(_) | ElevationOpError::Changed { .. } => (
            "The request changed",
            "The request is no longer the one you reviewed, so nothing was decided. Open it again, read it, and decide again.",
        ),
        ElevationOpError::NotPending { .. } => (
            "Already decided",
            "This request is no longer waiting for a decision (someone decided it, it was cancelled or it expired). Nothing was changed.",
        ),
        ElevationOpError::SelfApproval => (
            "This is your own request",
            "Nobody approves or denies their own request: another approver must. Nothing was changed.",
        ),
        ElevationOpError::AlreadyApproved(_) => (
            "You already approved it",
            "Each approver counts once; it is waiting for another approver. Nothing was changed.",
        ),
        ElevationOpError::NotApprover { .. } => ("You may not decide this request", text.as_str()),
        _ => ("Not decided", text.as_str()),
    };
    problem(s, me, status, title, message)
}

fn problem(s: &UiState, me: &Person, status: StatusCode, title: &str, message: &str) -> Response {
    super::render::Refused {
        title,
        back: PATH,
        back_label: "To decide",
    }
    .page(status, me.nav(s, PATH), message, &[])
}

/// A party as the page names them: the verified email, else the subject.
fn name(p: &ca_core::identity::Party) -> String {
    ca_core::escape_control(p.email.as_deref().unwrap_or(&p.subject))
}

/// Seconds as people read them: "45 s", "30 min", "1 h 30 min", "2 d 3 h"
/// (minutes rounded up, so 59 min 30 s reads "1 h").
fn duration(secs: u64) -> String {
    if secs < 60 {
        return format!("{secs} s");
    }
    let mins = secs.div_ceil(60);
    match (mins / 60, mins % 60) {
        (0, m) => format!("{m} min"),
        (h @ 1..24, 0) => format!("{h} h"),
        (h @ 1..24, m) => format!("{h} h {m} min"),
        _ => match (secs / 86_400, secs % 86_400 / 3600) {
            (d, 0) => format!("{d} d"),
            (d, h) => format!("{d} d {h} h"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        for (secs, text) in [
            (0, "0 s"),
            (59, "59 s"),
            (60, "1 min"),
            (61, "2 min"),
            (3599, "1 h"),
            (3600, "1 h"),
            (5400, "1 h 30 min"),
            (86_400, "1 d"),
            (97_200, "1 d 3 h"),
        ] {
            assert_eq!(duration(secs), text, "{secs}");
        }
    }

    #[test]
    fn a_notice_shows_only_a_known_outcome_and_an_id_of_ours() {
        assert_eq!(
            notice("approved", "el_ab-12").as_deref(),
            Some("You approved el_ab-12: its grant has started.")
        );
        assert_eq!(notice("approved", "<b>hi</b>"), None);
        assert_eq!(notice("approved", "a b"), None);
        assert_eq!(notice("hacked", "el_1"), None);
        assert_eq!(notice("denied", &"x".repeat(65)), None);
    }
}
