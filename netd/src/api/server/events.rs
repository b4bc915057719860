//! `GET /v1/events?since=&until=&filter=type=network&filter=name=web`: the event log as
//! a long-lived newline-delimited JSON response (`netctl events`). Kept events from
//! `since` first, then live ones until `until` (or forever). A reader that falls
//! `observe::events::LIVE_BACKLOG` events behind gets a final `lagged` event and its
//! response ends: the daemon never waits for a reader (`observe::events`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::{error::RecvError, Receiver};

use super::ApiError;
use crate::api::types::ErrorReason;
use crate::observe::{time, Event, Filter, Observer};

/// `k=v` pairs of a query string, percent-decoded (`filter` repeats, which
/// `serde_urlencoded` cannot take into a struct).
pub fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'+', ..) => out.push(b' '),
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 2;
            }
            (c, ..) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query's filter, or the one-line 400 a bad one gets.
pub fn filter_of(uri: &Uri, now: u64) -> Result<Filter, ApiError> {
    let pairs = query_pairs(uri.query().unwrap_or(""));
    let get = |k: &str| pairs.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
    let filters: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "filter")
        .map(|(_, v)| v.clone())
        .collect();
    if let Some((k, _)) = pairs
        .iter()
        .find(|(k, _)| !matches!(k.as_str(), "since" | "until" | "filter"))
    {
        return Err(bad(format!(
            "unknown query parameter {k:?} (since, until, filter)"
        )));
    }
    Filter::parse(get("since"), get("until"), &filters, now).map_err(|e| bad(e.to_string()))
}

fn bad(msg: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorReason::BadBody, msg)
}

fn line(e: &Event) -> Bytes {
    let mut v = serde_json::to_vec(e).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

struct Reader {
    past: std::vec::IntoIter<Arc<Event>>,
    live: Receiver<Arc<Event>>,
    filter: Filter,
    last_seq: u64,
    done: bool,
}

/// The next line for this reader; `None` ends the response.
async fn next(mut r: Reader) -> Option<(Result<Bytes, Infallible>, Reader)> {
    if r.done {
        return None;
    }
    if let Some(e) = r.past.next() {
        r.last_seq = e.seq;
        return Some((Ok(line(&e)), r));
    }
    loop {
        let got = match r.filter.until {
            Some(u) => {
                let now = time::now_nano();
                if now >= u {
                    return None;
                }
                tokio::time::timeout(Duration::from_nanos(u - now), r.live.recv())
                    .await
                    .ok()?
            }
            None => r.live.recv().await,
        };
        match got {
            Ok(e) if e.seq > r.last_seq && r.filter.matches(&e) && r.filter.in_time(&e) => {
                r.last_seq = e.seq;
                return Some((Ok(line(&e)), r));
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => {
                r.done = true;
                let mut e = Event::lagged(n);
                e.time_nano = time::now_nano();
                return Some((Ok(line(&e)), r));
            }
            Err(RecvError::Closed) => return None,
        }
    }
}

pub async fn handler(obs: Option<Arc<Observer>>, uri: Uri) -> Response {
    let Some(obs) = obs else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorReason::NoSuchRoute,
            "this netd keeps no events",
        )
        .into_response();
    };
    let filter = match filter_of(&uri, time::now_nano()) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let (past, live) = obs.events.subscribe(&filter);
    let reader = Reader {
        past: past.into_iter(),
        live,
        filter,
        last_seq: 0,
        done: false,
    };
    let body = Body::from_stream(futures_util::stream::unfold(reader, next));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_with_repeated_filters() {
        let p = query_pairs("since=10m&filter=type%3Dnetwork&filter=name=a+b&until=");
        assert_eq!(p[1], ("filter".into(), "type=network".into()));
        assert_eq!(p[2], ("filter".into(), "name=a b".into()));
        let uri: Uri = "/v1/events?since=10m&filter=type%3Dnetwork".parse().unwrap();
        let f = filter_of(&uri, 3_600_000_000_000).unwrap();
        assert_eq!(f.since, Some(3_000_000_000_000));
        assert_eq!(f.kinds, [crate::observe::Kind::Network]);
        let uri: Uri = "/v1/events?colour=red".parse().unwrap();
        assert!(filter_of(&uri, 0).is_err());
        assert_eq!(decode("%zz%4"), "%zz%4");
    }
}
