//! The node's Prometheus metrics: counters and histograms updated as requests are
//! answered, and gauges read from their sources when `/metrics` is scraped. Every
//! name starts with `dynscale_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use dynscale_core::decision::Outcome;
use dynscale_core::scale::{Level, Phase, ScaleMonitor};
use dynscale_core::snapshot::Evaluator;

const OUTCOMES: [Outcome; 6] = [
    Outcome::Allow,
    Outcome::Warn,
    Outcome::Deny,
    Outcome::Throttle,
    Outcome::Quarantine,
    Outcome::Escalate,
];

/// The kind of traffic a request belongs to, for admission and latency.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Class {
    /// Decision requests (AuthZEN and `/v1/decide`).
    Decision,
    /// Everything else: administration, audit reads, health and metrics, and
    /// requests marked critical.
    Admin,
}

impl Class {
    /// The class as a label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Decision => "decision",
            Class::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EvaluatorLabels {
    evaluator: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

/// Levels as label values, lower case like every other label (and the JSON API).
fn level_label(level: Level) -> &'static str {
    match level {
        Level::Green => "green",
        Level::Yellow => "yellow",
        Level::Orange => "orange",
        Level::Red => "red",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    alert: String,
    instance: String,
    state: &'static str,
    level: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

/// Every metric of a node, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    decisions: Family<OutcomeLabels, Counter>,
    evaluations: Family<EvaluatorLabels, Counter>,
    request_seconds: Family<ClassLabels, Histogram>,
    quota_throttles: Family<RuleLabels, Counter>,
    admission_rejections: Family<ClassLabels, Counter>,
    in_flight: Family<ClassLabels, Gauge>,
    pub(crate) audit_queue_depth: Gauge,
    pub(crate) audit_entries: Gauge,
    pub(crate) audit_bytes: Gauge,
    pub(crate) quota_keys: Gauge,
    pub(crate) leases_live: Gauge,
    pub(crate) policies_active: Gauge,
    alerts: Family<AlertLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("dynscale");
        let decisions = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "decisions",
            "Decisions answered, by outcome (batch items counted one by one)",
            decisions.clone(),
        );
        let evaluations = Family::<EvaluatorLabels, Counter>::default();
        registry.register(
            "policy_evaluations",
            "Policy evaluations of enforced decisions, by the evaluator that decided: \
             fast_path, or cedar (rules outside the fast path's subset, or requests it \
             stops on, such as evaluation errors)",
            evaluations.clone(),
        );
        // 50 µs to about 13 s in factors of 2.
        let request_seconds = Family::<ClassLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
        });
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its answer, by class",
            request_seconds.clone(),
        );
        let quota_throttles = Family::<RuleLabels, Counter>::default();
        registry.register(
            "quota_throttles",
            "Decisions throttled, by the quota or concurrency rule that throttled them",
            quota_throttles.clone(),
        );
        let admission_rejections = Family::<ClassLabels, Counter>::default();
        registry.register(
            "admission_rejections",
            "Requests refused with 429 by admission control, by class",
            admission_rejections.clone(),
        );
        let in_flight = Family::<ClassLabels, Gauge>::default();
        registry.register(
            "in_flight_requests",
            "Requests being served now, by class",
            in_flight.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let audit_queue_depth = gauge(
            &mut registry,
            "audit_queue_depth",
            "Audit entries queued for the writer",
        );
        let audit_entries = gauge(&mut registry, "audit_entries", "Entries in the audit log");
        let audit_bytes = gauge(
            &mut registry,
            "audit_bytes",
            "Bytes used by the audit log directory",
        );
        let quota_keys = gauge(&mut registry, "quota_keys", "Quota counters held");
        let leases_live = gauge(&mut registry, "leases_live", "Concurrency leases held");
        let policies_active = gauge(
            &mut registry,
            "policies_active",
            "Policy versions in force in the current snapshot",
        );
        let alerts = Family::<AlertLabels, Gauge>::default();
        registry.register(
            "alert_state",
            "1 for each alert that is pending, firing or just resolved, with its state",
            alerts.clone(),
        );
        Metrics {
            registry,
            decisions,
            evaluations,
            request_seconds,
            quota_throttles,
            admission_rejections,
            in_flight,
            audit_queue_depth,
            audit_entries,
            audit_bytes,
            quota_keys,
            leases_live,
            policies_active,
            alerts,
        }
    }

    /// Counts one answered decision by its outcome's name.
    pub fn decision(&self, outcome: &str) {
        let outcome = OUTCOMES
            .iter()
            .map(|o| o.as_str())
            .find(|o| *o == outcome)
            .unwrap_or("other");
        self.decisions
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts one policy evaluation by the evaluator that decided.
    pub fn evaluated(&self, evaluator: Evaluator) {
        let evaluator = match evaluator {
            Evaluator::FastPath => "fast_path",
            Evaluator::Cedar => "cedar",
        };
        self.evaluations
            .get_or_create(&EvaluatorLabels { evaluator })
            .inc();
    }

    /// Counts one throttle by `rule` (`name@version#rule`).
    pub fn throttled(&self, rule: &str) {
        self.quota_throttles
            .get_or_create(&RuleLabels {
                rule: rule.to_owned(),
            })
            .inc();
    }

    /// Records a served request's time.
    pub fn request_done(&self, class: Class, seconds: f64) {
        self.request_seconds
            .get_or_create(&ClassLabels {
                class: class.as_str(),
            })
            .observe(seconds);
    }

    /// Counts one request refused by admission.
    pub fn rejected(&self, class: Class) {
        self.admission_rejections
            .get_or_create(&ClassLabels {
                class: class.as_str(),
            })
            .inc();
    }

    /// The in-flight gauge of a class.
    pub fn in_flight(&self, class: Class) -> Gauge {
        self.in_flight.get_or_create_owned(&ClassLabels {
            class: class.as_str(),
        })
    }

    /// Replaces the alert states with those of the monitor's last evaluation.
    pub fn set_alerts(&self, monitor: &ScaleMonitor) {
        self.alerts.clear();
        for (key, state, rule) in monitor.alerts() {
            let phase = match state.phase() {
                Phase::Inactive => continue,
                Phase::Pending => "pending",
                Phase::Firing => "firing",
                Phase::Resolved => "resolved",
            };
            self.alerts
                .get_or_create(&AlertLabels {
                    alert: key.rule.clone(),
                    instance: key.instance.clone().unwrap_or_default(),
                    state: phase,
                    level: level_label(rule.level),
                })
                .set(1);
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; a metric whose encoding did would be
        // left out rather than take the endpoint down.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_outcome_and_encodes_with_the_prefix() {
        let m = Metrics::new();
        m.decision("allow");
        m.decision("allow");
        m.decision("throttle");
        m.throttled("pay@1.0.0#agent-rate");
        m.request_done(Class::Decision, 0.000_2);
        let text = m.encode();
        assert!(
            text.contains("dynscale_decisions_total{outcome=\"allow\"} 2"),
            "{text}"
        );
        assert!(text.contains("dynscale_decisions_total{outcome=\"throttle\"} 1"));
        assert!(text.contains("dynscale_quota_throttles_total{rule=\"pay@1.0.0#agent-rate\"} 1"));
        assert!(text.contains("dynscale_request_duration_seconds_count{class=\"decision\"} 1"));
        assert!(text.ends_with("# EOF\n"));
    }
}
