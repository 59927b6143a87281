//! Refusals before authentication: counted per source, limited, summarised.
//!
//! A request whose credential never verified (no token, a malformed or
//! unverifiable one, an unknown issuer, an unknown join token) names nobody,
//! so one audit row each would let an anonymous loop grow the hash chain
//! (and the disk, and every issuance's commit) without bound. Instead each
//! source gets a counter per interval: the first refusal of an interval is
//! logged, the rest only counted, and when the interval ends one summary
//! row per source goes to the audit log — at most [`MAX_SUMMARY_ROWS`] of
//! them, the quieter sources folded into one more row. A source past its
//! limit within the interval is answered 429 with the seconds left. Valid
//! credentials are never refused here, so a NAT shared with a noisy client
//! still gets its certificates. Refusals after authentication are not
//! counted here: each stays one audit row (accountability).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;

use ca_core::audit::AuditEvent;

/// Length of one counting interval.
pub const INTERVAL_SECS: u64 = 60;
/// Sources with their own counter per interval; more are counted together.
pub const MAX_SOURCES: usize = 10_000;
/// Sources with their own summary row per interval; the others share one.
pub const MAX_SUMMARY_ROWS: usize = 100;

/// Counts for one source (or for the folded rest) in one interval.
#[derive(Clone, Debug, Default)]
struct Counts {
    total: u64,
    codes: BTreeMap<&'static str, u64>,
    /// Sources folded into this count one by one (for the "other sources"
    /// row; refusals of sources beyond [`MAX_SOURCES`] add none).
    sources: u64,
}

impl Counts {
    fn add(&mut self, code: &'static str, n: u64) {
        self.total += n;
        *self.codes.entry(code).or_default() += n;
    }

    fn merge(&mut self, other: &Counts) {
        for (code, n) in &other.codes {
            self.add(code, *n);
        }
        self.sources += other.sources.max(1);
    }
}

#[derive(Default)]
struct Interval {
    /// `now / INTERVAL_SECS` of the interval.
    index: u64,
    sources: HashMap<String, Counts>,
    /// Sources beyond [`MAX_SOURCES`].
    rest: Counts,
}

impl Interval {
    fn is_empty(&self) -> bool {
        self.sources.is_empty() && self.rest.total == 0
    }

    /// Fold `other` (an interval not yet written) into this one, which
    /// then ends when the later of the two does.
    fn absorb(&mut self, other: Interval) {
        self.index = self.index.max(other.index);
        for (source, counts) in other.sources {
            if let Some(mine) = self.sources.get_mut(&source) {
                for (code, n) in &counts.codes {
                    mine.add(code, *n);
                }
            } else if self.sources.len() < MAX_SOURCES {
                self.sources.insert(source, counts);
            } else {
                self.rest.merge(&counts);
            }
        }
        let rest = other.rest;
        for (code, n) in &rest.codes {
            self.rest.add(code, *n);
        }
        self.rest.sources += rest.sources;
    }
}

struct State {
    current: Interval,
    /// Ended intervals whose summary rows are not written yet (several are
    /// folded into one if the audit log is down for a while).
    ended: Option<(u64, Interval)>,
}

/// What [`Unauthenticated::refused`] says about one refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Answer as usual (401, ...). `first`: the source's first refusal of
    /// this interval, worth a log line.
    Answer { first: bool },
    /// The source is over its limit: answer 429, retry after these seconds.
    Limited { retry_after_secs: u64 },
}

/// The per-source counters. One per process.
pub struct Unauthenticated {
    per_interval: u64,
    state: Mutex<State>,
}

impl Unauthenticated {
    /// `per_minute` refusals per source and interval are answered as
    /// usual; further ones get 429 until the interval ends.
    pub fn new(per_minute: u32) -> Self {
        Unauthenticated {
            per_interval: u64::from(per_minute.max(1)),
            state: Mutex::new(State {
                current: Interval::default(),
                ended: None,
            }),
        }
    }

    /// Count one refusal before authentication from `source_ip`, with its
    /// stable error code, at `now` (Unix seconds).
    pub fn refused(&self, source_ip: &str, code: &str, now: u64) -> Verdict {
        let code = static_code(code);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        roll(&mut state, now / INTERVAL_SECS);
        let index = state.current.index;
        let source = source_key(source_ip);
        let current = &mut state.current;
        if !current.sources.contains_key(&source) && current.sources.len() >= MAX_SOURCES {
            // Too many sources this interval: count, limit nobody by it.
            current.rest.add(code, 1);
            return Verdict::Answer { first: false };
        }
        let counts = current.sources.entry(source).or_default();
        counts.add(code, 1);
        if counts.total > self.per_interval {
            let end = (index + 1) * INTERVAL_SECS;
            return Verdict::Limited {
                retry_after_secs: end.saturating_sub(now).max(1),
            };
        }
        Verdict::Answer {
            first: counts.total == 1,
        }
    }

    /// The summary rows of every interval that ended by `now` (all counts
    /// when `everything`, e.g. at shutdown), taken out: the caller appends
    /// them. At most `MAX_SUMMARY_ROWS + 1` rows.
    pub fn take_summaries(&self, now: u64, everything: bool) -> Vec<AuditEvent> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        roll(&mut state, now / INTERVAL_SECS);
        let mut taken = state.ended.take();
        if everything && !state.current.is_empty() {
            let current = std::mem::take(&mut state.current);
            taken = Some(match taken {
                Some((from, mut ended)) => {
                    ended.absorb(current);
                    (from, ended)
                }
                None => (current.index, current),
            });
        }
        drop(state);
        let Some((from_index, interval)) = taken else {
            return Vec::new();
        };
        summaries(from_index, interval, now)
    }

    /// Put back rows that could not be written, so they are tried again.
    pub fn restore(&self, rows: Vec<AuditEvent>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut back = Interval::default();
        let mut from = u64::MAX;
        for row in rows {
            let Some(details) = row.details.as_ref() else {
                continue;
            };
            from = from.min(details["from"].as_u64().unwrap_or(0) / INTERVAL_SECS);
            let to = details["to"].as_u64().unwrap_or(0);
            back.index = back.index.max(to.saturating_sub(1) / INTERVAL_SECS);
            let mut counts = Counts {
                sources: details["sources"].as_u64().unwrap_or(1),
                ..Counts::default()
            };
            if let Some(codes) = details["codes"].as_object() {
                for (code, n) in codes {
                    counts.add(static_code(code), n.as_u64().unwrap_or(0));
                }
            }
            match row.source_ip {
                Some(s) if details["sources"].is_null() => {
                    back.sources.insert(s, counts);
                }
                _ => back.rest.merge(&counts),
            }
        }
        if back.is_empty() {
            return;
        }
        state.ended = Some(match state.ended.take() {
            Some((f, mut ended)) => {
                ended.absorb(back);
                (f.min(from), ended)
            }
            None => (from, back),
        });
    }
}

/// Close the current interval if `index` is a later one.
fn roll(state: &mut State, index: u64) {
    // Only forward: a request that read the clock just before the interval
    // ended may get here after one that rolled it. Rolling back would start
    // every source's count again (and again on the next roll forward), so
    // a flood straddling the boundary would escape its limit.
    if index <= state.current.index {
        return;
    }
    let ended = std::mem::replace(
        &mut state.current,
        Interval {
            index,
            ..Interval::default()
        },
    );
    if ended.is_empty() {
        return;
    }
    state.ended = Some(match state.ended.take() {
        Some((from, mut earlier)) => {
            earlier.absorb(ended);
            (from, earlier)
        }
        None => (ended.index, ended),
    });
}

fn summaries(from_index: u64, interval: Interval, now: u64) -> Vec<AuditEvent> {
    let from = from_index * INTERVAL_SECS;
    let to = ((interval.index + 1) * INTERVAL_SECS).min(now.max(from));
    let mut sources: Vec<(String, Counts)> = interval.sources.into_iter().collect();
    // The loudest sources get rows of their own.
    sources.sort_by(|a, b| b.1.total.cmp(&a.1.total).then_with(|| a.0.cmp(&b.0)));
    let mut rest = interval.rest;
    let mut rows = Vec::new();
    for (i, (source, counts)) in sources.into_iter().enumerate() {
        if i < MAX_SUMMARY_ROWS {
            rows.push(summary(Some(source), &counts, None, from, to));
        } else {
            rest.merge(&counts);
        }
    }
    if rest.total > 0 {
        rows.push(summary(None, &rest, Some(rest.sources), from, to));
    }
    rows
}

fn summary(
    source: Option<String>,
    counts: &Counts,
    folded_sources: Option<u64>,
    from: u64,
    to: u64,
) -> AuditEvent {
    let codes: Vec<String> = counts
        .codes
        .iter()
        .map(|(code, n)| format!("{code} x{n}"))
        .collect();
    let who = match (&source, folded_sources) {
        (Some(s), _) => format!("from {s}"),
        (None, Some(n)) => format!("from {n} or more other sources"),
        (None, None) => "from other sources".into(),
    };
    let top = counts
        .codes
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(c, _)| (*c).to_owned());
    let mut details = serde_json::json!({
        "count": counts.total,
        "codes": counts.codes,
        "from": from,
        "to": to,
    });
    if let Some(n) = folded_sources {
        details["sources"] = n.into();
    }
    AuditEvent {
        time: to,
        action: "unauthenticated".into(),
        outcome: "denied".into(),
        code: top,
        source_ip: source,
        decision_reasons: vec![format!(
            "{} requests refused before authentication {who} between {from} and {to}: {}",
            counts.total,
            codes.join(", ")
        )],
        details: Some(details),
        ..AuditEvent::default()
    }
}

/// Who is counted together: an IPv4 address, or an IPv6 /64 (one host
/// usually holds a whole /64, and would otherwise get 2^64 counters).
fn source_key(source_ip: &str) -> String {
    match source_ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{net}/64")
            }
        },
        // Not an address ("unknown" in-process): one bucket, bounded text.
        Err(_) => ca_core::escape_control(&source_ip.chars().take(64).collect::<String>()),
    }
}

/// The stable code as a `&'static str` (counted per code without an
/// allocation per refusal); a code not listed counts as `other`.
fn static_code(code: &str) -> &'static str {
    const KNOWN: [&str; 25] = [
        "token_missing",
        "token_too_large",
        "token_malformed",
        "token_algorithm_not_allowed",
        "token_header_key_refused",
        "token_type_not_allowed",
        "token_issuer_unknown",
        "token_key_unknown",
        "token_key_mismatch",
        "token_signature_invalid",
        "token_expired",
        "token_not_yet_valid",
        "token_issued_in_future",
        "token_claim_type",
        "token_claim_missing",
        "token_audience_mismatch",
        "token_azp_mismatch",
        "idp_unavailable",
        "join_token_invalid",
        "invalid_request",
        "challenge_invalid",
        "invalid_public_key",
        "invalid_hostname",
        "renewal_certificate_invalid",
        "renewal_proof_invalid",
    ];
    KNOWN
        .iter()
        .find(|k| **k == code)
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_request_from_the_last_interval_does_not_reset_the_limit() {
        let u = Unauthenticated::new(2);
        let limited = |v| matches!(v, Verdict::Limited { .. });
        // The interval starting at 120 is under way and the source is over.
        for _ in 0..2 {
            assert!(!limited(u.refused("192.0.2.1", "token_malformed", 120)));
        }
        assert!(limited(u.refused("192.0.2.1", "token_malformed", 120)));
        // Requests that read the clock at 119 arrive now, interleaved with
        // current ones: they count in the current interval, nobody's count
        // starts again.
        for t in [119, 120, 119, 121, 119] {
            assert!(limited(u.refused("192.0.2.1", "token_malformed", t)), "{t}");
        }
        // The next interval starts the count again.
        assert!(!limited(u.refused("192.0.2.1", "token_malformed", 180)));
    }

    #[test]
    fn a_source_over_its_limit_is_told_when_to_retry() {
        let u = Unauthenticated::new(3);
        let t = 600; // start of an interval
        assert_eq!(
            u.refused("192.0.2.1", "token_malformed", t),
            Verdict::Answer { first: true }
        );
        assert_eq!(
            u.refused("192.0.2.1", "token_missing", t + 1),
            Verdict::Answer { first: false }
        );
        u.refused("192.0.2.1", "token_missing", t + 1);
        assert_eq!(
            u.refused("192.0.2.1", "token_missing", t + 20),
            Verdict::Limited {
                retry_after_secs: 40
            }
        );
        assert_eq!(
            u.refused("192.0.2.2", "token_missing", t + 20),
            Verdict::Answer { first: true },
            "another source has its own count"
        );
        assert_eq!(
            u.refused("192.0.2.1", "token_missing", t + 60),
            Verdict::Answer { first: true },
            "a new interval starts afresh"
        );
    }

    #[test]
    fn one_row_per_source_and_interval_and_a_bounded_number_of_rows() {
        let u = Unauthenticated::new(1_000_000);
        for i in 0..(MAX_SUMMARY_ROWS as u32 + 50) {
            for _ in 0..=i {
                u.refused(&format!("198.51.100.{}", i % 250), "token_malformed", 600);
            }
            u.refused(&format!("2001:db8:0:{i:x}::1"), "token_missing", 610);
            u.refused(&format!("2001:db8:0:{i:x}::2"), "token_missing", 611);
        }
        assert!(
            u.take_summaries(659, false).is_empty(),
            "the interval is not over"
        );
        let rows = u.take_summaries(660, false);
        assert_eq!(rows.len(), MAX_SUMMARY_ROWS + 1);
        let total: u64 = rows
            .iter()
            .map(|r| r.details.as_ref().unwrap()["count"].as_u64().unwrap())
            .sum();
        let expected: u64 =
            (1..=(MAX_SUMMARY_ROWS as u64 + 50)).sum::<u64>() + 2 * (MAX_SUMMARY_ROWS as u64 + 50);
        assert_eq!(total, expected, "nothing is lost, only folded");
        assert_eq!(rows[0].source_ip.as_deref(), Some("198.51.100.149"));
        assert!(rows.iter().all(|r| r.action == "unauthenticated"));
        let last = rows.last().unwrap();
        assert_eq!(last.source_ip, None);
        assert!(last.details.as_ref().unwrap()["sources"].as_u64().unwrap() > 0);
        assert_eq!(
            last.details.as_ref().unwrap()["sources"],
            50 + MAX_SUMMARY_ROWS as u64 + 50,
            "the quieter IPv4 sources and one per IPv6 /64"
        );
        assert!(u.take_summaries(700, false).is_empty(), "taken once");
    }

    #[test]
    fn sources_are_addresses_or_ipv6_networks() {
        assert_eq!(source_key("192.0.2.7"), "192.0.2.7");
        assert_eq!(source_key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(source_key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(source_key("2001:db8:1:2::9"), "2001:db8:1:2::/64");
        assert_eq!(source_key("unknown"), "unknown");
        assert!(!source_key("\u{1b}[31m").contains('\u{1b}'), "escaped");
    }

    #[test]
    fn rows_that_could_not_be_written_come_back() {
        let u = Unauthenticated::new(10);
        u.refused("192.0.2.1", "token_malformed", 600);
        u.refused("192.0.2.1", "token_malformed", 601);
        let rows = u.take_summaries(700, false);
        assert_eq!(rows.len(), 1);
        u.restore(rows);
        u.refused("192.0.2.1", "token_missing", 700);
        let rows = u.take_summaries(800, false);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].details.as_ref().unwrap()["count"], 3);
        assert_eq!(rows[0].details.as_ref().unwrap()["from"], 600);
    }

    #[test]
    fn everything_is_taken_at_shutdown() {
        let u = Unauthenticated::new(10);
        u.refused("unknown", "token_missing", 600);
        assert!(u.take_summaries(601, false).is_empty());
        let rows = u.take_summaries(601, true);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].source_ip.as_deref(), Some("unknown"));
    }
}
