//! One decision entry point as it serves: on the VM when it compiles for the
//! VM and agrees with the interpreter on a generated corpus of inputs —
//! decisions and errors alike — otherwise on the interpreter, with a warning
//! in the log and the choice in `/metrics`.
//!
//! The corpus is checked once per load and cannot prove the two engines
//! equal; CI runs a far larger one against the default policy
//! (`differential` tests). What the check buys is that a policy using
//! something the VM gets wrong on ordinary inputs is caught before it serves.

use std::fmt;
use std::time::{Duration, Instant};

use regorus::{CompiledPolicy, LimitError};
use serde::Deserialize as _;

use super::corpus::{self, Pool, Rng};
use super::vm::{VmFailure, VmProgram};

/// Inputs compared per entry point at load: enough to meet `null`, wrong
/// types and missing fields on every field of the sample, few enough that a
/// load stays well under a second.
pub(super) const LOAD_CORPUS: usize = 256;

/// Wall-clock budget of the comparison for one entry point. A policy slow
/// enough to exceed it on generated inputs serves on the interpreter (the
/// engine whose errors we know) rather than holding up the load.
const LOAD_BUDGET: Duration = Duration::from_secs(3);

/// Which engine serves an entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Vm,
    Interpreter,
}

impl EngineKind {
    /// The label in logs and `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Vm => "vm",
            EngineKind::Interpreter => "interpreter",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an evaluation produced no value (the caller denies).
#[derive(Debug)]
pub(super) enum EvalFailure {
    TimeLimit(Duration),
    Error(String),
}

/// A decision rule, compiled, with the engine chosen for it.
pub(super) struct EntryPoint {
    /// `user`, `host`, `elevation` or `approval`.
    pub(super) label: &'static str,
    pub(super) interpreter: CompiledPolicy,
    pub(super) vm: Option<VmProgram>,
}

/// What the load-time comparison needs besides the rule itself.
pub(super) struct Corpus<'a> {
    pub(super) samples: &'a [serde_json::Value],
    pub(super) pool: &'a Pool,
    pub(super) seed: u64,
    pub(super) count: usize,
}

impl EntryPoint {
    /// Compile `rule` for the VM over `data` and keep the VM only if it
    /// agrees with the interpreter on `corpus`; say why when it does not.
    pub(super) fn choose(
        label: &'static str,
        rule: &str,
        interpreter: CompiledPolicy,
        data: &regorus::Value,
        corpus: &Corpus<'_>,
    ) -> Self {
        let vm = match VmProgram::compile(&interpreter, rule, data.clone()) {
            Ok(vm) => Some(vm),
            Err(reason) => {
                tracing::warn!(entry = label, %rule, %reason, "the policy's VM cannot compile this decision; it is served by the interpreter");
                None
            }
        };
        let mut entry = EntryPoint {
            label,
            interpreter,
            vm,
        };
        // `None` at once when there is no VM to compare.
        if let Some(difference) = entry.first_difference(corpus) {
            tracing::warn!(entry = label, %rule, %difference, "the policy's VM and interpreter disagree on a generated input; this decision is served by the interpreter");
            entry.vm = None;
        }
        entry
    }

    /// The first input of `corpus` on which the VM and the interpreter
    /// disagree (value, undefined or error), described.
    pub(super) fn first_difference(&self, corpus: &Corpus<'_>) -> Option<String> {
        let vm = self.vm.as_ref()?;
        let started = Instant::now();
        let mut rng = Rng::new(corpus.seed);
        let per_sample = corpus.count.div_ceil(corpus.samples.len().max(1));
        for sample in corpus.samples {
            for input in corpus::inputs(sample, corpus.pool, &mut rng, per_sample) {
                let Ok(value) = regorus::Value::deserialize(&input) else {
                    continue;
                };
                let interpreted = self.interpreter.eval_with_input(value.clone());
                let on_vm = vm.eval(value);
                let agree = match (&interpreted, &on_vm) {
                    (Ok(a), Ok(b)) => a == b,
                    (Err(_), Err(_)) => true,
                    _ => false,
                };
                if started.elapsed() > LOAD_BUDGET {
                    return Some(format!(
                        "the comparison took longer than {LOAD_BUDGET:?}, so it is incomplete"
                    ));
                }
                if !agree {
                    return Some(format!(
                        "input {input}: interpreter {}, VM {}",
                        describe(interpreted.map_err(|e| format!("{e:#}"))),
                        describe(on_vm.map_err(|e| format!("{e:?}"))),
                    ));
                }
            }
        }
        None
    }

    pub(super) fn engine(&self) -> EngineKind {
        if self.vm.is_some() {
            EngineKind::Vm
        } else {
            EngineKind::Interpreter
        }
    }

    /// Evaluate on `engine` (the interpreter when there is no VM).
    pub(super) fn eval_on(
        &self,
        engine: EngineKind,
        input: regorus::Value,
    ) -> Result<regorus::Value, EvalFailure> {
        match self.vm.as_ref().filter(|_| engine == EngineKind::Vm) {
            Some(vm) => vm.eval(input).map_err(|e| match e {
                VmFailure::TimeLimit(limit) => EvalFailure::TimeLimit(limit),
                VmFailure::Error(message) => EvalFailure::Error(message),
            }),
            None => self.interpreter.eval_with_input(input).map_err(|e| {
                match e.downcast_ref::<LimitError>() {
                    Some(LimitError::TimeLimitExceeded { limit, .. }) => {
                        EvalFailure::TimeLimit(*limit)
                    }
                    _ => EvalFailure::Error(format!("{e:#}")),
                }
            }),
        }
    }
}

fn describe(outcome: Result<regorus::Value, String>) -> String {
    match outcome {
        Ok(regorus::Value::Undefined) => "undefined".into(),
        Ok(v) => format!("= {v}"),
        Err(e) => format!("error ({e})"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use serde_json::json;

    use super::*;
    use crate::metrics::Metrics;
    use crate::policy::test_support::{engine, sample_input};
    use crate::policy::{PolicyEngine, PolicyError};

    #[test]
    fn the_default_policy_serves_every_decision_on_the_vm() {
        let engine = PolicyEngine::load_embedded_default().unwrap();
        assert_eq!(
            engine.snapshot().engines(),
            [
                ("user", EngineKind::Vm),
                ("host", EngineKind::Vm),
                ("elevation", EngineKind::Vm),
                ("approval", EngineKind::Vm)
            ]
        );
    }

    fn compiled(rego: &str, rule: &str) -> CompiledPolicy {
        let mut e = regorus::Engine::new();
        e.set_rego_v0(false);
        e.add_policy("p.rego".into(), rego.into()).unwrap();
        e.compile_with_entrypoint(&rule.into()).unwrap()
    }

    #[test]
    fn a_disagreement_is_found_and_shown() {
        // The VM runs a different rule than the interpreter: they disagree
        // on the sample itself, and the comparison says so.
        let rego =
            "package jitssh\ndecision := input.identity.login\nother := input.identity.email";
        let interpreter = compiled(rego, "data.jitssh.decision");
        let sample = sample_input();
        let pool = Pool::new([&sample]);
        let corpus = Corpus {
            samples: std::slice::from_ref(&sample),
            pool: &pool,
            seed: 1,
            count: 64,
        };
        let other = VmProgram::compile(
            &interpreter,
            "data.jitssh.other",
            regorus::Value::new_object(),
        );
        let entry = EntryPoint {
            label: "user",
            interpreter: interpreter.clone(),
            vm: Some(other.unwrap()),
        };
        let difference = entry.first_difference(&corpus).unwrap();
        assert!(
            difference.contains(r#"interpreter = "alice""#),
            "{difference}"
        );
        assert!(
            difference.contains(r#"VM = "alice@example.com""#),
            "{difference}"
        );
        // The same rule on both agrees over the whole corpus.
        let same = EntryPoint::choose(
            "user",
            "data.jitssh.decision",
            interpreter,
            &regorus::Value::new_object(),
            &corpus,
        );
        assert_eq!(same.engine(), EngineKind::Vm);
        assert!(same.first_difference(&corpus).is_none());
    }

    #[test]
    fn what_the_vm_cannot_compile_is_served_by_the_interpreter_and_errors_still_deny() {
        // regorus's VM compiler has no `with`.
        let e = engine(&[(
            "p.rego",
            "package jitssh\nk := v if v := input.k with input.k as 1\ndecision := {\"k\": k, \"x\": lower(input.x)}",
        )])
        .unwrap();
        let snapshot = e.snapshot();
        assert_eq!(snapshot.engines(), [("user", EngineKind::Interpreter)]);
        let err = e.evaluate(&json!({"x": 5})).unwrap_err();
        assert!(matches!(err, PolicyError::Eval { .. }), "{err}");
        assert!(e.evaluate(&json!({"x": "A"})).unwrap().decision.is_some());

        let metrics = Metrics::new();
        let engines: Vec<_> = snapshot
            .engines()
            .into_iter()
            .map(|(entry, engine)| (entry, engine.as_str()))
            .collect();
        metrics.set_policy_engines(&engines);
        let text = metrics.render();
        assert!(
            text.contains(r#"jitssh_policy_engine{entry="user",engine="interpreter"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"jitssh_policy_engine{entry="user",engine="vm"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"jitssh_policy_engine{entry="host",engine="vm"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn on_the_vm_errors_are_errors_as_on_the_interpreter() {
        // Each policy is fine on the sample input (so it loads), serves on
        // the VM, and errors for `bad`; unpatched, the VM would answer
        // undefined or a value for all three.
        for (rego, bad) in [
            // Conflicting complete-rule definitions.
            (
                "decision := 1 if input.a\ndecision := 2 if input.b",
                json!({"a": true, "b": true}),
            ),
            // A builtin's type error inside a rule body.
            (
                "decision := {\"ok\": true} if {\n  lower(input.n)\n}",
                json!({"n": 5}),
            ),
            // `some .. in` over a defined non-collection.
            ("decision := [x | some x in input.v]", json!({"v": null})),
            // An error in a helper rule the decision calls.
            (
                "helper := lower(input.n)\ndecision := {\"h\": helper}",
                json!({"n": [1]}),
            ),
        ] {
            let e = engine(&[("p.rego", &format!("package jitssh\n{rego}"))]).unwrap();
            assert_eq!(e.snapshot().engines(), [("user", EngineKind::Vm)], "{rego}");
            let err = e.evaluate(&bad).unwrap_err();
            assert!(matches!(err, PolicyError::Eval { .. }), "{rego}: {err}");
        }
    }

    /// Single-thread cost per decision on each engine, and of a load:
    /// `cargo test -p ca-server --lib decision_cost -- --ignored --nocapture`
    /// (criterion: `cargo bench -p ca-server -- policy`).
    #[test]
    #[ignore = "a measurement, not a check"]
    fn decision_cost() {
        let engine = PolicyEngine::load_embedded_default().unwrap();
        let snapshot = engine.snapshot();
        let input = sample_input();
        let per = |f: &dyn Fn()| {
            let rounds = 3000u32;
            let start = Instant::now();
            for _ in 0..rounds {
                f();
            }
            start.elapsed() / rounds
        };
        for _ in 0..3 {
            let vm = per(&|| drop(snapshot.evaluate(&input).unwrap()));
            let interpreter = per(&|| drop(snapshot.evaluate_on_interpreter(&input).unwrap()));
            eprintln!("per decision: VM {vm:?}, interpreter {interpreter:?}");
        }
        let start = Instant::now();
        for _ in 0..5 {
            PolicyEngine::load_embedded_default().unwrap();
        }
        eprintln!("load of the default policy: {:?}", start.elapsed() / 5);
    }
}
