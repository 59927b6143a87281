# Workload identities (CI jobs, services) exchanging their OIDC token for a
# short certificate. A workload is bound by STABLE IDs (repository_id,
# repository_owner_id; a Kubernetes service account's namespace + name under a
# cluster-specific issuer; a service account using OAuth2 client credentials
# by its client_id and sub), never by names that can be deleted and registered
# again by someone else. Bindings live in data.json under
# jitssh_config.workloads; see README.md.
#
# Like jitssh.rego, few rules on the allow path: regorus's cost is mostly per
# rule evaluated.
package jitssh

import rego.v1

# The first binding this workload matches (same issuer, every listed claim
# equal), if any. First wins: order bindings from most to least specific.
workload_binding := matching[0] if {
	matching := [b |
		input.identity.kind == "workload"
		some b in data.jitssh_config.workloads
		b.issuer == input.identity.issuer
		workload_claims_match(b.claims)
	]
	count(matching) > 0
}

# Every claim the binding lists is in the token with that value. Written
# without `every`: regorus's VM (0.14.1, even with our strict patch) has
# been seen to let a mismatching claim through an `every` inside this
# comprehension, and the server serves a decision that uses `every` on the
# interpreter only (ca-server/src/policy/vm_guard.rs).
workload_claims_match(claims) if {
	is_object(claims)
	matching := {claim | some claim, want in claims; input.identity.claims[claim] == want}
	count(matching) == count(claims)
}

workload_ttl := min([workload_binding.ttl_seconds, asked]) if {
	asked := input.request.ttl_seconds
	is_number(asked)
} else := workload_binding.ttl_seconds

# The binding's principals that the request asks for; all of them when it
# names none (no list, null or false).
workload_principals := [p | some p in workload_binding.principals; p in input.request.principals] if {
	input.request.principals
	input.request.principals != null
} else := [p | some p in workload_binding.principals]

workload_decision := {
	"allow": true,
	"principals": sort(principals),
	"ttl_seconds": workload_ttl,
	"extensions": [],
	"critical_options": object.get(workload_binding, "critical_options", {}),
	"reasons": [sprintf("workload binding %q", [workload_binding.name])],
} if {
	principals := workload_principals
	count(principals) > 0
} else := {
	"allow": false,
	"principals": [],
	"extensions": [],
	"critical_options": {},
	"reasons": [sprintf("workload binding %q does not grant the requested principals", [workload_binding.name])],
}

deny_reasons contains msg if {
	input.identity.kind == "workload"
	not workload_binding
	msg := sprintf("no workload binding matches this token (issuer %q, sub %v, repository_id %v, ref %v, client_id %v)", [
		input.identity.issuer,
		object.get(token_claims, "sub", null),
		object.get(token_claims, "repository_id", null),
		object.get(token_claims, "ref", null),
		object.get(token_claims, "client_id", null),
	])
}

# The token's claims for the message above; none when the input carries
# something else. Not an error there: whether a builtin's error or an
# undefined argument (a missing issuer) wins depends on the engine's
# evaluation order, and the interpreter and the VM differ on it.
token_claims := input.identity.claims if is_object(input.identity.claims)
else := {}
