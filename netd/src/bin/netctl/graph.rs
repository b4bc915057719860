//! `netctl graph`: the daemon's networks, sandboxes and services as a picture (SVG by
//! Graphviz, or the DOT text), to standard output or `-o FILE`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use netd::api::client::Client;
use netd::graph::{self, Format, Topology};

#[derive(Args)]
pub struct GraphArgs {
    /// svg (drawn by Graphviz's `dot`) or dot.
    #[arg(long, default_value = "svg", value_name = "svg|dot")]
    format: String,
    /// Write here instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Only the objects of this `netd up` stack.
    #[arg(short = 'p', long = "stack", value_name = "NAME")]
    stack: Option<String>,
}

pub fn run(c: &Client, a: &GraphArgs) -> anyhow::Result<()> {
    let format: Format = a.format.parse()?;
    let mut t = Topology::fetch(c, &graph::hostname())?;
    if let Some(s) = &a.stack {
        t = t.only_stack(s);
    }
    let bytes = graph::render(&graph::dot(&t), format)?;
    match &a.output {
        Some(p) => std::fs::write(p, &bytes).with_context(|| format!("write {}", p.display()))?,
        None => std::io::stdout().write_all(&bytes)?,
    }
    Ok(())
}
