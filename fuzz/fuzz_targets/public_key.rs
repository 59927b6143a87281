//! OpenSSH public key lines: whatever parses re-encodes to a key of an accepted type.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(k) = ca_core::SubjectKey::parse(s)
    {
        let line = k.public_key().to_openssh().expect("re-encodes");
        let again = ca_core::SubjectKey::parse(&line).expect("round trips");
        assert_eq!(again.fingerprint(), k.fingerprint());
    }
});
