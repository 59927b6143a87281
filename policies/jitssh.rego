# jitssh default policy: which principals a verified human gets, and for how
# long. The input and decision documents are described in README.md beside
# this file; the server re-checks every decision (ca-core `enforce`), so this
# policy narrows what may be issued, it never widens the server's limits.
package jitssh

# Operator configuration, from data.json. It lives under data.jitssh_config,
# not data.jitssh, so a data key can never collide with a rule of this package.
default config := {}

config := data.jitssh_config

# The login-name rule, applied after lowercasing (see README.md).
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

# Workloads first (workload.rego); they never reach the human rules.
decision := workload_decision if {
	workload_binding
} else := {
	"allow": true,
	"principals": sort(granted),
	"ttl_seconds": ttl_seconds,
	"extensions": extensions,
	"critical_options": {},
	"reasons": allow_reasons,
} if {
	user_principal
	count(granted) > 0
	ttl_seconds
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
# The user's own login name: the preferred_username claim, else the local part
# of the verified email (the server sets input.identity.email only when the
# IdP said email_verified). Lowercased, never otherwise rewritten.

has_preferred_username if input.identity.claims.preferred_username != null

raw_username := name if {
	has_preferred_username
	name := input.identity.claims.preferred_username
	is_string(name)
	name != ""
}

raw_username := email_local_part if not has_preferred_username

username_source := "preferred_username claim" if has_preferred_username

username_source := "verified email" if not has_preferred_username

verified_email_present if {
	input.identity.email_verified == true
	is_string(input.identity.email)
}

email_local_part := parts[0] if {
	verified_email_present
	parts := split(input.identity.email, "@")
	count(parts) == 2
	parts[0] != ""
}

username := lower(raw_username)

username_valid if regex.match(username_pattern, username)

# The list is lowercase (jitssh_test.rego checks the data), so a plain
# membership test is enough.
is_reserved if username in config.reserved_usernames

# Principals that groups or roles grant are shared accounts: no token may
# name itself into one through its username.
is_shared_account if {
	some principals in config.group_principals
	username in principals
}

is_shared_account if {
	some role in config.roles
	username in role.principals
}

# The personal principal, defined only when every username check passes.
user_principal := username if {
	is_human
	username_valid
	is_array(config.reserved_usernames)
	not is_reserved
	not is_shared_account
}

deny_reasons contains "the preferred_username claim must be a non-empty string" if {
	is_human
	has_preferred_username
	not raw_username
}

deny_reasons contains msg if {
	is_human
	not has_preferred_username
	verified_email_present
	not email_local_part
	msg := sprintf("cannot derive a username: the verified email \"%v\" is not of the form local@domain", [input.identity.email])
}

deny_reasons contains "cannot derive a username: the token has no preferred_username claim and no verified email" if {
	is_human
	not has_preferred_username
	not verified_email_present
}

deny_reasons contains msg if {
	is_human
	raw_username
	not username_valid
	msg := sprintf(
		"username \"%v\" (from the %v) is not a valid login name: after lowercasing it must match %v",
		[raw_username, username_source, username_pattern],
	)
}

deny_reasons contains msg if {
	is_human
	username_valid
	is_reserved
	msg := sprintf("username \"%v\" (from the %v) is reserved and is never derived from a token", [username, username_source])
}

deny_reasons contains msg if {
	is_human
	username_valid
	is_shared_account
	not is_reserved
	msg := sprintf("username \"%v\" (from the %v) is a shared account, granted only through groups", [username, username_source])
}

# Fail closed: without the list, no username can be checked against it.
deny_reasons contains "data.jitssh_config.reserved_usernames is missing: refusing to derive usernames" if {
	is_human
	not is_array(config.reserved_usernames)
}

# ---------------------------------------------------------------------------
# Principals: the user's own, plus what their groups map to (data.json).

allowed_principals contains user_principal

allowed_principals contains p if {
	user_principal
	some p in group_principals
}

# Active elevation grants (elevation.rego): the server lists the caller's
# grants in input.grants and signs their principals only until they end.
allowed_principals contains p if {
	user_principal
	some grant in input.grants
	some p in grant.principals
}

group_principals contains p if {
	is_array(input.identity.groups)
	some group in input.identity.groups
	some p in config.group_principals[group]
}

principals_requested if is_array(input.request.principals)

requested := {p | some p in input.request.principals} if principals_requested

granted := allowed_principals & requested if principals_requested

granted := allowed_principals if not principals_requested

deny_reasons contains msg if {
	user_principal
	principals_requested
	count(granted) == 0
	msg := sprintf(
		"none of the requested principals (%v) is allowed for %v; allowed: %v",
		[concat(", ", sort(requested)), username, concat(", ", sort(allowed_principals))],
	)
}

# A role's principal asked for without an active grant: say how to get one.
deny_reasons contains msg if {
	principals_requested
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

max_ttl := config.max_ttl_seconds if positive_integer(config.max_ttl_seconds)

default_ttl := config.default_ttl_seconds if positive_integer(config.default_ttl_seconds)

ttl_seconds := min([requested_ttl, max_ttl]) if {
	default_ttl
	positive_integer(requested_ttl)
}

ttl_seconds := min([default_ttl, max_ttl]) if not requested_ttl

deny_reasons contains msg if {
	is_human
	requested_ttl
	not positive_integer(requested_ttl)
	msg := sprintf("the requested ttl_seconds (%v) must be a whole number of seconds, at least 1", [requested_ttl])
}

deny_reasons contains "data.jitssh_config.default_ttl_seconds and max_ttl_seconds must be positive whole numbers" if {
	is_human
	not default_ttl
}

deny_reasons contains "data.jitssh_config.default_ttl_seconds and max_ttl_seconds must be positive whole numbers" if {
	is_human
	not max_ttl
}

# ---------------------------------------------------------------------------
# Extensions, and the reasons an allow carries.

default extensions := []

extensions := config.extensions if is_array(config.extensions)

allow_reasons := array.concat(
	array.concat(
		[sprintf("%v: the user's own login, from the %v", [username, username_source])],
		array.concat(group_reasons, grant_reasons),
	),
	array.concat(not_granted_reasons, [ttl_reason]),
)

group_reasons := [msg |
	is_array(input.identity.groups)
	some group in sort({g | some g in input.identity.groups})
	principals := config.group_principals[group]
	count(principals) > 0
	msg := sprintf("group %v grants %v", [group, concat(", ", sort(principals))])
]

grant_reasons := [msg |
	some grant in input.grants
	msg := sprintf("elevation %v (role %v) grants %v until %v", [grant.id, grant.role, concat(", ", grant.principals), grant.ends_at])
]

not_granted_reasons := [msg |
	principals_requested
	not_granted := requested - allowed_principals
	count(not_granted) > 0
	msg := sprintf("not granted (not allowed for %v): %v", [username, concat(", ", sort(not_granted))])
]

ttl_reason := sprintf("ttl %vs: as requested", [ttl_seconds]) if {
	requested_ttl
	ttl_seconds == requested_ttl
}

ttl_reason := sprintf("ttl %vs: requested %vs, capped at the maximum", [ttl_seconds, requested_ttl]) if {
	requested_ttl
	ttl_seconds != requested_ttl
}

ttl_reason := sprintf("ttl %vs: the default", [ttl_seconds]) if not requested_ttl
