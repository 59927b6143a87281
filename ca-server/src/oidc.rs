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
//! Only then is a [`VerifiedIdentity`] built.
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

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ca_core::{IdentityKind, LoginRule, VerifiedIdentity};
use jsonwebtoken::Algorithm;
use reqwest::Url;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Clock-skew leeway ceiling; larger configured values are clamped to it.
pub const MAX_LEEWAY_SECS: u64 = 60;
/// Claim that carries group names unless an issuer configures another.
pub const DEFAULT_GROUPS_CLAIM: &str = "groups";
/// Discovery documents and key sets larger than this are refused.
const MAX_IDP_RESPONSE_BYTES: usize = 1024 * 1024;
/// A key set with more keys than this is refused (real IdPs publish a handful).
const MAX_JWKS_KEYS: usize = 100;
/// Keys older than this are refreshed in the background (still used meanwhile),
/// so a key the IdP withdrew stops being trusted within this bound.
const SOFT_REFRESH_AFTER: Duration = Duration::from_secs(15 * 60);
/// Fetch interval while an issuer has no usable keys, if shorter than
/// `refresh_min_interval`.
const RETRY_WITHOUT_KEYS: Duration = Duration::from_secs(2);
/// Redirects followed when fetching discovery and keys (same host only).
const MAX_REDIRECTS: usize = 5;
/// RSA moduli outside 2048..=4096 bits are refused.
const RSA_MIN_MODULUS_BITS: usize = 2048;
const RSA_MAX_MODULUS_BITS: usize = 4096;
/// Largest RSA public exponent ring accepts (2^33 - 1).
const RSA_MAX_EXPONENT: u64 = (1 << 33) - 1;

/// One trusted OpenID provider.
#[derive(Clone, Debug)]
pub struct IssuerConfig {
    /// The issuer identifier, compared byte for byte with the token's `iss`.
    pub issuer: String,
    /// Client ids this CA accepts in `aud` (at least one).
    pub audiences: Vec<String>,
    /// Claim holding the group names (an array of strings); usually
    /// [`DEFAULT_GROUPS_CLAIM`].
    pub groups_claim: String,
    /// PEM bundle of CA certificates to trust for this IdP *instead of* the
    /// built-in web roots (as `curl --cacert` does).
    pub ca_bundle: Option<std::path::PathBuf>,
    /// Whether this issuer's subjects are people or workloads.
    pub kind: IdentityKind,
    /// When set, this issuer's RFC 9068 JWT access tokens (`typ: at+jwt`,
    /// e.g. from a client-credentials grant) are accepted too, if their
    /// `aud` contains this value (the resource indicator the IdP issues them
    /// for) and they carry `client_id`. Workload issuers only: an access
    /// token says which client asked, not that a person signed in. `None`:
    /// access tokens are refused, so one cannot pass for an ID token.
    pub access_token_audience: Option<String>,
    /// How this issuer's people get their login name (`login_claim`,
    /// `email_domains`). [`LoginRule::none`] (the default): none at all, so
    /// no personal principal; ignored for workloads.
    pub login: LoginRule,
}

impl IssuerConfig {
    /// A config with the default groups claim and the built-in roots.
    pub fn new(issuer: impl Into<String>, audiences: Vec<String>, kind: IdentityKind) -> Self {
        IssuerConfig {
            issuer: issuer.into(),
            audiences,
            groups_claim: DEFAULT_GROUPS_CLAIM.to_owned(),
            ca_bundle: None,
            kind,
            access_token_audience: None,
            login: LoginRule::none(),
        }
    }
}

/// Knobs shared by every issuer.
#[derive(Clone, Debug)]
pub struct VerifierOptions {
    /// Clock-skew allowance for `exp`, `nbf` and `iat`; clamped to
    /// [`MAX_LEEWAY_SECS`].
    pub leeway_secs: u64,
    /// At most one fetch of an issuer's keys per this interval, whatever
    /// triggers it (unknown `kid`, stale keys, `refresh_all`); at most 2 s
    /// while the issuer has no usable keys at all.
    pub refresh_min_interval: Duration,
    /// Bound on each discovery or JWKS request, connection to last byte.
    pub http_timeout: Duration,
    /// Cached keys stay usable this long after the last successful fetch,
    /// so an IdP outage does not stop logins until then.
    pub jwks_max_age: Duration,
}

impl Default for VerifierOptions {
    fn default() -> Self {
        VerifierOptions {
            leeway_secs: 30,
            refresh_min_interval: Duration::from_secs(30),
            http_timeout: Duration::from_secs(10),
            jwks_max_age: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// A configuration the verifier refuses to start with.
#[derive(Debug, thiserror::Error)]
pub enum OidcConfigError {
    #[error("no OIDC issuer is configured; add at least one [[issuers]] entry")]
    NoIssuers,
    #[error("OIDC issuer {issuer:?} is not usable: {reason}")]
    IssuerUrl { issuer: String, reason: String },
    #[error("OIDC issuer {0:?} is configured twice; merge the entries")]
    DuplicateIssuer(String),
    #[error("OIDC issuer {0:?} has no audience; list the client ids its tokens are issued to")]
    NoAudience(String),
    #[error("OIDC issuer {0:?} has an empty audience entry; remove it")]
    EmptyAudience(String),
    #[error("OIDC issuer {0:?} has an empty groups claim name; use \"groups\" or remove it")]
    EmptyGroupsClaim(String),
    #[error(
        "OIDC issuer {0:?} accepts access tokens but is a human issuer: an access token shows which client asked, not that a person signed in, so people must send ID tokens; set kind = \"workload\" or remove accept_access_tokens"
    )]
    AccessTokensOnHumanIssuer(String),
    #[error(
        "OIDC issuer {0:?} accepts access tokens with an empty audience; set access_token_audience to the resource indicator its access tokens carry in `aud`"
    )]
    EmptyAccessTokenAudience(String),
    #[error("cannot use the CA bundle {path} for OIDC issuer {issuer:?}: {reason}")]
    CaBundle {
        issuer: String,
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("cannot build the HTTP client for OIDC issuer {issuer:?}: {source}")]
    HttpClient {
        issuer: String,
        #[source]
        source: reqwest::Error,
    },
}

/// Why a token was refused. [`TokenError::code`] is stable and meant for
/// clients and audit rows; the message tells a person what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "the token is {0} bytes, more than the 16 KiB an ID token may have; send the ID token from `jitssh login`, not another token"
    )]
    TooLarge(usize),
    #[error("the token is not a signed JWT ({0}); send the ID token from `jitssh login`")]
    Malformed(&'static str),
    #[error(
        "tokens signed with {0:?} are refused (only RS256/384/512, PS256/384/512, ES256, ES384 and EdDSA are accepted); log in again with `jitssh login`"
    )]
    AlgorithmNotAllowed(String),
    #[error(
        "the token header carries key material or a key URL ({0:?}), which is never trusted; log in again with `jitssh login`"
    )]
    HeaderKeyRefused(&'static str),
    #[error(
        "the token type {0:?} is not accepted from this issuer; send an OIDC ID token (access tokens only from workload issuers configured with accept_access_tokens)"
    )]
    TypeNotAllowed(String),
    #[error(
        "the token was issued by {0:?}, which this CA does not trust; log in with a configured identity provider"
    )]
    IssuerUnknown(String),
    #[error(
        "the token was signed with key {0:?}, which the identity provider does not publish; log in again with `jitssh login`"
    )]
    KeyUnknown(String),
    #[error(
        "the token's algorithm does not match its signing key; log in again with `jitssh login`"
    )]
    KeyMismatch,
    #[error("the token signature is invalid; log in again with `jitssh login`")]
    SignatureInvalid,
    #[error("the token expired; log in again with `jitssh login`")]
    Expired,
    #[error(
        "the token is not valid yet; check this machine's clock, then log in again with `jitssh login`"
    )]
    NotYetValid,
    #[error(
        "the token was issued in the future; check the clocks, then log in again with `jitssh login`"
    )]
    IssuedInFuture,
    #[error("the token claim {0:?} has the wrong type; the identity provider is misconfigured")]
    ClaimType(&'static str),
    #[error("the token lacks the claim {0:?}; the identity provider is misconfigured")]
    ClaimMissing(&'static str),
    #[error(
        "the token was issued to another client (audience mismatch); log in with `jitssh login`"
    )]
    AudienceMismatch,
    #[error(
        "the token's authorized party (azp) is not this CA's client; log in with `jitssh login`"
    )]
    AzpMismatch,
    #[error(
        "the identity provider {0:?} cannot be reached for its signing keys; try again in a minute"
    )]
    IdpUnavailable(String),
}

impl TokenError {
    /// Stable snake_case code for API errors, audit rows and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::TooLarge(_) => "token_too_large",
            TokenError::Malformed(_) => "token_malformed",
            TokenError::AlgorithmNotAllowed(_) => "token_algorithm_not_allowed",
            TokenError::HeaderKeyRefused(_) => "token_header_key_refused",
            TokenError::TypeNotAllowed(_) => "token_type_not_allowed",
            TokenError::IssuerUnknown(_) => "token_issuer_unknown",
            TokenError::KeyUnknown(_) => "token_key_unknown",
            TokenError::KeyMismatch => "token_key_mismatch",
            TokenError::SignatureInvalid => "token_signature_invalid",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::IssuedInFuture => "token_issued_in_future",
            TokenError::ClaimType(_) => "token_claim_type",
            TokenError::ClaimMissing(_) => "token_claim_missing",
            TokenError::AudienceMismatch => "token_audience_mismatch",
            TokenError::AzpMismatch => "token_azp_mismatch",
            TokenError::IdpUnavailable(_) => "idp_unavailable",
        }
    }

    /// True when the IdP (not the token) is the problem: answer 503, not 401.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, TokenError::IdpUnavailable(_))
    }
}

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

// ---------------------------------------------------------------------------
// Token parsing (unverified) and claim checks.

/// What the JOSE header's `typ` says the token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TokenType {
    /// No `typ`, `JWT` or `application/jwt`: an ID token.
    Id,
    /// `at+jwt` or `application/at+jwt` (RFC 9068), as written (lowercased).
    Access(&'static str),
}

struct Unverified<'a> {
    alg: Algorithm,
    typ: TokenType,
    kid: String,
    signing_input: &'a str,
    signature: &'a str,
    claims: Map<String, Value>,
}

/// Header fields that carry or point at keys. Honouring any of them lets the
/// token choose its own verification key, so their mere presence is refused.
const REFUSED_HEADER_FIELDS: [&str; 4] = ["jwk", "jku", "x5u", "x5c"];

fn parse_unverified(token: &str) -> Result<Unverified<'_>, TokenError> {
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
fn accepted_algorithm(name: &str) -> Option<Algorithm> {
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

/// Attacker-chosen text in an error message: bounded and without control characters.
fn printable(s: &str) -> String {
    let short: String = s.chars().take(100).collect();
    ca_core::escape_control(&short)
}

struct CheckedClaims {
    exp: u64,
    iat: u64,
    sub: String,
}

/// A JSON number as NumericDate; strings, negatives and non-finite values are refused.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                Ok(Some(u))
            } else {
                match n.as_f64() {
                    // Fractional seconds are allowed by RFC 7519; truncate.
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    Some(f) if f.is_finite() && (0.0..1.0e18).contains(&f) => Ok(Some(f as u64)),
                    _ => Err(TokenError::ClaimType(name)),
                }
            }
        }
        Some(_) => Err(TokenError::ClaimType(name)),
    }
}

/// `exp`, `iat` (both required), `nbf` against `now` with `leeway`, and a
/// non-empty string `sub`: the checks ID and access tokens share.
fn check_times_and_subject(
    leeway: u64,
    claims: &Map<String, Value>,
    now: u64,
) -> Result<CheckedClaims, TokenError> {
    let exp = numeric_date(claims, "exp")?.ok_or(TokenError::ClaimMissing("exp"))?;
    let iat = numeric_date(claims, "iat")?.ok_or(TokenError::ClaimMissing("iat"))?;
    let nbf = numeric_date(claims, "nbf")?;
    if now >= exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(TokenError::NotYetValid);
    }
    if iat > now.saturating_add(leeway) {
        return Err(TokenError::IssuedInFuture);
    }

    let sub = non_empty_string(claims, "sub")?;
    Ok(CheckedClaims { exp, iat, sub })
}

/// A required claim that must be a non-empty string.
fn non_empty_string(claims: &Map<String, Value>, name: &'static str) -> Result<String, TokenError> {
    match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) | None => Err(TokenError::ClaimMissing(name)),
        Some(_) => Err(TokenError::ClaimType(name)),
    }
}

/// `aud`: one string or an array of strings (RFC 7519 §4.1.3).
fn audiences(claims: &Map<String, Value>) -> Result<Vec<&str>, TokenError> {
    match claims.get("aud") {
        None => Err(TokenError::ClaimMissing("aud")),
        Some(Value::String(s)) => Ok(vec![s.as_str()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or(TokenError::ClaimType("aud")))
            .collect(),
        Some(_) => Err(TokenError::ClaimType("aud")),
    }
}

/// ID token claims: times and `sub`, `aud` among the configured client ids,
/// and `azp` when it matters (OIDC Core §3.1.3.7).
fn check_claims(
    cfg: &IssuerConfig,
    leeway: u64,
    claims: &Map<String, Value>,
    now: u64,
) -> Result<CheckedClaims, TokenError> {
    let checked = check_times_and_subject(leeway, claims, now)?;
    let aud = audiences(claims)?;
    let configured = |a: &str| cfg.audiences.iter().any(|c| c == a);
    let matched: Vec<&str> = aud.iter().copied().filter(|a| configured(a)).collect();
    if matched.is_empty() {
        return Err(TokenError::AudienceMismatch);
    }
    let azp = match claims.get("azp") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(TokenError::ClaimType("azp")),
    };
    // OIDC Core §2: with several audiences, azp says which one the token was
    // issued to; it must be us, not another party that shares the token.
    if aud.len() > 1 && !azp.is_some_and(|azp| matched.contains(&azp)) {
        return Err(TokenError::AzpMismatch);
    }
    if azp.is_some_and(|azp| !configured(azp)) {
        return Err(TokenError::AzpMismatch);
    }
    Ok(checked)
}

/// RFC 9068 access token claims: times and `sub` as for ID tokens, `aud`
/// containing the configured resource (the ID-token client ids do not
/// count), and a `client_id`. The subject is `sub`: for a
/// client-credentials grant, the client itself (RFC 9068 §2.2).
fn check_access_claims(
    audience: &str,
    leeway: u64,
    claims: &Map<String, Value>,
    now: u64,
) -> Result<CheckedClaims, TokenError> {
    let checked = check_times_and_subject(leeway, claims, now)?;
    if !audiences(claims)?.contains(&audience) {
        return Err(TokenError::AudienceMismatch);
    }
    non_empty_string(claims, "client_id")?;
    Ok(checked)
}

fn identity(cfg: &IssuerConfig, claims: Map<String, Value>, subject: String) -> VerifiedIdentity {
    let email_verified = claims.get("email_verified") == Some(&Value::Bool(true));
    let email = if email_verified {
        claims
            .get("email")
            .and_then(Value::as_str)
            .map(str::to_owned)
    } else {
        None
    };
    let groups = match claims.get(&cfg.groups_claim) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    // People only: the issuer's login rule, or why there is no login name.
    let (login, login_problem) = match cfg.kind {
        IdentityKind::Workload => (None, None),
        IdentityKind::Human => match cfg.login.derive(&claims, email.as_deref()) {
            Ok(name) => (Some(name), None),
            Err(e) => (None, Some(format!("issuer {:?}: {e}", cfg.issuer))),
        },
    };
    VerifiedIdentity {
        kind: cfg.kind,
        issuer: cfg.issuer.clone(),
        subject,
        email,
        email_verified,
        groups,
        login,
        login_problem,
        claims,
    }
}

// ---------------------------------------------------------------------------
// Per-issuer key cache and fetching.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
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
enum VerifyKey {
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
    fn verify(&self, alg: Algorithm, message: &[u8], signature: &str) -> bool {
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

struct CachedKey {
    kid: String,
    /// The JWK's `alg`, when it declares one.
    alg: Option<Algorithm>,
    kind: KeyKind,
    key: VerifyKey,
}

struct KeySet {
    keys: Vec<CachedKey>,
    fetched_at: Instant,
}

/// Why a refresh is asked for; decides whether an in-between fetch by
/// another task already satisfied it.
enum Want<'a> {
    Kid(&'a str),
    Stale,
    Explicit,
}

struct IssuerState {
    cfg: IssuerConfig,
    client: reqwest::Client,
    discovery_url: Url,
    keys: ArcSwapOption<KeySet>,
    /// Time of the last fetch attempt; held across the fetch (single flight).
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    min_interval: Duration,
    max_age: Duration,
    soft_age: Duration,
}

impl IssuerState {
    fn new(cfg: IssuerConfig, opts: &VerifierOptions) -> Result<Self, OidcConfigError> {
        let url_err = |reason: String| OidcConfigError::IssuerUrl {
            issuer: cfg.issuer.clone(),
            reason,
        };
        let url = Url::parse(&cfg.issuer).map_err(|e| url_err(e.to_string()))?;
        check_fetch_url(&url).map_err(url_err)?;
        if url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(url_err(
                "an issuer has no query, fragment or user info".into(),
            ));
        }
        let discovery_url = Url::parse(&format!(
            "{}/.well-known/openid-configuration",
            cfg.issuer.trim_end_matches('/')
        ))
        .map_err(|e| url_err(e.to_string()))?;
        if cfg.audiences.is_empty() {
            return Err(OidcConfigError::NoAudience(cfg.issuer));
        }
        if cfg.audiences.iter().any(String::is_empty) {
            return Err(OidcConfigError::EmptyAudience(cfg.issuer));
        }
        if cfg.groups_claim.is_empty() {
            return Err(OidcConfigError::EmptyGroupsClaim(cfg.issuer));
        }
        if let Some(aud) = &cfg.access_token_audience {
            if cfg.kind != IdentityKind::Workload {
                return Err(OidcConfigError::AccessTokensOnHumanIssuer(cfg.issuer));
            }
            if aud.is_empty() {
                return Err(OidcConfigError::EmptyAccessTokenAudience(cfg.issuer));
            }
        }

        let https = url.scheme() == "https";
        let mut builder = reqwest::Client::builder()
            .timeout(opts.http_timeout)
            .connect_timeout(opts.http_timeout)
            .redirect(same_host_redirects())
            .https_only(https)
            .user_agent(concat!("jitssh-ca/", env!("CARGO_PKG_VERSION")));
        if !https {
            // Loopback IdP (dev/tests): never send it through a proxy.
            builder = builder.no_proxy();
        }
        if let Some(path) = &cfg.ca_bundle {
            let bundle_err = |reason: String| OidcConfigError::CaBundle {
                issuer: cfg.issuer.clone(),
                path: path.clone(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| bundle_err(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bundle_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(bundle_err("no PEM certificate in the file".into()));
            }
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|source| OidcConfigError::HttpClient {
                issuer: cfg.issuer.clone(),
                source,
            })?;

        let max_age = opts.jwks_max_age;
        Ok(IssuerState {
            cfg,
            client,
            discovery_url,
            keys: ArcSwapOption::empty(),
            last_attempt: tokio::sync::Mutex::new(None),
            min_interval: opts.refresh_min_interval,
            max_age,
            soft_age: SOFT_REFRESH_AFTER.min(max_age / 2),
        })
    }

    fn usable_keys(&self) -> Option<Arc<KeySet>> {
        self.keys
            .load_full()
            .filter(|set| set.fetched_at.elapsed() < self.max_age)
    }

    fn has_usable_keys(&self) -> bool {
        self.usable_keys().is_some()
    }

    /// The verification key for `kid`, fetching keys when `kid` is unknown
    /// or the cached set is too old.
    async fn key_for(self: &Arc<Self>, kid: &str, alg: Algorithm) -> Result<VerifyKey, TokenError> {
        if let Some(set) = self.usable_keys() {
            if set.keys.iter().any(|k| k.kid == kid) {
                if set.fetched_at.elapsed() >= self.soft_age {
                    self.spawn_soft_refresh();
                }
                return pick(&set, kid, alg);
            }
            self.refresh(Want::Kid(kid)).await;
        } else {
            self.refresh(Want::Stale).await;
        }
        match self.usable_keys() {
            Some(set) => pick(&set, kid, alg),
            None => Err(TokenError::IdpUnavailable(self.cfg.issuer.clone())),
        }
    }

    /// Refreshes in the background; keys in hand keep serving meanwhile.
    fn spawn_soft_refresh(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = Arc::clone(self);
        runtime.spawn(async move {
            // Someone else is fetching: nothing to do.
            let Ok(mut last) = this.last_attempt.try_lock() else {
                return;
            };
            let fresh = this
                .usable_keys()
                .is_some_and(|s| s.fetched_at.elapsed() < this.soft_age);
            if !fresh {
                this.fetch_locked(&mut last).await;
            }
        });
    }

    /// Fetches the keys unless a fetch happened less than `min_interval`
    /// ago or another task's fetch, which we waited for, already did the job.
    async fn refresh(&self, want: Want<'_>) {
        let mut last = self.last_attempt.lock().await;
        let current = self.usable_keys();
        let satisfied = match want {
            Want::Kid(kid) => current.is_some_and(|s| s.keys.iter().any(|k| k.kid == kid)),
            Want::Stale => current.is_some(),
            Want::Explicit => false,
        };
        if satisfied {
            return;
        }
        self.fetch_locked(&mut last).await;
    }

    async fn fetch_locked(&self, last: &mut Option<Instant>) {
        // Without usable keys every request fails anyway: retry sooner, so
        // an IdP that comes back (or a dev IdP served by this very process
        // once it starts listening) is picked up within seconds.
        let interval = if self.has_usable_keys() {
            self.min_interval
        } else {
            self.min_interval.min(RETRY_WITHOUT_KEYS)
        };
        if last.is_some_and(|t| t.elapsed() < interval) {
            return;
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(set) => {
                tracing::debug!(issuer = %self.cfg.issuer, keys = set.keys.len(), "fetched signing keys");
                self.keys.store(Some(Arc::new(set)));
            }
            Err(error) => {
                tracing::warn!(issuer = %self.cfg.issuer, %error, "fetching the identity provider's signing keys failed");
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let discovery = get_json(&self.client, &self.discovery_url).await?;
        match discovery.get("issuer").and_then(Value::as_str) {
            Some(iss) if iss == self.cfg.issuer => {}
            Some(iss) => {
                return Err(format!(
                    "the discovery document names issuer {:?}, not {:?}",
                    printable(iss),
                    self.cfg.issuer
                ));
            }
            None => return Err("the discovery document has no issuer".into()),
        }
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or("the discovery document has no jwks_uri")?;
        let jwks_uri = Url::parse(jwks_uri).map_err(|e| format!("jwks_uri: {e}"))?;
        check_fetch_url(&jwks_uri).map_err(|e| format!("jwks_uri {jwks_uri}: {e}"))?;

        let jwks = get_json(&self.client, &jwks_uri).await?;
        let entries = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("the key set has no keys array")?;
        if entries.len() > MAX_JWKS_KEYS {
            return Err(format!(
                "the key set has {} keys, more than {MAX_JWKS_KEYS}",
                entries.len()
            ));
        }
        let mut keys = Vec::new();
        for entry in entries {
            match parse_jwk(entry) {
                Ok(key) => keys.push(key),
                Err(reason) => {
                    tracing::debug!(issuer = %self.cfg.issuer, reason, "ignoring a published key")
                }
            }
        }
        if keys.is_empty() {
            return Err(
                "the key set has no usable RSA, P-256, P-384 or Ed25519 signing key".into(),
            );
        }
        Ok(KeySet {
            keys,
            fetched_at: Instant::now(),
        })
    }
}

fn pick(set: &KeySet, kid: &str, alg: Algorithm) -> Result<VerifyKey, TokenError> {
    let mut candidates = set.keys.iter().filter(|k| k.kid == kid).peekable();
    if candidates.peek().is_none() {
        return Err(TokenError::KeyUnknown(printable(kid)));
    }
    candidates
        .find(|k| k.kind.fits(alg) && k.alg.is_none_or(|a| a == alg))
        .map(|k| k.key.clone())
        .ok_or(TokenError::KeyMismatch)
}

/// Validates one published key; anything odd is skipped rather than
/// trusted. Lengths and ranges are checked here, so a key that would fail
/// every signature check is refused at fetch time with a reason.
fn parse_jwk(v: &Value) -> Result<CachedKey, &'static str> {
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

/// https anywhere, plain http only to the loopback interface.
fn check_fetch_url(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err("plain http is only allowed for loopback addresses (127.0.0.0/8, ::1, localhost); use https".into()),
        other => Err(format!("scheme {other:?} is not https")),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some(host) if host.eq_ignore_ascii_case("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// Follows redirects only to the same host and never from https to http, so
/// a redirect cannot send the key fetch to another server.
fn same_host_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first() else {
            return attempt.stop();
        };
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error("too many redirects");
        }
        let next = attempt.url();
        let same_host = next.host_str() == first.host_str();
        let no_downgrade = next.scheme() == "https" || first.scheme() == "http";
        if same_host && no_downgrade {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

async fn get_json(client: &reqwest::Client, url: &Url) -> Result<Value, String> {
    let mut resp = client
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", resp.status()));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_IDP_RESPONSE_BYTES as u64)
    {
        return Err(format!(
            "GET {url}: response larger than {MAX_IDP_RESPONSE_BYTES} bytes"
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
        if body.len() + chunk.len() > MAX_IDP_RESPONSE_BYTES {
            return Err(format!(
                "GET {url}: response larger than {MAX_IDP_RESPONSE_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use axum::extract::State;
    use axum::http::{StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::{Json, Router};
    use jsonwebtoken::EncodingKey;
    use serde_json::json;

    use super::*;
    use crate::devidp::{DevIdp, DevUser};

    const AUD: &str = "jitssh-test";
    const NOW: u64 = 1_700_000_000;
    const RSA_PEM: &str = include_str!("../tests/fixtures/rsa2048.pem");

    /// A JWKS/discovery server in front of a dev IdP's keys, which tests can
    /// take down, count, and feed hostile documents.
    struct Mock {
        idp: Arc<DevIdp>,
        port: u16,
        up: AtomicBool,
        discovery_hits: AtomicUsize,
        jwks_hits: AtomicUsize,
        jwks_override: Mutex<Option<Value>>,
        discovery_override: Mutex<Option<Value>>,
    }

    impl Mock {
        fn issuer(&self) -> String {
            self.idp.issuer().to_owned()
        }
        fn jwks_hits(&self) -> usize {
            self.jwks_hits.load(Ordering::SeqCst)
        }
        fn set_up(&self, up: bool) {
            self.up.store(up, Ordering::SeqCst);
        }
        fn claims(&self) -> Value {
            json!({
                "iss": self.issuer(), "sub": "alice-id", "aud": AUD,
                "iat": NOW - 10, "exp": NOW + 300,
                "email": "alice@example.com", "email_verified": true,
                "preferred_username": "alice", "groups": ["developers", 7, "ops"],
            })
        }
        fn with(&self, f: impl FnOnce(&mut Value)) -> String {
            let mut c = self.claims();
            f(&mut c);
            self.idp.mint(Algorithm::ES256, c)
        }
        fn header(&self, alg: Algorithm) -> Value {
            json!({"alg": alg_str(alg), "typ": "JWT", "kid": self.idp.kid(alg).unwrap()})
        }
    }

    fn alg_str(alg: Algorithm) -> Value {
        serde_json::to_value(alg).unwrap()
    }

    async fn mock() -> Arc<Mock> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let user = DevUser {
            username: "alice".into(),
            email: "alice@example.com".into(),
            groups: vec!["developers".into()],
        };
        let idp =
            DevIdp::new(format!("http://{addr}"), AUD.into(), vec![user]).with_rsa_pem(RSA_PEM);
        for alg in &ALGORITHMS[1..6] {
            idp.add_rsa_pem_for(*alg, RSA_PEM).unwrap();
        }
        let m = Arc::new(Mock {
            idp,
            port: addr.port(),
            up: AtomicBool::new(true),
            discovery_hits: AtomicUsize::new(0),
            jwks_hits: AtomicUsize::new(0),
            jwks_override: Mutex::new(None),
            discovery_override: Mutex::new(None),
        });
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/moved-same-host", get(moved_same_host))
            .route("/moved-other-host", get(moved_other_host))
            .with_state(Arc::clone(&m));
        tokio::spawn(async move { axum::serve(listener, router).await });
        m
    }

    async fn discovery(State(m): State<Arc<Mock>>) -> Response {
        m.discovery_hits.fetch_add(1, Ordering::SeqCst);
        if !m.up.load(Ordering::SeqCst) {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        let mut doc = m.idp.discovery();
        if let Some(Value::Object(patch)) = m.discovery_override.lock().unwrap().clone() {
            for (k, v) in patch {
                doc[k] = v;
            }
        }
        Json(doc).into_response()
    }

    async fn jwks(State(m): State<Arc<Mock>>) -> Response {
        m.jwks_hits.fetch_add(1, Ordering::SeqCst);
        if !m.up.load(Ordering::SeqCst) {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        let body = m
            .jwks_override
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| m.idp.jwks());
        Json(body).into_response()
    }

    async fn moved_same_host(State(m): State<Arc<Mock>>) -> Response {
        (
            StatusCode::FOUND,
            [(
                header::LOCATION,
                format!("http://127.0.0.1:{}/jwks", m.port),
            )],
        )
            .into_response()
    }

    async fn moved_other_host(State(m): State<Arc<Mock>>) -> Response {
        (
            StatusCode::FOUND,
            [(
                header::LOCATION,
                format!("http://localhost:{}/jwks", m.port),
            )],
        )
            .into_response()
    }

    fn opts() -> VerifierOptions {
        VerifierOptions {
            leeway_secs: 60,
            refresh_min_interval: Duration::from_secs(1),
            http_timeout: Duration::from_secs(5),
            jwks_max_age: Duration::from_secs(3600),
        }
    }

    fn verifier_with(m: &Mock, opts: VerifierOptions) -> TokenVerifier {
        TokenVerifier::new(
            vec![IssuerConfig::new(
                m.issuer(),
                vec![AUD.into()],
                IdentityKind::Human,
            )],
            opts,
        )
        .unwrap()
    }

    fn verifier(m: &Mock) -> TokenVerifier {
        verifier_with(m, opts())
    }

    async fn code(v: &TokenVerifier, token: &str) -> &'static str {
        match v.verify(token, NOW).await {
            Ok(_) => "ok",
            Err(e) => {
                assert!(!e.to_string().is_empty());
                e.code()
            }
        }
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    /// A token HMAC-signed with `secret`, whatever the header says.
    fn hmac_token(header: &Value, claims: &Value, secret: &[u8], alg: Algorithm) -> String {
        let input = format!("{}.{}", b64(header), b64(claims));
        let sig =
            jsonwebtoken::crypto::sign(input.as_bytes(), &EncodingKey::from_secret(secret), alg)
                .unwrap();
        format!("{input}.{sig}")
    }

    const ALGORITHMS: [Algorithm; 9] = ACCEPTED_ALGORITHMS;

    #[test]
    fn accepted_algorithms_are_named_by_their_registered_names() {
        for alg in ACCEPTED_ALGORITHMS {
            let name = serde_json::to_value(alg).unwrap();
            assert_eq!(accepted_algorithm(name.as_str().unwrap()), Some(alg));
        }
    }

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
    async fn email_only_when_verified_is_json_true() {
        let m = mock().await;
        let v = verifier(&m);
        for verified in [json!(false), json!("true"), json!(1), Value::Null] {
            let t = m.with(|c| c["email_verified"] = verified.clone());
            let id = v.verify(&t, NOW).await.unwrap();
            assert_eq!(id.email, None, "{verified}");
            assert!(!id.email_verified);
        }
        let t = m.with(|c| {
            c.as_object_mut().unwrap().remove("email_verified");
        });
        assert_eq!(v.verify(&t, NOW).await.unwrap().email, None);
    }

    #[tokio::test]
    async fn groups_come_from_the_configured_claim() {
        let m = mock().await;
        let mut cfg = IssuerConfig::new(m.issuer(), vec![AUD.into()], IdentityKind::Workload);
        cfg.groups_claim = "roles".into();
        let v = TokenVerifier::new(vec![cfg], opts()).unwrap();
        let t = m.with(|c| c["roles"] = json!(["deployers", {"x": 1}]));
        let id = v.verify(&t, NOW).await.unwrap();
        assert_eq!(id.groups, ["deployers"]);
        assert_eq!(id.kind, IdentityKind::Workload);
        let t = m.with(|c| c["roles"] = json!("deployers"));
        assert!(
            v.verify(&t, NOW).await.unwrap().groups.is_empty(),
            "a string is not a group list"
        );
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

    const RESOURCE: &str = "urn:jitssh:ca";

    /// A workload issuer; with `resource`, it accepts access tokens for it.
    fn workload_verifier(m: &Mock, resource: Option<&str>) -> TokenVerifier {
        let cfg = IssuerConfig {
            access_token_audience: resource.map(str::to_owned),
            ..IssuerConfig::new(m.issuer(), vec![AUD.into()], IdentityKind::Workload)
        };
        TokenVerifier::new(vec![cfg], opts()).unwrap()
    }

    /// RFC 9068 access token claims as a client-credentials grant yields them.
    fn access_claims(m: &Mock) -> Value {
        json!({
            "iss": m.issuer(), "sub": "svc-deployer", "client_id": "svc-deployer",
            "aud": RESOURCE, "iat": NOW - 10, "exp": NOW + 300, "jti": "j1", "scope": "issue",
        })
    }

    fn access_token(m: &Mock, typ: &str, f: impl FnOnce(&mut Value)) -> String {
        let mut header = m.header(Algorithm::ES256);
        header["typ"] = json!(typ);
        let mut claims = access_claims(m);
        f(&mut claims);
        m.idp.mint_raw(header, claims, Algorithm::ES256)
    }

    #[tokio::test]
    async fn accepts_access_tokens_from_a_workload_issuer_that_opted_in() {
        let m = mock().await;
        let v = workload_verifier(&m, Some(RESOURCE));
        for typ in ["at+jwt", "application/at+jwt", "AT+JWT"] {
            let token = access_token(&m, typ, |_| {});
            let got = v
                .verify_full(&token, NOW)
                .await
                .unwrap_or_else(|e| panic!("{typ}: {e}"));
            assert_eq!(got.exp, NOW + 300);
            assert_eq!(got.token_hash, token_hash(&token));
            let id = got.identity;
            assert_eq!(id.kind, IdentityKind::Workload);
            assert_eq!(id.issuer, m.issuer());
            assert_eq!(id.subject, "svc-deployer", "the subject is sub");
            assert_eq!(id.claims["client_id"], "svc-deployer");
            assert_eq!(id.email, None);
        }
        // Audience in a list; a sub that is not the client id (Auth0, Keycloak).
        let t = access_token(&m, "at+jwt", |c| {
            c["aud"] = json!(["https://api.example.com", RESOURCE]);
            c["sub"] = json!("service-account-7");
        });
        assert_eq!(
            v.verify(&t, NOW).await.unwrap().subject,
            "service-account-7"
        );
        // ID tokens of the same issuer keep working as before.
        assert_eq!(code(&v, &m.with(|_| {})).await, "ok");
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
    async fn access_tokens_need_the_resource_audience_client_id_and_times() {
        let m = mock().await;
        let v = workload_verifier(&m, Some(RESOURCE));
        type Edit = Box<dyn FnOnce(&mut Value)>;
        let cases: Vec<(&str, Edit, &str)> = vec![
            (
                "other resource",
                Box::new(|c| c["aud"] = json!("urn:other")),
                "token_audience_mismatch",
            ),
            (
                "ID-token client id is not the resource",
                Box::new(|c| c["aud"] = json!(AUD)),
                "token_audience_mismatch",
            ),
            (
                "audience list without the resource",
                Box::new(|c| c["aud"] = json!(["urn:a", AUD])),
                "token_audience_mismatch",
            ),
            (
                "prefix of the resource",
                Box::new(|c| c["aud"] = json!("urn:jitssh")),
                "token_audience_mismatch",
            ),
            (
                "no aud",
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("aud");
                }),
                "token_claim_missing",
            ),
            (
                "no client_id",
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("client_id");
                }),
                "token_claim_missing",
            ),
            (
                "empty client_id",
                Box::new(|c| c["client_id"] = json!("")),
                "token_claim_missing",
            ),
            (
                "client_id not a string",
                Box::new(|c| c["client_id"] = json!(7)),
                "token_claim_type",
            ),
            (
                "no sub",
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("sub");
                }),
                "token_claim_missing",
            ),
            (
                "no iat",
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("iat");
                }),
                "token_claim_missing",
            ),
            (
                "expired",
                Box::new(|c| c["exp"] = json!(NOW - 120)),
                "token_expired",
            ),
            (
                "not yet valid",
                Box::new(|c| c["nbf"] = json!(NOW + 120)),
                "token_not_yet_valid",
            ),
            (
                "other issuer",
                Box::new(|c| c["iss"] = json!("https://evil.example.com")),
                "token_issuer_unknown",
            ),
        ];
        for (what, f, want) in cases {
            assert_eq!(
                code(&v, &access_token(&m, "at+jwt", f)).await,
                want,
                "{what}"
            );
        }
        // The resource does not make an ID token (no at+jwt) acceptable either.
        assert_eq!(
            code(&v, &m.with(|c| c["aud"] = json!(RESOURCE))).await,
            "token_audience_mismatch"
        );
        // Same checks on the signature as for ID tokens.
        let good = access_token(&m, "at+jwt", |_| {});
        let (input, _) = good.rsplit_once('.').unwrap();
        let forged = access_token(&m, "at+jwt", |c| c["sub"] = json!("admin"));
        let forged_sig = forged.rsplit_once('.').unwrap().1;
        assert_eq!(
            code(&v, &format!("{input}.{forged_sig}")).await,
            "token_signature_invalid"
        );
        let mut h = m.header(Algorithm::ES256);
        h["typ"] = json!("at+jwt");
        h["alg"] = alg_str(Algorithm::HS256);
        let hmac = hmac_token(&h, &access_claims(&m), b"secret", Algorithm::HS256);
        assert_eq!(code(&v, &hmac).await, "token_algorithm_not_allowed");
    }

    #[test]
    fn access_tokens_are_refused_on_human_issuer_configs() {
        let cfg = |kind, aud: &str| IssuerConfig {
            access_token_audience: Some(aud.to_owned()),
            ..IssuerConfig::new("https://idp.example.com", vec![AUD.into()], kind)
        };
        let err = TokenVerifier::new(vec![cfg(IdentityKind::Human, RESOURCE)], opts()).unwrap_err();
        assert!(
            matches!(err, OidcConfigError::AccessTokensOnHumanIssuer(_)),
            "{err}"
        );
        assert!(err.to_string().contains("kind = \"workload\""), "{err}");
        assert!(matches!(
            TokenVerifier::new(vec![cfg(IdentityKind::Workload, "")], opts()),
            Err(OidcConfigError::EmptyAccessTokenAudience(_))
        ));
        TokenVerifier::new(vec![cfg(IdentityKind::Workload, RESOURCE)], opts()).unwrap();
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

    #[tokio::test]
    async fn checks_audience_and_azp() {
        let m = mock().await;
        let v = verifier(&m);
        let cases: [(Value, Option<Value>, &str); 12] = [
            (json!(AUD), None, "ok"),
            (json!([AUD]), None, "ok"),
            (json!(AUD), Some(json!(AUD)), "ok"),
            (json!([AUD, "other"]), Some(json!(AUD)), "ok"),
            (json!("other"), None, "token_audience_mismatch"),
            (json!(["other", "another"]), None, "token_audience_mismatch"),
            (json!([]), None, "token_audience_mismatch"),
            (json!(7), None, "token_claim_type"),
            (json!([AUD, 7]), None, "token_claim_type"),
            (json!([AUD, "other"]), None, "token_azp_mismatch"),
            (
                json!([AUD, "other"]),
                Some(json!("other")),
                "token_azp_mismatch",
            ),
            (json!(AUD), Some(json!("other")), "token_azp_mismatch"),
        ];
        for (aud, azp, want) in cases {
            let t = m.with(|c| {
                c["aud"] = aud.clone();
                if let Some(azp) = &azp {
                    c["azp"] = azp.clone();
                }
            });
            assert_eq!(code(&v, &t).await, want, "aud {aud} azp {azp:?}");
        }
        let no_aud = m.with(|c| {
            c.as_object_mut().unwrap().remove("aud");
        });
        assert_eq!(code(&v, &no_aud).await, "token_claim_missing");
        assert_eq!(
            code(&v, &m.with(|c| c["azp"] = json!(1))).await,
            "token_claim_type"
        );
    }

    #[tokio::test]
    async fn checks_times_with_bounded_leeway() {
        let m = mock().await;
        // A leeway above 60 s is clamped to 60 s.
        let v = verifier_with(
            &m,
            VerifierOptions {
                leeway_secs: 3600,
                ..opts()
            },
        );
        let cases: [(&str, Value, &str); 10] = [
            ("exp", json!(NOW - 61), "token_expired"),
            ("exp", json!(NOW - 60), "token_expired"),
            ("exp", json!(NOW - 59), "ok"),
            ("exp", json!(NOW - 3000), "token_expired"),
            ("nbf", json!(NOW + 61), "token_not_yet_valid"),
            ("nbf", json!(NOW + 3000), "token_not_yet_valid"),
            ("nbf", json!(NOW + 60), "ok"),
            ("iat", json!(NOW + 61), "token_issued_in_future"),
            ("iat", json!(NOW + 60), "ok"),
            ("exp", json!((NOW + 300) as f64 + 0.5), "ok"),
        ];
        for (claim, value, want) in cases {
            let t = m.with(|c| c[claim] = value.clone());
            assert_eq!(code(&v, &t).await, want, "{claim}={value}");
        }
    }

    #[tokio::test]
    async fn requires_numeric_times_and_subject() {
        let m = mock().await;
        let v = verifier(&m);
        for claim in ["exp", "iat", "nbf"] {
            for bad in [
                json!((NOW + 300).to_string()),
                json!(-1),
                json!(true),
                json!([NOW]),
            ] {
                let t = m.with(|c| c[claim] = bad.clone());
                assert_eq!(code(&v, &t).await, "token_claim_type", "{claim}={bad}");
            }
        }
        for claim in ["exp", "iat", "sub"] {
            let t = m.with(|c| {
                c.as_object_mut().unwrap().remove(claim);
            });
            assert_eq!(code(&v, &t).await, "token_claim_missing", "{claim}");
        }
        assert_eq!(
            code(&v, &m.with(|c| c["sub"] = json!(""))).await,
            "token_claim_missing"
        );
        assert_eq!(
            code(&v, &m.with(|c| c["sub"] = json!(12))).await,
            "token_claim_type"
        );
        let no_nbf = m.with(|c| {
            c.as_object_mut().unwrap().remove("nbf");
        });
        assert_eq!(code(&v, &no_nbf).await, "ok", "nbf is optional");
    }

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

    impl Mock {
        fn with_claims_sub(&self, sub: &str) -> Value {
            let mut c = self.claims();
            c["sub"] = json!(sub);
            c
        }
    }

    #[tokio::test]
    async fn unknown_kid_refreshes_once_per_interval_without_stampede() {
        let m = mock().await;
        let v = verifier(&m);
        // Eight concurrent first requests: one fetch between them.
        let token = m.idp.mint(Algorithm::ES256, m.claims());
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (v, t) = (v.clone(), token.clone());
            tasks.spawn(async move { v.verify(&t, NOW).await.map(|_| ()) });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap();
        }
        assert_eq!(m.jwks_hits(), 1);

        tokio::time::sleep(Duration::from_millis(1100)).await;
        let unknown = m.idp.mint_raw(
            json!({"alg": "ES256", "kid": "rotated-away"}),
            m.claims(),
            Algorithm::ES256,
        );
        assert_eq!(code(&v, &unknown).await, "token_key_unknown");
        assert_eq!(m.jwks_hits(), 2, "an unknown kid triggers one refresh");
        for _ in 0..3 {
            assert_eq!(code(&v, &unknown).await, "token_key_unknown");
        }
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (v, t) = (v.clone(), unknown.clone());
            tasks.spawn(async move { v.verify(&t, NOW).await.unwrap_err().code() });
        }
        while let Some(r) = tasks.join_next().await {
            assert_eq!(r.unwrap(), "token_key_unknown");
        }
        assert_eq!(
            m.jwks_hits(),
            2,
            "no further fetch within refresh_min_interval"
        );
        assert_eq!(code(&v, &token).await, "ok", "known keys keep working");

        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(code(&v, &unknown).await, "token_key_unknown");
        assert_eq!(m.jwks_hits(), 3, "after the interval, one more refresh");
    }

    #[tokio::test]
    async fn picks_up_rotated_keys_and_drops_withdrawn_ones() {
        let m = mock().await;
        let v = verifier(&m);
        v.refresh_all().await.unwrap();
        let old = m.idp.mint(Algorithm::RS256, m.claims());
        assert_eq!(code(&v, &old).await, "ok");

        let new_kid = m.idp.add_rsa_pem(RSA_PEM).unwrap();
        let new = m.idp.mint(Algorithm::RS256, m.claims());
        assert!(new.starts_with(&b64(&json!({"alg": "RS256", "typ": "JWT", "kid": new_kid}))));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            code(&v, &new).await,
            "ok",
            "new kid accepted after one refresh"
        );
        assert_eq!(m.jwks_hits(), 2);
        assert_eq!(
            code(&v, &old).await,
            "token_key_unknown",
            "the withdrawn kid is gone"
        );
    }

    #[tokio::test]
    async fn refreshes_old_keys_in_the_background() {
        let m = mock().await;
        // Soft refresh after half of jwks_max_age.
        let v = verifier_with(
            &m,
            VerifierOptions {
                jwks_max_age: Duration::from_millis(1000),
                refresh_min_interval: Duration::from_millis(100),
                ..opts()
            },
        );
        let token = m.idp.mint(Algorithm::ES256, m.claims());
        assert_eq!(code(&v, &token).await, "ok");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            code(&v, &token).await,
            "ok",
            "answered from cache meanwhile"
        );
        for _ in 0..50 {
            if m.jwks_hits() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(m.jwks_hits(), 2);
    }

    #[tokio::test]
    async fn keeps_cached_keys_while_the_idp_is_down() {
        let m = mock().await;
        let v = verifier(&m);
        v.refresh_all().await.unwrap();
        assert!(v.ready());
        m.set_up(false);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            code(&v, &m.idp.mint(Algorithm::EdDSA, m.claims())).await,
            "ok"
        );
        let unknown = m.idp.mint_raw(
            json!({"alg": "ES256", "kid": "nope"}),
            m.claims(),
            Algorithm::ES256,
        );
        assert_eq!(
            code(&v, &unknown).await,
            "token_key_unknown",
            "a failed refresh keeps the cached set"
        );
        assert_eq!(
            m.jwks_hits(),
            1,
            "discovery failed, so the JWKS was not even asked"
        );
        assert!(m.discovery_hits.load(Ordering::SeqCst) >= 2);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        v.refresh_all().await.unwrap();
        assert!(v.ready());
    }

    #[tokio::test]
    async fn idp_unavailable_without_usable_keys() {
        let m = mock().await;
        m.set_up(false);
        let v = verifier(&m);
        let token = m.idp.mint(Algorithm::ES256, m.claims());
        let err = v.verify(&token, NOW).await.unwrap_err();
        assert_eq!(err.code(), "idp_unavailable");
        assert!(err.is_unavailable());
        assert!(!v.ready());
        assert!(v.refresh_all().await.unwrap_err().is_unavailable());

        // Up again: usable after the rate limit lets a fetch through.
        m.set_up(true);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(code(&v, &token).await, "ok");

        // Keys older than jwks_max_age are not used.
        let v = verifier_with(
            &m,
            VerifierOptions {
                jwks_max_age: Duration::from_millis(300),
                ..opts()
            },
        );
        assert_eq!(code(&v, &token).await, "ok");
        m.set_up(false);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!v.ready());
        assert_eq!(code(&v, &token).await, "idp_unavailable");

        // Nothing listening at all.
        let closed = IssuerConfig::new("http://127.0.0.1:1", vec![AUD.into()], IdentityKind::Human);
        let v = TokenVerifier::new(vec![closed], opts()).unwrap();
        let t = m.idp.mint(Algorithm::ES256, json!({"iss": "http://127.0.0.1:1", "sub": "x", "aud": AUD, "exp": NOW + 60, "iat": NOW}));
        assert_eq!(code(&v, &t).await, "idp_unavailable");
    }

    #[tokio::test]
    async fn retries_soon_while_it_has_no_keys() {
        let m = mock().await;
        m.set_up(false);
        let v = verifier_with(
            &m,
            VerifierOptions {
                refresh_min_interval: Duration::from_secs(30),
                ..opts()
            },
        );
        let token = m.idp.mint(Algorithm::ES256, m.claims());
        assert_eq!(code(&v, &token).await, "idp_unavailable");
        m.set_up(true);
        assert_eq!(
            code(&v, &token).await,
            "idp_unavailable",
            "rate-limited right after a failure"
        );
        tokio::time::sleep(RETRY_WITHOUT_KEYS + Duration::from_millis(100)).await;
        assert_eq!(code(&v, &token).await, "ok", "retried after 2 s, not 30 s");
        assert_eq!(m.discovery_hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn refuses_hostile_discovery_and_key_sets() {
        let m = mock().await;
        let token = m.idp.mint(Algorithm::ES256, m.claims());
        let hostile_discovery = [
            json!({"issuer": format!("{}/", m.issuer())}),
            json!({"issuer": "https://evil.example.com"}),
            json!({"issuer": null}),
            json!({"jwks_uri": null}),
            json!({"jwks_uri": "http://evil.example.com/jwks"}),
            json!({"jwks_uri": "file:///etc/passwd"}),
            json!({"jwks_uri": format!("{}/moved-other-host", m.issuer())}),
        ];
        for patch in hostile_discovery {
            *m.discovery_override.lock().unwrap() = Some(patch.clone());
            let v = verifier(&m);
            assert_eq!(code(&v, &token).await, "idp_unavailable", "{patch}");
        }
        assert_eq!(m.jwks_hits(), 0);
        *m.discovery_override.lock().unwrap() =
            Some(json!({"jwks_uri": format!("{}/moved-same-host", m.issuer())}));
        assert_eq!(
            code(&verifier(&m), &token).await,
            "ok",
            "same-host redirects are followed"
        );
        *m.discovery_override.lock().unwrap() = None;

        let huge = json!({"keys": [], "pad": "x".repeat(MAX_IDP_RESPONSE_BYTES)});
        let too_many = json!({"keys": vec![m.idp.jwks()["keys"][0].clone(); MAX_JWKS_KEYS + 1]});
        for jwks in [
            json!({}),
            json!({"keys": []}),
            json!([1, 2]),
            huge,
            too_many,
        ] {
            *m.jwks_override.lock().unwrap() = Some(jwks);
            assert_eq!(code(&verifier(&m), &token).await, "idp_unavailable");
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

    #[test]
    fn validates_configuration() {
        let cfg = |issuer: &str| IssuerConfig::new(issuer, vec![AUD.into()], IdentityKind::Human);
        let new = |issuers: Vec<IssuerConfig>| TokenVerifier::new(issuers, opts());
        for ok in [
            "https://accounts.example.com",
            "https://login.example.com/tenant/v2.0/",
            "http://127.0.0.1:8080",
            "http://127.3.4.5",
            "http://localhost:9000/dev-idp",
            "http://[::1]:8080",
        ] {
            new(vec![cfg(ok)]).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "http://accounts.example.com",
            "http://10.0.0.1",
            "http://[::2]",
            "http://localhost.example.com",
            "ftp://example.com",
            "accounts.example.com",
            "https://example.com/?tenant=1",
            "https://example.com/#x",
            "https://user@example.com",
        ] {
            assert!(
                matches!(new(vec![cfg(bad)]), Err(OidcConfigError::IssuerUrl { .. })),
                "{bad}"
            );
        }
        assert!(matches!(new(vec![]), Err(OidcConfigError::NoIssuers)));
        let a = cfg("https://a.example.com");
        assert!(matches!(
            new(vec![a.clone(), a.clone()]),
            Err(OidcConfigError::DuplicateIssuer(_))
        ));
        assert!(matches!(
            new(vec![IssuerConfig {
                audiences: vec![],
                ..a.clone()
            }]),
            Err(OidcConfigError::NoAudience(_))
        ));
        assert!(matches!(
            new(vec![IssuerConfig {
                audiences: vec![String::new()],
                ..a.clone()
            }]),
            Err(OidcConfigError::EmptyAudience(_))
        ));
        assert!(matches!(
            new(vec![IssuerConfig {
                groups_claim: String::new(),
                ..a.clone()
            }]),
            Err(OidcConfigError::EmptyGroupsClaim(_))
        ));
        let missing = IssuerConfig {
            ca_bundle: Some("/nonexistent/ca.pem".into()),
            ..a.clone()
        };
        assert!(matches!(
            new(vec![missing]),
            Err(OidcConfigError::CaBundle { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        let bad_bundle = IssuerConfig {
            ca_bundle: Some(not_pem),
            ..a
        };
        assert!(matches!(
            new(vec![bad_bundle]),
            Err(OidcConfigError::CaBundle { .. })
        ));
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

    #[test]
    fn only_idp_failures_are_unavailable() {
        let all = [
            TokenError::TooLarge(1),
            TokenError::Malformed("x"),
            TokenError::AlgorithmNotAllowed("none".into()),
            TokenError::HeaderKeyRefused("jku"),
            TokenError::TypeNotAllowed("at+jwt".into()),
            TokenError::IssuerUnknown("x".into()),
            TokenError::KeyUnknown("k".into()),
            TokenError::KeyMismatch,
            TokenError::SignatureInvalid,
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::IssuedInFuture,
            TokenError::ClaimType("exp"),
            TokenError::ClaimMissing("sub"),
            TokenError::AudienceMismatch,
            TokenError::AzpMismatch,
            TokenError::IdpUnavailable("x".into()),
        ];
        let mut codes: Vec<&str> = all.iter().map(TokenError::code).collect();
        assert!(
            codes
                .iter()
                .all(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len(), "codes are distinct");
        let unavailable: Vec<_> = all
            .iter()
            .filter(|e| e.is_unavailable())
            .map(TokenError::code)
            .collect();
        assert_eq!(unavailable, ["idp_unavailable"]);
    }

    #[test]
    fn hostile_text_in_errors_is_escaped_and_bounded() {
        let e = TokenError::IssuerUnknown(printable(&format!("evil\n\x1b[31m{}", "x".repeat(500))));
        let msg = e.to_string();
        assert!(!msg.chars().any(char::is_control), "{msg}");
        assert!(msg.len() < 400);
    }
}
