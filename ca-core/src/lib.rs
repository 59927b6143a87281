//! jitssh's pure core: wire types, request parsing, policy-decision invariants,
//! certificate building and the audit hash chain.
//!
//! Like rustls, this crate does no I/O: no network, no files, no database, and
//! it reads no clock and no global RNG. The server hands it the verified
//! identity, the parsed request, `now`, an RNG and a signer; it returns a
//! certificate or a typed refusal. That keeps every security invariant here,
//! where it can be tested exhaustively (see the property tests in `policy`).
#![forbid(unsafe_code)]

pub mod audit;
pub mod cert;
mod decision;
pub mod elevation;
pub mod elevation_state;
pub mod host;
pub mod hostname;
pub mod identity;
pub mod krl;
pub mod login;
pub mod policy;
pub mod principal;
pub mod request;
pub mod subject_key;
pub mod ttl;
pub mod wire;

pub use cert::{CaSigner, CertKind};
pub use decision::Refusal;
pub use hostname::HostName;
pub use identity::{IdentityKind, VerifiedIdentity};
pub use login::{LoginName, LoginRule};
pub use policy::{Grant, Limits, PolicyInput};
pub use principal::Principal;
pub use request::CertRequest;
pub use subject_key::SubjectKey;
pub use ttl::Ttl;

/// Characters allowed in free text we store and echo (reasons, comments):
/// anything printable; control characters would let a user forge log lines.
/// Text shown to people also refuses [`is_hidden_char`]: see [`has_hidden_chars`].
pub fn has_control_chars(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// A character that changes how text reads without being seen: control
/// characters (Cc: line breaks, escape sequences), format characters (Cf:
/// the bidi embeddings, overrides and isolates U+202A–202E and U+2066–2069,
/// the marks U+200E, U+200F and U+061C, zero-width U+200B–200D, U+2060–2064,
/// U+FEFF, the soft hyphen, tag characters), the line and paragraph
/// separators U+2028 and U+2029, and the whole tag block U+E0000–E007F
/// (partly unassigned). By general category, not a list, so characters of
/// the same kind are covered as well.
pub fn is_hidden_char(c: char) -> bool {
    // ASCII has no format or separator characters: only its controls are
    // hidden. Most text is ASCII, and the category lookup is a table search.
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    hidden_by_category(c)
}

fn hidden_by_category(c: char) -> bool {
    use unicode_properties::{GeneralCategory as G, UnicodeGeneralCategory as _};
    matches!(
        c.general_category(),
        G::Control | G::Format | G::LineSeparator | G::ParagraphSeparator
    ) || ('\u{e0000}'..='\u{e007f}').contains(&c)
}

/// Whether free text that approvers and logs show (an elevation's reason,
/// a comment, a certificate request's reason, a role's description) holds a
/// character that would make it read as something other than it is (a
/// right-to-left override turning "ok ... gnitset" into "testing ... ko", an
/// invisible character splitting a word): refused like control characters.
pub fn has_hidden_chars(s: &str) -> bool {
    s.chars().any(is_hidden_char)
}

/// Escape control characters, and the other [`is_hidden_char`]s, so claims
/// and stored text can be printed to a terminal or log without letting a
/// hostile IdP tenant inject escape sequences or lines, or reorder what is
/// shown.
pub fn escape_control(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if is_hidden_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ascii_shortcut_agrees_with_the_categories() {
        for c in '\0'..='\u{7f}' {
            assert_eq!(is_hidden_char(c), hidden_by_category(c), "{c:?}");
        }
    }

    #[test]
    fn hidden_characters_by_category() {
        // Cc; Cf (soft hyphen, Arabic letter mark, Mongolian vowel separator,
        // zero-width, LRM/RLM, bidi embeddings/overrides, invisible operators,
        // isolates, deprecated format characters, BOM, interlinear annotation,
        // Kaithi number sign, musical symbol format); the tag block; Zl, Zp.
        let hidden = concat!(
            "\0\n\r\t\u{1b}\u{7f}\u{85}\u{9b}",
            "\u{ad}\u{61c}\u{180e}\u{200b}\u{200c}\u{200d}\u{200e}\u{200f}",
            "\u{202a}\u{202b}\u{202c}\u{202d}\u{202e}\u{2060}\u{2061}\u{2062}\u{2063}\u{2064}",
            "\u{2066}\u{2067}\u{2068}\u{2069}\u{206a}\u{206f}\u{feff}\u{fff9}\u{110bd}\u{1d173}",
            "\u{e0000}\u{e0001}\u{e0020}\u{e007f}",
            "\u{2028}\u{2029}",
        );
        for c in hidden.chars() {
            assert!(is_hidden_char(c), "{:?}", c);
            let text = format!("ok{c}ok");
            assert!(has_hidden_chars(&text), "{text:?}");
            let shown = escape_control(&text);
            assert!(!has_hidden_chars(&shown), "{shown:?}");
            assert!(
                shown.starts_with("ok\\") && shown.ends_with("ok"),
                "{shown:?}"
            );
        }
        // Letters of several scripts, spaces, a variation selector, an emoji,
        // a combining accent.
        for c in "a é ß ж ع א 中 \u{a0}\u{3000}\u{fe0f}\u{1f600}\u{301}".chars() {
            assert!(!is_hidden_char(c), "{:?}", c);
        }
        assert_eq!(escape_control("a\u{202e}b\nc"), "a\\u{202e}b\\nc");
    }
}
