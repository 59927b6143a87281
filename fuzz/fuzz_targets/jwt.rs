//! ID tokens before signature verification: header and payload handling on
//! hostile input never panics and never accepts. The configured issuer is a
//! closed loopback port, so an input naming it fails on key fetch.
#![no_main]
use std::sync::OnceLock;

use ca_server::oidc::{IssuerConfig, TokenVerifier, VerifierOptions};
use libfuzzer_sys::fuzz_target;

fn env() -> &'static (tokio::runtime::Runtime, TokenVerifier) {
    static ENV: OnceLock<(tokio::runtime::Runtime, TokenVerifier)> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let cfg = IssuerConfig::new("http://127.0.0.1:9", vec!["jitssh".into()], ca_core::IdentityKind::Human);
        let v = rt.block_on(async { TokenVerifier::new(vec![cfg], VerifierOptions::default()) }).expect("verifier");
        (rt, v)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let (rt, v) = env();
    let res = rt.block_on(v.verify(token, 1_800_000_000));
    assert!(res.is_err(), "an unsigned or unknown-key token was accepted");
});
