# Tests for host.rego, run by `jitssh-ca policy test`, by every load and
# reload, and by `cargo test`. Each rule named test_* passes iff it is true.
package jitssh

# An input shaped like ca-core's HostPolicyInput.
host_input(via, hostnames, authorized) := {
	"request": {
		"kind": "host_cert",
		"via": via,
		"hostnames": hostnames,
		"authorized_hostnames": authorized,
		"public_key": {"type": "ssh-ed25519", "fingerprint": "SHA256:0123456789abcdefghijklmnopqrstuvwxyzABCDE"},
		"source_ip": "192.0.2.20",
		"current_certificate": null,
	},
	"time": {"unix": 1767225600, "unix_ns": 1767225600000000000},
}

host_denied_because(d, fragment) if {
	d.allow == false
	d.hostnames == []
	some reason in d.reasons
	contains(reason, fragment)
}

test_host_join_token_allows_its_names if {
	d := host_decision with input as host_input("join_token", ["web01.example.com", "web01"], ["web01", "web01.example.com"])
	d.allow == true
	d.hostnames == ["web01", "web01.example.com"]
	"the join token allows web01, web01.example.com" in d.reasons
}

test_host_may_ask_for_a_subset_of_the_token if {
	d := host_decision with input as host_input("join_token", ["web01"], ["web01", "web01.example.com"])
	d.allow == true
	d.hostnames == ["web01"]
}

test_host_name_not_in_the_token_is_denied if {
	d := host_decision with input as host_input("join_token", ["web01", "db01"], ["web01"])
	host_denied_because(d, "not allowed by the join token: db01")
}

test_host_renewal_keeps_the_certificate_names if {
	d := host_decision with input as host_input("renewal", ["web01.example.com"], ["web01.example.com"])
	d.allow == true
	d.hostnames == ["web01.example.com"]
	"the current certificate allows web01.example.com" in d.reasons
}

test_host_renewal_cannot_add_a_name if {
	d := host_decision with input as host_input("renewal", ["web01.example.com", "other.example.com"], ["web01.example.com"])
	host_denied_because(d, "not allowed by the current certificate: other.example.com")
}

test_host_ttl_defaults_to_seven_days if {
	cfg := object.remove(data.jitssh_config, ["host_ttl_seconds"])
	d := host_decision with input as host_input("join_token", ["web01"], ["web01"]) with data.jitssh_config as cfg
	d.ttl_seconds == 604800
	"ttl 604800s: the default (7 days)" in d.reasons
}

test_host_ttl_comes_from_data if {
	d := host_decision with input as host_input("join_token", ["web01"], ["web01"]) with data.jitssh_config.host_ttl_seconds as 86400
	d.ttl_seconds == 86400
}

test_host_bad_ttl_in_data_denies if {
	every bad in [0, -5, 1.5, "7d"] {
		d := host_decision with input as host_input("join_token", ["web01"], ["web01"]) with data.jitssh_config.host_ttl_seconds as bad
		host_denied_because(d, "host_ttl_seconds")
	}
}

test_host_unknown_proof_is_denied if {
	d := host_decision with input as host_input("id_token", ["web01"], ["web01"])
	host_denied_because(d, "unknown proof")
}

test_host_user_certificate_input_is_denied if {
	# The input of data.jitssh.decision, handed to the host rule by mistake.
	i := {"identity": {"kind": "human"}, "request": {"kind": "user_cert", "principals": null}}
	d := host_decision with input as i
	host_denied_because(d, "not host_cert")
}

test_host_empty_request_is_denied if {
	d := host_decision with input as host_input("join_token", [], ["web01"])
	host_denied_because(d, "names no hostnames")
}

test_host_decision_is_always_defined_and_denies_garbage if {
	every i in [{}, {"request": 5}, {"request": {"kind": "host_cert", "hostnames": "web01"}}] {
		d := host_decision with input as i
		d.allow == false
		count(d.reasons) > 0
	}
}

test_host_allow_never_has_a_deny_reason if {
	host_decision.allow with input as host_input("join_token", ["web01"], ["web01"])
	count(host_deny_reasons) == 0 with input as host_input("join_token", ["web01"], ["web01"])
}

test_data_host_ttl_is_sane if {
	host_positive_integer(data.jitssh_config.host_ttl_seconds)
	data.jitssh_config.host_ttl_seconds <= 604800
}
