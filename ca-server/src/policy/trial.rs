//! "Try it": one decision of a policy snapshot on an input a person typed,
//! and what the server's invariants (ca-core's `enforce*`) would make of it.
//! Nothing is issued and nothing is stored: this is `jitssh-ca policy eval`
//! for the serving policy, with every decision the server asks.

use std::time::Duration;

use ca_core::hostname::HostName;
use ca_core::request::CertRequest;
use ca_core::{Limits, Principal, Refusal, SubjectKey, Ttl};
use serde_json::Value;

use super::eval::PolicySnapshot;
use super::files::EMBEDDED_FILES;

/// Largest input accepted (the documented inputs are about 1 KiB).
pub const MAX_INPUT: usize = 64 * 1024;

/// A decision the server asks the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrialDecision {
    /// `data.jitssh.decision`: a user (or workload) certificate.
    User,
    /// `data.jitssh.host_decision`.
    Host,
    /// `data.jitssh.elevation_decision`: a role request.
    Elevation,
    /// `data.jitssh.approval_decision`: one approver's vote.
    Approval,
}

impl TrialDecision {
    pub const ALL: [TrialDecision; 4] = [Self::User, Self::Host, Self::Elevation, Self::Approval];

    /// The form's value.
    pub fn name(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Host => "host",
            Self::Elevation => "elevation",
            Self::Approval => "approval",
        }
    }

    /// What a person reads.
    pub fn label(self) -> &'static str {
        match self {
            Self::User => "User certificate (decision)",
            Self::Host => "Host certificate (host_decision)",
            Self::Elevation => "Role request (elevation_decision)",
            Self::Approval => "Approval vote (approval_decision)",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The documented example input shipped with the default policy.
    pub fn example_input(self) -> &'static str {
        let file = match self {
            Self::User => "example-input.json",
            Self::Host => "example-host-input.json",
            Self::Elevation => "example-elevation-input.json",
            Self::Approval => "example-approval-input.json",
        };
        EMBEDDED_FILES
            .iter()
            .find(|(name, _)| *name == file)
            .map_or("{}", |(_, text)| text)
    }
}

/// One trial's result.
#[derive(Debug, Clone)]
pub struct Trial {
    /// The raw decision; `None` when undefined (the server denies).
    pub decision: Option<Value>,
    /// The decision's `reasons`, when it gives them.
    pub reasons: Vec<String>,
    /// What the server would do with it, in words.
    pub verdict: String,
    /// Whether that is a grant (certificate, approval) rather than a refusal.
    pub granted: bool,
    pub policy_hash: String,
    pub elapsed: Duration,
}

/// Why an input was not tried.
#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    #[error("the input is {0} bytes; at most {MAX_INPUT} are accepted")]
    TooLarge(usize),
    #[error("the input is not JSON: {message} (line {line}, column {column})")]
    Json {
        message: String,
        line: usize,
        column: usize,
    },
    #[error("the input must be a JSON object, like the example")]
    NotObject,
    /// The policy could not decide (an error, a timeout, no such rule):
    /// the server denies in that case.
    #[error("{0}")]
    Policy(#[from] super::error::PolicyError),
}

/// Evaluate `decision` of `policy` on `text`, and apply the server's
/// invariants: `limits` for user certificates, `host_max_ttl` for hosts.
pub fn try_decision(
    policy: &PolicySnapshot,
    decision: TrialDecision,
    text: &str,
    limits: &Limits,
    host_max_ttl: Ttl,
) -> Result<Trial, TrialError> {
    if text.len() > MAX_INPUT {
        return Err(TrialError::TooLarge(text.len()));
    }
    let input: Value = serde_json::from_str(text).map_err(|e| TrialError::Json {
        message: e.to_string(),
        line: e.line(),
        column: e.column(),
    })?;
    if !input.is_object() {
        return Err(TrialError::NotObject);
    }
    let eval = match decision {
        TrialDecision::User => policy.evaluate(&input)?,
        TrialDecision::Host => policy.evaluate_host(&input)?,
        TrialDecision::Elevation => policy.evaluate_elevation(&input)?,
        TrialDecision::Approval => policy.evaluate_approval(&input)?,
    };
    let d = eval.decision.as_ref();
    let reasons = d
        .and_then(|d| d.get("reasons"))
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let (granted, verdict) = match decision {
        TrialDecision::User => user_verdict(d, &input, limits),
        TrialDecision::Host => host_verdict(d, &input, host_max_ttl),
        TrialDecision::Elevation | TrialDecision::Approval => (
            false,
            "Not checked here: the server checks this decision against the role table, the request and its votes when a real request is made.".into(),
        ),
    };
    Ok(Trial {
        decision: eval.decision,
        reasons,
        verdict,
        granted,
        policy_hash: eval.policy_hash,
        elapsed: eval.elapsed,
    })
}

/// `enforce` on the request the input describes (its principals and TTL;
/// the key does not matter to the rules, so a fixed one stands in).
fn user_verdict(decision: Option<&Value>, input: &Value, limits: &Limits) -> (bool, String) {
    let request = &input["request"];
    let principals = match &request["principals"] {
        Value::Null => None,
        Value::Array(list) => {
            let mut out = Vec::new();
            for p in list {
                match p.as_str().map(Principal::parse) {
                    Some(Ok(p)) => out.push(p),
                    _ => {
                        return (
                            false,
                            format!(
                                "The request names an invalid principal ({p}); the server would refuse it before asking the policy."
                            ),
                        );
                    }
                }
            }
            (!out.is_empty()).then_some(out)
        }
        _ => {
            return (
                false,
                "request.principals must be null or a list of names.".into(),
            );
        }
    };
    let ttl = match request["ttl_seconds"].as_u64().map(Ttl::from_secs) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => return (false, format!("request.ttl_seconds: {e}")),
    };
    let Some(public_key) = stand_in_key() else {
        return (false, "Not checked: no stand-in key.".into());
    };
    let req = CertRequest {
        public_key,
        principals,
        ttl,
        reason: None,
    };
    match ca_core::policy::enforce(decision, &req, limits) {
        Ok(grant) => (
            true,
            format!(
                "The CA would issue a certificate for {}, valid {} (role principals only under an active elevation grant).",
                grant
                    .principals()
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                duration(grant.ttl())
            ),
        ),
        Err(r) => (false, refusal(&r)),
    }
}

/// A lifetime as people say it: `30 min`, `2 h`, `90 s`.
fn duration(ttl: Ttl) -> String {
    match ttl.as_secs() {
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// `enforce_host` on the hostnames the input asks for.
fn host_verdict(decision: Option<&Value>, input: &Value, max_ttl: Ttl) -> (bool, String) {
    let mut requested = Vec::new();
    for h in input["request"]["hostnames"]
        .as_array()
        .into_iter()
        .flatten()
    {
        match h.as_str().map(HostName::parse) {
            Some(Ok(h)) => requested.push(h),
            _ => {
                return (
                    false,
                    format!("The request names an invalid hostname ({h})."),
                );
            }
        }
    }
    match ca_core::host::enforce_host(decision, &requested, max_ttl) {
        Ok(grant) => (
            true,
            format!(
                "The CA would issue a host certificate for {}, valid {}.",
                grant
                    .hostnames()
                    .iter()
                    .map(HostName::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                duration(grant.ttl())
            ),
        ),
        Err(r) => (false, refusal(&r)),
    }
}

fn refusal(r: &Refusal) -> String {
    match r {
        Refusal::Denied { reasons } => format!("Denied: {}", reasons.join("; ")),
        Refusal::PolicyError(m) => {
            format!("The server would deny: the decision breaks its rules ({m}).")
        }
    }
}

/// An Ed25519 key that stands in for the requester's.
fn stand_in_key() -> Option<SubjectKey> {
    let key = ssh_key::public::KeyData::Ed25519(ssh_key::public::Ed25519PublicKey([7; 32]));
    let line = ssh_key::PublicKey::new(key, "").to_openssh().ok()?;
    SubjectKey::parse(&line).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::policy::PolicyEngine;

    fn limits() -> Limits {
        Limits::new(Ttl::from_secs(86_400).unwrap())
    }

    #[test]
    fn every_example_decides_and_bad_input_says_where() {
        let policy = PolicyEngine::load_embedded_default().unwrap().snapshot();
        let ttl = Ttl::from_secs(3600).unwrap();
        for d in TrialDecision::ALL {
            let t = try_decision(&policy, d, d.example_input(), &limits(), ttl).unwrap();
            assert!(t.decision.is_some(), "{d:?}");
        }
        let user = try_decision(
            &policy,
            TrialDecision::User,
            TrialDecision::User.example_input(),
            &limits(),
            ttl,
        )
        .unwrap();
        assert!(user.granted, "{}", user.verdict);
        assert!(user.verdict.contains("alice"), "{}", user.verdict);
        match try_decision(
            &policy,
            TrialDecision::User,
            "{\n  \"a\": ,\n}",
            &limits(),
            ttl,
        ) {
            Err(TrialError::Json {
                line: 2, column: 8, ..
            }) => {}
            other => panic!("{other:?}"),
        }
        let big = format!("{{\"x\": \"{}\"}}", "a".repeat(MAX_INPUT));
        assert!(matches!(
            try_decision(&policy, TrialDecision::User, &big, &limits(), ttl),
            Err(TrialError::TooLarge(_))
        ));
        assert!(matches!(
            try_decision(&policy, TrialDecision::User, "[1]", &limits(), ttl),
            Err(TrialError::NotObject)
        ));
    }
}
