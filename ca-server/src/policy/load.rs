//! Building a policy set from its files: parse the Rego and data, compile
//! each entry point, check the role table, run the set's tests; a set serves
//! only when all of that succeeds.

use std::path::Path;
use std::sync::Arc;

use ca_core::elevation::RoleTable;
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{CompiledPolicy, Engine};
use serde::Deserialize as _;

use super::corpus::Pool;
use super::entry::{Corpus, EntryPoint, LOAD_CORPUS};
use super::error::{PolicyError, one_line};
use super::eval::{ElevationRules, Serving, to_json};
use super::files::PolicyFiles;
use super::regex_match;
use super::rules::{
    APPROVAL_DECISION_RULE, CHECK_INTERVAL, DECISION_RULE, ELEVATION_DECISION_RULE,
    HOST_DECISION_RULE, ROLE_GUIDE_RULE, ROLES_RULE, TEST_TIME_LIMIT, UI_DECISION_RULE,
};
use super::testing::{
    self, APPROVAL_SAMPLE_INPUT, ELEVATION_SAMPLE_INPUT, HOST_SAMPLE_INPUT, SAMPLE_INPUT,
    TestReport,
};

/// Run every `test_*` rule of the policy set in `dir`. `Err` only when the
/// set cannot be read or does not compile; failing tests are in the report.
pub fn run_tests(dir: &Path) -> Result<TestReport, PolicyError> {
    let files = PolicyFiles::read_dir(dir)?;
    Ok(Prepared::build(&files)?.report)
}

/// [`run_tests`] on the embedded default policy.
pub fn run_embedded_tests() -> Result<TestReport, PolicyError> {
    Ok(Prepared::build(&PolicyFiles::embedded())?.report)
}

/// A policy set parsed, compiled and tested (tests may have failed).
pub(super) struct Prepared {
    origin: String,
    pub(super) policy: CompiledPolicy,
    pub(super) host: Option<CompiledPolicy>,
    ui: Option<CompiledPolicy>,
    role_guide: Option<CompiledPolicy>,
    pub(super) elevation: Option<ElevationRules<CompiledPolicy>>,
    roles: Arc<RoleTable>,
    hash: String,
    /// The set's data document, for the VM.
    pub(super) data: regorus::Value,
    /// The same as JSON files, for the load-time corpus.
    data_json: Vec<serde_json::Value>,
    pub(super) report: TestReport,
}

impl Prepared {
    pub(super) fn build(files: &PolicyFiles) -> Result<Self, PolicyError> {
        let origin = &files.origin;
        let mut engine = Engine::new();
        engine.set_rego_v0(false);
        engine.set_strict_builtin_errors(true);
        regex_match::install(&mut engine).map_err(|e| PolicyError::Compile {
            origin: origin.clone(),
            message: format!("installing regex.match: {e}"),
        })?;
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit: TEST_TIME_LIMIT,
            check_interval: CHECK_INTERVAL,
        });

        let mut data_files = Vec::new();
        let mut rego_files = 0usize;
        for (name, text) in &files.files {
            if name.ends_with(".rego") {
                engine
                    .add_policy(name.clone(), text.clone())
                    .map_err(|e| PolicyError::Parse {
                        origin: origin.clone(),
                        file: name.clone(),
                        message: one_line(&format!("{e:#}")),
                    })?;
                rego_files += 1;
            } else {
                let data_err = |message: String| PolicyError::Data {
                    origin: origin.clone(),
                    file: name.clone(),
                    message,
                };
                let json: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| data_err(e.to_string()))?;
                if !json.is_object() {
                    return Err(data_err("the top level must be a JSON object".into()));
                }
                let value =
                    regorus::Value::deserialize(&json).map_err(|e| data_err(e.to_string()))?;
                engine
                    .add_data(value)
                    .map_err(|e| data_err(format!("{e:#}")))?;
                data_files.push((name, json));
            }
        }
        if rego_files == 0 {
            return Err(PolicyError::NoPolicy {
                origin: origin.clone(),
            });
        }

        let packages =
            engine
                .get_policy_package_components()
                .map_err(|e| PolicyError::Compile {
                    origin: origin.clone(),
                    message: format!("{e:#}"),
                })?;
        for (file, json) in &data_files {
            for package in &packages {
                if json_path_exists(json, &package.components) {
                    return Err(PolicyError::DataShadowsPackage {
                        origin: origin.clone(),
                        file: (*file).clone(),
                        package: package.components.join("."),
                    });
                }
            }
        }

        let policy = engine
            .compile_with_entrypoint(&DECISION_RULE.into())
            .map_err(|e| {
                let message = one_line(&format!("{e:#}"));
                let has_package = packages.iter().any(|p| p.components == ["jitssh"]);
                if !has_package || message.contains("not a valid rule path") {
                    PolicyError::NoDecision {
                        origin: origin.clone(),
                    }
                } else {
                    PolicyError::Compile {
                        origin: origin.clone(),
                        message,
                    }
                }
            })?;

        // The host entry point is optional; when it exists it must compile.
        let host = if policy.get_rules().contains_key(HOST_DECISION_RULE) {
            Some(
                engine
                    .compile_with_entrypoint(&HOST_DECISION_RULE.into())
                    .map_err(|e| PolicyError::Compile {
                        origin: origin.clone(),
                        message: one_line(&format!("{e:#}")),
                    })?,
            )
        } else {
            None
        };

        // Elevation: a role table (checked now, once) and both decisions.
        let mut compile = |rule: &str| {
            engine
                .compile_with_entrypoint(&rule.into())
                .map_err(|e| PolicyError::Compile {
                    origin: origin.clone(),
                    message: one_line(&format!("{e:#}")),
                })
        };
        let rules = policy.get_rules();
        // The console's rule is optional too; without it the console shows
        // nothing to anyone.
        let ui = if rules.contains_key(UI_DECISION_RULE) {
            Some(compile(UI_DECISION_RULE)?)
        } else {
            None
        };
        let role_guide = if rules.contains_key(ROLE_GUIDE_RULE) {
            Some(compile(ROLE_GUIDE_RULE)?)
        } else {
            None
        };
        let (roles, elevation) = if rules.contains_key(ROLES_RULE) {
            let roles_policy = compile(ROLES_RULE)?;
            let value = roles_policy
                .eval_with_input(regorus::Value::new_object())
                .map_err(|e| PolicyError::Roles {
                    origin: origin.clone(),
                    message: one_line(&format!("{e:#}")),
                })?;
            let json = match value {
                regorus::Value::Undefined => None,
                v => Some(to_json(&v, 0).map_err(|message| PolicyError::Roles {
                    origin: origin.clone(),
                    message,
                })?),
            };
            let roles = RoleTable::parse(json.as_ref()).map_err(|message| PolicyError::Roles {
                origin: origin.clone(),
                message,
            })?;
            if roles.is_empty() {
                (roles, None)
            } else {
                for rule in [ELEVATION_DECISION_RULE, APPROVAL_DECISION_RULE] {
                    if !rules.contains_key(rule) {
                        return Err(PolicyError::Roles {
                            origin: origin.clone(),
                            message: format!("roles are defined but {rule} is not"),
                        });
                    }
                }
                let elevation = ElevationRules {
                    request: compile(ELEVATION_DECISION_RULE)?,
                    approval: compile(APPROVAL_DECISION_RULE)?,
                };
                (roles, Some(elevation))
            }
        } else {
            (RoleTable::default(), None)
        };

        let report = testing::run_all(&mut engine, &policy, host.as_ref(), elevation.as_ref());

        Ok(Prepared {
            origin: origin.clone(),
            policy,
            host,
            ui,
            role_guide,
            elevation,
            roles: Arc::new(roles),
            hash: files.hash(),
            data: engine.get_data(),
            data_json: data_files.into_iter().map(|(_, json)| json).collect(),
            report,
        })
    }

    /// [`Self::into_serving`], with how many tests passed.
    pub(super) fn into_serving_with_count(self) -> Result<(Serving, usize), PolicyError> {
        let passed = self.report.passed();
        Ok((self.into_serving()?, passed))
    }

    /// The policy, if every test passed.
    pub(super) fn into_serving(self) -> Result<Serving, PolicyError> {
        let failed = self.report.failed();
        if failed > 0 {
            return Err(PolicyError::TestsFailed {
                origin: self.origin,
                failed,
                total: self.report.results.len(),
                summary: self.report.failure_summary(),
            });
        }
        let samples = Samples::parse();
        let pool = Pool::new(samples.all().chain(&self.data_json));
        // The same corpus on every load of the same set.
        let seed = u64::from_str_radix(self.hash.get(..16).unwrap_or("0"), 16).unwrap_or(0);
        let choose = |label, rule, compiled, samples: &[serde_json::Value]| {
            let corpus = Corpus {
                samples,
                pool: &pool,
                seed,
                count: LOAD_CORPUS,
            };
            EntryPoint::choose(label, rule, compiled, &self.data, &corpus)
        };
        let policy = choose("user", DECISION_RULE, self.policy, &samples.user);
        let host = self
            .host
            .map(|h| choose("host", HOST_DECISION_RULE, h, &samples.host));
        let elevation = self.elevation.map(|e| ElevationRules {
            request: choose(
                "elevation",
                ELEVATION_DECISION_RULE,
                e.request,
                &samples.elevation,
            ),
            approval: choose(
                "approval",
                APPROVAL_DECISION_RULE,
                e.approval,
                &samples.approval,
            ),
        });
        Ok(Serving {
            policy,
            host,
            ui: self.ui.map(|ui| EntryPoint {
                label: "ui",
                interpreter: ui,
                vm: None,
            }),
            role_guide: self.role_guide.map(|guide| EntryPoint {
                label: "role_guide",
                interpreter: guide,
                vm: None,
            }),
            elevation,
            roles: self.roles,
            hash: self.hash,
        })
    }
}

/// The documented sample inputs the load-time corpus bends, per decision.
pub(super) struct Samples {
    pub(super) user: Vec<serde_json::Value>,
    pub(super) host: Vec<serde_json::Value>,
    pub(super) elevation: Vec<serde_json::Value>,
    pub(super) approval: Vec<serde_json::Value>,
}

impl Samples {
    pub(super) fn parse() -> Self {
        let parse = |text: &str| serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
        let human = parse(SAMPLE_INPUT);
        // A workload asking for a user certificate takes another path
        // through the user decision; mutations borrow issuers and claims
        // from the data's bindings.
        let mut workload = human.clone();
        workload["identity"]["kind"] = "workload".into();
        Samples {
            user: vec![human, workload],
            host: vec![parse(HOST_SAMPLE_INPUT)],
            elevation: vec![parse(ELEVATION_SAMPLE_INPUT)],
            approval: vec![parse(APPROVAL_SAMPLE_INPUT)],
        }
    }

    fn all(&self) -> impl Iterator<Item = &serde_json::Value> {
        self.user
            .iter()
            .chain(&self.host)
            .chain(&self.elevation)
            .chain(&self.approval)
    }
}

/// Whether `json` has a value at `path` (or a non-object on the way to it,
/// which would equally clash with a package there).
fn json_path_exists(json: &serde_json::Value, path: &[String]) -> bool {
    let mut at = json;
    for component in path {
        match at {
            serde_json::Value::Object(map) => match map.get(component) {
                Some(next) => at = next,
                None => return false,
            },
            _ => return true,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use serde_json::json;

    use super::*;
    use crate::policy::PolicyEngine;
    use crate::policy::test_support::engine;
    use crate::policy::testing::{
        APPROVAL_SAMPLE_CHECK, APPROVAL_SAMPLE_INPUT, ELEVATION_SAMPLE_CHECK,
        ELEVATION_SAMPLE_INPUT,
    };

    #[test]
    fn load_errors_name_the_problem() {
        let err = engine(&[("a.rego", "package jitssh\ndecision := {")]).unwrap_err();
        assert!(
            matches!(&err, PolicyError::Parse { file, .. } if file == "a.rego"),
            "{err}"
        );
        assert!(err.to_string().contains("a.rego"), "{err}");

        let err = engine(&[("a.rego", "package other\nx := 1")]).unwrap_err();
        assert!(matches!(err, PolicyError::NoDecision { .. }), "{err}");
        let err = engine(&[("a.rego", "package jitssh\nx := 1")]).unwrap_err();
        assert!(matches!(err, PolicyError::NoDecision { .. }), "{err}");

        let err = engine(&[("data.json", "{}")]).unwrap_err();
        assert!(matches!(err, PolicyError::NoPolicy { .. }), "{err}");

        let err = engine(&[
            ("a.rego", "package jitssh\ndecision := 1"),
            ("data.json", "[1]"),
        ])
        .unwrap_err();
        assert!(matches!(err, PolicyError::Data { .. }), "{err}");
        let err = engine(&[
            ("a.rego", "package jitssh\ndecision := 1"),
            ("data.json", "{"),
        ])
        .unwrap_err();
        assert!(matches!(err, PolicyError::Data { .. }), "{err}");

        let err = engine(&[
            ("a.rego", "package jitssh\ndecision := 1"),
            ("data.json", r#"{"jitssh": {"x": 1}}"#),
        ])
        .unwrap_err();
        assert!(
            matches!(err, PolicyError::DataShadowsPackage { .. }),
            "{err}"
        );

        let err = engine(&[
            ("a.rego", "package jitssh\ndecision := 1"),
            ("data-a.json", r#"{"k": 1}"#),
            ("data-b.json", r#"{"k": 2}"#),
        ])
        .unwrap_err();
        assert!(matches!(err, PolicyError::Data { .. }), "{err}");
    }

    #[test]
    fn embedded_policy_defines_roles_and_decides_elevations() {
        let engine = PolicyEngine::load_embedded_default().unwrap().snapshot();
        let names: Vec<String> = engine.roles().iter().map(|r| r.name.to_string()).collect();
        assert_eq!(names, ["db-admin", "prod-root"]);
        let sample: serde_json::Value = serde_json::from_str(ELEVATION_SAMPLE_INPUT).unwrap();
        let d = engine
            .evaluate_elevation(&sample)
            .unwrap()
            .decision
            .unwrap();
        assert_eq!(d["outcome"], "approve", "{d}");
        let sample: serde_json::Value = serde_json::from_str(APPROVAL_SAMPLE_INPUT).unwrap();
        let d = engine.evaluate_approval(&sample).unwrap().decision.unwrap();
        assert_eq!(d["allow"], true, "{d}");
        let report = run_embedded_tests().unwrap();
        for check in [ELEVATION_SAMPLE_CHECK, APPROVAL_SAMPLE_CHECK] {
            assert!(report.results.iter().any(|r| r.name == check && r.passed));
        }
    }

    #[test]
    fn elevation_needs_a_usable_role_table_and_both_decisions() {
        const DECISION: &str = "package jitssh\ndecision := {\"allow\": false}\n";
        // No roles: elevation is off, and fails closed.
        let off = engine(&[("p.rego", DECISION)]).unwrap().snapshot();
        assert!(off.roles().is_empty());
        assert!(matches!(
            off.evaluate_elevation(&json!({})),
            Err(PolicyError::NoElevation { .. })
        ));
        assert!(matches!(
            off.evaluate_approval(&json!({})),
            Err(PolicyError::NoElevation { .. })
        ));
        // Roles without the decisions, or a malformed table: refused at load.
        let roles = "package jitssh\nroles := {\"r\": {\"principals\": [\"x\"], \"max_ttl_seconds\": 60}}\n";
        let err = engine(&[("p.rego", DECISION), ("r.rego", roles)]).unwrap_err();
        assert!(err.to_string().contains("elevation_decision"), "{err}");
        let bad =
            "package jitssh\nroles := {\"r\": {\"principals\": [], \"max_ttl_seconds\": 60}}\n";
        let err = engine(&[("p.rego", DECISION), ("r.rego", bad)]).unwrap_err();
        assert!(matches!(err, PolicyError::Roles { .. }), "{err}");
        assert!(err.to_string().contains("grants no principals"), "{err}");
        // All three: served.
        let full = format!(
            "{roles}elevation_decision := {{\"outcome\": \"deny\"}}\napproval_decision := {{\"allow\": false}}\n"
        );
        let on = engine(&[("p.rego", DECISION), ("r.rego", &full)])
            .unwrap()
            .snapshot();
        assert_eq!(on.roles().iter().count(), 1);
        let d = on.evaluate_elevation(&json!({})).unwrap().decision.unwrap();
        assert_eq!(d["outcome"], "deny");
    }
}
