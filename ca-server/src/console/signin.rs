//! Sign-in: authorization code + PKCE with the `[login]` provider, as a
//! backend for the browser (the browser never holds a token).
//!
//! Nothing is stored before the provider vouches for someone: the pending
//! sign-in is a short-lived cookie `state.expiry.mac`, MAC'd with a secret
//! every replica shares through the database. The PKCE verifier and the
//! nonce are derived from the state with that secret, so the cookie carries
//! neither and any replica can finish a sign-in another one began. The
//! callback then needs the cookie (this browser began it), the matching
//! `state`, a code the provider redeems for an ID token, and that token must
//! pass the API's own [`TokenVerifier`](crate::oidc::TokenVerifier) with the
//! derived nonce.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use rand_core::{OsRng, RngCore as _};
use sha2::{Digest as _, Sha256};

/// How long a begun sign-in may take at the provider.
pub const PENDING_TTL_SECS: u64 = 600;

/// The console's secret: MACs pending sign-ins and derives CSRF tokens.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn new(key: [u8; 32]) -> Self {
        Secret(key)
    }

    /// base64url(HMAC-SHA256(key, purpose \0 parts...)): 43 characters.
    fn derive(&self, purpose: &str, parts: &[&str]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(purpose.as_bytes());
        for p in parts {
            mac.update(b"\0");
            mac.update(p.as_bytes());
        }
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// The CSRF token of a session: bound to its id, never stored.
    pub fn csrf(&self, session_id: &str) -> String {
        self.derive("csrf", &[session_id])
    }
}

/// A random 32-byte value, base64url (43 characters).
pub fn random_id() -> String {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// Constant-time equality of two strings.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A sign-in begun in this browser.
#[derive(Debug, PartialEq, Eq)]
pub struct Pending {
    pub state: String,
    pub expires_at: u64,
}

impl Pending {
    pub fn begin(now: u64) -> Self {
        Pending {
            state: random_id(),
            expires_at: now + PENDING_TTL_SECS,
        }
    }

    /// The cookie value.
    pub fn to_cookie(&self, secret: &Secret) -> String {
        let exp = self.expires_at.to_string();
        let mac = secret.derive("login", &[&self.state, &exp]);
        format!("{}.{exp}.{mac}", self.state)
    }

    /// The cookie back, if this server made it and it has not expired.
    pub fn from_cookie(value: &str, secret: &Secret, now: u64) -> Option<Pending> {
        let mut parts = value.split('.');
        let (state, exp, mac) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !same(mac, &secret.derive("login", &[state, exp])) {
            return None;
        }
        let expires_at: u64 = exp.parse().ok()?;
        (now < expires_at).then(|| Pending {
            state: state.to_owned(),
            expires_at,
        })
    }

    /// The PKCE code verifier (RFC 7636: 43 unreserved characters).
    pub fn verifier(&self, secret: &Secret) -> String {
        secret.derive("pkce", &[&self.state])
    }

    /// Its S256 challenge.
    pub fn challenge(&self, secret: &Secret) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.verifier(secret).as_bytes()))
    }

    /// The nonce the ID token must carry.
    pub fn nonce(&self, secret: &Secret) -> String {
        secret.derive("nonce", &[&self.state])
    }
}

/// The provider's endpoints, from its discovery document.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub authorization: reqwest::Url,
    pub token: reqwest::Url,
}

impl Endpoints {
    /// Read the endpoints from `discovery`, which must name `issuer`; both
    /// must be https, or http on the issuer's own loopback host.
    pub fn from_discovery(issuer: &str, discovery: &serde_json::Value) -> Result<Self, String> {
        if discovery.get("issuer").and_then(|v| v.as_str()) != Some(issuer) {
            return Err(format!(
                "the discovery document does not name issuer {issuer:?}"
            ));
        }
        let issuer_url = reqwest::Url::parse(issuer).map_err(|e| e.to_string())?;
        let url = |field: &str| -> Result<reqwest::Url, String> {
            let s = discovery
                .get(field)
                .and_then(|v| v.as_str())
                .ok_or_else(|| format!("the discovery document has no {field}"))?;
            let u = reqwest::Url::parse(s).map_err(|e| format!("{field} {s:?}: {e}"))?;
            let plain_ok = issuer_url.scheme() == "http" && u.host_str() == issuer_url.host_str();
            if u.scheme() != "https" && !(u.scheme() == "http" && plain_ok) {
                return Err(format!("{field} {s:?} is not https"));
            }
            Ok(u)
        };
        Ok(Endpoints {
            authorization: url("authorization_endpoint")?,
            token: url("token_endpoint")?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_pending_cookie_opens_only_unchanged_unexpired_and_with_its_secret() {
        let secret = Secret::new([7; 32]);
        let p = Pending::begin(1000);
        let cookie = p.to_cookie(&secret);
        assert_eq!(
            Pending::from_cookie(&cookie, &secret, 1000),
            Some(Pending { ..p })
        );
        let p = Pending::from_cookie(&cookie, &secret, 1000).unwrap();
        assert!(Pending::from_cookie(&cookie, &secret, p.expires_at).is_none());
        assert!(Pending::from_cookie(&cookie, &Secret::new([8; 32]), 1000).is_none());
        let longer = cookie.replacen(&format!(".{}.", p.expires_at), ".99999999999.", 1);
        assert!(Pending::from_cookie(&longer, &secret, 1000).is_none());
        assert!(Pending::from_cookie(&format!("{cookie}.x"), &secret, 1000).is_none());
        assert_eq!(p.verifier(&secret).len(), 43);
        assert_ne!(p.verifier(&secret), p.nonce(&secret));
    }
}
