//! What the VM is not trusted with, whatever the load-time comparison
//! says: a decision whose compiled program has an `every` loop. regorus
//! 0.14.1's VM (with our strict patch) was seen to let a mismatching
//! element through an `every` inside a comprehension — an allow where the
//! interpreter denies — on data the comparison's 256 inputs need not meet
//! (found by the differential test's data variants). Such a decision is
//! served by the interpreter. The check reads the compiled program, so it
//! sees `every` in any rule the decision reaches, whichever file holds it.

use regorus::rvm::Program;
use regorus::rvm::instructions::LoopMode;

/// Why `program` must not serve on the VM, if it must not.
pub(super) fn refusal(program: &Program) -> Option<&'static str> {
    program
        .instruction_data
        .loop_params
        .iter()
        .any(|p| matches!(p.mode, LoopMode::Every))
        .then_some("the decision uses `every`, which regorus's VM is not trusted with")
}

#[cfg(test)]
mod tests {
    /// The miscompilation this guard exists for, kept as a canary: if a
    /// regorus update fixes it, this fails and the guard can be revisited
    /// (with the differential test's data variants that found it).
    #[test]
    fn the_vm_lets_a_mismatching_claim_through_every() {
        #![allow(clippy::unwrap_used)]
        let rego = r#"package jitssh
import rego.v1
workload_binding := matching[0] if {
	matching := [b |
		input.identity.kind == "workload"
		some b in data.jitssh_config.workloads
		b.issuer == input.identity.issuer
		every claim, want in b.claims {
			input.identity.claims[claim] == want
		}
	]
	count(matching) > 0
}
"#;
        let data = regorus::Value::from_json_str(
            r#"{"jitssh_config": {"workloads": [{"issuer": "https://idp", "claims": {"client_id": "ci", "sub": "ci"}}]}}"#,
        )
        .unwrap();
        let mut e = regorus::Engine::new();
        e.set_rego_v0(false);
        e.add_policy("w.rego".into(), rego.into()).unwrap();
        e.add_data(data.clone()).unwrap();
        let rule = "data.jitssh.workload_binding";
        let interpreter = e.compile_with_entrypoint(&rule.into()).unwrap();
        let vm = super::super::vm::VmProgram::compile_unguarded(&interpreter, rule, data).unwrap();
        let input = regorus::Value::from_json_str(
            r#"{"identity": {"kind": "workload", "issuer": "https://idp", "claims": {"client_id": "ci", "sub": "someone-else"}}}"#,
        )
        .unwrap();
        assert_eq!(
            interpreter.eval_with_input(input.clone()).unwrap(),
            regorus::Value::Undefined,
            "the interpreter finds no binding"
        );
        assert_ne!(
            vm.eval(input).unwrap(),
            regorus::Value::Undefined,
            "the VM still matches the binding: if this fails, regorus fixed `every`; revisit vm_guard"
        );
    }

    #[test]
    fn a_policy_that_uses_every_is_served_by_the_interpreter() {
        #![allow(clippy::unwrap_used)]
        let e = crate::policy::test_support::engine(&[(
            "p.rego",
            "package jitssh\nimport rego.v1\ndecision := {\"allow\": false} if {\n  every g in [1] { g == 1 }\n}",
        )])
        .unwrap();
        assert_eq!(
            e.snapshot().engines(),
            [("user", super::super::entry::EngineKind::Interpreter)]
        );
    }
}
