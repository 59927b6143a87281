//! The console's page toolkit: render a template, the error pages (and a
//! signed-in person's refused action), where a request came from, and
//! running a blocking store call off the runtime.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Request};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::nav::Nav;
use crate::elevation::ElevationOpError;

#[derive(Template)]
#[template(path = "console/problem.html")]
struct ProblemPage<'a> {
    title: &'a str,
    message: &'a str,
}

pub(super) fn render(status: StatusCode, page: &impl Template) -> Response {
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

pub(super) fn unavailable(what: &str, e: impl std::fmt::Display) -> Response {
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

pub(super) fn source_ip(req: &Request) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| ci.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Run a store call (sessions, audit reads) off the async runtime.
pub(super) async fn blocking<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Template)]
#[template(path = "console/refused.html")]
struct RefusedPage<'a> {
    nav: Nav,
    title: &'a str,
    message: &'a str,
    reasons: &'a [String],
    back: &'a str,
    back_label: &'a str,
}

/// A refused action for a signed-in person: what happened, the policy's
/// reasons if any, and the way back (`back`, a page named `back_label`).
pub(super) struct Refused<'a> {
    pub(super) title: &'a str,
    pub(super) back: &'a str,
    pub(super) back_label: &'a str,
}

impl Refused<'_> {
    /// The page for an elevation call's refusal, with the status the API
    /// gives it (`crate::status::elevation`); the database or the audit log
    /// being unavailable is [`unavailable`], never the internal detail.
    pub(super) fn elevation(&self, nav: Nav, e: &ElevationOpError) -> Response {
        let status = crate::status::elevation(e);
        if status.is_server_error() {
            return unavailable("an elevation call", e);
        }
        let reasons = match e {
            ElevationOpError::Denied { reasons }
            | ElevationOpError::NotApprover { reasons, .. } => reasons.as_slice(),
            _ => &[],
        };
        let message = if reasons.is_empty() {
            e.to_string()
        } else {
            "The CA's policy says:".to_owned()
        };
        self.page(status, nav, &message, reasons)
    }

    /// The page, with `message` and `reasons`.
    pub(super) fn page(
        &self,
        status: StatusCode,
        nav: Nav,
        message: &str,
        reasons: &[String],
    ) -> Response {
        render(
            status,
            &RefusedPage {
                nav,
                title: self.title,
                message,
                reasons,
                back: self.back,
                back_label: self.back_label,
            },
        )
    }
}
