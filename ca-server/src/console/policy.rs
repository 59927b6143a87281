//! Policy: the serving policy's files, hash and test results, the last
//! reload and how it went (`PolicyEngine::status`), and "try it": one of
//! the server's decisions on a typed input (`policy::try_decision`), with
//! what the server's invariants make of it. Nothing is issued or stored;
//! each try is audited (`console_policy_try`, the input's hash, never the
//! input).

use askama::Template;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use sha2::{Digest as _, Sha256};

use super::auth::{Person, person, post_person_sized};
use super::nav::Nav;
use super::render::{render, unavailable};
use super::rights::Capability;
use super::state::UiState;
use crate::audit::format_time;
use crate::clock::now_unix;
use crate::policy::{MAX_INPUT, PolicyStatus, Reload, Trial, TrialDecision, TrialError};

/// The try-it form's body: the input URL-encoded (up to three bytes per
/// byte) and a few short fields.
const MAX_TRY_FORM: usize = 3 * MAX_INPUT + 4 * 1024;

#[derive(Template)]
#[template(path = "console/policy.html")]
struct PolicyPage<'a> {
    nav: Nav,
    csrf: String,
    status: &'a PolicyStatus,
    loaded_at: String,
    reload: Option<ReloadView>,
    passed: usize,
    failed: usize,
    choices: Vec<(&'static str, &'static str, bool)>,
    input: String,
    result: Option<TrialView>,
    error: Option<String>,
}

struct ReloadView {
    at: String,
    refused: bool,
    text: String,
}

struct TrialView {
    label: &'static str,
    decision: String,
    reasons: Vec<String>,
    verdict: String,
    granted: bool,
    micros: u128,
    /// The first digits of the policy hash that decided.
    hash: String,
}

/// `GET /ui/policy[?decision=NAME]`: the status, and the form prefilled
/// with the chosen decision's example input.
pub(super) async fn policy(State(s): State<UiState>, req: Request) -> Response {
    let me = match person(&s, &req, Capability::Policy).await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let query = req.uri().query().unwrap_or("");
    let chosen = match query.strip_prefix("decision=") {
        None if query.is_empty() => TrialDecision::User,
        Some(name) => match TrialDecision::parse(name) {
            Some(d) => d,
            None => return bad_choice(&s, &me),
        },
        None => return bad_choice(&s, &me),
    };
    let input = chosen.example_input().to_owned();
    page(&s, &me, StatusCode::OK, chosen, input, None, None)
}

fn bad_choice(s: &UiState, me: &Person) -> Response {
    let message = format!(
        "This page takes only ?decision= with one of: {}.",
        TrialDecision::ALL.map(TrialDecision::name).join(", ")
    );
    let input = TrialDecision::User.example_input().to_owned();
    page(
        s,
        me,
        StatusCode::BAD_REQUEST,
        TrialDecision::User,
        input,
        None,
        Some(message),
    )
}

/// `POST /ui/policy/try`: evaluate, audit, show.
pub(super) async fn try_it(State(s): State<UiState>, req: Request) -> Response {
    let (me, form) = match post_person_sized(&s, req, Capability::Policy, MAX_TRY_FORM).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let input = form.field("input").unwrap_or_default();
    let Some(decision) = form
        .field("decision")
        .as_deref()
        .and_then(TrialDecision::parse)
    else {
        let message = format!(
            "Choose a decision: one of {}.",
            TrialDecision::ALL.map(TrialDecision::name).join(", ")
        );
        return page(
            &s,
            &me,
            StatusCode::BAD_REQUEST,
            TrialDecision::User,
            input,
            None,
            Some(message),
        );
    };
    let policy = s.authority.policy.snapshot();
    let host_max_ttl = s.authority.hosts.max_ttl;
    let trial =
        crate::policy::try_decision(&policy, decision, &input, &s.authority.limits, host_max_ttl);
    let (status, result, error) = match trial {
        Ok(t) => (StatusCode::OK, Some(t), None),
        Err(TrialError::TooLarge(n)) => {
            let message = format!(
                "The input is {n} bytes; at most {MAX_INPUT} are accepted. Nothing was evaluated."
            );
            // Not echoed back: a page that large helps no one.
            let input = decision.example_input().to_owned();
            return page(
                &s,
                &me,
                StatusCode::PAYLOAD_TOO_LARGE,
                decision,
                input,
                None,
                Some(message),
            );
        }
        // The policy could not decide: the server would deny. That is a
        // result to show, not a fault of the input.
        Err(TrialError::Policy(e)) => (
            StatusCode::OK,
            None,
            Some(format!(
                "The policy could not decide, so the server would deny: {e}"
            )),
        ),
        Err(e) => {
            let message = format!("{e}. Nothing was evaluated.");
            return page(
                &s,
                &me,
                StatusCode::BAD_REQUEST,
                decision,
                input,
                None,
                Some(message),
            );
        }
    };
    // Audited before it is shown: probing what the policy grants is
    // security-relevant. The input's hash, not the input (it may carry
    // someone's claims, and it would let a probe grow the log by 64 KiB).
    let mut event = me.caller().event("console_policy_try", now_unix());
    event.outcome = match &result {
        Some(t) if t.granted => "granted",
        Some(t) if t.decision.is_some() => "refused",
        Some(_) => "undefined",
        None => "error",
    }
    .into();
    event.policy_hash = Some(policy.hash().to_owned());
    event.details = Some(serde_json::json!({
        "decision": decision.name(),
        "input_sha256": hex::encode(Sha256::digest(input.as_bytes())),
        "input_bytes": input.len(),
    }));
    if let Err(e) = s.authority.audit.append(event, None).await {
        return unavailable("auditing a policy try", e);
    }
    let view = result.map(|t| view(decision, t));
    page(&s, &me, status, decision, input, view, error)
}

fn view(decision: TrialDecision, t: Trial) -> TrialView {
    TrialView {
        label: decision.label(),
        decision: match &t.decision {
            Some(d) => serde_json::to_string_pretty(d).unwrap_or_else(|_| d.to_string()),
            None => "undefined (the server denies)".into(),
        },
        reasons: t.reasons,
        verdict: t.verdict,
        granted: t.granted,
        micros: t.elapsed.as_micros(),
        hash: short(&t.policy_hash).to_owned(),
    }
}

fn page(
    s: &UiState,
    me: &Person,
    status: StatusCode,
    chosen: TrialDecision,
    input: String,
    result: Option<TrialView>,
    error: Option<String>,
) -> Response {
    let st = s.authority.policy.status();
    let reload = st.last_reload.as_ref().map(|r| {
        let (refused, text) = match &r.outcome {
            Reload::Reloaded { previous_hash } => (
                false,
                format!(
                    "reloaded: a new policy serves (it replaced {})",
                    short(previous_hash)
                ),
            ),
            Reload::Unchanged => (false, "unchanged: the files hash the same".into()),
            Reload::Refused { message } => (
                true,
                format!("refused, the policy above keeps serving: {message}"),
            ),
        };
        ReloadView {
            at: format_time(r.at),
            refused,
            text,
        }
    });
    let choices = TrialDecision::ALL
        .iter()
        .map(|d| (d.name(), d.label(), *d == chosen))
        .collect();
    render(
        status,
        &PolicyPage {
            nav: me.nav(s, "/ui/policy"),
            csrf: me.csrf(s),
            loaded_at: format_time(st.loaded_at),
            reload,
            passed: st.tests.passed(),
            failed: st.tests.failed(),
            status: &st,
            choices,
            input,
            result,
            error,
        },
    )
}

/// The first 12 hex digits of a hash, as people quote them.
fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}
