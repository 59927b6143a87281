//! The dev IdP through its endpoints, as `jitssh login` and the token
//! verifier meet it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::BodyExt as _;
use jsonwebtoken::Algorithm;
use reqwest::Url;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::grants::{DEVICE_GRANT_TYPE, DEVICE_TTL};
use super::routes::{DEVICE_POLL_INTERVAL_SECS, ID_TOKEN_TTL_SECS, s256};
use super::{DevIdp, DevIdpError, DevUser};
use crate::clock::now_unix;
use crate::mint::MintExt as _;
use crate::oidc::{IssuerConfig, TokenVerifier, VerifierOptions};

const CLIENT: &str = "jitssh-cli";
const REDIRECT: &str = "http://127.0.0.1:53682/callback";
const VERIFIER: &str = "dBjftJeZ4CK-P1o0_7-bX.0rtu~vgf9WJ8Hrx4Pq0Qwek";

fn users() -> Vec<DevUser> {
    vec![
        DevUser {
            username: "alice".into(),
            email: "alice@example.com".into(),
            groups: vec!["developers".into()],
        },
        DevUser {
            username: "bob".into(),
            email: "bob@example.com".into(),
            groups: vec!["ops".into(), "oncall".into()],
        },
    ]
}

fn idp() -> Arc<DevIdp> {
    DevIdp::new("http://127.0.0.1:9999".into(), CLIENT.into(), users())
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    fn location(&self) -> Url {
        assert_eq!(
            self.status,
            StatusCode::FOUND,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        Url::parse(self.headers[header::LOCATION].to_str().unwrap()).unwrap()
    }
    fn oauth_error(&self) -> String {
        assert_eq!(self.status, StatusCode::BAD_REQUEST);
        let body = self.json();
        assert!(body["error_description"].is_string());
        body["error"].as_str().unwrap().to_owned()
    }
}

async fn send(idp: &Arc<DevIdp>, req: Request<Body>) -> Reply {
    let resp = Arc::clone(idp).router().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut url = Url::parse("http://x/").unwrap();
    url.query_pairs_mut().extend_pairs(pairs);
    url.query().unwrap_or("").to_owned()
}

async fn get(idp: &Arc<DevIdp>, path: &str, pairs: &[(&str, &str)]) -> Reply {
    let req = Request::get(format!("{path}?{}", query(pairs)))
        .body(Body::empty())
        .unwrap();
    send(idp, req).await
}

async fn post_form(idp: &Arc<DevIdp>, path: &str, pairs: &[(&str, &str)]) -> Reply {
    let req = Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(query(pairs)))
        .unwrap();
    send(idp, req).await
}

fn authorize_params<'a>(redirect: &'a str, challenge: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("client_id", CLIENT),
        ("response_type", "code"),
        ("redirect_uri", redirect),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("state", "st-123"),
        ("nonce", "n-456"),
        ("scope", "openid email groups"),
    ]
}

/// Runs /authorize and returns the code from the redirect.
async fn code_for(idp: &Arc<DevIdp>, extra: &[(&str, &str)]) -> String {
    let challenge = s256(VERIFIER);
    let mut params = authorize_params(REDIRECT, &challenge);
    params.extend_from_slice(extra);
    let loc = get(idp, "/authorize", &params).await.location();
    assert_eq!(
        format!(
            "{}://{}{}",
            loc.scheme(),
            loc.host_str().unwrap(),
            loc.path()
        ),
        "http://127.0.0.1/callback"
    );
    assert_eq!(loc.port(), Some(53682));
    let pairs: HashMap<String, String> = loc.query_pairs().into_owned().collect();
    assert_eq!(pairs["state"], "st-123");
    pairs["code"].clone()
}

async fn exchange(idp: &Arc<DevIdp>, code: &str, verifier: &str) -> Reply {
    post_form(
        idp,
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", CLIENT),
            ("code_verifier", verifier),
        ],
    )
    .await
}

async fn poll_device(idp: &Arc<DevIdp>, device_code: &str) -> Reply {
    post_form(
        idp,
        "/token",
        &[
            ("grant_type", DEVICE_GRANT_TYPE),
            ("device_code", device_code),
            ("client_id", CLIENT),
        ],
    )
    .await
}

async fn refresh_grant(idp: &Arc<DevIdp>, token: String) -> Reply {
    post_form(
        idp,
        "/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &token),
            ("client_id", CLIENT),
        ],
    )
    .await
}

fn claims_of(id_token: &str) -> Value {
    let payload = id_token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn serves_discovery_and_jwks() {
    let idp = idp().with_rsa_pem(include_str!("../../../tests/fixtures/rsa2048.pem"));
    let doc = get(&idp, "/.well-known/openid-configuration", &[])
        .await
        .json();
    assert_eq!(doc["issuer"], "http://127.0.0.1:9999");
    assert_eq!(doc["jwks_uri"], "http://127.0.0.1:9999/jwks");
    assert_eq!(
        doc["authorization_endpoint"],
        "http://127.0.0.1:9999/authorize"
    );
    assert_eq!(doc["token_endpoint"], "http://127.0.0.1:9999/token");
    assert_eq!(
        doc["device_authorization_endpoint"],
        "http://127.0.0.1:9999/device_authorization"
    );
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(doc["response_types_supported"], json!(["code"]));
    assert_eq!(doc["subject_types_supported"], json!(["public"]));
    assert_eq!(
        doc["grant_types_supported"],
        json!([
            "authorization_code",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code"
        ])
    );
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["ES256", "ES384", "EdDSA", "RS256"])
    );
    let jwks = get(&idp, "/jwks", &[]).await.json();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 4);
    for k in keys {
        assert_eq!(k["use"], "sig");
        assert!(k["kid"].as_str().unwrap().len() > 10);
        assert!(
            k.get("d").is_none() && k.get("p").is_none(),
            "public parts only: {k}"
        );
    }
    let other = DevIdp::new("http://127.0.0.1:9999".into(), CLIENT.into(), users());
    assert_ne!(
        other.kid(Algorithm::ES256),
        idp.kid(Algorithm::ES256),
        "kids are random"
    );
}

#[tokio::test]
async fn authorization_code_with_pkce() {
    let idp = idp();
    let code = code_for(&idp, &[("login_hint", "bob")]).await;
    let reply = exchange(&idp, &code, VERIFIER).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], ID_TOKEN_TTL_SECS);
    assert!(body["access_token"].as_str().unwrap().len() >= 43);
    assert!(body["refresh_token"].as_str().unwrap().len() >= 43);
    let claims = claims_of(body["id_token"].as_str().unwrap());
    assert_eq!(claims["iss"], "http://127.0.0.1:9999");
    assert_eq!(claims["sub"], "dev|bob");
    assert_eq!(claims["aud"], CLIENT);
    assert_eq!(claims["nonce"], "n-456");
    assert_eq!(claims["email"], "bob@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["preferred_username"], "bob");
    assert_eq!(claims["groups"], json!(["ops", "oncall"]));
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, ID_TOKEN_TTL_SECS);

    // Default user is the first one.
    let code = code_for(&idp, &[]).await;
    let body = exchange(&idp, &code, VERIFIER).await.json();
    assert_eq!(
        claims_of(body["id_token"].as_str().unwrap())["sub"],
        "dev|alice"
    );
}

#[tokio::test]
async fn wrong_verifier_is_refused_and_burns_the_code() {
    let idp = idp();
    let code = code_for(&idp, &[]).await;
    let wrong = "x".repeat(43);
    assert_eq!(
        exchange(&idp, &code, &wrong).await.oauth_error(),
        "invalid_grant"
    );
    assert_eq!(
        exchange(&idp, &code, VERIFIER).await.oauth_error(),
        "invalid_grant"
    );
    let code = code_for(&idp, &[]).await;
    assert_eq!(
        exchange(&idp, &code, "short").await.oauth_error(),
        "invalid_grant"
    );
    let code = code_for(&idp, &[]).await;
    assert_eq!(
        exchange(&idp, &code, &s256(VERIFIER)).await.oauth_error(),
        "invalid_grant",
        "the challenge is not the verifier"
    );
}

#[tokio::test]
async fn codes_are_single_use_and_bound_to_their_request() {
    let idp = idp();
    let code = code_for(&idp, &[]).await;
    assert_eq!(exchange(&idp, &code, VERIFIER).await.status, StatusCode::OK);
    assert_eq!(
        exchange(&idp, &code, VERIFIER).await.oauth_error(),
        "invalid_grant"
    );
    assert_eq!(
        exchange(&idp, "made-up", VERIFIER).await.oauth_error(),
        "invalid_grant"
    );

    let code = code_for(&idp, &[]).await;
    let other_redirect = post_form(
        &idp,
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:1/callback"),
            ("client_id", CLIENT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(other_redirect.oauth_error(), "invalid_grant");

    let code = code_for(&idp, &[]).await;
    let other_client = post_form(
        &idp,
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", "other"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(other_client.oauth_error(), "invalid_client");

    // Expired codes.
    let code = code_for(&idp, &[]).await;
    idp.grants().codes.get_mut(&code).unwrap().expires = Instant::now();
    assert_eq!(
        exchange(&idp, &code, VERIFIER).await.oauth_error(),
        "invalid_grant"
    );
}

#[tokio::test]
async fn authorize_requires_loopback_redirect_and_pkce() {
    let idp = idp();
    let challenge = s256(VERIFIER);
    for bad in [
        "https://evil.example.com/callback",
        "http://evil.example.com/callback",
        "http://127.0.0.1.evil.example.com/callback",
        "http://localhost.evil.example.com/cb",
        "http://10.0.0.1:8080/callback",
        "https://127.0.0.1/callback",
        "com.example.app:/callback",
        "http://user@127.0.0.1:1234/callback",
        "http://127.0.0.1:1234/callback#frag",
        "not a url",
    ] {
        let reply = get(&idp, "/authorize", &authorize_params(bad, &challenge)).await;
        assert_eq!(reply.oauth_error(), "invalid_request", "{bad}");
        assert!(
            reply.headers.get(header::LOCATION).is_none(),
            "never redirected: {bad}"
        );
    }
    for good in [
        "http://localhost:1234/cb",
        "http://[::1]:4321/",
        "http://127.0.0.1/x?keep=1",
    ] {
        let loc = get(&idp, "/authorize", &authorize_params(good, &challenge))
            .await
            .location();
        assert!(loc.query_pairs().any(|(k, _)| k == "code"), "{good}");
    }
    let loc = get(
        &idp,
        "/authorize",
        &authorize_params("http://127.0.0.1/x?keep=1", &challenge),
    )
    .await
    .location();
    assert!(loc.query_pairs().any(|(k, v)| k == "keep" && v == "1"));

    let mut wrong_client = authorize_params(REDIRECT, &challenge);
    wrong_client[0] = ("client_id", "someone-else");
    assert_eq!(
        get(&idp, "/authorize", &wrong_client).await.oauth_error(),
        "invalid_client"
    );

    // After the redirect URI is known good, errors go back to the client.
    let error_of = |loc: Url| {
        let pairs: HashMap<String, String> = loc.query_pairs().into_owned().collect();
        assert_eq!(pairs["state"], "st-123");
        assert!(!pairs.contains_key("code"));
        pairs["error"].clone()
    };
    let without = |name: &str| {
        authorize_params(REDIRECT, &challenge)
            .into_iter()
            .filter(|(k, _)| *k != name)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        error_of(
            get(&idp, "/authorize", &without("code_challenge"))
                .await
                .location()
        ),
        "invalid_request"
    );
    assert_eq!(
        error_of(
            get(&idp, "/authorize", &without("code_challenge_method"))
                .await
                .location()
        ),
        "invalid_request"
    );
    let mut plain = authorize_params(REDIRECT, VERIFIER);
    plain[4] = ("code_challenge_method", "plain");
    assert_eq!(
        error_of(get(&idp, "/authorize", &plain).await.location()),
        "invalid_request"
    );
    let mut token_flow = authorize_params(REDIRECT, &challenge);
    token_flow[1] = ("response_type", "token");
    assert_eq!(
        error_of(get(&idp, "/authorize", &token_flow).await.location()),
        "unsupported_response_type"
    );
    let mut unknown_user = authorize_params(REDIRECT, &challenge);
    unknown_user.push(("login_hint", "mallory"));
    assert_eq!(
        error_of(get(&idp, "/authorize", &unknown_user).await.location()),
        "access_denied"
    );
}

#[tokio::test]
async fn device_flow_pending_then_approved() {
    let idp = idp();
    let start = post_form(
        &idp,
        "/device_authorization",
        &[("client_id", CLIENT), ("scope", "openid")],
    )
    .await
    .json();
    let device_code = start["device_code"].as_str().unwrap().to_owned();
    let user_code = start["user_code"].as_str().unwrap().to_owned();
    assert_eq!(user_code.len(), 9);
    assert_eq!(start["verification_uri"], "http://127.0.0.1:9999/device");
    assert_eq!(
        start["verification_uri_complete"],
        format!("http://127.0.0.1:9999/device?user_code={user_code}")
    );
    assert_eq!(start["expires_in"], DEVICE_TTL.as_secs());
    assert_eq!(start["interval"], DEVICE_POLL_INTERVAL_SECS);

    let poll = || poll_device(&idp, &device_code);
    assert_eq!(poll().await.oauth_error(), "authorization_pending");
    assert_eq!(poll().await.oauth_error(), "authorization_pending");

    assert_eq!(
        get(&idp, "/device", &[("user_code", "BBBB-BBBB")])
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let typed = user_code.to_lowercase().replace('-', "");
    let page = get(
        &idp,
        "/device",
        &[("user_code", &typed), ("login_hint", "bob")],
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(String::from_utf8(page.body).unwrap().contains("bob"));

    let tokens = poll().await;
    assert_eq!(tokens.status, StatusCode::OK);
    let claims = claims_of(tokens.json()["id_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "dev|bob");
    assert!(claims.get("nonce").is_none());
    assert_eq!(
        poll().await.oauth_error(),
        "invalid_grant",
        "a device code yields tokens once"
    );

    let start = post_form(&idp, "/device_authorization", &[("client_id", CLIENT)])
        .await
        .json();
    let device_code = start["device_code"].as_str().unwrap().to_owned();
    idp.grants().devices.get_mut(&device_code).unwrap().expires = Instant::now();
    let expired = post_form(
        &idp,
        "/token",
        &[
            ("grant_type", DEVICE_GRANT_TYPE),
            ("device_code", &device_code),
            ("client_id", CLIENT),
        ],
    )
    .await;
    assert_eq!(expired.oauth_error(), "expired_token");
    assert_eq!(
        post_form(&idp, "/device_authorization", &[("client_id", "x")])
            .await
            .oauth_error(),
        "invalid_client"
    );
}

#[tokio::test]
async fn refresh_tokens_rotate() {
    let idp = idp();
    let code = code_for(&idp, &[("login_hint", "bob")]).await;
    let first = exchange(&idp, &code, VERIFIER).await.json();
    let refresh = first["refresh_token"].as_str().unwrap();
    let refresh_with = |t: &str| refresh_grant(&idp, t.to_owned());
    let second = refresh_with(refresh).await;
    assert_eq!(second.status, StatusCode::OK);
    let second = second.json();
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    let claims = claims_of(second["id_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "dev|bob");
    assert!(claims.get("nonce").is_none());
    assert_eq!(
        refresh_with(refresh).await.oauth_error(),
        "invalid_grant",
        "the old refresh token is spent"
    );
    assert_eq!(
        refresh_with(second["refresh_token"].as_str().unwrap())
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn token_endpoint_refuses_bad_requests() {
    let idp = idp();
    assert_eq!(
        post_form(
            &idp,
            "/token",
            &[("grant_type", "password"), ("client_id", CLIENT)]
        )
        .await
        .oauth_error(),
        "unsupported_grant_type"
    );
    assert_eq!(
        post_form(&idp, "/token", &[("grant_type", "client_credentials")])
            .await
            .oauth_error(),
        "invalid_client"
    );
    let json_body = Request::post("/token")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"grant_type":"refresh_token"}"#))
        .unwrap();
    assert_eq!(send(&idp, json_body).await.oauth_error(), "invalid_request");
    let twice = Request::post("/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "client_id={CLIENT}&client_id={CLIENT}&grant_type=refresh_token"
        )))
        .unwrap();
    assert_eq!(
        send(&idp, twice).await.oauth_error(),
        "invalid_request",
        "repeated parameters"
    );
}

#[test]
fn rejects_a_bad_rsa_pem() {
    assert!(matches!(
        idp().add_rsa_pem("not a key"),
        Err(DevIdpError::RsaKey(_))
    ));
    assert!(matches!(
        idp().try_mint(Algorithm::RS256, json!({})),
        Err(DevIdpError::NoKey(Algorithm::RS256))
    ));
    assert!(matches!(
        idp().try_mint(Algorithm::HS256, json!({})),
        Err(DevIdpError::NoKey(Algorithm::HS256))
    ));
}

/// Serves `idp` on `listener`, nested under `path` like `jitssh-ca dev` does.
fn serve(listener: tokio::net::TcpListener, idp: &Arc<DevIdp>, path: &str) {
    let router = if path.is_empty() {
        Arc::clone(idp).router()
    } else {
        Router::new().nest(path, Arc::clone(idp).router())
    };
    tokio::spawn(async move { axum::serve(listener, router).await });
}

#[tokio::test]
async fn its_tokens_verify_with_the_token_verifier() {
    for path in ["", "/dev-idp"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}{path}", listener.local_addr().unwrap());
        let idp = DevIdp::new(issuer.clone(), CLIENT.into(), users())
            .with_rsa_pem(include_str!("../../../tests/fixtures/rsa2048.pem"));
        serve(listener, &idp, path);
        let verifier = TokenVerifier::new(
            vec![IssuerConfig::new(
                issuer.clone(),
                vec![CLIENT.into()],
                ca_core::IdentityKind::Human,
            )],
            VerifierOptions::default(),
        )
        .unwrap();
        verifier.refresh_all().await.unwrap();
        assert!(verifier.ready());

        let bob = &idp.users()[1];
        let token = idp.id_token_for(bob, CLIENT, Some("n1"), 300);
        let verified = verifier.verify_full(&token, now_unix()).await.unwrap();
        let id = &verified.identity;
        assert_eq!(id.issuer, issuer);
        assert_eq!(id.subject, "dev|bob");
        assert_eq!(id.email.as_deref(), Some("bob@example.com"));
        assert_eq!(id.groups, ["ops", "oncall"]);
        assert_eq!(id.claims["nonce"], "n1");
        assert!(verified.exp > now_unix());

        for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
            let token = idp.mint(alg, idp.id_token_claims(bob, CLIENT, None, 60));
            verifier
                .verify(&token, now_unix())
                .await
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        }
        let other_aud = idp.id_token_for(bob, "someone-else", None, 300);
        assert_eq!(
            verifier
                .verify(&other_aud, now_unix())
                .await
                .unwrap_err()
                .code(),
            "token_audience_mismatch"
        );
    }
}
