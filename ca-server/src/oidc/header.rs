//! The token's shape, read before anything in it is trusted: three base64url
//! parts; a JOSE header with an allowed algorithm, no embedded or remote
//! keys, no critical extension, an explicit type and a `kid`; and the
//! claims, not yet verified.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::error::{TokenError, printable};

/// What the JOSE header's `typ` says the token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TokenType {
    /// No `typ`, `JWT` or `application/jwt`: an ID token.
    Id,
    /// `at+jwt` or `application/at+jwt` (RFC 9068), as written (lowercased).
    Access(&'static str),
}

pub(super) struct Unverified<'a> {
    pub(super) alg: Algorithm,
    pub(super) typ: TokenType,
    pub(super) kid: String,
    pub(super) signing_input: &'a str,
    pub(super) signature: &'a str,
    pub(super) claims: Map<String, Value>,
}

/// Header fields that carry or point at keys. Honouring any of them lets the
/// token choose its own verification key, so their mere presence is refused.
const REFUSED_HEADER_FIELDS: [&str; 4] = ["jwk", "jku", "x5u", "x5c"];

pub(super) fn parse_unverified(token: &str) -> Result<Unverified<'_>, TokenError> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("expected three dot-separated parts"));
    };
    let header = decode_json_object(header_b64, "the header is not base64url JSON")?;

    let alg = match header.get("alg") {
        Some(Value::String(alg)) => accepted_algorithm(alg)
            .ok_or_else(|| TokenError::AlgorithmNotAllowed(printable(alg)))?,
        Some(_) => return Err(TokenError::Malformed("the header alg is not a string")),
        None => return Err(TokenError::Malformed("the header has no alg")),
    };
    if let Some(field) = REFUSED_HEADER_FIELDS
        .iter()
        .find(|f| header.contains_key(**f))
    {
        return Err(TokenError::HeaderKeyRefused(field));
    }
    // We understand no JWS extension, so any critical one must be refused (RFC 7515 §4.1.11).
    if header.contains_key("crit") {
        return Err(TokenError::Malformed(
            "the header lists critical extensions",
        ));
    }
    // Explicit typing (RFC 8725 §3.11): OAuth access tokens (RFC 9068) must
    // not pass as ID tokens, nor ID tokens as access tokens; other kinds never.
    let typ = match header.get("typ") {
        None => TokenType::Id,
        Some(Value::String(t)) => match t.to_ascii_lowercase().as_str() {
            "jwt" | "application/jwt" => TokenType::Id,
            "at+jwt" => TokenType::Access("at+jwt"),
            "application/at+jwt" => TokenType::Access("application/at+jwt"),
            other => return Err(TokenError::TypeNotAllowed(printable(other))),
        },
        Some(_) => return Err(TokenError::Malformed("the header typ is not a string")),
    };
    let kid = match header.get("kid") {
        Some(Value::String(k)) if !k.is_empty() => k.clone(),
        Some(Value::String(_)) | None => {
            return Err(TokenError::Malformed("the header has no kid"));
        }
        Some(_) => return Err(TokenError::Malformed("the header kid is not a string")),
    };
    if signature.is_empty() {
        return Err(TokenError::Malformed("the signature is empty"));
    }
    let claims = decode_json_object(payload, "the payload is not base64url JSON")?;
    Ok(Unverified {
        alg,
        typ,
        kid,
        signing_input: &token[..header_b64.len() + 1 + payload.len()],
        signature,
        claims,
    })
}

/// The JWS algorithms we verify: the asymmetric ones IdPs sign ID tokens
/// with. Never `none` nor an HMAC (a public key would become a shared secret).
pub const ACCEPTED_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// One of [`ACCEPTED_ALGORITHMS`] by its exact registered name.
pub(super) fn accepted_algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

fn decode_json_object(part: &str, what: &'static str) -> Result<Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed(what))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(TokenError::Malformed(what)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    use super::*;
    use crate::mint::MintExt as _;
    use crate::oidc::tests::{RSA_PEM, alg_str, b64, code, hmac_token, mock, verifier};

    #[test]
    fn accepted_algorithms_are_named_by_their_registered_names() {
        for alg in ACCEPTED_ALGORITHMS {
            let name = serde_json::to_value(alg).unwrap();
            assert_eq!(accepted_algorithm(name.as_str().unwrap()), Some(alg));
        }
    }

    #[tokio::test]
    async fn refuses_alg_none_and_other_algorithms() {
        let m = mock().await;
        let v = verifier(&m);
        let kid = m.idp.kid(Algorithm::ES256).unwrap();
        for alg in [
            "none", "None", "NONE", "", "HS256", "HS384", "HS512", "rs256", "RS256 ", "ES512",
            "ES256K", "PS256K", "EdDSA2", "Ed25519",
        ] {
            let header = json!({"alg": alg, "kid": kid});
            let unsigned = format!("{}.{}.", b64(&header), b64(&m.claims()));
            assert_eq!(
                code(&v, &unsigned).await,
                "token_algorithm_not_allowed",
                "{alg} unsigned"
            );
            let signed = m.idp.mint_raw(header, m.claims(), Algorithm::ES256);
            assert_eq!(
                code(&v, &signed).await,
                "token_algorithm_not_allowed",
                "{alg} signed"
            );
        }
        let no_alg = m
            .idp
            .mint_raw(json!({"kid": kid}), m.claims(), Algorithm::ES256);
        assert_eq!(code(&v, &no_alg).await, "token_malformed");
        assert_eq!(m.jwks_hits(), 0, "refused before any key lookup");
    }

    #[tokio::test]
    async fn refuses_hmac_signed_with_the_public_key() {
        // Algorithm confusion: an HS256 token whose secret is the IdP's public
        // RSA key, as a verifier that picks the algorithm from the header would accept.
        let m = mock().await;
        let v = verifier(&m);
        let jwks = m.idp.jwks();
        let rsa_jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kty"] == "RSA")
            .unwrap()
            .clone();
        let n = URL_SAFE_NO_PAD
            .decode(rsa_jwk["n"].as_str().unwrap())
            .unwrap();
        let kid = rsa_jwk["kid"].as_str().unwrap();
        let jwk_text = rsa_jwk.to_string();
        let secrets: [&[u8]; 3] = [&n, jwk_text.as_bytes(), RSA_PEM.as_bytes()];
        for secret in secrets {
            for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
                let t = hmac_token(
                    &json!({"alg": alg_str(alg), "kid": kid}),
                    &m.claims(),
                    secret,
                    alg,
                );
                assert_eq!(code(&v, &t).await, "token_algorithm_not_allowed");
            }
        }
    }

    #[tokio::test]
    async fn refuses_header_keys_and_key_urls() {
        let m = mock().await;
        let v = verifier(&m);
        let jwk = m.idp.jwks()["keys"][0].clone();
        for (field, value) in [
            ("jwk", jwk),
            ("jku", json!(format!("{}/jwks", m.issuer()))),
            ("x5u", json!("http://127.0.0.1:1/cert.pem")),
            ("x5c", json!(["MIIBAAAA"])),
        ] {
            let mut header = m.header(Algorithm::ES256);
            header[field] = value;
            let t = m.idp.mint_raw(header, m.claims(), Algorithm::ES256);
            assert_eq!(code(&v, &t).await, "token_header_key_refused", "{field}");
        }
        assert_eq!(
            m.jwks_hits(),
            0,
            "nothing fetched, not even the configured JWKS"
        );
    }

    #[tokio::test]
    async fn refuses_bad_headers() {
        let m = mock().await;
        let v = verifier(&m);
        let mut cases = Vec::new();
        let mut h = m.header(Algorithm::ES256);
        h.as_object_mut().unwrap().remove("kid");
        cases.push((h, "token_malformed"));
        let mut h = m.header(Algorithm::ES256);
        h["kid"] = json!("");
        cases.push((h, "token_malformed"));
        let mut h = m.header(Algorithm::ES256);
        h["kid"] = json!(42);
        cases.push((h, "token_malformed"));
        let mut h = m.header(Algorithm::ES256);
        h["crit"] = json!(["b64"]);
        h["b64"] = json!(false);
        cases.push((h, "token_malformed"));
        let mut h = m.header(Algorithm::ES256);
        h["typ"] = json!("at+jwt");
        cases.push((h, "token_type_not_allowed"));
        let mut h = m.header(Algorithm::ES256);
        h["typ"] = json!("application/at+jwt");
        cases.push((h, "token_type_not_allowed"));
        for (header, want) in cases {
            let t = m.idp.mint_raw(header.clone(), m.claims(), Algorithm::ES256);
            assert_eq!(code(&v, &t).await, want, "{header}");
        }
        let mut h = m.header(Algorithm::ES256);
        h.as_object_mut().unwrap().remove("typ");
        assert_eq!(
            code(&v, &m.idp.mint_raw(h, m.claims(), Algorithm::ES256)).await,
            "ok",
            "typ is optional"
        );
    }
}
