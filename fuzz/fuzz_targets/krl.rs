//! The KRL writer's input: any serials, key IDs and comments either produce a
//! KRL with the right magic or a typed error.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    version: u64,
    serials: Vec<u64>,
    key_ids: Vec<String>,
    comment: String,
    keys: Vec<[u8; 32]>,
}

fuzz_target!(|input: Input| {
    use ssh_key::public::{Ed25519PublicKey, KeyData};
    let ca = KeyData::Ed25519(Ed25519PublicKey([7; 32]));
    let mut certs = ca_core::krl::RevokedCerts::new(ca);
    certs.serials = input.serials;
    certs.key_ids = input.key_ids;
    let spec = ca_core::krl::KrlSpec {
        version: input.version,
        generated_at: 0,
        comment: input.comment,
        certs: vec![certs],
        keys: input.keys.into_iter().map(|k| KeyData::Ed25519(Ed25519PublicKey(k))).collect(),
    };
    if let Ok(bytes) = ca_core::krl::write_krl(&spec) {
        assert!(bytes.starts_with(ca_core::krl::KRL_MAGIC));
    }
});
