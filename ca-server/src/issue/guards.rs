//! The small in-memory guards every issuance passes: one token one
//! certificate (`ReplayGuard`), the per-identity rate limit, and the serial
//! allocator; and the amortised pruning they share.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::audit::{SERIAL_BLOCK_BITS, UsedToken};

/// When the in-memory guards below drop stale entries. A prune is a full
/// scan, so it runs when a map outgrows a threshold that then doubles: with
/// a map full of live entries (tokens not yet expired at 2,000 requests/s),
/// pruning on every insert past a fixed size would scan the whole map under
/// the lock on every request.
struct Pruning {
    floor: usize,
    at: AtomicUsize,
}

impl Pruning {
    const FLOOR: usize = 100_000;

    fn new(floor: usize) -> Self {
        Pruning {
            floor,
            at: AtomicUsize::new(floor),
        }
    }

    /// Called with the map's lock held.
    fn due(&self, len: usize) -> bool {
        len > self.at.load(Ordering::Relaxed)
    }

    /// After a prune left `len` entries.
    fn done(&self, len: usize) {
        self.at
            .store(len.saturating_mul(2).max(self.floor), Ordering::Relaxed);
    }
}

/// One ID token, one certificate. In memory for speed, seeded at start from
/// the `used_tokens` rows the audit store commits with each issuance. Keyed
/// by [`crate::oidc::token_hash`], a digest of the signed content, so a
/// token re-spelled with another valid signature is the same token.
pub(super) struct ReplayGuard {
    /// Token digest → the token's expiry. The 32 bytes rather than their hex
    /// string: ~half the memory of a guard that holds every live token (one
    /// entry per certificate for the token lifetime plus 120 s), and no
    /// allocation per request.
    seen: Mutex<HashMap<[u8; 32], u64>>,
    pruning: Pruning,
    /// Until when seeded rows may name tokens by their whole string (as
    /// versions before the content key wrote them): while any can still be
    /// presented, a token is also looked up under that older name.
    legacy_until: AtomicU64,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard {
            seen: Mutex::default(),
            pruning: Pruning::new(Pruning::FLOOR),
            legacy_until: AtomicU64::new(0),
        }
    }
}

impl ReplayGuard {
    pub(super) fn seed(&self, tokens: Vec<UsedToken>) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut until = 0;
        for t in tokens {
            until = until.max(t.expires_at.saturating_add(120));
            seen.insert(replay_key(&t.token_hash), t.expires_at);
        }
        self.legacy_until.fetch_max(until, Ordering::Relaxed);
    }

    /// True if the token was spent under its older name (the digest of the
    /// whole string) by a version before the content key. Costs one more
    /// digest only until the last seeded token expires.
    pub(super) fn spent_before_upgrade(&self, token: &str, now: u64) -> bool {
        if now > self.legacy_until.load(Ordering::Relaxed) {
            return false;
        }
        let key = replay_key(&crate::oidc::legacy_token_hash(token));
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&key)
    }

    /// True if the token was not seen before (and is now held).
    pub(super) fn claim(&self, hash: &str, exp: u64, now: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if self.pruning.due(seen.len()) {
            // Expired tokens cannot be replayed anyway: the verifier rejects them.
            seen.retain(|_, e| *e + 120 > now);
            self.pruning.done(seen.len());
        }
        match seen.entry(replay_key(hash)) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(exp);
                true
            }
        }
    }

    pub(super) fn release(&self, hash: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&replay_key(hash));
    }
}

/// The guard's key for a token hash: the digest itself when it is the hex
/// SHA-256 that [`crate::oidc::token_hash`] makes, else a digest of the
/// string (other spent-token names, e.g. a host challenge's).
fn replay_key(hash: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    if hash.len() == 64 && hex::decode_to_slice(hash, &mut key).is_ok() {
        return key;
    }
    <sha2::Sha256 as sha2::Digest>::digest(hash.as_bytes()).into()
}

/// Releases a claimed token unless a certificate was issued for it.
pub(super) struct ReplayClaim<'a> {
    pub(super) guard: &'a ReplayGuard,
    pub(super) hash: &'a str,
    pub(super) keep: bool,
}

impl ReplayClaim<'_> {
    pub(super) fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for ReplayClaim<'_> {
    fn drop(&mut self) {
        if !self.keep {
            self.guard.release(self.hash);
        }
    }
}

/// Per-identity token buckets.
pub(super) struct RateLimiter {
    per_minute: u32,
    burst: u32,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    pruning: Pruning,
}

impl RateLimiter {
    pub(super) fn new(per_minute: u32, burst: u32) -> Self {
        RateLimiter {
            per_minute,
            burst,
            buckets: Mutex::new(HashMap::new()),
            pruning: Pruning::new(Pruning::FLOOR),
        }
    }

    /// Ok, or the seconds to wait.
    pub(super) fn check(&self, key: &str) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let rate = f64::from(self.per_minute) / 60.0;
        let burst = f64::from(self.burst);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if self.pruning.due(buckets.len()) {
            buckets.retain(|_, (_, t)| now.duration_since(*t) < Duration::from_secs(600));
            self.pruning.done(buckets.len());
        }
        let (tokens, last) = buckets.entry(key.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

/// Unique, non-zero serials without a database round trip per
/// certificate: the process's block number (allocated in the database at
/// start, so unique across restarts and replicas) in the high bits, then
/// counting up in the low [`SERIAL_BLOCK_BITS`].
pub(super) struct SerialAllocator {
    next: AtomicU64,
    end: u64,
}

impl SerialAllocator {
    pub(super) fn new(block: u64) -> Self {
        let start = block << SERIAL_BLOCK_BITS;
        SerialAllocator {
            next: AtomicU64::new(start + 1),
            end: start + (1 << SERIAL_BLOCK_BITS),
        }
    }

    /// `None` once the block is used up (2^40 certificates: restart to get
    /// a new block).
    pub(super) fn next(&self) -> Option<u64> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (n < self.end).then_some(n)
    }
}

/// Who holds a serial block: host name and process id, for operators.
pub(super) fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    format!("{host} pid {}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_guard_claims_once_and_releases() {
        let g = ReplayGuard::default();
        assert!(g.claim("a", 100, 0));
        assert!(!g.claim("a", 100, 0));
        g.release("a");
        assert!(g.claim("a", 100, 0));
        assert!(g.claim("b", 1, 0));
        drop(ReplayClaim {
            guard: &g,
            hash: "b",
            keep: false,
        });
        assert!(g.claim("b", 1, 0), "a dropped claim releases the token");
        ReplayClaim {
            guard: &g,
            hash: "b",
            keep: false,
        }
        .keep();
        assert!(!g.claim("b", 1, 0), "a kept claim stays spent");
    }

    #[test]
    fn replay_keys_are_the_digest_bytes() {
        let h = crate::oidc::token_hash("header.payload.signature");
        assert_eq!(hex::encode(replay_key(&h)), h);
        assert_ne!(
            replay_key("host-challenge:ab"),
            replay_key("host-challenge:ac")
        );
        let g = ReplayGuard::default();
        assert!(g.claim(&h, 100, 0));
        assert!(!g.claim(&h, 100, 0), "the same token twice");
        g.seed(vec![UsedToken {
            token_hash: crate::oidc::token_hash("other"),
            expires_at: 100,
        }]);
        assert!(
            !g.claim(&crate::oidc::token_hash("other"), 100, 0),
            "a token spent before a restart"
        );
    }

    #[test]
    fn tokens_spent_under_the_older_whole_string_name_stay_spent() {
        let token = "header.payload.signature";
        let g = ReplayGuard::default();
        assert!(!g.spent_before_upgrade(token, 0), "nothing seeded");
        g.seed(vec![UsedToken {
            token_hash: crate::oidc::legacy_token_hash(token),
            expires_at: 1_000,
        }]);
        assert!(g.spent_before_upgrade(token, 1_000));
        assert!(
            !g.spent_before_upgrade("header.payload.other", 1_000),
            "another token"
        );
        assert!(
            !g.spent_before_upgrade(token, 1_121),
            "no older name can be live once every seeded token expired"
        );
        assert_ne!(
            crate::oidc::token_hash(token),
            crate::oidc::legacy_token_hash(token)
        );
        assert_eq!(
            crate::oidc::token_hash(token),
            crate::oidc::token_hash("header.payload.another-signature"),
            "the content key ignores the signature"
        );
    }

    #[test]
    fn pruning_waits_for_the_map_to_double() {
        let p = Pruning::new(4);
        assert!(!p.due(4));
        assert!(p.due(5));
        // Nothing could be dropped: the next prune waits for twice as many.
        p.done(5);
        assert!(!p.due(10));
        assert!(p.due(11));
        // Most were dropped: back to the floor.
        p.done(1);
        assert!(p.due(5));
    }

    #[test]
    fn replay_guard_prunes_expired_tokens_amortized() {
        let g = ReplayGuard {
            pruning: Pruning::new(4),
            ..ReplayGuard::default()
        };
        let len = |g: &ReplayGuard| g.seen.lock().unwrap().len();
        // Live tokens are kept however many there are.
        for i in 0..20 {
            assert!(g.claim(&format!("live{i}"), 1_000, 0));
        }
        assert_eq!(len(&g), 20);
        assert!(!g.claim("live3", 1_000, 0), "still spent");
        // Once expired (plus the grace), they go at the next prune.
        for i in 0..40 {
            assert!(g.claim(&format!("new{i}"), 5_000, 2_000));
        }
        assert_eq!(len(&g), 40, "the 20 expired tokens were pruned");
        assert!(
            !g.claim("new0", 5_000, 2_000),
            "live tokens survive a prune"
        );
    }

    #[test]
    fn rate_limiter_refuses_past_burst() {
        let r = RateLimiter::new(60, 3);
        assert!(r.check("x").is_ok());
        assert!(r.check("x").is_ok());
        assert!(r.check("x").is_ok());
        assert!(r.check("x").is_err());
        assert!(r.check("y").is_ok(), "other identities unaffected");
        assert!(RateLimiter::new(0, 1).check("x").is_ok());
    }

    #[test]
    fn serials_are_unique_nonzero_and_stay_in_their_block() {
        let s = SerialAllocator::new(3);
        let a = s.next().unwrap();
        let b = s.next().unwrap();
        assert!(a > 0 && b > a);
        assert_eq!(a >> SERIAL_BLOCK_BITS, 3);
        // Block 0 never hands out serial 0.
        assert_eq!(SerialAllocator::new(0).next(), Some(1));
        // The end of a block is the end: never the next block's serials.
        let last = SerialAllocator {
            next: AtomicU64::new((4 << SERIAL_BLOCK_BITS) - 1),
            end: 4 << SERIAL_BLOCK_BITS,
        };
        assert_eq!(last.next(), Some((4 << SERIAL_BLOCK_BITS) - 1));
        assert_eq!(last.next(), None);
    }
}
