#!/bin/sh
# A service account at your identity provider (OAuth2 client credentials)
# trades its client secret for a 5-minute certificate, e.g. from cron or a
# systemd timer on a build host. The identity provider must issue JWT access
# tokens (RFC 9068, `typ: at+jwt`) for the resource urn:jitssh:ca.
#
# CA config (config.toml) — a workload issuer that opts in to access tokens:
#
#   [[issuers]]
#   issuer = "https://idp.example.com"
#   audiences = ["jitssh"]
#   kind = "workload"
#   accept_access_tokens = true
#   access_token_audience = "urn:jitssh:ca"
#
# Policy (policies/data.json → jitssh_config.workloads) — bind by issuer,
# client_id and sub, never by a display name:
#
#   {"name": "deployer service account", "issuer": "https://idp.example.com",
#    "claims": {"client_id": "svc-deployer", "sub": "svc-deployer"},
#    "principals": ["deploy"], "ttl_seconds": 300}
#
# The secret file holds the secret alone on one line, mode 0600 (or 0400),
# owned by the account that runs this; jitssh refuses it otherwise. In
# Kubernetes, mount the Secret with `defaultMode: 0400`.
set -eu

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

jitssh cert --ca https://ca.example.com \
    --client-id svc-deployer --client-secret-file /etc/jitssh/client-secret \
    --issuer https://idp.example.com --resource urn:jitssh:ca \
    --principal deploy --ttl 5m --out "$out"
# Exit codes: 2 usage (flags, secret file), 3 refused (wrong secret, policy),
# 4 CA or identity provider unreachable: retry only on 4.

ssh -i "$out/id_ed25519" -o CertificateFile="$out/id_ed25519-cert.pub" \
    -o UserKnownHostsFile="$out/known_hosts" deploy@app1.example.com ./deploy.sh
