# Workload identities (CI jobs, services) exchanging their OIDC token for a
# short certificate. A workload is bound by STABLE IDs (repository_id,
# repository_owner_id; a Kubernetes service account's namespace + name under a
# cluster-specific issuer; a service account using OAuth2 client credentials
# by its client_id and sub), never by names that can be deleted and registered
# again by someone else. Bindings live in data.json under
# jitssh_config.workloads; see README.md.
package jitssh

import rego.v1

# The bindings this workload matches: same issuer, every listed claim equal.
matching_bindings := [b |
	input.identity.kind == "workload"
	some b in config.workloads
	b.issuer == input.identity.issuer
	every claim, want in b.claims {
		input.identity.claims[claim] == want
	}
]

# The first matching binding, if any (first wins: order bindings from most to
# least specific).
workload_binding := matching_bindings[0] if count(matching_bindings) > 0

workload_ttl := min([workload_binding.ttl_seconds, requested_workload_ttl]) if {
	requested_workload_ttl
} else := workload_binding.ttl_seconds

requested_workload_ttl := input.request.ttl_seconds if is_number(input.request.ttl_seconds)

workload_principals := [p |
	some p in workload_binding.principals
	wanted(p)
]

wanted(p) if input.request.principals == null

wanted(p) if not input.request.principals

wanted(p) if p in input.request.principals

workload_decision := {
	"allow": true,
	"principals": sort(workload_principals),
	"ttl_seconds": workload_ttl,
	"extensions": [],
	"critical_options": object.get(workload_binding, "critical_options", {}),
	"reasons": [sprintf("workload binding %q", [workload_binding.name])],
} if {
	count(workload_principals) > 0
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
		object.get(input.identity.claims, "sub", null),
		object.get(input.identity.claims, "repository_id", null),
		object.get(input.identity.claims, "ref", null),
		object.get(input.identity.claims, "client_id", null),
	])
}
