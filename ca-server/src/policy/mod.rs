//! The Rego policy engine: load, test and compile a policy directory once,
//! serve `data.jitssh.decision` (user certificates) and, when the set defines
//! it, `data.jitssh.host_decision` (host certificates) from the compiled
//! policy, and swap in a new policy atomically when it changes — only if it
//! compiles and its tests pass. A set without `host_decision` denies every
//! host certificate.
//!
//! A policy set is every `*.rego` file (tests included) and every
//! `data*.json` file directly in one directory; nothing else is read. Its
//! identity is [`PolicyEngine::policy_hash`], recorded in every audit row.
//! A set serves only if it compiles, every `test_*` rule in every package
//! evaluates to `true`, and the decision evaluates without error on the
//! documented sample input ([`SAMPLE_CHECK`]; and [`HOST_SAMPLE_CHECK`] when
//! the set has a host decision).
//!
//! Evaluation is lock-free: the serving policy sits behind an
//! [`ArcSwap`](arc_swap::ArcSwap), shared by every request. Each decision
//! serves on regorus's bytecode VM, in the strict mode of our patched copy
//! (one VM per thread, `vm`), when it compiles for the VM and agrees with the
//! interpreter on a generated corpus at load (`entry`, `corpus`); otherwise
//! on the interpreter ([`regorus::CompiledPolicy`]), with a warning and the
//! `jitssh_policy_engine` gauge saying so. `test_*` rules, the sample checks
//! and the role table run on the interpreter. Compiled policies take their
//! time limit from regorus's process-wide fallback, which this module
//! installs (see [`EVAL_TIME_LIMIT`]); the VM is given the same limit.

mod corpus;
#[cfg(test)]
mod differential;
mod engine;
mod entry;
mod error;
mod eval;
mod files;
mod load;
mod regex_match;
mod rules;
mod status;
#[cfg(test)]
mod test_support;
mod testing;
mod trial;
mod vm;
mod vm_guard;
mod watch;

pub use engine::{PolicyEngine, ReloadOutcome};
pub use entry::EngineKind;
pub use error::PolicyError;
pub use eval::{Evaluation, PolicySnapshot};
pub use files::EMBEDDED_FILES;
pub use load::{run_embedded_tests, run_tests};
pub use rules::{
    APPROVAL_DECISION_RULE, DECISION_RULE, ELEVATION_DECISION_RULE, EVAL_TIME_LIMIT,
    HOST_DECISION_RULE, ROLE_GUIDE_RULE, ROLES_RULE, TEST_TIME_LIMIT, UI_DECISION_RULE,
};
pub use status::{LastReload, PolicyStatus, Reload};
pub use testing::{
    APPROVAL_SAMPLE_CHECK, ELEVATION_SAMPLE_CHECK, HOST_SAMPLE_CHECK, SAMPLE_CHECK, TestReport,
    TestResult,
};
pub use trial::{MAX_INPUT, Trial, TrialDecision, TrialError, try_decision};
