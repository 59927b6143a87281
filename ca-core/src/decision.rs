//! Reading the policy's decision documents, for every decision the server
//! asks for (certificate, host, elevation, approval): an undefined or
//! ill-shaped decision becomes a [`Refusal`], the policy's reasons are
//! escaped, `allow` and `ttl_seconds` mean the same everywhere. What else a
//! decision says is its caller's to enforce.
//!
//! Each caller declares its decision's shape as a serde struct that refuses
//! unknown fields: a misspelt field is a policy bug, never silently ignored.

use serde::Deserialize;

use crate::ttl::Ttl;

/// Why the policy's decision grants nothing: no certificate, no elevation,
/// no say over someone's elevation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The policy said no, with its reasons.
    #[error("denied by policy: {}", .reasons.join("; "))]
    Denied { reasons: Vec<String> },
    /// The policy's answer broke a rule; deny and tell the operator.
    #[error("the policy returned an unusable decision: {0}")]
    PolicyError(String),
}

impl Refusal {
    pub(crate) fn denied(reason: impl Into<String>) -> Self {
        Refusal::Denied {
            reasons: vec![reason.into()],
        }
    }
}

/// Which decision is being read: refusals name it, and a denial without a
/// reason gets its `no_reason`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Decision {
    name: &'static str,
    no_reason: &'static str,
}

impl Decision {
    /// `data.jitssh.decision`, a user certificate.
    pub(crate) const CERT: Decision = Decision {
        name: "decision",
        no_reason: "denied by policy (no reason given)",
    };
    /// `data.jitssh.host_decision`.
    pub(crate) const HOST: Decision = Decision {
        name: "host decision",
        no_reason: "denied by the host policy (no reason given)",
    };
    /// `data.jitssh.elevation_decision`.
    pub(crate) const ELEVATION: Decision = Decision {
        name: "elevation decision",
        no_reason: "denied by policy (no reason given)",
    };
    /// `data.jitssh.approval_decision`.
    pub(crate) const APPROVAL: Decision = Decision {
        name: "approval decision",
        no_reason: "not an approver for this request (no reason given)",
    };

    /// The decision in its shape `T`, or a policy error: the rule was
    /// undefined (`None`), or the value is not an object, lacks a required
    /// field, has a wrong type anywhere or an unknown field. All of that is
    /// checked before anything the decision says is used, so a malformed
    /// decision is a policy error even when it also says no.
    pub(crate) fn read<T: for<'de> Deserialize<'de>>(
        self,
        decision: Option<&serde_json::Value>,
    ) -> Result<T, Refusal> {
        let decision = decision
            .ok_or_else(|| Refusal::PolicyError(format!("the {} is undefined", self.name)))?;
        // serde reads a struct from an array too, field by field in order:
        // `[true, ["root"], 3600]` (or a Rego set) would allow.
        if decision.is_array() {
            return Err(Refusal::PolicyError(format!(
                "malformed {}: an array, not an object",
                self.name
            )));
        }
        T::deserialize(decision)
            .map_err(|e| Refusal::PolicyError(format!("malformed {}: {e}", self.name)))
    }

    /// The policy's reasons, escaped: they reach terminals, logs and approvers.
    pub(crate) fn reasons(raw: &[String]) -> Vec<String> {
        raw.iter().map(|r| crate::escape_control(r)).collect()
    }

    /// The decision's (escaped) reasons when it allows; otherwise a denial
    /// with them.
    pub(crate) fn allow(self, allow: bool, reasons: &[String]) -> Result<Vec<String>, Refusal> {
        let reasons = Self::reasons(reasons);
        if allow {
            Ok(reasons)
        } else {
            Err(Refusal::Denied {
                reasons: self.denial_reasons(reasons),
            })
        }
    }

    /// The reasons a denial shows: the policy's, or `no_reason` when it gave
    /// none, so a person refused always reads why.
    pub(crate) fn denial_reasons(self, reasons: Vec<String>) -> Vec<String> {
        if reasons.is_empty() {
            vec![self.no_reason.into()]
        } else {
            reasons
        }
    }

    /// The decision's `ttl_seconds`, which this decision must give.
    /// See [`Decision::ttl`].
    pub(crate) fn required_ttl(self, seconds: Option<u64>, cap: Ttl) -> Result<Ttl, Refusal> {
        let seconds = seconds
            .ok_or_else(|| Refusal::PolicyError(format!("{} has no ttl_seconds", self.name)))?;
        self.ttl(seconds, cap)
    }

    /// The decision's `ttl_seconds`, clamped to `cap` (the server's bound is
    /// the operator's word, above it is no error); zero is a policy bug.
    pub(crate) fn ttl(self, seconds: u64, cap: Ttl) -> Result<Ttl, Refusal> {
        Ttl::from_secs(seconds.min(cap.as_secs()))
            .map_err(|e| Refusal::PolicyError(format!("{} ttl_seconds: {e}", self.name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// A decision shape as callers declare theirs.
    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Shape {
        allow: bool,
        #[serde(default)]
        names: Vec<String>,
        #[serde(default)]
        ttl_seconds: Option<u64>,
        #[serde(default)]
        reasons: Vec<String>,
    }

    fn read(d: Value) -> Result<Shape, Refusal> {
        Decision::HOST.read(Some(&d))
    }

    fn policy_error(r: Result<impl std::fmt::Debug, Refusal>) -> String {
        match r {
            Err(Refusal::PolicyError(m)) => m,
            other => panic!("expected a policy error, got {other:?}"),
        }
    }

    #[test]
    fn undefined_and_ill_shaped_decisions_are_policy_errors() {
        assert_eq!(
            policy_error(Decision::HOST.read::<Shape>(None)),
            "the host decision is undefined"
        );
        for bad in [
            // Not an object.
            json!(null),
            json!(true),
            json!("allow"),
            json!(1),
            json!([true]),
            json!([true, ["web01"], 60]),
            json!([]),
            // `allow` missing, null or not a boolean.
            json!({}),
            json!({"reasons": ["ok"]}),
            json!({"allow": null}),
            json!({"allow": "true"}),
            json!({"allow": 1}),
            json!({"allow": [true]}),
            // A list that is null, not a list, or holds a non-string.
            json!({"allow": true, "names": null}),
            json!({"allow": true, "names": "web01"}),
            json!({"allow": true, "names": ["web01", 7]}),
            json!({"allow": true, "reasons": [null]}),
            json!({"allow": true, "reasons": "because"}),
            // Seconds that are not a non-negative integer of 64 bits.
            json!({"allow": true, "ttl_seconds": -1}),
            json!({"allow": true, "ttl_seconds": 60.5}),
            json!({"allow": true, "ttl_seconds": "60"}),
            json!({"allow": true, "ttl_seconds": 1e30}),
            // A misspelt or unknown field.
            json!({"allow": true, "name": ["web01"]}),
            // Malformed and saying no: still the operator's bug to see.
            json!({"allow": false, "reasons": [1]}),
        ] {
            let m = policy_error(read(bad.clone()));
            assert!(m.starts_with("malformed host decision: "), "{bad}: {m}");
        }
    }

    #[test]
    fn missing_optional_fields_and_null_options_read_as_absent() {
        let want = Shape {
            allow: false,
            names: vec![],
            ttl_seconds: None,
            reasons: vec![],
        };
        assert_eq!(read(json!({"allow": false})).unwrap(), want);
        assert_eq!(
            read(json!({"allow": false, "ttl_seconds": null})).unwrap(),
            want
        );
        assert_eq!(
            read(json!({"allow": true, "names": ["a"], "ttl_seconds": 60, "reasons": ["r"]}))
                .unwrap(),
            Shape {
                allow: true,
                names: vec!["a".into()],
                ttl_seconds: Some(60),
                reasons: vec!["r".into()],
            }
        );
    }

    #[test]
    fn ttl_is_clamped_to_the_cap_and_never_zero() {
        let cap = Ttl::from_secs(3600).unwrap();
        let d = Decision::CERT;
        assert_eq!(d.ttl(60, cap), Ok(Ttl::from_secs(60).unwrap()));
        assert_eq!(d.ttl(u64::MAX, cap), Ok(cap));
        assert_eq!(d.required_ttl(Some(7200), cap), Ok(cap));
        assert!(policy_error(d.ttl(0, cap)).starts_with("decision ttl_seconds: "));
        assert_eq!(
            policy_error(Decision::HOST.required_ttl(None, cap)),
            "host decision has no ttl_seconds"
        );
    }

    #[test]
    fn reasons_are_escaped_and_a_denial_always_has_one() {
        let raw = ["on call\n".to_owned(), "a\u{202e}b\nc".to_owned()];
        let escaped = Decision::reasons(&raw);
        assert_eq!(escaped, ["on call\\n", "a\\u{202e}b\\nc"]);
        let d = Decision::APPROVAL;
        assert_eq!(d.allow(true, &raw), Ok(escaped.clone()));
        assert_eq!(d.allow(true, &[]), Ok(vec![]));
        assert_eq!(
            d.allow(false, &raw),
            Err(Refusal::Denied { reasons: escaped })
        );
        let none = vec!["not an approver for this request (no reason given)".to_owned()];
        assert_eq!(
            d.allow(false, &[]),
            Err(Refusal::Denied {
                reasons: none.clone()
            })
        );
        assert_eq!(d.denial_reasons(vec![]), none);
        assert_eq!(
            Decision::HOST.denial_reasons(vec![]),
            ["denied by the host policy (no reason given)"]
        );
    }
}
