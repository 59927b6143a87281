//! `jitssh-ca serve`: assemble the authority from a `Config` and run the
//! HTTP(S) server until shutdown, with every connection bounded by
//! [`conn`]: a cap on how many, an idle timeout, a request-head timeout.

mod conn;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ca_core::wire::ClientConfig;

use crate::audit::AuditStore;
use crate::config::Config;
use crate::hsm::Pkcs11Signer;
use crate::http::{AppState, app};
use crate::issue::Authority;
use crate::keys::CaKey;
use crate::oidc::{TokenVerifier, VerifierOptions};
use crate::policy::PolicyEngine;
use crate::revocation::{RevocationCache, RevocationStore};

pub use conn::ConnLimits;

/// File descriptors kept free for everything but client connections.
pub const RESERVED_FDS: u64 = 256;

/// A client that has connected gets this long for its TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection bounds for `config`: its idle and header timeouts, and
/// its connection cap lowered to fit the open-file limit (a warning says so
/// when it does).
pub fn conn_limits(config: &Config) -> ConnLimits {
    let mut max_connections = config.max_connections;
    if let Some(nofile) = conn::open_files_limit() {
        let fit =
            usize::try_from(nofile.saturating_sub(RESERVED_FDS).max(16)).unwrap_or(usize::MAX);
        if fit < max_connections {
            tracing::warn!(
                open_files_limit = nofile,
                max_connections = fit,
                "the open-file limit (RLIMIT_NOFILE) caps connections below server.max_connections; \
                 raise it (systemd: LimitNOFILE=65536) to serve more clients at once"
            );
            max_connections = fit;
        }
    }
    ConnLimits {
        idle_timeout: config.idle_timeout,
        header_timeout: config.header_read_timeout,
        max_connections,
    }
}

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

/// The CA keys: from a PKCS#11 token when `[ca.pkcs11]` is set (and then
/// only from there), else from the key files with their rotation siblings.
pub fn load_ca_keys(
    config: &Config,
) -> anyhow::Result<(CaKey, CaKey, crate::issue::PublishedKeys)> {
    if let Some(p) = &config.pkcs11 {
        let user = CaKey::Pkcs11(Arc::new(
            Pkcs11Signer::open(p, &p.user_key_label).with_context(|| {
                format!("user CA key {:?} in the PKCS#11 token", p.user_key_label)
            })?,
        ));
        let host = CaKey::Pkcs11(Arc::new(
            Pkcs11Signer::open(p, &p.host_key_label).with_context(|| {
                format!("host CA key {:?} in the PKCS#11 token", p.host_key_label)
            })?,
        ));
        // The signing keys first, then the next and retiring ones of a
        // rotation in progress (crate::rotation::token).
        let admin = crate::hsm::TokenAdmin::open_read_only(p)?;
        let keys = |label: &str, signing: &ssh_key::public::KeyData| -> anyhow::Result<Vec<_>> {
            let all = crate::rotation::token::published(&admin, label)?;
            anyhow::ensure!(
                all.first().is_some_and(|k| k.key.key_data() == signing),
                "the PKCS#11 key {label:?} changed while starting; start again"
            );
            Ok(all.into_iter().map(|k| k.key.key_data().clone()).collect())
        };
        let published = crate::issue::PublishedKeys {
            user: keys(&p.user_key_label, user.public_key())?,
            host: keys(&p.host_key_label, host.public_key())?,
        };
        return Ok((user, host, published));
    }
    let user = CaKey::File(crate::keys::load(&config.user_ca_key)?);
    let host = CaKey::File(crate::keys::load(&config.host_ca_key)?);
    let keys = |path: &std::path::Path| -> anyhow::Result<Vec<_>> {
        Ok(crate::rotation::published(path)?
            .into_iter()
            .map(|p| p.key.key_data().clone())
            .collect())
    };
    let published = crate::issue::PublishedKeys {
        user: keys(&config.user_ca_key)?,
        host: keys(&config.host_ca_key)?,
    };
    Ok((user, host, published))
}

/// Load keys, open the database, compile the policy: everything that must
/// succeed before the server may answer.
pub fn build_authority(config: &Config, policy: Arc<PolicyEngine>) -> anyhow::Result<Authority> {
    let (user_ca, host_ca, published) = load_ca_keys(config)?;
    let db = config.database.open()?;
    let audit = AuditStore::open(&db)
        .with_context(|| format!("opening audit database {}", db.describe()))?;
    let verifier = TokenVerifier::new(config.issuers.clone(), verifier_options())?;
    let revocations = Arc::new(RevocationCache::load(
        RevocationStore::open(&db)?,
        crate::clock::now_unix(),
    )?);
    let hosts = crate::hosts::Hosts::new(
        crate::hosts::JoinTokenStore::open(&db)?,
        config.host_max_ttl,
        audit.shared_secret("host-challenge")?,
    );
    let logins = Arc::new(crate::logins::LoginNames::open(audit.clone())?);
    crate::logins::warn_about_issuers_without_a_rule(&config.issuers);
    let elevations = Arc::new(
        crate::elevation::Elevations::open(
            &db,
            audit.clone(),
            policy.clone(),
            config.elevation.clone(),
            crate::clock::now_unix(),
        )?
        .with_logins(logins.clone()),
    );
    let guards = crate::issue::Guards::open(&audit, config.rate_per_minute, config.rate_burst)?;
    Ok(Authority {
        limits: config.limits.clone(),
        user_ca,
        host_ca,
        published,
        verifier,
        policy,
        audit,
        revocations,
        hosts,
        elevations,
        logins,
        metrics: crate::metrics::Metrics::new(),
        unauthenticated: crate::unauthenticated::Unauthenticated::new(
            config.unauthenticated_per_minute,
        ),
        guards,
    })
}

/// The HTTP layer's state: `authority`, what `/v1/config` says, and the
/// console when `[ui]` is on (its session table and secret opened here).
pub fn app_state(
    config: &Config,
    authority: Authority,
    extra: Option<axum::Router>,
) -> anyhow::Result<Arc<AppState>> {
    let console = match &config.ui {
        Some(ui) => Some(Arc::new(
            crate::console::Console::open(
                ui.clone(),
                &config.issuers,
                &verifier_options(),
                &authority,
            )
            .context("starting the web console ([ui])")?,
        )),
        None => None,
    };
    Ok(Arc::new(AppState {
        authority: Arc::new(authority),
        client_config: config.login.as_ref().map(|l| ClientConfig {
            issuer: l.issuer.clone(),
            client_id: l.client_id.clone(),
            scopes: l.scopes.clone(),
            authorization_params: l.authorization_params.clone(),
        }),
        max_body_bytes: config.max_body_bytes,
        request_timeout: config.request_timeout,
        extra,
        console,
    }))
}

/// The server's TLS certificate and key (`server.tls_cert`, `server.tls_key`),
/// HTTP/1.1 only (see `conn`: no h2 in ALPN). The key file is checked like a
/// CA key (regular file, not a link, mode 0600 or stricter).
pub async fn load_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<axum_server::tls_rustls::RustlsConfig> {
    let key_pem = crate::secret_file::read(key, "server.tls_key")?;
    let cert_pem = std::fs::read(cert)
        .with_context(|| format!("reading server.tls_cert {}", cert.display()))?;
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(cert_pem, key_pem)
        .await
        .with_context(|| {
            format!(
                "loading TLS certificate {} and key {}",
                cert.display(),
                key.display()
            )
        })?;
    let mut rustls = (*tls.get_inner()).clone();
    rustls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(axum_server::tls_rustls::RustlsConfig::from_config(
        Arc::new(rustls),
    ))
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
    state.authority.elevations.spawn_background();
    state
        .authority
        .logins
        .clone()
        .spawn_refresher(Duration::from_secs(1));

    spawn_unauthenticated_summaries(state.authority.clone());
    let authority = state.authority.clone();

    let handle = axum_server::Handle::<SocketAddr>::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: draining requests");
        h.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let service = app(state).into_make_service_with_connect_info::<SocketAddr>();
    let limits = conn_limits(config);
    tracing::debug!(?limits, "connection limits");
    match &config.tls {
        Some((cert, key)) => {
            let tls = load_tls(cert, key).await?;
            let mut server = axum_server::from_tcp_rustls(listener, tls)?
                .map(|tls| {
                    conn::ConnAcceptor::new(tls.handshake_timeout(TLS_HANDSHAKE_TIMEOUT), limits)
                })
                .http1_only()
                .handle(handle);
            // hyper's header timer also runs while a keep-alive connection
            // waits for its next request; `conn` keeps both clocks instead.
            server.http_builder().http1().header_read_timeout(None);
            server.serve(service).await?;
        }
        None => {
            let mut server = axum_server::from_tcp(listener)?
                .map(|plain| conn::ConnAcceptor::new(plain, limits))
                .http1_only()
                .handle(handle);
            // hyper's header timer also runs while a keep-alive connection
            // waits for its next request; `conn` keeps both clocks instead.
            server.http_builder().http1().header_read_timeout(None);
            server.serve(service).await?;
        }
    }
    // What was counted since the last summary is still owed to the log.
    authority
        .flush_unauthenticated(crate::clock::now_unix(), true)
        .await;
    Ok(())
}

/// Write the summaries of refusals before authentication as their minutes
/// end (`unauthenticated`).
fn spawn_unauthenticated_summaries(authority: Arc<Authority>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            authority
                .flush_unauthenticated(crate::clock::now_unix(), false)
                .await;
        }
    });
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    #[tokio::test]
    async fn refuses_a_tls_key_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, "").unwrap();
        std::fs::write(&key, "").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", super::load_tls(&cert, &key).await.unwrap_err());
        assert!(
            e.contains("server.tls_key") && e.contains(&format!("chmod 600 {}", key.display())),
            "{e}"
        );
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&key, &link).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = format!("{:#}", super::load_tls(&cert, &link).await.unwrap_err());
        assert!(e.contains("symbolic link"), "{e}");
    }
}
