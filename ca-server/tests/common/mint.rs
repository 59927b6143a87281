//! Panicking forms of the dev IdP's key loading and minting, for tests only:
//! a test whose fixture key does not load or whose token cannot be signed is
//! broken, and should stop there. The provider itself returns errors
//! ([`DevIdp::add_rsa_pem`], [`DevIdp::try_mint`], [`DevIdp::try_mint_raw`]).
//!
//! Depends only on ca-server, jsonwebtoken and serde_json: the ca-server unit
//! tests, its benchmarks and the end-to-end crate include this file by path,
//! so the conveniences are written once.

use std::sync::Arc;

use ca_server::dev::idp::{DevIdp, DevUser};
use jsonwebtoken::Algorithm;
use serde_json::Value;

/// Test conveniences on [`DevIdp`]; each panics with the provider's error.
pub trait MintExt {
    /// The provider the conveniences call (the only method to implement).
    fn provider(&self) -> &DevIdp;

    /// Builder form of [`DevIdp::add_rsa_pem`], for a fixture key.
    fn with_rsa_pem(self: Arc<Self>, pem: &str) -> Arc<Self> {
        if let Err(e) = self.provider().add_rsa_pem(pem) {
            panic!("{e}");
        }
        self
    }

    /// [`DevIdp::try_mint`].
    fn mint(&self, alg: Algorithm, claims: Value) -> String {
        self.provider()
            .try_mint(alg, claims)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`DevIdp::try_mint_raw`]: `header` used as is, for hostile tokens.
    fn mint_raw(&self, header: Value, claims: Value, sign_with: Algorithm) -> String {
        self.provider()
            .try_mint_raw(header, claims, sign_with)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// An ES256 ID token for `user` (see [`DevIdp::id_token_claims`]).
    fn id_token_for(
        &self,
        user: &DevUser,
        audience: &str,
        nonce: Option<&str>,
        ttl_secs: u64,
    ) -> String {
        let claims = self
            .provider()
            .id_token_claims(user, audience, nonce, ttl_secs);
        self.mint(Algorithm::ES256, claims)
    }
}

impl MintExt for DevIdp {
    fn provider(&self) -> &DevIdp {
        self
    }
}
