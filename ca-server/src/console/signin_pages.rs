//! The sign-in pages: the page itself, the start at the provider, the
//! callback that makes a session, and logout.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;

use super::auth::post_session;
use super::render::{blocking, problem, render, source_ip, unavailable};
use super::signin::{Pending, same};
use super::state::{LOGIN_COOKIE, SESSION_COOKIE, UiState, cookie_value, see_other};
use crate::clock::now_unix;

#[derive(Template)]
#[template(path = "console/signin.html")]
struct SigninPage<'a> {
    issuer: &'a str,
    note: Option<&'static str>,
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
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    // A confidential client authenticates with HTTP Basic and so must not
    // also name itself in the body (RFC 6749 §2.3: one method per request).
    let basic = c
        .client_secret
        .as_deref()
        .map(|secret| (c.config.client_id.as_str(), secret));
    if basic.is_none() {
        form.push(("client_id", c.config.client_id.as_str()));
    }
    let id_token = match crate::oidc::post_form_json(&c.idp, &endpoints.token, &form, basic).await {
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

/// `POST /ui/logout`: end the session server-side (its row deleted, so the
/// cookie opens nothing even if kept), then clear the cookie.
pub(super) async fn logout(State(s): State<UiState>, req: Request) -> Response {
    let (me, _) = match post_session(&s, req).await {
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
