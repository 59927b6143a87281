# Tests for console.rego, run by `jitssh-ca policy test`, by every load and
# reload, and by `cargo test`. Each rule named test_* passes iff it is true.
package jitssh

console_input(groups, kind) := {
	"identity": {
		"kind": kind,
		"issuer": "https://idp.example.com",
		"subject": "00u-console",
		"groups": groups,
	},
	"request": {"kind": "console", "source_ip": "192.0.2.30"},
	"time": {"unix": 1767225600, "unix_ns": 1767225600000000000},
}

test_console_everyone_sees_only_their_own_access if {
	d := ui_decision with input as console_input(["developers"], "human")
	d.capabilities == ["my_access"]
}

test_console_approvers_see_the_queue if {
	d := ui_decision with input as console_input(["dba-leads"], "human")
	d.capabilities == ["decide", "my_access"]
}

test_console_auditors_read_but_do_not_act if {
	d := ui_decision with input as console_input(["security-audit"], "human")
	d.capabilities == ["audit", "grants", "my_access", "revocations"]
}

test_console_operators_act if {
	d := ui_decision with input as console_input(["ca-operators"], "human")
	"revoke" in d.capabilities
	"end_grants" in d.capabilities
	"policy" in d.capabilities
}

test_console_workloads_get_nothing if {
	not ui_decision with input as console_input(["ca-operators"], "workload")
}

test_console_groups_not_a_list_get_the_minimum if {
	d := ui_decision with input as console_input("ca-operators", "human")
	d.capabilities == ["my_access"]
}
