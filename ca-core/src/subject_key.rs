//! `SubjectKey`: the public key a certificate is issued for, parsed strictly.

use base64::Engine as _;
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, PublicKey, public::KeyData};

/// A public key we are willing to certify: Ed25519, ECDSA P-256/384/521,
/// RSA of at least [`SubjectKey::MIN_RSA_BITS`] bits, or a FIDO
/// (`sk-ssh-ed25519`, `sk-ecdsa-sha2-nistp256`) key, in canonical encoding.
#[derive(Clone, Debug)]
pub struct SubjectKey {
    key: PublicKey,
    fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectKeyError {
    #[error("public_key is empty; send the contents of your .pub file")]
    Empty,
    #[error("public_key is longer than {max} bytes", max = SubjectKey::MAX_LINE)]
    TooLong,
    #[error("public_key must be a single line \"ALGORITHM BASE64 [COMMENT]\"")]
    NotOneLine,
    #[error("public_key is a certificate; send the plain public key it certifies")]
    Certificate,
    #[error("DSA keys are not accepted; generate an Ed25519 key (ssh-keygen -t ed25519)")]
    Dsa,
    #[error("key type {0:?} is not accepted; use Ed25519, ECDSA, RSA (>= 3072 bits) or a FIDO key")]
    Unsupported(String),
    #[error("RSA key has {0} bits; at least 3072 are required (or use Ed25519)")]
    RsaTooShort(usize),
    #[error("public_key does not parse as an OpenSSH public key: {0}")]
    Malformed(String),
    #[error("public_key's algorithm name does not match its encoded key")]
    AlgorithmMismatch,
    #[error("public_key has trailing or non-canonical data after the key")]
    NonCanonical,
}

impl SubjectKey {
    pub const MIN_RSA_BITS: usize = 3072;
    /// 16 KiB covers an 8192-bit RSA key with a long comment.
    pub const MAX_LINE: usize = 16 * 1024;

    /// Parse one OpenSSH public key line. The comment is dropped: it is not
    /// part of what gets certified and could carry anything.
    pub fn parse(line: &str) -> Result<Self, SubjectKeyError> {
        let line = line.trim_matches(|c| c == ' ' || c == '\n' || c == '\r' || c == '\t');
        if line.is_empty() {
            return Err(SubjectKeyError::Empty);
        }
        if line.len() > Self::MAX_LINE {
            return Err(SubjectKeyError::TooLong);
        }
        if line.contains(['\n', '\r', '\0']) {
            return Err(SubjectKeyError::NotOneLine);
        }
        let mut fields = line.split_ascii_whitespace();
        let algo = fields.next().ok_or(SubjectKeyError::Empty)?;
        let blob_b64 = fields.next().ok_or(SubjectKeyError::NotOneLine)?;
        if algo.contains("-cert-v01@openssh.com") {
            return Err(SubjectKeyError::Certificate);
        }
        if algo == "ssh-dss" {
            return Err(SubjectKeyError::Dsa);
        }
        let blob = base64::engine::general_purpose::STANDARD
            .decode(blob_b64)
            .map_err(|e| SubjectKeyError::Malformed(format!("base64: {e}")))?;
        let key_data = KeyData::from_bytes_strict(&blob)?;
        if key_data.algorithm().as_str() != algo {
            return Err(SubjectKeyError::AlgorithmMismatch);
        }
        let key = PublicKey::new(key_data, "");
        match key.algorithm() {
            Algorithm::Ed25519 | Algorithm::SkEd25519 | Algorithm::SkEcdsaSha2NistP256 => {}
            Algorithm::Ecdsa { curve } => match curve {
                EcdsaCurve::NistP256 | EcdsaCurve::NistP384 | EcdsaCurve::NistP521 => {}
            },
            Algorithm::Rsa { .. } => {
                let bits = rsa_bits(key.key_data());
                if bits < Self::MIN_RSA_BITS {
                    return Err(SubjectKeyError::RsaTooShort(bits));
                }
            }
            Algorithm::Dsa => return Err(SubjectKeyError::Dsa),
            other => return Err(SubjectKeyError::Unsupported(other.as_str().to_owned())),
        }
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        Ok(SubjectKey { key, fingerprint })
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.key
    }

    pub fn key_data(&self) -> &KeyData {
        self.key.key_data()
    }

    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The SSH algorithm name, e.g. `ssh-ed25519`.
    pub fn algorithm(&self) -> String {
        self.key.algorithm().as_str().to_owned()
    }

    /// True when this is the same key as `other` (e.g. a CA's own key).
    pub fn same_key(&self, other: &KeyData) -> bool {
        self.key.key_data() == other
    }
}

/// Decoding that refuses trailing bytes and non-canonical encodings: the key
/// must re-encode to exactly the bytes we were sent.
trait StrictDecode: Sized {
    fn from_bytes_strict(blob: &[u8]) -> Result<Self, SubjectKeyError>;
}

impl StrictDecode for KeyData {
    fn from_bytes_strict(blob: &[u8]) -> Result<Self, SubjectKeyError> {
        use ssh_encoding::{Decode, Encode};
        let mut reader = blob;
        let kd =
            KeyData::decode(&mut reader).map_err(|e| SubjectKeyError::Malformed(e.to_string()))?;
        if !reader.is_empty() {
            return Err(SubjectKeyError::NonCanonical);
        }
        let mut again = Vec::with_capacity(blob.len());
        kd.encode(&mut again)
            .map_err(|e| SubjectKeyError::Malformed(e.to_string()))?;
        if again != blob {
            return Err(SubjectKeyError::NonCanonical);
        }
        Ok(kd)
    }
}

fn rsa_bits(kd: &KeyData) -> usize {
    match kd {
        KeyData::Rsa(rsa) => rsa
            .n
            .as_positive_bytes()
            .map(|b| {
                let lead = b.first().map(|x| x.leading_zeros() as usize).unwrap_or(8);
                b.len() * 8 - lead
            })
            .unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop";

    #[test]
    fn accepts_ed25519_and_drops_comment() {
        let k = SubjectKey::parse(ED).expect("valid");
        assert_eq!(k.algorithm(), "ssh-ed25519");
        assert!(k.fingerprint().starts_with("SHA256:"));
        assert_eq!(k.public_key().comment(), "");
    }

    #[test]
    fn refuses_bad_shapes() {
        assert_eq!(SubjectKey::parse("").unwrap_err(), SubjectKeyError::Empty);
        assert_eq!(
            SubjectKey::parse("ssh-ed25519").unwrap_err(),
            SubjectKeyError::NotOneLine
        );
        assert_eq!(
            SubjectKey::parse(&format!("{ED}\n{ED}")).unwrap_err(),
            SubjectKeyError::NotOneLine
        );
        assert!(matches!(
            SubjectKey::parse("ssh-ed25519 !!!notbase64").unwrap_err(),
            SubjectKeyError::Malformed(_)
        ));
        assert_eq!(
            SubjectKey::parse("ssh-ed25519-cert-v01@openssh.com AAAA").unwrap_err(),
            SubjectKeyError::Certificate
        );
        assert_eq!(
            SubjectKey::parse("ssh-dss AAAA").unwrap_err(),
            SubjectKeyError::Dsa
        );
    }

    #[test]
    fn refuses_trailing_garbage_in_blob() {
        let b64 = ED.split(' ').nth(1).expect("field");
        let mut blob = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("b64");
        blob.extend_from_slice(b"junk");
        let line = format!(
            "ssh-ed25519 {}",
            base64::engine::general_purpose::STANDARD.encode(&blob)
        );
        assert_eq!(
            SubjectKey::parse(&line).unwrap_err(),
            SubjectKeyError::NonCanonical
        );
    }

    #[test]
    fn refuses_algorithm_mismatch() {
        let b64 = ED.split(' ').nth(1).expect("field");
        let line = format!("ecdsa-sha2-nistp256 {b64}");
        assert_eq!(
            SubjectKey::parse(&line).unwrap_err(),
            SubjectKeyError::AlgorithmMismatch
        );
    }
}
