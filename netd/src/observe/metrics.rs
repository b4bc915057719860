//! netd's Prometheus metrics (`netd daemon --metrics-addr`), with the
//! `prometheus-client` crate: counters and histograms move as things happen (API
//! operations, reconcile repairs, DNS queries); gauges of the model (objects by kind,
//! published ports, backends per service) are set from a `ModelCounts` taken at each
//! scrape, so they can never drift from what the engine holds.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    operation: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    namespace: String,
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: String,
}

/// What the model holds at a scrape (`Engine::model_counts`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelCounts {
    pub networks: u64,
    pub sandboxes: u64,
    pub endpoints: u64,
    pub services: u64,
    pub published_ports: u64,
    /// `(namespace, name, backends)` of each load-balanced service.
    pub backends: Vec<(String, String, u64)>,
}

/// How a DNS query was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsAnswer {
    Local,
    NxDomain,
    Forwarded,
    /// Forwarded, and no upstream answered.
    ForwardFailed,
}

pub struct Metrics {
    registry: Registry,
    objects: Family<KindLabel, Gauge>,
    operations: Family<OpLabels, Histogram>,
    repairs: Family<ActionLabel, Counter>,
    published_ports: Gauge,
    backends: Family<ServiceLabels, Gauge>,
    dns_queries: Counter,
    dns_latency: Histogram,
    dns_nxdomain: Counter,
    dns_forwarded: Counter,
    dns_forward_failures: Counter,
    events: Family<TypeLabel, Counter>,
    /// Scrapes set the gauges and encode under this lock, so two scrapes never mix.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let objects = Family::<KindLabel, Gauge>::default();
        r.register("netd_objects", "Objects netd manages, by kind", objects.clone());
        // 100 µs to ~3 s: an operation is a few ms, a large one (many sandboxes) more.
        let operations = Family::<OpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        r.register_with_unit(
            "netd_operation_duration",
            "API operations by operation and result (ok, error), and how long they took",
            Unit::Seconds,
            operations.clone(),
        );
        let repairs = Family::<ActionLabel, Counter>::default();
        r.register(
            "netd_reconcile_repairs",
            "Objects the reconcile loop removed, recreated or failed to repair",
            repairs.clone(),
        );
        let published_ports = Gauge::default();
        r.register(
            "netd_published_ports",
            "Host ports published (sandboxes' and services')",
            published_ports.clone(),
        );
        let backends = Family::<ServiceLabels, Gauge>::default();
        r.register(
            "netd_service_backends",
            "Backends of each load-balanced service",
            backends.clone(),
        );
        let dns_queries = Counter::default();
        r.register("netd_dns_queries", "DNS queries answered", dns_queries.clone());
        // 10 µs (a local name) to ~5 s (an upstream's timeout).
        let dns_latency = Histogram::new(exponential_buckets(0.00001, 2.5, 14));
        r.register_with_unit(
            "netd_dns_query_duration",
            "Time to answer a DNS query",
            Unit::Seconds,
            dns_latency.clone(),
        );
        let dns_nxdomain = Counter::default();
        r.register(
            "netd_dns_nxdomain",
            "DNS queries answered NXDOMAIN",
            dns_nxdomain.clone(),
        );
        let dns_forwarded = Counter::default();
        r.register(
            "netd_dns_forwarded",
            "DNS queries forwarded upstream",
            dns_forwarded.clone(),
        );
        let dns_forward_failures = Counter::default();
        r.register(
            "netd_dns_forward_failures",
            "Forwarded DNS queries no upstream answered",
            dns_forward_failures.clone(),
        );
        let events = Family::<TypeLabel, Counter>::default();
        r.register("netd_events", "Events emitted, by type", events.clone());
        Metrics {
            registry: r,
            objects,
            operations,
            repairs,
            published_ports,
            backends,
            dns_queries,
            dns_latency,
            dns_nxdomain,
            dns_forwarded,
            dns_forward_failures,
            events,
            scrape: Mutex::new(()),
        }
    }

    pub fn operation(&self, operation: &str, ok: bool, took: Duration) {
        self.operations
            .get_or_create(&OpLabels {
                operation: operation.to_string(),
                result: if ok { "ok" } else { "error" }.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn repairs(&self, action: &str, n: u64) {
        if n > 0 {
            self.repairs
                .get_or_create(&ActionLabel {
                    action: action.to_string(),
                })
                .inc_by(n);
        }
    }

    pub fn dns(&self, answer: DnsAnswer, took: Duration) {
        self.dns_queries.inc();
        self.dns_latency.observe(took.as_secs_f64());
        match answer {
            DnsAnswer::Local => {}
            DnsAnswer::NxDomain => drop(self.dns_nxdomain.inc()),
            DnsAnswer::Forwarded => drop(self.dns_forwarded.inc()),
            DnsAnswer::ForwardFailed => {
                self.dns_forwarded.inc();
                self.dns_forward_failures.inc();
            }
        }
    }

    pub fn event(&self, kind: &str) {
        self.events
            .get_or_create(&TypeLabel {
                r#type: kind.to_string(),
            })
            .inc();
    }

    /// The text a scrape gets, with the model's gauges set from `m`.
    pub fn render(&self, m: &ModelCounts) -> String {
        let _g = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        for (kind, n) in [
            ("network", m.networks),
            ("sandbox", m.sandboxes),
            ("endpoint", m.endpoints),
            ("service", m.services),
        ] {
            self.objects
                .get_or_create(&KindLabel { kind: kind.into() })
                .set(n as i64);
        }
        self.published_ports.set(m.published_ports as i64);
        // Removed services must vanish from the output, not stay at their last value.
        self.backends.clear();
        for (ns, name, n) in &m.backends {
            self.backends
                .get_or_create(&ServiceLabels {
                    namespace: ns.clone(),
                    service: name.clone(),
                })
                .set(*n as i64);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "could not encode metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_names_by_convention_and_moves() {
        let m = Metrics::new();
        m.operation("network_create", true, Duration::from_millis(3));
        m.repairs("recreated", 2);
        m.dns(DnsAnswer::NxDomain, Duration::from_micros(40));
        let counts = ModelCounts {
            networks: 2,
            backends: vec![("default".into(), "web".into(), 3)],
            ..ModelCounts::default()
        };
        let text = m.render(&counts);
        for want in [
            "netd_objects{kind=\"network\"} 2",
            "netd_operation_duration_seconds_count{operation=\"network_create\",result=\"ok\"} 1",
            "netd_reconcile_repairs_total{action=\"recreated\"} 2",
            "netd_dns_queries_total 1",
            "netd_dns_nxdomain_total 1",
            "netd_service_backends{namespace=\"default\",service=\"web\"} 3",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
        let text = m.render(&ModelCounts::default());
        assert!(
            !text.contains("service=\"web\""),
            "a removed service's gauge stays:\n{text}"
        );
    }
}
