//! Seeing the network: the event log (`netctl events`), Prometheus metrics
//! (`netd daemon --metrics-addr`) and the events an operation caused (`changes`, pure).
//!
//! One `Observer` per daemon, shared by the engine (which emits through `Observer::emit`
//! at its commit points and its repair pass), the DNS server and the API. Engines
//! without one (the CNI plugin's short-lived engine, unit tests) emit nothing.

pub mod changes;
pub mod events;
pub mod metrics;
pub mod time;

pub use events::{Event, EventLog, Filter, Kind};
pub use metrics::{DnsAnswer, Metrics, ModelCounts};

#[derive(Default)]
pub struct Observer {
    pub events: EventLog,
    pub metrics: Metrics,
}

impl Observer {
    pub fn emit(&self, e: Event) {
        self.metrics.event(e.kind.as_str());
        self.events.emit(e);
    }
}
