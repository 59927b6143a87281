# jitssh host policy: which names a host certificate carries, and for how
# long. The server evaluates data.jitssh.host_decision for every enrolment
# (with a one-time join token) and every renewal (with the current host
# certificate and a signature by its key), after it has checked the token or
# the proof and that the requested names are among the authorized ones. It
# re-checks the decision (ca-core `enforce_host`): exact DNS names only, only
# names that were requested, ttl at most certs.host_max_ttl. Input and
# decision are described in README.md beside this file.
#
# A policy set without this rule denies every host certificate.
package jitssh

# Seven days: ca-core's absolute maximum for any certificate.
host_default_ttl_seconds := 604800

# Operator configuration (data.json → jitssh_config), read defensively so a
# malformed data file denies instead of erroring.
host_config := c if {
	c := data.jitssh_config
	is_object(c)
} else := {}

default host_decision := {
	"allow": false,
	"hostnames": [],
	"reasons": ["denied: the host policy reached no decision (default deny)"],
}

host_decision := {
	"allow": true,
	"hostnames": sort(host_requested),
	"ttl_seconds": host_ttl_seconds,
	"reasons": host_allow_reasons,
} if {
	count(host_deny_reasons) == 0
	count(host_requested) > 0
	host_ttl_seconds
} else := {
	"allow": false,
	"hostnames": [],
	"reasons": sort(host_deny_reasons),
} if {
	count(host_deny_reasons) > 0
}

# ---------------------------------------------------------------------------
# What is asked, and what the token or the current certificate allows.

host_request := r if {
	r := input.request
	is_object(r)
} else := {}

# A list of strings from the request, or empty when the field is not a list.
host_names(field) := {h | some h in l; is_string(h)} if {
	l := object.get(host_request, field, [])
	is_array(l)
} else := set()

host_requested := host_names("hostnames")

host_authorized := host_names("authorized_hostnames")

host_via := object.get(host_request, "via", null)

host_authority := "the join token" if {
	host_via == "join_token"
} else := "the current certificate" if {
	host_via == "renewal"
} else := "the request"

host_deny_reasons contains msg if {
	kind := object.get(host_request, "kind", null)
	kind != "host_cert"
	msg := sprintf("request kind %v is not host_cert: the host policy decides host certificates only", [kind])
}

host_deny_reasons contains msg if {
	not host_via in {"join_token", "renewal"}
	msg := sprintf("unknown proof %v: a host enrols with a join token or renews with its current certificate", [host_via])
}

host_deny_reasons contains "the request names no hostnames" if count(host_requested) == 0

# Exactly the names the token (or the certificate being renewed) carries:
# never one more. The server checks this too; a policy may narrow further.
host_deny_reasons contains msg if {
	not_authorized := host_requested - host_authorized
	count(not_authorized) > 0
	msg := sprintf("not allowed by %v: %v (it allows: %v)", [
		host_authority,
		concat(", ", sort(not_authorized)),
		concat(", ", sort(host_authorized)),
	])
}

# ---------------------------------------------------------------------------
# Lifetime: data.jitssh_config.host_ttl_seconds, else seven days. The server
# caps it at certs.host_max_ttl.

host_ttl_config := object.get(host_config, "host_ttl_seconds", null)

host_positive_integer(n) if {
	is_number(n)
	n >= 1
	round(n) == n
}

host_ttl_seconds := host_ttl_config if host_positive_integer(host_ttl_config)

host_ttl_seconds := host_default_ttl_seconds if host_ttl_config == null

host_deny_reasons contains msg if {
	host_ttl_config != null
	not host_positive_integer(host_ttl_config)
	msg := sprintf("data.jitssh_config.host_ttl_seconds (%v) must be a positive whole number of seconds", [host_ttl_config])
}

host_ttl_source := "data.jitssh_config.host_ttl_seconds" if host_ttl_config != null else := "the default (7 days)"

host_allow_reasons := [
	sprintf("%v allows %v", [host_authority, concat(", ", sort(host_requested))]),
	sprintf("ttl %vs: %v", [host_ttl_seconds, host_ttl_source]),
]
