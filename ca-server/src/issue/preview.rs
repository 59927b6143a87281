//! "What would I get now?": the user-certificate decision for a person,
//! taken as the issuance path takes it (revocation, login name, policy with
//! the person's active grants, the server's invariants) but on a preview
//! input with no key. Nothing is signed, no serial is drawn, no token is
//! spent, no login name is bound, and nothing is written to the audit log:
//! the answer only ever goes back to the person it describes.

use ca_core::elevation::restrict_to_grants;
use ca_core::policy::{PolicyInput, enforce_preview};
use ca_core::{Refusal, VerifiedIdentity};

use super::Authority;

/// What the policy would give now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preview {
    pub principals: Vec<String>,
    pub ttl_seconds: u64,
    pub extensions: Vec<String>,
    /// Critical options as `name=value` (`name` alone when empty).
    pub critical_options: Vec<String>,
    pub reasons: Vec<String>,
    pub policy_hash: String,
}

/// Why the policy would give nothing now: the reasons to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nothing {
    pub reasons: Vec<String>,
}

impl Authority {
    /// The preview for `identity` from `source_ip` at `now` (see the module
    /// doc). Any doubt (a policy error, an unreadable grant table) gives
    /// [`Nothing`] with the reason, never a guess.
    pub async fn preview_user_cert(
        &self,
        identity: &VerifiedIdentity,
        source_ip: &str,
        now: u64,
    ) -> Result<Preview, Nothing> {
        let nothing = |reason: String| Nothing {
            reasons: vec![reason],
        };
        if self
            .revocations
            .get()
            .subject_revoked(&identity.issuer, &identity.subject)
        {
            return Err(nothing("your identity is revoked at this CA".into()));
        }
        if let Some(login) = &identity.login
            && let Some((issuer, subject)) = self.logins.owner(login.as_str())
            && (issuer != identity.issuer || subject != identity.subject)
        {
            return Err(nothing(format!(
                "the login name {login} belongs to another identity at this CA; ask the CA operator (`jitssh-ca login-name map`) if it is yours"
            )));
        }
        let grants = self
            .elevations
            .active_for(&identity.issuer, &identity.subject, now)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "preview: active grants unreadable");
                nothing("your active grants cannot be read right now; try again shortly".into())
            })?;
        let input = PolicyInput::user_cert_preview(identity, source_ip.to_owned(), now)
            .with_grants(grants.clone());
        let input = serde_json::to_value(&input).map_err(|e| nothing(e.to_string()))?;
        // One snapshot for the decision and the role table, as issuance does.
        let policy = self.policy.snapshot();
        let eval = policy
            .evaluate(&input)
            .map_err(|e| nothing(format!("the policy could not decide: {e}")))?;
        let grant = enforce_preview(eval.decision.as_ref(), &self.limits)
            .and_then(|g| restrict_to_grants(g, policy.roles(), &grants, now))
            .map_err(|r| match r {
                Refusal::Denied { reasons } => Nothing { reasons },
                Refusal::PolicyError(m) => {
                    nothing(format!("the policy's decision is not usable: {m}"))
                }
            })?;
        Ok(Preview {
            principals: grant.principals().iter().map(|p| p.to_string()).collect(),
            ttl_seconds: grant.ttl().as_secs(),
            extensions: grant.extensions().iter().cloned().collect(),
            critical_options: grant
                .critical_options()
                .iter()
                .map(|(k, v)| {
                    if v.is_empty() {
                        k.clone()
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect(),
            reasons: grant.reasons().to_vec(),
            policy_hash: eval.policy_hash,
        })
    }
}
