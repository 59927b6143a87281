//! Host certificates: join tokens, the enrolment request parsed into checked
//! values, the host policy's input and the invariants enforced on its
//! decision ([`enforce_host`] → [`HostGrant`]), and the check of a renewal
//! proof ([`verify_renewal`]).
//!
//! A host gets a certificate in one of two ways, and no other: with a
//! one-time join token an operator created for the names it may claim, or by
//! presenting its current, still-valid host certificate together with a
//! signature over a fresh server challenge made with the certified key. User
//! ID tokens play no part here.

use base64::Engine as _;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use ssh_key::certificate::CertType;
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, Certificate, HashAlg, SshSig};

use crate::decision::{Decision, Refusal};
use crate::hostname::{HostName, HostNamesError, parse_hostnames};
use crate::policy::{KeyInput, TimeInput};
use crate::subject_key::{SubjectKey, SubjectKeyError};
use crate::ttl::Ttl;
use crate::wire;

/// At most this many names in one host certificate (and one join token).
pub const MAX_HOSTNAMES: usize = 32;

/// The SSHSIG namespace of a renewal proof: a signature made for anything
/// else (a git commit, `ssh-keygen -Y sign -n file`) is not a renewal proof.
pub const RENEW_NAMESPACE: &str = "jitssh-host-renew@jitssh";

/// A one-time join token: `jitssh-join-` and 32 random bytes in unpadded
/// base64url. The server stores only its SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken(String);

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret; the hash identifies it.
        f.debug_tuple("JoinToken").field(&self.hash()).finish()
    }
}

/// Why a string is not a join token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinTokenError {
    #[error("token is missing; send the join token from `jitssh-ca host token create`")]
    Missing,
    #[error(
        "token is not a jitssh join token (they start with {prefix:?}); an ID token or any other credential cannot enrol a host",
        prefix = JoinToken::PREFIX
    )]
    NotAJoinToken,
}

impl JoinToken {
    pub const PREFIX: &'static str = "jitssh-join-";
    /// Random bytes in a token.
    pub const BYTES: usize = 32;

    /// A fresh token from `rng`.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut bytes = [0u8; Self::BYTES];
        rng.fill_bytes(&mut bytes);
        JoinToken(format!(
            "{}{}",
            Self::PREFIX,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        ))
    }

    /// Accept exactly the shape [`generate`](Self::generate) produces.
    pub fn parse(s: &str) -> Result<Self, JoinTokenError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(JoinTokenError::Missing);
        }
        let body = s
            .strip_prefix(Self::PREFIX)
            .ok_or(JoinTokenError::NotAJoinToken)?;
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| JoinTokenError::NotAJoinToken)?;
        if decoded.len() != Self::BYTES {
            return Err(JoinTokenError::NotAJoinToken);
        }
        Ok(JoinToken(s.to_owned()))
    }

    /// The secret, to hand to the operator once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Hex SHA-256 of the token: what the server stores and audits.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

/// `POST /v1/certs/host` parsed: after this the code cannot hold a malformed
/// token, an unacceptable key or an invalid or wildcard host name.
#[derive(Clone, Debug)]
pub struct HostCertRequest {
    pub token: JoinToken,
    pub public_key: SubjectKey,
    /// `None`: every name the token allows. Never `Some(empty)`.
    pub hostnames: Option<Vec<HostName>>,
}

/// Why an enrolment request was refused before the token was looked up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostRequestError {
    #[error(transparent)]
    Token(#[from] JoinTokenError),
    #[error("invalid public_key: {0}")]
    PublicKey(#[from] SubjectKeyError),
    #[error("invalid hostnames: {0}")]
    Hostnames(#[from] HostNamesError),
}

impl HostRequestError {
    /// Stable error code for the HTTP body.
    pub fn code(&self) -> &'static str {
        match self {
            HostRequestError::Token(_) => "join_token_invalid",
            HostRequestError::PublicKey(_) => "invalid_public_key",
            HostRequestError::Hostnames(_) => "invalid_hostname",
        }
    }
}

impl HostCertRequest {
    pub fn parse(body: &wire::HostCertRequest) -> Result<Self, HostRequestError> {
        let token = JoinToken::parse(&body.token)?;
        let public_key = SubjectKey::parse(&body.public_key)?;
        let hostnames = body
            .hostnames
            .as_deref()
            .map(|list| parse_hostnames(list, MAX_HOSTNAMES))
            .transpose()?;
        Ok(HostCertRequest {
            token,
            public_key,
            hostnames,
        })
    }
}

/// How the host proved it may have a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// A one-time join token created by an operator.
    JoinToken,
    /// Its current host certificate and a signature with the certified key.
    Renewal,
}

/// `input` for `data.jitssh.host_decision`. Documented in `policies/README.md`.
#[derive(Debug, Serialize)]
pub struct HostPolicyInput {
    pub request: HostRequestInput,
    pub time: TimeInput,
}

#[derive(Debug, Serialize)]
pub struct HostRequestInput {
    /// Always `host_cert`.
    pub kind: &'static str,
    pub via: Via,
    /// The names to certify (already a subset of `authorized_hostnames`).
    pub hostnames: Vec<String>,
    /// The names the join token allows, or those of the presented certificate.
    pub authorized_hostnames: Vec<String>,
    pub public_key: KeyInput,
    pub source_ip: String,
    /// The certificate presented for renewal; `null` for a join token.
    pub current_certificate: Option<CurrentCertInput>,
}

#[derive(Debug, Serialize)]
pub struct CurrentCertInput {
    /// Decimal string.
    pub serial: String,
    pub key_id: String,
    pub valid_after: u64,
    pub valid_before: u64,
}

impl HostPolicyInput {
    pub fn new(
        via: Via,
        hostnames: &[HostName],
        authorized: &[HostName],
        key: &SubjectKey,
        source_ip: String,
        current: Option<&VerifiedRenewal>,
        now: u64,
    ) -> Self {
        let names = |v: &[HostName]| v.iter().map(|h| h.to_string()).collect();
        HostPolicyInput {
            request: HostRequestInput {
                kind: "host_cert",
                via,
                hostnames: names(hostnames),
                authorized_hostnames: names(authorized),
                public_key: KeyInput {
                    kind: key.algorithm(),
                    fingerprint: key.fingerprint().to_owned(),
                },
                source_ip,
                current_certificate: current.map(|c| CurrentCertInput {
                    serial: c.serial.to_string(),
                    key_id: c.key_id.clone(),
                    valid_after: c.valid_after,
                    valid_before: c.valid_before,
                }),
            },
            time: TimeInput::at(now),
        }
    }
}

/// The host decision as the policy must shape it; unknown fields are a
/// policy bug.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHostDecision {
    allow: bool,
    #[serde(default)]
    hostnames: Vec<String>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    reasons: Vec<String>,
}

/// What may be signed into a host certificate: built only by
/// [`enforce_host`], so holding one proves the names are valid, exact,
/// non-empty and among those requested, and the ttl within the ceiling.
#[derive(Clone, Debug)]
pub struct HostGrant {
    hostnames: Vec<HostName>,
    ttl: Ttl,
    reasons: Vec<String>,
}

impl HostGrant {
    pub fn hostnames(&self) -> &[HostName] {
        &self.hostnames
    }
    pub fn ttl(&self) -> Ttl {
        self.ttl
    }
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }
}

/// Turn the host policy's decision into a [`HostGrant`], or refuse.
///
/// `decision` is `None` when the rule was undefined. The decision must be
/// well-formed and allow; every granted name must be a valid [`HostName`]
/// (a wildcard is a policy error) and is kept only if `requested` holds it,
/// in `requested`'s order; the result must be non-empty; the ttl is the
/// policy's, capped at `max_ttl`.
pub fn enforce_host(
    decision: Option<&serde_json::Value>,
    requested: &[HostName],
    max_ttl: Ttl,
) -> Result<HostGrant, Refusal> {
    let raw: RawHostDecision = Decision::HOST.read(decision)?;
    let reasons = Decision::HOST.allow(raw.allow, &raw.reasons)?;
    let mut granted: Vec<HostName> = Vec::with_capacity(raw.hostnames.len());
    for h in &raw.hostnames {
        granted.push(HostName::parse(h).map_err(|e| {
            Refusal::PolicyError(format!("host policy granted an invalid hostname: {e}"))
        })?);
    }
    // In the order the request (the token, the certificate) named them.
    let mut hostnames: Vec<HostName> = Vec::new();
    for h in requested {
        if granted.contains(h) && !hostnames.contains(h) {
            hostnames.push(h.clone());
        }
    }
    if hostnames.is_empty() {
        return Err(Refusal::Denied {
            reasons: vec![format!(
                "the host policy allowed none of the requested hostnames ({})",
                requested
                    .iter()
                    .map(HostName::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            )],
        });
    }
    if hostnames.len() > MAX_HOSTNAMES {
        return Err(Refusal::PolicyError(format!(
            "host policy granted {} hostnames; at most {MAX_HOSTNAMES} fit a certificate",
            hostnames.len()
        )));
    }
    let ttl = Decision::HOST.required_ttl(raw.ttl_seconds, max_ttl)?;
    Ok(HostGrant {
        hostnames,
        ttl,
        reasons,
    })
}

/// The key ID of a host certificate: its names and serial, as `ssh -v` shows it.
pub fn host_key_id(hostnames: &[HostName], serial: u64) -> String {
    let names: Vec<&str> = hostnames.iter().map(HostName::as_str).collect();
    format!("host {} serial={serial}", names.join(","))
}

/// A renewal proof that checked out: the certificate it presented and the key
/// it proved possession of.
#[derive(Clone, Debug)]
pub struct VerifiedRenewal {
    pub key: SubjectKey,
    pub hostnames: Vec<HostName>,
    pub serial: u64,
    pub key_id: String,
    pub valid_after: u64,
    pub valid_before: u64,
}

/// Why a renewal proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenewalError {
    #[error("certificate does not parse as an OpenSSH certificate: {0}")]
    Certificate(String),
    #[error("certificate is a user certificate; present the host's own host certificate")]
    NotHost,
    #[error(
        "certificate is not signed by this CA's host CA key; enrol the host with a join token instead"
    )]
    WrongCa,
    #[error(
        "certificate is not valid now (valid from {valid_after} to {valid_before}, unix seconds); an expired host needs a new join token"
    )]
    NotValidNow { valid_after: u64, valid_before: u64 },
    #[error(
        "renewal proves possession with Ed25519 host keys only, and this certificate is for a {0} key; enrol it with a join token instead"
    )]
    KeyType(String),
    #[error("certificate names hosts this CA would not certify: {0}")]
    Hostnames(String),
    #[error("signature is not an armored SSH signature (-----BEGIN SSH SIGNATURE-----): {0}")]
    Signature(String),
    #[error(
        "signature does not prove possession of the certified host key over this challenge (namespace {RENEW_NAMESPACE})"
    )]
    Proof,
}

impl RenewalError {
    /// Stable error code for the HTTP body.
    pub fn code(&self) -> &'static str {
        match self {
            RenewalError::Certificate(_) | RenewalError::Signature(_) => "invalid_request",
            RenewalError::KeyType(_) => "invalid_public_key",
            RenewalError::NotHost
            | RenewalError::WrongCa
            | RenewalError::NotValidNow { .. }
            | RenewalError::Hostnames(_) => "renewal_certificate_invalid",
            RenewalError::Proof => "renewal_proof_invalid",
        }
    }
}

/// Check a renewal proof: `certificate` is a host certificate signed by
/// `host_ca`, valid at `now`, for an Ed25519 key and for valid host names;
/// `signature` is an SSHSIG by that very key over `challenge` in
/// [`RENEW_NAMESPACE`]. That the challenge is fresh and unused is the
/// caller's to check (it is server state).
pub fn verify_renewal(
    certificate: &str,
    challenge: &str,
    signature: &str,
    host_cas: &[KeyData],
    now: u64,
) -> Result<VerifiedRenewal, RenewalError> {
    let cert = Certificate::from_openssh(certificate.trim())
        .map_err(|e| RenewalError::Certificate(e.to_string()))?;
    if cert.cert_type() != CertType::Host {
        return Err(RenewalError::NotHost);
    }
    // Any published host CA key: during a rotation, certificates signed by
    // the retiring key renew (and come back signed by the new one).
    if !host_cas.contains(cert.signature_key()) {
        return Err(RenewalError::WrongCa);
    }
    if now < cert.valid_after() || now >= cert.valid_before() {
        return Err(RenewalError::NotValidNow {
            valid_after: cert.valid_after(),
            valid_before: cert.valid_before(),
        });
    }
    // The signature by the CA over the whole certificate.
    cert.validate_at(now, [&cert.signature_key().fingerprint(HashAlg::Sha256)])
        .map_err(|_| RenewalError::WrongCa)?;
    if cert.public_key().algorithm() != Algorithm::Ed25519 {
        return Err(RenewalError::KeyType(
            cert.public_key().algorithm().as_str().to_owned(),
        ));
    }
    let hostnames = parse_hostnames(cert.valid_principals(), MAX_HOSTNAMES)
        .map_err(|e| RenewalError::Hostnames(e.to_string()))?;
    if hostnames
        .iter()
        .zip(cert.valid_principals())
        .any(|(h, p)| h.as_str() != p)
    {
        return Err(RenewalError::Hostnames(
            "a name is not in lowercase canonical form".into(),
        ));
    }
    let key_line = ssh_key::PublicKey::new(cert.public_key().clone(), "")
        .to_openssh()
        .map_err(|e| RenewalError::Certificate(e.to_string()))?;
    let key = SubjectKey::parse(&key_line).map_err(|e| RenewalError::Certificate(e.to_string()))?;

    let sig =
        SshSig::from_pem(signature.trim()).map_err(|e| RenewalError::Signature(e.to_string()))?;
    key.public_key()
        .verify(RENEW_NAMESPACE, challenge.as_bytes(), &sig)
        .map_err(|_| RenewalError::Proof)?;
    Ok(VerifiedRenewal {
        key,
        hostnames,
        serial: cert.serial(),
        key_id: crate::escape_control(cert.key_id()),
        valid_after: cert.valid_after(),
        valid_before: cert.valid_before(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::{CaSigner, sign_host_cert};
    use rand_core::OsRng;
    use serde_json::json;
    use ssh_key::{LineEnding, PrivateKey};

    fn names(v: &[&str]) -> Vec<HostName> {
        v.iter().map(|s| HostName::parse(s).unwrap()).collect()
    }

    fn week() -> Ttl {
        Ttl::from_secs(Ttl::ABSOLUTE_MAX).unwrap()
    }

    #[test]
    fn join_tokens_round_trip_and_refuse_other_credentials() {
        let t = JoinToken::generate(&mut OsRng);
        assert!(t.expose().starts_with("jitssh-join-"));
        assert_eq!(t.expose().len(), 12 + 43);
        assert_eq!(JoinToken::parse(t.expose()), Ok(t.clone()));
        assert_ne!(JoinToken::generate(&mut OsRng), t);
        assert_eq!(t.hash().len(), 64);
        assert!(
            !format!("{t:?}").contains(t.expose()),
            "Debug hides the secret"
        );
        assert_eq!(JoinToken::parse(" "), Err(JoinTokenError::Missing));
        for bad in [
            "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.sig",
            "jitssh-join-",
            "jitssh-join-short",
            &format!("{}A", t.expose()),
            &t.expose().replace("jitssh-join-", "jitssh-jOin-"),
        ] {
            assert_eq!(
                JoinToken::parse(bad),
                Err(JoinTokenError::NotAJoinToken),
                "{bad}"
            );
        }
    }

    #[test]
    fn request_parsing_names_the_problem() {
        let key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let body = |token: String, hostnames: Option<Vec<&str>>| wire::HostCertRequest {
            token,
            public_key: key.public_key().to_openssh().unwrap(),
            hostnames: hostnames.map(|v| v.into_iter().map(String::from).collect()),
        };
        let token = JoinToken::generate(&mut OsRng).expose().to_owned();
        let ok = HostCertRequest::parse(&body(token.clone(), Some(vec!["Web01.Example"]))).unwrap();
        assert_eq!(ok.hostnames, Some(names(&["web01.example"])));
        let code = |b| HostCertRequest::parse(&b).unwrap_err().code();
        assert_eq!(code(body("eyJ.x.y".into(), None)), "join_token_invalid");
        assert_eq!(
            code(body(token.clone(), Some(vec!["*.example"]))),
            "invalid_hostname"
        );
        assert_eq!(code(body(token.clone(), Some(vec![]))), "invalid_hostname");
        let mut b = body(token, None);
        b.public_key = "ssh-ed25519 AAAA".into();
        assert_eq!(code(b), "invalid_public_key");
    }

    #[test]
    fn enforce_host_keeps_only_requested_exact_names() {
        let req = names(&["web01.example", "web01"]);
        let g = enforce_host(
            Some(&json!({"allow": true, "hostnames": ["web01", "other.example", "web01"], "ttl_seconds": 999_999_999, "reasons": ["ok"]})),
            &req,
            Ttl::from_secs(86400).unwrap(),
        )
        .unwrap();
        assert_eq!(g.hostnames(), names(&["web01"]).as_slice());
        assert_eq!(g.ttl().as_secs(), 86400, "capped at the ceiling");
        assert_eq!(g.reasons(), ["ok".to_string()]);

        let refusal = |d: serde_json::Value| enforce_host(Some(&d), &req, week()).unwrap_err();
        assert!(matches!(
            enforce_host(None, &req, week()),
            Err(Refusal::PolicyError(_))
        ));
        for d in [
            json!({"allow": true, "hostnames": ["*.example"], "ttl_seconds": 60}),
            json!({"allow": true, "hostnames": ["web01"]}),
            json!({"allow": true, "hostnames": ["web01"], "ttl_seconds": 0}),
            json!({"allow": true, "hostnames": ["web01"], "ttl_seconds": 60, "principals": ["root"]}),
            json!({"allow": "yes"}),
            json!([true, ["web01"], 60]),
        ] {
            assert!(matches!(refusal(d.clone()), Refusal::PolicyError(_)), "{d}");
        }
        assert_eq!(
            refusal(json!({"allow": false, "reasons": ["not today"]})),
            Refusal::Denied {
                reasons: vec!["not today".into()]
            }
        );
        assert!(matches!(
            refusal(json!({"allow": true, "hostnames": ["other.example"], "ttl_seconds": 60})),
            Refusal::Denied { .. }
        ));
    }

    struct Fixture {
        host_ca: CaSigner,
        key: PrivateKey,
        cert: String,
        now: u64,
    }

    fn fixture() -> Fixture {
        let host_ca = CaSigner::new(ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]));
        let key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let subject = SubjectKey::parse(&key.public_key().to_openssh().unwrap()).unwrap();
        let hostnames = names(&["web01.example"]);
        let grant = enforce_host(
            Some(&json!({"allow": true, "hostnames": ["web01.example"], "ttl_seconds": 3600})),
            &hostnames,
            week(),
        )
        .unwrap();
        let now = 1_800_000_000;
        let cert = sign_host_cert(
            &grant,
            &subject,
            7,
            "host web01.example serial=7",
            now,
            &mut OsRng,
            &host_ca,
        )
        .unwrap()
        .to_openssh()
        .unwrap();
        Fixture {
            host_ca,
            key,
            cert,
            now,
        }
    }

    fn proof(key: &PrivateKey, msg: &str) -> String {
        key.sign(RENEW_NAMESPACE, HashAlg::Sha512, msg.as_bytes())
            .unwrap()
            .to_pem(LineEnding::LF)
            .unwrap()
    }

    #[test]
    fn renewal_proof_accepted() {
        let f = fixture();
        let ok = verify_renewal(
            &f.cert,
            "c1",
            &proof(&f.key, "c1"),
            std::slice::from_ref(f.host_ca.public_key()),
            f.now + 10,
        )
        .unwrap();
        assert_eq!(ok.hostnames, names(&["web01.example"]));
        assert_eq!(ok.serial, 7);
        assert!(ok.key.same_key(f.key.public_key().key_data()));
        // During a rotation: any published host CA key, in any position.
        let other = crate::CaSigner::new(ed25519_dalek::SigningKey::from_bytes(&[0xA5; 32]));
        let both = [other.public_key().clone(), f.host_ca.public_key().clone()];
        assert!(verify_renewal(&f.cert, "c1", &proof(&f.key, "c1"), &both, f.now + 10).is_ok());
        assert_eq!(
            verify_renewal(&f.cert, "c1", &proof(&f.key, "c1"), &both[..1], f.now + 10)
                .unwrap_err()
                .code(),
            "renewal_certificate_invalid"
        );
    }

    #[test]
    fn renewal_proof_refusals() {
        let f = fixture();
        let ca = f.host_ca.public_key();
        let good = proof(&f.key, "c1");
        let check = |cert: &str, challenge: &str, sig: &str, ca: &KeyData, now: u64| {
            verify_renewal(cert, challenge, sig, std::slice::from_ref(ca), now)
                .unwrap_err()
                .code()
        };
        // Signed over another message, by another key, in another namespace.
        assert_eq!(
            check(&f.cert, "c2", &good, ca, f.now),
            "renewal_proof_invalid"
        );
        let other = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        assert_eq!(
            check(&f.cert, "c1", &proof(&other, "c1"), ca, f.now),
            "renewal_proof_invalid"
        );
        let file_sig = f
            .key
            .sign("file", HashAlg::Sha512, b"c1")
            .unwrap()
            .to_pem(LineEnding::LF)
            .unwrap();
        assert_eq!(
            check(&f.cert, "c1", &file_sig, ca, f.now),
            "renewal_proof_invalid"
        );
        assert_eq!(
            check(&f.cert, "c1", "not a signature", ca, f.now),
            "invalid_request"
        );
        // Expired, not yet valid, another CA.
        assert_eq!(
            check(&f.cert, "c1", &good, ca, f.now + 3600),
            "renewal_certificate_invalid"
        );
        assert_eq!(
            check(&f.cert, "c1", &good, ca, f.now - 3600),
            "renewal_certificate_invalid"
        );
        let user_ca = CaSigner::new(ed25519_dalek::SigningKey::from_bytes(&[8u8; 32]));
        assert_eq!(
            verify_renewal(
                &f.cert,
                "c1",
                &good,
                std::slice::from_ref(user_ca.public_key()),
                f.now
            )
            .unwrap_err(),
            RenewalError::WrongCa
        );
        assert_eq!(
            check("ssh-ed25519 AAAA", "c1", &good, ca, f.now),
            "invalid_request"
        );
    }

    proptest::proptest! {
        /// Whatever the host policy returns, a grant names at least one host,
        /// only requested hosts, never a wildcard, for at most the ceiling.
        #[test]
        fn host_grants_always_hold_invariants(
            allow in proptest::bool::ANY,
            granted in proptest::collection::vec("[a-c*?.\\-]{0,5}", 0..5),
            ttl in proptest::option::of(proptest::num::u64::ANY),
            ceiling in 1u64..=Ttl::ABSOLUTE_MAX,
        ) {
            let requested = names(&["a", "b.c", "a-b"]);
            let d = json!({"allow": allow, "hostnames": granted, "ttl_seconds": ttl});
            if let Ok(g) = enforce_host(Some(&d), &requested, Ttl::from_secs(ceiling).unwrap()) {
                proptest::prop_assert!(!g.hostnames().is_empty());
                proptest::prop_assert!(g.hostnames().iter().all(|h| requested.contains(h)));
                proptest::prop_assert!(g.hostnames().iter().all(|h| !h.as_str().contains(['*', '?'])));
                proptest::prop_assert!(g.ttl().as_secs() <= ceiling);
            }
        }
    }
}
