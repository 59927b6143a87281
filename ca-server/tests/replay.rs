//! One token, one certificate, whatever its spelling: for every signature
//! algorithm the CA accepts, a spent ID token comes back re-spelled (the
//! same string, ECDSA's (r, n − s), a fresh PSS signature over the same
//! content, non-canonical base64 and signature encodings). Each spelling a
//! fresh CA would accept is `401 token_replayed` at the CA that spent the
//! token, at a replica that learns of it only from the database, and after
//! a restart; the others are refused as tokens. On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ca_server::dev::idp::DevUser;
use ca_server::policy::PolicyEngine;
use http_body_util::BodyExt as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tower::ServiceExt as _;

mod common;
use common::{AUD, Harness, MintExt as _, now};

const RSA_PEM: &str = include_str!("fixtures/rsa2048.pem");

const ALGORITHMS: [Algorithm; 9] = ca_server::oidc::ACCEPTED_ALGORITHMS;

fn alice() -> DevUser {
    DevUser {
        username: "alice".into(),
        email: "alice@example.com".into(),
        groups: vec!["developers".into()],
    }
}

fn policy() -> PolicyEngine {
    PolicyEngine::load_embedded_default().unwrap()
}

/// A CA trusting a provider that signs with every accepted algorithm (the
/// RSA ones with the fixture key, each under its own `kid`).
async fn harness() -> Harness {
    // Every spelling comes from one identity: the per-identity limit must
    // not answer before the replay check does.
    let h = common::build(policy(), vec![alice()], |c| {
        c.rate_per_minute = 10_000;
        c.rate_burst = 10_000;
    })
    .await;
    for alg in &ALGORITHMS[1..6] {
        h.idp.add_rsa_pem_for(*alg, RSA_PEM).unwrap();
    }
    h
}

fn mint(h: &Harness, alg: Algorithm) -> String {
    h.idp.mint(
        alg,
        json!({
            "iss": h.idp.issuer(), "sub": "alice", "aud": AUD,
            "iat": now(), "exp": now() + 300,
            "email": "alice@example.com", "email_verified": true,
            "preferred_username": "alice", "groups": ["developers"],
            "jti": format!("{:x}", rand_core::RngCore::next_u64(&mut rand_core::OsRng)),
        }),
    )
}

async fn cert(router: &Router, token: &str) -> (StatusCode, Value) {
    let key =
        ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
    let body = json!({"public_key": key.public_key().to_openssh().unwrap()});
    let req = Request::builder()
        .method("POST")
        .uri("/v1/certs/user")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// `signed` with the raw signature `sig`.
fn with_signature(signed: &str, sig: &[u8]) -> String {
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// ECDSA's other valid signature over the same content: (r, n − s).
fn negate_s(alg: Algorithm, sig: &[u8]) -> Vec<u8> {
    let (r, s) = sig.split_at(sig.len() / 2);
    let neg: Vec<u8> = match alg {
        Algorithm::ES256 => {
            use p256::elliptic_curve::PrimeField as _;
            let s = p256::Scalar::from_repr(*p256::FieldBytes::from_slice(s)).unwrap();
            (-s).to_repr().to_vec()
        }
        Algorithm::ES384 => {
            use p384::elliptic_curve::PrimeField as _;
            let s = p384::Scalar::from_repr(*p384::FieldBytes::from_slice(s)).unwrap();
            (-s).to_repr().to_vec()
        }
        _ => unreachable!("not ECDSA"),
    };
    [r, &neg].concat()
}

/// Ed25519 with S + ℓ: the same S modulo the group order, non-canonical.
fn ed25519_s_plus_order(sig: &[u8]) -> Vec<u8> {
    // ℓ = 2^252 + 27742317777372353535851937790883648493, little-endian.
    const ORDER: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut out = sig.to_vec();
    let mut carry = 0u16;
    for (i, l) in ORDER.iter().enumerate() {
        let v = u16::from(out[32 + i]) + u16::from(*l) + carry;
        out[32 + i] = v as u8;
        carry = v >> 8;
    }
    out
}

/// Every other spelling of `token` we can build, with what it is.
fn respellings(alg: Algorithm, token: &str) -> Vec<(&'static str, String)> {
    let (signed, sig_b64) = token.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig_b64).unwrap();
    let mut out = vec![("the same string", token.to_owned())];
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => {
            out.push(("(r, n - s)", with_signature(signed, &negate_s(alg, &sig))));
        }
        Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512 => {
            // PSS is randomised: the issuer's key signs the same content anew.
            let key = EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap();
            let again = jsonwebtoken::crypto::sign(signed.as_bytes(), &key, alg).unwrap();
            assert_ne!(again, sig_b64, "PSS signatures differ");
            out.push(("a second PSS signature", format!("{signed}.{again}")));
        }
        Algorithm::EdDSA => {
            out.push((
                "S + order",
                with_signature(signed, &ed25519_s_plus_order(&sig)),
            ));
        }
        _ => {}
    }
    // Encodings of the same signature bytes.
    out.push(("padded base64", format!("{signed}.{sig_b64}==")));
    out.push((
        "standard base64 alphabet",
        format!(
            "{signed}.{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(&sig)
        ),
    ));
    if (sig.len() * 8) % 6 != 0 {
        // The last character carries unused bits: set one of them.
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut chars = sig_b64.as_bytes().to_vec();
        let last = chars.last_mut().unwrap();
        let index = alphabet.iter().position(|c| c == last).unwrap();
        *last = alphabet[index ^ 1];
        out.push((
            "non-zero trailing bits",
            format!("{signed}.{}", String::from_utf8(chars).unwrap()),
        ));
    }
    // A signature without `-` or `_` is the same string in both alphabets:
    // not another spelling.
    out.retain(|(what, t)| *what == "the same string" || t != token);
    out
}

async fn every_spelling_of_a_spent_token_is_replayed() {
    let h = harness().await;
    // A replica built before the tokens are spent knows of them only
    // through the database; a CA on another database decides what is a
    // valid token at all.
    let replica = h.another_ca(policy());
    let mut fresh_config = h.config.clone();
    fresh_config.database = match &h.config.database {
        ca_server::config::Database::Sqlite(_) => {
            ca_server::config::Database::Sqlite(h.dir.path().join("fresh.db"))
        }
        ca_server::config::Database::Postgres { password_file, .. } => {
            ca_server::config::Database::Postgres {
                url: common::pg::cluster().fresh_database(),
                password_file: password_file.clone(),
            }
        }
    };
    let fresh = {
        let authority =
            ca_server::serve::build_authority(&fresh_config, std::sync::Arc::new(policy()))
                .unwrap();
        ca_server::http::app(ca_server::serve::app_state(&fresh_config, authority, None).unwrap())
    };

    let mut spent = Vec::new();
    for alg in ALGORITHMS {
        let token = mint(&h, alg);
        let (status, body) = cert(&h.router, &token).await;
        assert_eq!(status, StatusCode::OK, "{alg:?}: {body}");
        for (what, spelling) in respellings(alg, &token) {
            // The fresh CA never saw the original: a spelling it answers
            // with a certificate, or as already spent (by an earlier
            // spelling of the same content), is one that verifies.
            let valid = what == "the same string" || {
                let (status, body) = cert(&fresh, &spelling).await;
                status == StatusCode::OK || body["error"]["code"] == "token_replayed"
            };
            spent.push((alg, what, spelling, valid));
        }
    }
    // The spellings that verify: the same string, ECDSA's other s, a second
    // PSS signature. (RSASSA-PKCS1-v1_5 and Ed25519 sign deterministically,
    // and a non-canonical encoding does not verify.)
    let valid: Vec<_> = spent
        .iter()
        .filter(|s| s.3 && s.1 != "the same string")
        .map(|s| (s.0, s.1))
        .collect();
    assert_eq!(
        valid,
        vec![
            (Algorithm::PS256, "a second PSS signature"),
            (Algorithm::PS384, "a second PSS signature"),
            (Algorithm::PS512, "a second PSS signature"),
            (Algorithm::ES256, "(r, n - s)"),
            (Algorithm::ES384, "(r, n - s)"),
        ],
        "the respellings a CA accepts as tokens"
    );

    let restarted = h.another_ca(policy());
    for (name, ca) in [
        ("the CA", &h.router),
        ("a replica", &replica),
        ("after a restart", &restarted),
    ] {
        for (alg, what, spelling, valid) in &spent {
            let (status, body) = cert(ca, spelling).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{name}, {alg:?}, {what}: {body}"
            );
            if *valid {
                assert_eq!(
                    body["error"]["code"], "token_replayed",
                    "{name}, {alg:?}, {what}: {body}"
                );
            }
        }
    }
    let issued = h
        .state
        .authority
        .audit
        .list(&Default::default())
        .unwrap()
        .into_iter()
        .filter(|r| r.event.outcome == "issued")
        .count();
    assert_eq!(issued, ALGORITHMS.len(), "one certificate per token");
}

on_both_backends!(every_spelling_of_a_spent_token_is_replayed);
