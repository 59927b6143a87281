//! A policy set's own tests: every `test_*` rule in every package, then the
//! built-in checks of each decision on its documented sample input, and the
//! report `jitssh-ca policy test` prints.

use std::fmt;

use regorus::{CompiledPolicy, Engine};
use serde::Deserialize as _;

use super::error::one_line;
use super::eval::{ElevationRules, to_json};
use super::rules::install_time_limit;

/// The outcome of one `test_*` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    /// Full rule path, e.g. `data.jitssh.test_alice_gets_username`.
    pub name: String,
    pub passed: bool,
    /// Why it failed: the value it produced instead of `true`, or the error.
    pub error: Option<String>,
}

/// Every `test_*` rule of a policy set, in rule-path order, then [`SAMPLE_CHECK`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestReport {
    pub results: Vec<TestResult>,
}

impl TestReport {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    pub(super) fn failure_summary(&self) -> String {
        let failures: Vec<String> = self
            .results
            .iter()
            .filter(|r| !r.passed)
            .map(|r| match &r.error {
                Some(e) => format!("{} ({e})", r.name),
                None => r.name.clone(),
            })
            .collect();
        failures.join("; ")
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.results {
            match (&r.passed, &r.error) {
                (true, _) => writeln!(f, "PASS {}", r.name)?,
                (false, Some(e)) => writeln!(f, "FAIL {}: {e}", r.name)?,
                (false, None) => writeln!(f, "FAIL {}", r.name)?,
            }
        }
        write!(f, "{} passed, {} failed", self.passed(), self.failed())
    }
}

/// Run every `test_*` rule of the set in `engine` (in rule-path order), then
/// the sample checks of each decision the set defines.
pub(super) fn run_all(
    engine: &mut Engine,
    policy: &CompiledPolicy,
    host: Option<&CompiledPolicy>,
    elevation: Option<&ElevationRules<CompiledPolicy>>,
) -> TestReport {
    let mut tests: Vec<String> = policy
        .get_rules()
        .keys()
        .filter(|path| {
            path.rsplit('.')
                .next()
                .is_some_and(|last| last.starts_with("test_"))
        })
        .cloned()
        .collect();
    tests.sort();
    tests.dedup();
    let mut results: Vec<TestResult> = tests
        .into_iter()
        .map(|name| run_test(engine, name))
        .collect();
    results.push(sample_check(policy));
    if let Some(host) = host {
        results.push(host_sample_check(host));
    }
    if let Some(rules) = elevation {
        results.push(check_on_sample(
            &rules.request,
            ELEVATION_SAMPLE_CHECK,
            ELEVATION_SAMPLE_INPUT,
        ));
        results.push(check_on_sample(
            &rules.approval,
            APPROVAL_SAMPLE_CHECK,
            APPROVAL_SAMPLE_INPUT,
        ));
    }
    TestReport { results }
}

/// Name of the built-in check that ends every [`TestReport`] (followed by
/// [`HOST_SAMPLE_CHECK`] when the set has a host decision).
pub const SAMPLE_CHECK: &str = "sample input: data.jitssh.decision evaluates without error";

/// Name of the built-in check of the elevation decision on its sample input.
pub const ELEVATION_SAMPLE_CHECK: &str =
    "sample elevation input: data.jitssh.elevation_decision evaluates without error";

/// Name of the built-in check of the approval decision on its sample input.
pub const APPROVAL_SAMPLE_CHECK: &str =
    "sample approval input: data.jitssh.approval_decision evaluates without error";

/// Name of the built-in check of the host decision on its sample input.
pub const HOST_SAMPLE_CHECK: &str =
    "sample host input: data.jitssh.host_decision evaluates without error";

/// regorus reports unknown functions and builtin type errors only when they
/// run, so a policy calling `foo()` compiles. Evaluating the decision once on
/// the documented sample input (a human asking for a user certificate)
/// catches those on the main path before the policy serves.
fn sample_check(policy: &CompiledPolicy) -> TestResult {
    check_on_sample(policy, SAMPLE_CHECK, SAMPLE_INPUT)
}

/// [`sample_check`] for the host decision, on `example-host-input.json`.
fn host_sample_check(policy: &CompiledPolicy) -> TestResult {
    check_on_sample(policy, HOST_SAMPLE_CHECK, HOST_SAMPLE_INPUT)
}

fn check_on_sample(policy: &CompiledPolicy, name: &str, sample: &str) -> TestResult {
    install_time_limit();
    let error = serde_json::from_str::<serde_json::Value>(sample)
        .map_err(|e| e.to_string())
        .and_then(|json| regorus::Value::deserialize(&json).map_err(|e| e.to_string()))
        .and_then(|input| {
            policy
                .eval_with_input(input)
                .map_err(|e| one_line(&format!("{e:#}")))
        })
        .and_then(|value| match value {
            regorus::Value::Undefined => Ok(()),
            v => to_json(&v, 0).map(drop),
        })
        .err();
    TestResult {
        name: name.into(),
        passed: error.is_none(),
        error,
    }
}

/// The input documented in `policies/README.md`.
pub(super) const SAMPLE_INPUT: &str = include_str!("../../../policies/example-input.json");

/// The host input documented in `policies/README.md`.
pub(super) const HOST_SAMPLE_INPUT: &str =
    include_str!("../../../policies/example-host-input.json");

/// The documented elevation inputs (`policies/example-*-input.json`).
pub(super) const ELEVATION_SAMPLE_INPUT: &str =
    include_str!("../../../policies/example-elevation-input.json");
pub(super) const APPROVAL_SAMPLE_INPUT: &str =
    include_str!("../../../policies/example-approval-input.json");

fn run_test(engine: &mut Engine, name: String) -> TestResult {
    let (passed, error) = match engine.eval_rule(name.clone()) {
        Ok(regorus::Value::Bool(true)) => (true, None),
        Ok(regorus::Value::Undefined) => (false, Some("undefined (a condition failed)".into())),
        Ok(other) => (false, Some(format!("evaluated to {other}, not true"))),
        Err(e) => (false, Some(one_line(&format!("{e:#}")))),
    };
    TestResult {
        name,
        passed,
        error,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::policy::PolicyError;
    use crate::policy::load::Prepared;
    use crate::policy::test_support::{engine, files};

    #[test]
    fn failing_tests_refuse_the_policy_and_are_reported() {
        let list = [(
            "a.rego",
            "package jitssh\ndecision := 1\ntest_ok if decision == 1\ntest_bad if decision == 2\ntest_err if lower(5)",
        )];
        let report = Prepared::build(&files(&list)).unwrap().report;
        assert_eq!(report.passed(), 2, "{report}");
        assert_eq!(report.failed(), 2, "{report}");
        assert_eq!(report.results[0].name, "data.jitssh.test_bad");
        assert_eq!(report.results[3].name, SAMPLE_CHECK);
        let err = engine(&list).unwrap_err();
        assert!(
            matches!(
                err,
                PolicyError::TestsFailed {
                    failed: 2,
                    total: 4,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("data.jitssh.test_bad"), "{err}");
    }

    #[test]
    fn runtime_only_errors_on_the_main_path_refuse_the_policy() {
        // regorus only notices an unknown function when it is called.
        let list = [("a.rego", "package jitssh\ndecision := no_such_function(1)")];
        let err = engine(&list).unwrap_err();
        assert!(
            matches!(err, PolicyError::TestsFailed { failed: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("no_such_function"), "{err}");
        let err = engine(&[("a.rego", "package jitssh\ndecision := {1: 2}")]).unwrap_err();
        assert!(err.to_string().contains("not a string"), "{err}");
        // Undefined on the sample is allowed (the server denies).
        assert!(engine(&[("a.rego", "package jitssh\ndecision := 1 if false")]).is_ok());
    }

    #[test]
    fn tests_in_other_packages_run_too() {
        let list = [
            ("a.rego", "package jitssh\ndecision := 1"),
            (
                "b_test.rego",
                "package jitssh.more\ntest_decision if data.jitssh.decision == 1",
            ),
        ];
        let report = Prepared::build(&files(&list)).unwrap().report;
        assert_eq!(report.results.len(), 2);
        assert_eq!(report.results[0].name, "data.jitssh.more.test_decision");
        assert!(report.results[0].passed);
        assert_eq!(report.failed(), 0);
    }

    #[test]
    fn a_host_decision_that_errors_on_its_sample_refuses_the_policy() {
        let list = [(
            "a.rego",
            "package jitssh\ndecision := 1\nhost_decision := lower(input.request.hostnames)",
        )];
        let err = engine(&list).unwrap_err();
        assert!(
            matches!(err, PolicyError::TestsFailed { failed: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(HOST_SAMPLE_CHECK), "{err}");
    }
}
