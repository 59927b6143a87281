//! The HTTP side of key fetching: one hardened client per issuer and a JSON
//! GET bounded in size.

use reqwest::Url;
use serde_json::Value;

use super::error::OidcConfigError;
use super::options::{IssuerConfig, VerifierOptions};

/// Discovery documents and key sets larger than this are refused.
pub(super) const MAX_IDP_RESPONSE_BYTES: usize = 1024 * 1024;
/// Redirects followed when fetching discovery and keys (same host only).
const MAX_REDIRECTS: usize = 5;

/// The client that fetches one issuer's discovery document and keys:
/// bounded in time, same-host redirects only, https only unless the issuer
/// is on loopback, and the issuer's own roots when it names a CA bundle.
pub(super) fn client(
    cfg: &IssuerConfig,
    opts: &VerifierOptions,
    https: bool,
) -> Result<reqwest::Client, OidcConfigError> {
    let mut builder = reqwest::Client::builder()
        .timeout(opts.http_timeout)
        .connect_timeout(opts.http_timeout)
        .redirect(same_host_redirects())
        .https_only(https)
        .user_agent(concat!("jitssh-ca/", env!("CARGO_PKG_VERSION")));
    if !https {
        // Loopback IdP (dev/tests): never send it through a proxy.
        builder = builder.no_proxy();
    }
    if let Some(path) = &cfg.ca_bundle {
        let bundle_err = |reason: String| OidcConfigError::CaBundle {
            issuer: cfg.issuer.clone(),
            path: path.clone(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| bundle_err(e.to_string()))?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bundle_err(e.to_string()))?;
        if certs.is_empty() {
            return Err(bundle_err("no PEM certificate in the file".into()));
        }
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|source| OidcConfigError::HttpClient {
            issuer: cfg.issuer.clone(),
            source,
        })
}

/// Follows redirects only to the same host and never from https to http, so
/// a redirect cannot send the key fetch to another server.
fn same_host_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first() else {
            return attempt.stop();
        };
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error("too many redirects");
        }
        let next = attempt.url();
        let same_host = next.host_str() == first.host_str();
        let no_downgrade = next.scheme() == "https" || first.scheme() == "http";
        if same_host && no_downgrade {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

pub(super) async fn get_json(client: &reqwest::Client, url: &Url) -> Result<Value, String> {
    let mut resp = client
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", resp.status()));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_IDP_RESPONSE_BYTES as u64)
    {
        return Err(format!(
            "GET {url}: response larger than {MAX_IDP_RESPONSE_BYTES} bytes"
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
        if body.len() + chunk.len() > MAX_IDP_RESPONSE_BYTES {
            return Err(format!(
                "GET {url}: response larger than {MAX_IDP_RESPONSE_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))
}
