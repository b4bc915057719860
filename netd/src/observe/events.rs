//! The event log behind `netctl events`: typed events in a bounded ring (the last
//! `CAPACITY`, so `--since` works after the fact) and a broadcast to live readers.
//!
//! Emitting never waits for a reader: live readers get events through a
//! `tokio::sync::broadcast` channel, whose sender overwrites the oldest slot instead of
//! blocking, and a reader that fell more than the channel's capacity behind learns it
//! (`RecvError::Lagged`) on its next read; the API then sends it a final `lagged`
//! event and closes its stream (`api::server::events`). Replay and subscription are
//! taken under one lock, so a reader sees every event once, in order, with no gap
//! between what was replayed and what arrives live.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::time;

/// Events kept for `--since`.
pub const CAPACITY: usize = 10_000;
/// How far a live reader may fall behind before it is dropped as lagged.
pub const LIVE_BACKLOG: usize = 1024;

/// What an event is about (`--filter type=...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Network,
    Sandbox,
    Service,
    Node,
    Repair,
    Dns,
    /// About the stream itself (`lagged`).
    Stream,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Network => "network",
            Kind::Sandbox => "sandbox",
            Kind::Service => "service",
            Kind::Node => "node",
            Kind::Repair => "repair",
            Kind::Dns => "dns",
            Kind::Stream => "stream",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [
            Kind::Network,
            Kind::Sandbox,
            Kind::Service,
            Kind::Node,
            Kind::Repair,
            Kind::Dns,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One event: `time type action name (attributes)`, like a line of `docker events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the log, from 1; a reader that sees a gap lost events.
    pub seq: u64,
    /// Unix time in nanoseconds.
    pub time_nano: u64,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub action: String,
    /// The object: a network or sandbox name, `namespace/name` for a service.
    pub name: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl Event {
    pub fn new(kind: Kind, action: &str, name: &str) -> Event {
        Event {
            seq: 0,
            time_nano: 0,
            kind,
            action: action.to_string(),
            name: name.to_string(),
            attributes: BTreeMap::new(),
        }
    }

    pub fn attr(mut self, key: &str, value: impl ToString) -> Event {
        self.attributes.insert(key.to_string(), value.to_string());
        self
    }

    /// The final event a dropped reader gets.
    pub fn lagged(missed: u64) -> Event {
        Event::new(Kind::Stream, "lagged", "events").attr("missed", missed)
    }

    /// `docker events`' line: `2026-12-03T03:33:19.123456789Z network create frontend (subnet=...)`.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{} {} {} {}",
            time::rfc3339_nanos(self.time_nano),
            self.kind.as_str(),
            self.action,
            self.name
        );
        if !self.attributes.is_empty() {
            let attrs: Vec<String> = self.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!(" ({})", attrs.join(", ")));
        }
        s
    }
}

/// Which events a reader wants: `since`/`until` (unix ns, inclusive) and `--filter`s.
/// Filters on one key are ORed, different keys ANDed (Docker's rule).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub since: Option<u64>,
    pub until: Option<u64>,
    pub kinds: Vec<Kind>,
    pub names: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("bad filter {0:?}: expected type=network|sandbox|service|node|repair|dns or name=NAME")]
    Filter(String),
    #[error("{0}")]
    Time(#[from] time::TimeError),
    #[error("--until is before --since")]
    Order,
}

impl Filter {
    /// From the API's query values: `since`/`until` as `time::parse_point` takes them
    /// (relative to `now_nano`), filters as `key=value`.
    pub fn parse(
        since: Option<&str>,
        until: Option<&str>,
        filters: &[String],
        now_nano: u64,
    ) -> Result<Filter, FilterError> {
        let mut f = Filter {
            since: since.map(|s| time::parse_point(s, now_nano)).transpose()?,
            until: until.map(|s| time::parse_point(s, now_nano)).transpose()?,
            ..Filter::default()
        };
        if let (Some(s), Some(u)) = (f.since, f.until) {
            if u < s {
                return Err(FilterError::Order);
            }
        }
        for x in filters {
            match x.split_once('=') {
                Some(("type", v)) => f
                    .kinds
                    .push(Kind::parse(v).ok_or_else(|| FilterError::Filter(x.clone()))?),
                Some(("name", v)) if !v.is_empty() => f.names.push(v.to_string()),
                _ => return Err(FilterError::Filter(x.clone())),
            }
        }
        Ok(f)
    }

    /// Whether `e` is wanted, times aside.
    pub fn matches(&self, e: &Event) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&e.kind))
            && (self.names.is_empty() || self.names.contains(&e.name))
    }

    pub fn in_time(&self, e: &Event) -> bool {
        self.since.is_none_or(|s| e.time_nano >= s) && self.until.is_none_or(|u| e.time_nano <= u)
    }
}

struct Ring {
    events: VecDeque<Arc<Event>>,
    next_seq: u64,
}

/// The daemon's event log (one per daemon, shared by the engine, the DNS server and
/// the API).
pub struct EventLog {
    ring: Mutex<Ring>,
    live: broadcast::Sender<Arc<Event>>,
    capacity: usize,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog::with_capacity(CAPACITY, LIVE_BACKLOG)
    }
}

impl EventLog {
    pub fn with_capacity(capacity: usize, live_backlog: usize) -> EventLog {
        let (live, _) = broadcast::channel(live_backlog.max(1));
        EventLog {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(capacity.min(1024)),
                next_seq: 1,
            }),
            live,
            capacity: capacity.max(1),
        }
    }

    /// Stamps `e` (sequence number, time) and hands it to the ring and live readers.
    pub fn emit(&self, mut e: Event) -> u64 {
        let mut r = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        e.seq = r.next_seq;
        r.next_seq += 1;
        e.time_nano = time::now_nano();
        let seq = e.seq;
        let e = Arc::new(e);
        if r.events.len() == self.capacity {
            r.events.pop_front();
        }
        r.events.push_back(e.clone());
        // Under the ring's lock, so live order is seq order; `send` never waits (an
        // error only means nobody listens).
        let _ = self.live.send(e);
        seq
    }

    /// The kept events `f` wants, oldest first, and a receiver for those after them.
    pub fn subscribe(&self, f: &Filter) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let r = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.live.subscribe();
        let past = match f.since {
            Some(_) => r
                .events
                .iter()
                .filter(|e| f.matches(e) && f.in_time(e))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        (past, rx)
    }

    /// The kept events, oldest first (tests, `netd up`).
    pub fn snapshot(&self) -> Vec<Arc<Event>> {
        let r = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        r.events.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: Kind, action: &str, name: &str) -> Event {
        Event::new(kind, action, name)
    }

    #[test]
    fn ring_keeps_the_newest_in_order() {
        let log = EventLog::with_capacity(3, 16);
        for i in 0..5 {
            log.emit(ev(Kind::Network, "create", &format!("n{i}")));
        }
        let names: Vec<String> = log.snapshot().iter().map(|e| e.name.clone()).collect();
        assert_eq!(names, ["n2", "n3", "n4"]);
        let seqs: Vec<u64> = log.snapshot().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
    }

    #[test]
    fn replay_then_live_without_gap_or_duplicate() {
        let log = EventLog::with_capacity(100, 16);
        log.emit(ev(Kind::Network, "create", "a"));
        let f = Filter {
            since: Some(0),
            ..Filter::default()
        };
        let (past, mut rx) = log.subscribe(&f);
        log.emit(ev(Kind::Network, "rm", "a"));
        assert_eq!(past.len(), 1);
        let next = rx.try_recv().expect("live event");
        assert_eq!((next.seq, next.action.as_str()), (2, "rm"));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_reader_that_never_reads_lags_and_never_blocks() {
        let log = EventLog::with_capacity(10, 4);
        let (_, mut rx) = log.subscribe(&Filter::default());
        for i in 0..100 {
            log.emit(ev(Kind::Sandbox, "create", &format!("s{i}")));
        }
        match rx.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 96),
            other => panic!("expected lag, got {other:?}"),
        }
    }

    #[test]
    fn filters_or_within_a_key_and_within_time() {
        let now = 1_000_000_000_000;
        let f = Filter::parse(
            Some("10s"),
            None,
            &["type=network".into(), "type=service".into(), "name=web".into()],
            now,
        )
        .unwrap();
        assert_eq!(f.since, Some(now - 10_000_000_000));
        let mut e = ev(Kind::Service, "create", "web");
        assert!(f.matches(&e));
        e.time_nano = now - 20_000_000_000;
        assert!(!f.in_time(&e));
        assert!(!f.matches(&ev(Kind::Sandbox, "create", "web")));
        assert!(!f.matches(&ev(Kind::Network, "create", "db")));
        assert!(matches!(
            Filter::parse(None, None, &["colour=red".into()], now),
            Err(FilterError::Filter(_))
        ));
        assert!(matches!(
            Filter::parse(None, None, &["type=bogus".into()], now),
            Err(FilterError::Filter(_))
        ));
        assert_eq!(
            Filter::parse(Some("1s"), Some("10s"), &[], now),
            Err(FilterError::Order)
        );
    }

    #[test]
    fn line_reads_like_docker_events() {
        let mut e = ev(Kind::Network, "create", "frontend").attr("subnet", "10.0.0.0/24");
        e.time_nano = 1_764_732_799_000_000_005;
        assert_eq!(
            e.line(),
            "2025-12-03T03:33:19.000000005Z network create frontend (subnet=10.0.0.0/24)"
        );
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["type"], "network");
        let back: Event = serde_json::from_value(j).unwrap();
        assert_eq!(back, e);
    }
}
