//! Human-readable audit rows for `audit list` and `audit show`. Every
//! claim-derived string is escaped: an IdP tenant controls emails, subjects
//! and reasons, and must not be able to forge lines or drive the terminal.

use std::fmt::Write;

use super::types::StoredEvent;

/// One line: time, seq, action, outcome, who, principals, serial, reasons.
///
/// `2026-05-01T12:00:00Z #42 user_cert issued who=alice@example.com principals=alice serial=7 reasons="on call"`
pub fn format_event_line(e: &StoredEvent) -> String {
    let ev = &e.event;
    let mut line = format!(
        "{} #{} {} {}",
        format_time(ev.time),
        e.seq,
        value(&ev.action),
        value(&ev.outcome)
    );
    let mut field = |key: &str, v: String| {
        let _ = write!(line, " {key}={v}");
    };
    if let Some(code) = &ev.code {
        field("code", value(code));
    }
    field("who", value(&who(e)));
    if !ev.granted_principals.is_empty() {
        field("principals", list(&ev.granted_principals));
    } else if let Some(requested) = ev.requested_principals.as_ref().filter(|r| !r.is_empty()) {
        field("requested", list(requested));
    }
    if let Some(serial) = &ev.serial {
        field("serial", value(serial));
    }
    if let Some(reason) = &ev.reason {
        field("reason", value(reason));
    }
    if !ev.decision_reasons.is_empty() {
        field("reasons", value(&ev.decision_reasons.join("; ")));
    }
    line
}

/// Every field, one per line, for `audit show`.
pub fn format_event_detail(e: &StoredEvent) -> String {
    let ev = &e.event;
    let mut out = String::new();
    let mut line = |key: &str, v: &str| {
        let _ = writeln!(out, "{key:<16}{}", escape(v));
    };
    line("seq", &e.seq.to_string());
    line("hash", &e.hash);
    line("time", &format!("{} ({})", format_time(ev.time), ev.time));
    line("action", &ev.action);
    line("outcome", &ev.outcome);
    let optional = [
        ("code", &ev.code),
        ("issuer", &ev.issuer),
        ("subject", &ev.subject),
        ("email", &ev.email),
        ("source_ip", &ev.source_ip),
    ];
    for (key, v) in optional {
        if let Some(v) = v {
            line(key, v);
        }
    }
    if let Some(requested) = &ev.requested_principals {
        line("requested", &requested.join(", "));
    }
    if !ev.granted_principals.is_empty() {
        line("granted", &ev.granted_principals.join(", "));
    }
    if let Some(t) = ev.requested_ttl {
        line("requested_ttl", &format!("{t} s"));
    }
    if let Some(t) = ev.ttl_seconds {
        line("ttl", &format!("{t} s"));
    }
    let optional = [
        ("serial", &ev.serial),
        ("key_id", &ev.key_id),
        ("key_fingerprint", &ev.key_fingerprint),
        ("reason", &ev.reason),
    ];
    for (key, v) in optional {
        if let Some(v) = v {
            line(key, v);
        }
    }
    for (i, reason) in ev.decision_reasons.iter().enumerate() {
        line(if i == 0 { "decision" } else { "" }, reason);
    }
    if let Some(v) = &ev.policy_hash {
        line("policy_hash", v);
    }
    if let Some(v) = &ev.token_hash {
        line("token_hash", v);
    }
    if let Some(details) = &ev.details {
        line("details", &details.to_string());
    }
    out
}

/// Unix seconds as RFC 3339 UTC, e.g. `2026-05-01T12:00:00Z`.
pub fn format_time(t: u64) -> String {
    let (days, secs) = (t / 86_400, t % 86_400);
    // Howard Hinnant's civil_from_days, for non-negative days.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Who asked: the email if the token had one, else `issuer#subject`.
fn who(e: &StoredEvent) -> String {
    let ev = &e.event;
    match (&ev.email, &ev.issuer, &ev.subject) {
        (Some(email), _, _) => email.clone(),
        (None, Some(iss), Some(sub)) => format!("{iss}#{sub}"),
        (None, None, Some(sub)) => sub.clone(),
        _ => "-".into(),
    }
}

fn list(items: &[String]) -> String {
    value(&items.join(","))
}

/// A field value for the one-line format: escaped, and quoted if it could
/// otherwise be read as more than one field.
fn value(s: &str) -> String {
    if !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\\')
    {
        return escape(s);
    }
    escape(&format!(
        "\"{}\"",
        s.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// `ca_core::escape_control`, plus the invisible characters that reorder or
/// break lines without being control characters (bidi overrides, U+2028).
fn escape(s: &str) -> String {
    let s = ca_core::escape_control(s);
    if !s.chars().any(is_invisible_format) {
        return s;
    }
    s.chars()
        .fold(String::with_capacity(s.len()), |mut out, c| {
            if is_invisible_format(c) {
                out.extend(c.escape_unicode());
            } else {
                out.push(c);
            }
            out
        })
}

fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use ca_core::audit::AuditEvent;

    fn stored(event: AuditEvent) -> StoredEvent {
        StoredEvent {
            seq: 42,
            hash: "ab".into(),
            prev_hash: "00".into(),
            raw: String::new(),
            event,
        }
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_time(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(format_time(4_102_444_800), "2100-01-01T00:00:00Z");
        assert_eq!(format_time(253_402_300_799), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn line_for_an_issuance() {
        let e = stored(AuditEvent {
            time: 1_777_636_800,
            action: "user_cert".into(),
            outcome: "issued".into(),
            email: Some("alice@example.com".into()),
            requested_principals: Some(vec!["alice".into(), "root".into()]),
            granted_principals: vec!["alice".into(), "deploy".into()],
            serial: Some("7".into()),
            decision_reasons: vec!["on call".into(), "group ops".into()],
            ..AuditEvent::default()
        });
        assert_eq!(
            format_event_line(&e),
            "2026-05-01T12:00:00Z #42 user_cert issued who=alice@example.com \
             principals=alice,deploy serial=7 reasons=\"on call; group ops\""
        );
    }

    #[test]
    fn line_for_a_denial_without_email() {
        let e = stored(AuditEvent {
            time: 0,
            action: "user_cert".into(),
            outcome: "denied".into(),
            code: Some("denied_by_policy".into()),
            issuer: Some("https://idp".into()),
            subject: Some("123".into()),
            requested_principals: Some(vec!["root".into()]),
            ..AuditEvent::default()
        });
        assert_eq!(
            format_event_line(&e),
            "1970-01-01T00:00:00Z #42 user_cert denied code=denied_by_policy \
             who=https://idp#123 requested=root"
        );
    }

    #[test]
    fn hostile_claims_cannot_forge_lines_or_fields() {
        let e = stored(AuditEvent {
            action: "user_cert".into(),
            outcome: "denied".into(),
            email: Some("evil@x\n2026-01-01T00:00:00Z #1 user_cert issued\u{1b}[2J".into()),
            reason: Some("a\u{202e}b\"c".into()),
            details: Some(serde_json::json!({"k": "\u{9b}x"})),
            ..AuditEvent::default()
        });
        let line = format_event_line(&e);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(!line.contains('\u{202e}'), "{line:?}");
        assert!(line.contains(r#"who="evil@x\n2026"#), "{line}");
        assert!(line.contains(r"\u{1b}[2J"), "{line}");
        assert!(line.contains(r#"reason="a\u{202e}b\"c""#), "{line}");

        let detail = format_event_detail(&e);
        assert!(
            detail.lines().all(|l| !l.chars().any(char::is_control)),
            "{detail:?}"
        );
        assert!(detail.contains(r"\u{9b}"), "{detail}");
        // One line per field: the injected newline did not add a line.
        assert_eq!(detail.lines().filter(|l| l.starts_with("email")).count(), 1);
        assert!(!detail.lines().any(|l| l.starts_with("2026")), "{detail}");
    }

    #[test]
    fn detail_lists_every_present_field() {
        let e = stored(AuditEvent {
            time: 1_777_636_800,
            action: "user_cert".into(),
            outcome: "issued".into(),
            subject: Some("sub".into()),
            granted_principals: vec!["alice".into()],
            ttl_seconds: Some(3600),
            decision_reasons: vec!["r1".into(), "r2".into()],
            ..AuditEvent::default()
        });
        let detail = format_event_detail(&e);
        let expected = "\
seq             42
hash            ab
time            2026-05-01T12:00:00Z (1777636800)
action          user_cert
outcome         issued
subject         sub
granted         alice
ttl             3600 s
decision        r1
                r2
";
        assert_eq!(detail, expected);
    }
}
