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
	requested_role
	not requester_allowed(requested_role)
	msg := sprintf("role %v may be requested only by members of %v", [input.request.role, concat(", ", sort(requested_role.requester_groups))])
}

elevation_deny_reasons contains msg if {
	requested_role
	not approvals_required
	not auto_approve_rule
	msg := sprintf("role %v has no approval rule in data.jitssh_config.roles; ask the policy owner", [input.request.role])
}

# Without requester_groups anyone may ask; with them, members only.
requester_allowed(role) if not role.requester_groups

requester_allowed(role) if count(identity_groups & {g | some g in role.requester_groups}) > 0

auto_approve_rule := requested_role.approval.auto_approve

# Auto-approval: the requester is in one of the rule's groups (e.g. on call)
# and the reason matches its pattern (e.g. cites an incident ticket).
auto_approved if {
	auto_approve_member(auto_approve_rule)
	regex.match(auto_approve_rule.reason_pattern, input.request.reason)
}

auto_approve_member(rule) if {
	some g in rule.groups
	g in identity_groups
}

auto_approve_reasons := [sprintf(
	"auto-approved: member of %v and the reason matches %v",
	[concat(", ", sort(identity_groups & {g | some g in auto_approve_rule.groups})), auto_approve_rule.reason_pattern],
)]

approvals_required := role_approvals(requested_role)

role_approvals(role) := n if {
	n := role.approval.approvals_required
	is_number(n)
	n >= 1
	round(n) == n
}

approver_groups := role_approver_list(requested_role)

role_approver_list(role) := sort({g | some g in role.approval.approver_groups})

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

# ---------------------------------------------------------------------------
# The console's guide to asking for a role (My access → "Request a role"):
# per role, whether this person may ask for it, who approves it and when it
# is approved at once. Built from the same data and functions the two
# decisions above use, so the page cannot drift from them; the server reads
# it strictly and, when it is missing or malformed, shows the roles without
# approval details. Input: the console's (identity, request.kind
# "role_guide", time).

role_guide[name] := {
	"may_request": guide_may_request(role),
	"requester_groups": sort(object.get(role, "requester_groups", [])),
	"approver_groups": guide_approver_groups(role),
	"approvals_required": guide_approvals(role),
	"auto_approve": guide_auto_approve(role),
} if {
	some name, role in config.roles
}

# Asking is worth it: a person, allowed to ask, and the request can end in
# an approval (approvers exist, or this person meets the auto-approve group).
guide_may_request(role) if {
	input.identity.kind == "human"
	requester_allowed(role)
	guide_can_be_approved(role)
}

default guide_may_request(_) := false

guide_can_be_approved(role) if {
	role_approvals(role)
	count(role_approver_list(role)) > 0
}

guide_can_be_approved(role) if auto_approve_member(role.approval.auto_approve)

guide_approver_groups(role) := role_approver_list(role) if role_approvals(role)

default guide_approver_groups(_) := []

guide_approvals(role) := role_approvals(role)

default guide_approvals(_) := 0

# The auto-approve rule in words; its `reason_hint` (data.json) says what
# the pattern means, else the pattern is quoted.
guide_auto_approve(role) := sprintf("auto-approved for members of %v when the reason %v", [
	concat(", ", sort(rule.groups)),
	object.get(rule, "reason_hint", sprintf("matches %v", [rule.reason_pattern])),
]) if {
	rule := role.approval.auto_approve
}

default guide_auto_approve(_) := null

