//! The CA's HTTP API as the client sees it: `/v1/config`, `/v1/ca`,
//! `/v1/certs/user`, with errors that say what to do and the CA's clock.

use std::time::Duration;

use ca_core::wire::{
    CaKeys, ClientConfig, ErrorBody, ErrorDetail, UserCertRequest, UserCertResponse,
};
use reqwest::{StatusCode, Url};

/// Clock differences with the CA above this are reported.
pub const SKEW_WARN_SECS: i64 = 60;

/// A call to the CA failed.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(
        "cannot reach the CA at {url}: {detail}. Check the URL (--ca, JITSSH_CA or the profile's `ca`) and your network or VPN"
    )]
    Unreachable { url: String, detail: String },
    #[error(
        "the CA at {url} did not answer within {secs} s; try again, or check your network or VPN"
    )]
    Timeout { url: String, secs: u64 },
    #[error("the CA at {url} has no login configuration: {message}")]
    LoginNotConfigured { url: String, message: String },
    #[error("the CA answered {status} ({code}): {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        reasons: Vec<String>,
    },
    #[error(
        "the CA at {url} sent an unexpected answer ({detail}); is this the URL of a jitssh CA?"
    )]
    BadResponse { url: String, detail: String },
}

impl CaError {
    /// The stable error code of an API refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            CaError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// An HTTP client for one CA.
#[derive(Clone, Debug)]
pub struct CaClient {
    base: Url,
    http: reqwest::Client,
    timeout: Duration,
}

/// An answer and the CA's clock when it sent it (from `Date`).
#[derive(Debug)]
pub struct Answer<T> {
    pub value: T,
    pub server_time: Option<u64>,
}

impl CaClient {
    pub fn new(base: Url, http: reqwest::Client, timeout: Duration) -> CaClient {
        CaClient {
            base,
            http,
            timeout,
        }
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.as_str().trim_end_matches('/'))
    }

    /// `GET /v1/config`: the OpenID provider and client to log in with.
    pub async fn config(&self) -> Result<Answer<ClientConfig>, CaError> {
        let url = self.url("/v1/config");
        let resp = self.send(self.http.get(&url)).await?;
        match self.json(resp, &url).await {
            Err(CaError::Api { code, message, .. }) if code == "login_not_configured" => {
                Err(CaError::LoginNotConfigured { url, message })
            }
            other => other,
        }
    }

    /// `GET /v1/ca`: the user and host CA public keys.
    pub async fn keys(&self) -> Result<Answer<CaKeys>, CaError> {
        let url = self.url("/v1/ca");
        let resp = self.send(self.http.get(&url)).await?;
        self.json(resp, &url).await
    }

    /// `POST /v1/certs/user` with the ID token as bearer.
    pub async fn issue(
        &self,
        id_token: &str,
        request: &UserCertRequest,
    ) -> Result<Answer<UserCertResponse>, CaError> {
        let url = self.url("/v1/certs/user");
        let req = self.http.post(&url).bearer_auth(id_token).json(request);
        let resp = self.send(req).await?;
        self.json(resp, &url).await
    }

    /// `GET /v1/krl/hosts`: the host KRL (binary; the caller checks it).
    pub async fn host_krl(&self) -> Result<Vec<u8>, CaError> {
        let url = self.url("/v1/krl/hosts");
        let resp = self.send(self.http.get(&url)).await?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        if !status.is_success() {
            return Err(api_error(status, &bytes, &url));
        }
        Ok(bytes.to_vec())
    }

    /// `GET path` with the ID token as bearer (elevation endpoints).
    pub async fn get_authed<T: serde::de::DeserializeOwned>(
        &self,
        id_token: &str,
        path: &str,
    ) -> Result<Answer<T>, CaError> {
        let url = self.url(path);
        let resp = self.send(self.http.get(&url).bearer_auth(id_token)).await?;
        self.json(resp, &url).await
    }

    /// `POST path` with a JSON body and the ID token as bearer.
    pub async fn post_authed<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        id_token: &str,
        path: &str,
        body: &B,
    ) -> Result<Answer<T>, CaError> {
        let url = self.url(path);
        let req = self.http.post(&url).bearer_auth(id_token).json(body);
        let resp = self.send(req).await?;
        self.json(resp, &url).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, CaError> {
        req.timeout(self.timeout)
            .send()
            .await
            .map_err(|e| self.transport_error(&e))
    }

    fn transport_error(&self, e: &reqwest::Error) -> CaError {
        let url = self.base.as_str().trim_end_matches('/').to_owned();
        if e.is_timeout() {
            return CaError::Timeout {
                url,
                secs: self.timeout.as_secs(),
            };
        }
        CaError::Unreachable {
            url,
            detail: transport_detail(e),
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        resp: reqwest::Response,
        url: &str,
    ) -> Result<Answer<T>, CaError> {
        let status = resp.status();
        let server_time = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map(|value| Answer { value, server_time })
                .map_err(|e| CaError::BadResponse {
                    url: url.to_owned(),
                    detail: format!("{status}, body is not the expected JSON: {e}"),
                });
        }
        Err(api_error(status, &bytes, url))
    }
}

fn api_error(status: StatusCode, body: &[u8], url: &str) -> CaError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody {
            error:
                ErrorDetail {
                    code,
                    message,
                    reasons,
                },
        }) => CaError::Api {
            status: status.as_u16(),
            code,
            message,
            reasons,
        },
        Err(_) => CaError::BadResponse {
            url: url.to_owned(),
            detail: format!("HTTP {status} without a jitssh error body"),
        },
    }
}

/// The innermost cause of a transport failure, e.g. "connection refused".
pub fn transport_detail(e: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut innermost = e.to_string();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                _ => io.to_string(),
            };
        }
        innermost = s.to_string();
        source = s.source();
    }
    innermost
}

/// `Date: Tue, 15 Nov 1994 08:12:31 GMT` → Unix seconds.
pub fn parse_http_date(value: &str) -> Option<u64> {
    chrono::DateTime::parse_from_rfc2822(value)
        .ok()
        .and_then(|t| u64::try_from(t.timestamp()).ok())
}

/// The local clock minus the CA's, in seconds (positive: we are ahead).
pub fn skew(server_time: u64, local_now: u64) -> i64 {
    i64::try_from(local_now).unwrap_or(i64::MAX) - i64::try_from(server_time).unwrap_or(i64::MAX)
}

/// What to say about a clock difference, if anything.
pub fn describe_skew(skew: i64) -> Option<String> {
    if skew.abs() <= SKEW_WARN_SECS {
        return None;
    }
    let direction = if skew > 0 { "ahead of" } else { "behind" };
    Some(format!(
        "your clock is {} s {direction} the CA's; certificates will look expired or not yet valid. \
         Sync it (e.g. `sudo timedatectl set-ntp true`) and try again",
        skew.abs()
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Tue, 15 Nov 1994 08:12:31 GMT"),
            Some(784_887_151)
        );
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn skew_messages() {
        assert_eq!(describe_skew(skew(1000, 1030)), None);
        assert_eq!(
            describe_skew(skew(1000, 1300)).unwrap(),
            "your clock is 300 s ahead of the CA's; certificates will look expired or not yet valid. \
             Sync it (e.g. `sudo timedatectl set-ntp true`) and try again"
        );
        assert!(
            describe_skew(skew(1300, 1000))
                .unwrap()
                .starts_with("your clock is 300 s behind")
        );
    }

    #[test]
    fn api_errors_keep_the_policy_reasons() {
        let body = br#"{"error":{"code":"denied_by_policy","message":"denied","reasons":["no principal for you"]}}"#;
        match api_error(StatusCode::FORBIDDEN, body, "u") {
            CaError::Api {
                status,
                code,
                reasons,
                ..
            } => {
                assert_eq!((status, code.as_str()), (403, "denied_by_policy"));
                assert_eq!(reasons, ["no principal for you"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            api_error(StatusCode::BAD_GATEWAY, b"<html>", "u"),
            CaError::BadResponse { .. }
        ));
    }

    #[test]
    fn unreachable_message_says_what_to_check() {
        let e = CaError::Unreachable {
            url: "http://127.0.0.1:1".into(),
            detail: "connection refused".into(),
        };
        assert_eq!(
            e.to_string(),
            "cannot reach the CA at http://127.0.0.1:1: connection refused. Check the URL (--ca, JITSSH_CA or the profile's `ca`) and your network or VPN"
        );
    }
}
