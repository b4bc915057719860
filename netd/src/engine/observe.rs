//! The engine's side of `observe`: the events an operation caused, emitted where
//! operations commit (`commit`, `commit_service`) from their undo record, the repair
//! pass's events, and the model's counts for a metrics scrape.

use std::sync::Arc;

use super::{Engine, ReconcileReport, Undo};
use crate::model::ServiceKind;
use crate::observe::{changes, Event, Kind, ModelCounts, Observer};

impl Engine {
    /// Attaches the daemon's event log and metrics.
    pub fn set_observer(&mut self, o: Arc<Observer>) {
        self.observer = Some(o);
    }

    pub fn observer(&self) -> Option<&Arc<Observer>> {
        self.observer.as_ref()
    }

    /// After a successful commit: an event per change between what `u` saved and what
    /// the model holds now.
    pub(super) fn emit_changes(&self, u: &Undo) {
        let Some(o) = &self.observer else {
            return;
        };
        let mut out = Vec::new();
        for (k, before) in &u.networks {
            out.extend(changes::network(before.as_ref(), self.networks.get(k)));
        }
        for (k, before) in &u.sandboxes {
            out.extend(changes::sandbox(before.as_ref(), self.sandboxes.get(k)));
        }
        for (k, before) in &u.services {
            out.extend(changes::service(before.as_ref(), self.services.get(k)));
        }
        for e in out {
            o.emit(e);
        }
    }

    /// A repair pass's events (`netctl events --filter type=repair`) and counters.
    pub(super) fn emit_repairs(&self, r: &ReconcileReport) {
        let Some(o) = &self.observer else {
            return;
        };
        for (action, what) in [
            ("removed", &r.removed),
            ("recreated", &r.recreated),
            ("failed", &r.failed),
        ] {
            o.metrics.repairs(action, what.len() as u64);
            for x in what {
                o.emit(Event::new(Kind::Repair, action, x));
            }
        }
    }

    /// What a metrics scrape shows of the model.
    pub fn model_counts(&self) -> ModelCounts {
        let backends = self
            .services
            .values()
            .filter_map(|s| match &s.kind {
                ServiceKind::ClusterIp(c) => Some((
                    s.namespace.clone(),
                    s.name.clone(),
                    self.service_backends(c).len() as u64,
                )),
                ServiceKind::ExternalName { .. } => None,
            })
            .collect();
        ModelCounts {
            networks: self.networks.len() as u64,
            sandboxes: self.sandboxes.len() as u64,
            endpoints: self.sandboxes.values().map(|s| s.endpoints.len() as u64).sum(),
            services: self.services.len() as u64,
            published_ports: self.desired_fw().ports.len() as u64,
            backends,
        }
    }
}
