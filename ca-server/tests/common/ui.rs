//! Driving the console in-process as a browser would: requests with
//! cookies, forms and Origin, and signing in through the dev provider.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};

use ca_server::dev::idp::DevUser;

use super::{AUD, Harness};

/// The provider's first user in the console tests: in `dba`, `oncall` and
/// `sre`, so the default policy lets her request roles but decide none.
pub fn alice() -> DevUser {
    DevUser {
        username: "alice".into(),
        email: "alice@example.com".into(),
        groups: vec!["dba".into(), "oncall".into(), "sre".into()],
    }
}

/// One answer: status, headers and the body as text.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    /// The `Set-Cookie` line for `name`.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|c| c.starts_with(&format!("{name}=")))
    }

    /// The value `Set-Cookie` gives `name`.
    pub fn cookie_value(&self, name: &str) -> Option<String> {
        let line = self.set_cookie(name)?;
        let first = line.split(';').next().unwrap();
        Some(first.split_once('=').unwrap().1.to_owned())
    }

    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a CSRF field")
            + 19;
        self.body[at..at + 43].to_owned()
    }
}

pub async fn send(
    h: &Harness,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
    origin: Option<&str>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    if let Some(o) = origin {
        req = req.header(header::ORIGIN, o);
    }
    let body = match form {
        Some(f) => {
            req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            Body::from(f.to_owned())
        }
        None => Body::empty(),
    };
    let (status, bytes, headers) = h.send(req.body(body).unwrap()).await;
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Begin a sign-in and let the provider's user through: the pending
/// sign-in cookie and the callback path (with code and state) it returns to.
pub async fn through_the_provider(h: &Harness) -> (String, String) {
    through_the_provider_as(h, None).await
}

/// [`through_the_provider`] as the provider's user `login_hint` (its first
/// user when `None`).
pub async fn through_the_provider_as(h: &Harness, login_hint: Option<&str>) -> (String, String) {
    let start = send(h, "GET", "/ui/login/start", None, None, None).await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.body);
    let pending = start
        .cookie_value("jitssh_login")
        .expect("a pending sign-in cookie");
    let authorize = reqwest::Url::parse(start.location()).unwrap();
    assert!(
        authorize.as_str().starts_with(h.idp.issuer()),
        "{authorize}"
    );
    let q: std::collections::HashMap<_, _> = authorize.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], AUD);
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q["redirect_uri"].ends_with("/ui/callback"));
    let idp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut authorize = authorize;
    if let Some(user) = login_hint {
        authorize.query_pairs_mut().append_pair("login_hint", user);
    }
    let back = idp.get(authorize).send().await.unwrap();
    assert!(back.status().is_redirection(), "{}", back.status());
    let back = reqwest::Url::parse(back.headers()["location"].to_str().unwrap()).unwrap();
    (
        pending,
        format!("{}?{}", back.path(), back.query().unwrap()),
    )
}

/// Sign in as the provider's user: the console's redirect to the provider,
/// the provider's redirect back, the callback. The session cookie's value.
pub async fn sign_in(h: &Harness) -> String {
    sign_in_as(h, None).await
}

/// [`sign_in`] as the provider's user `login_hint`.
pub async fn sign_in_as(h: &Harness, login_hint: Option<&str>) -> String {
    let (pending, path) = through_the_provider_as(h, login_hint).await;
    let done = callback(h, &pending, &path).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), "/ui/");
    assert!(
        done.set_cookie("jitssh_login")
            .unwrap()
            .contains("Max-Age=0"),
        "the pending sign-in is cleared"
    );
    done.cookie_value("jitssh_session")
        .expect("a session cookie")
}

pub fn sessions(h: &Harness) -> u64 {
    h.state
        .console
        .as_ref()
        .unwrap()
        .sessions()
        .count()
        .unwrap()
}

pub fn with_session(id: &str) -> String {
    format!("jitssh_session={id}")
}

/// The browser's return to the console's callback at `path`, carrying the
/// pending sign-in cookie `pending`.
pub async fn callback(h: &Harness, pending: &str, path: &str) -> Answer {
    send(
        h,
        "GET",
        path,
        Some(&format!("jitssh_login={pending}")),
        None,
        None,
    )
    .await
}

/// A dev-provider user `name` (`name@example.com`) in `groups`.
pub fn dev_user(name: &str, groups: &[&str]) -> DevUser {
    DevUser {
        username: name.into(),
        email: format!("{name}@example.com"),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

/// A page as the person of `session` sees it.
pub async fn get(h: &Harness, session: &str, path: &str) -> Answer {
    send(h, "GET", path, Some(&with_session(session)), None, None).await
}

/// A form POST by the person of `session`, with their CSRF token (read
/// from My access) before `fields`.
pub async fn post_form(h: &Harness, session: &str, path: &str, fields: &str) -> Answer {
    let csrf = get(h, session, "/ui/").await.csrf();
    post_form_with(h, session, &csrf, path, fields).await
}

/// [`post_form`] with a token already read.
pub async fn post_form_with(
    h: &Harness,
    session: &str,
    csrf: &str,
    path: &str,
    fields: &str,
) -> Answer {
    send(
        h,
        "POST",
        path,
        Some(&with_session(session)),
        Some(&format!("csrf={csrf}&{fields}")),
        None,
    )
    .await
}

/// The stored state of elevation `id` now (`pending`, `approved`, ...).
pub fn elevation_state(h: &Harness, id: &str) -> String {
    h.state
        .authority
        .elevations
        .show(id, super::now())
        .unwrap()
        .state
        .as_str()
        .to_owned()
}
