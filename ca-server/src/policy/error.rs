//! Why a policy could not be loaded, tested or evaluated, and regorus's
//! diagnostics squeezed into one line for those messages.

use std::path::PathBuf;
use std::time::Duration;

use super::rules::{
    DECISION_RULE, ELEVATION_DECISION_RULE, HOST_DECISION_RULE, ROLES_RULE, UI_DECISION_RULE,
};

/// Why a policy could not be loaded, tested or evaluated. Messages name the
/// file and carry regorus's own message (with line and column) where it has one.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "cannot read the policy directory {}: {}; give the folder with the .rego files (default ./policies)",
        dir.display(),
        crate::io_reason::io_reason(.error)
    )]
    ReadDir {
        dir: PathBuf,
        /// Not a `source`: the message already says it, once.
        error: std::io::Error,
    },
    #[error("cannot read policy file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy file {} is not UTF-8 text", path.display())]
    NotUtf8 { path: PathBuf },
    #[error(
        "no *.rego files in {origin}: point the policy directory at the folder holding jitssh.rego"
    )]
    NoPolicy { origin: String },
    #[error("data file {file} in {origin} is not usable: {message}")]
    Data {
        origin: String,
        file: String,
        message: String,
    },
    #[error(
        "data file {file} in {origin} defines data.{package}, which is also a policy package: \
         move that data under a key no package uses (the default policy reads data.jitssh_config)"
    )]
    DataShadowsPackage {
        origin: String,
        file: String,
        package: String,
    },
    #[error("{file} in {origin} does not parse: {message}")]
    Parse {
        origin: String,
        file: String,
        message: String,
    },
    #[error(
        "the policy in {origin} defines no `decision` rule in `package jitssh`; \
         the server evaluates {DECISION_RULE}"
    )]
    NoDecision { origin: String },
    #[error("the policy in {origin} does not compile: {message}")]
    Compile { origin: String, message: String },
    #[error(
        "{failed} of {total} policy tests failed in {origin} \
         (run `jitssh-ca policy test` for details): {summary}"
    )]
    TestsFailed {
        origin: String,
        failed: usize,
        total: usize,
        summary: String,
    },
    #[error(
        "the policy (policy {policy_hash}) defines no `host_decision` rule in `package jitssh`, \
         so every host certificate is denied; add host.rego from the default policy to serve {HOST_DECISION_RULE}"
    )]
    NoHostDecision { policy_hash: String },
    #[error(
        "the policy (policy {policy_hash}) has no {UI_DECISION_RULE}, so the console shows nothing; \
         add console.rego from the default policy to decide who sees which page"
    )]
    NoUiDecision { policy_hash: String },
    #[error(
        "the policy (policy {policy_hash}) defines no roles, so there is nothing to elevate to; \
         add roles (see elevation.rego in the default policy) to serve {ELEVATION_DECISION_RULE}"
    )]
    NoElevation { policy_hash: String },
    #[error("the role table {ROLES_RULE} in {origin} is not usable: {message}")]
    Roles { origin: String, message: String },
    #[error("the input document cannot be handed to the policy: {0}")]
    Input(String),
    #[error(
        "policy evaluation exceeded its {limit:?} time limit (policy {policy_hash}); \
         look for a runaway comprehension or iteration"
    )]
    TimeLimit {
        limit: Duration,
        policy_hash: String,
    },
    #[error("policy evaluation failed (policy {policy_hash}): {message}")]
    Eval {
        policy_hash: String,
        message: String,
    },
    #[error(
        "the policy's decision is not representable as JSON (policy {policy_hash}): {message}; \
         object keys must be strings and numbers must fit 64 bits"
    )]
    NotJson {
        policy_hash: String,
        message: String,
    },
}

/// Squeeze a regorus diagnostic (location line, source excerpt with a caret,
/// `error:` line) into `file:line:col: message`, for logs and test reports.
pub(super) fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let location = lines.iter().find_map(|l| l.strip_prefix("-->"));
    let error = lines.iter().find_map(|l| l.strip_prefix("error:"));
    match (location, error) {
        (Some(location), Some(error)) => format!("{}: {}", location.trim(), error.trim()),
        _ => lines.join(" "),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn diagnostics_become_one_line() {
        let msg = "\n--> p.rego:2:34\n  |\n2 | x := f(y)\n  |      ^\nerror: `f` failed";
        assert_eq!(one_line(msg), "p.rego:2:34: `f` failed");
        assert_eq!(one_line("plain\nmessage"), "plain message");
    }
}
