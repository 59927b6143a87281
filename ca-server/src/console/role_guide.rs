//! "Request a role" on My access: the serving policy's roles (its role
//! table) joined with its `role_guide` for this person (may I ask, who
//! approves, when is it approved at once), so the page is never out of date.
//! The guide is read strictly and fails closed: missing, an evaluation
//! error, or any entry out of shape gives the roles without approval
//! details and a note saying the policy does not describe them.

use std::collections::BTreeMap;

use ca_core::VerifiedIdentity;
use serde::Deserialize;

use super::rights::console_input;
use crate::policy::PolicySnapshot;

/// One role as the page shows it.
pub(super) struct RoleView {
    pub(super) name: String,
    pub(super) description: String,
    pub(super) principals: Vec<String>,
    pub(super) max_ttl: String,
    /// `None` when the policy does not describe the role (see `Guide::note`).
    pub(super) guide: Option<GuideEntry>,
}

/// What `role_guide` says of one role, for this person.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(super) struct GuideEntry {
    pub(super) may_request: bool,
    /// Empty: anyone may ask.
    pub(super) requester_groups: Vec<String>,
    pub(super) approver_groups: Vec<String>,
    /// 0 when approvers cannot approve it (only the auto-approve rule can).
    pub(super) approvals_required: u32,
    /// The auto-approve rule in words, when there is one.
    pub(super) auto_approve: Option<String>,
    /// Who approves, in words (built here, not read).
    #[serde(skip)]
    pub(super) approvers: Option<String>,
}

/// The roles this person may ask for, the others, and why approval
/// details may be missing.
pub(super) struct Guide {
    pub(super) open: Vec<RoleView>,
    pub(super) closed: Vec<RoleView>,
    /// Set when the policy does not describe who may ask or approve.
    pub(super) note: Option<String>,
}

impl Guide {
    /// The roles of `policy` for `identity` (see the module doc).
    pub(super) fn for_person(
        policy: &PolicySnapshot,
        identity: &VerifiedIdentity,
        source_ip: &str,
        now: u64,
    ) -> Guide {
        let entries = match read(policy, identity, source_ip, now) {
            Ok(entries) => Ok(entries),
            Err(why) => {
                tracing::info!(why = %why, "console: no role guide (roles shown without approval details)");
                Err(why)
            }
        };
        let mut guide = Guide {
            open: Vec::new(),
            closed: Vec::new(),
            // With no roles there is nothing to describe.
            note: entries.as_ref().err().filter(|_| !policy.roles().is_empty()).map(|why| {
                format!(
                    "The CA's policy does not describe who may request or approve these roles ({why}). Ask anyway: the policy decides when you do."
                )
            }),
        };
        for role in policy.roles().iter() {
            let name = role.name.to_string();
            let entry = entries.as_ref().ok().and_then(|e| e.get(&name).cloned());
            let entry = entry.map(|mut e| {
                e.auto_approve = e.auto_approve.map(|t| sentence(&t));
                e.approvers = approvers(e.approvals_required, &e.approver_groups);
                e
            });
            let secs = role.max_ttl.as_secs();
            let view = RoleView {
                description: role.description.clone(),
                principals: role.principals.iter().map(|p| p.to_string()).collect(),
                max_ttl: duration_words(secs),
                guide: entry.clone(),
                name,
            };
            // Without a guide every role is offered: the decision is the
            // policy's when the person asks.
            match entry {
                Some(e) if !e.may_request => guide.closed.push(view),
                _ => guide.open.push(view),
            }
        }
        guide
    }
}

/// `role_guide`, every role of the table described and nothing else.
fn read(
    policy: &PolicySnapshot,
    identity: &VerifiedIdentity,
    source_ip: &str,
    now: u64,
) -> Result<BTreeMap<String, GuideEntry>, String> {
    let input = console_input(identity, "role_guide", source_ip, now);
    let eval = policy
        .evaluate_role_guide(&input)
        .map_err(|e| e.to_string())?
        .ok_or("it defines no data.jitssh.role_guide")?;
    let value = eval
        .decision
        .ok_or("data.jitssh.role_guide is undefined for you")?;
    parse(value, policy.roles().iter().map(|r| r.name.to_string()))
}

/// Parse a guide: an object from role name to [`GuideEntry`], naming
/// exactly the roles in `names`.
fn parse(
    value: serde_json::Value,
    names: impl Iterator<Item = String>,
) -> Result<BTreeMap<String, GuideEntry>, String> {
    let entries: BTreeMap<String, GuideEntry> = serde_json::from_value(value)
        .map_err(|e| format!("data.jitssh.role_guide is not in the documented shape: {e}"))?;
    let names: Vec<String> = names.collect();
    if let Some(missing) = names.iter().find(|n| !entries.contains_key(*n)) {
        return Err(format!(
            "data.jitssh.role_guide does not describe role {missing}"
        ));
    }
    if let Some(extra) = entries.keys().find(|k| !names.contains(k)) {
        return Err(format!(
            "data.jitssh.role_guide describes {:?}, which is no role",
            ca_core::escape_control(extra)
        ));
    }
    Ok(entries)
}

/// "Needs 1 approval from a member of a or b", "Needs 2 approvals from
/// members of a"; `None` when approvers cannot approve the role.
fn approvers(required: u32, groups: &[String]) -> Option<String> {
    let (last, first) = groups.split_last()?;
    if required == 0 {
        return None;
    }
    let groups = if first.is_empty() {
        last.clone()
    } else {
        format!("{} or {last}", first.join(", "))
    };
    Some(if required == 1 {
        format!("Needs 1 approval from a member of {groups}")
    } else {
        format!("Needs {required} approvals from members of {groups}")
    })
}

/// `text` with a capital first letter (the rest as the policy wrote it).
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// `secs` as a person reads it: "45 min", "1 h", "1 h 30 min", "2 days".
pub(super) fn duration_words(secs: u64) -> String {
    let (days, hours, mins) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    let mut parts = Vec::new();
    if days > 0 {
        parts.push(format!("{days} day{}", if days == 1 { "" } else { "s" }));
    }
    if hours > 0 {
        parts.push(format!("{hours} h"));
    }
    if mins > 0 || parts.is_empty() {
        parts.push(if secs < 60 {
            format!("{secs} s")
        } else {
            format!("{mins} min")
        });
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names() -> impl Iterator<Item = String> {
        ["a".to_owned()].into_iter()
    }

    #[test]
    fn reads_the_documented_shape() {
        let g = parse(
            json!({"a": {"may_request": true, "requester_groups": [], "approver_groups": ["leads"], "approvals_required": 1, "auto_approve": null}}),
            names(),
        )
        .unwrap();
        assert_eq!(g["a"].approver_groups, ["leads"]);
        assert!(g["a"].may_request);
    }

    #[test]
    fn anything_else_is_no_guide() {
        for bad in [
            json!([]),
            json!({}),
            json!({"a": {"may_request": "yes", "requester_groups": [], "approver_groups": [], "approvals_required": 1, "auto_approve": null}}),
            json!({"a": {"may_request": true, "requester_groups": [], "approver_groups": [], "approvals_required": -1, "auto_approve": null}}),
            json!({"a": {"may_request": true, "requester_groups": [], "approver_groups": [], "approvals_required": 1, "auto_approve": null, "extra": 1}}),
            json!({"a": {"may_request": true, "requester_groups": [], "approver_groups": [], "approvals_required": 1, "auto_approve": null}, "b": {"may_request": true, "requester_groups": [], "approver_groups": [], "approvals_required": 1, "auto_approve": null}}),
        ] {
            assert!(parse(bad.clone(), names()).is_err(), "{bad}");
        }
    }

    #[test]
    fn approvers_read_as_words() {
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            approvers(1, &g(&["a", "b", "c"])).unwrap(),
            "Needs 1 approval from a member of a, b or c"
        );
        assert_eq!(
            approvers(2, &g(&["a"])).unwrap(),
            "Needs 2 approvals from members of a"
        );
        assert_eq!(approvers(0, &g(&["a"])), None);
        assert_eq!(approvers(1, &[]), None);
    }

    #[test]
    fn durations_read_as_words() {
        assert_eq!(duration_words(30), "30 s");
        assert_eq!(duration_words(900), "15 min");
        assert_eq!(duration_words(3600), "1 h");
        assert_eq!(duration_words(5400), "1 h 30 min");
        assert_eq!(duration_words(172_800), "2 days");
    }
}
