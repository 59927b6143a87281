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
	i := make_input({"kind": "human", "issuer": gh, "login": "alice", "claims": object.union(main_claims, {"preferred_username": "alice"}), "groups": []}, {})
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

# A service account at the IdP, using OAuth2 client credentials: its RFC 9068
# access token names it by client_id and sub (the CA accepts such tokens only
# from workload issuers with accept_access_tokens).
sa_binding := [b | some b in data.jitssh_config.workloads; b.name == "deployer service account"][0]

sa_claims := {
	"iss": sa_binding.issuer,
	"sub": "jitssh-automation",
	"client_id": "jitssh-automation",
	"aud": "urn:jitssh:ca",
	"scope": "issue",
}

service_account(claims) := make_input({"kind": "workload", "issuer": sa_binding.issuer, "subject": claims.sub, "claims": claims, "groups": []}, {})

test_service_account_by_client_id_gets_deploy_for_five_minutes if {
	d := decision with input as service_account(sa_claims)
	d.allow
	d.principals == ["deploy"]
	d.ttl_seconds == 300
	d.extensions == []
}

test_other_client_denied if {
	d := decision with input as service_account(object.union(sa_claims, {"client_id": "other-client", "sub": "other-client"}))
	not d.allow
	denied_because(d, "no workload binding")
}

# A user's access token obtained through the same client names the user in
# sub: the binding pins sub too, so it does not match.
test_same_client_on_behalf_of_a_user_denied if {
	d := decision with input as service_account(object.union(sa_claims, {"sub": "user-alice"}))
	not d.allow
}

test_token_without_client_id_denied if {
	d := decision with input as service_account(object.remove(sa_claims, ["client_id"]))
	not d.allow
}

test_same_client_id_at_other_issuer_denied if {
	i := make_input({"kind": "workload", "issuer": "https://evil.example.com", "subject": "jitssh-automation", "claims": object.union(sa_claims, {"iss": "https://evil.example.com"}), "groups": []}, {})
	d := decision with input as i
	not d.allow
}

test_human_with_service_account_claims_is_not_a_workload if {
	i := make_input({"kind": "human", "issuer": sa_binding.issuer, "subject": "jitssh-automation", "claims": sa_claims, "groups": []}, {})
	d := decision with input as i
	not "deploy" in d.principals
}

test_service_account_asking_for_root_denied if {
	i := object.union(service_account(sa_claims), {"request": {"principals": ["root"]}})
	d := decision with input as i
	not d.allow
}
