//! What the server asks of a policy: the rules it evaluates, and how long
//! one evaluation may take (regorus's process-wide time limit).

use std::num::NonZeroU32;
use std::sync::Once;
use std::time::Duration;

use regorus::utils::limits::{
    ExecutionTimerConfig, fallback_execution_timer_config, set_fallback_execution_timer_config,
};

/// The rule the server evaluates.
pub const DECISION_RULE: &str = "data.jitssh.decision";

/// The rule the server evaluates for host certificates. Optional: a policy
/// set without it serves user certificates and denies every host certificate.
pub const HOST_DECISION_RULE: &str = "data.jitssh.host_decision";

/// The role table for just-in-time elevation: an object from role name to
/// `{principals, max_ttl_seconds, description}`, evaluated once per policy
/// load with an empty input. Optional: without it elevation is off.
pub const ROLES_RULE: &str = "data.jitssh.roles";

/// The decision on a new elevation request (approve, pending, deny).
/// Required when the policy defines roles.
pub const ELEVATION_DECISION_RULE: &str = "data.jitssh.elevation_decision";

/// Whether a given person may approve or deny a given elevation request.
/// Required when the policy defines roles.
pub const APPROVAL_DECISION_RULE: &str = "data.jitssh.approval_decision";

/// What a signed-in person may see and do in the web console: an object
/// `{"capabilities": [...]}` (see `console::rights`). Optional: a set without
/// it shows nobody anything in the console (fail closed).
pub const UI_DECISION_RULE: &str = "data.jitssh.ui_decision";

/// The console's guide to asking for a role: an object from role name to
/// `{may_request, requester_groups, approver_groups, approvals_required,
/// auto_approve}` for the person in `input` (see `console::role_guide`).
/// Optional: without it My access lists roles without saying who approves.
pub const ROLE_GUIDE_RULE: &str = "data.jitssh.role_guide";

/// Wall-clock budget for one decision. The default policy takes well under a
/// millisecond; a policy that needs more than this is broken (a runaway
/// comprehension), and the request is denied rather than holding a core.
///
/// regorus measures wall-clock time only (no CPU-time source on `std`), so
/// the budget must absorb scheduling delays: at 250 ms a load test on two
/// oversubscribed cores saw a healthy decision descheduled past the limit
/// and denied. One second still stops a runaway policy quickly.
pub const EVAL_TIME_LIMIT: Duration = Duration::from_secs(1);

/// Wall-clock budget for one `test_*` rule (tests build inputs and may be
/// slow in debug builds).
pub const TEST_TIME_LIMIT: Duration = Duration::from_secs(10);

/// How many interpreter steps pass between clock reads.
pub(super) const CHECK_INTERVAL: NonZeroU32 = NonZeroU32::MIN.saturating_add(31);

/// Install [`EVAL_TIME_LIMIT`] as regorus's process-wide fallback, which is
/// what compiled policies use. Leaves an existing fallback alone.
pub(super) fn install_time_limit() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if fallback_execution_timer_config().is_none() {
            set_fallback_execution_timer_config(Some(ExecutionTimerConfig {
                limit: EVAL_TIME_LIMIT,
                check_interval: CHECK_INTERVAL,
            }));
        }
    });
}
