//! Cross-checks `ca_core::krl` against the real OpenSSH `ssh-keygen`: every
//! KRL we write must load, and `ssh-keygen -Q` must agree with `is_revoked`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::LazyLock;

use ca_core::krl::{KrlSpec, RevokedCerts, is_key_revoked, is_revoked, write_krl};
use proptest::prelude::*;
use ssh_key::public::KeyData;
use ssh_key::{Certificate, HashAlg, PublicKey};
use tempfile::TempDir;

/// Plain keys made by ssh-keygen: two CAs, then five users.
const KEYS: &[(&str, &[&str])] = &[
    ("ca1", &["-t", "ed25519"]),
    ("ca2", &["-t", "ecdsa", "-b", "256"]),
    ("u0", &["-t", "ed25519"]),
    ("u1", &["-t", "ed25519"]),
    ("u2", &["-t", "ed25519"]),
    ("u3", &["-t", "ecdsa", "-b", "256"]),
    ("u4", &["-t", "rsa", "-b", "2048"]),
];
const CA1: usize = 0;
const CA2: usize = 1;

const MAX_ID: &str = "dave serial=18446744073709551615";

/// Certificates signed by ssh-keygen: (label, user key, CA key, serial, key ID).
/// Same serials and key IDs recur under both CAs and across users on purpose.
const CERTS: &[(&str, &str, usize, u64, &str)] = &[
    ("u0/ca1/1", "u0", CA1, 1, "alice"),
    ("u1/ca1/2", "u1", CA1, 2, "bob"),
    ("u2/ca1/0", "u2", CA1, 0, "carol"),
    ("u0/ca2/1", "u0", CA2, 1, "alice"),
    ("u3/ca1/max", "u3", CA1, u64::MAX, MAX_ID),
    ("u4/ca2/1000", "u4", CA2, 1000, "zoë"),
    ("u1/ca1/3", "u1", CA1, 3, "alice"),
    ("u1/ca2/2", "u1", CA2, 2, "bob"),
];

struct Fixture {
    dir: TempDir,
    /// Public key files and their parsed keys, in `KEYS` order.
    keys: Vec<(PathBuf, KeyData)>,
    /// Certificate files and the parsed certificates, in `CERTS` order.
    certs: Vec<(PathBuf, Certificate)>,
}

/// Keys and certificates are made once per test binary: RSA keygen is slow.
static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut keys = Vec::new();
    for (name, args) in KEYS {
        let path = dir.path().join(name);
        ssh_keygen_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-N", "", "-C", name])
                .args(*args)
                .arg("-f")
                .arg(&path),
        );
        let public = path.with_extension("pub");
        let key = PublicKey::read_openssh_file(&public).expect("parse public key");
        keys.push((public, key.key_data().clone()));
    }
    let mut certs = Vec::new();
    for (i, (_, user, ca, serial, key_id)) in CERTS.iter().enumerate() {
        // ssh-keygen names the certificate after the key file, so give each
        // certificate its own copy of the user's public key.
        let subject = dir.path().join(format!("c{i}.pub"));
        fs::copy(dir.path().join(format!("{user}.pub")), &subject).expect("copy");
        ssh_keygen_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-s"])
                .arg(dir.path().join(KEYS[*ca].0))
                .args(["-I", key_id, "-z", &serial.to_string()])
                .args(["-n", "someone", "-V", "+1h"])
                .arg(&subject),
        );
        let path = dir.path().join(format!("c{i}-cert.pub"));
        let text = fs::read_to_string(&path).expect("read cert");
        let cert = Certificate::from_openssh(&text).expect("parse cert");
        assert_eq!((cert.serial(), cert.key_id()), (*serial, *key_id));
        certs.push((path, cert));
    }
    Fixture { dir, keys, certs }
});

fn ssh_keygen_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run ssh-keygen");
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn key(i: usize) -> KeyData {
    FIXTURE.keys[i].1.clone()
}

fn key_named(name: &str) -> KeyData {
    key(KEYS.iter().position(|(n, _)| *n == name).expect("key name"))
}

/// Write `krl` to a fresh file and ask `ssh-keygen -Q` about each of
/// `files`: `true` means revoked. Fails the test if the KRL does not load.
fn ssh_keygen_query(krl: &[u8], files: &[&Path]) -> Vec<bool> {
    let dir = tempfile::tempdir_in(FIXTURE.dir.path()).expect("tempdir");
    let krl_path = dir.path().join("krl");
    fs::write(&krl_path, krl).expect("write krl");
    let out = Command::new("ssh-keygen")
        .arg("-Q")
        .arg("-f")
        .arg(&krl_path)
        .args(files)
        .output()
        .expect("run ssh-keygen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A KRL that does not parse exits 255 ("Invalid KRL file ...").
    assert!(
        matches!(out.status.code(), Some(0 | 1)) && stderr.trim().is_empty(),
        "ssh-keygen -Q rejected our KRL: {}\n{stderr}",
        out.status
    );
    let verdicts: Vec<bool> = stdout
        .lines()
        .zip(files)
        .map(|(line, file)| {
            assert!(line.starts_with(&*file.to_string_lossy()), "{line}");
            match line.rsplit_once(": ") {
                Some((_, "ok")) => false,
                Some((_, "REVOKED")) => true,
                _ => panic!("unexpected ssh-keygen -Q line: {line}"),
            }
        })
        .collect();
    assert_eq!(verdicts.len(), files.len(), "{stdout}");
    // Exit status 1 means "at least one revoked".
    assert_eq!(out.status.code() == Some(1), verdicts.contains(&true));
    verdicts
}

/// What was revoked, by label: certificates from `CERTS`, plain keys from `KEYS`.
#[derive(Debug, PartialEq)]
struct Revoked {
    certs: Vec<&'static str>,
    keys: Vec<&'static str>,
}

/// Write `spec`, check that `ssh-keygen -Q` agrees with `is_revoked` and
/// `is_key_revoked` on every fixture certificate and key, and return what
/// was revoked.
fn check(spec: &KrlSpec) -> Revoked {
    let krl = write_krl(spec).expect("write_krl");
    let f = &*FIXTURE;
    let files: Vec<&Path> = f
        .certs
        .iter()
        .map(|(p, _)| p.as_path())
        .chain(f.keys.iter().map(|(p, _)| p.as_path()))
        .collect();
    let theirs = ssh_keygen_query(&krl, &files);
    let ours: Vec<bool> = f
        .certs
        .iter()
        .map(|(_, c)| is_revoked(spec, c))
        .chain(f.keys.iter().map(|(_, k)| is_key_revoked(spec, k)))
        .collect();
    let theirs = revoked(&theirs);
    assert_eq!(revoked(&ours), theirs, "ours vs ssh-keygen -Q, {spec:?}");
    theirs
}

/// Label the verdicts of `check`: certificates first, then plain keys.
fn revoked(verdicts: &[bool]) -> Revoked {
    let (certs, keys) = verdicts.split_at(CERTS.len());
    let pick = |labels: Vec<&'static str>, verdicts: &[bool]| {
        labels
            .into_iter()
            .zip(verdicts)
            .filter(|(_, r)| **r)
            .map(|(l, _)| l)
            .collect()
    };
    Revoked {
        certs: pick(CERTS.iter().map(|c| c.0).collect(), certs),
        keys: pick(KEYS.iter().map(|k| k.0).collect(), keys),
    }
}

fn revoke_certs(ca: usize, serials: &[u64], key_ids: &[&str]) -> RevokedCerts {
    RevokedCerts {
        ca_key: key(ca),
        serials: serials.to_vec(),
        key_ids: key_ids.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn empty_krl_revokes_nothing() {
    let none = Revoked {
        certs: vec![],
        keys: vec![],
    };
    assert_eq!(check(&KrlSpec::default()), none);
    // Serials and IDs that no fixture certificate of that CA carries.
    let spec = KrlSpec {
        certs: vec![
            revoke_certs(CA1, &[4, 1000, u64::MAX - 1], &["zoë", "Alice", "alice "]),
            revoke_certs(CA2, &[3, u64::MAX], &["carol", MAX_ID]),
        ],
        ..Default::default()
    };
    assert_eq!(check(&spec), none);
}

#[test]
fn revokes_by_serial() {
    let spec = KrlSpec {
        certs: vec![revoke_certs(CA1, &[2, u64::MAX], &[])],
        ..Default::default()
    };
    // Serial 2 of ca2 is a different certificate.
    assert_eq!(check(&spec).certs, ["u1/ca1/2", "u3/ca1/max"]);

    let spec = KrlSpec {
        certs: vec![revoke_certs(CA2, &[1000, 1], &[])],
        ..Default::default()
    };
    assert_eq!(check(&spec).certs, ["u0/ca2/1", "u4/ca2/1000"]);
}

#[test]
fn revokes_by_key_id() {
    let spec = KrlSpec {
        certs: vec![revoke_certs(CA1, &[], &["alice", "carol"])],
        ..Default::default()
    };
    // Every ca1 certificate named alice, and carol's, which has serial 0 and
    // so can only be revoked by key ID.
    assert_eq!(check(&spec).certs, ["u0/ca1/1", "u2/ca1/0", "u1/ca1/3"]);

    let spec = KrlSpec {
        certs: vec![
            revoke_certs(CA2, &[], &["zoë"]),
            revoke_certs(CA1, &[], &[MAX_ID]),
        ],
        ..Default::default()
    };
    assert_eq!(check(&spec).certs, ["u3/ca1/max", "u4/ca2/1000"]);
}

#[test]
fn revokes_by_key() {
    let spec = KrlSpec {
        keys: vec![key_named("u1"), key_named("u4")],
        ..Default::default()
    };
    assert_eq!(
        check(&spec),
        Revoked {
            certs: vec!["u1/ca1/2", "u4/ca2/1000", "u1/ca1/3", "u1/ca2/2"],
            keys: vec!["u1", "u4"],
        }
    );
}

#[test]
fn revoking_a_ca_key_revokes_its_certificates() {
    let spec = KrlSpec {
        keys: vec![key(CA2)],
        ..Default::default()
    };
    assert_eq!(
        check(&spec),
        Revoked {
            certs: vec!["u0/ca2/1", "u4/ca2/1000", "u1/ca2/2"],
            keys: vec!["ca2"],
        }
    );
}

/// `ssh-keygen -Q -l` prints a KRL: ours must list, with what we put in.
#[test]
fn ssh_keygen_lists_our_krl() {
    let spec = KrlSpec {
        version: 42,
        generated_at: 1_800_000_000,
        comment: "jitssh test KRL".into(),
        certs: vec![revoke_certs(CA1, &[7, 2, 7], &["bob", "zoë"])],
        keys: vec![key_named("u0")],
    };
    let dir = tempfile::tempdir_in(FIXTURE.dir.path()).expect("tempdir");
    let krl = dir.path().join("krl");
    fs::write(&krl, write_krl(&spec).expect("krl")).expect("write");
    let out = ssh_keygen_ok(
        Command::new("ssh-keygen")
            .args(["-Q", "-l", "-f"])
            .arg(&krl),
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    let ca_fp = key(CA1).fingerprint(HashAlg::Sha256).to_string();
    // ssh-keygen prints hashes from a SHA256 section in hex, not base64.
    let u0_hash: String = key_named("u0")
        .fingerprint(HashAlg::Sha256)
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for expected in [
        "# KRL version 42".to_string(),
        "# Comment: jitssh test KRL".into(),
        format!("hash: SHA256:{u0_hash}"),
        format!("# CA key ssh-ed25519 {ca_fp}"),
        "serial: 2\nserial: 7\nid: bob\nid: zoë".into(),
    ] {
        assert!(
            listing.contains(&expected),
            "{expected:?} not in:\n{listing}"
        );
    }
}

/// For sparse serials `ssh-keygen -k` also writes a plain serial list, so the
/// two KRLs must be identical once the generation time is aligned.
#[test]
fn matches_ssh_keygen_k_byte_for_byte() {
    let ids = ["zoë", "alice", "Bob", MAX_ID];
    let serials = [100_000, 5, u64::MAX];
    let hashed = [key_named("u3"), key_named("u0"), key(CA2)];

    let dir = tempfile::tempdir_in(FIXTURE.dir.path()).expect("tempdir");
    let mut lines = String::new();
    for s in serials {
        lines += &format!("serial: {s}\n");
    }
    for id in ids {
        lines += &format!("id: {id}\n");
    }
    for k in &hashed {
        lines += &format!("hash: {}\n", k.fingerprint(HashAlg::Sha256));
    }
    let spec_file = dir.path().join("spec");
    fs::write(&spec_file, lines).expect("write spec");
    let reference = dir.path().join("reference.krl");
    ssh_keygen_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-k", "-f"])
            .arg(&reference)
            .arg("-s")
            .arg(&FIXTURE.keys[CA1].0)
            .args(["-z", "1234", "-C", "from jitssh"])
            .arg(&spec_file),
    );
    let reference = fs::read(reference).expect("read reference");
    // generated_date follows magic (8), format version (4), krl_version (8).
    let generated_at = u64::from_be_bytes(reference[20..28].try_into().expect("8 bytes"));

    let spec = KrlSpec {
        version: 1234,
        generated_at,
        comment: "from jitssh".into(),
        certs: vec![revoke_certs(CA1, &serials, &ids)],
        keys: hashed.to_vec(),
    };
    assert_eq!(write_krl(&spec).expect("krl"), reference);
}

fn spec_strategy() -> impl Strategy<Value = KrlSpec> {
    let serial = prop_oneof![
        3 => prop::sample::select(vec![1u64, 2, 3, 4, 999, 1000, 1001, u64::MAX - 1, u64::MAX]),
        1 => 1..=u64::MAX,
    ];
    let key_id = prop_oneof![
        3 => prop::sample::select(vec!["alice", "bob", "carol", "zoë", MAX_ID, "Alice", "dave"])
            .prop_map(String::from),
        1 => "[a-z ]{1,6}",
    ];
    let per_ca = (
        prop::collection::vec(serial, 0..5),
        prop::collection::vec(key_id, 0..4),
    );
    (
        any::<u64>(),
        prop::collection::vec((0..2usize, per_ca), 0..4),
        prop::sample::subsequence((0..KEYS.len()).collect::<Vec<_>>(), 0..=3),
    )
        .prop_map(|(version, certs, keys)| KrlSpec {
            version,
            generated_at: 1_800_000_000,
            comment: String::new(),
            certs: certs
                .into_iter()
                .map(|(ca, (serials, key_ids))| RevokedCerts {
                    ca_key: key(ca),
                    serials,
                    key_ids,
                })
                .collect(),
            keys: keys.into_iter().map(key).collect(),
        })
}

proptest! {
    // Each case runs ssh-keygen once over all 15 fixture files.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn ssh_keygen_agrees_with_is_revoked(spec in spec_strategy()) {
        check(&spec);
    }
}
