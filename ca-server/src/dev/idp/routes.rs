//! The dev IdP's endpoints: discovery and keys, `/authorize` (code + PKCE),
//! `/token` (code, refresh and device grants), the device flow and its
//! verification page.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use reqwest::Url;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::DevIdp;
use super::grants::{
    AuthCode, CODE_TTL, DEVICE_GRANT_TYPE, DEVICE_TTL, DeviceGrant, REFRESH_TTL, RefreshGrant,
    insert_bounded, normalize_user_code, random_token, random_user_code,
};

/// Seconds a device-flow client waits between polls.
pub(super) const DEVICE_POLL_INTERVAL_SECS: u64 = 1;
/// Lifetime of ID tokens handed out by `/token`.
pub(super) const ID_TOKEN_TTL_SECS: u64 = 600;

impl DevIdp {
    /// Serves the provider's endpoints, relative to the issuer URL's root
    /// (nest it when the issuer has a path).
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/device_authorization", post(device_authorization))
            .route("/device", get(device))
            .with_state(self)
    }

    /// ID, access and refresh tokens for `user`, as `/token` answers them.
    fn token_response(&self, user: usize, nonce: Option<&str>) -> Response {
        let Some(dev_user) = self.users.get(user) else {
            return oauth_error("invalid_grant", "the user no longer exists");
        };
        let claims = self.id_token_claims(dev_user, &self.client_id, nonce, ID_TOKEN_TTL_SECS);
        let id_token = match self.try_mint(Algorithm::ES256, claims) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "dev IdP cannot sign");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"error": "server_error"})),
                )
                    .into_response();
            }
        };
        let refresh_token = random_token();
        insert_bounded(
            &mut self.grants().refresh,
            refresh_token.clone(),
            RefreshGrant {
                user,
                expires: Instant::now() + REFRESH_TTL,
            },
        );
        no_store(Json(json!({
            "access_token": random_token(),
            "token_type": "Bearer",
            "expires_in": ID_TOKEN_TTL_SECS,
            "id_token": id_token,
            "refresh_token": refresh_token,
        })))
    }
}

/// RFC 8252 §7.3: native apps receive the code on a loopback port chosen at run time.
fn loopback_redirect(uri: &str) -> Result<Url, &'static str> {
    let url = Url::parse(uri).map_err(|_| "redirect_uri is not a URL")?;
    if url.scheme() != "http" {
        return Err("redirect_uri must be a loopback http URL (http://127.0.0.1:PORT/...)");
    }
    if !matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")) {
        return Err("redirect_uri must be a loopback http URL (http://127.0.0.1:PORT/...)");
    }
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err("redirect_uri must not have a fragment or user info");
    }
    Ok(url)
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters.
fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The S256 challenge of `verifier`.
pub(super) fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn oauth_error(error: &'static str, description: impl Into<String>) -> Response {
    let body = json!({"error": error, "error_description": description.into()});
    (
        StatusCode::BAD_REQUEST,
        [(header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response()
}

fn no_store(body: impl IntoResponse) -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn redirect(to: &Url) -> Response {
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, to.as_str()),
            (header::CACHE_CONTROL, "no-store"),
        ],
    )
        .into_response()
}

/// The parsed body of a `/token` or `/device_authorization` request from our
/// client, or the OAuth error response to send instead (boxed: it is large
/// and rare). Public clients: the `client_id` is their only credential.
/// `Authorization: Basic` as RFC 6749 §2.3.1 spells client credentials:
/// base64 of the form-urlencoded id and secret joined by a colon.
fn basic_client(headers: &axum::http::HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let mut url = Url::parse("http://basic.invalid/").ok()?;
    url.set_query(Some(&format!("i={id}&s={secret}")));
    let mut pairs = url.query_pairs();
    let id = pairs.next()?.1.into_owned();
    let secret = pairs.next()?.1.into_owned();
    Some((id, secret))
}

fn client_form<T>(
    idp: &DevIdp,
    form: Result<Form<T>, FormRejection>,
    client_id: fn(&T) -> Option<&str>,
    authenticated: Option<&str>,
) -> Result<T, Box<Response>> {
    let Ok(Form(p)) = form else {
        return Err(Box::new(oauth_error(
            "invalid_request",
            "expected an application/x-www-form-urlencoded body",
        )));
    };
    // The client names itself in the form, or by its Basic credentials.
    if client_id(&p).or(authenticated) != Some(idp.client_id.as_str()) {
        return Err(Box::new(oauth_error(
            "invalid_client",
            "unknown or missing client_id",
        )));
    }
    Ok(p)
}

async fn discovery(State(idp): State<Arc<DevIdp>>) -> Json<Value> {
    Json(idp.discovery())
}

async fn jwks(State(idp): State<Arc<DevIdp>>) -> Json<Value> {
    Json(idp.jwks())
}

#[derive(Deserialize)]
struct AuthorizeParams {
    client_id: Option<String>,
    response_type: Option<String>,
    redirect_uri: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    login_hint: Option<String>,
}

/// Authorization endpoint. Errors about the client or the redirect URI are
/// shown here (400 JSON) because redirecting them would help an attacker;
/// every later error goes back to the client on its redirect URI (RFC 6749 §4.1.2.1).
async fn authorize(
    State(idp): State<Arc<DevIdp>>,
    params: Result<Query<AuthorizeParams>, QueryRejection>,
) -> Response {
    let Ok(Query(p)) = params else {
        return oauth_error("invalid_request", "malformed query parameters");
    };
    if p.client_id.as_deref() != Some(idp.client_id.as_str()) {
        return oauth_error("invalid_client", "unknown client_id");
    }
    let Some(redirect_uri) = p.redirect_uri else {
        return oauth_error("invalid_request", "redirect_uri is required");
    };
    let mut target = match loopback_redirect(&redirect_uri) {
        Ok(url) => url,
        Err(why) => return oauth_error("invalid_request", why),
    };
    let back = |mut target: Url, pairs: &[(&str, &str)]| {
        {
            let mut q = target.query_pairs_mut();
            for (k, v) in pairs {
                q.append_pair(k, v);
            }
            if let Some(state) = &p.state {
                q.append_pair("state", state);
            }
        }
        redirect(&target)
    };
    let fail = |target: Url, error: &str, description: &str| {
        back(
            target,
            &[("error", error), ("error_description", description)],
        )
    };
    if p.response_type.as_deref() != Some("code") {
        return fail(
            target,
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    if p.code_challenge_method.as_deref() != Some("S256") {
        return fail(
            target,
            "invalid_request",
            "PKCE is required with code_challenge_method=S256",
        );
    }
    let challenge = match p.code_challenge {
        Some(c)
            if c.len() == 43
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            c
        }
        _ => {
            return fail(
                target,
                "invalid_request",
                "code_challenge must be BASE64URL(SHA-256(code_verifier))",
            );
        }
    };
    let user = match idp.user_index(p.login_hint.as_deref()) {
        Ok(u) => u,
        Err(why) => return fail(target, "access_denied", &why),
    };
    let code = random_token();
    insert_bounded(
        &mut idp.grants().codes,
        code.clone(),
        AuthCode {
            user,
            redirect_uri,
            challenge,
            nonce: p.nonce,
            expires: Instant::now() + CODE_TTL,
        },
    );
    tracing::info!(user = %idp.users[user].username, "dev IdP: logged in (authorization code)");
    target.set_fragment(None);
    back(target, &[("code", &code)])
}

#[derive(Deserialize)]
struct TokenParams {
    grant_type: Option<String>,
    client_id: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    device_code: Option<String>,
}

async fn token(
    State(idp): State<Arc<DevIdp>>,
    headers: axum::http::HeaderMap,
    form: Result<Form<TokenParams>, FormRejection>,
) -> Response {
    let basic = basic_client(&headers);
    if let Some(secret) = idp.client_secret() {
        let ok = basic
            .as_ref()
            .is_some_and(|(id, s)| id == idp.client_id() && s == secret);
        if !ok {
            let mut r = oauth_error("invalid_client", "client authentication failed");
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            return r;
        }
    }
    let authenticated = basic.map(|(id, _)| id);
    let p = match client_form(
        &idp,
        form,
        |p| p.client_id.as_deref(),
        authenticated.as_deref(),
    ) {
        Ok(p) => p,
        Err(refused) => return *refused,
    };
    match p.grant_type.as_deref() {
        Some("authorization_code") => {
            // Removed before any other check: a code is spent by its first use, right or wrong.
            let grant = p.code.as_deref().and_then(|c| idp.grants().codes.remove(c));
            let Some(grant) = grant.filter(|g| g.expires > Instant::now()) else {
                return oauth_error("invalid_grant", "unknown, expired or already used code");
            };
            if p.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str()) {
                return oauth_error(
                    "invalid_grant",
                    "redirect_uri differs from the authorization request",
                );
            }
            match p.code_verifier.as_deref() {
                Some(v) if valid_verifier(v) && s256(v) == grant.challenge => {}
                _ => {
                    return oauth_error(
                        "invalid_grant",
                        "code_verifier does not match code_challenge",
                    );
                }
            }
            idp.token_response(grant.user, grant.nonce.as_deref())
        }
        Some("refresh_token") => {
            let grant = p
                .refresh_token
                .as_deref()
                .and_then(|t| idp.grants().refresh.remove(t));
            match grant.filter(|g| g.expires > Instant::now()) {
                Some(grant) => idp.token_response(grant.user, None),
                None => oauth_error(
                    "invalid_grant",
                    "unknown, expired or already used refresh token",
                ),
            }
        }
        Some(DEVICE_GRANT_TYPE) => {
            let Some(device_code) = p.device_code else {
                return oauth_error("invalid_request", "device_code is required");
            };
            let approved = {
                let mut grants = idp.grants();
                match grants.devices.get(&device_code) {
                    None => return oauth_error("invalid_grant", "unknown device_code"),
                    Some(g) if g.expires <= Instant::now() => {
                        grants.devices.remove(&device_code);
                        return oauth_error(
                            "expired_token",
                            "the device code expired; start again",
                        );
                    }
                    Some(DeviceGrant {
                        approved_for: None, ..
                    }) => {
                        return oauth_error(
                            "authorization_pending",
                            "the user has not approved yet",
                        );
                    }
                    Some(DeviceGrant {
                        approved_for: Some(user),
                        ..
                    }) => {
                        let user = *user;
                        grants.devices.remove(&device_code);
                        user
                    }
                }
            };
            idp.token_response(approved, None)
        }
        _ => oauth_error(
            "unsupported_grant_type",
            "use authorization_code, refresh_token or device_code",
        ),
    }
}

#[derive(Deserialize)]
struct DeviceAuthorizationParams {
    client_id: Option<String>,
}

async fn device_authorization(
    State(idp): State<Arc<DevIdp>>,
    form: Result<Form<DeviceAuthorizationParams>, FormRejection>,
) -> Response {
    if let Err(refused) = client_form(&idp, form, |p| p.client_id.as_deref(), None) {
        return *refused;
    }
    let device_code = random_token();
    let user_code = random_user_code();
    insert_bounded(
        &mut idp.grants().devices,
        device_code.clone(),
        DeviceGrant {
            user_code: normalize_user_code(&user_code),
            approved_for: None,
            expires: Instant::now() + DEVICE_TTL,
        },
    );
    let base = idp.issuer.trim_end_matches('/');
    no_store(Json(json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": format!("{base}/device"),
        "verification_uri_complete": format!("{base}/device?user_code={user_code}"),
        "expires_in": DEVICE_TTL.as_secs(),
        "interval": DEVICE_POLL_INTERVAL_SECS,
    })))
}

#[derive(Deserialize)]
struct DeviceParams {
    user_code: Option<String>,
    login_hint: Option<String>,
}

/// Verification page: approves the device login at once for the dev user.
/// Plain text, so nothing a user typed can become markup.
async fn device(
    State(idp): State<Arc<DevIdp>>,
    params: Result<Query<DeviceParams>, QueryRejection>,
) -> Response {
    let text = |status: StatusCode, body: String| {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response()
    };
    let Ok(Query(p)) = params else {
        return text(StatusCode::BAD_REQUEST, "Malformed query.\n".into());
    };
    let Some(code) = p.user_code.as_deref().map(normalize_user_code) else {
        return text(
            StatusCode::BAD_REQUEST,
            "Open the link `jitssh login` printed, or add ?user_code=XXXX-XXXX.\n".into(),
        );
    };
    let user = match idp.user_index(p.login_hint.as_deref()) {
        Ok(u) => u,
        Err(why) => return text(StatusCode::BAD_REQUEST, format!("{why}.\n")),
    };
    {
        let mut grants = idp.grants();
        let grant = grants
            .devices
            .values_mut()
            .find(|g| g.user_code == code && g.expires > Instant::now());
        match grant {
            Some(g) => g.approved_for = Some(user),
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "Unknown or expired code: run `jitssh login` again.\n".into(),
                );
            }
        }
    }
    let name = ca_core::escape_control(&idp.users[user].username);
    tracing::info!(user = %name, "dev IdP: logged in (device)");
    text(
        StatusCode::OK,
        format!(
            "Signed in to the jitssh development IdP as {name}.\nYou can close this page and return to the terminal.\n"
        ),
    )
}
