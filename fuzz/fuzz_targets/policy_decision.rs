//! Decision documents as Rego might return them: whatever `enforce` accepts
//! holds every invariant.
#![no_main]
use libfuzzer_sys::fuzz_target;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

fuzz_target!(|data: &[u8]| {
    let Ok(decision) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let req = ca_core::CertRequest::parse(&ca_core::wire::UserCertRequest {
        public_key: KEY.into(),
        principals: Some(vec!["alice".into(), "web".into()]),
        ttl_seconds: Some(600),
        reason: None,
    })
    .expect("valid request");
    let limits = ca_core::Limits::new(ca_core::Ttl::from_secs(3600).expect("ttl"));
    if let Ok(g) = ca_core::policy::enforce(Some(&decision), &req, &limits) {
        assert!(!g.principals().is_empty());
        assert!(g.principals().iter().all(|p| p.as_str() == "alice" || p.as_str() == "web"));
        assert!(g.ttl().as_secs() <= 600);
        assert!(g.extensions().iter().all(|e| limits.allowed_extensions.contains(e)));
    }
});
