//! Who is asking: the request's live session (`session`), the person's
//! console rights for this request (`Person`), and a POST's CSRF and Origin
//! checks (`post_session`). Every console route but sign-in goes through here.

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use ca_core::VerifiedIdentity;

use super::nav::Nav;
use super::render::{blocking, problem, source_ip, unavailable};
use super::rights::{Capability, Rights};
use super::session::StoredSession;
use super::signin::same;
use super::state::{SESSION_COOKIE, UiState, cookie_value, see_other};
use crate::clock::now_unix;
use crate::elevation::{Caller, Channel};

/// Largest form body the console reads (its forms carry a token or two).
const MAX_FORM_BYTES: usize = 8 * 1024;

/// A signed-in person: the session id (from the cookie) and who it is.
pub(super) struct Session {
    pub(super) id: String,
    pub(super) identity: VerifiedIdentity,
}

/// The request's live session, or the answer to give instead: to the
/// sign-in page when there is none or it ended (its row then deleted, so an
/// ended session never comes back), 403 when the person was revoked.
pub(super) async fn session(s: &UiState, headers: &HeaderMap) -> Result<Session, Response> {
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

/// A signed-in person on one request: the session, who it is, where the
/// request came from, and what the policy lets them do right now.
pub(super) struct Person {
    pub(super) session_id: String,
    pub(super) identity: VerifiedIdentity,
    pub(super) source_ip: String,
    pub(super) rights: Rights,
}

impl Person {
    /// This person as the elevation service's caller, through the console.
    pub(super) fn caller(&self) -> Caller<'_> {
        Caller {
            identity: &self.identity,
            source_ip: &self.source_ip,
            channel: Channel::Console,
        }
    }

    /// The form token of this session.
    pub(super) fn csrf(&self, s: &UiState) -> String {
        s.console.secret.csrf(&self.session_id)
    }

    /// The navigation bar for this person on the page at `current`.
    pub(super) fn nav(&self, s: &UiState, current: &str) -> Nav {
        Nav::new(self.rights, current, self.csrf(s))
    }
}

/// The request's person, who must hold `cap` to see the page (else a 403
/// page that says so). Rights come from `ui_decision` on every request, so
/// a policy change applies at once; any doubt gives none.
/// (Takes what it needs from `req` before waiting: a request body is not
/// `Sync`, so a borrowed request cannot be held across an await.)
pub(super) fn person<'a>(
    s: &'a UiState,
    req: &Request,
    cap: Capability,
) -> impl Future<Output = Result<Person, Response>> + Send + 'a {
    let ip = source_ip(req);
    let headers = req.headers().clone();
    async move {
        let me = session(s, &headers).await?;
        let person = with_rights(s, me, ip);
        if !person.rights.has(cap) {
            return Err(not_yours());
        }
        Ok(person)
    }
}

fn with_rights(s: &UiState, me: Session, source_ip: String) -> Person {
    let policy = s.authority.policy.snapshot();
    let rights = Rights::decide(&policy, &me.identity, &source_ip, now_unix()).unwrap_or_else(|e| {
        tracing::warn!(error = %e, subject = %me.identity.subject, "console: no rights (fail closed)");
        Rights::NONE
    });
    Person {
        session_id: me.id,
        identity: me.identity,
        source_ip,
        rights,
    }
}

fn not_yours() -> Response {
    problem(
        StatusCode::FORBIDDEN,
        "Not available to you",
        "The CA's policy does not give you this page or action. If you need it, ask a CA operator to add you to the right group.",
    )
}

/// A POST's form fields (`application/x-www-form-urlencoded`).
pub(super) struct Form(axum::body::Bytes);

#[expect(dead_code, reason = "read by the pages that act, which come next")]
impl Form {
    /// Field `name`, if present (parsed by the URL parser's query rules,
    /// which are that format's).
    pub(super) fn field(&self, name: &str) -> Option<String> {
        form_field(&self.0, name)
    }
}

/// The person of a POST that needs `cap`: its session, its CSRF token (the
/// form's `csrf` field, bound to the session id) and, when the browser says
/// which site the form came from, its `Origin`. A signed-in person without
/// `cap` is refused with 403 and an audit row: the button was not shown to
/// them, so the POST was forged or stale.
pub(super) async fn post_person(
    s: &UiState,
    req: Request,
    cap: Capability,
) -> Result<(Person, Form), Response> {
    let ip = source_ip(&req);
    let path = req.uri().path().to_owned();
    let (me, form) = post_session(s, req).await?;
    let person = with_rights(s, me, ip);
    if !person.rights.has(cap) {
        let mut event = person.caller().event("console_action", now_unix());
        event.outcome = "denied".into();
        event.code = Some("console_forbidden".into());
        event.decision_reasons = vec![format!(
            "the policy's ui_decision does not give {cap}, which {path} needs"
        )];
        event.details = Some(serde_json::json!({"path": path, "capability": cap.name()}));
        if let Err(e) = s.authority.audit.append(event, None).await {
            return Err(unavailable("auditing a refused console action", e));
        }
        return Err(not_yours());
    }
    Ok((person, form))
}

/// The session of a POST, its CSRF token and `Origin` checked (see
/// [`post_person`]), and its form.
pub(super) async fn post_session(s: &UiState, req: Request) -> Result<(Session, Form), Response> {
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
    Ok((me, Form(bytes)))
}

/// Field `name` of an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    let mut url = reqwest::Url::parse("http://form.invalid/").ok()?;
    url.set_query(Some(std::str::from_utf8(body).ok()?));
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
