//! The console's page toolkit: render a template, the error pages, where a
//! request came from, and running a blocking store call off the runtime.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Request};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

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
