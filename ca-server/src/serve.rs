//! `jitssh-ca serve`: assemble the authority from a `Config` and run the
//! HTTP(S) server until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ca_core::wire::ClientConfig;

use crate::audit::AuditStore;
use crate::config::Config;
use crate::http::{AppState, app};
use crate::issue::Authority;
use crate::oidc::{TokenVerifier, VerifierOptions};
use crate::policy::PolicyEngine;
use crate::revocation::{RevocationCache, RevocationStore};

/// Default verifier timings: refresh keys at most every 30 s on unknown
/// `kid`s; keep using a cached key set for a day when the IdP is down.
pub fn verifier_options() -> VerifierOptions {
    VerifierOptions {
        leeway_secs: 60,
        refresh_min_interval: Duration::from_secs(30),
        http_timeout: Duration::from_secs(5),
        jwks_max_age: Duration::from_secs(24 * 3600),
    }
}

/// Load keys, open the database, compile the policy: everything that must
/// succeed before the server may answer.
pub fn build_authority(config: &Config, policy: Arc<PolicyEngine>) -> anyhow::Result<Authority> {
    let user_ca = crate::keys::load(&config.user_ca_key)?;
    let host_ca = crate::keys::load(&config.host_ca_key)?;
    let audit = AuditStore::open(&config.database)
        .with_context(|| format!("opening audit database {}", config.database.display()))?;
    let verifier = TokenVerifier::new(config.issuers.clone(), verifier_options())?;
    let revocations = Arc::new(RevocationCache::load(
        RevocationStore::open(&config.database)?,
        crate::issue::now_unix(),
    )?);
    let hosts = crate::hosts::Hosts::new(
        crate::hosts::JoinTokenStore::open(&config.database)?,
        config.host_max_ttl,
    );
    Ok(Authority::new(
        config.limits.clone(),
        user_ca,
        host_ca,
        verifier,
        policy,
        audit,
        revocations,
        hosts,
        config.rate_per_minute,
        config.rate_burst,
    )?)
}

pub fn app_state(
    config: &Config,
    authority: Authority,
    extra: Option<axum::Router>,
) -> Arc<AppState> {
    Arc::new(AppState {
        authority: Arc::new(authority),
        client_config: config.login.as_ref().map(|l| ClientConfig {
            issuer: l.issuer.clone(),
            client_id: l.client_id.clone(),
            scopes: l.scopes.clone(),
        }),
        max_body_bytes: config.max_body_bytes,
        request_timeout: config.request_timeout,
        extra,
    })
}

/// Serve `state` on `listener` until `shutdown` resolves, then drain
/// in-flight requests for up to 10 s.
pub async fn run(
    config: &Config,
    state: Arc<AppState>,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let policy = state.authority.policy.clone();
    if policy.source_dir().is_some() {
        policy.clone().spawn_watcher(config.policy_reload);
        spawn_sighup_reload(policy);
    }
    // Warm the IdP key cache in the background (in `dev` the IdP is served by
    // this very server); failure is not fatal, readyz reports it.
    let verifier = state.authority.verifier.clone();
    tokio::spawn(async move {
        if let Err(e) = verifier.refresh_all().await {
            tracing::warn!(error = %e, "could not fetch IdP keys yet; will retry on demand");
        }
    });

    state
        .authority
        .revocations
        .clone()
        .spawn_refresher(Duration::from_secs(1));

    let handle = axum_server::Handle::<SocketAddr>::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: draining requests");
        h.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let service = app(state).into_make_service_with_connect_info::<SocketAddr>();
    match &config.tls {
        Some((cert, key)) => {
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| {
                    format!(
                        "loading TLS certificate {} and key {}",
                        cert.display(),
                        key.display()
                    )
                })?;
            let mut server = axum_server::from_tcp_rustls(listener, tls)?.handle(handle);
            server
                .http_builder()
                .http1()
                .header_read_timeout(Some(config.header_read_timeout));
            server.serve(service).await?;
        }
        None => {
            let mut server = axum_server::from_tcp(listener)?.handle(handle);
            server
                .http_builder()
                .http1()
                .header_read_timeout(Some(config.header_read_timeout));
            server.serve(service).await?;
        }
    }
    Ok(())
}

fn spawn_sighup_reload(policy: Arc<PolicyEngine>) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot install SIGHUP handler; policy reloads on file change only");
            return;
        };
        while hup.recv().await.is_some() {
            match policy.reload() {
                Ok(outcome) => tracing::info!(?outcome, "policy reloaded on SIGHUP"),
                Err(e) => {
                    tracing::error!(error = %e, "policy reload refused; the previous policy keeps serving")
                }
            }
        }
    });
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}
