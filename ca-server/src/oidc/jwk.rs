//! One published signing key: checked when it is fetched (type, curve,
//! sizes, `use`, `key_ops`, `alg`) and decoded once into what verifies
//! signatures: RSA (PKCS#1 v1.5, PSS), ECDSA P-256/P-384 with ring, Ed25519
//! with ed25519-dalek.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::Value;

use super::header::accepted_algorithm;

/// RSA moduli outside 2048..=4096 bits are refused.
const RSA_MIN_MODULUS_BITS: usize = 2048;
const RSA_MAX_MODULUS_BITS: usize = 4096;
/// Largest RSA public exponent ring accepts (2^33 - 1).
const RSA_MAX_EXPONENT: u64 = (1 << 33) - 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    pub(super) fn fits(self, alg: Algorithm) -> bool {
        matches!(
            (self, alg),
            (
                KeyKind::Rsa,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) | (KeyKind::P256, Algorithm::ES256)
                | (KeyKind::P384, Algorithm::ES384)
                | (KeyKind::Ed25519, Algorithm::EdDSA)
        )
    }
}

/// A published key, decoded once per fetch into what its signature check
/// takes. Cheap to clone.
#[derive(Clone)]
pub(super) enum VerifyKey {
    /// Modulus and exponent, big-endian without leading zeros.
    Rsa(Arc<ring::signature::RsaPublicKeyComponents<Vec<u8>>>),
    /// Uncompressed SEC1 point, checked to be on the curve.
    P256(Arc<ring::signature::UnparsedPublicKey<Vec<u8>>>),
    /// Uncompressed SEC1 point, checked to be on the curve.
    P384(Arc<ring::signature::UnparsedPublicKey<Vec<u8>>>),
    Ed25519(Arc<ed25519_dalek::VerifyingKey>),
}

impl VerifyKey {
    /// True if `signature` (base64url, as in the JWS) signs `message` with
    /// `alg` (already matched to the key's type by [`KeyKind::fits`]):
    /// RSASSA-PKCS1-v1_5 or RSASSA-PSS with the named SHA-2, ECDSA over the
    /// fixed-length `r || s` form, or Ed25519.
    pub(super) fn verify(&self, alg: Algorithm, message: &[u8], signature: &str) -> bool {
        use ring::signature as rs;
        let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        match self {
            VerifyKey::Rsa(key) => {
                let params: &rs::RsaParameters = match alg {
                    Algorithm::RS256 => &rs::RSA_PKCS1_2048_8192_SHA256,
                    Algorithm::RS384 => &rs::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::RS512 => &rs::RSA_PKCS1_2048_8192_SHA512,
                    Algorithm::PS256 => &rs::RSA_PSS_2048_8192_SHA256,
                    Algorithm::PS384 => &rs::RSA_PSS_2048_8192_SHA384,
                    Algorithm::PS512 => &rs::RSA_PSS_2048_8192_SHA512,
                    _ => return false,
                };
                key.verify(params, message, &signature).is_ok()
            }
            VerifyKey::P256(key) | VerifyKey::P384(key) => key.verify(message, &signature).is_ok(),
            VerifyKey::Ed25519(key) => ed25519_dalek::Signature::from_slice(&signature)
                .is_ok_and(|s| ed25519_dalek::Verifier::verify(key.as_ref(), message, &s).is_ok()),
        }
    }
}

pub(super) struct CachedKey {
    pub(super) kid: String,
    /// The JWK's `alg`, when it declares one.
    pub(super) alg: Option<Algorithm>,
    pub(super) kind: KeyKind,
    pub(super) key: VerifyKey,
}

/// Validates one published key; anything odd is skipped rather than
/// trusted. Lengths and ranges are checked here, so a key that would fail
/// every signature check is refused at fetch time with a reason.
pub(super) fn parse_jwk(v: &Value) -> Result<CachedKey, &'static str> {
    let obj = v.as_object().ok_or("not an object")?;
    let str_field = |name: &str| obj.get(name).and_then(Value::as_str);
    let kid = str_field("kid").filter(|k| !k.is_empty()).ok_or("no kid")?;
    if obj.get("use").is_some_and(|u| u != "sig") {
        return Err("not a signing key (use)");
    }
    if let Some(ops) = obj.get("key_ops") {
        let ops = ops.as_array().ok_or("key_ops is not an array")?;
        if !ops.iter().any(|o| o == "verify") {
            return Err("not a verification key (key_ops)");
        }
    }
    let alg = match obj.get("alg") {
        None => None,
        Some(Value::String(a)) => Some(accepted_algorithm(a).ok_or("algorithm not accepted")?),
        Some(_) => return Err("alg is not a string"),
    };
    let b64 = |name: &str| -> Result<Vec<u8>, &'static str> {
        let s = str_field(name).ok_or("missing key parameter")?;
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| "key parameter is not base64url")
    };
    // Big-endian integers may carry leading zero bytes in the wild; ring wants none.
    let minimal = |mut v: Vec<u8>| {
        let zeros = v.iter().take_while(|b| **b == 0).count();
        v.drain(..zeros);
        v
    };
    let (kind, key) = match str_field("kty") {
        Some("RSA") => {
            let n = minimal(b64("n")?);
            let e = minimal(b64("e")?);
            let n_bits = n
                .first()
                .map_or(0, |top| n.len() * 8 - top.leading_zeros() as usize);
            if !(RSA_MIN_MODULUS_BITS..=RSA_MAX_MODULUS_BITS).contains(&n_bits) {
                return Err("RSA modulus not between 2048 and 4096 bits");
            }
            if n.last().is_none_or(|b| b & 1 == 0) {
                return Err("RSA modulus is even");
            }
            let e_value = if e.len() <= 8 {
                e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
            } else {
                u64::MAX
            };
            if e_value < 3 || e_value & 1 == 0 || e_value > RSA_MAX_EXPONENT {
                return Err("RSA exponent out of range");
            }
            let key = ring::signature::RsaPublicKeyComponents { n, e };
            (KeyKind::Rsa, VerifyKey::Rsa(Arc::new(key)))
        }
        Some("EC") => {
            let (kind, len) = match str_field("crv") {
                Some("P-256") => (KeyKind::P256, 32),
                Some("P-384") => (KeyKind::P384, 48),
                _ => return Err("EC curve is not P-256 or P-384"),
            };
            let (x, y) = (b64("x")?, b64("y")?);
            if x.len() != len || y.len() != len {
                return Err("EC coordinates are not the curve's length");
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            if kind == KeyKind::P256 {
                p256::PublicKey::from_sec1_bytes(&point).map_err(|_| "not a P-256 point")?;
                let key = ring::signature::UnparsedPublicKey::new(
                    &ring::signature::ECDSA_P256_SHA256_FIXED,
                    point,
                );
                (kind, VerifyKey::P256(Arc::new(key)))
            } else {
                p384::PublicKey::from_sec1_bytes(&point).map_err(|_| "not a P-384 point")?;
                let key = ring::signature::UnparsedPublicKey::new(
                    &ring::signature::ECDSA_P384_SHA384_FIXED,
                    point,
                );
                (kind, VerifyKey::P384(Arc::new(key)))
            }
        }
        Some("OKP") => {
            if str_field("crv") != Some("Ed25519") {
                return Err("OKP curve is not Ed25519");
            }
            let x: [u8; 32] = b64("x")?
                .try_into()
                .map_err(|_| "Ed25519 key is not 32 bytes")?;
            let key =
                ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(|_| "not an Ed25519 point")?;
            (KeyKind::Ed25519, VerifyKey::Ed25519(Arc::new(key)))
        }
        _ => return Err("key type not accepted"),
    };
    if alg.is_some_and(|a| !kind.fits(a)) {
        return Err("alg does not fit the key type");
    }
    Ok(CachedKey {
        kid: kid.to_owned(),
        alg,
        kind,
        key,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    use super::*;
    use crate::dev::idp::DevIdp;
    use crate::mint::MintExt as _;
    use crate::oidc::tests::{ALGORITHMS, AUD, RSA_PEM, alg_str, b64, code, mock, verifier};

    #[tokio::test]
    async fn refuses_bad_signatures_and_mismatched_keys() {
        let m = mock().await;
        let v = verifier(&m);
        let good = m.idp.mint(Algorithm::ES256, m.claims());
        let (input, _) = good.rsplit_once('.').unwrap();
        // Claims swapped under a valid signature.
        let mut forged: Vec<String> = good.split('.').map(str::to_owned).collect();
        forged[1] = b64(&m.with_claims_sub("root"));
        assert_eq!(code(&v, &forged.join(".")).await, "token_signature_invalid");
        // Another token's signature.
        let other = m.idp.mint(Algorithm::ES256, m.with_claims_sub("bob"));
        let other_sig = other.rsplit_once('.').unwrap().1;
        assert_eq!(
            code(&v, &format!("{input}.{other_sig}")).await,
            "token_signature_invalid"
        );
        assert_eq!(
            code(&v, &format!("{input}.AAAA")).await,
            "token_signature_invalid"
        );
        assert_eq!(
            code(&v, &format!("{input}.!!")).await,
            "token_signature_invalid"
        );
        // Same kid, key of another IdP: the published key decides.
        let impostor = DevIdp::new(m.issuer(), AUD.into(), vec![]);
        let t = impostor.mint_raw(m.header(Algorithm::ES256), m.claims(), Algorithm::ES256);
        assert_eq!(code(&v, &t).await, "token_signature_invalid");
        // Header algorithm that does not fit the key named by kid.
        for (header_alg, kid_of, sign_with) in [
            (Algorithm::EdDSA, Algorithm::ES256, Algorithm::EdDSA),
            (Algorithm::ES256, Algorithm::RS256, Algorithm::ES256),
            (Algorithm::RS256, Algorithm::EdDSA, Algorithm::RS256),
        ] {
            let header = json!({"alg": alg_str(header_alg), "kid": m.idp.kid(kid_of).unwrap()});
            let t = m.idp.mint_raw(header, m.claims(), sign_with);
            assert_eq!(
                code(&v, &t).await,
                "token_key_mismatch",
                "{header_alg:?} with {kid_of:?} key"
            );
        }
    }

    #[test]
    fn parse_jwk_skips_unusable_keys() {
        let idp = DevIdp::new("http://127.0.0.1".into(), AUD.into(), vec![]).with_rsa_pem(RSA_PEM);
        let keys = idp.jwks()["keys"].as_array().unwrap().clone();
        for k in &keys {
            let parsed = parse_jwk(k).unwrap();
            assert!(parsed.alg.is_some_and(|a| parsed.kind.fits(a)));
        }
        let find = |kty: &str| keys.iter().find(|k| k["kty"] == kty).unwrap().clone();
        let patched = |kty: &str, f: &dyn Fn(&mut Value)| {
            let mut k = find(kty);
            f(&mut k);
            k
        };
        let bad = [
            patched("OKP", &|k| k["x"] = json!(URL_SAFE_NO_PAD.encode([1u8; 5]))),
            patched("OKP", &|k| k["crv"] = json!("Ed448")),
            patched("EC", &|k| k["crv"] = json!("P-384")),
            patched("EC", &|k| k["y"] = json!(URL_SAFE_NO_PAD.encode([0u8; 32]))),
            patched("EC", &|k| k["x"] = json!(URL_SAFE_NO_PAD.encode([1u8; 31]))),
            patched("EC", &|k| k["alg"] = json!("EdDSA")),
            patched("EC", &|k| k["alg"] = json!("ES384")),
            patched("EC", &|k| k["use"] = json!("enc")),
            patched("EC", &|k| k["key_ops"] = json!(["encrypt"])),
            patched("EC", &|k| {
                k.as_object_mut().unwrap().remove("kid");
            }),
            patched("RSA", &|k| {
                k["n"] = json!(URL_SAFE_NO_PAD.encode([0xffu8; 128]))
            }),
            patched("RSA", &|k| k["n"] = json!("not base64!")),
            patched("RSA", &|k| k["alg"] = json!("ES256")),
            patched("RSA", &|k| k["alg"] = json!("HS256")),
            json!({"kty": "oct", "kid": "h", "k": URL_SAFE_NO_PAD.encode(b"secret")}),
            json!("a string"),
        ];
        for k in bad {
            assert!(parse_jwk(&k).is_err(), "{k}");
        }
        assert!(parse_jwk(&patched("EC", &|k| k["key_ops"] = json!(["verify"]))).is_ok());
        assert!(parse_jwk(&patched("RSA", &|k| k["alg"] = json!("PS512"))).is_ok());
        assert!(
            parse_jwk(&patched("RSA", &|k| {
                k.as_object_mut().unwrap().remove("alg");
            }))
            .is_ok()
        );
    }

    #[tokio::test]
    async fn every_algorithm_checks_its_signature() {
        let m = mock().await;
        let v = verifier(&m);
        for alg in ALGORITHMS {
            let good = m.idp.mint(alg, m.claims());
            assert_eq!(code(&v, &good).await, "ok", "{alg:?}");
            let (input, sig) = good.rsplit_once('.').unwrap();
            let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
            let mut bad = Vec::new();
            // Claims swapped under a valid signature.
            let forged = m.idp.mint(alg, m.with_claims_sub("root"));
            bad.push(format!("{}.{sig}", forged.rsplit_once('.').unwrap().0));
            // One bit off, at either end of the signature.
            for i in [0, raw.len() - 1] {
                raw[i] ^= 1;
                bad.push(format!("{input}.{}", URL_SAFE_NO_PAD.encode(&raw)));
                raw[i] ^= 1;
            }
            // Truncated, extended, padded base64.
            bad.push(format!(
                "{input}.{}",
                URL_SAFE_NO_PAD.encode(&raw[..raw.len() - 1])
            ));
            let mut longer = raw.clone();
            longer.push(0);
            bad.push(format!("{input}.{}", URL_SAFE_NO_PAD.encode(&longer)));
            bad.push(format!("{input}.{sig}=="));
            for t in bad {
                assert_eq!(
                    code(&v, &t).await,
                    "token_signature_invalid",
                    "{alg:?}: {t}"
                );
            }
            // The same kid, signed by another key of the same type (the dev
            // IdP makes fresh EC and Ed25519 keys; it has one RSA fixture).
            if matches!(alg, Algorithm::ES256 | Algorithm::ES384 | Algorithm::EdDSA) {
                let impostor = DevIdp::new(m.issuer(), AUD.into(), vec![]);
                let t = impostor.mint_raw(m.header(alg), m.claims(), alg);
                assert_eq!(code(&v, &t).await, "token_signature_invalid", "{alg:?}");
            }
        }
    }

    #[tokio::test]
    async fn rsa_keys_are_checked_when_fetched() {
        let m = mock().await;
        let jwks = m.idp.jwks();
        let rsa = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kty"] == "RSA")
            .unwrap()
            .clone();
        let n = URL_SAFE_NO_PAD.decode(rsa["n"].as_str().unwrap()).unwrap();
        let with = |field: &str, bytes: &[u8]| {
            let mut k = rsa.clone();
            k[field] = json!(URL_SAFE_NO_PAD.encode(bytes));
            k
        };
        // Leading zero bytes are tolerated (some IdPs publish them) and the
        // key still verifies.
        let padded = with("n", &[&[0u8, 0][..], &n].concat());
        assert!(parse_jwk(&padded).is_ok());
        *m.jwks_override.lock().unwrap() = Some(json!({"keys": [padded]}));
        let v = verifier(&m);
        assert_eq!(
            code(&v, &m.idp.mint(Algorithm::RS256, m.claims())).await,
            "ok"
        );
        let mut short = n.clone();
        short[0] = 0x7f; // 2047 bits in 256 bytes
        let mut even = n.clone();
        *even.last_mut().unwrap() &= 0xfe;
        for (bad, why) in [
            (with("n", &short), "2047-bit modulus"),
            (with("n", &[0x80u8; 513]), "4104-bit modulus"),
            (with("n", &even), "even modulus"),
            (with("e", &[1]), "e = 1"),
            (with("e", &[1, 0, 0]), "even e"),
            (with("e", &[2, 0, 0, 0, 1]), "e above 2^33"),
            (with("e", &[]), "empty e"),
            (with("e", &[1; 9]), "9-byte e"),
        ] {
            assert!(parse_jwk(&bad).is_err(), "{why}");
        }
        assert!(
            parse_jwk(&with("e", &[0, 0, 1, 0, 1])).is_ok(),
            "e = 65537 padded"
        );
    }
}
