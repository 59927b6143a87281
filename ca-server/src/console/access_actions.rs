//! My access's forms: request a role (`POST /ui/elevations`) and withdraw a
//! request or drop a grant (`POST /ui/elevations/{id}/cancel`). Each is the
//! `Elevations` call the API makes (`jitssh elevate`, `jitssh cancel`), as
//! the signed-in person through the console channel, with the API's rate
//! limit; the outcome is read back from the stored request on My access.

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use ca_core::elevation::ElevationState;
use ca_core::wire::{ElevationCreate, ElevationDecide};

use super::auth::{Person, post_person};
use super::render::Refused;
use super::rights::Capability;
use super::state::{UiState, see_other};
use crate::clock::now_unix;

/// Longest grant the form accepts, in minutes (a day; each role's maximum
/// is lower and the service enforces it).
const MAX_MINUTES: u64 = 24 * 60;

const REQUEST: Refused<'static> = Refused {
    title: "Request not made",
    back: "/ui/#request",
    back_label: "My access",
};

const CANCEL: Refused<'static> = Refused {
    title: "Not changed",
    back: "/ui/",
    back_label: "My access",
};

/// `POST /ui/elevations`: fields `role`, `reason`, optional `ttl_minutes`.
pub(super) async fn request_role(State(s): State<UiState>, req: Request) -> Response {
    let (me, form) = match post_person(&s, req, Capability::MyAccess).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    if let Some(r) = over_rate(&s, &me, &REQUEST) {
        return r;
    }
    let ttl_seconds = match form.field("ttl_minutes").as_deref().map(str::trim) {
        None | Some("") => None,
        Some(m) => match m.parse::<u64>() {
            Ok(m) if (1..=MAX_MINUTES).contains(&m) => Some(m * 60),
            _ => {
                return REQUEST.page(
                    StatusCode::BAD_REQUEST,
                    me.nav(&s, "/ui/"),
                    &format!(
                        "Minutes must be a whole number from 1 to {MAX_MINUTES}, or empty for the role's longest grant."
                    ),
                    &[],
                );
            }
        },
    };
    let body = ElevationCreate {
        role: form.field("role").unwrap_or_default(),
        ttl_seconds,
        reason: form.field("reason").unwrap_or_default(),
    };
    let Ok(body) = serde_json::to_vec(&body) else {
        return super::render::unavailable("encoding a request", "serde");
    };
    let caller = me.caller();
    match s
        .authority
        .elevations
        .create(&caller, &body, now_unix())
        .await
    {
        Ok(e) => see_other(&format!("/ui/?el={}", e.id)),
        Err(e) => {
            let title = match e {
                crate::elevation::ElevationOpError::Denied { .. } => "Request denied",
                _ => REQUEST.title,
            };
            Refused { title, ..REQUEST }.elevation(me.nav(&s, "/ui/"), &e)
        }
    }
}

/// `POST /ui/elevations/{id}/cancel`: optional field `comment`. Only the
/// requester may (the service says so otherwise).
pub(super) async fn cancel(
    State(s): State<UiState>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let (me, form) = match post_person(&s, req, Capability::MyAccess).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    if let Some(r) = over_rate(&s, &me, &CANCEL) {
        return r;
    }
    let body = ElevationDecide {
        comment: form.field("comment").filter(|c| !c.trim().is_empty()),
        ..Default::default()
    };
    let Ok(body) = serde_json::to_vec(&body) else {
        return super::render::unavailable("encoding a request", "serde");
    };
    let caller = me.caller();
    match s
        .authority
        .elevations
        .cancel(&caller, &id, &body, now_unix())
        .await
    {
        Ok(e) => {
            // A dropped grant revoked its certificates: the KRL serves them now.
            if e.state == ElevationState::Revoked {
                s.authority.revocations.refresh_now().await;
            }
            see_other(&format!("/ui/?el={}", e.id))
        }
        Err(e) => CANCEL.elevation(me.nav(&s, "/ui/"), &e),
    }
}

/// The API's per-identity limit on elevation calls, in the same bucket:
/// the page to answer with when it is exceeded.
fn over_rate(s: &UiState, me: &Person, page: &Refused<'_>) -> Option<Response> {
    let retry = s.authority.check_elevation_rate(&me.identity).err()?;
    Some(page.page(
        StatusCode::TOO_MANY_REQUESTS,
        me.nav(s, "/ui/"),
        &format!("Too many requests from you just now; try again in {retry} s."),
        &[],
    ))
}
