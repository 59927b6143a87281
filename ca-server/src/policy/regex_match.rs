//! `regex.match` for policies, with each thread keeping its compiled patterns.
//!
//! Published regorus 0.14.1's builtin keeps compiled patterns in one
//! process-wide LRU behind a mutex and hands out a *clone* of the cached
//! `regex::Regex` on every call (third_party/regorus.patch now hands out the
//! cached `Arc` instead, which the VM's calls benefit from). A
//! clone of a `Regex` starts with an empty pool of match caches, so each call
//! allocates a fresh set of matcher caches (lazy DFA, PikeVM, …) and frees
//! them afterwards: ~8 µs of the default policy's ~100 µs decision
//! (docs/performance.md, session 6), plus the mutex under concurrency. This
//! extension, installed over the builtin (regorus looks extensions up before
//! builtins), keeps one `Regex` per pattern per thread, whose caches stay warm.
//!
//! Semantics are the builtin's (a unit test compares the two on valid,
//! non-matching, invalid, oversized and non-string arguments): two strings in,
//! a boolean out; anything else, an invalid pattern, or a pattern whose
//! compiled form exceeds regorus's 100 KiB limit is an error, which fails the
//! decision closed. An undefined argument makes the call undefined before it
//! gets here, as for the builtin.

use std::cell::RefCell;
use std::collections::HashMap;

use regorus::{Engine, LimitError, Value};

/// The builtin's bound on a compiled pattern (regorus `builtins/regex.rs`).
const REGEX_SIZE_LIMIT: usize = 100 * 1024;

/// Patterns one thread keeps; past this its cache starts over. Policies use a
/// handful of constant patterns; a pattern built from input cannot grow the
/// cache without bound.
const PATTERNS_PER_THREAD: usize = 256;

thread_local! {
    static COMPILED: RefCell<HashMap<Box<str>, regex::Regex>> = RefCell::new(HashMap::new());
}

/// Why `regex.match` could not install or answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum RegexMatchError {
    #[error("{0}")]
    Install(String),
    #[error("`regex.match` expects two string arguments (pattern, value), got {0}")]
    Arguments(String),
    /// Becomes regorus's own [`LimitError`] at the boundary, as the builtin's is.
    #[error("{0}")]
    TooBig(LimitError),
    #[error("invalid regex {pattern:?}: {error}")]
    Invalid {
        pattern: String,
        /// Not a `source`: the message already says it, once.
        error: regex::Error,
    },
}

/// Install the extension in `engine` (before it compiles a policy).
pub(super) fn install(engine: &mut Engine) -> Result<(), RegexMatchError> {
    engine
        .add_extension("regex.match".into(), 2, Box::new(extension))
        .map_err(|e| RegexMatchError::Install(e.to_string()))
}

/// The extension as regorus calls it: its `Extension` trait demands
/// `anyhow::Result`, so anyhow stays at this boundary. An oversized pattern
/// is regorus's `LimitError` itself, so the evaluation reports it as the
/// builtin would.
fn extension(args: Vec<Value>) -> anyhow::Result<Value> {
    match regex_match(&args) {
        Ok(matched) => Ok(Value::Bool(matched)),
        Err(RegexMatchError::TooBig(limit)) => Err(anyhow::Error::new(limit)),
        Err(e) => Err(anyhow::Error::new(e)),
    }
}

fn regex_match(args: &[Value]) -> Result<bool, RegexMatchError> {
    let [Value::String(pattern), Value::String(value)] = args else {
        return Err(RegexMatchError::Arguments(
            args.iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ));
    };
    COMPILED.with(|compiled| {
        let mut compiled = compiled.borrow_mut();
        if let Some(re) = compiled.get(&**pattern) {
            return Ok(re.is_match(value));
        }
        let re = regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(_) => {
                    RegexMatchError::TooBig(LimitError::RegexSizeLimitExceeded {
                        limit: REGEX_SIZE_LIMIT,
                    })
                }
                error => RegexMatchError::Invalid {
                    pattern: pattern.to_string(),
                    error,
                },
            })?;
        let matched = re.is_match(value);
        if compiled.len() >= PATTERNS_PER_THREAD {
            compiled.clear();
        }
        compiled.insert(pattern.as_ref().into(), re);
        Ok(matched)
    })
}

/// Whether this thread holds `pattern` compiled.
#[cfg(test)]
fn cached(pattern: &str) -> bool {
    COMPILED.with(|c| c.borrow().contains_key(pattern))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn engine(with_extension: bool) -> Engine {
        let mut e = Engine::new();
        e.set_rego_v0(false);
        e.set_strict_builtin_errors(true);
        if with_extension {
            install(&mut e).unwrap();
        }
        e
    }

    /// The rule `x` of a one-rule policy, evaluated on `input`: its JSON, or
    /// "undefined", or "error".
    fn eval(with_extension: bool, body: &str, input: &str) -> String {
        let mut e = engine(with_extension);
        e.add_policy("t.rego".into(), format!("package t\nx := {body}\n"))
            .unwrap();
        e.set_input(Value::from_json_str(input).unwrap());
        match e.eval_rule("data.t.x".into()) {
            Ok(Value::Undefined) => "undefined".into(),
            Ok(v) => v.to_json_str().unwrap(),
            Err(_) => "error".into(),
        }
    }

    #[test]
    fn decides_as_the_builtin_does() {
        let big = r#"{"p": "a{1000}{1000}", "v": "a"}"#;
        let cases: &[(&str, &str, &str)] = &[
            (
                "regex.match(`^[a-z_][a-z0-9_.-]{0,31}$`, input.v)",
                r#"{"v": "alice"}"#,
                "true",
            ),
            (
                "regex.match(`^[a-z_][a-z0-9_.-]{0,31}$`, input.v)",
                r#"{"v": "Alice"}"#,
                "false",
            ),
            (
                "regex.match(`^[a-z_][a-z0-9_.-]{0,31}$`, input.v)",
                r#"{"v": ""}"#,
                "false",
            ),
            (
                "regex.match(`^[a-z_][a-z0-9_.-]{0,31}$`, input.v)",
                r#"{"v": "a\nb"}"#,
                "false",
            ),
            ("regex.match(`é+`, input.v)", r#"{"v": "xééy"}"#, "true"),
            (
                "regex.match(input.p, input.v)",
                r#"{"p": "(", "v": "a"}"#,
                "error",
            ),
            ("regex.match(input.p, input.v)", big, "error"),
            (
                "regex.match(input.p, input.v)",
                r#"{"p": 1, "v": "a"}"#,
                "error",
            ),
            ("regex.match(`a`, input.v)", r#"{"v": ["a"]}"#, "error"),
            ("regex.match(`a`, input.v)", r#"{"v": null}"#, "error"),
            (
                "regex.match(`a`, input.missing)",
                r#"{"v": "a"}"#,
                "undefined",
            ),
        ];
        for (body, input, want) in cases {
            let builtin = eval(false, body, input);
            let ours = eval(true, body, input);
            assert_eq!(builtin, *want, "builtin on {body} with {input}");
            assert_eq!(ours, builtin, "extension on {body} with {input}");
        }
    }

    #[test]
    fn the_extension_is_what_runs_and_keeps_the_pattern() {
        let pattern = "^installed-[0-9]+$";
        assert!(!cached(pattern));
        let body = format!("regex.match(`{pattern}`, input.v)");
        assert_eq!(eval(true, &body, r#"{"v": "installed-7"}"#), "true");
        assert!(cached(pattern), "the call did not go through the extension");
    }

    #[test]
    fn an_oversized_pattern_is_regoruss_limit_error() {
        let e = extension(vec![Value::from("a{1000}{1000}"), Value::from("a")]).unwrap_err();
        assert!(matches!(
            e.downcast_ref::<LimitError>(),
            Some(LimitError::RegexSizeLimitExceeded { .. })
        ));
    }

    #[test]
    fn the_cache_is_bounded() {
        for i in 0..PATTERNS_PER_THREAD + 10 {
            regex_match(&[Value::from(format!("^bound{i}$")), Value::from("x")]).unwrap();
        }
        COMPILED.with(|c| assert!(c.borrow().len() <= PATTERNS_PER_THREAD));
    }
}
