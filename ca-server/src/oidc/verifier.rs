//! [`TokenVerifier`]: the checks in their order, cheapest and least
//! trusting first, from the token string to a [`Verified`] identity.

use std::sync::Arc;

use ca_core::VerifiedIdentity;
use serde_json::Value;

use super::claims::{check_access_claims, check_claims, identity};
use super::error::{OidcConfigError, TokenError, printable};
use super::hash::token_hash;
use super::header::{TokenType, parse_unverified};
use super::jwks::{IssuerState, Want};
use super::options::{IssuerConfig, MAX_LEEWAY_SECS, VerifierOptions};

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A successfully verified token: who, and for how long the token vouches.
#[derive(Clone, Debug)]
pub struct Verified {
    pub identity: VerifiedIdentity,
    /// The token's `exp` (Unix seconds).
    pub exp: u64,
    /// The token's `iat` (Unix seconds).
    pub iat: u64,
    /// [`token_hash`] of the token, for replay checks and audit rows.
    pub token_hash: String,
}

/// Verifies ID tokens from the configured issuers. Cheap to clone (shared state).
#[derive(Clone)]
pub struct TokenVerifier {
    issuers: Arc<[Arc<IssuerState>]>,
    leeway: u64,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field(
                "issuers",
                &self
                    .issuers
                    .iter()
                    .map(|i| &i.cfg.issuer)
                    .collect::<Vec<_>>(),
            )
            .field("leeway", &self.leeway)
            .finish()
    }
}

impl TokenVerifier {
    /// The configured issuers' URLs, in configuration order.
    pub fn issuer_urls(&self) -> Vec<String> {
        self.issuers.iter().map(|i| i.cfg.issuer.clone()).collect()
    }

    /// Checks the configuration and builds one HTTP client per issuer. Does
    /// no network I/O: call [`TokenVerifier::refresh_all`] at startup.
    pub fn new(issuers: Vec<IssuerConfig>, opts: VerifierOptions) -> Result<Self, OidcConfigError> {
        if issuers.is_empty() {
            return Err(OidcConfigError::NoIssuers);
        }
        let mut states = Vec::with_capacity(issuers.len());
        for cfg in issuers {
            if states
                .iter()
                .any(|s: &Arc<IssuerState>| s.cfg.issuer == cfg.issuer)
            {
                return Err(OidcConfigError::DuplicateIssuer(cfg.issuer));
            }
            states.push(Arc::new(IssuerState::new(cfg, &opts)?));
        }
        Ok(TokenVerifier {
            issuers: states.into(),
            leeway: opts.leeway_secs.min(MAX_LEEWAY_SECS),
        })
    }

    /// Verifies `token` at time `now_unix` and returns who it names.
    pub async fn verify(&self, token: &str, now_unix: u64) -> Result<VerifiedIdentity, TokenError> {
        self.verify_full(token, now_unix).await.map(|v| v.identity)
    }

    /// Like [`TokenVerifier::verify`], also returning the token's `exp`,
    /// `iat` and hash.
    pub async fn verify_full(&self, token: &str, now_unix: u64) -> Result<Verified, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge(token.len()));
        }
        let parsed = parse_unverified(token)?;
        let iss = match parsed.claims.get("iss") {
            None => return Err(TokenError::ClaimMissing("iss")),
            Some(Value::String(s)) => s,
            Some(_) => return Err(TokenError::ClaimType("iss")),
        };
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.cfg.issuer == *iss)
            .ok_or_else(|| TokenError::IssuerUnknown(printable(iss)))?;
        // Before any key fetch: access tokens only where the issuer opted in.
        let access_audience = match parsed.typ {
            TokenType::Id => None,
            TokenType::Access(typ) => Some(
                issuer
                    .cfg
                    .access_token_audience
                    .as_deref()
                    .ok_or(TokenError::TypeNotAllowed(typ.to_owned()))?,
            ),
        };

        let key = issuer.key_for(&parsed.kid, parsed.alg).await?;
        if !key.verify(
            parsed.alg,
            parsed.signing_input.as_bytes(),
            parsed.signature,
        ) {
            return Err(TokenError::SignatureInvalid);
        }

        let times = match access_audience {
            None => check_claims(&issuer.cfg, self.leeway, &parsed.claims, now_unix)?,
            Some(aud) => check_access_claims(aud, self.leeway, &parsed.claims, now_unix)?,
        };
        Ok(Verified {
            identity: identity(&issuer.cfg, parsed.claims, times.sub),
            exp: times.exp,
            iat: times.iat,
            token_hash: token_hash(token),
        })
    }

    /// Fetches discovery and keys of every issuer (rate-limited like any
    /// other fetch). `Ok` when every issuer ends with usable keys, even if a
    /// fetch failed and cached keys carry on; so `refresh_all().is_ok()`
    /// equals `ready()` afterwards.
    pub async fn refresh_all(&self) -> Result<(), TokenError> {
        let mut first_err = None;
        for issuer in self.issuers.iter() {
            issuer.refresh(Want::Explicit).await;
            if !issuer.has_usable_keys() && first_err.is_none() {
                first_err = Some(TokenError::IdpUnavailable(issuer.cfg.issuer.clone()));
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// True when every issuer has a key set younger than `jwks_max_age`.
    pub fn ready(&self) -> bool {
        self.issuers.iter().all(|i| i.has_usable_keys())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use ca_core::IdentityKind;
    use jsonwebtoken::Algorithm;
    use serde_json::json;

    use super::*;
    use crate::mint::MintExt as _;
    use crate::oidc::tests::{
        ALGORITHMS, AUD, NOW, access_token, b64, code, mock, opts, verifier, workload_verifier,
    };

    #[tokio::test]
    async fn accepts_every_asymmetric_algorithm_idps_use() {
        let m = mock().await;
        let v = verifier(&m);
        for alg in ALGORITHMS {
            let token = m.idp.mint(alg, m.claims());
            let got = v
                .verify_full(&token, NOW)
                .await
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!(got.exp, NOW + 300);
            assert_eq!(got.iat, NOW - 10);
            assert_eq!(got.token_hash, token_hash(&token));
            let id = got.identity;
            assert_eq!(id.issuer, m.issuer());
            assert_eq!(id.subject, "alice-id");
            assert_eq!(id.kind, IdentityKind::Human);
            assert_eq!(id.email.as_deref(), Some("alice@example.com"));
            assert!(id.email_verified);
            assert_eq!(id.groups, ["developers", "ops"], "non-strings are ignored");
            assert_eq!(id.claims["preferred_username"], "alice");
        }
        assert!(v.ready());
        assert_eq!(m.jwks_hits(), 1, "one fetch serves every later token");
    }

    #[tokio::test]
    async fn refuses_access_tokens_without_the_opt_in() {
        let m = mock().await;
        for v in [verifier(&m), workload_verifier(&m, None)] {
            for typ in ["at+jwt", "application/at+jwt"] {
                assert_eq!(
                    code(&v, &access_token(&m, typ, |_| {})).await,
                    "token_type_not_allowed",
                    "{typ}"
                );
            }
        }
        assert_eq!(m.jwks_hits(), 0, "refused before any key fetch");
    }

    #[tokio::test]
    async fn refuses_malformed_and_oversize_tokens() {
        let m = mock().await;
        let v = verifier(&m);
        let good = m.idp.mint(Algorithm::ES256, m.claims());
        let parts: Vec<&str> = good.split('.').collect();
        let cases = [
            String::new(),
            "not.a.jwt".into(),
            "a.b".into(),
            format!("{good}.x.y"),
            format!("{}={}.{}.{}", parts[0], "", parts[1], parts[2]),
            format!("{}.{}.", parts[0], parts[1]),
            format!("{}.!!.{}", parts[0], parts[2]),
            format!("{}.{}.{}", b64(&json!(["ES256"])), parts[1], parts[2]),
            format!("{}.{}.{}", parts[0], b64(&json!("claims")), parts[2]),
        ];
        for t in cases {
            assert_eq!(code(&v, &t).await, "token_malformed", "{t}");
        }

        let big = m.with(|c| c["pad"] = json!("x".repeat(MAX_TOKEN_BYTES)));
        assert!(big.len() > MAX_TOKEN_BYTES);
        assert_eq!(code(&v, &big).await, "token_too_large");
        assert_eq!(
            v.verify(&"a".repeat(MAX_TOKEN_BYTES + 1), NOW)
                .await
                .unwrap_err(),
            TokenError::TooLarge(MAX_TOKEN_BYTES + 1)
        );
        let fits = m.with(|c| c["pad"] = json!("x".repeat(MAX_TOKEN_BYTES / 2)));
        assert_eq!(code(&v, &fits).await, "ok");
    }

    #[tokio::test]
    async fn refuses_unknown_and_look_alike_issuers() {
        let m = mock().await;
        let v = verifier(&m);
        let iss = m.issuer();
        let look_alikes = [
            "https://accounts.example.com".to_owned(),
            format!("{iss}/"),
            format!("{iss}x"),
            format!("{iss}/evil"),
            iss[..iss.len() - 1].to_owned(),
            format!(" {iss}"),
            iss.replace("http://", "HTTP://"),
            iss.replace("http://", "https://"),
            iss.replace("127.0.0.1", "localhost"),
        ];
        for other in look_alikes {
            let t = m.with(|c| c["iss"] = json!(other));
            assert_eq!(code(&v, &t).await, "token_issuer_unknown", "{other}");
        }
        assert_eq!(
            code(&v, &m.with(|c| c["iss"] = json!([iss]))).await,
            "token_claim_type"
        );
        let no_iss = m.with(|c| {
            c.as_object_mut().unwrap().remove("iss");
        });
        assert_eq!(code(&v, &no_iss).await, "token_claim_missing");
        assert_eq!(
            m.jwks_hits(),
            0,
            "keys of an issuer are only fetched for that issuer"
        );
    }

    #[test]
    fn verifier_and_its_futures_are_send() {
        fn send_sync<T: Send + Sync + Clone>(_: &T) {}
        fn send<T: Send>(_: T) {}
        let cfg = IssuerConfig::new(
            "https://a.example.com",
            vec![AUD.into()],
            IdentityKind::Human,
        );
        let v = TokenVerifier::new(vec![cfg], opts()).unwrap();
        send_sync(&v);
        send(v.verify("t", NOW));
        send(v.refresh_all());
    }
}
