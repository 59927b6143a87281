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
	"login": null,
	"login_problem": null,
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

# A human whose login name (derived and bound by the server) is `name`.
user(name, groups) := make_input({"login": name, "groups": groups}, {})

# The same, asking for `principals` (null: everything) and `ttl` (null: default).
user_asking(name, groups, principals, ttl) := make_input(
	{"login": name, "groups": groups},
	{"principals": principals, "ttl_seconds": ttl},
)

# A human the server gave no login name, and why (as the server words it).
no_login(problem) := make_input({"login_problem": problem}, {})

no_rule := `issuer "https://idp2.example.com": this issuer has no rule for login names: add login_claim (e.g. login_claim = "email" with email_domains = ["example.com"]) to its [[issuers]] entry in the CA config`

foreign_domain := `issuer "https://idp.example.com": the verified email's domain "anything.example" is not among this issuer's email_domains (example.com)`

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
	contains(reason, "alice: the user's own login name")
}

# Claims never name a user here: only the server's input.identity.login,
# derived by the issuer's rule. A preferred_username or a verified email
# (from any domain) without it gets nothing.
test_claims_and_email_never_name_a_user if {
	every identity in [
		{"claims": {"preferred_username": "alice"}},
		{"email": "alice@anything.example", "email_verified": true},
		{"email": "alice@example.com", "email_verified": true, "claims": {"preferred_username": "alice"}, "groups": ["sre"]},
	] {
		d := decision with input as make_input(identity, {})
		denied_because(d, "no personal login name")
	}
}

test_the_server_says_which_setting_is_missing if {
	d := decision with input as no_login(no_rule)
	denied_because(d, "add login_claim")
	d2 := decision with input as no_login(foreign_domain)
	denied_because(d2, "not among this issuer's email_domains")
}

test_no_login_name_denied_even_with_groups if {
	d := decision with input as make_input({"groups": ["sre"], "login_problem": no_rule}, {})
	denied_because(d, "no personal login name")
}

test_non_string_login_denied if {
	every login in [42, true, ["alice"], {"name": "alice"}] {
		d := decision with input as user(login, [])
		denied_because(d, "no personal login name")
	}
}

# ---------------------------------------------------------------------------
# Names that cannot be sanitised are refused, never rewritten.

# The server refuses these already (ca-core login::tests); the policy checks
# again, so a server bug cannot sign them.
test_unsanitisable_names_denied if {
	every name in [
		"", "bob smith", "bob,root", "-bob", "1bob", "bob@example.com", "bob*",
		"bob\n", "bob/..", "émile", "Alice", "a234567890123456789012345678901234",
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

# ---------------------------------------------------------------------------
# Reserved and shared names are never derived from a claim.

test_reserved_name_denied if {
	every name in ["root", "admin", "administrator", "toor", "daemon", "bin", "sys", "sync", "sshd", "nobody", "operator"] {
		d := decision with input as user(name, ["sre"])
		denied_because(d, "is reserved")
	}
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
	d := decision with input as make_input({"login": "alice", "groups": null}, {})
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
	no_login(no_rule),
	no_login(foreign_domain),
	make_input({"email": "bob@example.com", "email_verified": true, "claims": {"preferred_username": "bob"}}, {}),
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
