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
pub mod elevation;
pub mod host;
pub mod hostname;
pub mod identity;
pub mod krl;
pub mod policy;
pub mod principal;
pub mod request;
pub mod subject_key;
pub mod ttl;
pub mod wire;

pub use cert::{CaSigner, CertKind};
pub use hostname::HostName;
pub use identity::{IdentityKind, VerifiedIdentity};
pub use policy::{Grant, Limits, PolicyInput, Refusal};
pub use principal::Principal;
pub use request::CertRequest;
pub use subject_key::SubjectKey;
pub use ttl::Ttl;

/// Characters allowed in free text we store and echo (reasons, comments):
/// anything printable; control characters would let a user forge log lines.
pub fn has_control_chars(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Escape control characters so claims can be printed to a terminal or log
/// without letting a hostile IdP tenant inject escape sequences or lines.
pub fn escape_control(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
