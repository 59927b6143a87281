//! The console's pages and the steps of signing in and out. A page handler
//! finds the session, asks the same services the HTTP API asks (here the
//! `Elevations` service), and renders a template; it runs no SQL of its own.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use ca_core::VerifiedIdentity;
use ca_core::wire::Elevation;

use super::session::StoredSession;
use super::signin::{Pending, same};
use super::state::{LOGIN_COOKIE, SESSION_COOKIE, UiState, cookie_value, see_other};
use crate::clock::now_unix;
use crate::elevation::Caller;

/// Largest form body the console reads (its forms carry a token or two).
const MAX_FORM_BYTES: usize = 8 * 1024;

#[derive(Template)]
#[template(path = "console/signin.html")]
struct SigninPage<'a> {
    issuer: &'a str,
    note: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "console/problem.html")]
struct ProblemPage<'a> {
    title: &'a str,
    message: &'a str,
}

#[derive(Template)]
#[template(path = "console/access.html")]
struct AccessPage<'a> {
    csrf: String,
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

fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console: a page did not render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// An error page: what happened and what to do.
pub(super) fn problem(status: StatusCode, title: &str, message: &str) -> Response {
    render(status, &ProblemPage { title, message })
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "console: {what}");
    let mut r = problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again in a moment",
        "The CA cannot answer this right now. Nothing was changed.",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(5u32));
    r
}

fn source_ip(req: &Request) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| ci.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Run a session-store call off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::db::DbError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// A signed-in person: the session id (from the cookie) and who it is.
pub(super) struct Session {
    id: String,
    identity: VerifiedIdentity,
}

/// The request's live session, or the answer to give instead: to the
/// sign-in page when there is none or it ended (its row then deleted, so an
/// ended session never comes back), 403 when the person was revoked.
async fn session(s: &UiState, headers: &HeaderMap) -> Result<Session, Response> {
    let to_signin = |note: &str| {
        let mut r = see_other(&format!("/ui/login{note}"));
        r.headers_mut()
            .append(header::SET_COOKIE, s.console.clear(SESSION_COOKIE));
        r
    };
    let Some(id) = cookie_value(headers, SESSION_COOKIE).filter(|v| !v.is_empty()) else {
        return Err(see_other("/ui/login"));
    };
    let id = id.to_owned();
    let store = s.console.sessions.clone();
    let found = {
        let id = id.clone();
        blocking(move || store.get(&id)).await
    };
    let stored: StoredSession = match found {
        Ok(Some(st)) => st,
        Ok(None) => return Err(to_signin("?ended=1")),
        Err(e) => return Err(unavailable("reading a session", e)),
    };
    let now = now_unix();
    let idle = s.console.config.idle_timeout.as_secs();
    let ended = now >= stored.expires_at || now >= stored.last_seen.saturating_add(idle);
    let revoked = s
        .authority
        .revocations
        .get()
        .subject_revoked(&stored.identity.issuer, &stored.identity.subject);
    if ended || revoked {
        let store = s.console.sessions.clone();
        let gone = id.clone();
        if let Err(e) = blocking(move || store.delete(&gone)).await {
            return Err(unavailable("ending a session", e));
        }
        if revoked {
            let mut r = problem(
                StatusCode::FORBIDDEN,
                "Your access was revoked",
                "An operator revoked your identity at this CA, so your session ended. Ask them why.",
            );
            r.headers_mut()
                .append(header::SET_COOKIE, s.console.clear(SESSION_COOKIE));
            return Err(r);
        }
        return Err(to_signin("?ended=1"));
    }
    // Idle time is counted to a quarter of the timeout (at most a minute),
    // so a busy session does not write on every request.
    if now.saturating_sub(stored.last_seen) >= (idle / 4).min(60) {
        let store = s.console.sessions.clone();
        let touched = id.clone();
        if let Err(e) = blocking(move || store.touch(&touched, now)).await {
            return Err(unavailable("recording a session's use", e));
        }
    }
    Ok(Session {
        id,
        identity: stored.identity,
    })
}

/// `GET /ui/`: who I am, my active grants, my requests waiting for a decision.
pub(super) async fn my_access(State(s): State<UiState>, req: Request) -> Response {
    let me = match session(&s, req.headers()).await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let ip = source_ip(&req);
    let caller = Caller {
        identity: &me.identity,
        source_ip: &ip,
    };
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
            csrf: s.console.secret.csrf(&me.id),
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

#[derive(serde::Deserialize)]
pub(super) struct SigninQuery {
    signed_out: Option<String>,
    ended: Option<String>,
}

/// `GET /ui/login`: the sign-in page (no state, nothing stored).
pub(super) async fn signin_page(
    State(s): State<UiState>,
    query: Result<Query<SigninQuery>, QueryRejection>,
) -> Response {
    let note = query.ok().and_then(|Query(q)| {
        if q.signed_out.is_some() {
            Some("You are signed out.")
        } else if q.ended.is_some() {
            Some("Your session ended. Sign in again to go on.")
        } else {
            None
        }
    });
    render(
        StatusCode::OK,
        &SigninPage {
            issuer: &s.console.config.issuer,
            note,
        },
    )
}

/// `GET /ui/login/start`: begin a sign-in at the provider. Stores nothing:
/// the pending state is the MAC'd cookie (see `signin`).
pub(super) async fn start(State(s): State<UiState>) -> Response {
    let c = &s.console;
    let endpoints = match c.endpoints().await {
        Ok(e) => e,
        Err(e) => return unavailable("reading the provider's discovery document", e),
    };
    let pending = Pending::begin(now_unix());
    let mut url = endpoints.authorization.clone();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &c.config.client_id)
        .append_pair("redirect_uri", &c.redirect_uri())
        .append_pair("scope", &c.config.scopes.join(" "))
        .append_pair("state", &pending.state)
        .append_pair("nonce", &pending.nonce(&c.secret))
        .append_pair("code_challenge", &pending.challenge(&c.secret))
        .append_pair("code_challenge_method", "S256");
    let mut r = see_other(url.as_str());
    r.headers_mut().append(
        header::SET_COOKIE,
        c.cookie(
            LOGIN_COOKIE,
            &pending.to_cookie(&c.secret),
            Some(super::signin::PENDING_TTL_SECS),
        ),
    );
    r
}

#[derive(serde::Deserialize)]
pub(super) struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /ui/callback`: finish a sign-in this browser began. Every refusal
/// before an ID token verifies is counted for its source like the API's
/// (429 past the limit), never stored.
pub(super) async fn callback(
    State(s): State<UiState>,
    query: Result<Query<CallbackQuery>, QueryRejection>,
    req: Request,
) -> Response {
    let query = query.ok();
    let ip = source_ip(&req);
    let now = now_unix();
    let refuse = |code: &str, status: StatusCode, title: &str, message: &str| {
        if let Some(retry) = s.authority.refused_unauthenticated(&ip, code, now) {
            let mut r = problem(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                "Too many failed sign-ins came from your address. Wait a minute, then sign in again.",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(retry));
            return r;
        }
        problem(status, title, message)
    };
    let c = &s.console;
    let pending = cookie_value(req.headers(), LOGIN_COOKIE)
        .and_then(|v| Pending::from_cookie(v, &c.secret, now));
    let Some(pending) = pending else {
        return refuse(
            "console_signin_expired",
            StatusCode::BAD_REQUEST,
            "Sign-in expired",
            "This sign-in was not begun in this browser in the last 10 minutes. Sign in again.",
        );
    };
    let Some(Query(q)) = query else {
        return refuse(
            "console_signin_invalid",
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The provider's answer was malformed. Sign in again.",
        );
    };
    if !q
        .state
        .as_deref()
        .is_some_and(|st| same(st, &pending.state))
    {
        return refuse(
            "console_signin_state",
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The provider's answer does not belong to the sign-in this browser began. Sign in again.",
        );
    }
    if let Some(error) = q.error {
        let message = format!(
            "The provider refused the sign-in ({}). Sign in again, or ask your administrator.",
            ca_core::escape_control(&error)
        );
        return refuse(
            "console_signin_refused",
            StatusCode::BAD_REQUEST,
            "Sign-in refused",
            &message,
        );
    }
    let Some(code) = q.code.filter(|c| !c.is_empty() && c.len() <= 4096) else {
        return refuse(
            "console_signin_invalid",
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The provider's answer has no code. Sign in again.",
        );
    };
    let endpoints = match c.endpoints().await {
        Ok(e) => e,
        Err(e) => return unavailable("reading the provider's discovery document", e),
    };
    let verifier = pending.verifier(&c.secret);
    let redirect_uri = c.redirect_uri();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("client_id", c.config.client_id.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    let id_token = match crate::oidc::post_form_json(&c.idp, &endpoints.token, &form).await {
        Ok((200, body)) => body
            .get("id_token")
            .and_then(|t| t.as_str())
            .map(str::to_owned),
        Ok((status, body)) => {
            tracing::info!(status, error = %body.get("error").unwrap_or(&serde_json::Value::Null), "console: the provider refused a code");
            None
        }
        Err(e) => return unavailable("redeeming a sign-in code", e),
    };
    let Some(id_token) = id_token else {
        return refuse(
            "console_signin_code",
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The provider did not accept the sign-in code (it may have been used already). Sign in again.",
        );
    };
    let verified = match s.authority.verifier.verify_full(&id_token, now).await {
        Ok(v) => v,
        Err(e) if e.is_unavailable() => {
            return unavailable("verifying an ID token", e);
        }
        Err(e) => {
            tracing::info!(error = %e, "console: an ID token did not verify");
            return refuse(
                e.code(),
                StatusCode::UNAUTHORIZED,
                "Sign-in failed",
                "The provider's ID token did not verify at this CA. Ask your administrator.",
            );
        }
    };
    let identity = verified.identity;
    let nonce = identity.claims.get("nonce").and_then(|n| n.as_str());
    if !nonce.is_some_and(|n| same(n, &pending.nonce(&c.secret))) {
        return refuse(
            "console_signin_nonce",
            StatusCode::UNAUTHORIZED,
            "Sign-in failed",
            "The ID token was not issued for this sign-in. Sign in again.",
        );
    }
    if identity.kind != ca_core::IdentityKind::Human {
        return problem(
            StatusCode::FORBIDDEN,
            "People only",
            "The console is for people; this identity is a workload.",
        );
    }
    if s.authority
        .revocations
        .get()
        .subject_revoked(&identity.issuer, &identity.subject)
    {
        return problem(
            StatusCode::FORBIDDEN,
            "Your access was revoked",
            "An operator revoked your identity at this CA. Ask them why.",
        );
    }
    if let Err(retry) = s.authority.check_rate(&format!(
        "console\0{}\0{}",
        identity.issuer, identity.subject
    )) {
        let mut r = problem(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-ins",
            "You signed in too often in the last minute. Wait a moment, then sign in again.",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(retry));
        return r;
    }
    let event = ca_core::audit::AuditEvent {
        time: now,
        action: "console_signin".into(),
        outcome: "issued".into(),
        issuer: Some(identity.issuer.clone()),
        subject: Some(identity.subject.clone()),
        email: identity.email.clone(),
        source_ip: Some(ip.clone()),
        ..Default::default()
    };
    if let Err(e) = s.authority.audit.append(event, None).await {
        return unavailable("auditing a sign-in", e);
    }
    let id = super::signin::random_id();
    let expires_at = now + c.config.max_session.as_secs();
    let idle = c.config.idle_timeout.as_secs();
    let store = c.sessions.clone();
    let new_id = id.clone();
    if let Err(e) = blocking(move || store.create(&new_id, &identity, now, expires_at, idle)).await
    {
        return unavailable("storing a session", e);
    }
    let mut r = see_other("/ui/");
    let h = r.headers_mut();
    h.append(header::SET_COOKIE, c.cookie(SESSION_COOKIE, &id, None));
    h.append(header::SET_COOKIE, c.clear(LOGIN_COOKIE));
    r
}

/// The session of a POST, its CSRF token checked (the form's `csrf` field,
/// bound to the session id) and, when the browser says which site the form
/// came from, its `Origin` too.
async fn post_session(s: &UiState, req: Request) -> Result<Session, Response> {
    let (parts, body) = req.into_parts();
    let me = session(s, &parts.headers).await?;
    let forbidden = || {
        problem(
            StatusCode::FORBIDDEN,
            "Form refused",
            "This form did not come from your console page (its security token is missing or wrong). Reload the page and try again.",
        )
    };
    // `Origin: null` is what browsers send from our own pages too (their
    // `Referrer-Policy: no-referrer`): then the token alone decides.
    if let Some(origin) = parts.headers.get(header::ORIGIN)
        && origin.as_bytes() != b"null"
    {
        let ours = s.console.config.public_url.origin().ascii_serialization();
        if origin.as_bytes() != ours.as_bytes() {
            return Err(forbidden());
        }
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return Err(forbidden());
    };
    let csrf = form_field(&bytes, "csrf");
    let expected = s.console.secret.csrf(&me.id);
    if !csrf.is_some_and(|t| same(&t, &expected)) {
        return Err(forbidden());
    }
    Ok(me)
}

/// Field `name` of an `application/x-www-form-urlencoded` body (parsed by
/// the URL parser's query rules, which are that format's).
fn form_field(body: &[u8], name: &str) -> Option<String> {
    let mut url = reqwest::Url::parse("http://form.invalid/").ok()?;
    url.set_query(Some(std::str::from_utf8(body).ok()?));
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `POST /ui/logout`: end the session server-side (its row deleted, so the
/// cookie opens nothing even if kept), then clear the cookie.
pub(super) async fn logout(State(s): State<UiState>, req: Request) -> Response {
    let me = match post_session(&s, req).await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let store = s.console.sessions.clone();
    if let Err(e) = blocking(move || store.delete(&me.id)).await {
        return unavailable("ending a session", e);
    }
    let mut r = see_other("/ui/login?signed_out=1");
    r.headers_mut()
        .append(header::SET_COOKIE, s.console.clear(SESSION_COOKIE));
    r
}
