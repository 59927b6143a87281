//! Each issuer's signing keys: found through its discovery document, cached,
//! fetched again at most once per interval however many requests ask (single
//! flight), refreshed in the background when old, and kept through an IdP
//! outage until `jwks_max_age`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use jsonwebtoken::Algorithm;
use reqwest::Url;
use serde_json::Value;

use super::error::{OidcConfigError, TokenError, printable};
use super::fetch::{self, get_json};
use super::jwk::{CachedKey, VerifyKey, parse_jwk};
use super::options::{IssuerConfig, VerifierOptions, check_fetch_url};

/// A key set with more keys than this is refused (real IdPs publish a handful).
const MAX_JWKS_KEYS: usize = 100;
/// Keys older than this are refreshed in the background (still used meanwhile),
/// so a key the IdP withdrew stops being trusted within this bound.
const SOFT_REFRESH_AFTER: Duration = Duration::from_secs(15 * 60);
/// Fetch interval while an issuer has no usable keys, if shorter than
/// `refresh_min_interval`.
const RETRY_WITHOUT_KEYS: Duration = Duration::from_secs(2);

struct KeySet {
    keys: Vec<CachedKey>,
    fetched_at: Instant,
}

/// Why a refresh is asked for; decides whether an in-between fetch by
/// another task already satisfied it.
pub(super) enum Want<'a> {
    Kid(&'a str),
    Stale,
    Explicit,
}

/// One trusted issuer: its checked configuration, its HTTP client and its
/// cached keys.
pub(super) struct IssuerState {
    pub(super) cfg: IssuerConfig,
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
    pub(super) fn new(cfg: IssuerConfig, opts: &VerifierOptions) -> Result<Self, OidcConfigError> {
        let discovery_url = cfg.check()?;
        let client = fetch::client(&cfg, opts, discovery_url.scheme() == "https")?;

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

    pub(super) fn has_usable_keys(&self) -> bool {
        self.usable_keys().is_some()
    }

    /// The verification key for `kid`, fetching keys when `kid` is unknown
    /// or the cached set is too old.
    pub(super) async fn key_for(
        self: &Arc<Self>,
        kid: &str,
        alg: Algorithm,
    ) -> Result<VerifyKey, TokenError> {
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
    pub(super) async fn refresh(&self, want: Want<'_>) {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::Ordering;

    use ca_core::IdentityKind;
    use serde_json::json;

    use super::*;
    use crate::mint::MintExt as _;
    use crate::oidc::fetch::MAX_IDP_RESPONSE_BYTES;
    use crate::oidc::tests::{AUD, NOW, RSA_PEM, b64, code, mock, opts, verifier, verifier_with};
    use crate::oidc::{TokenVerifier, VerifierOptions};

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
}
