//! What the verifier is configured with: the trusted issuers and the knobs
//! they share, the checks an issuer entry must pass, and which URLs keys may
//! be fetched from.

use std::time::Duration;

use ca_core::{IdentityKind, LoginRule};
use reqwest::Url;

use super::error::OidcConfigError;

/// Clock-skew leeway ceiling; larger configured values are clamped to it.
pub const MAX_LEEWAY_SECS: u64 = 60;
/// Claim that carries group names unless an issuer configures another.
pub const DEFAULT_GROUPS_CLAIM: &str = "groups";

/// One trusted OpenID provider.
#[derive(Clone, Debug)]
pub struct IssuerConfig {
    /// The issuer identifier, compared byte for byte with the token's `iss`.
    pub issuer: String,
    /// Client ids this CA accepts in `aud` (at least one).
    pub audiences: Vec<String>,
    /// Claim holding the group names (an array of strings); usually
    /// [`DEFAULT_GROUPS_CLAIM`].
    pub groups_claim: String,
    /// PEM bundle of CA certificates to trust for this IdP *instead of* the
    /// built-in web roots (as `curl --cacert` does).
    pub ca_bundle: Option<std::path::PathBuf>,
    /// Whether this issuer's subjects are people or workloads.
    pub kind: IdentityKind,
    /// When set, this issuer's RFC 9068 JWT access tokens (`typ: at+jwt`,
    /// e.g. from a client-credentials grant) are accepted too, if their
    /// `aud` contains this value (the resource indicator the IdP issues them
    /// for) and they carry `client_id`. Workload issuers only: an access
    /// token says which client asked, not that a person signed in. `None`:
    /// access tokens are refused, so one cannot pass for an ID token.
    pub access_token_audience: Option<String>,
    /// How this issuer's people get their login name (`login_claim`,
    /// `email_domains`). [`LoginRule::none`] (the default): none at all, so
    /// no personal principal; ignored for workloads.
    pub login: LoginRule,
}

impl IssuerConfig {
    /// A config with the default groups claim and the built-in roots.
    pub fn new(issuer: impl Into<String>, audiences: Vec<String>, kind: IdentityKind) -> Self {
        IssuerConfig {
            issuer: issuer.into(),
            audiences,
            groups_claim: DEFAULT_GROUPS_CLAIM.to_owned(),
            ca_bundle: None,
            kind,
            access_token_audience: None,
            login: LoginRule::none(),
        }
    }

    /// Refuses what [`TokenVerifier::new`](super::TokenVerifier::new) must
    /// not start with: an issuer URL it would not fetch from, no or an empty
    /// audience, an empty groups claim, access tokens on a human issuer or
    /// without their audience. Returns the discovery document's URL.
    pub(super) fn check(&self) -> Result<Url, OidcConfigError> {
        let url_err = |reason: String| OidcConfigError::IssuerUrl {
            issuer: self.issuer.clone(),
            reason,
        };
        let url = Url::parse(&self.issuer).map_err(|e| url_err(e.to_string()))?;
        check_fetch_url(&url).map_err(url_err)?;
        if url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(url_err(
                "an issuer has no query, fragment or user info".into(),
            ));
        }
        let discovery_url = Url::parse(&format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        ))
        .map_err(|e| url_err(e.to_string()))?;
        if self.audiences.is_empty() {
            return Err(OidcConfigError::NoAudience(self.issuer.clone()));
        }
        if self.audiences.iter().any(String::is_empty) {
            return Err(OidcConfigError::EmptyAudience(self.issuer.clone()));
        }
        if self.groups_claim.is_empty() {
            return Err(OidcConfigError::EmptyGroupsClaim(self.issuer.clone()));
        }
        if let Some(aud) = &self.access_token_audience {
            if self.kind != IdentityKind::Workload {
                return Err(OidcConfigError::AccessTokensOnHumanIssuer(
                    self.issuer.clone(),
                ));
            }
            if aud.is_empty() {
                return Err(OidcConfigError::EmptyAccessTokenAudience(
                    self.issuer.clone(),
                ));
            }
        }
        Ok(discovery_url)
    }
}

/// Knobs shared by every issuer.
#[derive(Clone, Debug)]
pub struct VerifierOptions {
    /// Clock-skew allowance for `exp`, `nbf` and `iat`; clamped to
    /// [`MAX_LEEWAY_SECS`].
    pub leeway_secs: u64,
    /// At most one fetch of an issuer's keys per this interval, whatever
    /// triggers it (unknown `kid`, stale keys, `refresh_all`); at most 2 s
    /// while the issuer has no usable keys at all.
    pub refresh_min_interval: Duration,
    /// Bound on each discovery or JWKS request, connection to last byte.
    pub http_timeout: Duration,
    /// Cached keys stay usable this long after the last successful fetch,
    /// so an IdP outage does not stop logins until then.
    pub jwks_max_age: Duration,
}

impl Default for VerifierOptions {
    fn default() -> Self {
        VerifierOptions {
            leeway_secs: 30,
            refresh_min_interval: Duration::from_secs(30),
            http_timeout: Duration::from_secs(10),
            jwks_max_age: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// https anywhere, plain http only to the loopback interface.
pub(super) fn check_fetch_url(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err("plain http is only allowed for loopback addresses (127.0.0.0/8, ::1, localhost); use https".into()),
        other => Err(format!("scheme {other:?} is not https")),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some(host) if host.eq_ignore_ascii_case("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::oidc::TokenVerifier;
    use crate::oidc::tests::{AUD, RESOURCE, opts};

    #[test]
    fn access_tokens_are_refused_on_human_issuer_configs() {
        let cfg = |kind, aud: &str| IssuerConfig {
            access_token_audience: Some(aud.to_owned()),
            ..IssuerConfig::new("https://idp.example.com", vec![AUD.into()], kind)
        };
        let err = TokenVerifier::new(vec![cfg(IdentityKind::Human, RESOURCE)], opts()).unwrap_err();
        assert!(
            matches!(err, OidcConfigError::AccessTokensOnHumanIssuer(_)),
            "{err}"
        );
        assert!(err.to_string().contains("kind = \"workload\""), "{err}");
        assert!(matches!(
            TokenVerifier::new(vec![cfg(IdentityKind::Workload, "")], opts()),
            Err(OidcConfigError::EmptyAccessTokenAudience(_))
        ));
        TokenVerifier::new(vec![cfg(IdentityKind::Workload, RESOURCE)], opts()).unwrap();
    }

    #[test]
    fn validates_configuration() {
        let cfg = |issuer: &str| IssuerConfig::new(issuer, vec![AUD.into()], IdentityKind::Human);
        let new = |issuers: Vec<IssuerConfig>| TokenVerifier::new(issuers, opts());
        for ok in [
            "https://accounts.example.com",
            "https://login.example.com/tenant/v2.0/",
            "http://127.0.0.1:8080",
            "http://127.3.4.5",
            "http://localhost:9000/dev-idp",
            "http://[::1]:8080",
        ] {
            new(vec![cfg(ok)]).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "http://accounts.example.com",
            "http://10.0.0.1",
            "http://[::2]",
            "http://localhost.example.com",
            "ftp://example.com",
            "accounts.example.com",
            "https://example.com/?tenant=1",
            "https://example.com/#x",
            "https://user@example.com",
        ] {
            assert!(
                matches!(new(vec![cfg(bad)]), Err(OidcConfigError::IssuerUrl { .. })),
                "{bad}"
            );
        }
        assert!(matches!(new(vec![]), Err(OidcConfigError::NoIssuers)));
        let a = cfg("https://a.example.com");
        assert!(matches!(
            new(vec![a.clone(), a.clone()]),
            Err(OidcConfigError::DuplicateIssuer(_))
        ));
        assert!(matches!(
            new(vec![IssuerConfig {
                audiences: vec![],
                ..a.clone()
            }]),
            Err(OidcConfigError::NoAudience(_))
        ));
        assert!(matches!(
            new(vec![IssuerConfig {
                audiences: vec![String::new()],
                ..a.clone()
            }]),
            Err(OidcConfigError::EmptyAudience(_))
        ));
        assert!(matches!(
            new(vec![IssuerConfig {
                groups_claim: String::new(),
                ..a.clone()
            }]),
            Err(OidcConfigError::EmptyGroupsClaim(_))
        ));
        let missing = IssuerConfig {
            ca_bundle: Some("/nonexistent/ca.pem".into()),
            ..a.clone()
        };
        assert!(matches!(
            new(vec![missing]),
            Err(OidcConfigError::CaBundle { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        let bad_bundle = IssuerConfig {
            ca_bundle: Some(not_pem),
            ..a
        };
        assert!(matches!(
            new(vec![bad_bundle]),
            Err(OidcConfigError::CaBundle { .. })
        ));
    }
}
