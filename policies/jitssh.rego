# jitssh default policy: which principals a verified human gets, and for how
# long. The input and decision documents are described in README.md beside
# this file; the server re-checks every decision (ca-core `enforce`), so this
# policy narrows what may be issued, it never widens the server's limits.
#
# Every request evaluates this file, and regorus (the server's interpreter)
# costs a few microseconds per rule it evaluates, whatever the rule does, and
# a little per reference to a rule (docs/performance.md). So the allow path
# is a handful of rules and functions working on local variables
# (`user_principal`, `shared_account`, `principals_for`,
# `requested_subset`, `ttl_choice`, `extensions`), it reads
# data.jitssh_config directly rather than through `config`, and the
# finer-grained rules that explain a refusal run only on the deny path.
# scripts/perf-policy-ab checks that a rewrite decides exactly as before.
package jitssh

# Operator configuration, from data.json. It lives under data.jitssh_config,
# not data.jitssh, so a data key can never collide with a rule of this package.
default config := {}

config := data.jitssh_config

# The login-name shape the server already enforces (see README.md); checked
# again here so a policy never signs anything else as a personal principal.
username_pattern := `^[a-z_][a-z0-9_.-]{0,31}$`

# ---------------------------------------------------------------------------
# The decision: allow when every check passes, else deny with every reason
# that applies. `deny_reasons` is only computed on the deny path, which keeps
# the common case fast; jitssh_test.rego checks that an allow never has a
# deny reason and a deny always has one.

default decision := {
	"allow": false,
	"principals": [],
	"extensions": [],
	"critical_options": {},
	"reasons": ["denied: the policy reached no decision (default deny)"],
}

# Workloads first (workload.rego); they never reach the human rules. The kind
# test up front spares humans the binding search.
decision := workload_decision if {
	input.identity.kind == "workload"
	workload_binding
} else := {
	"allow": true,
	"principals": sort(to_sign),
	"ttl_seconds": ttl,
	"extensions": extensions,
	"critical_options": {},
	"reasons": reasons,
} if {
	name := user_principal
	may_have := principals_for(name)
	to_sign := requested_subset(may_have)
	count(to_sign) > 0
	[ttl, ttl_reason] := ttl_choice

	# Reasons only once the request is allowed (they are the costly part).
	group_reasons := [msg |
		is_array(input.identity.groups)
		some group in sort({g | some g in input.identity.groups})
		principals := data.jitssh_config.group_principals[group]
		count(principals) > 0
		msg := sprintf("group %v grants %v", [group, concat(", ", sort(principals))])
	]
	grant_reasons := [msg |
		some grant in input.grants
		msg := sprintf("elevation %v (role %v) grants %v until %v", [grant.id, grant.role, concat(", ", grant.principals), grant.ends_at])
	]
	not_granted := {p | is_array(input.request.principals); some p in input.request.principals; not p in may_have}
	not_granted_reasons := [msg |
		count(not_granted) > 0
		msg := sprintf("not granted (not allowed for %v): %v", [name, concat(", ", sort(not_granted))])
	]
	reasons := [r |
		some part in [
			[sprintf("%v: the user's own login name", [name])],
			group_reasons, grant_reasons, not_granted_reasons, [ttl_reason],
		]
		some r in part
	]
} else := {
	"allow": false,
	"principals": [],
	"extensions": [],
	"critical_options": {},
	"reasons": denial,
}

denial := sort(deny_reasons) if {
	count(deny_reasons) > 0
} else := ["denied: no rule allowed the request"]

# ---------------------------------------------------------------------------
# Who is asking. Only humans are handled here.

is_human if input.identity.kind == "human"

deny_reasons contains msg if {
	kind := input.identity.kind
	not kind in {"human", "workload"}
	msg := sprintf("unknown identity kind \"%v\"", [kind])
}

deny_reasons contains "the input has no identity.kind" if not input.identity.kind

# ---------------------------------------------------------------------------
# The user's own login name. The server derives it, per issuer, by the rule
# the operator configured ([[issuers]] login_claim, email_domains: never from
# just any claim or email domain), and binds each name to the first issuer +
# subject that uses it (another identity deriving it is refused before it
# gets here). input.identity.login is null when there is none, and
# input.identity.login_problem then says which setting or claim is missing.

# The personal principal, defined only when every username check passes:
# a login name, not reserved (the list is lowercase, and jitssh_test.rego
# checks the data, so a plain membership test is enough), and not a shared
# account. Without the reserved list no username can be checked against it:
# fail closed.
user_principal := name if {
	input.identity.kind == "human"
	reserved := data.jitssh_config.reserved_usernames
	is_array(reserved)
	name := input.identity.login
	is_string(name)

	# username_pattern, spelt out: cheaper than a reference to the rule.
	regex.match(`^[a-z_][a-z0-9_.-]{0,31}$`, name)
	not name in reserved
	not shared_account(name)
}

# Principals that groups or roles grant are shared accounts: no token may
# name itself into one through its username.
shared_account(name) if {
	some principals in data.jitssh_config.group_principals
	name in principals
}

shared_account(name) if {
	some role in data.jitssh_config.roles
	name in role.principals
}

# The same checks, one rule each, to say which failed (deny path only).

username := input.identity.login if is_string(input.identity.login)

username_valid if regex.match(username_pattern, username)

is_reserved if username in config.reserved_usernames

is_shared_account if shared_account(username)

deny_reasons contains msg if {
	is_human
	not username
	problem := object.get(input.identity, "login_problem", null)
	is_string(problem)
	msg := sprintf("no personal login name: %v", [problem])
}

deny_reasons contains "no personal login name: the server gave no input.identity.login (check this issuer's login_claim in the CA config)" if {
	is_human
	not username
	not is_string(object.get(input.identity, "login_problem", null))
}

deny_reasons contains msg if {
	is_human
	username
	not username_valid
	msg := sprintf("login name \"%v\" is not a valid login name: it must match %v", [username, username_pattern])
}

deny_reasons contains msg if {
	is_human
	username_valid
	is_reserved
	msg := sprintf("login name \"%v\" is reserved and is never derived from a token", [username])
}

deny_reasons contains msg if {
	is_human
	username_valid
	is_shared_account
	not is_reserved
	msg := sprintf("login name \"%v\" is a shared account, granted only through groups", [username])
}

# Fail closed: without the list, no username can be checked against it.
deny_reasons contains "data.jitssh_config.reserved_usernames is missing: refusing to derive usernames" if {
	is_human
	not is_array(config.reserved_usernames)
}

# ---------------------------------------------------------------------------
# Principals: the user's own, plus what their groups map to (data.json), plus
# the principals of their active elevation grants (elevation.rego: the server
# lists the caller's grants in input.grants and signs their principals only
# until they end).

principals_for(name) := ({name} | {p |
	is_array(input.identity.groups)
	some group in input.identity.groups
	some p in data.jitssh_config.group_principals[group]
}) | {p |
	some grant in input.grants
	some p in grant.principals
}

# The requested part of `candidates`; all of them when the request names none.
requested_subset(candidates) := candidates & {p | some p in input.request.principals} if {
	is_array(input.request.principals)
} else := candidates

# Deny path only, from here to the end of the section.

default allowed_principals := set()

allowed_principals := principals_for(user_principal)

principals_requested if is_array(input.request.principals)

requested := {p | some p in input.request.principals} if principals_requested

granted := requested_subset(allowed_principals)

deny_reasons contains msg if {
	user_principal
	principals_requested
	count(granted) == 0
	msg := sprintf(
		"none of the requested principals (%v) is allowed for %v; allowed: %v",
		[concat(", ", sort(requested)), username, concat(", ", sort(allowed_principals))],
	)
}

# A role's principal asked for without an active grant: say how to get one
# (only when nothing was granted, so an allow never carries a deny reason).
deny_reasons contains msg if {
	principals_requested
	count(granted) == 0
	some p in requested
	not p in allowed_principals
	some name, role in config.roles
	p in role.principals
	msg := sprintf("%v is granted only through role %v: run `jitssh elevate %v --reason ...` first", [p, name, name])
}

# ---------------------------------------------------------------------------
# Lifetime: as requested, else the default; never above the maximum.

requested_ttl := input.request.ttl_seconds if input.request.ttl_seconds != null

positive_integer(n) if {
	is_number(n)
	n >= 1
	round(n) == n
}

# [default, maximum] from data.json, when both are positive whole numbers.
ttl_limits := [default_ttl, max_ttl] if {
	default_ttl := data.jitssh_config.default_ttl_seconds
	is_number(default_ttl)
	default_ttl >= 1
	round(default_ttl) == default_ttl
	max_ttl := data.jitssh_config.max_ttl_seconds
	is_number(max_ttl)
	max_ttl >= 1
	round(max_ttl) == max_ttl
}

# [ttl, the reason that explains it], when the lifetime can be decided. No
# requested ttl (the common case) comes first and checks the limits inline,
# as ttl_limits does: cheaper than evaluating one more rule.
ttl_choice := [ttl, sprintf("ttl %vs: the default", [ttl])] if {
	input.request.ttl_seconds == null
	default_ttl := data.jitssh_config.default_ttl_seconds
	is_number(default_ttl)
	default_ttl >= 1
	round(default_ttl) == default_ttl
	max_ttl := data.jitssh_config.max_ttl_seconds
	is_number(max_ttl)
	max_ttl >= 1
	round(max_ttl) == max_ttl
	ttl := min([default_ttl, max_ttl])
} else := [ttl, sprintf("ttl %vs: as requested", [ttl])] if {
	asked := input.request.ttl_seconds
	is_number(asked)
	asked >= 1
	round(asked) == asked
	ttl := min([asked, ttl_limits[1]])
	ttl == asked
} else := [ttl, sprintf("ttl %vs: requested %vs, capped at the maximum", [ttl, asked])] if {
	asked := input.request.ttl_seconds
	is_number(asked)
	asked >= 1
	round(asked) == asked
	ttl := min([asked, ttl_limits[1]])
} else := [ttl, sprintf("ttl %vs: the default", [ttl])] if {
	# No ttl_seconds field at all (or false): the default too.
	not requested_ttl
	ttl := min(ttl_limits)
}

deny_reasons contains msg if {
	is_human
	requested_ttl
	not positive_integer(requested_ttl)
	msg := sprintf("the requested ttl_seconds (%v) must be a whole number of seconds, at least 1", [requested_ttl])
}

deny_reasons contains "data.jitssh_config.default_ttl_seconds and max_ttl_seconds must be positive whole numbers" if {
	is_human
	not ttl_limits
}

# ---------------------------------------------------------------------------
# Extensions.

extensions := e if {
	e := data.jitssh_config.extensions
	is_array(e)
} else := []
