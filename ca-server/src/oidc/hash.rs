//! The name of a token in replay checks and audit rows: a digest of what
//! the issuer signed, never the bearer credential itself.

use sha2::{Digest, Sha256};

/// Hex SHA-256 of what the issuer signed (`header.payload`, the JWS signing
/// input): names a token in audit rows and replay checks without storing a
/// bearer credential.
///
/// The signature is left out on purpose. One signed content has many valid
/// signatures: ECDSA's (r, s) and (r, n − s) both verify, PSS and most
/// ECDSA signers are randomised, so the same claims can come back under
/// another signature. A key over the whole string would let each spelling
/// buy its own certificate; the signing input cannot be re-spelled without
/// the issuer's key, because it is exactly the bytes the signature covers.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(signing_input(token).as_bytes()))
}

/// The part of a compact JWS before its last dot: the signed bytes (the
/// whole string when there is no dot, for audit rows of malformed tokens).
fn signing_input(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(signed, _)| signed)
}

/// Hex SHA-256 of the whole token string, as versions before the content
/// key named spent tokens: `used_tokens` rows written by them stay spent
/// until they expire (see `issue::ReplayGuard`).
pub fn legacy_token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn token_hash_is_hex_sha256_of_the_signed_part() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(token_hash("abc.signature"), token_hash("abc"));
        assert_eq!(token_hash("a.b.c"), hex::encode(Sha256::digest(b"a.b")));
        assert_eq!(
            legacy_token_hash("abc.signature"),
            hex::encode(Sha256::digest(b"abc.signature"))
        );
    }
}
