# Tests for elevation.rego and for how jitssh.rego uses active grants.
package jitssh

elevation_input(groups, role, reason, kind) := {
	"identity": object.union(base_identity, {"kind": kind, "groups": groups, "claims": {"preferred_username": "alice"}}),
	"request": {"kind": "elevation_request", "role": role, "ttl_seconds": null, "reason": reason, "source_ip": "192.0.2.10"},
	"role": {"name": role},
	"time": {"unix": 1767225600, "unix_ns": 1767225600000000000},
}

approval_input(groups, role, kind) := {
	"identity": object.union(base_identity, {"kind": kind, "subject": "bob", "groups": groups}),
	"request": {
		"kind": "elevation_approval", "action": "approve", "id": "el_x", "role": role,
		"principals": ["postgres"], "ttl_seconds": 600, "reason": "why", "created_at": 1767225000,
		"requester": {"issuer": "https://idp.example.com", "subject": "alice", "email": null, "groups": ["dba"]},
		"approvals": [], "approvals_required": 1, "source_ip": "192.0.2.10",
	},
	"role": {"name": role},
	"time": {"unix": 1767225600, "unix_ns": 1767225600000000000},
}

# --- The role table the server reads.

test_roles_publish_principals_and_maximum if {
	roles["db-admin"] == {
		"principals": ["postgres"],
		"max_ttl_seconds": 3600,
		"description": "PostgreSQL superuser (the postgres account) on database hosts",
	}
	roles["prod-root"].principals == ["root"]
	roles["prod-root"].max_ttl_seconds == 1800
}

test_roles_carry_only_what_the_server_reads if {
	every _, r in roles {
		object.keys(r) == {"principals", "max_ttl_seconds", "description"}
	}
}

test_every_role_has_an_approval_path if {
	every name, r in data.jitssh_config.roles {
		r.approval.approvals_required >= 1
		count(r.approval.approver_groups) > 0
	}
}

# --- Requests.

test_on_call_with_a_ticket_is_auto_approved if {
	d := elevation_decision with input as elevation_input(["dba", "oncall"], "db-admin", "INC-4711 restore", "human")
	d.outcome == "approve"
	contains(d.reasons[0], "oncall")
}

test_on_call_without_a_ticket_needs_approval if {
	d := elevation_decision with input as elevation_input(["dba", "oncall"], "db-admin", "restore please", "human")
	d.outcome == "pending"
	d.approvals_required == 1
}

test_a_ticket_without_being_on_call_needs_approval if {
	d := elevation_decision with input as elevation_input(["dba"], "db-admin", "INC-4711 restore", "human")
	d.outcome == "pending"
}

test_ticket_must_start_the_reason if {
	d := elevation_decision with input as elevation_input(["dba", "oncall"], "db-admin", "see INC-4711", "human")
	d.outcome == "pending"
}

test_prod_root_needs_two_approvals if {
	d := elevation_decision with input as elevation_input(["sre", "oncall"], "prod-root", "INC-1 outage", "human")
	d.outcome == "pending"
	d.approvals_required == 2
	contains(d.reasons[0], "sre-leads")
}

test_unknown_role_is_denied if {
	d := elevation_decision with input as elevation_input(["sre"], "nope", "INC-1", "human")
	d.outcome == "deny"
	contains(d.reasons[0], "no role nope")
}

test_requester_groups_restrict_who_may_ask if {
	d := elevation_decision with input as elevation_input(["developers", "oncall"], "db-admin", "INC-1", "human")
	d.outcome == "deny"
	contains(d.reasons[0], "only by members of dba, sre")
}

test_workloads_cannot_elevate if {
	d := elevation_decision with input as elevation_input(["sre", "oncall"], "db-admin", "INC-1", "workload")
	d.outcome == "deny"
	some r in d.reasons
	contains(r, "only people")
}

test_missing_groups_are_denied_not_errors if {
	d := elevation_decision with input as elevation_input(null, "db-admin", "INC-1", "human")
	d.outcome == "deny"
}

# --- Approvers.

test_approver_group_member_may_approve if {
	d := approval_decision with input as approval_input(["dba-leads"], "db-admin", "human")
	d.allow == true
	contains(d.reasons[0], "dba-leads")
}

test_member_of_two_approver_groups_is_no_conflict if {
	d := approval_decision with input as approval_input(["dba-leads", "sre-leads"], "db-admin", "human")
	d.allow == true
}

test_others_may_not_approve if {
	d := approval_decision with input as approval_input(["dba"], "db-admin", "human")
	d.allow == false
	contains(d.reasons[0], "only members of dba-leads, sre-leads")
}

test_approver_groups_are_per_role if {
	d := approval_decision with input as approval_input(["dba-leads"], "prod-root", "human")
	d.allow == false
}

test_workloads_may_not_approve if {
	d := approval_decision with input as approval_input(["dba-leads"], "db-admin", "workload")
	d.allow == false
}

test_unknown_role_has_no_approvers if {
	d := approval_decision with input as approval_input(["dba-leads"], "nope", "human")
	d.allow == false
}

# --- Certificates under a grant (jitssh.rego).

with_grants(inp, grants) := object.union(inp, {"grants": grants})

db_grant := {"id": "el_1", "role": "db-admin", "principals": ["postgres"], "ends_at": 1767226200}

test_an_active_grant_adds_its_principals if {
	d := decision with input as with_grants(user("alice", ["dba"]), [db_grant])
	d.allow
	"postgres" in d.principals
	"alice" in d.principals
	some r in d.reasons
	contains(r, "elevation el_1 (role db-admin) grants postgres")
}

test_grant_principals_can_be_asked_for_alone if {
	d := decision with input as with_grants(user_asking("alice", [], ["postgres"], null), [db_grant])
	d.principals == ["postgres"]
}

test_without_a_grant_role_principals_are_not_granted if {
	d := decision with input as user_asking("alice", ["dba"], ["postgres"], null)
	d.allow == false
}

test_role_principals_are_never_derived_from_a_username if {
	# "root" is reserved anyway; a role principal that is not reserved is
	# refused as a shared account.
	d := decision with input as user("dbadmin", [])
		with data.jitssh_config.roles as {"x": {"principals": ["dbadmin"], "max_ttl_seconds": 60}}
	denied_because(d, "shared account")
}

test_role_principal_beside_granted_ones_is_an_allow_without_deny_reasons if {
	inp := user_asking("alice", ["developers"], ["alice", "postgres"], null)
	d := decision with input as inp
	d.allow
	d.principals == ["alice"]
	count(deny_reasons) == 0 with input as inp
}

# --- The console's role guide.

guide_input(groups, kind) := {
	"identity": object.union(base_identity, {"kind": kind, "groups": groups}),
	"request": {"kind": "role_guide", "source_ip": "192.0.2.10"},
	"time": {"unix": 1767225600, "unix_ns": 1767225600000000000},
}

test_role_guide_names_approvers_and_the_auto_approve_rule if {
	g := role_guide with input as guide_input(["dba", "oncall"], "human")
	g["db-admin"] == {
		"may_request": true,
		"requester_groups": ["dba", "sre"],
		"approver_groups": ["dba-leads", "sre-leads"],
		"approvals_required": 1,
		"auto_approve": "auto-approved for members of oncall when the reason starts with an incident or change ticket (INC-… or CHG-…)",
	}
	g["prod-root"].may_request == false
	g["prod-root"].approvals_required == 2
	g["prod-root"].auto_approve == null
}

test_role_guide_may_request_agrees_with_the_decision if {
	every groups in [[], ["dba"], ["sre"], ["dba", "oncall"], ["oncall"], ["developers"]] {
		guide := role_guide with input as guide_input(groups, "human")
		every name, entry in guide {
			d := elevation_decision with input as elevation_input(groups, name, "INC-1 why", "human")
			entry.may_request == (d.outcome != "deny")
		}
	}
}

test_role_guide_opens_nothing_to_workloads if {
	guide := role_guide with input as guide_input(["sre"], "workload")
	count(guide) == 2
	every _, entry in guide {
		entry.may_request == false
	}
}

test_role_guide_quotes_the_pattern_without_a_hint if {
	roles_without_hint := {"r": {
		"principals": ["p"], "max_ttl_seconds": 60,
		"approval": {"auto_approve": {"groups": ["oncall"], "reason_pattern": "^INC-"}},
	}}
	g := role_guide with input as guide_input(["oncall"], "human") with data.jitssh_config.roles as roles_without_hint
	g.r.auto_approve == "auto-approved for members of oncall when the reason matches ^INC-"
	g.r.may_request == true
	g.r.approver_groups == []
	g.r.approvals_required == 0
	h := role_guide with input as guide_input(["dba"], "human") with data.jitssh_config.roles as roles_without_hint
	h.r.may_request == false
}
