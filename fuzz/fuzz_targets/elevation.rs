//! Elevation input: the request body a user sends, and the role table and
//! decision documents Rego returns. Whatever is accepted holds the
//! invariants: a valid role name, a printable reason, grants never longer
//! than the role's maximum or the ceiling, 1-10 approvals.
#![no_main]
use ca_core::elevation::{
    ElevationRequest, Outcome, RoleTable, MAX_APPROVALS, enforce_approval, enforce_elevation,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks what the rest is.
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 3 {
        0 => {
            let Ok(body) = serde_json::from_slice::<ca_core::wire::ElevationCreate>(rest) else {
                return;
            };
            if let Ok(req) = ElevationRequest::parse(&body) {
                assert!(!req.reason.is_empty() && req.reason.len() <= 500);
                assert!(!ca_core::has_control_chars(&req.reason));
                assert!(!req.role.as_str().is_empty() && req.role.as_str().len() <= 64);
            }
        }
        1 => {
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(rest) else { return };
            if let Ok(table) = RoleTable::parse(Some(&value)) {
                for role in table.iter() {
                    assert!(!role.principals.is_empty());
                    assert!(role.max_ttl.as_secs() >= 1);
                }
            }
            let _ = enforce_approval(Some(&value));
        }
        _ => {
            let Ok(decision) = serde_json::from_slice::<serde_json::Value>(rest) else { return };
            let table = RoleTable::parse(Some(&serde_json::json!({
                "db-admin": {"principals": ["postgres"], "max_ttl_seconds": 3600}
            })))
            .expect("fixed table");
            let role = table.iter().next().expect("one role");
            let req = ElevationRequest::parse(&ca_core::wire::ElevationCreate {
                role: "db-admin".into(),
                ttl_seconds: Some(1800),
                reason: "INC-1".into(),
            })
            .expect("fixed request");
            let ceiling = ca_core::Ttl::from_secs(7200).expect("ttl");
            match enforce_elevation(Some(&decision), role, &req, ceiling) {
                Ok(Outcome::Approve { ttl, .. }) => assert!(ttl.as_secs() <= 1800),
                Ok(Outcome::Pending { ttl, approvals, .. }) => {
                    assert!(ttl.as_secs() <= 1800);
                    assert!((1..=MAX_APPROVALS).contains(&approvals));
                }
                Ok(Outcome::Deny { reasons }) => assert!(!reasons.is_empty()),
                Err(_) => {}
            }
        }
    }
});
