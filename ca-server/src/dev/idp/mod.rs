//! Built-in development OpenID provider: lets `jitssh login` work with no real IdP, and mints test tokens.
//!
//! It is a public-client OIDC provider with no UI: `/authorize` logs in the
//! dev user named by `login_hint` (default: the first user) at once,
//! `/device?user_code=..` approves a device login the same way. It still
//! enforces what a real provider would — loopback redirect URIs (RFC 8252),
//! PKCE S256 (RFC 7636), single-use short-lived codes, rotated refresh tokens —
//! so the client code exercised against it is the code used in production.
//!
//! Everything lives in memory and is bounded; restarting forgets every grant
//! and generates new signing keys (random `kid`s). Never expose it beyond
//! loopback: anyone who can reach it can log in as any dev user.
//!
//! `mod.rs` holds the provider (users, signing keys, discovery document,
//! minting); `grants` what it remembers between requests; `routes` its
//! endpoints.

mod grants;
mod routes;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use grants::{DEVICE_GRANT_TYPE, Grants, random_bytes};

/// A person who can log in to the dev IdP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevUser {
    pub username: String,
    pub email: String,
    pub groups: Vec<String>,
}

impl DevUser {
    /// The `sub` claim of this user's tokens.
    pub fn subject(&self) -> String {
        format!("dev|{}", self.username)
    }
}

/// Why the dev IdP could not load a key or sign a token.
#[derive(Debug, thiserror::Error)]
pub enum DevIdpError {
    #[error("the dev IdP has no {0:?} signing key (RS256 needs `add_rsa_pem`)")]
    NoKey(Algorithm),
    #[error("cannot load the RSA key: {0}")]
    RsaKey(String),
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

struct DevKey {
    alg: Algorithm,
    kid: String,
    key: EncodingKey,
    /// Public JWK as published at `/jwks`.
    jwk: Value,
}

/// The development OpenID provider. Build with [`DevIdp::new`], serve with
/// [`DevIdp::router`] at the root of its issuer URL.
pub struct DevIdp {
    issuer: String,
    client_id: String,
    users: Vec<DevUser>,
    keys: RwLock<Vec<DevKey>>,
    grants: Mutex<Grants>,
    /// When set, the token endpoint wants this client authenticated with
    /// `client_secret_basic` (a confidential client, as some providers
    /// require for web sign-ins).
    client_secret: std::sync::OnceLock<String>,
}

impl std::fmt::Debug for DevIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIdp")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("users", &self.users)
            .finish_non_exhaustive()
    }
}

impl DevIdp {
    /// A provider with fresh ES256 (P-256), ES384 (P-384) and EdDSA
    /// (Ed25519) keys; ID tokens are ES256.
    /// `issuer` is the exact `iss` of its tokens and the base of its endpoints.
    pub fn new(issuer: String, client_id: String, users: Vec<DevUser>) -> Arc<Self> {
        let p256 = p256::ecdsa::SigningKey::random(&mut OsRng);
        let point = p256.verifying_key().to_encoded_point(false);
        // Uncompressed SEC1 point: 0x04 || x || y.
        let (x, y) = point.as_bytes()[1..].split_at(32);
        let es256 = DevKey {
            alg: Algorithm::ES256,
            kid: random_kid("es256"),
            key: EncodingKey::from_ec_der(&p256_pkcs8(&p256.to_bytes())),
            jwk: json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}),
        };
        let p384 = p384::SecretKey::random(&mut OsRng);
        let point =
            p384::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&p384.public_key(), false);
        let (x, y) = point.as_bytes()[1..].split_at(48);
        let es384 = DevKey {
            alg: Algorithm::ES384,
            kid: random_kid("es384"),
            // PKCS#8 of a valid scalar always encodes; an empty key would
            // only fail at signing, with an error.
            key: EncodingKey::from_ec_der(
                p384::pkcs8::EncodePrivateKey::to_pkcs8_der(&p384)
                    .map(|d| d.as_bytes().to_vec())
                    .unwrap_or_default()
                    .as_slice(),
            ),
            jwk: json!({"kty": "EC", "crv": "P-384", "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}),
        };
        let ed = ed25519_dalek::SigningKey::generate(&mut OsRng);
        let eddsa = DevKey {
            alg: Algorithm::EdDSA,
            kid: random_kid("eddsa"),
            key: EncodingKey::from_ed_der(&ed25519_pkcs8(&ed.to_bytes())),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(ed.verifying_key().as_bytes())}),
        };
        Arc::new(DevIdp {
            issuer,
            client_id,
            users,
            keys: RwLock::new(vec![
                finish_jwk(es256),
                finish_jwk(es384),
                finish_jwk(eddsa),
            ]),
            grants: Mutex::new(Grants::default()),
            client_secret: std::sync::OnceLock::new(),
        })
    }

    /// Make the client confidential: from now on the token endpoint
    /// refuses a request without HTTP Basic authentication by `secret`.
    /// Set once; a second call changes nothing and returns `false`.
    pub fn require_client_secret(&self, secret: &str) -> bool {
        self.client_secret.set(secret.to_owned()).is_ok()
    }

    pub(super) fn client_secret(&self) -> Option<&str> {
        self.client_secret.get().map(String::as_str)
    }

    /// Adds an RS256 key (PKCS#1 or PKCS#8 PEM) and returns its new random
    /// `kid`. It replaces an earlier RSA key, which is a key rotation as
    /// verifiers see it: the old `kid` disappears from `/jwks`.
    pub fn add_rsa_pem(&self, pem: &str) -> Result<String, DevIdpError> {
        self.add_rsa_pem_for(Algorithm::RS256, pem)
    }

    /// [`DevIdp::add_rsa_pem`] for another RSA algorithm (RS384/512,
    /// PS256/384/512): the key is published with that `alg` under its own
    /// new `kid`, replacing an earlier key for the same algorithm.
    pub fn add_rsa_pem_for(&self, alg: Algorithm, pem: &str) -> Result<String, DevIdpError> {
        let key = EncodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|e| DevIdpError::RsaKey(e.to_string()))?;
        let jwk =
            Jwk::from_encoding_key(&key, alg).map_err(|e| DevIdpError::RsaKey(e.to_string()))?;
        let mut jwk = serde_json::to_value(jwk).map_err(|e| DevIdpError::RsaKey(e.to_string()))?;
        if let Some(obj) = jwk.as_object_mut() {
            // from_encoding_key adds alg; finish_jwk sets it uniformly.
            obj.remove("alg");
        }
        let kid = random_kid(&format!("{alg:?}").to_ascii_lowercase());
        let key = finish_jwk(DevKey {
            alg,
            kid: kid.clone(),
            key,
            jwk,
        });
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        keys.retain(|k| k.alg != alg);
        keys.push(key);
        Ok(kid)
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn users(&self) -> &[DevUser] {
        &self.users
    }

    /// The `kid` of the key used for `alg`, if there is one.
    pub fn kid(&self, alg: Algorithm) -> Option<String> {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        keys.iter().find(|k| k.alg == alg).map(|k| k.kid.clone())
    }

    /// The public key set served at `/jwks`.
    pub fn jwks(&self) -> Value {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
    }

    /// The discovery document served at `/.well-known/openid-configuration`.
    pub fn discovery(&self) -> Value {
        let base = self.issuer.trim_end_matches('/');
        let algs: Vec<Value> = {
            let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
            keys.iter().map(|k| alg_name(k.alg)).collect()
        };
        json!({
            "issuer": self.issuer,
            "authorization_endpoint": format!("{base}/authorize"),
            "token_endpoint": format!("{base}/token"),
            "jwks_uri": format!("{base}/jwks"),
            "device_authorization_endpoint": format!("{base}/device_authorization"),
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token", DEVICE_GRANT_TYPE],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": algs,
            "subject_types_supported": ["public"],
            "scopes_supported": ["openid", "email", "profile", "groups", "offline_access"],
            "token_endpoint_auth_methods_supported": ["none"],
        })
    }

    /// Signs `claims` with the key for `alg` (header: alg, typ JWT, kid).
    pub fn try_mint(&self, alg: Algorithm, claims: Value) -> Result<String, DevIdpError> {
        let kid = self.kid(alg).ok_or(DevIdpError::NoKey(alg))?;
        let header = json!({"alg": alg_name(alg), "typ": "JWT", "kid": kid});
        self.try_mint_raw(header, claims, alg)
    }

    /// Signs `claims` under an arbitrary `header`, used as is (no kid or alg
    /// added), with the key for `sign_with`: for hostile-token tests.
    pub fn try_mint_raw(
        &self,
        header: Value,
        claims: Value,
        sign_with: Algorithm,
    ) -> Result<String, DevIdpError> {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        let key = keys
            .iter()
            .find(|k| k.alg == sign_with)
            .ok_or(DevIdpError::NoKey(sign_with))?;
        let json = |v: &Value| serde_json::to_vec(v).map_err(|e| DevIdpError::Sign(e.to_string()));
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(json(&header)?),
            URL_SAFE_NO_PAD.encode(json(&claims)?)
        );
        let signature = jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key.key, sign_with)
            .map_err(|e| DevIdpError::Sign(e.to_string()))?;
        Ok(format!("{signing_input}.{signature}"))
    }

    /// The standard claims of an ID token for `user`, valid from now for `ttl_secs`.
    pub fn id_token_claims(
        &self,
        user: &DevUser,
        audience: &str,
        nonce: Option<&str>,
        ttl_secs: u64,
    ) -> Value {
        let now = crate::clock::now_unix();
        let mut claims = json!({
            "iss": self.issuer,
            "sub": user.subject(),
            "aud": audience,
            "exp": now.saturating_add(ttl_secs),
            "iat": now,
            "auth_time": now,
            "email": user.email,
            "email_verified": true,
            "preferred_username": user.username,
            "groups": user.groups,
            // Every token unique, as real IdPs make them: ES256 signatures
            // here are deterministic, and the CA spends each token once.
            "jti": hex::encode(rand_core::RngCore::next_u64(&mut rand_core::OsRng).to_be_bytes()),
        });
        if let (Some(nonce), Some(obj)) = (nonce, claims.as_object_mut()) {
            obj.insert("nonce".into(), nonce.into());
        }
        claims
    }

    fn user_index(&self, login_hint: Option<&str>) -> Result<usize, String> {
        if self.users.is_empty() {
            return Err("the dev IdP has no users configured".into());
        }
        match login_hint {
            None | Some("") => Ok(0),
            Some(hint) => self
                .users
                .iter()
                .position(|u| u.username == hint || u.email == hint)
                .ok_or_else(|| format!("no dev user named {:?}", ca_core::escape_control(hint))),
        }
    }

    fn grants(&self) -> std::sync::MutexGuard<'_, Grants> {
        self.grants.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Adds the public-JWK fields common to every key.
fn finish_jwk(mut key: DevKey) -> DevKey {
    if let Some(obj) = key.jwk.as_object_mut() {
        obj.insert("kid".into(), key.kid.clone().into());
        obj.insert("alg".into(), alg_name(key.alg));
        obj.insert("use".into(), "sig".into());
    }
    key
}

fn alg_name(alg: Algorithm) -> Value {
    serde_json::to_value(alg).unwrap_or(Value::Null)
}

/// PKCS#8 v1 of a P-256 private scalar (RFC 5208 + RFC 5915, no public
/// key): a fixed prefix, so building it cannot fail.
fn p256_pkcs8(scalar: &[u8]) -> Vec<u8> {
    const PREFIX: [u8; 35] = [
        0x30, 0x41, // PrivateKeyInfo, 65 bytes
        0x02, 0x01, 0x00, // version 0
        0x30, 0x13, // AlgorithmIdentifier
        0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, // id-ecPublicKey
        0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, // prime256v1
        0x04, 0x27, // privateKey OCTET STRING
        0x30, 0x25, // ECPrivateKey
        0x02, 0x01, 0x01, // version 1
        0x04, 0x20, // the 32-byte scalar follows
    ];
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(scalar);
    der
}

/// PKCS#8 v1 of an Ed25519 seed (RFC 8410): a fixed prefix.
fn ed25519_pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(seed);
    der
}

fn random_kid(prefix: &str) -> String {
    format!("{prefix}-{}", hex::encode(random_bytes::<8>()))
}
