//! The web console under `/ui/`: server-rendered pages for people, signed in
//! with the `[login]` provider (`signin`), held by a server-side session
//! (`session`), every page a client of the same services the HTTP API uses.
//! What a person may see and do is the policy's `ui_decision` (`rights`),
//! asked on every request (`auth`). Like `http` for JSON, this module (and only it, for HTML)
//! chooses status codes. No route answers without a session except the
//! sign-in pages and the static assets, and every answer carries the
//! security headers of `security_headers`.

mod access;
mod access_actions;
mod assets;
mod audit;
mod audit_charts;
mod audit_jobs;
mod audit_query;
mod auth;
mod decide;
mod decide_events;
mod grants;
mod nav;
mod policy;
mod render;
mod revocations;
pub mod rights;
mod role_guide;
pub mod session;
pub mod signin;
mod signin_pages;
mod state;
mod streams;

pub use state::{
    AuditJobs, Console, ConsoleError, LOGIN_COOKIE, SESSION_COOKIE, Slot, Slots, UiState,
};

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};

use crate::issue::Authority;
use state::see_other;

/// `Content-Security-Policy` of every console answer: nothing inline, nothing
/// from elsewhere, never framed, forms only to this origin.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// The console's routes, all under `/ui`.
pub fn router(authority: Arc<Authority>, console: Arc<Console>) -> Router {
    let state = UiState { authority, console };
    let not_found = || async {
        render::problem(
            StatusCode::NOT_FOUND,
            "Page not found",
            "There is no such page in the console.",
        )
    };
    Router::new()
        .route("/ui/", get(access::my_access))
        .route(
            "/ui/revocations",
            get(revocations::revocations).post(revocations::revoke_post),
        )
        .route("/ui/policy", get(policy::policy))
        .route("/ui/policy/try", post(policy::try_it))
        .route("/ui/elevations", post(access_actions::request_role))
        .route("/ui/elevations/{id}/cancel", post(access_actions::cancel))
        .route("/ui/grants", get(grants::grants))
        .route("/ui/grants/{id}/end", post(grants::end))
        .route("/ui/audit", get(audit::search))
        .route("/ui/audit/charts", get(audit_charts::charts))
        .route("/ui/audit/export", get(audit_jobs::export))
        .route("/ui/audit/verify", post(audit_jobs::verify))
        .route("/ui/audit/{seq}", get(audit::detail))
        .route("/ui/login", get(signin_pages::signin_page))
        .route("/ui/login/start", get(signin_pages::start))
        .route("/ui/callback", get(signin_pages::callback))
        .route("/ui/logout", post(signin_pages::logout))
        .route("/ui/static/console.css", get(assets::css))
        .route("/ui/static/decide.js", get(assets::decide_js))
        .route(decide::PATH, get(decide::list))
        .route("/ui/decide/events", get(decide_events::events))
        .route("/ui/decide/{id}", get(decide::detail).post(not_found))
        .route("/ui/decide/{id}/{action}", post(decide::act).get(not_found))
        .route("/ui", get(|| async { see_other("/ui/") }))
        .route("/ui/{*rest}", get(not_found).post(not_found))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security_headers,
        ))
        .with_state(state)
}

/// The headers of every console answer: [`CSP`], no referrer, no sniffing,
/// never framed, HSTS over https, and `no-store` except for static assets.
async fn security_headers(State(s): State<UiState>, req: Request, next: Next) -> Response {
    let asset = req.uri().path().starts_with("/ui/static/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if s.console.config.secure_cookies() {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    if !asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
