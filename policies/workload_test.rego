package jitssh

import rego.v1

# The issuer of the shipped example binding (tests follow data.json).
gh := data.jitssh_config.workloads[0].issuer

main_claims := {
	"iss": gh,
	"sub": "repo:example/deployer:ref:refs/heads/main",
	"repository": "example/deployer",
	"repository_id": "123456789",
	"repository_owner": "example",
	"repository_owner_id": "4242",
	"ref": "refs/heads/main",
	"event_name": "push",
}

workload(claims) := make_input({"kind": "workload", "issuer": gh, "subject": claims.sub, "claims": claims, "groups": []}, {})

test_main_branch_of_bound_repository_gets_deploy_for_five_minutes if {
	d := decision with input as workload(main_claims)
	d.allow
	d.principals == ["deploy"]
	d.ttl_seconds == 300
}

test_pull_request_ref_denied if {
	d := decision with input as workload(object.union(main_claims, {"ref": "refs/pull/7/merge", "event_name": "pull_request"}))
	not d.allow
	denied_because(d, "no workload binding")
}

test_other_branch_denied if {
	d := decision with input as workload(object.union(main_claims, {"ref": "refs/heads/feature"}))
	not d.allow
}

test_other_repository_denied if {
	d := decision with input as workload(object.union(main_claims, {"repository": "example/other", "repository_id": "555"}))
	not d.allow
}

# Same name, re-created (new id): the binding is by id, so it does not match.
test_recreated_repository_with_same_name_denied if {
	d := decision with input as workload(object.union(main_claims, {"repository_id": "987654321"}))
	not d.allow
}

test_other_issuer_with_same_claims_denied if {
	i := make_input({"kind": "workload", "issuer": "https://evil.example.com", "claims": main_claims, "groups": []}, {})
	d := decision with input as i
	not d.allow
}

test_human_with_workload_claims_is_not_a_workload if {
	i := make_input({"kind": "human", "issuer": gh, "claims": object.union(main_claims, {"preferred_username": "alice"}), "groups": []}, {})
	d := decision with input as i
	not "deploy" in d.principals
}

test_workload_asking_for_other_principal_denied if {
	i := object.union(workload(main_claims), {"request": {"principals": ["root"]}})
	d := decision with input as i
	not d.allow
}

test_workload_shorter_ttl_honoured if {
	i := object.union(workload(main_claims), {"request": {"ttl_seconds": 60}})
	d := decision with input as i
	d.ttl_seconds == 60
}
