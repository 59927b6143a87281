# jitssh console policy: who sees which page of the web console (/ui/) and
# which buttons. The server asks `ui_decision` on every console request and
# enforces the answer on the server (a hidden button is not a refusal: the
# POST behind it is refused too). Undefined, an error, or a capability this
# server does not know means the console shows that person nothing.
#
# Capabilities (input and decision are described in README.md beside this
# file):
#   my_access    My access: my grants and requests, the roles I may request
#   decide       To decide: pending requests; each decision is still
#                approval_decision's (elevation.rego) and the server's rules
#   grants       Grants: everyone's active and recent grants
#   end_grants   end someone's grant early
#   audit        Audit: search, charts, verify the chain, export
#   revocations  Revocations: the list and when each reached the KRL
#   revoke       revoke a serial, key or subject
#   policy       Policy: loaded files, test results, the "try it" form
package jitssh

# Operator, auditor and policy-author groups, from data.json.
console_config := object.get(config, "console", {})

console_groups(kind) := {g | some g in console_config[kind]} if {
	is_array(console_config[kind])
} else := set()

console_identity_groups := {g | some g in input.identity.groups} if {
	is_array(input.identity.groups)
} else := set()

console_member(kind) if {
	some g in console_identity_groups
	g in console_groups(kind)
}

# Anyone who may approve some role sees the queue of requests to decide.
console_approver if {
	some role in config.roles
	some g in role.approval.approver_groups
	g in console_identity_groups
}

ui_capabilities contains "my_access"

ui_capabilities contains "decide" if console_approver

ui_capabilities contains cap if {
	console_member("auditor_groups")
	some cap in ["audit", "grants", "revocations"]
}

ui_capabilities contains cap if {
	console_member("operator_groups")
	some cap in ["decide", "grants", "end_grants", "audit", "revocations", "revoke", "policy"]
}

ui_capabilities contains "policy" if console_member("policy_author_groups")

# People only: a workload identity never gets a console session, and this
# rule says so again.
ui_decision := {
	"capabilities": sort(ui_capabilities),
	"reasons": [sprintf("%v may use: %v", [input.identity.subject, concat(", ", sort(ui_capabilities))])],
} if {
	input.identity.kind == "human"
}
