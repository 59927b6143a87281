//! The audit pages' query strings parsed into a typed search (the store's
//! `Filter` and a cursor), or a precise complaint about the field that is
//! wrong; and the search written back into links.

use crate::audit::{Cursor, Filter};

/// Longest person (subject or email) accepted.
const MAX_PERSON: usize = 256;

/// A parsed `GET /ui/audit…` query.
#[derive(Clone, Debug, Default)]
pub(super) struct AuditQuery {
    pub(super) filter: Filter,
    pub(super) cursor: Option<Cursor>,
    /// The fields as typed, to show them again in the form.
    pub(super) shown: Shown,
    /// `format=` of an export.
    pub(super) format: Option<Format>,
    /// `window=` of the charts.
    pub(super) week: bool,
}

/// The filter fields as the person typed them (trimmed).
#[derive(Clone, Debug, Default)]
pub(super) struct Shown {
    pub(super) from: String,
    pub(super) to: String,
    pub(super) person: String,
    pub(super) kind: String,
    pub(super) outcome: String,
    pub(super) serial: String,
}

/// An export's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    Jsonl,
    Csv,
}

/// A field that does not parse: which, and what to type instead.
#[derive(Debug)]
pub(super) struct BadField {
    pub(super) field: &'static str,
    pub(super) message: String,
}

impl AuditQuery {
    /// Parse `query` (absent, empty and blank fields mean "any").
    pub(super) fn parse(query: Option<&str>) -> Result<AuditQuery, BadField> {
        let mut q = AuditQuery::default();
        let Some(query) = query else {
            return Ok(q);
        };
        let Ok(mut url) = reqwest::Url::parse("http://query.invalid/") else {
            return Ok(q);
        };
        url.set_query(Some(query));
        for (k, v) in url.query_pairs() {
            let v = v.trim();
            if v.is_empty() {
                continue;
            }
            match k.as_ref() {
                "from" => {
                    q.filter.since = Some(time("from", v)?);
                    v.clone_into(&mut q.shown.from);
                }
                "to" => {
                    q.filter.until = Some(time("to", v)?);
                    v.clone_into(&mut q.shown.to);
                }
                "person" => {
                    if v.len() > MAX_PERSON || v.chars().any(char::is_control) {
                        return Err(bad(
                            "person",
                            format!(
                                "Type a subject or an email address of at most {MAX_PERSON} characters."
                            ),
                        ));
                    }
                    // An email is matched against the subject too (some
                    // providers use it as the subject).
                    if v.contains('@') {
                        q.filter.subject_or_email = Some(v.to_owned());
                    } else {
                        q.filter.subject = Some(v.to_owned());
                    }
                    v.clone_into(&mut q.shown.person);
                }
                "kind" => {
                    q.filter.action = Some(word("kind", v, "user_cert or elevation_request")?);
                    v.clone_into(&mut q.shown.kind);
                }
                "outcome" => {
                    q.filter.outcome = Some(word("outcome", v, "issued, denied or failed")?);
                    v.clone_into(&mut q.shown.outcome);
                }
                "serial" => {
                    let n: u64 = v.parse().map_err(|_| {
                        bad(
                            "serial",
                            "A serial is the certificate's decimal number, e.g. 1099511627777.",
                        )
                    })?;
                    q.filter.serial = Some(n.to_string());
                    v.clone_into(&mut q.shown.serial);
                }
                "before" | "after" => {
                    let n: u64 = v.parse().map_err(|_| {
                        bad(
                            "page",
                            "The page link is damaged; start again from the first page.",
                        )
                    })?;
                    if q.cursor.is_some() {
                        return Err(bad(
                            "page",
                            "A page link has either before= or after=, not both; start again from the first page.",
                        ));
                    }
                    q.cursor = Some(if k == "before" {
                        Cursor::Older(n)
                    } else {
                        Cursor::Newer(n)
                    });
                }
                "format" => {
                    q.format = Some(match v {
                        "jsonl" => Format::Jsonl,
                        "csv" => Format::Csv,
                        _ => return Err(bad("format", "Choose format=jsonl or format=csv.")),
                    });
                }
                "window" => {
                    q.week = match v {
                        "day" => false,
                        "week" => true,
                        _ => return Err(bad("window", "Choose the last day or the last week.")),
                    };
                }
                // Other parameters (a browser's, a bookmark's) change nothing.
                _ => {}
            }
        }
        if let (Some(a), Some(b)) = (q.filter.since, q.filter.until)
            && a >= b
        {
            return Err(bad(
                "to",
                "The end of the time range must be after its start.",
            ));
        }
        Ok(q)
    }

    /// The filters as a query string (no cursor), to build links from.
    pub(super) fn filters(&self) -> String {
        let s = &self.shown;
        let mut out = reqwest::Url::parse("http://query.invalid/").ok();
        if let Some(url) = &mut out {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in [
                ("from", &s.from),
                ("to", &s.to),
                ("person", &s.person),
                ("kind", &s.kind),
                ("outcome", &s.outcome),
                ("serial", &s.serial),
            ] {
                if !v.is_empty() {
                    pairs.append_pair(k, v);
                }
            }
        }
        out.and_then(|u| u.query().map(str::to_owned))
            .unwrap_or_default()
    }

    /// A link to this search at `cursor`.
    pub(super) fn link(&self, path: &str, extra: &str) -> String {
        let f = self.filters();
        match (f.is_empty(), extra.is_empty()) {
            (true, true) => path.to_owned(),
            (true, false) => format!("{path}?{extra}"),
            (false, true) => format!("{path}?{f}"),
            (false, false) => format!("{path}?{f}&{extra}"),
        }
    }
}

fn bad(field: &'static str, message: impl Into<String>) -> BadField {
    BadField {
        field,
        message: message.into(),
    }
}

/// A kind or outcome: lowercase letters, digits and `_`.
fn word(field: &'static str, v: &str, example: &str) -> Result<String, BadField> {
    let ok = (1..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(v.to_owned())
    } else {
        Err(bad(
            field,
            format!(
                "Use one of the names the log records, in lowercase letters, digits and _ (e.g. {example})."
            ),
        ))
    }
}

/// `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM` (what a `datetime-local` field sends)
/// or with `:SS`, read as UTC; or Unix seconds.
fn time(field: &'static str, v: &str) -> Result<u64, BadField> {
    let wrong = || {
        bad(
            field,
            "Type a UTC date and time as 2026-12-06 or 2026-12-06T14:30 (or Unix seconds).",
        )
    };
    if v.bytes().all(|b| b.is_ascii_digit()) {
        return v
            .parse::<u64>()
            .ok()
            .filter(|&t| t < 253_402_300_800)
            .ok_or_else(wrong);
    }
    let (date, clock) = v.split_once(['T', ' ']).unwrap_or((v, "00:00"));
    let num = |s: &str, len: usize| -> Option<u64> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let mut d = date.split('-');
    let (Some(y), Some(m), Some(day), None) = (d.next(), d.next(), d.next(), d.next()) else {
        return Err(wrong());
    };
    let (y, m, day) = (
        num(y, 4).ok_or_else(wrong)?,
        num(m, 2).ok_or_else(wrong)?,
        num(day, 2).ok_or_else(wrong)?,
    );
    let mut c = clock.trim_end_matches('Z').split(':');
    let (h, min) = (
        c.next().and_then(|s| num(s, 2)).ok_or_else(wrong)?,
        c.next().and_then(|s| num(s, 2)).ok_or_else(wrong)?,
    );
    let sec = match c.next() {
        Some(s) => num(s, 2).ok_or_else(wrong)?,
        None => 0,
    };
    if c.next().is_some()
        || !(1970..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || day < 1
        || day > days_in_month(y, m)
        || h > 23
        || min > 59
        || sec > 59
    {
        return Err(wrong());
    }
    Ok(days_from_civil(y, m, day) * 86_400 + h * 3600 + min * 60 + sec)
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's days_from_civil, for dates from 1970.
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::audit::format_time;

    #[test]
    fn times_round_trip_through_the_log_format() {
        for t in [0, 951_782_400, 1_700_000_000, 1_733_443_200, 4_102_444_799] {
            let shown = format_time(t);
            assert_eq!(
                time("from", shown.trim_end_matches('Z')).unwrap(),
                t,
                "{shown}"
            );
        }
        assert_eq!(time("from", "2026-12-06").unwrap(), 1_796_515_200);
        assert_eq!(time("from", "2026-12-06T14:30").unwrap(), 1_796_567_400);
        assert_eq!(time("from", "1700000000").unwrap(), 1_700_000_000);
        for bad in [
            "2026-13-01",
            "2026-02-30",
            "2025-02-29",
            "26-12-06",
            "2026-12-06T24:00",
            "yesterday",
            "2026-12-06T14:30:00:00",
            "99999999999999999999",
        ] {
            assert!(time("from", bad).is_err(), "{bad}");
        }
        assert!(time("from", "2024-02-29").is_ok());
    }

    #[test]
    fn a_query_becomes_a_typed_filter_or_names_the_wrong_field() {
        let q = AuditQuery::parse(Some(
            "person=alice%40example.com&kind=user_cert&outcome=denied&serial=42&before=100&from=&x=1",
        ))
        .unwrap();
        assert_eq!(
            q.filter.subject_or_email.as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(q.filter.subject, None);
        assert_eq!(q.filter.action.as_deref(), Some("user_cert"));
        assert_eq!(q.filter.outcome.as_deref(), Some("denied"));
        assert_eq!(q.filter.serial.as_deref(), Some("42"));
        assert_eq!(q.cursor, Some(Cursor::Older(100)));
        assert_eq!(
            q.link("/ui/audit", "after=7"),
            "/ui/audit?person=alice%40example.com&kind=user_cert&outcome=denied&serial=42&after=7"
        );
        let q = AuditQuery::parse(Some("person=user-1")).unwrap();
        assert_eq!(q.filter.subject.as_deref(), Some("user-1"));

        for (query, field) in [
            ("serial=12a", "serial"),
            ("kind=User_Cert", "kind"),
            ("outcome=%27%20OR%201%3D1", "outcome"),
            ("from=2026-12-07&to=2026-12-06", "to"),
            ("before=x", "page"),
            ("before=1&after=2", "page"),
            ("format=xlsx", "format"),
            ("window=year", "window"),
            ("person=a%00b", "person"),
        ] {
            assert_eq!(
                AuditQuery::parse(Some(query)).unwrap_err().field,
                field,
                "{query}"
            );
        }
    }
}
