//! OpenSSH key revocation lists (KRLs): the binary file sshd reads through
//! `RevokedKeys`, written as OpenSSH's `PROTOCOL.krl` specifies.
//!
//! We write three kinds of record: per CA key, revoked certificate serials
//! (`KRL_SECTION_CERT_SERIAL_LIST`) and key IDs (`KRL_SECTION_CERT_KEY_ID`)
//! inside a `KRL_SECTION_CERTIFICATES` section; and plain keys revoked by the
//! SHA256 hash of their blob (`KRL_SECTION_FINGERPRINT_SHA256`, read by
//! OpenSSH ≥ 7.9). Signatures are deliberately absent: OpenSSH ≥ 9.4 refuses
//! signed KRLs, so a KRL is only as trustworthy as the channel that delivers it.
//!
//! The output is canonical: records are sorted and de-duplicated, so the same
//! set of revocations always yields the same bytes however the input was
//! ordered. With sparse serials it matches `ssh-keygen -k` byte for byte
//! (ssh-keygen switches to range and bitmap sections for dense serials; they
//! are smaller, not more expressive).

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};
use ssh_encoding::Encode;
use ssh_key::Certificate;
use ssh_key::public::KeyData;

/// `"SSHKRL\n\0"`, the first eight bytes of every KRL.
pub const KRL_MAGIC: &[u8; 8] = b"SSHKRL\n\0";
/// The only KRL format version that exists.
pub const KRL_FORMAT_VERSION: u32 = 1;

const SECTION_CERTIFICATES: u8 = 1;
const SECTION_FINGERPRINT_SHA256: u8 = 5;
const CERT_SECTION_SERIAL_LIST: u8 = 0x20;
const CERT_SECTION_KEY_ID: u8 = 0x23;

/// Everything one KRL revokes, plus its header fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KrlSpec {
    /// `krl_version`: should increase with every KRL published (a counter or
    /// a unix timestamp), so a host can tell which list is newer.
    pub version: u64,
    /// `generated_date`, unix seconds. Passed in: ca-core reads no clock.
    pub generated_at: u64,
    /// Free text shown by `ssh-keygen -Q -l`; no control characters.
    pub comment: String,
    /// Certificates revoked per CA key. Several entries for the same CA key
    /// are merged.
    pub certs: Vec<RevokedCerts>,
    /// Plain keys revoked outright: every certificate for such a key is
    /// revoked too, and so is every certificate signed by it if it is a CA.
    pub keys: Vec<KeyData>,
}

/// Certificates signed by one CA key, revoked by serial or by key ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedCerts {
    /// The CA key that signed the certificates (a plain key, as in
    /// `TrustedUserCAKeys`).
    pub ca_key: KeyData,
    /// Non-zero serials. Zero means "no serial" to OpenSSH: it never revokes
    /// by it, and refuses a KRL that lists it. Revoke such certificates by
    /// key ID.
    pub serials: Vec<u64>,
    /// Exact key IDs; not empty, no control characters.
    pub key_ids: Vec<String>,
}

impl RevokedCerts {
    /// Nothing revoked yet for `ca_key`.
    pub fn new(ca_key: KeyData) -> Self {
        RevokedCerts {
            ca_key,
            serials: Vec::new(),
            key_ids: Vec::new(),
        }
    }
}

/// Why a [`KrlSpec`] could not be written.
#[derive(Debug, thiserror::Error)]
pub enum KrlError {
    #[error(
        "serial 0 cannot be revoked (CA {ca}): OpenSSH treats 0 as \"no serial\" and rejects a KRL listing it, so sshd would refuse every key; revoke that certificate by key ID instead"
    )]
    ZeroSerial { ca: String },
    #[error(
        "empty key ID (CA {ca}): it would revoke every certificate issued without a key ID; revoke those by serial or by key instead"
    )]
    EmptyKeyId { ca: String },
    #[error(
        "key ID {key_id:?} (CA {ca}) contains control characters; certificates we issue never carry them"
    )]
    KeyIdControlChars { ca: String, key_id: String },
    #[error("KRL comment {0:?} contains control characters; use plain printable text")]
    CommentControlChars(String),
    #[error("encoding the KRL failed (a record longer than 4 GiB?): {0}")]
    Encoding(#[from] ssh_encoding::Error),
}

/// The revocations of a [`KrlSpec`], checked, sorted and de-duplicated: what
/// is actually written, in the order it is written.
struct Canonical<'a> {
    /// Keyed by the CA's public key blob; CAs with nothing revoked are absent.
    cas: BTreeMap<Vec<u8>, CaRecords<'a>>,
    key_hashes: BTreeSet<[u8; 32]>,
}

#[derive(Default)]
struct CaRecords<'a> {
    serials: BTreeSet<u64>,
    key_ids: BTreeSet<&'a str>,
}

impl<'a> Canonical<'a> {
    fn new(spec: &'a KrlSpec) -> Result<Self, KrlError> {
        if crate::has_control_chars(&spec.comment) {
            return Err(KrlError::CommentControlChars(crate::escape_control(
                &spec.comment,
            )));
        }
        let mut cas: BTreeMap<Vec<u8>, CaRecords<'a>> = BTreeMap::new();
        for rc in &spec.certs {
            let ca = || fingerprint(&rc.ca_key);
            if rc.serials.contains(&0) {
                return Err(KrlError::ZeroSerial { ca: ca() });
            }
            for id in &rc.key_ids {
                if id.is_empty() {
                    return Err(KrlError::EmptyKeyId { ca: ca() });
                }
                if crate::has_control_chars(id) {
                    return Err(KrlError::KeyIdControlChars {
                        ca: ca(),
                        key_id: crate::escape_control(id),
                    });
                }
            }
            if rc.serials.is_empty() && rc.key_ids.is_empty() {
                continue;
            }
            let records = cas.entry(key_blob(&rc.ca_key)?).or_default();
            records.serials.extend(&rc.serials);
            records
                .key_ids
                .extend(rc.key_ids.iter().map(String::as_str));
        }
        // Byte order of the hashes is the numeric big-endian order the spec
        // asks for.
        let key_hashes = spec.keys.iter().map(key_hash).collect::<Result<_, _>>()?;
        Ok(Canonical { cas, key_hashes })
    }
}

/// Serialise `spec` as a KRL file for sshd's `RevokedKeys`.
///
/// Fails only on input OpenSSH would misread or reject; see [`KrlError`].
pub fn write_krl(spec: &KrlSpec) -> Result<Vec<u8>, KrlError> {
    let canonical = Canonical::new(spec)?;
    let mut out = Vec::new();

    out.extend_from_slice(KRL_MAGIC);
    KRL_FORMAT_VERSION.encode(&mut out)?;
    spec.version.encode(&mut out)?;
    spec.generated_at.encode(&mut out)?;
    0u64.encode(&mut out)?; // flags: none defined
    b"".encode(&mut out)?; // reserved
    spec.comment.as_str().encode(&mut out)?;

    for (ca_blob, records) in &canonical.cas {
        let mut body = Vec::new();
        ca_blob.as_slice().encode(&mut body)?;
        b"".encode(&mut body)?; // reserved
        if !records.serials.is_empty() {
            let mut list = Vec::with_capacity(8 * records.serials.len());
            for serial in &records.serials {
                serial.encode(&mut list)?;
            }
            put_section(&mut body, CERT_SECTION_SERIAL_LIST, &list)?;
        }
        if !records.key_ids.is_empty() {
            let mut ids = Vec::new();
            for id in &records.key_ids {
                id.encode(&mut ids)?;
            }
            put_section(&mut body, CERT_SECTION_KEY_ID, &ids)?;
        }
        put_section(&mut out, SECTION_CERTIFICATES, &body)?;
    }

    if !canonical.key_hashes.is_empty() {
        let mut hashes = Vec::with_capacity(36 * canonical.key_hashes.len());
        for hash in &canonical.key_hashes {
            hash.encode(&mut hashes)?;
        }
        put_section(&mut out, SECTION_FINGERPRINT_SHA256, &hashes)?;
    }
    Ok(out)
}

/// Whether the KRL written from `spec` revokes `cert`, by the rules sshd
/// applies: the certified key or the signing CA key is revoked as a plain
/// key, or the signing CA's section lists the certificate's key ID or its
/// (non-zero) serial. Validity dates and signatures are not checked.
pub fn is_revoked(spec: &KrlSpec, cert: &Certificate) -> bool {
    let ca = cert.signature_key();
    is_key_revoked(spec, cert.public_key())
        || is_key_revoked(spec, ca)
        || spec.certs.iter().filter(|rc| rc.ca_key == *ca).any(|rc| {
            rc.key_ids.iter().any(|id| id == cert.key_id())
                || (cert.serial() != 0 && rc.serials.contains(&cert.serial()))
        })
}

/// Whether the KRL written from `spec` revokes the plain key `key`.
pub fn is_key_revoked(spec: &KrlSpec, key: &KeyData) -> bool {
    // Compare as the KRL does, by blob hash, not by `KeyData`'s `Eq`.
    let Ok(hash) = key_hash(key) else {
        return false;
    };
    spec.keys
        .iter()
        .any(|k| key_hash(k).is_ok_and(|h| h == hash))
}

fn put_section(out: &mut Vec<u8>, kind: u8, body: &[u8]) -> Result<(), KrlError> {
    kind.encode(out)?;
    body.encode(out)?;
    Ok(())
}

fn key_blob(key: &KeyData) -> Result<Vec<u8>, ssh_encoding::Error> {
    let mut blob = Vec::new();
    key.encode(&mut blob)?;
    Ok(blob)
}

fn key_hash(key: &KeyData) -> Result<[u8; 32], ssh_encoding::Error> {
    Ok(Sha256::digest(key_blob(key)?).into())
}

fn fingerprint(key: &KeyData) -> String {
    key.fingerprint(ssh_key::HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::CaSigner;
    use proptest::prelude::*;
    use ssh_key::certificate::{Builder, CertType};

    fn key(seed: u8) -> KeyData {
        CaSigner::new(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
            .public_key()
            .clone()
    }

    fn cert(ca_seed: u8, subject_seed: u8, serial: u64, key_id: &str) -> Certificate {
        let ca = CaSigner::new(ed25519_dalek::SigningKey::from_bytes(&[ca_seed; 32]));
        let mut b = Builder::new([0u8; 16], key(subject_seed), 1, 2).expect("builder");
        b.serial(serial).expect("serial");
        b.key_id(key_id).expect("key id");
        b.cert_type(CertType::User).expect("type");
        b.valid_principal("p").expect("principal");
        b.sign(&ca).expect("sign")
    }

    /// A cursor over KRL bytes, for reading back what we wrote.
    struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> &'a [u8] {
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            head
        }
        fn u8(&mut self) -> u8 {
            self.take(1)[0]
        }
        fn u32(&mut self) -> u32 {
            u32::from_be_bytes(self.take(4).try_into().expect("4 bytes"))
        }
        fn u64(&mut self) -> u64 {
            u64::from_be_bytes(self.take(8).try_into().expect("8 bytes"))
        }
        fn string(&mut self) -> &'a [u8] {
            let n = self.u32() as usize;
            self.take(n)
        }
        fn section(&mut self) -> (u8, Reader<'a>) {
            let kind = self.u8();
            (kind, Reader(self.string()))
        }
        fn u64s(mut self) -> Vec<u64> {
            std::iter::from_fn(|| (!self.0.is_empty()).then(|| self.u64())).collect()
        }
        fn strings(mut self) -> Vec<&'a [u8]> {
            std::iter::from_fn(|| (!self.0.is_empty()).then(|| self.string())).collect()
        }
        /// Skip the header, checking its fixed parts.
        fn after_header(bytes: &'a [u8]) -> Self {
            let mut r = Reader(bytes);
            assert_eq!(r.take(8), KRL_MAGIC);
            assert_eq!(r.u32(), 1);
            r.take(24);
            assert_eq!(r.string(), b"");
            r.string();
            r
        }
    }

    #[test]
    fn header_bytes() {
        let spec = KrlSpec {
            version: 0x0102_0304_0506_0708,
            generated_at: 1_800_000_000,
            comment: "jitssh".into(),
            ..Default::default()
        };
        let mut expected = b"SSHKRL\n\0".to_vec();
        expected.extend([0, 0, 0, 1]);
        expected.extend([1, 2, 3, 4, 5, 6, 7, 8]);
        expected.extend(1_800_000_000u64.to_be_bytes());
        expected.extend([0; 8]); // flags
        expected.extend([0; 4]); // reserved ""
        expected.extend([0, 0, 0, 6]);
        expected.extend(b"jitssh");
        assert_eq!(write_krl(&spec).expect("krl"), expected);
    }

    #[test]
    fn empty_krl_is_just_a_header() {
        let bytes = write_krl(&KrlSpec::default()).expect("krl");
        assert_eq!(bytes.len(), 8 + 4 + 3 * 8 + 4 + 4);
        assert!(Reader::after_header(&bytes).0.is_empty());
        // A CA entry that revokes nothing writes no section.
        let spec = KrlSpec {
            certs: vec![RevokedCerts::new(key(1))],
            ..Default::default()
        };
        assert_eq!(write_krl(&spec).expect("krl"), bytes);
    }

    #[test]
    fn sections_are_sorted_and_deduplicated() {
        let (ca, k1, k2) = (key(1), key(2), key(3));
        let spec = KrlSpec {
            certs: vec![
                RevokedCerts {
                    ca_key: ca.clone(),
                    serials: vec![9, 1, u64::MAX, 5, 1],
                    key_ids: vec!["bob".into(), "alice".into()],
                },
                RevokedCerts {
                    ca_key: ca.clone(),
                    serials: vec![5],
                    key_ids: vec!["alice".into(), "Zed".into()],
                },
            ],
            keys: vec![k1.clone(), k2.clone(), k1.clone()],
            ..Default::default()
        };
        let bytes = write_krl(&spec).expect("krl");
        let mut r = Reader::after_header(&bytes);

        let (kind, mut certs) = r.section();
        assert_eq!(kind, SECTION_CERTIFICATES);
        assert_eq!(certs.string(), key_blob(&ca).expect("blob"));
        assert_eq!(certs.string(), b"");
        let (kind, serials) = certs.section();
        assert_eq!(kind, CERT_SECTION_SERIAL_LIST);
        assert_eq!(serials.u64s(), [1, 5, 9, u64::MAX]);
        let (kind, ids) = certs.section();
        assert_eq!(kind, CERT_SECTION_KEY_ID);
        assert_eq!(ids.strings(), [&b"Zed"[..], b"alice", b"bob"]);
        assert!(certs.0.is_empty());

        let (kind, hashes) = r.section();
        assert_eq!(kind, SECTION_FINGERPRINT_SHA256);
        let mut expected = [key_hash(&k1).expect("h"), key_hash(&k2).expect("h")];
        expected.sort();
        let hashes = hashes.strings();
        assert_eq!(hashes, expected.iter().map(|h| &h[..]).collect::<Vec<_>>());
        // Our hash is the same as ssh-key's SHA256 fingerprint.
        assert!(hashes.contains(&k1.fingerprint(ssh_key::HashAlg::Sha256).as_bytes()));
        assert!(r.0.is_empty());
    }

    #[test]
    fn one_certificates_section_per_ca() {
        let spec = KrlSpec {
            certs: vec![
                RevokedCerts {
                    serials: vec![1],
                    ..RevokedCerts::new(key(1))
                },
                RevokedCerts {
                    key_ids: vec!["x".into()],
                    ..RevokedCerts::new(key(2))
                },
            ],
            ..Default::default()
        };
        let bytes = write_krl(&spec).expect("krl");
        let mut r = Reader::after_header(&bytes);
        let mut cas = vec![];
        while !r.0.is_empty() {
            let (kind, mut body) = r.section();
            assert_eq!(kind, SECTION_CERTIFICATES);
            cas.push(body.string().to_vec());
        }
        let mut expected = vec![key_blob(&key(1)).expect("b"), key_blob(&key(2)).expect("b")];
        expected.sort();
        assert_eq!(cas, expected);
    }

    #[test]
    fn refuses_what_openssh_would_misread() {
        let with = |serials: Vec<u64>, key_ids: Vec<&str>| KrlSpec {
            certs: vec![RevokedCerts {
                ca_key: key(1),
                serials,
                key_ids: key_ids.into_iter().map(String::from).collect(),
            }],
            ..Default::default()
        };
        assert!(matches!(
            write_krl(&with(vec![3, 0], vec![])),
            Err(KrlError::ZeroSerial { .. })
        ));
        assert!(matches!(
            write_krl(&with(vec![], vec!["a", ""])),
            Err(KrlError::EmptyKeyId { .. })
        ));
        for bad in ["a\nb", "nul\0", "esc\u{1b}[31m", "del\u{7f}"] {
            let err = write_krl(&with(vec![], vec![bad])).expect_err(bad);
            assert!(matches!(err, KrlError::KeyIdControlChars { .. }), "{bad:?}");
            assert!(!crate::has_control_chars(&err.to_string()), "{err}");
        }
        let spec = KrlSpec {
            comment: "line\nforged".into(),
            ..Default::default()
        };
        assert!(matches!(
            write_krl(&spec),
            Err(KrlError::CommentControlChars(_))
        ));
        // Unicode is fine.
        write_krl(&with(vec![1], vec!["zoë serial=1"])).expect("unicode key id");
    }

    #[test]
    fn revocation_rules() {
        let spec = KrlSpec {
            certs: vec![RevokedCerts {
                ca_key: key(1),
                serials: vec![7],
                key_ids: vec!["mallory".into()],
            }],
            keys: vec![key(20), key(30)],
            ..Default::default()
        };
        assert!(is_revoked(&spec, &cert(1, 10, 7, "alice")), "by serial");
        assert!(!is_revoked(&spec, &cert(2, 10, 7, "alice")), "other CA");
        assert!(!is_revoked(&spec, &cert(1, 10, 8, "alice")));
        assert!(is_revoked(&spec, &cert(1, 10, 0, "mallory")), "by key ID");
        assert!(!is_revoked(&spec, &cert(1, 10, 0, "mallory2")));
        assert!(is_revoked(&spec, &cert(1, 20, 8, "alice")), "by key");
        assert!(is_revoked(&spec, &cert(30, 10, 8, "alice")), "by CA key");
        assert!(is_key_revoked(&spec, &key(20)));
        assert!(!is_key_revoked(&spec, &key(10)));
        assert!(!is_key_revoked(&spec, &key(1)), "certs section ≠ CA key");
    }

    fn spec_strategy() -> impl Strategy<Value = KrlSpec> {
        let certs = prop::collection::vec(
            (
                0u8..3,
                prop::collection::vec(1u64..=u64::MAX, 0..6),
                prop::collection::vec("[a-z =0-9]{1,6}", 0..4),
            ),
            0..4,
        );
        (
            any::<u64>(),
            "[a-z ]{0,8}",
            certs,
            prop::collection::vec(0u8..4, 0..5),
        )
            .prop_map(|(version, comment, certs, keys)| KrlSpec {
                version,
                generated_at: 1_800_000_000,
                comment,
                certs: certs
                    .into_iter()
                    .map(|(ca, serials, key_ids)| RevokedCerts {
                        ca_key: key(ca + 1),
                        serials,
                        key_ids,
                    })
                    .collect(),
                keys: keys.into_iter().map(|k| key(k + 100)).collect(),
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Same revocations → same bytes, whatever the input order or
        /// duplication.
        #[test]
        fn output_is_canonical(spec in spec_strategy()) {
            let bytes = write_krl(&spec).expect("valid spec");
            prop_assert_eq!(&write_krl(&spec.clone()).expect("again"), &bytes);

            let mut shuffled = spec.clone();
            shuffled.certs.reverse();
            shuffled.keys.reverse();
            shuffled.keys.extend(spec.keys.iter().cloned());
            for rc in &mut shuffled.certs {
                rc.serials.reverse();
                rc.key_ids.reverse();
                rc.key_ids.extend(rc.key_ids.clone());
            }
            // Split every CA entry in two.
            shuffled.certs = shuffled
                .certs
                .into_iter()
                .flat_map(|rc| {
                    let ids = RevokedCerts { serials: vec![], ..rc.clone() };
                    let serials = RevokedCerts { key_ids: vec![], ..rc };
                    [serials, ids]
                })
                .collect();
            prop_assert_eq!(write_krl(&shuffled).expect("shuffled"), bytes);
        }
    }
}
