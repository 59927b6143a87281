//! What the dev IdP holds between requests: authorization codes, refresh
//! tokens and device logins, each short-lived, bounded in number and named
//! by a random token.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand_core::{OsRng, RngCore};

/// Authorization codes are single-use and expire after this.
pub(super) const CODE_TTL: Duration = Duration::from_secs(60);
/// Lifetime of refresh tokens (rotated on every use).
pub(super) const REFRESH_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// Lifetime of a device authorization request.
pub(super) const DEVICE_TTL: Duration = Duration::from_secs(600);
/// Bound on each kind of pending grant; the oldest is dropped beyond it.
const MAX_PENDING: usize = 1024;
pub(super) const DEVICE_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// RFC 8628 §6.1: consonants only, so no words and no 0/O, 1/I confusion.
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

pub(super) struct AuthCode {
    pub(super) user: usize,
    pub(super) redirect_uri: String,
    pub(super) challenge: String,
    pub(super) nonce: Option<String>,
    pub(super) expires: Instant,
}

pub(super) struct RefreshGrant {
    pub(super) user: usize,
    pub(super) expires: Instant,
}

pub(super) struct DeviceGrant {
    pub(super) user_code: String,
    pub(super) approved_for: Option<usize>,
    pub(super) expires: Instant,
}

pub(super) trait Pending {
    fn expires(&self) -> Instant;
}

macro_rules! pending {
    ($($t:ty),*) => {$(impl Pending for $t { fn expires(&self) -> Instant { self.expires } })*};
}
pending!(AuthCode, RefreshGrant, DeviceGrant);

#[derive(Default)]
pub(super) struct Grants {
    pub(super) codes: HashMap<String, AuthCode>,
    pub(super) refresh: HashMap<String, RefreshGrant>,
    pub(super) devices: HashMap<String, DeviceGrant>,
}

/// Inserts after dropping expired entries and, at the bound, the one closest to expiry.
pub(super) fn insert_bounded<V: Pending>(map: &mut HashMap<String, V>, key: String, value: V) {
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

pub(super) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

pub(super) fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// `XXXX-XXXX` from [`USER_CODE_ALPHABET`] (20^8 ≈ 2^34 codes).
pub(super) fn random_user_code() -> String {
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
pub(super) fn normalize_user_code(code: &str) -> String {
    code.chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

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
}
