//! OIDC ID token verification: hostile-input checks, per-issuer JWKS caching, claim rules.
//! Workload issuers may also opt in to RFC 9068 JWT access tokens (see
//! [`IssuerConfig::access_token_audience`]).
//!
//! A token is checked in this order, cheapest and least trusting first:
//! size → JOSE header (parsed here, not by jsonwebtoken: algorithm allow-list,
//! no embedded or remote keys, `kid` required) → unverified `iss`, compared by
//! exact string equality with the configured issuers → key lookup in *that*
//! issuer's JWKS only → signature → claims (`exp`, `iat`, `nbf`, `sub`, `aud`,
//! `azp`; for access tokens `aud` = the configured resource and `client_id`).
//! Only then is a [`VerifiedIdentity`](ca_core::VerifiedIdentity) built.
//!
//! Keys come from `{issuer}/.well-known/openid-configuration` → `jwks_uri` and
//! are cached per issuer. An unknown `kid` triggers at most one fetch per
//! `refresh_min_interval` (single flight: concurrent requests wait for the one
//! fetch instead of stampeding the IdP). A failed fetch keeps the previous
//! keys until they are `jwks_max_age` old; after that, or with no keys at all,
//! verification answers [`TokenError::IdpUnavailable`] (and fetches are retried
//! every 2 s rather than every `refresh_min_interval`). Keys older than 15
//! minutes are refreshed in the background, so a key the IdP withdrew stops
//! being accepted soon even if no unknown `kid` ever shows up.
//!
//! The claim checks use the `now_unix` the caller passes, never the clock
//! (jsonwebtoken's `decode` reads the system clock itself, so it is not used).
//! Signatures are checked against keys decoded once per fetch: RS256/384/512,
//! PS256/384/512, ES256 and ES384 with ring, EdDSA with ed25519-dalek. (jsonwebtoken's pure-Rust RSA and
//! P-256 backends cost ~300 µs per token on the reference machine, more than
//! the rest of an issuance; see docs/performance.md.)

mod claims;
mod error;
mod fetch;
mod hash;
mod header;
mod jwk;
mod jwks;
mod options;
#[cfg(test)]
mod tests;
mod verifier;

pub use error::{OidcConfigError, TokenError};
pub(crate) use fetch::{client as idp_client, get_json, post_form_json};
pub use hash::{legacy_token_hash, token_hash};
pub use header::ACCEPTED_ALGORITHMS;
pub use options::{DEFAULT_GROUPS_CLAIM, IssuerConfig, MAX_LEEWAY_SECS, VerifierOptions};
pub use verifier::{MAX_TOKEN_BYTES, TokenVerifier, Verified};
