//! Just-in-time elevation: role names, the role table the policy publishes,
//! the request and decision documents, and the rules the server enforces on
//! elevations whatever the policy says (no self-approval, a grant never
//! outlives its role's maximum, role principals only under an active grant).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::decision::{Decision, Refusal};
use crate::identity::Party;
use crate::policy::{ActiveGrant, Grant};
use crate::principal::Principal;
use crate::ttl::Ttl;
use crate::wire::ElevationCreate;

pub use crate::elevation_state::{ElevationState, UnknownState};

/// A role's name: 1–64 characters, lowercase ASCII letters, digits, `-`,
/// `_` and `.`, starting with a letter or digit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct RoleName(String);

impl RoleName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(s: &str) -> Result<Self, ElevationError> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
            });
        if ok {
            Ok(RoleName(s.to_owned()))
        } else {
            Err(ElevationError::InvalidRole(crate::escape_control(s)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RoleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One role: the principals it grants and the longest grant it allows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Role {
    pub name: RoleName,
    pub principals: Vec<Principal>,
    pub max_ttl: Ttl,
    pub description: String,
}

/// Every role the serving policy defines (`data.jitssh.roles`), checked once
/// when the policy loads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleTable {
    roles: BTreeMap<RoleName, Role>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    principals: Vec<String>,
    max_ttl_seconds: u64,
    #[serde(default)]
    description: String,
}

impl RoleTable {
    /// The most roles a policy may define (a sanity bound, not a design limit).
    pub const MAX_ROLES: usize = 1_000;

    /// Parse the value of `data.jitssh.roles`: an object from role name to
    /// `{principals, max_ttl_seconds, description?}`. `None` (the rule is
    /// undefined) is an empty table: elevation is off.
    pub fn parse(value: Option<&serde_json::Value>) -> Result<Self, String> {
        let Some(value) = value else {
            return Ok(RoleTable::default());
        };
        // serde reads a struct from an array too, field by field: a role
        // must be spelled as the object the schema documents.
        if let Some((name, _)) = value
            .as_object()
            .and_then(|roles| roles.iter().find(|(_, role)| !role.is_object()))
        {
            return Err(format!(
                "data.jitssh.roles is malformed: role {:?} is not an object",
                crate::escape_control(name)
            ));
        }
        let raw: BTreeMap<String, RawRole> = serde_json::from_value(value.clone())
            .map_err(|e| format!("data.jitssh.roles is malformed: {e}"))?;
        if raw.len() > Self::MAX_ROLES {
            return Err(format!(
                "data.jitssh.roles defines {} roles; at most {}",
                raw.len(),
                Self::MAX_ROLES
            ));
        }
        let mut roles = BTreeMap::new();
        for (name, r) in raw {
            let name = RoleName::parse(&name).map_err(|e| e.to_string())?;
            if r.principals.is_empty() {
                return Err(format!("role {name} grants no principals"));
            }
            if r.principals.len() > crate::CertRequest::MAX_PRINCIPALS {
                return Err(format!("role {name} grants too many principals"));
            }
            let mut principals = Vec::new();
            for p in &r.principals {
                let p = Principal::parse(p).map_err(|e| format!("role {name}: {e}"))?;
                if !principals.contains(&p) {
                    principals.push(p);
                }
            }
            let max_ttl = Ttl::from_secs(r.max_ttl_seconds)
                .map_err(|e| format!("role {name}: max_ttl_seconds: {e}"))?;
            if crate::has_hidden_chars(&r.description) || r.description.len() > 500 {
                return Err(format!(
                    "role {name}: description must be printable, at most 500 bytes"
                ));
            }
            roles.insert(
                name.clone(),
                Role {
                    name,
                    principals,
                    max_ttl,
                    description: r.description,
                },
            );
        }
        Ok(RoleTable { roles })
    }

    pub fn get(&self, name: &RoleName) -> Option<&Role> {
        self.roles.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Role> {
        self.roles.values()
    }

    /// The roles that grant `p`. A principal any role grants is privileged:
    /// certificates carry it only under an active grant.
    pub fn roles_granting(&self, p: &Principal) -> Vec<&RoleName> {
        self.roles
            .values()
            .filter(|r| r.principals.contains(p))
            .map(|r| &r.name)
            .collect()
    }
}

/// Why an elevation request or decision is refused before the policy runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElevationError {
    #[error(
        "invalid role {0:?}: 1-64 characters, lowercase letters, digits, '-', '_' and '.'; `jitssh elevate --help` lists how to find roles"
    )]
    InvalidRole(String),
    #[error("reason is required: say why you need the role (e.g. the ticket), 1-500 characters")]
    MissingReason,
    #[error(
        "reason must be at most 500 bytes of printable text, without control or invisible formatting characters (bidi overrides, zero-width)"
    )]
    BadReason,
    #[error(
        "comment must be at most 500 bytes of printable text, without control or invisible formatting characters (bidi overrides, zero-width)"
    )]
    BadComment,
    #[error("invalid ttl_seconds: {0}")]
    BadTtl(String),
}

impl ElevationError {
    pub fn code(&self) -> &'static str {
        match self {
            ElevationError::InvalidRole(_) => "invalid_role",
            ElevationError::MissingReason | ElevationError::BadReason => "invalid_reason",
            ElevationError::BadComment => "invalid_comment",
            ElevationError::BadTtl(_) => "invalid_ttl",
        }
    }
}

/// A parsed `POST /v1/elevations` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElevationRequest {
    pub role: RoleName,
    pub ttl: Option<Ttl>,
    pub reason: String,
}

pub const MAX_TEXT: usize = 500;

impl ElevationRequest {
    pub fn parse(body: &ElevationCreate) -> Result<Self, ElevationError> {
        let role = RoleName::parse(&body.role)?;
        let reason = body.reason.trim();
        if reason.is_empty() {
            return Err(ElevationError::MissingReason);
        }
        if reason.len() > MAX_TEXT || crate::has_hidden_chars(reason) {
            return Err(ElevationError::BadReason);
        }
        let ttl = body
            .ttl_seconds
            .map(Ttl::from_secs)
            .transpose()
            .map_err(|e| ElevationError::BadTtl(e.to_string()))?;
        Ok(ElevationRequest {
            role,
            ttl,
            reason: reason.to_owned(),
        })
    }
}

/// An approver's or denier's comment: optional, printable, bounded.
pub fn parse_comment(comment: Option<&str>) -> Result<Option<String>, ElevationError> {
    match comment.map(str::trim) {
        None | Some("") => Ok(None),
        Some(c) if c.len() > MAX_TEXT || crate::has_hidden_chars(c) => {
            Err(ElevationError::BadComment)
        }
        Some(c) => Ok(Some(c.to_owned())),
    }
}

/// What the policy decided about a new elevation request, after enforcement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Granted now; the grant runs for `ttl` from now.
    Approve {
        ttl: Ttl,
        reasons: Vec<String>,
    },
    /// Needs `approvals` distinct approvers; the grant runs for `ttl` from
    /// the final approval.
    Pending {
        ttl: Ttl,
        approvals: u32,
        reasons: Vec<String>,
    },
    Deny {
        reasons: Vec<String>,
    },
}

/// The most approvals a policy may require (more is a policy bug, and a
/// request nobody could ever satisfy).
pub const MAX_APPROVALS: u32 = 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawElevationDecision {
    outcome: String,
    #[serde(default)]
    reasons: Vec<String>,
    #[serde(default)]
    approvals_required: Option<u32>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

/// Turn `data.jitssh.elevation_decision` into an [`Outcome`], or refuse.
/// The grant's length is the smallest of the policy's, the request's, the
/// role's maximum and the server's `ceiling`.
pub fn enforce_elevation(
    decision: Option<&serde_json::Value>,
    role: &Role,
    req: &ElevationRequest,
    ceiling: Ttl,
) -> Result<Outcome, Refusal> {
    let raw: RawElevationDecision = Decision::ELEVATION.read(decision)?;
    let reasons = Decision::reasons(&raw.reasons);
    let mut ttl = role.max_ttl.min(ceiling);
    if let Some(asked) = req.ttl {
        ttl = ttl.min(asked);
    }
    if let Some(policy) = raw.ttl_seconds {
        ttl = Decision::ELEVATION.ttl(policy, ttl)?;
    }
    match raw.outcome.as_str() {
        "deny" => Ok(Outcome::Deny {
            reasons: Decision::ELEVATION.denial_reasons(reasons),
        }),
        "approve" => Ok(Outcome::Approve { ttl, reasons }),
        "pending" => match raw.approvals_required {
            Some(n) if (1..=MAX_APPROVALS).contains(&n) => Ok(Outcome::Pending {
                ttl,
                approvals: n,
                reasons,
            }),
            Some(n) => Err(Refusal::PolicyError(format!(
                "approvals_required must be 1-{MAX_APPROVALS}, got {n}"
            ))),
            None => Err(Refusal::PolicyError(
                "a pending elevation decision needs approvals_required".into(),
            )),
        },
        other => Err(Refusal::PolicyError(format!(
            "elevation decision outcome must be approve, pending or deny, got {:?}",
            crate::escape_control(other)
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApprovalDecision {
    allow: bool,
    #[serde(default)]
    reasons: Vec<String>,
}

/// Turn `data.jitssh.approval_decision` into "may decide" (with reasons) or
/// a refusal. Undefined or malformed means no.
pub fn enforce_approval(decision: Option<&serde_json::Value>) -> Result<Vec<String>, Refusal> {
    let raw: RawApprovalDecision = Decision::APPROVAL.read(decision)?;
    Decision::APPROVAL.allow(raw.allow, &raw.reasons)
}

/// What an approval is bound to: the hash of everything that defines the
/// request. An approval counts only for the exact request it was given for.
pub fn request_hash(
    id: &str,
    requester: &Party,
    role: &RoleName,
    principals: &[Principal],
    ttl: Ttl,
    reason: &str,
    created_at: u64,
) -> String {
    #[derive(Serialize)]
    struct Bound<'a> {
        v: u8,
        id: &'a str,
        requester: &'a Party,
        role: &'a RoleName,
        principals: &'a [Principal],
        ttl_seconds: u64,
        reason: &'a str,
        created_at: u64,
    }
    let doc = Bound {
        v: 1,
        id,
        requester,
        role,
        principals,
        ttl_seconds: ttl.as_secs(),
        reason,
        created_at,
    };
    // Struct fields serialise in declaration order: a canonical encoding.
    let json = serde_json::to_vec(&doc).unwrap_or_default();
    hex::encode(Sha256::digest(&json))
}

/// Enforce elevation on a certificate [`Grant`]: every principal a role
/// grants must be covered by one of `active` (the requester's grants, active
/// at `now`), and the certificate must end no later than the covering grant.
/// A principal no role grants is untouched.
pub fn restrict_to_grants(
    mut grant: Grant,
    roles: &RoleTable,
    active: &[ActiveGrant],
    now: u64,
) -> Result<Grant, Refusal> {
    let mut end: Option<u64> = None;
    for p in grant.principals() {
        let granting = roles.roles_granting(p);
        if granting.is_empty() {
            continue;
        }
        let covered = active
            .iter()
            .filter(|g| g.ends_at > now && g.principals.contains(p))
            .map(|g| g.ends_at)
            .max();
        match covered {
            Some(e) => end = Some(end.map_or(e, |x| x.min(e))),
            None => {
                let names: Vec<&str> = granting.iter().map(|r| r.as_str()).collect();
                return Err(Refusal::Denied {
                    reasons: vec![format!(
                        "principal {p} is granted only through an active elevation of role {}; run `jitssh elevate {} --reason ...` first",
                        names.join(" or "),
                        names[0]
                    )],
                });
            }
        }
    }
    if let Some(end) = end {
        // `end > now` by the filter above, so this is at least one second.
        let left = Ttl::from_secs(end - now).map_err(|e| Refusal::PolicyError(e.to_string()))?;
        grant.cap_ttl(left);
    }
    Ok(grant)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Limits, enforce};
    use crate::{CertRequest, SubjectKey};
    use serde_json::json;

    fn table() -> RoleTable {
        RoleTable::parse(Some(&json!({
            "db-admin": {"principals": ["postgres"], "max_ttl_seconds": 3600, "description": "DB"},
            "prod-root": {"principals": ["root", "postgres"], "max_ttl_seconds": 900},
        })))
        .unwrap()
    }

    fn req(role: &str, ttl: Option<u64>) -> ElevationRequest {
        ElevationRequest::parse(&ElevationCreate {
            role: role.into(),
            ttl_seconds: ttl,
            reason: "INC-1 restore".into(),
        })
        .unwrap()
    }

    #[test]
    fn role_names_are_strict() {
        for ok in ["db-admin", "a", "prod.root_2", &"x".repeat(64)] {
            assert!(RoleName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "DB", "a b", "a,b", "é", &"x".repeat(65), "a\n"] {
            assert!(RoleName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn role_table_refuses_bad_roles() {
        assert!(RoleTable::parse(None).unwrap().is_empty());
        let t = table();
        assert_eq!(t.iter().count(), 2);
        let pg = Principal::parse("postgres").unwrap();
        assert_eq!(t.roles_granting(&pg).len(), 2);
        assert!(
            t.roles_granting(&Principal::parse("alice").unwrap())
                .is_empty()
        );
        for bad in [
            json!({"x": {"principals": [], "max_ttl_seconds": 60}}),
            json!({"x": {"principals": ["a,b"], "max_ttl_seconds": 60}}),
            json!({"x": {"principals": ["a"], "max_ttl_seconds": 0}}),
            json!({"x": {"principals": ["a"]}}),
            json!({"x": {"principals": ["a"], "max_ttl_seconds": 60, "extra": 1}}),
            json!({"BAD": {"principals": ["a"], "max_ttl_seconds": 60}}),
            json!(["x"]),
            // A role spelled as an array (serde would read it by position).
            json!({"x": [["a"], 60]}),
            json!({"x": [["a"], 60, "d"]}),
        ] {
            assert!(RoleTable::parse(Some(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn requests_need_a_printable_reason() {
        let parse = |reason: &str| {
            ElevationRequest::parse(&ElevationCreate {
                role: "db-admin".into(),
                ttl_seconds: None,
                reason: reason.into(),
            })
        };
        assert_eq!(parse("  ").unwrap_err(), ElevationError::MissingReason);
        assert_eq!(parse("a\nb").unwrap_err(), ElevationError::BadReason);
        assert_eq!(
            parse(&"x".repeat(501)).unwrap_err(),
            ElevationError::BadReason
        );
        assert_eq!(parse(" INC-1 ").unwrap().reason, "INC-1");
        assert!(parse_comment(Some("ok")).unwrap().is_some());
        assert!(parse_comment(Some("")).unwrap().is_none());
        assert!(parse_comment(Some("\u{1b}[31m")).is_err());
        // Bidi and invisible characters: what the approver reads must be
        // what was written.
        for hidden in [
            "fix \u{202e}gnitset\u{202c} db",
            "INC\u{2066}-1\u{2069}",
            "INC-1\u{200b}",
            "\u{feff}INC-1",
            "INC\u{ad}1",
            "INC-1\u{e0041}",
            "a\u{2029}b",
        ] {
            assert_eq!(
                parse(hidden).unwrap_err(),
                ElevationError::BadReason,
                "{hidden:?}"
            );
            assert!(parse_comment(Some(hidden)).is_err(), "{hidden:?}");
        }
        assert_eq!(parse("Störung 中 ✅").unwrap().reason, "Störung 中 ✅");
    }

    #[test]
    fn elevation_ttl_is_the_smallest_bound() {
        let t = table();
        let role = t.get(&RoleName::parse("db-admin").unwrap()).unwrap();
        let ceiling = Ttl::from_secs(28_800).unwrap();
        let d = json!({"outcome": "approve", "reasons": ["on call"]});
        // Role maximum.
        assert_eq!(
            enforce_elevation(Some(&d), role, &req("db-admin", None), ceiling).unwrap(),
            Outcome::Approve {
                ttl: Ttl::from_secs(3600).unwrap(),
                reasons: vec!["on call".into()]
            }
        );
        // The request, the policy and the ceiling each lower it.
        let d2 = json!({"outcome": "approve", "ttl_seconds": 600});
        let got = |d: &serde_json::Value, r, c| match enforce_elevation(Some(d), role, &r, c) {
            Ok(Outcome::Approve { ttl, .. }) => ttl.as_secs(),
            other => panic!("{other:?}"),
        };
        assert_eq!(got(&d, req("db-admin", Some(9999)), ceiling), 3600);
        assert_eq!(got(&d, req("db-admin", Some(120)), ceiling), 120);
        assert_eq!(got(&d2, req("db-admin", None), ceiling), 600);
        assert_eq!(
            got(&d, req("db-admin", None), Ttl::from_secs(60).unwrap()),
            60
        );
        // A policy asking for more than the role allows is clamped, not obeyed.
        let d3 = json!({"outcome": "approve", "ttl_seconds": 999_999_999u64});
        assert_eq!(got(&d3, req("db-admin", None), ceiling), 3600);
    }

    #[test]
    fn malformed_elevation_decisions_are_policy_errors() {
        let t = table();
        let role = t.get(&RoleName::parse("db-admin").unwrap()).unwrap();
        let c = Ttl::from_secs(3600).unwrap();
        let r = req("db-admin", None);
        for bad in [
            json!({"outcome": "pending"}),
            json!({"outcome": "pending", "approvals_required": 0}),
            json!({"outcome": "pending", "approvals_required": 11}),
            json!({"outcome": "maybe"}),
            json!({"outcome": "approve", "ttl_seconds": 0}),
            json!({"outcome": "approve", "extra": true}),
            json!({"allow": true}),
            json!(["approve"]),
        ] {
            assert!(
                matches!(
                    enforce_elevation(Some(&bad), role, &r, c),
                    Err(Refusal::PolicyError(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            enforce_elevation(None, role, &r, c),
            Err(Refusal::PolicyError(_))
        ));
        assert!(matches!(
            enforce_elevation(Some(&json!({"outcome": "deny"})), role, &r, c),
            Ok(Outcome::Deny { reasons }) if !reasons.is_empty()
        ));
        assert!(matches!(
            enforce_elevation(
                Some(&json!({"outcome": "pending", "approvals_required": 2})),
                role,
                &r,
                c
            ),
            Ok(Outcome::Pending { approvals: 2, .. })
        ));
    }

    #[test]
    fn approval_decisions_fail_closed() {
        assert!(enforce_approval(Some(&json!({"allow": true}))).is_ok());
        assert!(matches!(
            enforce_approval(Some(&json!({"allow": false}))),
            Err(Refusal::Denied { .. })
        ));
        assert!(matches!(
            enforce_approval(None),
            Err(Refusal::PolicyError(_))
        ));
        assert!(matches!(
            enforce_approval(Some(&json!({"allow": "yes"}))),
            Err(Refusal::PolicyError(_))
        ));
        assert!(matches!(
            enforce_approval(Some(&json!([true]))),
            Err(Refusal::PolicyError(_))
        ));
    }

    #[test]
    fn request_hash_binds_every_field() {
        let p = Party {
            issuer: "i".into(),
            subject: "s".into(),
            email: None,
        };
        let role = RoleName::parse("db-admin").unwrap();
        let pr = vec![Principal::parse("postgres").unwrap()];
        let t = Ttl::from_secs(60).unwrap();
        let h = request_hash("id", &p, &role, &pr, t, "why", 1);
        assert_eq!(h, request_hash("id", &p, &role, &pr, t, "why", 1));
        assert_ne!(h, request_hash("id2", &p, &role, &pr, t, "why", 1));
        assert_ne!(
            h,
            request_hash("id", &p, &role, &pr, Ttl::from_secs(61).unwrap(), "why", 1)
        );
        assert_ne!(h, request_hash("id", &p, &role, &pr, t, "why not", 1));
        assert_ne!(h, request_hash("id", &p, &role, &[], t, "why", 1));
    }

    fn cert_grant(principals: &[&str], ttl: u64) -> Grant {
        let key = SubjectKey::parse(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
        )
        .unwrap();
        let req = CertRequest {
            public_key: key,
            principals: None,
            ttl: None,
            reason: None,
        };
        let d = json!({"allow": true, "principals": principals, "ttl_seconds": ttl});
        enforce(
            Some(&d),
            &req,
            &Limits::new(Ttl::from_secs(86_400).unwrap()),
        )
        .unwrap()
    }

    #[test]
    fn role_principals_need_an_active_grant_and_end_with_it() {
        let t = table();
        let pg = Principal::parse("postgres").unwrap();
        // No role principal: untouched.
        let g = restrict_to_grants(cert_grant(&["alice"], 900), &t, &[], 100).unwrap();
        assert_eq!(g.ttl().as_secs(), 900);
        // A role principal without a grant: denied.
        let err =
            restrict_to_grants(cert_grant(&["alice", "postgres"], 900), &t, &[], 100).unwrap_err();
        assert!(err.to_string().contains("jitssh elevate"), "{err}");
        // An expired grant does not count.
        let expired = ActiveGrant {
            id: "e".into(),
            role: "db-admin".into(),
            principals: vec![pg.clone()],
            ends_at: 100,
        };
        assert!(
            restrict_to_grants(
                cert_grant(&["postgres"], 900),
                &t,
                std::slice::from_ref(&expired),
                100
            )
            .is_err()
        );
        // An active grant: allowed, capped at its end.
        let active = ActiveGrant {
            ends_at: 400,
            ..expired
        };
        let g = restrict_to_grants(
            cert_grant(&["alice", "postgres"], 900),
            &t,
            std::slice::from_ref(&active),
            100,
        )
        .unwrap();
        assert_eq!(g.ttl().as_secs(), 300);
        // A grant for another principal does not cover root.
        assert!(restrict_to_grants(cert_grant(&["root"], 900), &t, &[active], 100).is_err());
    }
}
