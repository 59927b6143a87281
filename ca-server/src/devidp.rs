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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use rand_core::{OsRng, RngCore};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Authorization codes are single-use and expire after this.
const CODE_TTL: Duration = Duration::from_secs(60);
/// Lifetime of refresh tokens (rotated on every use).
const REFRESH_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// Lifetime of a device authorization request.
const DEVICE_TTL: Duration = Duration::from_secs(600);
/// Seconds a device-flow client waits between polls.
const DEVICE_POLL_INTERVAL_SECS: u64 = 1;
/// Lifetime of ID tokens handed out by `/token`.
const ID_TOKEN_TTL_SECS: u64 = 600;
/// Bound on each kind of pending grant; the oldest is dropped beyond it.
const MAX_PENDING: usize = 1024;
const DEVICE_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// RFC 8628 §6.1: consonants only, so no words and no 0/O, 1/I confusion.
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

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
    #[error("the dev IdP has no {0:?} signing key (RS256 needs `with_rsa_pem`)")]
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

struct AuthCode {
    user: usize,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    expires: Instant,
}

struct RefreshGrant {
    user: usize,
    expires: Instant,
}

struct DeviceGrant {
    user_code: String,
    approved_for: Option<usize>,
    expires: Instant,
}

trait Pending {
    fn expires(&self) -> Instant;
}

macro_rules! pending {
    ($($t:ty),*) => {$(impl Pending for $t { fn expires(&self) -> Instant { self.expires } })*};
}
pending!(AuthCode, RefreshGrant, DeviceGrant);

#[derive(Default)]
struct Grants {
    codes: HashMap<String, AuthCode>,
    refresh: HashMap<String, RefreshGrant>,
    devices: HashMap<String, DeviceGrant>,
}

/// Inserts after dropping expired entries and, at the bound, the one closest to expiry.
fn insert_bounded<V: Pending>(map: &mut HashMap<String, V>, key: String, value: V) {
    let now = Instant::now();
    map.retain(|_, v| v.expires() > now);
    if map.len() >= MAX_PENDING
        && let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| v.expires())
            .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
    map.insert(key, value);
}

/// The development OpenID provider. Build with [`DevIdp::new`], serve with
/// [`DevIdp::router`] at the root of its issuer URL.
pub struct DevIdp {
    issuer: String,
    client_id: String,
    users: Vec<DevUser>,
    keys: RwLock<Vec<DevKey>>,
    grants: Mutex<Grants>,
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
        })
    }

    /// Builder form of [`DevIdp::add_rsa_pem`], for tests with a fixture key.
    ///
    /// # Panics
    /// When `pem` is not an RSA private key.
    pub fn with_rsa_pem(self: Arc<Self>, pem: &str) -> Arc<Self> {
        if let Err(e) = self.add_rsa_pem(pem) {
            panic!("{e}");
        }
        self
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

    /// Serves the provider's endpoints, relative to the issuer URL's root
    /// (nest it when the issuer has a path).
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/device_authorization", post(device_authorization))
            .route("/device", get(device))
            .with_state(self)
    }

    /// Signs `claims` with the key for `alg` (header: alg, typ JWT, kid).
    pub fn try_mint(&self, alg: Algorithm, claims: Value) -> Result<String, DevIdpError> {
        let kid = self.kid(alg).ok_or(DevIdpError::NoKey(alg))?;
        let header = json!({"alg": alg_name(alg), "typ": "JWT", "kid": kid});
        self.try_mint_raw(header, claims, alg)
    }

    /// [`DevIdp::try_mint`] for tests.
    ///
    /// # Panics
    /// When there is no key for `alg` (RS256 without [`DevIdp::add_rsa_pem`]).
    pub fn mint(&self, alg: Algorithm, claims: Value) -> String {
        self.try_mint(alg, claims).unwrap_or_else(|e| panic!("{e}"))
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

    /// [`DevIdp::try_mint_raw`] for tests.
    ///
    /// # Panics
    /// When there is no key for `sign_with`.
    pub fn mint_raw(&self, header: Value, claims: Value, sign_with: Algorithm) -> String {
        self.try_mint_raw(header, claims, sign_with)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The standard claims of an ID token for `user`, valid from now for `ttl_secs`.
    pub fn id_token_claims(
        &self,
        user: &DevUser,
        audience: &str,
        nonce: Option<&str>,
        ttl_secs: u64,
    ) -> Value {
        let now = unix_now();
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

    /// An ES256 ID token for `user` (see [`DevIdp::id_token_claims`]).
    ///
    /// # Panics
    /// Never in practice: the ES256 key always exists.
    pub fn id_token_for(
        &self,
        user: &DevUser,
        audience: &str,
        nonce: Option<&str>,
        ttl_secs: u64,
    ) -> String {
        self.mint(
            Algorithm::ES256,
            self.id_token_claims(user, audience, nonce, ttl_secs),
        )
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

    /// ID, access and refresh tokens for `user`, as `/token` answers them.
    fn token_response(&self, user: usize, nonce: Option<&str>) -> Response {
        let Some(dev_user) = self.users.get(user) else {
            return oauth_error("invalid_grant", "the user no longer exists");
        };
        let claims = self.id_token_claims(dev_user, &self.client_id, nonce, ID_TOKEN_TTL_SECS);
        let id_token = match self.try_mint(Algorithm::ES256, claims) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "dev IdP cannot sign");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"error": "server_error"})),
                )
                    .into_response();
            }
        };
        let refresh_token = random_token();
        insert_bounded(
            &mut self.grants().refresh,
            refresh_token.clone(),
            RefreshGrant {
                user,
                expires: Instant::now() + REFRESH_TTL,
            },
        );
        no_store(Json(json!({
            "access_token": random_token(),
            "token_type": "Bearer",
            "expires_in": ID_TOKEN_TTL_SECS,
            "id_token": id_token,
            "refresh_token": refresh_token,
        })))
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

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

fn random_kid(prefix: &str) -> String {
    format!("{prefix}-{}", hex::encode(random_bytes::<8>()))
}

/// `XXXX-XXXX` from [`USER_CODE_ALPHABET`] (20^8 ≈ 2^34 codes).
fn random_user_code() -> String {
    let mut code = String::with_capacity(9);
    for (i, b) in random_bytes::<8>().iter().enumerate() {
        if i == 4 {
            code.push('-');
        }
        // 256 % 20 != 0: a slight bias, harmless for a dev IdP.
        code.push(char::from(
            USER_CODE_ALPHABET[usize::from(*b) % USER_CODE_ALPHABET.len()],
        ));
    }
    code
}

/// Case and dashes do not matter when a person types a user code.
fn normalize_user_code(code: &str) -> String {
    code.chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// RFC 8252 §7.3: native apps receive the code on a loopback port chosen at run time.
fn loopback_redirect(uri: &str) -> Result<Url, &'static str> {
    let url = Url::parse(uri).map_err(|_| "redirect_uri is not a URL")?;
    if url.scheme() != "http" {
        return Err("redirect_uri must be a loopback http URL (http://127.0.0.1:PORT/...)");
    }
    if !matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")) {
        return Err("redirect_uri must be a loopback http URL (http://127.0.0.1:PORT/...)");
    }
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err("redirect_uri must not have a fragment or user info");
    }
    Ok(url)
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters.
fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The S256 challenge of `verifier`.
fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn oauth_error(error: &'static str, description: impl Into<String>) -> Response {
    let body = json!({"error": error, "error_description": description.into()});
    (
        StatusCode::BAD_REQUEST,
        [(header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response()
}

fn no_store(body: impl IntoResponse) -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn redirect(to: &Url) -> Response {
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, to.as_str()),
            (header::CACHE_CONTROL, "no-store"),
        ],
    )
        .into_response()
}

async fn discovery(State(idp): State<Arc<DevIdp>>) -> Json<Value> {
    Json(idp.discovery())
}

async fn jwks(State(idp): State<Arc<DevIdp>>) -> Json<Value> {
    Json(idp.jwks())
}

#[derive(Deserialize)]
struct AuthorizeParams {
    client_id: Option<String>,
    response_type: Option<String>,
    redirect_uri: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    login_hint: Option<String>,
}

/// Authorization endpoint. Errors about the client or the redirect URI are
/// shown here (400 JSON) because redirecting them would help an attacker;
/// every later error goes back to the client on its redirect URI (RFC 6749 §4.1.2.1).
async fn authorize(
    State(idp): State<Arc<DevIdp>>,
    params: Result<Query<AuthorizeParams>, QueryRejection>,
) -> Response {
    let Ok(Query(p)) = params else {
        return oauth_error("invalid_request", "malformed query parameters");
    };
    if p.client_id.as_deref() != Some(idp.client_id.as_str()) {
        return oauth_error("invalid_client", "unknown client_id");
    }
    let Some(redirect_uri) = p.redirect_uri else {
        return oauth_error("invalid_request", "redirect_uri is required");
    };
    let mut target = match loopback_redirect(&redirect_uri) {
        Ok(url) => url,
        Err(why) => return oauth_error("invalid_request", why),
    };
    let back = |mut target: Url, pairs: &[(&str, &str)]| {
        {
            let mut q = target.query_pairs_mut();
            for (k, v) in pairs {
                q.append_pair(k, v);
            }
            if let Some(state) = &p.state {
                q.append_pair("state", state);
            }
        }
        redirect(&target)
    };
    let fail = |target: Url, error: &str, description: &str| {
        back(
            target,
            &[("error", error), ("error_description", description)],
        )
    };
    if p.response_type.as_deref() != Some("code") {
        return fail(
            target,
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    if p.code_challenge_method.as_deref() != Some("S256") {
        return fail(
            target,
            "invalid_request",
            "PKCE is required with code_challenge_method=S256",
        );
    }
    let challenge = match p.code_challenge {
        Some(c)
            if c.len() == 43
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            c
        }
        _ => {
            return fail(
                target,
                "invalid_request",
                "code_challenge must be BASE64URL(SHA-256(code_verifier))",
            );
        }
    };
    let user = match idp.user_index(p.login_hint.as_deref()) {
        Ok(u) => u,
        Err(why) => return fail(target, "access_denied", &why),
    };
    let code = random_token();
    insert_bounded(
        &mut idp.grants().codes,
        code.clone(),
        AuthCode {
            user,
            redirect_uri,
            challenge,
            nonce: p.nonce,
            expires: Instant::now() + CODE_TTL,
        },
    );
    tracing::info!(user = %idp.users[user].username, "dev IdP: logged in (authorization code)");
    target.set_fragment(None);
    back(target, &[("code", &code)])
}

#[derive(Deserialize)]
struct TokenParams {
    grant_type: Option<String>,
    client_id: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    device_code: Option<String>,
}

async fn token(
    State(idp): State<Arc<DevIdp>>,
    form: Result<Form<TokenParams>, FormRejection>,
) -> Response {
    let Ok(Form(p)) = form else {
        return oauth_error(
            "invalid_request",
            "expected an application/x-www-form-urlencoded body",
        );
    };
    if p.client_id.as_deref() != Some(idp.client_id.as_str()) {
        return oauth_error("invalid_client", "unknown or missing client_id");
    }
    match p.grant_type.as_deref() {
        Some("authorization_code") => {
            // Removed before any other check: a code is spent by its first use, right or wrong.
            let grant = p.code.as_deref().and_then(|c| idp.grants().codes.remove(c));
            let Some(grant) = grant.filter(|g| g.expires > Instant::now()) else {
                return oauth_error("invalid_grant", "unknown, expired or already used code");
            };
            if p.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str()) {
                return oauth_error(
                    "invalid_grant",
                    "redirect_uri differs from the authorization request",
                );
            }
            match p.code_verifier.as_deref() {
                Some(v) if valid_verifier(v) && s256(v) == grant.challenge => {}
                _ => {
                    return oauth_error(
                        "invalid_grant",
                        "code_verifier does not match code_challenge",
                    );
                }
            }
            idp.token_response(grant.user, grant.nonce.as_deref())
        }
        Some("refresh_token") => {
            let grant = p
                .refresh_token
                .as_deref()
                .and_then(|t| idp.grants().refresh.remove(t));
            match grant.filter(|g| g.expires > Instant::now()) {
                Some(grant) => idp.token_response(grant.user, None),
                None => oauth_error(
                    "invalid_grant",
                    "unknown, expired or already used refresh token",
                ),
            }
        }
        Some(DEVICE_GRANT_TYPE) => {
            let Some(device_code) = p.device_code else {
                return oauth_error("invalid_request", "device_code is required");
            };
            let approved = {
                let mut grants = idp.grants();
                match grants.devices.get(&device_code) {
                    None => return oauth_error("invalid_grant", "unknown device_code"),
                    Some(g) if g.expires <= Instant::now() => {
                        grants.devices.remove(&device_code);
                        return oauth_error(
                            "expired_token",
                            "the device code expired; start again",
                        );
                    }
                    Some(DeviceGrant {
                        approved_for: None, ..
                    }) => {
                        return oauth_error(
                            "authorization_pending",
                            "the user has not approved yet",
                        );
                    }
                    Some(DeviceGrant {
                        approved_for: Some(user),
                        ..
                    }) => {
                        let user = *user;
                        grants.devices.remove(&device_code);
                        user
                    }
                }
            };
            idp.token_response(approved, None)
        }
        _ => oauth_error(
            "unsupported_grant_type",
            "use authorization_code, refresh_token or device_code",
        ),
    }
}

#[derive(Deserialize)]
struct DeviceAuthorizationParams {
    client_id: Option<String>,
}

async fn device_authorization(
    State(idp): State<Arc<DevIdp>>,
    form: Result<Form<DeviceAuthorizationParams>, FormRejection>,
) -> Response {
    let Ok(Form(p)) = form else {
        return oauth_error(
            "invalid_request",
            "expected an application/x-www-form-urlencoded body",
        );
    };
    if p.client_id.as_deref() != Some(idp.client_id.as_str()) {
        return oauth_error("invalid_client", "unknown or missing client_id");
    }
    let device_code = random_token();
    let user_code = random_user_code();
    insert_bounded(
        &mut idp.grants().devices,
        device_code.clone(),
        DeviceGrant {
            user_code: normalize_user_code(&user_code),
            approved_for: None,
            expires: Instant::now() + DEVICE_TTL,
        },
    );
    let base = idp.issuer.trim_end_matches('/');
    no_store(Json(json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": format!("{base}/device"),
        "verification_uri_complete": format!("{base}/device?user_code={user_code}"),
        "expires_in": DEVICE_TTL.as_secs(),
        "interval": DEVICE_POLL_INTERVAL_SECS,
    })))
}

#[derive(Deserialize)]
struct DeviceParams {
    user_code: Option<String>,
    login_hint: Option<String>,
}

/// Verification page: approves the device login at once for the dev user.
/// Plain text, so nothing a user typed can become markup.
async fn device(
    State(idp): State<Arc<DevIdp>>,
    params: Result<Query<DeviceParams>, QueryRejection>,
) -> Response {
    let text = |status: StatusCode, body: String| {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response()
    };
    let Ok(Query(p)) = params else {
        return text(StatusCode::BAD_REQUEST, "Malformed query.\n".into());
    };
    let Some(code) = p.user_code.as_deref().map(normalize_user_code) else {
        return text(
            StatusCode::BAD_REQUEST,
            "Open the link `jitssh login` printed, or add ?user_code=XXXX-XXXX.\n".into(),
        );
    };
    let user = match idp.user_index(p.login_hint.as_deref()) {
        Ok(u) => u,
        Err(why) => return text(StatusCode::BAD_REQUEST, format!("{why}.\n")),
    };
    {
        let mut grants = idp.grants();
        let grant = grants
            .devices
            .values_mut()
            .find(|g| g.user_code == code && g.expires > Instant::now());
        match grant {
            Some(g) => g.approved_for = Some(user),
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "Unknown or expired code: run `jitssh login` again.\n".into(),
                );
            }
        }
    }
    let name = ca_core::escape_control(&idp.users[user].username);
    tracing::info!(user = %name, "dev IdP: logged in (device)");
    text(
        StatusCode::OK,
        format!(
            "Signed in to the jitssh development IdP as {name}.\nYou can close this page and return to the terminal.\n"
        ),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use axum::body::Body;
    use axum::http::{HeaderMap, Request};
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;
    use crate::oidc::{IssuerConfig, TokenVerifier, VerifierOptions};

    const CLIENT: &str = "jitssh-cli";
    const REDIRECT: &str = "http://127.0.0.1:53682/callback";
    const VERIFIER: &str = "dBjftJeZ4CK-P1o0_7-bX.0rtu~vgf9WJ8Hrx4Pq0Qwek";

    fn users() -> Vec<DevUser> {
        vec![
            DevUser {
                username: "alice".into(),
                email: "alice@example.com".into(),
                groups: vec!["developers".into()],
            },
            DevUser {
                username: "bob".into(),
                email: "bob@example.com".into(),
                groups: vec!["ops".into(), "oncall".into()],
            },
        ]
    }

    fn idp() -> Arc<DevIdp> {
        DevIdp::new("http://127.0.0.1:9999".into(), CLIENT.into(), users())
    }

    struct Reply {
        status: StatusCode,
        headers: HeaderMap,
        body: Vec<u8>,
    }

    impl Reply {
        fn json(&self) -> Value {
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
        }
        fn location(&self) -> Url {
            assert_eq!(
                self.status,
                StatusCode::FOUND,
                "{}",
                String::from_utf8_lossy(&self.body)
            );
            Url::parse(self.headers[header::LOCATION].to_str().unwrap()).unwrap()
        }
        fn oauth_error(&self) -> String {
            assert_eq!(self.status, StatusCode::BAD_REQUEST);
            let body = self.json();
            assert!(body["error_description"].is_string());
            body["error"].as_str().unwrap().to_owned()
        }
    }

    async fn send(idp: &Arc<DevIdp>, req: Request<Body>) -> Reply {
        let resp = Arc::clone(idp).router().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    fn query(pairs: &[(&str, &str)]) -> String {
        let mut url = Url::parse("http://x/").unwrap();
        url.query_pairs_mut().extend_pairs(pairs);
        url.query().unwrap_or("").to_owned()
    }

    async fn get(idp: &Arc<DevIdp>, path: &str, pairs: &[(&str, &str)]) -> Reply {
        let req = Request::get(format!("{path}?{}", query(pairs)))
            .body(Body::empty())
            .unwrap();
        send(idp, req).await
    }

    async fn post_form(idp: &Arc<DevIdp>, path: &str, pairs: &[(&str, &str)]) -> Reply {
        let req = Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(query(pairs)))
            .unwrap();
        send(idp, req).await
    }

    fn authorize_params<'a>(redirect: &'a str, challenge: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("client_id", CLIENT),
            ("response_type", "code"),
            ("redirect_uri", redirect),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            ("state", "st-123"),
            ("nonce", "n-456"),
            ("scope", "openid email groups"),
        ]
    }

    /// Runs /authorize and returns the code from the redirect.
    async fn code_for(idp: &Arc<DevIdp>, extra: &[(&str, &str)]) -> String {
        let challenge = s256(VERIFIER);
        let mut params = authorize_params(REDIRECT, &challenge);
        params.extend_from_slice(extra);
        let loc = get(idp, "/authorize", &params).await.location();
        assert_eq!(
            format!(
                "{}://{}{}",
                loc.scheme(),
                loc.host_str().unwrap(),
                loc.path()
            ),
            "http://127.0.0.1/callback"
        );
        assert_eq!(loc.port(), Some(53682));
        let pairs: HashMap<String, String> = loc.query_pairs().into_owned().collect();
        assert_eq!(pairs["state"], "st-123");
        pairs["code"].clone()
    }

    async fn exchange(idp: &Arc<DevIdp>, code: &str, verifier: &str) -> Reply {
        post_form(
            idp,
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("client_id", CLIENT),
                ("code_verifier", verifier),
            ],
        )
        .await
    }

    async fn poll_device(idp: &Arc<DevIdp>, device_code: &str) -> Reply {
        post_form(
            idp,
            "/token",
            &[
                ("grant_type", DEVICE_GRANT_TYPE),
                ("device_code", device_code),
                ("client_id", CLIENT),
            ],
        )
        .await
    }

    async fn refresh_grant(idp: &Arc<DevIdp>, token: String) -> Reply {
        post_form(
            idp,
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &token),
                ("client_id", CLIENT),
            ],
        )
        .await
    }

    fn claims_of(id_token: &str) -> Value {
        let payload = id_token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn serves_discovery_and_jwks() {
        let idp = idp().with_rsa_pem(include_str!("../tests/fixtures/rsa2048.pem"));
        let doc = get(&idp, "/.well-known/openid-configuration", &[])
            .await
            .json();
        assert_eq!(doc["issuer"], "http://127.0.0.1:9999");
        assert_eq!(doc["jwks_uri"], "http://127.0.0.1:9999/jwks");
        assert_eq!(
            doc["authorization_endpoint"],
            "http://127.0.0.1:9999/authorize"
        );
        assert_eq!(doc["token_endpoint"], "http://127.0.0.1:9999/token");
        assert_eq!(
            doc["device_authorization_endpoint"],
            "http://127.0.0.1:9999/device_authorization"
        );
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(doc["response_types_supported"], json!(["code"]));
        assert_eq!(doc["subject_types_supported"], json!(["public"]));
        assert_eq!(
            doc["grant_types_supported"],
            json!([
                "authorization_code",
                "refresh_token",
                "urn:ietf:params:oauth:grant-type:device_code"
            ])
        );
        assert_eq!(
            doc["id_token_signing_alg_values_supported"],
            json!(["ES256", "ES384", "EdDSA", "RS256"])
        );
        let jwks = get(&idp, "/jwks", &[]).await.json();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 4);
        for k in keys {
            assert_eq!(k["use"], "sig");
            assert!(k["kid"].as_str().unwrap().len() > 10);
            assert!(
                k.get("d").is_none() && k.get("p").is_none(),
                "public parts only: {k}"
            );
        }
        let other = DevIdp::new("http://127.0.0.1:9999".into(), CLIENT.into(), users());
        assert_ne!(
            other.kid(Algorithm::ES256),
            idp.kid(Algorithm::ES256),
            "kids are random"
        );
    }

    #[tokio::test]
    async fn authorization_code_with_pkce() {
        let idp = idp();
        let code = code_for(&idp, &[("login_hint", "bob")]).await;
        let reply = exchange(&idp, &code, VERIFIER).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
        let body = reply.json();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], ID_TOKEN_TTL_SECS);
        assert!(body["access_token"].as_str().unwrap().len() >= 43);
        assert!(body["refresh_token"].as_str().unwrap().len() >= 43);
        let claims = claims_of(body["id_token"].as_str().unwrap());
        assert_eq!(claims["iss"], "http://127.0.0.1:9999");
        assert_eq!(claims["sub"], "dev|bob");
        assert_eq!(claims["aud"], CLIENT);
        assert_eq!(claims["nonce"], "n-456");
        assert_eq!(claims["email"], "bob@example.com");
        assert_eq!(claims["email_verified"], true);
        assert_eq!(claims["preferred_username"], "bob");
        assert_eq!(claims["groups"], json!(["ops", "oncall"]));
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert_eq!(exp - iat, ID_TOKEN_TTL_SECS);

        // Default user is the first one.
        let code = code_for(&idp, &[]).await;
        let body = exchange(&idp, &code, VERIFIER).await.json();
        assert_eq!(
            claims_of(body["id_token"].as_str().unwrap())["sub"],
            "dev|alice"
        );
    }

    #[tokio::test]
    async fn wrong_verifier_is_refused_and_burns_the_code() {
        let idp = idp();
        let code = code_for(&idp, &[]).await;
        let wrong = "x".repeat(43);
        assert_eq!(
            exchange(&idp, &code, &wrong).await.oauth_error(),
            "invalid_grant"
        );
        assert_eq!(
            exchange(&idp, &code, VERIFIER).await.oauth_error(),
            "invalid_grant"
        );
        let code = code_for(&idp, &[]).await;
        assert_eq!(
            exchange(&idp, &code, "short").await.oauth_error(),
            "invalid_grant"
        );
        let code = code_for(&idp, &[]).await;
        assert_eq!(
            exchange(&idp, &code, &s256(VERIFIER)).await.oauth_error(),
            "invalid_grant",
            "the challenge is not the verifier"
        );
    }

    #[tokio::test]
    async fn codes_are_single_use_and_bound_to_their_request() {
        let idp = idp();
        let code = code_for(&idp, &[]).await;
        assert_eq!(exchange(&idp, &code, VERIFIER).await.status, StatusCode::OK);
        assert_eq!(
            exchange(&idp, &code, VERIFIER).await.oauth_error(),
            "invalid_grant"
        );
        assert_eq!(
            exchange(&idp, "made-up", VERIFIER).await.oauth_error(),
            "invalid_grant"
        );

        let code = code_for(&idp, &[]).await;
        let other_redirect = post_form(
            &idp,
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "http://127.0.0.1:1/callback"),
                ("client_id", CLIENT),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;
        assert_eq!(other_redirect.oauth_error(), "invalid_grant");

        let code = code_for(&idp, &[]).await;
        let other_client = post_form(
            &idp,
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("client_id", "other"),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;
        assert_eq!(other_client.oauth_error(), "invalid_client");

        // Expired codes.
        let code = code_for(&idp, &[]).await;
        idp.grants().codes.get_mut(&code).unwrap().expires = Instant::now();
        assert_eq!(
            exchange(&idp, &code, VERIFIER).await.oauth_error(),
            "invalid_grant"
        );
    }

    #[tokio::test]
    async fn authorize_requires_loopback_redirect_and_pkce() {
        let idp = idp();
        let challenge = s256(VERIFIER);
        for bad in [
            "https://evil.example.com/callback",
            "http://evil.example.com/callback",
            "http://127.0.0.1.evil.example.com/callback",
            "http://localhost.evil.example.com/cb",
            "http://10.0.0.1:8080/callback",
            "https://127.0.0.1/callback",
            "com.example.app:/callback",
            "http://user@127.0.0.1:1234/callback",
            "http://127.0.0.1:1234/callback#frag",
            "not a url",
        ] {
            let reply = get(&idp, "/authorize", &authorize_params(bad, &challenge)).await;
            assert_eq!(reply.oauth_error(), "invalid_request", "{bad}");
            assert!(
                reply.headers.get(header::LOCATION).is_none(),
                "never redirected: {bad}"
            );
        }
        for good in [
            "http://localhost:1234/cb",
            "http://[::1]:4321/",
            "http://127.0.0.1/x?keep=1",
        ] {
            let loc = get(&idp, "/authorize", &authorize_params(good, &challenge))
                .await
                .location();
            assert!(loc.query_pairs().any(|(k, _)| k == "code"), "{good}");
        }
        let loc = get(
            &idp,
            "/authorize",
            &authorize_params("http://127.0.0.1/x?keep=1", &challenge),
        )
        .await
        .location();
        assert!(loc.query_pairs().any(|(k, v)| k == "keep" && v == "1"));

        let mut wrong_client = authorize_params(REDIRECT, &challenge);
        wrong_client[0] = ("client_id", "someone-else");
        assert_eq!(
            get(&idp, "/authorize", &wrong_client).await.oauth_error(),
            "invalid_client"
        );

        // After the redirect URI is known good, errors go back to the client.
        let error_of = |loc: Url| {
            let pairs: HashMap<String, String> = loc.query_pairs().into_owned().collect();
            assert_eq!(pairs["state"], "st-123");
            assert!(!pairs.contains_key("code"));
            pairs["error"].clone()
        };
        let without = |name: &str| {
            authorize_params(REDIRECT, &challenge)
                .into_iter()
                .filter(|(k, _)| *k != name)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            error_of(
                get(&idp, "/authorize", &without("code_challenge"))
                    .await
                    .location()
            ),
            "invalid_request"
        );
        assert_eq!(
            error_of(
                get(&idp, "/authorize", &without("code_challenge_method"))
                    .await
                    .location()
            ),
            "invalid_request"
        );
        let mut plain = authorize_params(REDIRECT, VERIFIER);
        plain[4] = ("code_challenge_method", "plain");
        assert_eq!(
            error_of(get(&idp, "/authorize", &plain).await.location()),
            "invalid_request"
        );
        let mut token_flow = authorize_params(REDIRECT, &challenge);
        token_flow[1] = ("response_type", "token");
        assert_eq!(
            error_of(get(&idp, "/authorize", &token_flow).await.location()),
            "unsupported_response_type"
        );
        let mut unknown_user = authorize_params(REDIRECT, &challenge);
        unknown_user.push(("login_hint", "mallory"));
        assert_eq!(
            error_of(get(&idp, "/authorize", &unknown_user).await.location()),
            "access_denied"
        );
    }

    #[tokio::test]
    async fn device_flow_pending_then_approved() {
        let idp = idp();
        let start = post_form(
            &idp,
            "/device_authorization",
            &[("client_id", CLIENT), ("scope", "openid")],
        )
        .await
        .json();
        let device_code = start["device_code"].as_str().unwrap().to_owned();
        let user_code = start["user_code"].as_str().unwrap().to_owned();
        assert_eq!(user_code.len(), 9);
        assert_eq!(start["verification_uri"], "http://127.0.0.1:9999/device");
        assert_eq!(
            start["verification_uri_complete"],
            format!("http://127.0.0.1:9999/device?user_code={user_code}")
        );
        assert_eq!(start["expires_in"], DEVICE_TTL.as_secs());
        assert_eq!(start["interval"], DEVICE_POLL_INTERVAL_SECS);

        let poll = || poll_device(&idp, &device_code);
        assert_eq!(poll().await.oauth_error(), "authorization_pending");
        assert_eq!(poll().await.oauth_error(), "authorization_pending");

        assert_eq!(
            get(&idp, "/device", &[("user_code", "BBBB-BBBB")])
                .await
                .status,
            StatusCode::BAD_REQUEST
        );
        let typed = user_code.to_lowercase().replace('-', "");
        let page = get(
            &idp,
            "/device",
            &[("user_code", &typed), ("login_hint", "bob")],
        )
        .await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(
            page.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        assert!(String::from_utf8(page.body).unwrap().contains("bob"));

        let tokens = poll().await;
        assert_eq!(tokens.status, StatusCode::OK);
        let claims = claims_of(tokens.json()["id_token"].as_str().unwrap());
        assert_eq!(claims["sub"], "dev|bob");
        assert!(claims.get("nonce").is_none());
        assert_eq!(
            poll().await.oauth_error(),
            "invalid_grant",
            "a device code yields tokens once"
        );

        let start = post_form(&idp, "/device_authorization", &[("client_id", CLIENT)])
            .await
            .json();
        let device_code = start["device_code"].as_str().unwrap().to_owned();
        idp.grants().devices.get_mut(&device_code).unwrap().expires = Instant::now();
        let expired = post_form(
            &idp,
            "/token",
            &[
                ("grant_type", DEVICE_GRANT_TYPE),
                ("device_code", &device_code),
                ("client_id", CLIENT),
            ],
        )
        .await;
        assert_eq!(expired.oauth_error(), "expired_token");
        assert_eq!(
            post_form(&idp, "/device_authorization", &[("client_id", "x")])
                .await
                .oauth_error(),
            "invalid_client"
        );
    }

    #[tokio::test]
    async fn refresh_tokens_rotate() {
        let idp = idp();
        let code = code_for(&idp, &[("login_hint", "bob")]).await;
        let first = exchange(&idp, &code, VERIFIER).await.json();
        let refresh = first["refresh_token"].as_str().unwrap();
        let refresh_with = |t: &str| refresh_grant(&idp, t.to_owned());
        let second = refresh_with(refresh).await;
        assert_eq!(second.status, StatusCode::OK);
        let second = second.json();
        assert_ne!(second["refresh_token"], first["refresh_token"]);
        let claims = claims_of(second["id_token"].as_str().unwrap());
        assert_eq!(claims["sub"], "dev|bob");
        assert!(claims.get("nonce").is_none());
        assert_eq!(
            refresh_with(refresh).await.oauth_error(),
            "invalid_grant",
            "the old refresh token is spent"
        );
        assert_eq!(
            refresh_with(second["refresh_token"].as_str().unwrap())
                .await
                .status,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn token_endpoint_refuses_bad_requests() {
        let idp = idp();
        assert_eq!(
            post_form(
                &idp,
                "/token",
                &[("grant_type", "password"), ("client_id", CLIENT)]
            )
            .await
            .oauth_error(),
            "unsupported_grant_type"
        );
        assert_eq!(
            post_form(&idp, "/token", &[("grant_type", "client_credentials")])
                .await
                .oauth_error(),
            "invalid_client"
        );
        let json_body = Request::post("/token")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"grant_type":"refresh_token"}"#))
            .unwrap();
        assert_eq!(send(&idp, json_body).await.oauth_error(), "invalid_request");
        let twice = Request::post("/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!(
                "client_id={CLIENT}&client_id={CLIENT}&grant_type=refresh_token"
            )))
            .unwrap();
        assert_eq!(
            send(&idp, twice).await.oauth_error(),
            "invalid_request",
            "repeated parameters"
        );
    }

    #[test]
    fn pending_grants_are_bounded() {
        let mut map = HashMap::new();
        for i in 0..(MAX_PENDING + 50) {
            let expires = Instant::now() + REFRESH_TTL;
            insert_bounded(&mut map, i.to_string(), RefreshGrant { user: 0, expires });
        }
        assert_eq!(map.len(), MAX_PENDING);
        assert!(map.contains_key(&(MAX_PENDING + 49).to_string()));
    }

    #[test]
    fn user_codes_are_unambiguous() {
        for _ in 0..100 {
            let code = random_user_code();
            assert_eq!(code.as_bytes()[4], b'-');
            assert!(
                code.bytes()
                    .filter(|b| *b != b'-')
                    .all(|b| USER_CODE_ALPHABET.contains(&b))
            );
            assert_eq!(
                normalize_user_code(&code.to_lowercase()),
                normalize_user_code(&code)
            );
        }
    }

    #[test]
    fn rejects_a_bad_rsa_pem() {
        assert!(matches!(
            idp().add_rsa_pem("not a key"),
            Err(DevIdpError::RsaKey(_))
        ));
        assert!(matches!(
            idp().try_mint(Algorithm::RS256, json!({})),
            Err(DevIdpError::NoKey(Algorithm::RS256))
        ));
        assert!(matches!(
            idp().try_mint(Algorithm::HS256, json!({})),
            Err(DevIdpError::NoKey(Algorithm::HS256))
        ));
    }

    /// Serves `idp` on `listener`, nested under `path` like `jitssh-ca dev` does.
    fn serve(listener: tokio::net::TcpListener, idp: &Arc<DevIdp>, path: &str) {
        let router = if path.is_empty() {
            Arc::clone(idp).router()
        } else {
            Router::new().nest(path, Arc::clone(idp).router())
        };
        tokio::spawn(async move { axum::serve(listener, router).await });
    }

    #[tokio::test]
    async fn its_tokens_verify_with_the_token_verifier() {
        for path in ["", "/dev-idp"] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let issuer = format!("http://{}{path}", listener.local_addr().unwrap());
            let idp = DevIdp::new(issuer.clone(), CLIENT.into(), users())
                .with_rsa_pem(include_str!("../tests/fixtures/rsa2048.pem"));
            serve(listener, &idp, path);
            let verifier = TokenVerifier::new(
                vec![IssuerConfig::new(
                    issuer.clone(),
                    vec![CLIENT.into()],
                    ca_core::IdentityKind::Human,
                )],
                VerifierOptions::default(),
            )
            .unwrap();
            verifier.refresh_all().await.unwrap();
            assert!(verifier.ready());

            let bob = &idp.users()[1];
            let token = idp.id_token_for(bob, CLIENT, Some("n1"), 300);
            let verified = verifier.verify_full(&token, unix_now()).await.unwrap();
            let id = &verified.identity;
            assert_eq!(id.issuer, issuer);
            assert_eq!(id.subject, "dev|bob");
            assert_eq!(id.email.as_deref(), Some("bob@example.com"));
            assert_eq!(id.groups, ["ops", "oncall"]);
            assert_eq!(id.claims["nonce"], "n1");
            assert!(verified.exp > unix_now());

            for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
                let token = idp.mint(alg, idp.id_token_claims(bob, CLIENT, None, 60));
                verifier
                    .verify(&token, unix_now())
                    .await
                    .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            }
            let other_aud = idp.id_token_for(bob, "someone-else", None, 300);
            assert_eq!(
                verifier
                    .verify(&other_aud, unix_now())
                    .await
                    .unwrap_err()
                    .code(),
                "token_audience_mismatch"
            );
        }
    }
}
