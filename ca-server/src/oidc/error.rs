//! The verifier's two refusals: a configuration it will not start with
//! ([`OidcConfigError`]) and a token it will not accept ([`TokenError`], with
//! a stable code), plus the rule for quoting attacker-chosen text in them.

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

/// Attacker-chosen text in an error message: bounded and without control characters.
pub(super) fn printable(s: &str) -> String {
    let short: String = s.chars().take(100).collect();
    ca_core::escape_control(&short)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

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
