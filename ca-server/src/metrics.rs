//! Prometheus metrics: issued/denied counters, request and policy latency,
//! and which engine serves each policy decision.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EngineLabel {
    /// `user`, `host`, `elevation`, `approval`.
    pub entry: &'static str,
    /// `vm` or `interpreter`.
    pub engine: &'static str,
}

/// Every decision a policy can define, and every engine, so that a decision
/// a reload removed or moved reads 0 rather than keeping its old 1.
const POLICY_ENTRIES: [&str; 4] = ["user", "host", "elevation", "approval"];
const POLICY_ENGINES: [&str; 2] = ["vm", "interpreter"];

/// All counters and histograms, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub issued: Counter,
    pub denied: Family<CodeLabel, Counter>,
    pub issue_seconds: Histogram,
    pub policy_seconds: Histogram,
    pub audit_seconds: Histogram,
    policy_engine: Family<EngineLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("jitssh");
        let issued = Counter::default();
        let denied = Family::<CodeLabel, Counter>::default();
        // 50 µs .. ~3 s
        let issue_seconds = Histogram::new(exponential_buckets(0.00005, 2.0, 17));
        let policy_seconds = Histogram::new(exponential_buckets(0.000005, 2.0, 16));
        let audit_seconds = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        registry.register("certificates_issued", "Certificates issued", issued.clone());
        registry.register(
            "requests_denied",
            "Certificate requests refused, by error code",
            denied.clone(),
        );
        registry.register(
            "issue_duration_seconds",
            "Time to answer a certificate request",
            issue_seconds.clone(),
        );
        registry.register(
            "policy_evaluation_seconds",
            "Time spent evaluating the Rego policy",
            policy_seconds.clone(),
        );
        registry.register(
            "audit_commit_seconds",
            "Time waiting for the audit row to commit",
            audit_seconds.clone(),
        );
        let policy_engine = Family::<EngineLabel, Gauge>::default();
        registry.register(
            "policy_engine",
            "1 for the engine serving each decision of the policy (vm, or interpreter when the VM cannot compile it or disagreed with the interpreter at load)",
            policy_engine.clone(),
        );
        Metrics {
            registry,
            policy_engine,
            issued,
            denied,
            issue_seconds,
            policy_seconds,
            audit_seconds,
        }
    }

    pub fn deny(&self, code: &str) {
        self.denied
            .get_or_create(&CodeLabel {
                code: code.to_owned(),
            })
            .inc();
    }

    /// Record which engine serves each decision (`(entry, engine)` pairs);
    /// decisions not listed read 0 for every engine.
    pub fn set_policy_engines(&self, serving: &[(&'static str, &'static str)]) {
        for entry in POLICY_ENTRIES {
            for engine in POLICY_ENGINES {
                let on = serving.contains(&(entry, engine));
                self.policy_engine
                    .get_or_create(&EngineLabel { entry, engine })
                    .set(i64::from(on));
            }
        }
    }

    pub fn observe(h: &Histogram, d: Duration) {
        h.observe(d.as_secs_f64());
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
