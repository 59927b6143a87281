//! The differential test CI runs: the default policy's decisions on the VM
//! (strict mode) against the interpreter, on tens of thousands of generated
//! inputs across variants of the policy's data (`null`, wrong types, missing
//! fields, conflicting bindings), decisions and errors alike. Each decision
//! is compared on the VM directly, whichever engine the load-time check
//! chose, so a fallback cannot hide a difference.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Instant;

use regorus::CompiledPolicy;
use serde::Deserialize as _;
use serde_json::{Value, json};

use super::corpus::{self, Pool, Rng};
use super::files::PolicyFiles;
use super::load::{Prepared, Samples};
use super::rules::{
    APPROVAL_DECISION_RULE, DECISION_RULE, ELEVATION_DECISION_RULE, HOST_DECISION_RULE,
};
use super::vm::VmProgram;

/// Inputs per decision, over all data variants.
const INPUTS_PER_DECISION: usize = 50_000;

fn default_data() -> Value {
    let files = PolicyFiles::embedded();
    let (_, text) = files.files.iter().find(|(n, _)| n == "data.json").unwrap();
    serde_json::from_str(text).unwrap()
}

/// The default data, then hand-made variants, then random ones.
fn data_variants() -> Vec<Value> {
    let base = default_data();
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut d = base.clone();
        edit(&mut d["jitssh_config"]);
        d
    };
    let mut out = vec![
        base.clone(),
        with(&|c| c["group_principals"] = Value::Null),
        with(&|c| c["group_principals"]["sre"] = json!("web")),
        with(&|c| {
            c.as_object_mut().unwrap().remove("reserved_usernames");
        }),
        with(&|c| c["reserved_usernames"] = json!({"root": true})),
        with(&|c| c["default_ttl_seconds"] = json!("900")),
        with(&|c| c["max_ttl_seconds"] = Value::Null),
        with(&|c| c["extensions"] = json!("permit-pty")),
        with(&|c| c["workloads"] = Value::Null),
        with(&|c| c["workloads"][0]["claims"] = Value::Null),
        with(&|c| c["workloads"][0]["principals"] = json!("deploy")),
        // Two bindings for the same workload granting different things.
        with(&|c| {
            let mut twin = c["workloads"][0].clone();
            twin["principals"] = json!(["root"]);
            twin["ttl_seconds"] = json!(60);
            c["workloads"].as_array_mut().unwrap().push(twin);
        }),
        with(&|c| c["roles"]["db-admin"]["approval"] = Value::Null),
        with(&|c| c["roles"]["db-admin"]["requester_groups"] = json!("dba")),
        with(&|c| {
            c.as_object_mut().unwrap().remove("host_ttl_seconds");
        }),
    ];
    // Random bends of the data, as the inputs are bent.
    let pool = Pool::new([&base]);
    let mut rng = Rng::new(0x5eed_da7a);
    for mutant in corpus::inputs(&base, &pool, &mut rng, 11)
        .into_iter()
        .skip(1)
    {
        out.push(mutant);
    }
    out
}

fn build(data: Value) -> Option<(Value, Prepared)> {
    let mut files = PolicyFiles::embedded();
    for (name, text) in &mut files.files {
        if name == "data.json" {
            *text = data.to_string();
        }
    }
    // A variant may break the role table; the set is then refused at load
    // and never serves, so there is nothing to compare.
    Prepared::build(&files).ok().map(|p| (data, p))
}

/// Outcomes seen, by kind, so the test can show it met errors and both
/// answers rather than passing on a corpus that only ever errs.
#[derive(Debug, Default)]
struct Tally(BTreeMap<&'static str, usize>);

impl Tally {
    fn count(&mut self, outcome: &Result<regorus::Value, String>) {
        let kind = match outcome {
            Err(_) => "error",
            Ok(regorus::Value::Undefined) => "undefined",
            Ok(v) if v["allow"] == regorus::Value::Bool(true) => "allow",
            Ok(v) if v["outcome"] == regorus::Value::from("approve") => "allow",
            Ok(_) => "other value",
        };
        *self.0.entry(kind).or_default() += 1;
    }

    fn get(&self, kind: &str) -> usize {
        self.0.get(kind).copied().unwrap_or(0)
    }
}

/// Which decision of a prepared set, and the samples to bend.
type Pick = fn(&Prepared) -> Option<&CompiledPolicy>;

/// Compare `rule` on both engines; `kinds` are the outcomes the corpus must
/// have met (so it cannot pass by only ever meeting one).
fn run(rule: &str, pick: Pick, samples: &dyn Fn(&Value) -> Vec<Value>, kinds: &[&str]) {
    let started = Instant::now();
    let variants: Vec<(Value, Prepared)> = data_variants()
        .into_iter()
        .filter_map(build)
        .filter(|(_, p)| pick(p).is_some())
        .collect();
    assert!(
        variants.len() >= 15,
        "only {} data variants load",
        variants.len()
    );
    let per_variant = INPUTS_PER_DECISION.div_ceil(variants.len());
    let (mut compared, mut differences, mut tally) = (0usize, Vec::new(), Tally::default());
    for (seed, (data, prepared)) in variants.iter().enumerate() {
        let Some(interpreter) = pick(prepared) else {
            continue;
        };
        let vm = VmProgram::compile(interpreter, rule, prepared.data.clone())
            .unwrap_or_else(|e| panic!("{rule} does not compile for the VM: {e}"));
        let samples = samples(data);
        let pool = Pool::new(samples.iter().chain([data]));
        let mut rng = Rng::new(seed as u64);
        let per_sample = per_variant.div_ceil(samples.len());
        for sample in &samples {
            for input in corpus::inputs(sample, &pool, &mut rng, per_sample) {
                let value = regorus::Value::deserialize(&input).unwrap();
                let interpreted = interpreter
                    .eval_with_input(value.clone())
                    .map_err(|e| format!("{e:#}"));
                let on_vm = vm.eval(value).map_err(|e| format!("{e:?}"));
                compared += 1;
                tally.count(&interpreted);
                let agree = match (&interpreted, &on_vm) {
                    (Ok(a), Ok(b)) => a == b,
                    (Err(_), Err(_)) => true,
                    _ => false,
                };
                if !agree && differences.len() < 5 {
                    differences.push(format!(
                        "data variant {seed}, input {input}:\n  interpreter {interpreted:?}\n  VM {on_vm:?}"
                    ));
                }
            }
        }
    }
    eprintln!(
        "{rule}: {compared} inputs over {} data variants in {:?}: {:?}",
        variants.len(),
        started.elapsed(),
        tally.0
    );
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    assert!(compared >= INPUTS_PER_DECISION, "{compared}");
    for kind in kinds {
        assert!(tally.get(kind) > 0, "no {kind}: {tally:?}");
    }
}

fn user_samples(_: &Value) -> Vec<Value> {
    vec![Samples::parse().user[0].clone()]
}

/// A workload of the data's first binding (when it has one), asking for a
/// user certificate.
fn workload_samples(data: &Value) -> Vec<Value> {
    let mut input = Samples::parse().user[1].clone();
    let binding = &data["jitssh_config"]["workloads"][0];
    input["identity"]["issuer"] = binding["issuer"].clone();
    input["identity"]["claims"] = binding["claims"].clone();
    input["identity"]["login"] = Value::Null;
    vec![input]
}

#[test]
fn user_decision_vm_matches_interpreter() {
    run(
        DECISION_RULE,
        |p| Some(&p.policy),
        &user_samples,
        &["allow", "other value", "error"],
    );
}

#[test]
fn workload_decision_vm_matches_interpreter() {
    run(
        DECISION_RULE,
        |p| Some(&p.policy),
        &workload_samples,
        &["allow", "other value", "error"],
    );
}

#[test]
fn host_decision_vm_matches_interpreter() {
    // The host and approval decisions are written never to err.
    run(
        HOST_DECISION_RULE,
        |p| p.host.as_ref(),
        &|_| Samples::parse().host,
        &["allow", "other value"],
    );
}

#[test]
fn elevation_decision_vm_matches_interpreter() {
    run(
        ELEVATION_DECISION_RULE,
        |p| p.elevation.as_ref().map(|e| &e.request),
        &|_| Samples::parse().elevation,
        &["allow", "other value", "error"],
    );
}

#[test]
fn approval_decision_vm_matches_interpreter() {
    run(
        APPROVAL_DECISION_RULE,
        |p| p.elevation.as_ref().map(|e| &e.approval),
        &|_| Samples::parse().approval,
        &["allow", "other value"],
    );
}
