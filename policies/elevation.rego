# jitssh elevation policy: just-in-time roles. Nobody holds a role's
# principals until a request for that role is approved, for a reason, for a
# limited time. Three rules serve the server (input and decision documents
# are described in README.md beside this file):
#
# - `roles`: the role table, read once per policy load (no input): each role's
#   principals and longest grant. A principal any role grants is privileged:
#   the server signs it only under an active grant, until the grant's end.
# - `elevation_decision`: a new request is approved now, needs approvals, or
#   is denied, with reasons.
# - `approval_decision`: whether this person may approve or deny this request.
#
# The server enforces, whatever these rules say: nobody approves their own
# request, each approver counts once, only pending requests can be decided,
# and a grant never outlives its role's maximum.
package jitssh

# The role table as the server reads it: only these three fields.
roles[name] := {
	"principals": role.principals,
	"max_ttl_seconds": role.max_ttl_seconds,
	"description": object.get(role, "description", ""),
} if {
	some name, role in config.roles
}

# ---------------------------------------------------------------------------
# A new request.

default elevation_decision := {
	"outcome": "deny",
	"reasons": ["denied: the elevation policy reached no decision (default deny)"],
}

elevation_decision := {
	"outcome": "deny",
	"reasons": sort(elevation_deny_reasons),
} if {
	count(elevation_deny_reasons) > 0
} else := {
	"outcome": "approve",
	"reasons": auto_approve_reasons,
} if {
	auto_approved
} else := {
	"outcome": "pending",
	"approvals_required": approvals_required,
	"reasons": [sprintf(
		"role %v needs %v approval(s) from %v",
		[input.request.role, approvals_required, concat(", ", approver_groups)],
	)],
} if {
	approvals_required
	count(approver_groups) > 0
}

requested_role := config.roles[input.request.role]

identity_groups := {g | some g in input.identity.groups} if is_array(input.identity.groups)

default identity_groups := set()

elevation_deny_reasons contains "only people request elevation; workloads get fixed principals from their binding" if {
	input.identity.kind != "human"
}

elevation_deny_reasons contains msg if {
	not requested_role
	msg := sprintf("no role %v is defined", [input.request.role])
}

# A role may restrict who can ask for it at all.
elevation_deny_reasons contains msg if {
	allowed := requested_role.requester_groups
	count(identity_groups & {g | some g in allowed}) == 0
	msg := sprintf("role %v may be requested only by members of %v", [input.request.role, concat(", ", sort(allowed))])
}

elevation_deny_reasons contains msg if {
	requested_role
	not approvals_required
	not auto_approve_rule
	msg := sprintf("role %v has no approval rule in data.jitssh_config.roles; ask the policy owner", [input.request.role])
}

auto_approve_rule := requested_role.approval.auto_approve

# Auto-approval: the requester is in one of the rule's groups (e.g. on call)
# and the reason matches its pattern (e.g. cites an incident ticket).
auto_approved if {
	some g in auto_approve_rule.groups
	g in identity_groups
	regex.match(auto_approve_rule.reason_pattern, input.request.reason)
}

auto_approve_reasons := [sprintf(
	"auto-approved: member of %v and the reason matches %v",
	[concat(", ", sort(identity_groups & {g | some g in auto_approve_rule.groups})), auto_approve_rule.reason_pattern],
)]

approvals_required := n if {
	n := requested_role.approval.approvals_required
	is_number(n)
	n >= 1
	round(n) == n
}

approver_groups := sort({g | some g in requested_role.approval.approver_groups})

# ---------------------------------------------------------------------------
# May this person approve (or deny) this request?

default approval_decision := {
	"allow": false,
	"reasons": ["not an approver: the approval policy reached no decision (default deny)"],
}

approval_decision := {
	"allow": true,
	"reasons": [sprintf("member of %v, an approver group of role %v", [concat(", ", sort(approver_in)), input.request.role])],
} if {
	input.identity.kind == "human"
	count(approver_in) > 0
} else := {
	"allow": false,
	"reasons": [sprintf("only members of %v may approve role %v", [concat(", ", role_approver_groups), input.request.role])],
}

role_approver_groups := sort({g | some g in config.roles[input.request.role].approval.approver_groups})

approver_in := identity_groups & {g | some g in role_approver_groups}
