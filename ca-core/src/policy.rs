//! The policy boundary: the input document we hand to Rego, and the
//! invariants we enforce on the decision it returns, whatever it says.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::decision::{Decision, Refusal};
use crate::identity::VerifiedIdentity;
use crate::principal::Principal;
use crate::request::CertRequest;
use crate::ttl::Ttl;

/// `input` for `data.jitssh.decision`. Documented in `policies/README.md`.
#[derive(Debug, Serialize)]
pub struct PolicyInput<'a> {
    pub identity: &'a VerifiedIdentity,
    pub request: RequestInput,
    pub time: TimeInput,
    /// The caller's elevation grants active at `time` (empty when none):
    /// a policy adds their principals; the server checks it did so only
    /// under an active grant ([`crate::elevation::restrict_to_grants`]).
    pub grants: Vec<ActiveGrant>,
}

/// An approved grant, as the issuance path sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ActiveGrant {
    pub id: String,
    pub role: String,
    pub principals: Vec<Principal>,
    /// Unix seconds; the grant is active while `now < ends_at`.
    pub ends_at: u64,
}

#[derive(Debug, Serialize)]
pub struct RequestInput {
    /// What is being asked for: `user_cert` here; other kinds come with
    /// elevation and host certificates.
    pub kind: &'static str,
    /// `null` when the caller asked for "everything I may have".
    pub principals: Option<Vec<String>>,
    pub ttl_seconds: Option<u64>,
    /// The key to certify; `null` only in a preview.
    pub public_key: Option<KeyInput>,
    /// `true` when nothing will be signed: the console asks "what would I
    /// get now?" ([`PolicyInput::user_cert_preview`]).
    pub preview: bool,
    pub reason: Option<String>,
    pub source_ip: String,
}

#[derive(Debug, Serialize)]
pub struct KeyInput {
    #[serde(rename = "type")]
    pub kind: String,
    pub fingerprint: String,
}

#[derive(Debug, Serialize)]
pub struct TimeInput {
    pub unix: u64,
    /// Nanoseconds, the unit of Rego's `time.*` builtins.
    pub unix_ns: i64,
}

impl TimeInput {
    /// `now` in both units.
    pub fn at(now: u64) -> Self {
        TimeInput {
            unix: now,
            unix_ns: i64::try_from(now)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000_000_000),
        }
    }
}

impl<'a> PolicyInput<'a> {
    pub fn user_cert(
        identity: &'a VerifiedIdentity,
        req: &CertRequest,
        source_ip: String,
        now: u64,
    ) -> Self {
        PolicyInput {
            identity,
            request: RequestInput {
                kind: "user_cert",
                principals: req
                    .principals
                    .as_ref()
                    .map(|v| v.iter().map(|p| p.to_string()).collect()),
                ttl_seconds: req.ttl.map(Ttl::as_secs),
                public_key: Some(KeyInput {
                    kind: req.public_key.algorithm(),
                    fingerprint: req.public_key.fingerprint().to_owned(),
                }),
                preview: false,
                reason: req.reason.clone(),
                source_ip,
            },
            time: TimeInput::at(now),
            grants: Vec::new(),
        }
    }

    /// The input of a preview: what a user certificate request for
    /// "everything I may have, for the default lifetime" would be decided,
    /// with no key (`public_key: null`), no reason and `preview: true`.
    /// Nothing is signed on it; a policy that decides on the key sees none
    /// and should deny (or say what it would need), never guess one.
    pub fn user_cert_preview(identity: &'a VerifiedIdentity, source_ip: String, now: u64) -> Self {
        PolicyInput {
            identity,
            request: RequestInput {
                kind: "user_cert",
                principals: None,
                ttl_seconds: None,
                public_key: None,
                preview: true,
                reason: None,
                source_ip,
            },
            time: TimeInput::at(now),
            grants: Vec::new(),
        }
    }

    /// Add the caller's active elevation grants.
    pub fn with_grants(mut self, grants: Vec<ActiveGrant>) -> Self {
        self.grants = grants;
        self
    }
}

/// The decision document as the policy must shape it. Unknown fields are a
/// policy bug (a misspelt `principal` must not be silently ignored).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDecision {
    allow: bool,
    #[serde(default)]
    principals: Vec<String>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    extensions: Vec<String>,
    #[serde(default)]
    critical_options: BTreeMap<String, String>,
    #[serde(default)]
    reasons: Vec<String>,
}

/// Server-side bounds that hold whatever the policy says.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Hard ceiling on any certificate's lifetime.
    pub max_ttl: Ttl,
    pub allowed_extensions: BTreeSet<String>,
    pub allowed_critical_options: BTreeSet<String>,
}

impl Limits {
    /// Every extension OpenSSH defines for user certificates.
    pub const KNOWN_EXTENSIONS: &'static [&'static str] = &[
        "permit-X11-forwarding",
        "permit-agent-forwarding",
        "permit-port-forwarding",
        "permit-pty",
        "permit-user-rc",
        "no-touch-required",
    ];
    /// Every critical option OpenSSH defines.
    pub const KNOWN_CRITICAL_OPTIONS: &'static [&'static str] =
        &["force-command", "source-address", "verify-required"];

    pub fn new(max_ttl: Ttl) -> Self {
        Limits {
            max_ttl,
            allowed_extensions: [
                "permit-agent-forwarding",
                "permit-port-forwarding",
                "permit-pty",
                "permit-X11-forwarding",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            allowed_critical_options: Self::KNOWN_CRITICAL_OPTIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// What may be signed: built only by [`enforce`], so holding one proves every
/// invariant held: non-empty principals, ttl within the ceiling, allowlisted
/// extensions and critical options.
#[derive(Clone, Debug)]
pub struct Grant {
    principals: Vec<Principal>,
    ttl: Ttl,
    extensions: BTreeSet<String>,
    critical_options: BTreeMap<String, String>,
    reasons: Vec<String>,
}

impl Grant {
    pub fn principals(&self) -> &[Principal] {
        &self.principals
    }
    pub fn ttl(&self) -> Ttl {
        self.ttl
    }
    pub fn extensions(&self) -> &BTreeSet<String> {
        &self.extensions
    }
    pub fn critical_options(&self) -> &BTreeMap<String, String> {
        &self.critical_options
    }
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }
    /// Shorten the grant (e.g. so a certificate never outlives an elevation).
    /// Never lengthens it.
    pub fn cap_ttl(&mut self, ttl: Ttl) {
        self.ttl = self.ttl.min(ttl);
    }
}

/// Turn the policy's decision into a [`Grant`], or refuse.
///
/// `decision` is `None` when the rule was undefined. The rules, in order:
/// the decision must be well-formed; `allow` must be true; granted principals
/// must be valid and, if the request named principals, among them; the
/// result must be non-empty (an empty list means "any user" to sshd); the ttl
/// is the smallest of the policy's, the request's and the ceiling; every
/// extension and critical option must be allowlisted and well-formed.
pub fn enforce(
    decision: Option<&serde_json::Value>,
    req: &CertRequest,
    limits: &Limits,
) -> Result<Grant, Refusal> {
    enforce_asked(decision, req.principals.as_deref(), req.ttl, limits)
}

/// [`enforce`] for a preview ([`PolicyInput::user_cert_preview`]): the
/// same rules, for a request that names no principals and no lifetime. The
/// [`Grant`] it returns is for showing, never for signing (there is no key).
pub fn enforce_preview(
    decision: Option<&serde_json::Value>,
    limits: &Limits,
) -> Result<Grant, Refusal> {
    enforce_asked(decision, None, None, limits)
}

/// [`enforce`] given what the request asked for.
fn enforce_asked(
    decision: Option<&serde_json::Value>,
    asked_principals: Option<&[Principal]>,
    asked_ttl: Option<Ttl>,
    limits: &Limits,
) -> Result<Grant, Refusal> {
    let raw: RawDecision = Decision::CERT.read(decision)?;
    let reasons = Decision::CERT.allow(raw.allow, &raw.reasons)?;

    let mut principals: Vec<Principal> = Vec::new();
    for p in &raw.principals {
        let p = Principal::parse(p).map_err(|e| {
            Refusal::PolicyError(format!("policy granted an invalid principal: {e}"))
        })?;
        let wanted = asked_principals.is_none_or(|want| want.contains(&p));
        if wanted && !principals.contains(&p) {
            principals.push(p);
        }
    }
    if principals.is_empty() {
        return Err(match asked_principals {
            Some(want) => Refusal::denied(format!(
                "none of the requested principals ({}) is allowed",
                want.iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            None => Refusal::denied("the policy allowed no principals"),
        });
    }
    if principals.len() > CertRequest::MAX_PRINCIPALS {
        return Err(Refusal::PolicyError(format!(
            "policy granted {} principals; at most {} fit a certificate",
            principals.len(),
            CertRequest::MAX_PRINCIPALS
        )));
    }

    let mut ttl = Decision::CERT.required_ttl(raw.ttl_seconds, limits.max_ttl)?;
    if let Some(asked) = asked_ttl {
        ttl = ttl.min(asked);
    }

    let mut extensions = BTreeSet::new();
    for ext in &raw.extensions {
        if !limits.allowed_extensions.contains(ext) {
            return Err(Refusal::PolicyError(format!(
                "extension {:?} is not in the server's allowlist",
                crate::escape_control(ext)
            )));
        }
        extensions.insert(ext.clone());
    }
    for (name, value) in &raw.critical_options {
        if !limits.allowed_critical_options.contains(name) {
            return Err(Refusal::PolicyError(format!(
                "critical option {:?} is not in the server's allowlist",
                crate::escape_control(name)
            )));
        }
        check_critical_option(name, value).map_err(Refusal::PolicyError)?;
    }

    Ok(Grant {
        principals,
        ttl,
        extensions,
        critical_options: raw.critical_options,
        reasons,
    })
}

fn check_critical_option(name: &str, value: &str) -> Result<(), String> {
    match name {
        "force-command" => {
            if value.is_empty() || value.len() > 4096 || crate::has_control_chars(value) {
                return Err("force-command must be 1-4096 printable characters".into());
            }
        }
        "source-address" => {
            if value.is_empty() {
                return Err("source-address must list at least one address".into());
            }
            for cidr in value.split(',') {
                parse_cidr(cidr).ok_or_else(|| {
                    format!(
                        "source-address entry {:?} is not an IP address or CIDR",
                        crate::escape_control(cidr)
                    )
                })?;
            }
        }
        "verify-required" => {
            if !value.is_empty() {
                return Err("verify-required takes no value".into());
            }
        }
        other => return Err(format!("unknown critical option {other:?}")),
    }
    Ok(())
}

fn parse_cidr(s: &str) -> Option<()> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: std::net::IpAddr = addr.parse().ok()?;
    if let Some(p) = prefix {
        let p: u8 = p.parse().ok()?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if p > max {
            return None;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::UserCertRequest;
    use proptest::prelude::*;
    use serde_json::json;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    fn req(principals: Option<&[&str]>, ttl: Option<u64>) -> CertRequest {
        CertRequest::parse(&UserCertRequest {
            public_key: ED.into(),
            principals: principals.map(|p| p.iter().map(|s| s.to_string()).collect()),
            ttl_seconds: ttl,
            reason: None,
        })
        .expect("valid request")
    }

    fn limits() -> Limits {
        Limits::new(Ttl::from_secs(3600).expect("ttl"))
    }

    #[test]
    fn allow_grants_principals_and_clamps_ttl() {
        let d = json!({"allow": true, "principals": ["alice", "web"], "ttl_seconds": 86400, "extensions": ["permit-pty"]});
        let g = enforce(Some(&d), &req(None, None), &limits()).expect("grant");
        assert_eq!(g.principals().len(), 2);
        assert_eq!(g.ttl().as_secs(), 3600, "clamped to the ceiling");
        let g = enforce(Some(&d), &req(Some(&["web"]), Some(300)), &limits()).expect("grant");
        assert_eq!(
            g.principals()
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>(),
            ["web"]
        );
        assert_eq!(g.ttl().as_secs(), 300, "never longer than asked");
    }

    #[test]
    fn a_preview_is_enforced_like_a_request_for_everything() {
        let d = json!({"allow": true, "principals": ["alice", "web"], "ttl_seconds": 86400, "extensions": ["permit-pty"]});
        let g = enforce_preview(Some(&d), &limits()).expect("grant");
        assert_eq!(g.principals().len(), 2);
        assert_eq!(g.ttl().as_secs(), 3600, "clamped to the ceiling");
        for bad in [
            json!({"allow": true, "principals": [], "ttl_seconds": 60}),
            json!({"allow": true, "principals": ["a"], "ttl_seconds": 60, "extensions": ["permit-user-rc"]}),
            json!({"allow": false, "reasons": ["no"]}),
        ] {
            assert!(enforce_preview(Some(&bad), &limits()).is_err(), "{bad}");
        }
        assert!(enforce_preview(None, &limits()).is_err());
        let identity = VerifiedIdentity {
            kind: crate::IdentityKind::Human,
            issuer: "https://idp".into(),
            subject: "alice".into(),
            email: None,
            email_verified: false,
            groups: vec![],
            login: None,
            login_problem: None,
            claims: Default::default(),
        };
        let input = serde_json::to_value(PolicyInput::user_cert_preview(
            &identity,
            "192.0.2.1".into(),
            5,
        ))
        .unwrap();
        assert_eq!(input["request"]["preview"], json!(true));
        assert_eq!(input["request"]["public_key"], json!(null));
        assert_eq!(input["request"]["kind"], json!("user_cert"));
        assert_eq!(input["time"]["unix_ns"], json!(5_000_000_000u64));
    }

    #[test]
    fn refusals() {
        let r = req(None, None);
        let l = limits();
        let policy_error = |d: serde_json::Value| {
            assert!(
                matches!(enforce(Some(&d), &r, &l), Err(Refusal::PolicyError(_))),
                "{d}"
            );
        };
        assert!(matches!(
            enforce(None, &r, &l),
            Err(Refusal::PolicyError(_))
        ));
        policy_error(json!("yes"));
        policy_error(json!([true, ["a"], 60]));
        policy_error(json!({"allow": "true", "principals": ["a"], "ttl_seconds": 60}));
        policy_error(json!({"allow": true, "principal": ["a"], "ttl_seconds": 60}));
        policy_error(json!({"allow": true, "principals": ["a,b"], "ttl_seconds": 60}));
        policy_error(json!({"allow": true, "principals": ["a"]}));
        policy_error(json!({"allow": true, "principals": ["a"], "ttl_seconds": 0}));
        policy_error(
            json!({"allow": true, "principals": ["a"], "ttl_seconds": 60, "extensions": ["permit-user-rc"]}),
        );
        policy_error(
            json!({"allow": true, "principals": ["a"], "ttl_seconds": 60, "critical_options": {"x": ""}}),
        );
        policy_error(
            json!({"allow": true, "principals": ["a"], "ttl_seconds": 60, "critical_options": {"source-address": "10.0.0.0/33"}}),
        );
        policy_error(
            json!({"allow": true, "principals": ["a"], "ttl_seconds": 60, "critical_options": {"force-command": "a\nb"}}),
        );

        let denied = enforce(
            Some(&json!({"allow": false, "reasons": ["not on call"]})),
            &r,
            &l,
        );
        assert_eq!(
            denied.unwrap_err(),
            Refusal::Denied {
                reasons: vec!["not on call".into()]
            }
        );
        let empty = enforce(
            Some(&json!({"allow": true, "principals": [], "ttl_seconds": 60})),
            &r,
            &l,
        );
        assert!(matches!(empty, Err(Refusal::Denied { .. })));
        let other = enforce(
            Some(&json!({"allow": true, "principals": ["bob"], "ttl_seconds": 60})),
            &req(Some(&["root"]), None),
            &l,
        );
        assert!(
            matches!(other, Err(Refusal::Denied { .. })),
            "never a principal that was not asked for"
        );
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[a-z,* @.\\-]{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("allow".to_string()),
                        Just("principals".to_string()),
                        Just("ttl_seconds".to_string()),
                        Just("extensions".to_string()),
                        Just("critical_options".to_string()),
                        Just("reasons".to_string()),
                        Just("permit-pty".to_string()),
                        Just("source-address".to_string()),
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_decision() -> impl Strategy<Value = serde_json::Value> {
        // Mostly well-shaped decisions with hostile values, plus arbitrary JSON.
        let shaped = (
            any::<bool>(),
            prop::collection::vec("[a-z,* @.\\-]{0,6}", 0..5),
            prop::option::of(any::<u64>()),
            prop::collection::vec(prop::sample::select(vec!["permit-pty", "permit-user-rc", "bogus"]), 0..3),
        )
            .prop_map(|(allow, principals, ttl, ext)| {
                serde_json::json!({"allow": allow, "principals": principals, "ttl_seconds": ttl, "extensions": ext})
            });
        prop_oneof![shaped, arb_json()]
    }

    proptest! {
        /// Whatever the policy returns, a grant has non-empty valid principals
        /// (among those requested), a ttl within ceiling and request, and only
        /// allowlisted extensions.
        #[test]
        fn grants_always_hold_invariants(
            decision in arb_decision(),
            asked in prop::option::of(prop::collection::vec("[a-z]{1,3}", 1..3)),
            ttl in prop::option::of(1u64..100_000),
            ceiling in 1u64..10_000,
        ) {
            let mut asked = asked;
            if let Some(a) = asked.as_mut() { a.sort(); a.dedup(); }
            let body = UserCertRequest { public_key: ED.into(), principals: asked.clone(), ttl_seconds: ttl, reason: None };
            let r = CertRequest::parse(&body).expect("valid");
            let l = Limits::new(Ttl::from_secs(ceiling).expect("ttl"));
            if let Ok(g) = enforce(Some(&decision), &r, &l) {
                prop_assert!(!g.principals().is_empty());
                prop_assert!(g.ttl().as_secs() <= ceiling);
                if let Some(t) = ttl { prop_assert!(g.ttl().as_secs() <= t); }
                if let Some(a) = &asked {
                    prop_assert!(g.principals().iter().all(|p| a.iter().any(|x| x == p.as_str())));
                }
                prop_assert!(g.extensions().iter().all(|e| l.allowed_extensions.contains(e)));
            }
        }
    }
}
