//! Human durations: parsing `90s`, `15m`, `1h30m` and printing time left and expiry.

use std::time::Duration;

use chrono::{Local, TimeZone as _};

/// Parse a duration such as `90` (seconds), `90s`, `15m`, `2h`, `1d` or `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let bad = || format!("{text:?} is not a duration; use e.g. 90s, 15m, 1h30m");
    if s.is_empty() {
        return Err(bad());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map(Duration::from_secs).map_err(|_| bad());
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "s" | "sec" => 1,
            "m" | "min" => 60,
            "h" => 3600,
            "d" => 86_400,
            "" => return Err(bad()),
            other => {
                return Err(format!(
                    "unknown unit {other:?} in {text:?}; use s, m, h or d"
                ));
            }
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{text:?} is too long"))?;
    }
    Ok(Duration::from_secs(total))
}

/// `29 min left`, `less than a minute left`, `expired 3 min ago`.
pub fn time_left(secs: i64) -> String {
    match secs {
        s if s <= 0 => match -s / 60 {
            0 => "expired just now".to_owned(),
            m => format!("expired {m} min ago"),
        },
        s if s < 60 => "less than a minute left".to_owned(),
        s => format!("{} min left", s / 60),
    }
}

/// A Unix time as local wall-clock time: `14:05`, or `2026-03-01 14:05` when not today.
pub fn local_time(unix: u64, now: u64) -> String {
    let at = |t: u64| {
        i64::try_from(t)
            .ok()
            .and_then(|t| Local.timestamp_opt(t, 0).single())
    };
    match (at(unix), at(now)) {
        (Some(t), Some(n)) if t.date_naive() == n.date_naive() => t.format("%H:%M").to_string(),
        (Some(t), _) => t.format("%Y-%m-%d %H:%M").to_string(),
        (None, _) => format!("@{unix}"),
    }
}

/// Seconds since the Unix epoch, by the local clock.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        let secs = |s: &str| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(secs("90"), Ok(90));
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("15m"), Ok(900));
        assert_eq!(secs(" 2h "), Ok(7200));
        assert_eq!(secs("1d"), Ok(86_400));
        assert_eq!(secs("1h30m"), Ok(5400));
        assert_eq!(secs("5min"), Ok(300));
        assert_eq!(secs("0s"), Ok(0));
    }

    #[test]
    fn refuses_bad_durations() {
        for bad in ["", "m", "15x", "1.5h", "h1", "-5m", "30m5"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            parse_duration("15x").unwrap_err(),
            "unknown unit \"x\" in \"15x\"; use s, m, h or d"
        );
        assert_eq!(
            parse_duration("soon").unwrap_err(),
            "\"soon\" is not a duration; use e.g. 90s, 15m, 1h30m"
        );
        assert!(
            parse_duration("99999999999999999d")
                .unwrap_err()
                .contains("too long")
        );
    }

    #[test]
    fn formats_time_left() {
        assert_eq!(time_left(1799), "29 min left");
        assert_eq!(time_left(59), "less than a minute left");
        assert_eq!(time_left(0), "expired just now");
        assert_eq!(time_left(-125), "expired 2 min ago");
    }

    #[test]
    fn formats_local_time() {
        let now = 1_800_000_000;
        assert_eq!(local_time(now + 60, now).len(), "14:05".len());
        assert_eq!(
            local_time(now + 10 * 86_400, now).len(),
            "2027-01-15 08:00".len()
        );
    }
}
