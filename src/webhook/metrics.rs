//! Prometheus metrics, registered once under the `upgrade_guard` prefix.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::workload::{RefreshState, Workload};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub operation: &'static str,
    /// `allowed`, `refused`, `forced`, or `invalid` for a malformed request.
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabels {
    /// `too_large`, `content_type`, `malformed`, `body_unreadable`,
    /// `not_found`, `method_not_allowed`, `timeout` or `other`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefreshLabels {
    pub namespace: String,
    pub kind: &'static str,
    pub name: String,
    pub state: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    /// Requests answered 4xx, by why.
    pub rejections: Family<RejectionLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub refusals: Family<RuleLabels, Counter>,
    pub overrides: Counter,
    pub decision_seconds: Histogram,
    pub tls_handshake_failures: Counter,
    /// Connections over the cap, answered 503 and closed.
    pub connections_refused: Counter,
    pub certificate_expiry: Gauge<i64, AtomicI64>,
    /// Certificate files that changed but could not be loaded (the old pair
    /// is kept): alert on any increase.
    pub certificate_reload_failures: Counter,
    /// 1 while the UpgradePolicy CRD is not installed (file policies only).
    pub policy_crd_missing: Gauge<i64, AtomicI64>,
    /// 1 while /readyz answers 200.
    pub ready: Gauge<i64, AtomicI64>,
    /// Refreshes in progress, by state; set at each scrape.
    pub refreshes: Family<StateLabels, Gauge<i64, AtomicI64>>,
    /// Per refresh in progress, how long it has stood at its current step.
    pub refresh_held_seconds: Family<RefreshLabels, Gauge<i64, AtomicI64>>,
    /// Refusal and override Events not written (queue full or API error).
    pub events_dropped: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics {
            rejections: Family::default(),
            requests: Family::default(),
            refusals: Family::default(),
            overrides: Counter::default(),
            // 10 µs to ~80 ms.
            decision_seconds: Histogram::new(exponential_buckets(1e-5, 2.0, 14)),
            tls_handshake_failures: Counter::default(),
            connections_refused: Counter::default(),
            certificate_expiry: Gauge::default(),
            certificate_reload_failures: Counter::default(),
            policy_crd_missing: Gauge::default(),
            ready: Gauge::default(),
            refreshes: Family::default(),
            refresh_held_seconds: Family::default(),
            events_dropped: Counter::default(),
        };
        registry.register(
            "admission_requests",
            "AdmissionReviews answered, by endpoint, operation and verdict",
            metrics.requests.clone(),
        );
        registry.register(
            "rejected_requests",
            "Requests answered 4xx (oversized, wrong content type, malformed, ...), by reason",
            metrics.rejections.clone(),
        );
        registry.register(
            "refusals",
            "Changes refused, by rule",
            metrics.refusals.clone(),
        );
        registry.register(
            "overrides",
            "Refusals let through by upgradeguard.io/force-to",
            metrics.overrides.clone(),
        );
        registry.register(
            "decision_duration_seconds",
            "Time to read, decide and answer one AdmissionReview",
            metrics.decision_seconds.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            metrics.tls_handshake_failures.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections over the cap, answered 503 and closed",
            metrics.connections_refused.clone(),
        );
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When the serving certificate expires (Unix time)",
            metrics.certificate_expiry.clone(),
        );
        registry.register(
            "certificate_reload_failures",
            "Times the certificate files changed but could not be loaded (the old pair is kept)",
            metrics.certificate_reload_failures.clone(),
        );
        registry.register(
            "policy_crd_missing",
            "1 while the UpgradePolicy CRD is not installed: only the policy files apply",
            metrics.policy_crd_missing.clone(),
        );
        registry.register(
            "ready",
            "1 while the server is ready (policies loaded, caches synced)",
            metrics.ready.clone(),
        );
        registry.register(
            "refreshes",
            "Refreshes in progress, by state (RollingOut, Paused, Failed, RollingBack)",
            metrics.refreshes.clone(),
        );
        registry.register(
            "refresh_held_seconds",
            "Per refresh in progress, seconds since its current unit began",
            metrics.refresh_held_seconds.clone(),
        );
        registry.register(
            "events_dropped",
            "UpgradeRefused/UpgradeForced Events not written (queue full or API error)",
            metrics.events_dropped.clone(),
        );
        metrics
    }

    /// Sets the refresh gauges from the workloads that carry a record.
    pub fn observe_refreshes(&self, workloads: &[Workload], now: jiff::Timestamp) {
        let states = [
            RefreshState::RollingOut,
            RefreshState::Paused,
            RefreshState::Failed,
            RefreshState::RollingBack,
        ];
        let mut counts = [0i64; 4];
        self.refresh_held_seconds.clear();
        for w in workloads {
            let Some(Ok(record)) = w.refresh_record() else {
                continue;
            };
            let Some(at) = states.iter().position(|s| *s == record.state) else {
                continue;
            };
            counts[at] += 1;
            let since = record.unit_started.unwrap_or(record.started);
            let held = now.duration_since(since).as_secs().max(0);
            self.refresh_held_seconds
                .get_or_create(&RefreshLabels {
                    namespace: w.namespace().to_string(),
                    kind: w.kind().as_str(),
                    name: w.name().to_string(),
                    state: record.state.as_str(),
                })
                .set(held);
        }
        for (state, count) in states.iter().zip(counts) {
            self.refreshes
                .get_or_create(&StateLabels {
                    state: state.as_str(),
                })
                .set(count);
        }
    }
}

/// The Prometheus text format (0.0.4) of an OpenMetrics text, for clients
/// that do not ask for OpenMetrics: counters' HELP and TYPE name the
/// `_total` sample, and there is no `# UNIT` or `# EOF` line.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counters_by_their_sample_and_ends_without_eof() {
        let mut registry = Registry::with_prefix("upgrade_guard");
        let metrics = Metrics::register(&mut registry);
        metrics.overrides.inc();
        metrics.policy_crd_missing.set(1);
        let mut open = String::new();
        prometheus_client::encoding::text::encode(&mut open, &registry).unwrap();
        assert!(open.contains("# TYPE upgrade_guard_overrides counter\n"));
        assert!(open.ends_with("# EOF\n"));
        let text = prometheus_text(&open);
        for line in [
            "# HELP upgrade_guard_overrides_total Refusals let through by upgradeguard.io/force-to.",
            "# TYPE upgrade_guard_overrides_total counter",
            "upgrade_guard_overrides_total 1",
            "# TYPE upgrade_guard_policy_crd_missing gauge",
            "upgrade_guard_policy_crd_missing 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        assert!(!text.contains("# EOF"), "{text}");
    }

    fn with_record(name: &str, state: RefreshState, unit_started: Option<&str>) -> Workload {
        let mut record = crate::workload::RefreshRecord::starting(
            "1.7.0".into(),
            "1.8.0".into(),
            "2026-11-21T19:00:00Z".parse().unwrap(),
            false,
        );
        record.state = state;
        record.unit_started = unit_started.map(|t| t.parse().unwrap());
        let sts: k8s_openapi::api::apps::v1::StatefulSet =
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "shop", "annotations": {
                    "upgradeguard.io/refresh": serde_json::to_string(&record).unwrap()}},
            }))
            .unwrap();
        Workload::from(sts)
    }

    #[test]
    fn refresh_gauges_count_by_state_and_hold_per_workload() {
        let mut registry = Registry::with_prefix("upgrade_guard");
        let metrics = Metrics::register(&mut registry);
        let now = "2026-11-21T20:00:00Z".parse().unwrap();
        metrics.observe_refreshes(
            &[
                with_record("a", RefreshState::Paused, Some("2026-11-21T19:30:00Z")),
                with_record("b", RefreshState::Paused, None),
                with_record("c", RefreshState::Failed, None),
                with_record("d", RefreshState::Completed, None),
            ],
            now,
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"upgrade_guard_refreshes{state="Paused"} 2"#,
            r#"upgrade_guard_refreshes{state="Failed"} 1"#,
            r#"upgrade_guard_refreshes{state="RollingOut"} 0"#,
            r#"upgrade_guard_refreshes{state="RollingBack"} 0"#,
            r#"upgrade_guard_refresh_held_seconds{namespace="shop",kind="StatefulSet",name="a",state="Paused"} 1800"#,
            r#"upgrade_guard_refresh_held_seconds{namespace="shop",kind="StatefulSet",name="b",state="Paused"} 3600"#,
            r#"upgrade_guard_refresh_held_seconds{namespace="shop",kind="StatefulSet",name="c",state="Failed"} 3600"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        assert!(
            !text.contains("name=\"d\""),
            "a completed refresh is not held: {text}"
        );
        // The next scrape forgets a refresh that is over.
        metrics.observe_refreshes(&[with_record("a", RefreshState::Completed, None)], now);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            !text.contains("upgrade_guard_refresh_held_seconds{"),
            "{text}"
        );
        assert!(
            text.contains(r#"upgrade_guard_refreshes{state="Paused"} 0"#),
            "{text}"
        );
    }
}
