//! Evaluation of a loaded policy set: one [`PolicySnapshot`] answers a
//! request's decisions, role table and hash from the same version, and every
//! decision becomes JSON or a [`PolicyError`] (the caller denies).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ca_core::elevation::RoleTable;
use serde::Deserialize as _;

use super::entry::{EngineKind, EntryPoint, EvalFailure};
use super::error::{PolicyError, one_line};

/// One decision.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// `None` when `data.jitssh.decision` is undefined (the server denies).
    pub decision: Option<serde_json::Value>,
    /// The policy set that decided.
    pub policy_hash: String,
    /// Time spent converting the input, evaluating and converting the result.
    pub elapsed: Duration,
}

/// One compiled, tested policy set.
pub(super) struct Serving {
    pub(super) policy: EntryPoint,
    /// `data.jitssh.host_decision`, when the set defines it.
    pub(super) host: Option<EntryPoint>,
    /// `data.jitssh.ui_decision`, when the set defines it (always on the
    /// interpreter: it is asked once per console page, not per certificate).
    pub(super) ui: Option<EntryPoint>,
    /// `data.jitssh.role_guide`, when the set defines it (interpreter only,
    /// like `ui`).
    pub(super) role_guide: Option<EntryPoint>,
    /// Elevation entry points, when the set defines roles.
    pub(super) elevation: Option<ElevationRules<EntryPoint>>,
    pub(super) roles: Arc<RoleTable>,
    pub(super) hash: String,
}

/// The two elevation entry points; present together with a role table.
/// `P` is a compiled rule while loading, an [`EntryPoint`] once serving.
pub(super) struct ElevationRules<P> {
    pub(super) request: P,
    pub(super) approval: P,
}

/// One loaded policy set, as it was when
/// [`PolicyEngine::snapshot`](crate::policy::PolicyEngine::snapshot) took it:
/// its decisions, role table and hash all from the same version, whatever
/// reloads happen meanwhile. Cheap to take (one reference count).
#[derive(Clone)]
pub struct PolicySnapshot(pub(super) Arc<Serving>);

impl fmt::Debug for PolicySnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PolicySnapshot").field(&self.0.hash).finish()
    }
}

impl PolicySnapshot {
    /// Evaluate `data.jitssh.decision` for `input`. Any evaluation error,
    /// timeout or non-JSON decision is an `Err`; the caller denies.
    pub fn evaluate(&self, input: &serde_json::Value) -> Result<Evaluation, PolicyError> {
        self.0.evaluate(input)
    }

    /// [`Self::evaluate`] on the interpreter, whichever engine serves: for
    /// benchmarks and comparisons, not for serving.
    pub fn evaluate_on_interpreter(
        &self,
        input: &serde_json::Value,
    ) -> Result<Evaluation, PolicyError> {
        let start = Instant::now();
        eval_compiled(
            &self.0.policy,
            EngineKind::Interpreter,
            &self.0.hash,
            input,
            start,
        )
    }

    /// Evaluate `data.jitssh.host_decision` for `input`. A policy set without
    /// that rule is an `Err` (fail closed), like any evaluation error.
    pub fn evaluate_host(&self, input: &serde_json::Value) -> Result<Evaluation, PolicyError> {
        let start = Instant::now();
        let Some(host) = &self.0.host else {
            return Err(PolicyError::NoHostDecision {
                policy_hash: self.0.hash.clone(),
            });
        };
        eval_compiled(host, host.engine(), &self.0.hash, input, start)
    }

    /// Evaluate `data.jitssh.elevation_decision` for `input`. A policy set
    /// without roles is an `Err` (fail closed).
    pub fn evaluate_elevation(&self, input: &serde_json::Value) -> Result<Evaluation, PolicyError> {
        let start = Instant::now();
        let rules = self.0.elevation_rules()?;
        eval_compiled(
            &rules.request,
            rules.request.engine(),
            &self.0.hash,
            input,
            start,
        )
    }

    /// Evaluate `data.jitssh.approval_decision` for `input`.
    pub fn evaluate_approval(&self, input: &serde_json::Value) -> Result<Evaluation, PolicyError> {
        let start = Instant::now();
        let rules = self.0.elevation_rules()?;
        eval_compiled(
            &rules.approval,
            rules.approval.engine(),
            &self.0.hash,
            input,
            start,
        )
    }

    /// Evaluate `data.jitssh.ui_decision` for `input`. A policy set without
    /// that rule is an `Err` (the console shows nothing).
    pub fn evaluate_ui(&self, input: &serde_json::Value) -> Result<Evaluation, PolicyError> {
        let start = Instant::now();
        let Some(ui) = &self.0.ui else {
            return Err(PolicyError::NoUiDecision {
                policy_hash: self.0.hash.clone(),
            });
        };
        eval_compiled(ui, ui.engine(), &self.0.hash, input, start)
    }

    /// Evaluate `data.jitssh.role_guide` for `input`; `Ok(None)` when the
    /// set does not define it (the console then says so).
    pub fn evaluate_role_guide(
        &self,
        input: &serde_json::Value,
    ) -> Result<Option<Evaluation>, PolicyError> {
        let start = Instant::now();
        self.0
            .role_guide
            .as_ref()
            .map(|rule| eval_compiled(rule, rule.engine(), &self.0.hash, input, start))
            .transpose()
    }

    /// The role table (empty when elevation is off).
    pub fn roles(&self) -> &Arc<RoleTable> {
        &self.0.roles
    }

    /// The policy set's hash (see
    /// [`PolicyEngine::policy_hash`](crate::policy::PolicyEngine::policy_hash)).
    pub fn hash(&self) -> &str {
        &self.0.hash
    }

    /// Each decision the set defines (`user`, `host`, `elevation`,
    /// `approval`) and the engine serving it.
    pub fn engines(&self) -> Vec<(&'static str, EngineKind)> {
        self.0.engines()
    }
}

impl Serving {
    pub(super) fn engines(&self) -> Vec<(&'static str, EngineKind)> {
        let s = self;
        let mut out = vec![(s.policy.label, s.policy.engine())];
        out.extend(s.host.iter().map(|h| (h.label, h.engine())));
        if let Some(e) = &s.elevation {
            out.push((e.request.label, e.request.engine()));
            out.push((e.approval.label, e.approval.engine()));
        }
        out
    }
}

impl Serving {
    pub(super) fn evaluate(&self, input: &serde_json::Value) -> Result<Evaluation, PolicyError> {
        let start = Instant::now();
        eval_compiled(&self.policy, self.policy.engine(), &self.hash, input, start)
    }

    fn elevation_rules(&self) -> Result<&ElevationRules<EntryPoint>, PolicyError> {
        self.elevation
            .as_ref()
            .ok_or_else(|| PolicyError::NoElevation {
                policy_hash: self.hash.clone(),
            })
    }
}

/// Evaluate one entry point for `input` on its engine, mapping every
/// failure to a [`PolicyError`] naming the policy set.
fn eval_compiled(
    policy: &EntryPoint,
    engine: EngineKind,
    policy_hash: &str,
    input: &serde_json::Value,
    start: Instant,
) -> Result<Evaluation, PolicyError> {
    let input =
        regorus::Value::deserialize(input).map_err(|e| PolicyError::Input(e.to_string()))?;
    let value = policy.eval_on(engine, input).map_err(|e| match e {
        EvalFailure::TimeLimit(limit) => PolicyError::TimeLimit {
            limit,
            policy_hash: policy_hash.to_owned(),
        },
        EvalFailure::Error(message) => PolicyError::Eval {
            policy_hash: policy_hash.to_owned(),
            message: one_line(&message),
        },
    })?;
    let decision = match value {
        regorus::Value::Undefined => None,
        v => Some(to_json(&v, 0).map_err(|message| PolicyError::NotJson {
            policy_hash: policy_hash.to_owned(),
            message,
        })?),
    };
    Ok(Evaluation {
        decision,
        policy_hash: policy_hash.to_owned(),
        elapsed: start.elapsed(),
    })
}

/// Deepest decision accepted; real decisions are three levels deep.
const MAX_DEPTH: usize = 32;

/// Convert a Rego value to JSON, refusing what JSON cannot carry faithfully:
/// non-string object keys, undefined members, integers beyond 64 bits and
/// non-finite numbers. Sets become sorted arrays (a partial set rule is the
/// natural way to write `principals`).
pub(super) fn to_json(v: &regorus::Value, depth: usize) -> Result<serde_json::Value, String> {
    use regorus::Value as R;
    use serde_json::Value as J;
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    Ok(match v {
        R::Null => J::Null,
        R::Bool(b) => J::Bool(*b),
        R::String(s) => J::String(s.to_string()),
        R::Number(n) => {
            if let Some(u) = n.as_u64() {
                J::from(u)
            } else if let Some(i) = n.as_i64() {
                J::from(i)
            } else if n.is_integer() {
                return Err(format!("the integer {v} does not fit 64 bits"));
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(J::Number)
                    .ok_or_else(|| format!("the number {v} is not finite"))?
            }
        }
        R::Array(items) => J::Array(
            items
                .iter()
                .map(|item| to_json(item, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        R::Set(items) => J::Array(
            items
                .iter()
                .map(|item| to_json(item, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        R::Object(fields) => {
            let mut map = serde_json::Map::new();
            for (key, value) in fields.iter() {
                let R::String(key) = key else {
                    return Err(format!("the object key {key} is not a string"));
                };
                map.insert(key.to_string(), to_json(value, depth + 1)?);
            }
            J::Object(map)
        }
        R::Undefined => return Err("a member is undefined".into()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::time::Instant;

    use serde_json::json;

    use super::*;
    use crate::policy::load::Prepared;
    use crate::policy::rules::EVAL_TIME_LIMIT;
    use crate::policy::test_support::{engine, files, host_input, sample_input};
    use crate::policy::testing::HOST_SAMPLE_CHECK;
    use crate::policy::{PolicyEngine, run_embedded_tests};

    #[test]
    fn sets_become_sorted_arrays() {
        let e = engine(&[(
            "p.rego",
            "package jitssh\ndecision := {\"principals\": {\"b\", \"a\"}, \"n\": [1, -2, 2.5]}",
        )])
        .unwrap();
        let d = e.evaluate(&json!({})).unwrap().decision.unwrap();
        assert_eq!(d, json!({"principals": ["a", "b"], "n": [1, -2, 2.5]}));
    }

    #[test]
    fn non_json_decisions_are_errors() {
        for body in [
            "{1: \"x\"}",
            "{\"a\": {[1]: true}}",
            "{\"big\": 100000000000000000000000000}",
        ] {
            // Only for the odd input, so the load-time sample check passes.
            let rego = format!("package jitssh\ndecision := {body} if input.odd");
            let e = engine(&[("p.rego", &rego)]).unwrap();
            let err = e.evaluate(&json!({"odd": true})).unwrap_err();
            assert!(matches!(err, PolicyError::NotJson { .. }), "{body}: {err}");
        }
    }

    #[test]
    fn undefined_decision_is_none() {
        let e = engine(&[(
            "p.rego",
            "package jitssh\ndecision := {\"allow\": true} if input.x == 1",
        )])
        .unwrap();
        assert!(e.evaluate(&json!({"x": 2})).unwrap().decision.is_none());
        assert!(e.evaluate(&json!({"x": 1})).unwrap().decision.is_some());
    }

    #[test]
    fn evaluation_errors_are_errors() {
        // Conflicting values for a complete rule are an evaluation error.
        let e = engine(&[(
            "p.rego",
            "package jitssh\ndecision := 1 if input.a\ndecision := 2 if input.b",
        )])
        .unwrap();
        assert!(e.evaluate(&json!({"a": true})).is_ok());
        let err = e.evaluate(&json!({"a": true, "b": true})).unwrap_err();
        assert!(matches!(err, PolicyError::Eval { .. }), "{err}");
        // A builtin given the wrong type is an error, not undefined.
        let e = engine(&[("p.rego", "package jitssh\ndecision := lower(input.n)")]).unwrap();
        let err = e.evaluate(&json!({"n": 5})).unwrap_err();
        assert!(matches!(err, PolicyError::Eval { .. }), "{err}");
    }

    #[test]
    fn runaway_policy_hits_the_time_limit() {
        let e = engine(&[(
            "p.rego",
            "package jitssh\ndecision := count([1 | some i in numbers.range(1, 4000); some j in numbers.range(1, 4000)]) if input.slow",
        )])
        .unwrap();
        // Both engines stop it: the VM, which serves it, and the interpreter.
        let snapshot = e.snapshot();
        assert_eq!(snapshot.engines(), [("user", EngineKind::Vm)]);
        for on_vm in [true, false] {
            let start = Instant::now();
            let slow = json!({"slow": true});
            let err = if on_vm {
                snapshot.evaluate(&slow)
            } else {
                snapshot.evaluate_on_interpreter(&slow)
            }
            .unwrap_err();
            assert!(matches!(err, PolicyError::TimeLimit { .. }), "{err}");
            assert!(
                start.elapsed() < EVAL_TIME_LIMIT * 8,
                "{:?}",
                start.elapsed()
            );
        }
    }

    #[test]
    fn embedded_policy_decides_host_certificates() {
        let engine = PolicyEngine::load_embedded_default().unwrap();
        assert!(engine.has_host_decision());
        let report = run_embedded_tests().unwrap();
        assert!(report.results.iter().any(|r| r.name == HOST_SAMPLE_CHECK));
        assert!(report.results.iter().any(|r| r.name.contains("test_host_")));
        let d = engine
            .snapshot()
            .evaluate_host(&host_input(
                &["web01.example.com"],
                &["web01.example.com", "web01"],
            ))
            .unwrap()
            .decision
            .unwrap();
        assert_eq!(d["allow"], json!(true));
        assert_eq!(d["hostnames"], json!(["web01.example.com"]));
        assert_eq!(d["ttl_seconds"], json!(604800));
        let d = engine
            .snapshot()
            .evaluate_host(&host_input(&["db01"], &["web01"]))
            .unwrap()
            .decision
            .unwrap();
        assert_eq!(d["allow"], json!(false));
        // The user decision is untouched by host inputs and vice versa.
        let user = engine.evaluate(&sample_input()).unwrap().decision.unwrap();
        assert_eq!(user["allow"], json!(true));
    }

    #[test]
    fn without_a_host_decision_hosts_are_denied() {
        let e = engine(&[("a.rego", "package jitssh\ndecision := 1")]).unwrap();
        assert!(!e.has_host_decision());
        let err = e
            .snapshot()
            .evaluate_host(&host_input(&["a"], &["a"]))
            .unwrap_err();
        assert!(matches!(err, PolicyError::NoHostDecision { .. }), "{err}");
        assert!(err.to_string().contains("host_decision"), "{err}");
        let report = Prepared::build(&files(&[("a.rego", "package jitssh\ndecision := 1")]))
            .unwrap()
            .report;
        assert_eq!(report.results.len(), 1, "no host sample check: {report}");
    }
}
