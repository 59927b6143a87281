//! The certificate request body: any bytes → JSON → `CertRequest`, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = serde_json::from_slice::<ca_core::wire::UserCertRequest>(data)
        && let Ok(req) = ca_core::CertRequest::parse(&body)
        && let Some(p) = &req.principals
    {
        assert!(!p.is_empty(), "parsed an empty principals list");
    }
});
