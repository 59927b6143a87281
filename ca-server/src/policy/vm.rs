//! One decision entry point compiled for regorus's bytecode VM (RVM), run in
//! the strict mode our patch adds (third_party/regorus.patch): a rule body's
//! error, a conflict between a complete rule's definitions and `some .. in`
//! over a non-collection are errors, as in the interpreter, instead of a
//! silently failing body. Whether an entry point may serve on the VM at all
//! is decided at load (`entry.rs`).
//!
//! A `RegoVM` runs with `&mut self`, so each thread keeps its own VMs, keyed
//! by the program's id: a reload compiles new programs with new ids, and a
//! thread builds a fresh VM the first time it meets one. The VM is bounded
//! like the interpreter: [`EVAL_TIME_LIMIT`] of wall clock, plus an
//! instruction budget as a second, clock-independent stop.
//!
//! The VM calls regorus's builtin `regex.match`, not our per-thread one
//! (`regex_match.rs`): its compiler has no extensions. The builtin shares one
//! pattern cache behind a mutex; our patch makes it hand out the cached
//! `Arc<Regex>` rather than a clone with cold match caches (published 0.14.1
//! built those afresh on every call: docs/performance.md, session 11).

use std::cell::RefCell;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use regorus::CompiledPolicy;
use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::vm::VmError;
use regorus::rvm::{Program, RegoVM};
use regorus::utils::limits::ExecutionTimerConfig;

use super::rules::EVAL_TIME_LIMIT;

/// Instructions between clock reads: a VM instruction is far cheaper than an
/// interpreter step, so the clock is read less often than there.
const CHECK_INTERVAL: NonZeroU32 = NonZeroU32::MIN.saturating_add(255);

/// Instructions one decision may execute. The default policy needs a few
/// thousand; this is hundreds of times more, and is reached only by a
/// runaway policy the time limit would stop a moment later anyway.
const MAX_INSTRUCTIONS: usize = 50_000_000;

/// VMs one thread keeps: the entry points of the serving policy, and of a
/// snapshot taken just before a reload, fit; older ones are dropped.
const VMS_PER_THREAD: usize = 8;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static VMS: RefCell<Vec<(u64, RegoVM)>> = const { RefCell::new(Vec::new()) };
}

/// An entry point compiled for the VM, with the data document it runs on.
pub(super) struct VmProgram {
    /// Unique per compilation: the key of each thread's VM.
    id: u64,
    program: Arc<Program>,
    data: regorus::Value,
}

/// Why the VM did not produce a value.
#[derive(Debug)]
pub(super) enum VmFailure {
    TimeLimit(std::time::Duration),
    Error(String),
}

impl VmProgram {
    /// Compile `rule` of `policy` for the VM, over `data`. `Err` says why the
    /// VM cannot serve it (the interpreter then does).
    pub(super) fn compile(
        policy: &CompiledPolicy,
        rule: &str,
        data: regorus::Value,
    ) -> Result<Self, String> {
        let vm = Self::compile_unguarded(policy, rule, data)?;
        if let Some(reason) = super::vm_guard::refusal(&vm.program) {
            return Err(reason.into());
        }
        Ok(vm)
    }

    /// [`Self::compile`] without `vm_guard`'s refusal (its own tests).
    pub(super) fn compile_unguarded(
        policy: &CompiledPolicy,
        rule: &str,
        data: regorus::Value,
    ) -> Result<Self, String> {
        let program = Compiler::compile_from_policy(policy, &[rule]).map_err(|e| e.to_string())?;
        let vm = VmProgram {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            program,
            data,
        };
        // Building a VM checks the data against the rule tree; do it now, so
        // a conflict refuses the VM at load rather than failing requests.
        vm.new_vm().map_err(|e| e.to_string())?;
        Ok(vm)
    }

    fn new_vm(&self) -> Result<RegoVM, VmError> {
        let mut vm = RegoVM::new();
        vm.load_program(Arc::clone(&self.program));
        vm.set_data(self.data.clone())?;
        vm.set_strict_builtin_errors(true);
        vm.set_strict_rule_errors(true);
        vm.set_max_instructions(MAX_INSTRUCTIONS);
        vm.set_execution_timer_config(Some(ExecutionTimerConfig {
            limit: EVAL_TIME_LIMIT,
            check_interval: CHECK_INTERVAL,
        }));
        Ok(vm)
    }

    /// Evaluate the entry point for `input` on this thread's VM.
    pub(super) fn eval(&self, input: regorus::Value) -> Result<regorus::Value, VmFailure> {
        VMS.with(|cell| match cell.try_borrow_mut() {
            Ok(mut vms) => self.eval_cached(&mut vms, input),
            // Only if an evaluation ever re-entered another on one thread:
            // correct, just without reuse.
            Err(_) => run(&mut self.new_vm().map_err(failure)?, input),
        })
    }

    fn eval_cached(
        &self,
        vms: &mut Vec<(u64, RegoVM)>,
        input: regorus::Value,
    ) -> Result<regorus::Value, VmFailure> {
        let at = match vms.iter().position(|(id, _)| *id == self.id) {
            Some(at) => at,
            None => {
                if vms.len() >= VMS_PER_THREAD {
                    vms.remove(0);
                }
                vms.push((self.id, self.new_vm().map_err(failure)?));
                vms.len() - 1
            }
        };
        let result = match vms.get_mut(at) {
            Some((_, vm)) => run(vm, input),
            None => Err(VmFailure::Error("lost this thread's VM".into())),
        };
        if result.is_err() {
            // A VM that stopped on an error starts over from a fresh one
            // rather than trusting whatever state the error left.
            vms.remove(at);
        }
        result
    }
}

fn run(vm: &mut RegoVM, input: regorus::Value) -> Result<regorus::Value, VmFailure> {
    vm.set_input(input);
    let result = vm.execute().map_err(failure);
    // Do not keep the request's input alive until the next one.
    vm.set_input(regorus::Value::Undefined);
    result
}

fn failure(e: VmError) -> VmFailure {
    match e {
        VmError::TimeLimitExceeded { limit, .. } => VmFailure::TimeLimit(limit),
        other => VmFailure::Error(other.to_string()),
    }
}
