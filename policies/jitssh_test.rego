# Tests for jitssh.rego, run by `jitssh-ca policy test`, by every load and
# reload (a failing test keeps the old policy serving) and by `cargo test`.
# Each rule named test_* passes iff it evaluates to true.
package jitssh

# ---------------------------------------------------------------------------
# Inputs shaped like ca-core's PolicyInput.

base_identity := {
	"kind": "human",
	"issuer": "https://idp.example.com",
	"subject": "00u1a2b3c4",
	"email": null,
	"email_verified": false,
	"groups": [],
	"claims": {},
}

base_request := {
	"kind": "user_cert",
	"principals": null,
	"ttl_seconds": null,
	"public_key": {"type": "ssh-ed25519", "fingerprint": "SHA256:0123456789abcdefghijklmnopqrstuvwxyzABCDE"},
	"reason": null,
	"source_ip": "192.0.2.10",
}

# An input from `identity` and `request` overrides merged onto the bases.
make_input(identity, request) := {
	"identity": object.union(base_identity, identity),
	"request": object.union(base_request, request),
	"time": {"unix": 1767225600, "unix_ns": 1767225600000000000},
}

# A human whose token carries preferred_username `name` and `groups`.
user(name, groups) := make_input({"claims": {"preferred_username": name}, "groups": groups}, {})

# The same, asking for `principals` (null: everything) and `ttl` (null: default).
user_asking(name, groups, principals, ttl) := make_input(
	{"claims": {"preferred_username": name}, "groups": groups},
	{"principals": principals, "ttl_seconds": ttl},
)

# A human known only by a verified email.
email_user(email) := make_input({"email": email, "email_verified": true}, {})

allowed(d) if {
	d.allow == true
	count(d.principals) > 0
}

denied_because(d, fragment) if {
	d.allow == false
	d.principals == []
	some reason in d.reasons
	contains(reason, fragment)
}

# ---------------------------------------------------------------------------
# The user's own principal.

test_alice_gets_username if {
	d := decision with input as user("alice", [])
	allowed(d)
	d.principals == ["alice"]
	d.extensions == ["permit-pty", "permit-port-forwarding", "permit-agent-forwarding"]
	d.critical_options == {}
	some reason in d.reasons
	contains(reason, "preferred_username")
}

test_username_is_lowercased if {
	d := decision with input as user("Alice.Smith", [])
	d.principals == ["alice.smith"]
}

test_username_from_verified_email if {
	d := decision with input as email_user("bob@example.com")
	allowed(d)
	d.principals == ["bob"]
	some reason in d.reasons
	contains(reason, "verified email")
}

test_preferred_username_wins_over_email if {
	i := make_input({"email": "bob@example.com", "email_verified": true, "claims": {"preferred_username": "robert"}}, {})
	d := decision with input as i
	d.principals == ["robert"]
}

test_unverified_email_is_ignored if {
	# The server never sets an unverified email; if one slips through, it
	# must not name a user.
	i := make_input({"email": "bob@example.com", "email_verified": false}, {})
	d := decision with input as i
	denied_because(d, "no verified email")
}

test_malformed_email_denied if {
	d := decision with input as email_user("not-an-email")
	denied_because(d, "not of the form local@domain")
}

test_no_username_at_all_denied if {
	d := decision with input as make_input({}, {})
	denied_because(d, "no preferred_username claim and no verified email")
}

test_no_username_denied_even_with_groups if {
	d := decision with input as make_input({"groups": ["sre"]}, {})
	denied_because(d, "cannot derive a username")
}

test_empty_preferred_username_denied if {
	d := decision with input as user("", [])
	denied_because(d, "non-empty string")
}

test_non_string_preferred_username_denied if {
	d := decision with input as user(42, [])
	denied_because(d, "non-empty string")
}

test_invalid_preferred_username_does_not_fall_back_to_email if {
	i := make_input({"email": "bob@example.com", "email_verified": true, "claims": {"preferred_username": "bob smith"}}, {})
	d := decision with input as i
	denied_because(d, "not a valid login name")
}

# ---------------------------------------------------------------------------
# Names that cannot be sanitised are refused, never rewritten.

test_unsanitisable_names_denied if {
	every name in [
		"bob smith", "bob,root", "-bob", "1bob", "bob@example.com", "bob*",
		"bob\n", "bob/..", "émile", "a234567890123456789012345678901234",
	] {
		d := decision with input as user(name, [])
		denied_because(d, "not a valid login name")
	}
}

test_longest_valid_name_allowed if {
	name := "a2345678901234567890123456789012"
	count(name) == 32
	d := decision with input as user(name, [])
	d.principals == [name]
}

test_underscore_start_allowed if {
	d := decision with input as user("_svc.backup-1", [])
	d.principals == ["_svc.backup-1"]
}

test_email_local_part_is_checked if {
	d := decision with input as email_user("bob+ssh@example.com")
	denied_because(d, "not a valid login name")
}

# ---------------------------------------------------------------------------
# Reserved and shared names are never derived from a claim.

test_reserved_name_denied if {
	every name in ["root", "ROOT", "Admin", "administrator", "toor", "daemon", "bin", "sys", "sync", "sshd", "nobody", "operator"] {
		d := decision with input as user(name, ["sre"])
		denied_because(d, "is reserved")
	}
}

test_reserved_name_from_email_denied if {
	d := decision with input as email_user("root@example.com")
	denied_because(d, "is reserved")
}

test_reserved_list_comes_from_data if {
	d := decision with input as user("alice", []) with data.jitssh_config.reserved_usernames as ["alice"]
	denied_because(d, "is reserved")
}

test_missing_reserved_list_fails_closed if {
	cfg := object.remove(data.jitssh_config, ["reserved_usernames"])
	d := decision with input as user("alice", []) with data.jitssh_config as cfg
	denied_because(d, "reserved_usernames is missing")
}

test_shared_account_name_denied if {
	# "deploy" is granted through the sre group; a token naming itself
	# "deploy" must not get it.
	d := decision with input as user("deploy", [])
	denied_because(d, "shared account")
}

# ---------------------------------------------------------------------------
# Groups.

test_group_principals if {
	d := decision with input as user("alice", ["sre"])
	d.principals == ["alice", "deploy", "web"]
	some reason in d.reasons
	contains(reason, "group sre grants deploy, web")
}

test_several_groups if {
	d := decision with input as user("alice", ["dba", "sre", "developers"])
	d.principals == ["alice", "db", "deploy", "dev", "web"]
}

test_unknown_group_grants_nothing if {
	d := decision with input as user("alice", ["accounting", "SRE"])
	d.principals == ["alice"]
}

test_null_groups if {
	d := decision with input as make_input({"claims": {"preferred_username": "alice"}, "groups": null}, {})
	d.principals == ["alice"]
}

test_group_mapping_comes_from_data if {
	d := decision with input as user("alice", ["ops"]) with data.jitssh_config.group_principals as {"ops": ["ops-shell"]}
	d.principals == ["alice", "ops-shell"]
}

# ---------------------------------------------------------------------------
# Requested principals.

test_requested_subset if {
	d := decision with input as user_asking("alice", ["sre"], ["web"], null)
	allowed(d)
	d.principals == ["web"]
}

test_requested_subset_reports_refused_part if {
	d := decision with input as user_asking("alice", ["sre"], ["web", "db"], null)
	d.principals == ["web"]
	some reason in d.reasons
	contains(reason, "not granted")
	contains(reason, "db")
}

test_requested_own_name_only if {
	d := decision with input as user_asking("alice", ["sre"], ["alice"], null)
	d.principals == ["alice"]
}

test_requested_disallowed_denied if {
	d := decision with input as user_asking("alice", ["sre"], ["root", "db"], null)
	denied_because(d, "none of the requested principals (db, root) is allowed for alice")
}

test_requested_empty_list_denied if {
	d := decision with input as user_asking("alice", [], [], null)
	d.allow == false
}

test_null_principals_means_everything if {
	d := decision with input as user_asking("alice", ["dba"], null, null)
	d.principals == ["alice", "db"]
}

# ---------------------------------------------------------------------------
# Lifetime.

test_ttl_default if {
	d := decision with input as user("alice", [])
	d.ttl_seconds == 900
	some reason in d.reasons
	contains(reason, "the default")
}

test_ttl_requested if {
	d := decision with input as user_asking("alice", [], null, 300)
	d.ttl_seconds == 300
}

test_ttl_requested_maximum if {
	d := decision with input as user_asking("alice", [], null, 3600)
	d.ttl_seconds == 3600
}

test_ttl_clamped if {
	d := decision with input as user_asking("alice", [], null, 86400)
	d.ttl_seconds == 3600
	some reason in d.reasons
	contains(reason, "capped")
}

test_ttl_requested_longer_than_default if {
	d := decision with input as user_asking("alice", [], null, 1800)
	d.ttl_seconds == 1800
}

test_ttl_invalid_request_denied if {
	every ttl in [0, -5, 1.5, "600"] {
		d := decision with input as user_asking("alice", [], null, ttl)
		denied_because(d, "whole number of seconds")
	}
}

test_ttl_default_never_above_max if {
	cfg := object.union(data.jitssh_config, {"default_ttl_seconds": 7200, "max_ttl_seconds": 600})
	d := decision with input as user("alice", []) with data.jitssh_config as cfg
	d.ttl_seconds == 600
}

test_ttl_missing_configuration_denied if {
	cfg := object.remove(data.jitssh_config, ["max_ttl_seconds"])
	d := decision with input as user("alice", []) with data.jitssh_config as cfg
	denied_because(d, "max_ttl_seconds")
}

# ---------------------------------------------------------------------------
# Identity kinds.

test_workload_without_binding_denied if {
	i := make_input({"kind": "workload", "claims": {"preferred_username": "ci"}}, {})
	d := decision with input as i
	denied_because(d, "no workload binding")
	count(d.reasons) == 1
}

test_unknown_kind_denied if {
	d := decision with input as make_input({"kind": "robot"}, {})
	denied_because(d, "unknown identity kind")
}

test_missing_identity_denied if {
	d := decision with input as {}
	denied_because(d, "the input has no identity.kind")
}

# ---------------------------------------------------------------------------
# Shape: the decision is always a complete document the server accepts.

test_decision_always_defined if {
	every i in [{}, {"identity": null}, make_input({}, {}), user("alice", [])] {
		d := decision with input as i
		is_boolean(d.allow)
		is_array(d.principals)
		is_array(d.reasons)
		count(d.reasons) > 0
	}
}

# Inputs covering every branch, for the consistency test below.
sample_inputs := [
	{},
	{"identity": null},
	make_input({}, {}),
	make_input({"kind": "workload"}, {}),
	workload(main_claims),
	workload(object.union(main_claims, {"ref": "refs/pull/7/merge"})),
	workload(object.union(main_claims, {"repository_id": "999"})),
	make_input({"kind": "robot"}, {}),
	user("alice", []),
	user("alice", ["sre", "dba", "nope"]),
	user("Alice", null),
	user("root", ["sre"]),
	user("deploy", []),
	user("bob smith", []),
	user("", []),
	user(7, []),
	email_user("bob@example.com"),
	email_user("root@example.com"),
	email_user("no-at-sign"),
	make_input({"email": "bob@example.com", "email_verified": false}, {}),
	user_asking("alice", ["sre"], ["web"], null),
	user_asking("alice", ["sre"], ["root"], null),
	user_asking("alice", [], ["alice", "web"], 60),
	user_asking("alice", [], null, 0),
	user_asking("alice", [], null, 1.5),
	user_asking("alice", [], null, "600"),
	user_asking("alice", [], null, 99999),
]

test_allow_iff_no_deny_reasons if {
	every i in sample_inputs {
		d := decision with input as i
		reasons := deny_reasons with input as i
		d.allow == (count(reasons) == 0)
		count(d.reasons) > 0
	}
}

test_broken_ttl_configuration_is_consistent if {
	every cfg in [
		object.remove(data.jitssh_config, ["default_ttl_seconds"]),
		object.remove(data.jitssh_config, ["max_ttl_seconds"]),
		object.union(data.jitssh_config, {"max_ttl_seconds": 0}),
	] {
		every i in [user("alice", []), user_asking("alice", [], null, 60)] {
			d := decision with input as i with data.jitssh_config as cfg
			denied_because(d, "must be positive whole numbers")
		}
	}
}

test_allow_has_only_known_fields if {
	d := decision with input as user("alice", ["sre"])
	object.keys(d) == {"allow", "principals", "ttl_seconds", "extensions", "critical_options", "reasons"}
}

# ---------------------------------------------------------------------------
# The shipped data itself: a bad data.json is refused at load like bad code.

test_data_group_principals_are_valid_principals if {
	every _, principals in data.jitssh_config.group_principals {
		count(principals) > 0
		every p in principals {
			regex.match(`^[A-Za-z0-9_][A-Za-z0-9._@-]{0,63}$`, p)
		}
	}
}

test_data_reserved_usernames_are_lowercase if {
	every name in data.jitssh_config.reserved_usernames {
		name == lower(name)
	}
	"root" in data.jitssh_config.reserved_usernames
}

test_data_ttls_are_sane if {
	data.jitssh_config.default_ttl_seconds <= data.jitssh_config.max_ttl_seconds
	data.jitssh_config.max_ttl_seconds <= 3600
}

test_data_extensions_are_allowlisted if {
	every e in data.jitssh_config.extensions {
		e in {"permit-pty", "permit-port-forwarding", "permit-agent-forwarding", "permit-X11-forwarding"}
	}
}
