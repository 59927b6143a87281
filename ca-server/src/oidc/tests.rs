//! The fixture of the oidc tests: a discovery and JWKS server in front of a
//! dev IdP's keys (tests take it down, count its hits and feed it hostile
//! documents), verifiers that trust it, and token helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ca_core::IdentityKind;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use super::{ACCEPTED_ALGORITHMS, IssuerConfig, TokenVerifier, VerifierOptions};
use crate::dev::idp::{DevIdp, DevUser};
use crate::mint::MintExt as _;

pub(super) const AUD: &str = "jitssh-test";
pub(super) const NOW: u64 = 1_700_000_000;
pub(super) const RSA_PEM: &str = include_str!("../../tests/fixtures/rsa2048.pem");

/// A JWKS/discovery server in front of a dev IdP's keys, which tests can
/// take down, count, and feed hostile documents.
pub(super) struct Mock {
    pub(super) idp: Arc<DevIdp>,
    port: u16,
    up: AtomicBool,
    pub(super) discovery_hits: AtomicUsize,
    jwks_hits: AtomicUsize,
    pub(super) jwks_override: Mutex<Option<Value>>,
    pub(super) discovery_override: Mutex<Option<Value>>,
}

impl Mock {
    pub(super) fn issuer(&self) -> String {
        self.idp.issuer().to_owned()
    }
    pub(super) fn jwks_hits(&self) -> usize {
        self.jwks_hits.load(Ordering::SeqCst)
    }
    pub(super) fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
    pub(super) fn claims(&self) -> Value {
        json!({
            "iss": self.issuer(), "sub": "alice-id", "aud": AUD,
            "iat": NOW - 10, "exp": NOW + 300,
            "email": "alice@example.com", "email_verified": true,
            "preferred_username": "alice", "groups": ["developers", 7, "ops"],
        })
    }
    pub(super) fn with(&self, f: impl FnOnce(&mut Value)) -> String {
        let mut c = self.claims();
        f(&mut c);
        self.idp.mint(Algorithm::ES256, c)
    }
    pub(super) fn header(&self, alg: Algorithm) -> Value {
        json!({"alg": alg_str(alg), "typ": "JWT", "kid": self.idp.kid(alg).unwrap()})
    }
    pub(super) fn with_claims_sub(&self, sub: &str) -> Value {
        let mut c = self.claims();
        c["sub"] = json!(sub);
        c
    }
}

pub(super) fn alg_str(alg: Algorithm) -> Value {
    serde_json::to_value(alg).unwrap()
}

pub(super) async fn mock() -> Arc<Mock> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let user = DevUser {
        username: "alice".into(),
        email: "alice@example.com".into(),
        groups: vec!["developers".into()],
    };
    let idp = DevIdp::new(format!("http://{addr}"), AUD.into(), vec![user]).with_rsa_pem(RSA_PEM);
    for alg in &ALGORITHMS[1..6] {
        idp.add_rsa_pem_for(*alg, RSA_PEM).unwrap();
    }
    let m = Arc::new(Mock {
        idp,
        port: addr.port(),
        up: AtomicBool::new(true),
        discovery_hits: AtomicUsize::new(0),
        jwks_hits: AtomicUsize::new(0),
        jwks_override: Mutex::new(None),
        discovery_override: Mutex::new(None),
    });
    let router = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/moved-same-host", get(moved_same_host))
        .route("/moved-other-host", get(moved_other_host))
        .with_state(Arc::clone(&m));
    tokio::spawn(async move { axum::serve(listener, router).await });
    m
}

async fn discovery(State(m): State<Arc<Mock>>) -> Response {
    m.discovery_hits.fetch_add(1, Ordering::SeqCst);
    if !m.up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let mut doc = m.idp.discovery();
    if let Some(Value::Object(patch)) = m.discovery_override.lock().unwrap().clone() {
        for (k, v) in patch {
            doc[k] = v;
        }
    }
    Json(doc).into_response()
}

async fn jwks(State(m): State<Arc<Mock>>) -> Response {
    m.jwks_hits.fetch_add(1, Ordering::SeqCst);
    if !m.up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let body = m
        .jwks_override
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_else(|| m.idp.jwks());
    Json(body).into_response()
}

async fn moved_same_host(State(m): State<Arc<Mock>>) -> Response {
    (
        StatusCode::FOUND,
        [(
            header::LOCATION,
            format!("http://127.0.0.1:{}/jwks", m.port),
        )],
    )
        .into_response()
}

async fn moved_other_host(State(m): State<Arc<Mock>>) -> Response {
    (
        StatusCode::FOUND,
        [(
            header::LOCATION,
            format!("http://localhost:{}/jwks", m.port),
        )],
    )
        .into_response()
}

pub(super) fn opts() -> VerifierOptions {
    VerifierOptions {
        leeway_secs: 60,
        refresh_min_interval: Duration::from_secs(1),
        http_timeout: Duration::from_secs(5),
        jwks_max_age: Duration::from_secs(3600),
    }
}

pub(super) fn verifier_with(m: &Mock, opts: VerifierOptions) -> TokenVerifier {
    TokenVerifier::new(
        vec![IssuerConfig::new(
            m.issuer(),
            vec![AUD.into()],
            IdentityKind::Human,
        )],
        opts,
    )
    .unwrap()
}

pub(super) fn verifier(m: &Mock) -> TokenVerifier {
    verifier_with(m, opts())
}

pub(super) async fn code(v: &TokenVerifier, token: &str) -> &'static str {
    match v.verify(token, NOW).await {
        Ok(_) => "ok",
        Err(e) => {
            assert!(!e.to_string().is_empty());
            e.code()
        }
    }
}

pub(super) fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// A token HMAC-signed with `secret`, whatever the header says.
pub(super) fn hmac_token(header: &Value, claims: &Value, secret: &[u8], alg: Algorithm) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &EncodingKey::from_secret(secret), alg)
        .unwrap();
    format!("{input}.{sig}")
}

pub(super) const ALGORITHMS: [Algorithm; 9] = ACCEPTED_ALGORITHMS;

pub(super) const RESOURCE: &str = "urn:jitssh:ca";

/// A workload issuer; with `resource`, it accepts access tokens for it.
pub(super) fn workload_verifier(m: &Mock, resource: Option<&str>) -> TokenVerifier {
    let cfg = IssuerConfig {
        access_token_audience: resource.map(str::to_owned),
        ..IssuerConfig::new(m.issuer(), vec![AUD.into()], IdentityKind::Workload)
    };
    TokenVerifier::new(vec![cfg], opts()).unwrap()
}

/// RFC 9068 access token claims as a client-credentials grant yields them.
pub(super) fn access_claims(m: &Mock) -> Value {
    json!({
        "iss": m.issuer(), "sub": "svc-deployer", "client_id": "svc-deployer",
        "aud": RESOURCE, "iat": NOW - 10, "exp": NOW + 300, "jti": "j1", "scope": "issue",
    })
}

pub(super) fn access_token(m: &Mock, typ: &str, f: impl FnOnce(&mut Value)) -> String {
    let mut header = m.header(Algorithm::ES256);
    header["typ"] = json!(typ);
    let mut claims = access_claims(m);
    f(&mut claims);
    m.idp.mint_raw(header, claims, Algorithm::ES256)
}
