//! The in-process harness the HTTP test files share: a dev OpenID provider
//! serving its JWKS on a loopback port, a CA built from `dev_config` in a
//! temp dir, and the real router driven with `oneshot`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
pub mod mint;
pub mod pg;
pub mod ui;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use ca_server::dev::idp::{DevIdp, DevUser};
use ca_server::http::app;
use ca_server::policy::PolicyEngine;
use http_body_util::BodyExt as _;
pub use mint::MintExt;
use tower::ServiceExt as _;

tokio::task_local! {
    /// Set by [`on_postgres`]: [`build`] puts the CA's state in a fresh
    /// PostgreSQL database instead of an SQLite file.
    static POSTGRES: bool;
}

/// Run a test case with its CA on PostgreSQL.
pub async fn on_postgres<F: std::future::Future>(case: F) -> F::Output {
    POSTGRES.scope(true, case).await
}

/// Generate, for each named `async fn` case, a test on SQLite (`sqlite::`)
/// and the same test on PostgreSQL (`postgres::`).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test] async fn $name() { super::$name().await } )*
        }
        mod postgres {
            $( #[tokio::test] async fn $name() { super::common::on_postgres(super::$name()).await } )*
        }
    };
}

/// The audience (client ID) tokens are minted for.
pub const AUD: &str = "jitssh-test";

pub struct Harness {
    pub router: axum::Router,
    pub idp: Arc<DevIdp>,
    pub dir: tempfile::TempDir,
    pub state: Arc<ca_server::http::AppState>,
    /// What the CA was built from (for [`Harness::another_ca`]).
    pub config: ca_server::config::Config,
}

/// A CA with `policy`, trusting a fresh dev provider that knows `users`
/// (RS256 with a fixed 2048-bit key, ES256 and EdDSA), its config adjusted
/// by `tweak` before the authority is built.
pub async fn build(
    policy: PolicyEngine,
    users: Vec<DevUser>,
    tweak: impl FnOnce(&mut ca_server::config::Config),
) -> Harness {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let idp = DevIdp::new(issuer.clone(), AUD.into(), users)
        .with_rsa_pem(include_str!("../fixtures/rsa2048.pem"));
    let router = idp.clone().router();
    tokio::spawn(async move { axum::serve(listener, router).await });

    let dir = tempfile::tempdir().unwrap();
    ca_server::keys::generate(&dir.path().join("user_ca"), "u").unwrap();
    ca_server::keys::generate(&dir.path().join("host_ca"), "h").unwrap();
    let mut config =
        ca_server::dev::dev_config(dir.path(), "127.0.0.1:0".parse().unwrap(), &issuer, None)
            .unwrap();
    config.issuers[0].audiences = vec![AUD.into()];
    if let Some(ui) = &mut config.ui {
        ui.client_id = AUD.into();
    }
    if POSTGRES.try_with(|on| *on).unwrap_or(false) {
        config.database = ca_server::config::Database::Postgres {
            url: pg::cluster().fresh_database(),
            password_file: None,
        };
    }
    tweak(&mut config);
    // A case that replaced the provider has no console (it signs in there).
    if let Some(ui) = &config.ui
        && !config.issuers.iter().any(|i| i.issuer == ui.issuer)
    {
        config.ui = None;
    }
    let authority = ca_server::serve::build_authority(&config, Arc::new(policy)).unwrap();
    if POSTGRES.try_with(|on| *on).unwrap_or(false) {
        assert!(
            !dir.path().join("audit.db").exists(),
            "a PostgreSQL case must not touch the SQLite file"
        );
    }
    let state = ca_server::serve::app_state(&config, authority, None).unwrap();
    Harness {
        router: app(state.clone()),
        idp,
        dir,
        state,
        config,
    }
}

pub fn now() -> u64 {
    ca_server::clock::now_unix()
}

impl Harness {
    /// A second CA on the same configuration and database, trusting the
    /// same provider: another replica, or this CA after a restart (its
    /// in-memory state is built anew from the database). Its router.
    pub fn another_ca(&self, policy: PolicyEngine) -> axum::Router {
        let authority = ca_server::serve::build_authority(&self.config, Arc::new(policy)).unwrap();
        app(ca_server::serve::app_state(&self.config, authority, None).unwrap())
    }

    /// The audit events of one action, oldest first.
    pub fn rows(&self, action: &str) -> Vec<ca_core::audit::AuditEvent> {
        let filter = ca_server::audit::Filter {
            action: Some(action.into()),
            ..Default::default()
        };
        self.state
            .authority
            .audit
            .list(&filter)
            .unwrap()
            .into_iter()
            .map(|r| r.event)
            .collect()
    }

    /// One request through the router: status, body bytes, headers.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Body,
    ) -> (StatusCode, Vec<u8>, HeaderMap) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        self.send(req.body(body).unwrap()).await
    }

    /// Any request through the router: status, body bytes, headers.
    pub async fn send(&self, req: Request<Body>) -> (StatusCode, Vec<u8>, HeaderMap) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, bytes, headers)
    }

    /// [`Harness::request`] with a JSON answer (`null` when not JSON).
    pub async fn json(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: impl Into<Body>,
    ) -> (StatusCode, serde_json::Value) {
        let (status, bytes, _) = self.request(method, path, token, body.into()).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }
}

/// An `issued` audit event numbered `n` for `who` (serial `n`), for the
/// storage suites.
pub fn event(n: u64, who: &str) -> ca_core::audit::AuditEvent {
    ca_core::audit::AuditEvent {
        time: 1_700_000_000 + n,
        action: "user_cert".into(),
        outcome: "issued".into(),
        issuer: Some("https://idp.example".into()),
        subject: Some(who.into()),
        requested_principals: Some(vec![format!("p{n}")]),
        granted_principals: vec![format!("p{n}"), "shared".into()],
        serial: Some(n.to_string()),
        ttl_seconds: Some(600),
        ..ca_core::audit::AuditEvent::default()
    }
}

/// A spent token `name` that expires about 10 minutes after this test
/// process first asked. Like a real token, the same name always comes with
/// the same expiry: `used_tokens` is keyed by (expiry, hash), and the
/// server derives both from the token's signed bytes.
pub fn token(name: &str) -> ca_server::audit::UsedToken {
    static EXPIRES_AT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    ca_server::audit::UsedToken {
        token_hash: name.into(),
        expires_at: *EXPIRES_AT.get_or_init(|| now() + 600),
    }
}
