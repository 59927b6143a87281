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
# The decision. Always defined: exactly one of the two rules below applies,
# and the default only shows up if this file is edited into a corner.

default decision := {
	"allow": false,
	"principals": [],
	"extensions": [],
	"critical_options": {},
	"reasons": ["denied: the policy reached no decision (default deny)"],
}

decision := {
	"allow": false,
	"principals": [],
	"extensions": [],
	"critical_options": {},
	"reasons": sort(deny_reasons),
} if {
	count(deny_reasons) > 0
}

decision := {
	"allow": true,
	"principals": sort(granted),
	"ttl_seconds": ttl_seconds,
	"extensions": extensions,
	"critical_options": {},
	"reasons": allow_reasons,
} if {
	count(deny_reasons) == 0
	count(granted) > 0
}

# ---------------------------------------------------------------------------
# Who is asking.

default identity_kind := "missing"

identity_kind := input.identity.kind

is_human if identity_kind == "human"

deny_reasons contains "workload identities need a workload rule" if {
	identity_kind == "workload"
}

deny_reasons contains msg if {
	not identity_kind in {"human", "workload"}
	msg := sprintf("unknown identity kind \"%v\"", [identity_kind])
}

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

email_local_part := parts[0] if {
	input.identity.email_verified == true
	is_string(input.identity.email)
	parts := split(input.identity.email, "@")
	count(parts) == 2
	parts[0] != ""
}

username := lower(raw_username)

username_valid if regex.match(username_pattern, username)

reserved_usernames := {lower(name) | some name in config.reserved_usernames}

# Principals that groups grant are shared accounts: no token may name itself
# into one through its username.
shared_accounts := {p | some principals in config.group_principals; some p in principals}

# The personal principal, defined only when every username check passed.
user_principal := username if {
	is_human
	username_valid
	not username in reserved_usernames
	not username in shared_accounts
	is_array(config.reserved_usernames)
}

deny_reasons contains "the preferred_username claim must be a non-empty string" if {
	is_human
	has_preferred_username
	not raw_username
}

deny_reasons contains msg if {
	is_human
	not has_preferred_username
	not email_local_part
	is_string(input.identity.email)
	input.identity.email_verified == true
	msg := sprintf("cannot derive a username: the verified email \"%v\" is not of the form local@domain", [input.identity.email])
}

deny_reasons contains "cannot derive a username: the token has no preferred_username claim and no verified email" if {
	is_human
	not has_preferred_username
	not email_local_part
	not verified_email_present
}

verified_email_present if {
	is_string(input.identity.email)
	input.identity.email_verified == true
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
	username in reserved_usernames
	msg := sprintf("username \"%v\" (from the %v) is reserved and is never derived from a token", [username, username_source])
}

deny_reasons contains msg if {
	is_human
	username_valid
	username in shared_accounts
	not username in reserved_usernames
	msg := sprintf("username \"%v\" (from the %v) is a shared account granted only through groups", [username, username_source])
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

group_principals contains p if {
	is_array(input.identity.groups)
	some group in input.identity.groups
	some p in config.group_principals[group]
}

# Groups that contributed principals, for the reasons.
mapped_groups contains group if {
	user_principal
	is_array(input.identity.groups)
	some group in input.identity.groups
	count(config.group_principals[group]) > 0
}

principals_requested if is_array(input.request.principals)

requested := {p | some p in input.request.principals} if principals_requested

granted := allowed_principals & requested if principals_requested

granted := allowed_principals if not principals_requested

not_granted := requested - allowed_principals if principals_requested

deny_reasons contains msg if {
	user_principal
	principals_requested
	count(granted) == 0
	msg := sprintf(
		"none of the requested principals (%v) is allowed for %v; allowed: %v",
		[concat(", ", sort(requested)), username, concat(", ", sort(allowed_principals))],
	)
}

# ---------------------------------------------------------------------------
# Lifetime: as requested, else the default; never above the maximum.

requested_ttl := input.request.ttl_seconds if input.request.ttl_seconds != null

positive_integer(n) if {
	is_number(n)
	n >= 1
	round(n) == n
}

ttl_configured if {
	positive_integer(config.default_ttl_seconds)
	positive_integer(config.max_ttl_seconds)
}

ttl_seconds := min([requested_ttl, config.max_ttl_seconds]) if {
	ttl_configured
	positive_integer(requested_ttl)
}

ttl_seconds := min([config.default_ttl_seconds, config.max_ttl_seconds]) if {
	ttl_configured
	not requested_ttl
}

deny_reasons contains msg if {
	is_human
	requested_ttl
	not positive_integer(requested_ttl)
	msg := sprintf("the requested ttl_seconds (%v) must be a whole number of seconds, at least 1", [requested_ttl])
}

deny_reasons contains "data.jitssh_config.default_ttl_seconds and max_ttl_seconds must be positive whole numbers" if {
	is_human
	not ttl_configured
}

# ---------------------------------------------------------------------------
# Extensions, and the reasons an allow carries.

default extensions := []

extensions := config.extensions if is_array(config.extensions)

allow_reasons := array.concat(
	array.concat(
		[sprintf("%v: the user's own login, from the %v", [username, username_source])],
		group_reasons,
	),
	array.concat(not_granted_reasons, [ttl_reason]),
)

group_reasons := [msg |
	some group in sort(mapped_groups)
	msg := sprintf("group %v grants %v", [group, concat(", ", sort(config.group_principals[group]))])
]

not_granted_reasons := [msg |
	principals_requested
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
