//! Policy sets and inputs for the policy module's unit tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;

use super::engine::PolicyEngine;
use super::error::PolicyError;
use super::files::PolicyFiles;
use super::load::Prepared;
use super::testing::HOST_SAMPLE_INPUT;

/// A policy set of these `(name, text)` files.
pub(super) fn files(list: &[(&str, &str)]) -> PolicyFiles {
    let mut files: Vec<(String, String)> = list
        .iter()
        .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
        .collect();
    files.sort();
    PolicyFiles {
        origin: "test".into(),
        files,
    }
}

/// An engine serving these files, if they build and pass their tests.
pub(super) fn engine(list: &[(&str, &str)]) -> Result<PolicyEngine, PolicyError> {
    let serving = Prepared::build(&files(list))?.into_serving()?;
    Ok(PolicyEngine::new(None, serving))
}

/// A human asking for a user certificate, as the default policy expects.
pub(super) fn sample_input() -> serde_json::Value {
    json!({
        "identity": {
            "kind": "human", "issuer": "https://idp.example.com", "subject": "u1",
            "email": "alice@example.com", "email_verified": true,
            "groups": ["sre"], "login": "alice", "login_problem": null, "claims": {}
        },
        "request": {
            "kind": "user_cert", "principals": null, "ttl_seconds": null,
            "public_key": {"type": "ssh-ed25519", "fingerprint": "SHA256:x"},
            "reason": null, "source_ip": "192.0.2.1"
        },
        "time": {"unix": 1_767_225_600u64, "unix_ns": 1_767_225_600_000_000_000i64}
    })
}

/// The documented host input, asking for `hostnames` with `authorized` on record.
pub(super) fn host_input(hostnames: &[&str], authorized: &[&str]) -> serde_json::Value {
    let mut i: serde_json::Value =
        serde_json::from_str(HOST_SAMPLE_INPUT).expect("sample host input");
    i["request"]["hostnames"] = json!(hostnames);
    i["request"]["authorized_hostnames"] = json!(authorized);
    i
}
