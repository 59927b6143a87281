//! The HTTP side of key fetching: one hardened client per issuer and a JSON
//! GET bounded in size.

use base64::Engine as _;
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
pub(crate) fn client(
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

pub(crate) async fn get_json(client: &reqwest::Client, url: &Url) -> Result<Value, String> {
    let resp = client
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", resp.status()));
    }
    read_json(resp, "GET", url).await
}

/// A form POST (the console's token request) and its JSON answer, bounded
/// like [`get_json`]; an error status still returns its JSON body when it
/// has one (`{"error": ...}`), with `Err` only for transport failures.
pub(crate) async fn post_form_json(
    client: &reqwest::Client,
    url: &Url,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> Result<(u16, Value), String> {
    let body = form
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let mut req = client.post(url.clone());
    if let Some((id, secret)) = basic {
        // RFC 6749 §2.3.1: each part form-urlencoded before base64.
        let pair = format!("{}:{}", form_encode(id), form_encode(secret));
        req = req.header(
            reqwest::header::AUTHORIZATION,
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ),
        );
    }
    let resp = req
        .header(reqwest::header::ACCEPT, "application/json")
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = resp.status().as_u16();
    Ok((status, read_json(resp, "POST", url).await?))
}

/// `application/x-www-form-urlencoded` for one key or value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

async fn read_json(mut resp: reqwest::Response, method: &str, url: &Url) -> Result<Value, String> {
    let url = format!("{method} {url}");
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_IDP_RESPONSE_BYTES as u64)
    {
        return Err(format!(
            "{url}: response larger than {MAX_IDP_RESPONSE_BYTES} bytes"
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{url}: {e}"))? {
        if body.len() + chunk.len() > MAX_IDP_RESPONSE_BYTES {
            return Err(format!(
                "{url}: response larger than {MAX_IDP_RESPONSE_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))
}
