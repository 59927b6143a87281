//! Getting an ID token from the CA's OpenID provider (openidconnect crate):
//! authorization code + PKCE S256 with a loopback redirect (RFC 8252), the
//! device authorization grant (RFC 8628), and refresh tokens.
//!
//! The CA verifies the ID token again; the client checks it too (signature
//! against the provider's JWKS, issuer, audience, expiry, and the `nonce` of
//! the authorization request) so a swapped or replayed token is caught here.

use std::collections::BTreeMap;
use std::time::Duration;

use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod,
    CoreDeviceAuthorizationResponse, CoreGrantType, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreResponseMode,
    CoreResponseType, CoreSubjectIdentifierType, CoreTokenResponse,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthenticationFlow, AuthorizationCode, ClaimsVerificationError,
    ClientId, CsrfToken, DeviceAuthorizationUrl, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    HttpClientError, IssuerUrl, Nonce, OAuth2TokenResponse as _, PkceCodeChallenge,
    ProviderMetadata, RedirectUrl, RefreshToken, RequestTokenError, RevocationUrl, Scope,
    TokenResponse as _,
};
use serde::{Deserialize, Serialize};

use crate::loopback::{Callback, Loopback, LoopbackError};
use crate::ui::Ui;

/// Provider metadata with the two endpoints OpenID Connect Discovery leaves out.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ExtraMetadata {
    #[serde(default)]
    device_authorization_endpoint: Option<DeviceAuthorizationUrl>,
    #[serde(default)]
    revocation_endpoint: Option<RevocationUrl>,
}
impl AdditionalProviderMetadata for ExtraMetadata {}

type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// The client as built from discovery: authorization endpoint set, token and
/// userinfo endpoints as discovered; `Device` set for the device flow.
type Client<Device = EndpointNotSet> = CoreClient<
    EndpointSet,
    Device,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

type HttpError = HttpClientError<reqwest::Error>;

/// Getting an ID token failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error(
        "cannot reach the OpenID provider {issuer}: {detail}. Check your network or VPN; if it persists, ask the CA's operator whether the issuer in its [login] section is right"
    )]
    Unreachable { issuer: String, detail: String },
    #[error(
        "the OpenID provider {issuer} is not usable: {detail}. Ask the CA's operator to check the [login] section"
    )]
    Provider { issuer: String, detail: String },
    #[error(
        "the OpenID provider {0} does not offer the device flow; run `jitssh login` without --device (use --no-browser on a headless machine)"
    )]
    NoDeviceFlow(String),
    #[error("the sign-in was cancelled or refused at the provider ({}); run `jitssh login` to try again", describe(.error, .description.as_deref()))]
    Denied {
        error: String,
        description: Option<String>,
    },
    #[error(
        "no sign-in completed within {0} s; run `jitssh login` again and finish the sign-in in the browser"
    )]
    TimedOut(u64),
    #[error(
        "the device code expired before the sign-in was approved; run `jitssh login --device` again"
    )]
    DeviceCodeExpired,
    #[error("the provider refused the {grant}: {}", describe(.error, .description.as_deref()))]
    Token {
        grant: &'static str,
        error: String,
        description: Option<String>,
    },
    #[error(
        "the provider's answer carries no ID token; ask the CA's operator to check that client {0} gets the `openid` scope"
    )]
    NoIdToken(String),
    #[error("the ID token from the provider does not verify ({0}); run `jitssh login --force`")]
    BadIdToken(String),
    #[error(
        "the ID token from the provider looks expired ({0}): is your clock right? Sync it (e.g. `sudo timedatectl set-ntp true`) and try again"
    )]
    ClockSkew(String),
    #[error(
        "the redirect came from issuer {got:?}, not {expected:?} (a mix-up attack or a misconfigured provider); do not retry until the CA's operator has checked it"
    )]
    IssuerMismatch { got: String, expected: String },
    #[error(transparent)]
    Listener(LoopbackError),
}

fn describe(error: &str, description: Option<&str>) -> String {
    match description {
        Some(d) if !d.is_empty() => format!("{error}: {d}"),
        _ => error.to_owned(),
    }
}

/// What a successful sign-in yields.
#[derive(Clone, Debug)]
pub struct Tokens {
    /// The raw, verified ID token: the bearer credential for the CA.
    pub id_token: String,
    pub refresh_token: Option<String>,
}

/// How the interactive flows behave.
#[derive(Clone, Debug)]
pub struct Interaction {
    pub open_browser: bool,
    /// How long to wait for the user.
    pub timeout: Duration,
}

/// The extra authorization request parameters that ask `issuer` for offline
/// access (a refresh token, so later logins and `jitssh ensure` need no
/// browser), the way each family of providers grants it: with the
/// `offline_access` scope, OIDC Core §11 says the request must carry
/// `prompt=consent` (providers that follow it strictly, like npm
/// `oidc-provider`, drop the scope otherwise); Google wants
/// `access_type=offline` instead. The CA's `[login] authorization_params`
/// and then the profile's override these defaults key by key; an empty value
/// removes a parameter (e.g. `prompt = ""` where consent prompts need an
/// administrator).
pub fn authorization_params(
    issuer: &str,
    scopes: &[String],
    from_ca: &BTreeMap<String, String>,
    from_profile: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut params = BTreeMap::new();
    if scopes.iter().any(|s| s == "offline_access") {
        params.insert("prompt".to_owned(), "consent".to_owned());
    }
    if issuer.trim_end_matches('/') == "https://accounts.google.com" {
        params.insert("access_type".to_owned(), "offline".to_owned());
    }
    for (k, v) in from_ca.iter().chain(from_profile) {
        params.insert(k.clone(), v.clone());
    }
    params
        .into_iter()
        .filter(|(k, v)| {
            !v.is_empty() && !ca_core::wire::RESERVED_AUTHORIZATION_PARAMS.contains(&k.as_str())
        })
        .collect()
}

/// A discovered provider and the CA's client for it.
#[derive(Debug)]
pub struct Provider {
    issuer: String,
    client_id: ClientId,
    scopes: Vec<Scope>,
    /// Extra parameters of the authorization request ([`authorization_params`]).
    auth_params: Vec<(String, String)>,
    metadata: Metadata,
    http: reqwest::Client,
}

impl Provider {
    /// Fetch the provider's discovery document and keys.
    pub async fn discover(
        http: &reqwest::Client,
        issuer: &str,
        client_id: &str,
        scopes: &[String],
    ) -> Result<Provider, OidcError> {
        let bad = |detail: String| OidcError::Provider {
            issuer: issuer.to_owned(),
            detail,
        };
        let issuer_url =
            IssuerUrl::new(issuer.to_owned()).map_err(|e| bad(format!("issuer URL: {e}")))?;
        let metadata = Metadata::discover_async(issuer_url, http)
            .await
            .map_err(|e| match e {
                openidconnect::DiscoveryError::Request(HttpClientError::Reqwest(e)) => {
                    OidcError::Unreachable {
                        issuer: issuer.to_owned(),
                        detail: crate::ca::transport_detail(&e),
                    }
                }
                other => bad(error_chain(&other)),
            })?;
        Ok(Provider {
            issuer: issuer.to_owned(),
            client_id: ClientId::new(client_id.to_owned()),
            // The client adds `openid` itself.
            scopes: scopes
                .iter()
                .filter(|s| s.as_str() != "openid")
                .map(|s| Scope::new(s.clone()))
                .collect(),
            auth_params: Vec::new(),
            metadata,
            http: http.clone(),
        })
    }

    /// Send these extra parameters with the authorization request.
    pub fn with_authorization_params(mut self, params: Vec<(String, String)>) -> Provider {
        self.auth_params = params;
        self
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    fn client(&self) -> Client {
        CoreClient::from_provider_metadata(self.metadata.clone(), self.client_id.clone(), None)
    }

    /// Authorization code + PKCE with a loopback redirect: print (and open)
    /// the authorization URL, wait for the browser to come back.
    pub async fn auth_code(&self, ui: &Ui, how: &Interaction) -> Result<Tokens, OidcError> {
        let loopback = Loopback::bind().await.map_err(OidcError::Listener)?;
        let redirect =
            RedirectUrl::new(loopback.redirect_uri.clone()).map_err(|e| OidcError::Provider {
                issuer: self.issuer.clone(),
                detail: e.to_string(),
            })?;
        let client = self.client().set_redirect_uri(redirect);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scopes(self.scopes.iter().cloned())
            .set_pkce_challenge(challenge);
        for (key, value) in &self.auth_params {
            request = request.add_extra_param(key.clone(), value.clone());
        }
        let (url, state, nonce) = request.url();

        let opened = how.open_browser && crate::ui::open_browser(url.as_str());
        if opened {
            ui.prompt(&format!(
                "Opened your browser to sign in. If it did not open, visit:\n\n    {url}\n"
            ));
        } else {
            ui.prompt(&format!(
                "To sign in, open this URL in a browser:\n\n    {url}\n"
            ));
        }
        let spinner = ui.spinner("Waiting for the sign-in in the browser…");
        let callback = loopback
            .wait(state.secret(), how.timeout)
            .await
            .map_err(|e| match e {
                LoopbackError::TimedOut(s) => OidcError::TimedOut(s),
                other => OidcError::Listener(other),
            });
        spinner.finish();
        let code = match callback? {
            Callback::Error { error, description } => {
                return Err(OidcError::Denied { error, description });
            }
            Callback::Code { code, iss } => {
                // RFC 9207: a provider that names itself must be the one we asked.
                if let Some(iss) = iss
                    && iss != self.metadata.issuer().as_str()
                {
                    return Err(OidcError::IssuerMismatch {
                        got: iss,
                        expected: self.issuer.clone(),
                    });
                }
                code
            }
        };
        let response = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| self.config_error(e))?
            .set_pkce_verifier(verifier)
            .request_async(&self.http)
            .await
            .map_err(|e| self.token_error("authorization code", e))?;
        self.tokens(&client, &response, Some(&nonce))
    }

    /// Device authorization grant: show the verification URL and code, poll.
    pub async fn device(&self, ui: &Ui, how: &Interaction) -> Result<Tokens, OidcError> {
        let endpoint = self
            .metadata
            .additional_metadata()
            .device_authorization_endpoint
            .clone()
            .ok_or_else(|| OidcError::NoDeviceFlow(self.issuer.clone()))?;
        let client = self.client().set_device_authorization_url(endpoint);
        let details: CoreDeviceAuthorizationResponse = client
            .exchange_device_code()
            .add_scopes(self.scopes.iter().cloned())
            .request_async(&self.http)
            .await
            .map_err(|e| self.token_error("device authorization request", e))?;
        let mut text = format!(
            "To sign in, open {} on any device and enter the code {}",
            details.verification_uri().as_str(),
            details.user_code().secret()
        );
        if let Some(complete) = details.verification_uri_complete() {
            text.push_str(&format!("\n(or open {} directly)", complete.secret()));
        }
        ui.prompt(&format!("{text}\n"));
        let spinner = ui.spinner("Waiting for the sign-in to be approved…");
        let timeout = how.timeout.min(details.expires_in());
        let response = client
            .exchange_device_access_token(&details)
            .map_err(|e| self.config_error(e))?
            .request_async(&self.http, tokio::time::sleep, Some(timeout))
            .await;
        spinner.finish();
        let response = response.map_err(|e| match e {
            RequestTokenError::ServerResponse(r) => {
                let (error, description) = server_error(&r);
                match error.as_str() {
                    "access_denied" => OidcError::Denied { error, description },
                    "expired_token" if timeout < details.expires_in() => {
                        OidcError::TimedOut(timeout.as_secs())
                    }
                    "expired_token" => OidcError::DeviceCodeExpired,
                    _ => OidcError::Token {
                        grant: "device code",
                        error,
                        description,
                    },
                }
            }
            other => self.token_error("device code", other),
        })?;
        self.tokens(&client, &response, None)
    }

    /// Exchange a refresh token for a fresh ID token, without the user.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, OidcError> {
        let client = self.client();
        let token = RefreshToken::new(refresh_token.to_owned());
        let response = client
            .exchange_refresh_token(&token)
            .map_err(|e| self.config_error(e))?
            .request_async(&self.http)
            .await
            .map_err(|e| self.token_error("refresh token", e))?;
        let mut tokens = self.tokens(&client, &response, None)?;
        // Providers that do not rotate refresh tokens send none back.
        tokens
            .refresh_token
            .get_or_insert_with(|| refresh_token.to_owned());
        Ok(tokens)
    }

    /// Revoke a refresh token (RFC 7009), if the provider offers revocation.
    /// Returns whether it was revoked. A plain form POST rather than the
    /// oauth2 crate's, which refuses `http` outright: the development
    /// providers on loopback are `http`, and `profile::parse_ca_url`
    /// already confines plain http to loopback.
    pub async fn revoke(&self, refresh_token: &str) -> bool {
        let Some(endpoint) = self
            .metadata
            .additional_metadata()
            .revocation_endpoint
            .as_ref()
        else {
            return false;
        };
        let url = endpoint.url();
        let loopback = url
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .is_some_and(|h| {
                h == "localhost"
                    || h.parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
        if url.scheme() != "https" && !loopback {
            return false;
        }
        let form = [
            ("token", refresh_token),
            ("token_type_hint", "refresh_token"),
            ("client_id", self.client_id.as_str()),
        ];
        match self.http.post(url.as_str()).form(&form).send().await {
            Ok(resp) => resp.status().is_success(),
            Err(_) => false,
        }
    }

    /// Verify the ID token of a token response (with `nonce` when the request had one).
    fn tokens<D: openidconnect::EndpointState>(
        &self,
        client: &Client<D>,
        response: &CoreTokenResponse,
        nonce: Option<&Nonce>,
    ) -> Result<Tokens, OidcError> {
        let id_token = response
            .id_token()
            .ok_or_else(|| OidcError::NoIdToken(self.client_id.to_string()))?;
        let verifier = client.id_token_verifier();
        let verified = match nonce {
            Some(nonce) => id_token.claims(&verifier, nonce).map(|_| ()),
            // Device and refresh grants have no authorization request to bind a nonce to.
            None => id_token
                .claims(&verifier, |_: Option<&Nonce>| Ok(()))
                .map(|_| ()),
        };
        verified.map_err(|e| match e {
            ClaimsVerificationError::Expired(why) => OidcError::ClockSkew(why),
            ClaimsVerificationError::InvalidNonce(why) => {
                OidcError::BadIdToken(format!("nonce mismatch: {why}"))
            }
            other => OidcError::BadIdToken(error_chain(&other)),
        })?;
        Ok(Tokens {
            id_token: id_token.to_string(),
            refresh_token: response.refresh_token().map(|t| t.secret().clone()),
        })
    }

    fn config_error(&self, e: openidconnect::ConfigurationError) -> OidcError {
        OidcError::Provider {
            issuer: self.issuer.clone(),
            detail: e.to_string(),
        }
    }

    fn token_error<T>(&self, grant: &'static str, e: RequestTokenError<HttpError, T>) -> OidcError
    where
        T: openidconnect::ErrorResponse + Serialize + 'static,
    {
        match e {
            RequestTokenError::ServerResponse(r) => {
                let (error, description) = server_error(&r);
                OidcError::Token {
                    grant,
                    error,
                    description,
                }
            }
            RequestTokenError::Request(HttpClientError::Reqwest(e)) => OidcError::Unreachable {
                issuer: self.issuer.clone(),
                detail: crate::ca::transport_detail(&e),
            },
            other => OidcError::Provider {
                issuer: self.issuer.clone(),
                detail: format!("{grant}: {}", error_chain(&other)),
            },
        }
    }
}

impl OidcError {
    /// A refresh token the provider no longer accepts (expired, revoked, rotated away).
    pub fn is_rejected_grant(&self) -> bool {
        matches!(self, OidcError::Token { error, .. } if error == "invalid_grant")
    }
}

/// `error` and `error_description` of an OAuth error response, whatever its type.
fn server_error<T: Serialize>(response: &T) -> (String, Option<String>) {
    let v = serde_json::to_value(response).unwrap_or_default();
    let text = |k: &str| v.get(k).and_then(|s| s.as_str()).map(str::to_owned);
    (
        text("error").unwrap_or_else(|| "unknown_error".into()),
        text("error_description"),
    )
}

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn offline_access_is_asked_for_the_way_each_provider_grants_it() {
        let none = BTreeMap::new();
        let scopes = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let pairs = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let offline = scopes(&["openid", "email", "offline_access"]);
        // OIDC Core §11: offline_access with prompt=consent.
        assert_eq!(
            authorization_params("https://idp.example.com", &offline, &none, &none),
            pairs(&[("prompt", "consent")])
        );
        assert!(
            authorization_params(
                "https://idp.example.com",
                &scopes(&["openid"]),
                &none,
                &none
            )
            .is_empty()
        );
        // Google: access_type=offline.
        assert_eq!(
            authorization_params(
                "https://accounts.google.com",
                &scopes(&["openid"]),
                &none,
                &none
            ),
            pairs(&[("access_type", "offline")])
        );
        // The CA's settings, then the profile's, key by key; empty removes;
        // jitssh's own parameters are never taken.
        let ca = map(&[
            ("prompt", ""),
            ("domain_hint", "example.com"),
            ("state", "x"),
        ]);
        let profile = map(&[
            ("login_hint", "ann@example.com"),
            ("domain_hint", "corp.example.com"),
        ]);
        assert_eq!(
            authorization_params("https://idp.example.com", &offline, &ca, &profile),
            pairs(&[
                ("domain_hint", "corp.example.com"),
                ("login_hint", "ann@example.com")
            ])
        );
    }

    #[test]
    fn error_messages_say_what_to_do() {
        let e = OidcError::Denied {
            error: "access_denied".into(),
            description: Some("End-User aborted interaction".into()),
        };
        assert_eq!(
            e.to_string(),
            "the sign-in was cancelled or refused at the provider (access_denied: End-User aborted interaction); run `jitssh login` to try again"
        );
        assert_eq!(
            OidcError::TimedOut(300).to_string(),
            "no sign-in completed within 300 s; run `jitssh login` again and finish the sign-in in the browser"
        );
        let e = OidcError::Token {
            grant: "refresh token",
            error: "invalid_grant".into(),
            description: None,
        };
        assert!(e.is_rejected_grant());
        assert_eq!(
            e.to_string(),
            "the provider refused the refresh token: invalid_grant"
        );
    }

    #[test]
    fn server_errors_are_read_generically() {
        let r = serde_json::json!({"error": "slow_down", "error_description": "wait"});
        assert_eq!(server_error(&r), ("slow_down".into(), Some("wait".into())));
        assert_eq!(server_error(&serde_json::json!({})).0, "unknown_error");
    }
}
