//! DOT to SVG by Graphviz's `dot` (Debian's `graphviz`, in scripts/install-deps.sh):
//! its layout of labelled, clustered graphs is what people expect of such a picture,
//! and no pure-Rust layout crate draws edge labels as well.

use std::io::Write;
use std::process::{Command, Stdio};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Svg,
    Dot,
}

impl std::str::FromStr for Format {
    type Err = GraphError;
    fn from_str(s: &str) -> Result<Format, GraphError> {
        match s {
            "svg" => Ok(Format::Svg),
            "dot" => Ok(Format::Dot),
            _ => Err(GraphError::Format(s.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("unknown graph format {0:?}: expected svg or dot")]
    Format(String),
    #[error("reading the topology: {0}")]
    Api(String),
    #[error("run Graphviz `dot` (install the graphviz package, or use --format dot): {0}")]
    Spawn(std::io::Error),
    #[error("write {0}: {1}")]
    Write(String, std::io::Error),
    #[error("Graphviz `dot` failed: {0}")]
    Dot(String),
}

/// `text` (DOT) in `format`: itself, or the SVG `dot -Tsvg` draws of it.
pub fn render(text: &str, format: Format) -> Result<Vec<u8>, GraphError> {
    if format == Format::Dot {
        return Ok(text.as_bytes().to_vec());
    }
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(GraphError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).map_err(GraphError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(GraphError::Spawn)?;
    if !out.status.success() {
        return Err(GraphError::Dot(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(out.stdout)
}
