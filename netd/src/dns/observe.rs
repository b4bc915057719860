//! The DNS server's metrics and events: each answer counted and timed, NXDOMAIN and
//! forwarded answers counted apart, and a forwarded query no upstream answered emitted
//! as an event (`netctl events --filter type=dns`). Without an observer (tests, the
//! CNI plugin) every call returns at once.

use std::sync::Arc;
use std::time::Instant;

use super::server::Forward;
use super::{Dns, Shared};
use crate::observe::{DnsAnswer, Event, Kind, Observer};

/// The response code in a DNS header's fourth byte (RFC 1035 4.1.1); 3 is NXDOMAIN.
fn is_nxdomain(reply: &[u8]) -> bool {
    reply.get(3).is_some_and(|b| b & 0x0f == 3)
}

impl Dns {
    pub fn set_observer(&self, o: Arc<Observer>) {
        let _ = self.shared.observer.set(o);
    }
}

impl Shared {
    /// A query answered locally with `reply`, `t0` when it was read.
    pub(super) fn observe_answer(&self, reply: &[u8], t0: Instant) {
        if let Some(o) = self.observer.get() {
            let a = if is_nxdomain(reply) {
                DnsAnswer::NxDomain
            } else {
                DnsAnswer::Local
            };
            o.metrics.dns(a, t0.elapsed());
        }
    }

    /// A forwarded query, answered by an upstream or not.
    pub(super) fn observe_forward(&self, sandbox: &str, f: &Forward, answered: bool, t0: Instant) {
        let Some(o) = self.observer.get() else {
            return;
        };
        if answered {
            o.metrics.dns(DnsAnswer::Forwarded, t0.elapsed());
            return;
        }
        o.metrics.dns(DnsAnswer::ForwardFailed, t0.elapsed());
        o.emit(
            Event::new(Kind::Dns, "forward_failed", &f.name.to_string())
                .attr("sandbox", sandbox)
                .attr("qtype", f.qtype),
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_rcode() {
        assert!(super::is_nxdomain(&[0, 1, 0x81, 0x83]));
        assert!(!super::is_nxdomain(&[0, 1, 0x81, 0x80]));
        assert!(!super::is_nxdomain(&[0]));
    }
}
