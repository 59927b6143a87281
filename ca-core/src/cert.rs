//! Certificate building: a [`Grant`] (user) or a [`HostGrant`] (host) plus a
//! subject key become a signed OpenSSH certificate.

use rand_core::CryptoRngCore;
use ssh_key::certificate::{Builder, CertType};
use ssh_key::public::{Ed25519PublicKey, KeyData};
use ssh_key::{Algorithm, Certificate, Signature};

use crate::host::HostGrant;
use crate::identity::VerifiedIdentity;
use crate::policy::Grant;
use crate::subject_key::SubjectKey;
use crate::ttl::Ttl;

/// How far `valid_after` is set before `now`, so a host whose clock runs a
/// little behind still accepts a fresh certificate.
pub const BACKDATE_SECS: u64 = 30;

/// User certificates log people and workloads in; host certificates prove a
/// server's identity. They are signed by different CA keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertKind {
    User,
    Host,
}

/// An Ed25519 CA key, decoded once and kept ready to sign: re-deriving it per
/// signature (as signing through `ssh_key::PrivateKey` does) doubles the cost.
#[derive(Clone)]
pub struct CaSigner {
    key: ed25519_dalek::SigningKey,
    public: KeyData,
}

impl std::fmt::Debug for CaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("CaSigner")
            .field("public", &self.fingerprint())
            .finish()
    }
}

impl CaSigner {
    pub fn new(key: ed25519_dalek::SigningKey) -> Self {
        let public = KeyData::Ed25519(Ed25519PublicKey(key.verifying_key().to_bytes()));
        CaSigner { key, public }
    }

    pub fn public_key(&self) -> &KeyData {
        &self.public
    }

    /// The public key as an OpenSSH line, e.g. for `TrustedUserCAKeys`.
    pub fn public_openssh(&self, comment: &str) -> String {
        ssh_key::PublicKey::new(self.public.clone(), comment)
            .to_openssh()
            .unwrap_or_default()
    }

    pub fn fingerprint(&self) -> String {
        self.public
            .fingerprint(ssh_key::HashAlg::Sha256)
            .to_string()
    }
}

impl signature::Signer<Signature> for CaSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Signature, signature::Error> {
        let sig = self.key.sign(msg);
        Signature::new(Algorithm::Ed25519, sig.to_bytes().to_vec())
            .map_err(|_| signature::Error::new())
    }
}

impl From<&CaSigner> for KeyData {
    fn from(s: &CaSigner) -> KeyData {
        s.public.clone()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate serial must be non-zero")]
    ZeroSerial,
    #[error("refusing to certify the CA's own key")]
    CaKey,
    #[error("refusing to sign a certificate with no principals (it would be valid for anyone)")]
    NoPrincipals,
    #[error("building the certificate failed: {0}")]
    Build(#[from] ssh_key::Error),
}

/// The key ID sshd logs on every login: who, and which serial.
pub fn key_id(identity: &VerifiedIdentity, serial: u64) -> String {
    format!("{} serial={serial}", identity.display_name())
}

/// Sign a certificate for `subject` carrying exactly what `grant` allows,
/// valid from `now - BACKDATE_SECS` to `now + grant.ttl()`.
#[allow(clippy::too_many_arguments)] // each is a distinct, named input of the signature
pub fn sign_cert<S: ssh_key::SigningKey>(
    kind: CertKind,
    grant: &Grant,
    subject: &SubjectKey,
    serial: u64,
    key_id: &str,
    now: u64,
    rng: &mut impl CryptoRngCore,
    signer: &S,
) -> Result<Certificate, CertError> {
    let body = Body {
        cert_type: match kind {
            CertKind::User => CertType::User,
            CertKind::Host => CertType::Host,
        },
        // Grant guarantees at least one principal: never a "valid for anyone" cert.
        principals: grant.principals().iter().map(|p| p.as_str()).collect(),
        ttl: grant.ttl(),
        critical_options: grant
            .critical_options()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect(),
        extensions: match kind {
            CertKind::User => grant.extensions().iter().map(String::as_str).collect(),
            CertKind::Host => Vec::new(),
        },
    };
    sign_body(&body, subject, serial, key_id, now, rng, signer)
}

/// Sign a host certificate for `subject` naming exactly the hosts `grant`
/// allows, valid from `now - BACKDATE_SECS` to `now + grant.ttl()`, with no
/// critical options or extensions. `signer` must be the host CA key.
pub fn sign_host_cert<S: ssh_key::SigningKey>(
    grant: &HostGrant,
    subject: &SubjectKey,
    serial: u64,
    key_id: &str,
    now: u64,
    rng: &mut impl CryptoRngCore,
    signer: &S,
) -> Result<Certificate, CertError> {
    let body = Body {
        cert_type: CertType::Host,
        // HostGrant guarantees at least one exact, wildcard-free name.
        principals: grant.hostnames().iter().map(|h| h.as_str()).collect(),
        ttl: grant.ttl(),
        critical_options: Vec::new(),
        extensions: Vec::new(),
    };
    sign_body(&body, subject, serial, key_id, now, rng, signer)
}

/// What goes into a certificate besides the key, serial and key ID.
struct Body<'a> {
    cert_type: CertType,
    principals: Vec<&'a str>,
    ttl: Ttl,
    critical_options: Vec<(&'a str, &'a str)>,
    extensions: Vec<&'a str>,
}

fn sign_body<S: ssh_key::SigningKey>(
    body: &Body<'_>,
    subject: &SubjectKey,
    serial: u64,
    key_id: &str,
    now: u64,
    rng: &mut impl CryptoRngCore,
    signer: &S,
) -> Result<Certificate, CertError> {
    if serial == 0 {
        return Err(CertError::ZeroSerial);
    }
    if subject.same_key(&signer.public_key()) {
        return Err(CertError::CaKey);
    }
    if body.principals.is_empty() {
        return Err(CertError::NoPrincipals);
    }
    let valid_after = now.saturating_sub(BACKDATE_SECS);
    let valid_before = now + body.ttl.as_secs();
    let mut b =
        Builder::new_with_random_nonce(rng, subject.key_data().clone(), valid_after, valid_before)?;
    b.serial(serial)?;
    b.key_id(key_id)?;
    b.cert_type(body.cert_type)?;
    for p in &body.principals {
        b.valid_principal(*p)?;
    }
    for (name, value) in &body.critical_options {
        b.critical_option(*name, *value)?;
    }
    for ext in &body.extensions {
        b.extension(*ext, "")?;
    }
    Ok(b.sign(signer)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Limits, enforce};
    use crate::request::CertRequest;
    use crate::ttl::Ttl;
    use crate::wire::UserCertRequest;
    use rand_core::OsRng;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn signs_what_the_grant_says() {
        let signer = CaSigner::new(ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]));
        let req = CertRequest::parse(&UserCertRequest {
            public_key: ED.into(),
            ..Default::default()
        })
        .expect("request");
        let decision = serde_json::json!({"allow": true, "principals": ["alice"], "ttl_seconds": 900, "extensions": ["permit-pty"]});
        let grant = enforce(
            Some(&decision),
            &req,
            &Limits::new(Ttl::from_secs(3600).expect("ttl")),
        )
        .expect("grant");
        let now = 1_800_000_000;
        let cert = sign_cert(
            CertKind::User,
            &grant,
            &req.public_key,
            42,
            "alice serial=42",
            now,
            &mut OsRng,
            &signer,
        )
        .expect("cert");
        assert_eq!(cert.valid_principals(), ["alice".to_string()]);
        assert_eq!(cert.serial(), 42);
        assert_eq!(cert.key_id(), "alice serial=42");
        assert_eq!(cert.valid_after(), now - BACKDATE_SECS);
        assert_eq!(cert.valid_before(), now + 900);
        assert_eq!(cert.cert_type(), CertType::User);
        assert!(cert.extensions().contains_key("permit-pty"));
        cert.validate_at(now, &[signer.public_key().fingerprint(Default::default())])
            .expect("signature verifies");

        assert!(matches!(
            sign_cert(
                CertKind::User,
                &grant,
                &req.public_key,
                0,
                "x",
                now,
                &mut OsRng,
                &signer
            ),
            Err(CertError::ZeroSerial)
        ));
        let own = SubjectKey::parse(&signer.public_openssh("")).expect("ca pub");
        assert!(matches!(
            sign_cert(
                CertKind::User,
                &grant,
                &own,
                1,
                "x",
                now,
                &mut OsRng,
                &signer
            ),
            Err(CertError::CaKey)
        ));
    }

    #[test]
    fn signs_host_certificates_with_the_given_key() {
        use crate::host::enforce_host;
        use crate::hostname::HostName;
        let host_ca = CaSigner::new(ed25519_dalek::SigningKey::from_bytes(&[5u8; 32]));
        let user_ca = CaSigner::new(ed25519_dalek::SigningKey::from_bytes(&[6u8; 32]));
        let subject = SubjectKey::parse(ED).expect("key");
        let requested = vec![
            HostName::parse("web01.example.com").expect("name"),
            HostName::parse("web01").expect("name"),
        ];
        let grant = enforce_host(
            Some(&serde_json::json!({"allow": true, "hostnames": ["web01.example.com", "web01"], "ttl_seconds": 604800})),
            &requested,
            Ttl::from_secs(Ttl::ABSOLUTE_MAX).expect("ttl"),
        )
        .expect("grant");
        let now = 1_800_000_000;
        let cert = sign_host_cert(
            &grant,
            &subject,
            9,
            "host web01 serial=9",
            now,
            &mut OsRng,
            &host_ca,
        )
        .expect("cert");
        assert_eq!(cert.cert_type(), CertType::Host);
        assert_eq!(
            cert.valid_principals(),
            ["web01.example.com".to_string(), "web01".to_string()]
        );
        assert_eq!(cert.serial(), 9);
        assert_eq!(cert.valid_after(), now - BACKDATE_SECS);
        assert_eq!(cert.valid_before(), now + 604800);
        assert!(cert.extensions().is_empty() && cert.critical_options().is_empty());
        assert_eq!(cert.signature_key(), host_ca.public_key());
        cert.validate_at(now, &[host_ca.public_key().fingerprint(Default::default())])
            .expect("signed by the host CA");
        assert!(
            cert.validate_at(now, &[user_ca.public_key().fingerprint(Default::default())])
                .is_err(),
            "not by the user CA"
        );
        assert!(matches!(
            sign_host_cert(&grant, &subject, 0, "x", now, &mut OsRng, &host_ca),
            Err(CertError::ZeroSerial)
        ));
        let own = SubjectKey::parse(&host_ca.public_openssh("")).expect("ca pub");
        assert!(matches!(
            sign_host_cert(&grant, &own, 1, "x", now, &mut OsRng, &host_ca),
            Err(CertError::CaKey)
        ));
    }
}
