//! `netctl events`: the daemon's events, one line each like `docker events`, or as the
//! API's JSON lines (`--json`). Kept events from `--since` first, then live ones until
//! `--until` (or Ctrl-C).

use std::io::Write;

use anyhow::Context;
use clap::Args;
use netd::api::client::Client;
use netd::observe::{time, Event, Filter};

#[derive(Args)]
pub struct EventsArgs {
    /// Show events from this point: a duration back (10m, 2h), unix seconds or RFC 3339.
    #[arg(long, value_name = "DURATION|TIME")]
    since: Option<String>,
    /// Stop at this point (same forms; a past one ends after the kept events).
    #[arg(long, value_name = "DURATION|TIME")]
    until: Option<String>,
    /// type=network|sandbox|service|node|repair|dns or name=NAME (repeatable; one key's
    /// values are ORed, different keys ANDed).
    #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE")]
    filters: Vec<String>,
    /// Print each event as JSON.
    #[arg(long)]
    json: bool,
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn point(t: u64) -> String {
    format!("{}.{:09}", t / 1_000_000_000, t % 1_000_000_000)
}

/// The API path for `a`, its times made absolute here (so "10m" means ten minutes
/// before this command, whatever the daemon's clock says).
fn path(a: &EventsArgs) -> anyhow::Result<String> {
    let f = Filter::parse(
        a.since.as_deref(),
        a.until.as_deref(),
        &a.filters,
        time::now_nano(),
    )?;
    let mut q = Vec::new();
    if let Some(s) = f.since {
        q.push(format!("since={}", point(s)));
    }
    if let Some(u) = f.until {
        q.push(format!("until={}", point(u)));
    }
    q.extend(a.filters.iter().map(|x| format!("filter={}", enc(x))));
    Ok(format!("/v1/events?{}", q.join("&")))
}

pub fn run(c: &Client, a: &EventsArgs) -> anyhow::Result<()> {
    let path = path(a)?;
    let mut out = std::io::stdout().lock();
    let mut bad = None;
    c.stream_lines(&path, |l| {
        let text = if a.json {
            l.to_string()
        } else {
            match serde_json::from_str::<Event>(l) {
                Ok(e) => e.line(),
                Err(e) => {
                    bad = Some(format!("bad event from netd: {e}"));
                    return false;
                }
            }
        };
        // A closed pipe (`netctl events | head`) ends the command quietly.
        writeln!(out, "{text}").and_then(|_| out.flush()).is_ok()
    })
    .context("events")?;
    match bad {
        Some(b) => anyhow::bail!(b),
        None => Ok(()),
    }
}
