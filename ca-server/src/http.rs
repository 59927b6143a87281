//! The HTTP API: routes, body limits, and the mapping from errors to status
//! codes. Only this module knows status codes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ca_core::wire::{CaKeys, ClientConfig, ErrorBody, ErrorDetail};
use http_body_util::BodyExt as _;

use crate::elevation::{Caller, Channel, ElevationOpError};
use crate::issue::host::HostError;
use crate::issue::{Authority, IssueError, RequestContext};

/// Shared state of the HTTP layer.
pub struct AppState {
    pub authority: Arc<Authority>,
    /// What `GET /v1/config` returns; `None` answers 404.
    pub client_config: Option<ClientConfig>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// Extra routes (the dev OpenID provider in `jitssh-ca dev`).
    pub extra: Option<Router>,
    /// The web console under `/ui/` (`[ui] enabled`).
    pub console: Option<Arc<crate::console::Console>>,
}

/// The whole API as a `Router`, so tests can drive it in-process.
pub fn app(state: Arc<AppState>) -> Router {
    let timeout = state.request_timeout;
    let extra = state.extra.clone();
    let console = state
        .console
        .clone()
        .map(|c| crate::console::router(state.authority.clone(), c));
    let mut router = Router::new()
        .route("/v1/ca", get(ca_keys))
        .route("/v1/ca/user.pub", get(user_ca_pub))
        .route("/v1/ca/host.pub", get(host_ca_pub))
        .route("/v1/config", get(client_config))
        .route("/v1/krl", get(krl))
        .route("/v1/krl/hosts", get(host_krl))
        .route("/v1/certs/user", post(user_cert))
        .route("/v1/certs/host", post(host_cert))
        .route("/v1/certs/host/challenge", post(host_challenge))
        .route("/v1/certs/host/renew", post(host_renew))
        .route("/v1/elevations", post(elevation_create).get(elevation_list))
        .route("/v1/elevations/{id}", get(elevation_get))
        .route("/v1/elevations/{id}/{action}", post(elevation_action))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see the API in README.md",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "wrong HTTP method for this endpoint",
            )
        })
        .with_state(state);
    if let Some(extra) = extra {
        router = router.merge(extra);
    }
    if let Some(console) = console {
        router = router.merge(console);
    }
    router.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        timeout,
    ))
}

/// An error answer: status, stable code, a message that says what to do.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
    retry_after: Option<u64>,
    /// Send `Connection: close`: the request was not read to its end, so
    /// the connection cannot carry another one.
    close: bool,
}

impl ApiError {
    /// An operation's refusal: its stable code and message; a server-side
    /// failure is logged (with `what` failed) and 503 asks to retry in 5 s.
    fn refusal(status: StatusCode, e: &dyn crate::audit::Refused, what: &str) -> Self {
        if status.is_server_error() {
            tracing::warn!(error = %e, code = e.code(), "{what}");
        }
        let mut api = ApiError::new(status, e.code(), e.to_string());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            api.retry_after = Some(5);
        }
        api
    }

    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: ErrorDetail {
                    code: code.into(),
                    message: message.into(),
                    reasons: vec![],
                },
            },
            retry_after: None,
            close: false,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.close {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<IssueError> for ApiError {
    fn from(e: IssueError) -> Self {
        let status = match &e {
            IssueError::MissingToken | IssueError::Replay => StatusCode::UNAUTHORIZED,
            IssueError::Token(t) if t.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            IssueError::Token(_) => StatusCode::UNAUTHORIZED,
            IssueError::BadBody(_) | IssueError::Request(_) | IssueError::CaKey => {
                StatusCode::BAD_REQUEST
            }
            IssueError::RateLimited { .. } | IssueError::SourceRateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            IssueError::LoginName(l) if l.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            IssueError::LoginName(_) => StatusCode::FORBIDDEN,
            IssueError::Denied { .. } | IssueError::PolicyError(_) | IssueError::Revoked(_) => {
                StatusCode::FORBIDDEN
            }
            IssueError::AuditUnavailable(_) | IssueError::SignerUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            IssueError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut api = ApiError::refusal(status, &e, "request failed");
        match e {
            IssueError::Denied { reasons } => api.body.error.reasons = reasons,
            IssueError::RateLimited { retry_after_secs }
            | IssueError::SourceRateLimited { retry_after_secs } => {
                api.retry_after = Some(retry_after_secs)
            }
            _ => {}
        }
        api
    }
}

impl From<HostError> for ApiError {
    fn from(e: HostError) -> Self {
        use ca_core::host::{HostRequestError, RenewalError};
        let status = match &e {
            HostError::Request(HostRequestError::Token(_))
            | HostError::TokenUnknown
            | HostError::TokenExpired
            | HostError::TokenUsed
            | HostError::ChallengeInvalid
            | HostError::Renewal(
                RenewalError::NotHost
                | RenewalError::WrongCa
                | RenewalError::NotValidNow { .. }
                | RenewalError::Hostnames(_)
                | RenewalError::Proof,
            ) => StatusCode::UNAUTHORIZED,
            HostError::BadBody(_)
            | HostError::Request(_)
            | HostError::CaKey
            | HostError::Renewal(
                RenewalError::Certificate(_)
                | RenewalError::Signature(_)
                | RenewalError::KeyType(_),
            ) => StatusCode::BAD_REQUEST,
            HostError::HostnameNotAllowed { .. }
            | HostError::Revoked(_)
            | HostError::Denied { .. }
            | HostError::PolicyError(_) => StatusCode::FORBIDDEN,
            HostError::AuditUnavailable(_) | HostError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            HostError::SourceRateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            HostError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut api = ApiError::refusal(status, &e, "host request failed");
        match e {
            HostError::Denied { reasons } => api.body.error.reasons = reasons,
            HostError::SourceRateLimited { retry_after_secs } => {
                api.retry_after = Some(retry_after_secs)
            }
            _ => {}
        }
        api
    }
}

impl From<ElevationOpError> for ApiError {
    fn from(e: ElevationOpError) -> Self {
        let status = crate::status::elevation(&e);
        let mut api = ApiError::refusal(status, &e, "elevation request failed");
        match e {
            ElevationOpError::Denied { reasons }
            | ElevationOpError::NotApprover { reasons, .. } => api.body.error.reasons = reasons,
            _ => {}
        }
        api
    }
}

/// Verify the bearer ID token of an elevation call. Unlike a certificate
/// request this does not spend the token: reading and deciding requests
/// issues nothing.
async fn caller_identity(
    s: &AppState,
    source_ip: &str,
    headers: &HeaderMap,
) -> Result<ca_core::VerifiedIdentity, ApiError> {
    let verified = async {
        let token = bearer_token(headers)?.ok_or(IssueError::MissingToken)?;
        Ok::<_, ApiError>(
            s.authority
                .verifier
                .verify_full(&token, crate::clock::now_unix())
                .await
                .map_err(IssueError::Token)?,
        )
    }
    .await
    .map_err(|e| unauthenticated(s, source_ip, e))?;
    // Elevation calls share the per-identity limit's rate, in their own bucket.
    s.authority
        .check_elevation_rate(&verified.identity)
        .map_err(ElevationOpError::RateLimited)?;
    Ok(verified.identity)
}

async fn elevation_create(
    State(s): State<Arc<AppState>>,
    req: Request,
) -> Result<(StatusCode, axum::Json<ca_core::wire::Elevation>), ApiError> {
    let ip = source_ip(&req);
    let identity = caller_identity(&s, &ip, req.headers()).await?;
    let body = read_body(req.into_body(), s.max_body_bytes).await?;
    let caller = Caller {
        identity: &identity,
        source_ip: &ip,
        channel: Channel::Api,
    };
    let e = s
        .authority
        .elevations
        .create(&caller, &body, crate::clock::now_unix())
        .await?;
    Ok((StatusCode::CREATED, axum::Json(e)))
}

#[derive(serde::Deserialize)]
struct ListQuery {
    state: Option<String>,
}

async fn elevation_list(
    State(s): State<Arc<AppState>>,
    query: Result<axum::extract::Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Result<axum::Json<ca_core::wire::ElevationList>, ApiError> {
    let query = query.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("bad query string: {e}; use ?state=pending"),
        )
    })?;
    let ip = source_ip(&req);
    let identity = caller_identity(&s, &ip, req.headers()).await?;
    let caller = Caller {
        identity: &identity,
        source_ip: &ip,
        channel: Channel::Api,
    };
    let elevations =
        s.authority
            .elevations
            .list(&caller, query.state.as_deref(), crate::clock::now_unix())?;
    Ok(axum::Json(ca_core::wire::ElevationList { elevations }))
}

async fn elevation_get(
    State(s): State<Arc<AppState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    req: Request,
) -> Result<axum::Json<ca_core::wire::Elevation>, ApiError> {
    let ip = source_ip(&req);
    let identity = caller_identity(&s, &ip, req.headers()).await?;
    let caller = Caller {
        identity: &identity,
        source_ip: &ip,
        channel: Channel::Api,
    };
    Ok(axum::Json(s.authority.elevations.get(
        &caller,
        &id,
        crate::clock::now_unix(),
    )?))
}

async fn elevation_action(
    State(s): State<Arc<AppState>>,
    axum::extract::Path((id, action)): axum::extract::Path<(String, String)>,
    req: Request,
) -> Result<axum::Json<ca_core::wire::Elevation>, ApiError> {
    if !matches!(action.as_str(), "approve" | "deny" | "cancel") {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint: use /v1/elevations/{id}/approve, /deny or /cancel",
        ));
    }
    let ip = source_ip(&req);
    let identity = caller_identity(&s, &ip, req.headers()).await?;
    let body = read_body(req.into_body(), s.max_body_bytes).await?;
    let caller = Caller {
        identity: &identity,
        source_ip: &ip,
        channel: Channel::Api,
    };
    let now = crate::clock::now_unix();
    let el = &s.authority.elevations;
    let e = match action.as_str() {
        "approve" => el.approve(&caller, &id, &body, now).await?,
        "deny" => el.deny(&caller, &id, &body, now).await?,
        _ => el.cancel(&caller, &id, &body, now).await?,
    };
    // A grant ended early revoked its certificates: serve them in the KRL now.
    if e.state == ca_core::elevation::ElevationState::Revoked {
        s.authority.revocations.refresh_now().await;
    }
    Ok(axum::Json(e))
}

async fn ca_keys(State(s): State<Arc<AppState>>) -> axum::Json<CaKeys> {
    let p = &s.authority.published;
    axum::Json(CaKeys {
        user_ca: public_lines(&p.user, "jitssh user CA"),
        host_ca: public_lines(&p.host, "jitssh host CA"),
    })
}

/// OpenSSH lines for `keys`, the signing key first. During a rotation the
/// next and the retiring key are listed too, so hosts and clients trust a
/// key before it signs and until what it signed has expired.
fn public_lines(keys: &[ssh_key::public::KeyData], comment: &str) -> Vec<String> {
    keys.iter()
        .filter_map(|k| {
            ssh_key::PublicKey::new(k.clone(), comment)
                .to_openssh()
                .ok()
        })
        .collect()
}

async fn user_ca_pub(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    let mut body = public_lines(&s.authority.published.user, "jitssh user CA").join("\n");
    body.push('\n');
    text(body)
}

async fn host_ca_pub(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    let mut body = public_lines(&s.authority.published.host, "jitssh host CA").join("\n");
    body.push('\n');
    text(body)
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// The OpenSSH KRL for sshd's `RevokedKeys` (binary, PROTOCOL.krl).
async fn krl(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    krl_for(&s, &s.authority.published.user)
}

/// The OpenSSH KRL for ssh's `RevokedHostKeys`: revoked host certificates
/// (by serial and key ID, under every published host CA key) and revoked keys.
async fn host_krl(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    krl_for(&s, &s.authority.published.host)
}

fn krl_for(s: &AppState, cas: &[ssh_key::public::KeyData]) -> Result<Response, ApiError> {
    let bytes = s
        .authority
        .revocations
        .get()
        .krl(cas, crate::clock::now_unix())
        .map_err(|e| {
            tracing::error!(error = %e, "cannot build KRL");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "cannot build the revocation list",
            )
        })?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

async fn client_config(
    State(s): State<Arc<AppState>>,
) -> Result<axum::Json<ClientConfig>, ApiError> {
    s.client_config.clone().map(axum::Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "login_not_configured",
            "this CA has no [login] section; ask its operator for the issuer and client ID",
        )
    })
}

async fn user_cert(
    State(s): State<Arc<AppState>>,
    req: Request,
) -> Result<axum::Json<ca_core::wire::UserCertResponse>, ApiError> {
    let ctx = RequestContext {
        source_ip: source_ip(&req),
    };
    let bearer = bearer_token(req.headers()).map_err(|e| unauthenticated(&s, &ctx.source_ip, e))?;
    let body = read_body(req.into_body(), s.max_body_bytes).await?;
    let resp = s
        .authority
        .issue_user_cert(&ctx, bearer.as_deref(), &body)
        .await?;
    Ok(axum::Json(resp))
}

/// Enrol a host with a join token. The Authorization header is deliberately
/// never read: no user or workload ID token can obtain a host certificate.
async fn host_cert(
    State(s): State<Arc<AppState>>,
    req: Request,
) -> Result<axum::Json<ca_core::wire::HostCertResponse>, ApiError> {
    let ctx = RequestContext {
        source_ip: source_ip(&req),
    };
    let body = read_body(req.into_body(), s.max_body_bytes).await?;
    Ok(axum::Json(s.authority.issue_host_cert(&ctx, &body).await?))
}

/// A fresh single-use challenge for `host_renew`.
async fn host_challenge(
    State(s): State<Arc<AppState>>,
) -> Result<axum::Json<ca_core::wire::HostChallenge>, ApiError> {
    Ok(axum::Json(s.authority.host_challenge()?))
}

/// Renew a host certificate with the current one and a signed challenge;
/// like `host_cert`, never reads the Authorization header.
async fn host_renew(
    State(s): State<Arc<AppState>>,
    req: Request,
) -> Result<axum::Json<ca_core::wire::HostCertResponse>, ApiError> {
    let ctx = RequestContext {
        source_ip: source_ip(&req),
    };
    let body = read_body(req.into_body(), s.max_body_bytes).await?;
    Ok(axum::Json(s.authority.renew_host_cert(&ctx, &body).await?))
}

fn source_ip(req: &Request) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| ci.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// A refusal before authentication found here (a malformed Authorization
/// header, an elevation call whose token does not verify): counted for its
/// source like the issuance path's own, never an audit row each; 429 once
/// the source is past its limit.
fn unauthenticated(s: &AppState, source_ip: &str, e: ApiError) -> ApiError {
    match s.authority.refused_unauthenticated(
        source_ip,
        &e.body.error.code,
        crate::clock::now_unix(),
    ) {
        Some(retry_after_secs) => IssueError::SourceRateLimited { retry_after_secs }.into(),
        None => e,
    }
}

/// `Authorization: Bearer <token>`; absent → `None`, malformed → 401.
fn bearer_token(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "token_malformed",
            "Authorization header is not ASCII",
        )
    })?;
    match v.split_once(' ') {
        Some((scheme, tok)) if scheme.eq_ignore_ascii_case("bearer") && !tok.trim().is_empty() => {
            Ok(Some(tok.trim().to_owned()))
        }
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "token_missing",
            "Authorization header must be `Bearer <OIDC ID token>`",
        )),
    }
}

/// How much of an oversized body is read and thrown away before the 413.
///
/// Closing a connection with unread bytes in its receive buffer makes the
/// kernel send RST, and a client still writing its body then sees "connection
/// reset" instead of our answer. Draining up to this much (bounded in time
/// too) means a client that sent a modestly oversized request reads the
/// precise `request_too_large` error and keeps its connection; beyond it the
/// answer says `Connection: close`, so no client pool reuses a connection
/// whose request was never read to its end. Drained bytes are not kept.
const OVERSIZED_DRAIN_BYTES: usize = 1024 * 1024;
const OVERSIZED_DRAIN_TIME: Duration = Duration::from_secs(2);

async fn read_body(mut body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let unreadable = |e: axum::Error| {
        let mut e = ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("could not read request body: {e}"),
        );
        e.close = true;
        e
    };
    let too_large = |close: bool| {
        let mut e = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("request body is larger than {limit} bytes"),
        );
        e.close = close;
        e
    };
    // A Content-Length beyond what would be drained: answer at once.
    let Ok(announced) = usize::try_from(axum::body::HttpBody::size_hint(&body).lower()) else {
        return Err(too_large(true));
    };
    if announced > limit.saturating_add(OVERSIZED_DRAIN_BYTES) {
        return Err(too_large(true));
    }
    let mut buf = Vec::with_capacity(announced.min(limit));
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(unreadable)?.into_data() else {
            continue; // trailers carry nothing we read
        };
        if buf.len() + data.len() > limit {
            let ended = tokio::time::timeout(OVERSIZED_DRAIN_TIME, drain(body))
                .await
                .unwrap_or(false);
            return Err(too_large(!ended));
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf)
}

/// Reads and discards up to [`OVERSIZED_DRAIN_BYTES`] of `body`; true when
/// the body ended within that.
async fn drain(mut body: Body) -> bool {
    let mut seen = 0usize;
    while seen <= OVERSIZED_DRAIN_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len()),
            Some(Err(_)) => return false,
            None => return true,
        }
    }
    false
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    let checks = s.authority.readiness().await;
    let ok = checks.iter().all(|(_, r)| r.is_ok());
    let body: serde_json::Map<String, serde_json::Value> = checks
        .into_iter()
        .map(|(name, r)| {
            (
                name.to_string(),
                serde_json::Value::from(r.err().unwrap_or_else(|| "ok".into())),
            )
        })
        .collect();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(serde_json::json!({"ready": ok, "checks": body})),
    )
        .into_response()
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    // Read at scrape time, so the gauge follows reloads.
    let engines: Vec<(&'static str, &'static str)> = s
        .authority
        .policy
        .snapshot()
        .engines()
        .into_iter()
        .map(|(entry, engine)| (entry, engine.as_str()))
        .collect();
    s.authority.metrics.set_policy_engines(&engines);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.authority.metrics.render(),
    )
        .into_response()
}
