//! The documents the policy decides elevations on: `input` for its
//! `elevation_decision` (a new request) and `approval_decision` (may this
//! person approve or deny it). Their shape is part of the policy interface.

use ca_core::elevation::{ElevationRequest, Role};
use ca_core::wire::ElevationVote;
use serde_json::json;

use super::caller::Caller;
use super::store::Row;

/// The input for a new request of `role`.
pub(super) fn request(
    caller: &Caller<'_>,
    req: &ElevationRequest,
    role: &Role,
    now: u64,
) -> serde_json::Value {
    json!({
        "identity": caller.identity,
        "request": {
            "kind": "elevation_request",
            "role": req.role,
            "ttl_seconds": req.ttl.map(|t| t.as_secs()),
            "reason": req.reason,
            "source_ip": caller.source_ip,
        },
        "role": role_input(role),
        "time": time_input(now),
    })
}

/// The input for `who` deciding (`action`: approve or deny) `row`; `role`
/// is `None` when the serving policy no longer defines the row's role.
pub(super) fn approval(
    who: &Caller<'_>,
    row: &Row,
    votes: &[(ElevationVote, String)],
    action: &str,
    role: Option<&Role>,
    now: u64,
) -> serde_json::Value {
    json!({
        "identity": who.identity,
        "request": {
            "kind": "elevation_approval",
            "action": action,
            "id": row.id,
            "role": row.role,
            "principals": row.principals,
            "ttl_seconds": row.ttl_seconds,
            "reason": row.reason,
            "created_at": row.created_at,
            "requester": {
                "issuer": row.requester.issuer,
                "subject": row.requester.subject,
                "email": row.requester.email,
                "groups": row.requester_groups,
            },
            "approvals": votes.iter().map(|(v, _)| json!({
                "issuer": v.issuer, "subject": v.subject, "email": v.email, "time": v.time,
            })).collect::<Vec<_>>(),
            "approvals_required": row.approvals_required,
            "source_ip": who.source_ip,
        },
        "role": role.map(role_input),
        "time": time_input(now),
    })
}

fn role_input(role: &Role) -> serde_json::Value {
    json!({
        "name": role.name,
        "principals": role.principals,
        "max_ttl_seconds": role.max_ttl.as_secs(),
        "description": role.description,
    })
}

fn time_input(now: u64) -> serde_json::Value {
    json!({
        "unix": now,
        "unix_ns": i64::try_from(now).unwrap_or(i64::MAX).saturating_mul(1_000_000_000),
    })
}
