//! A small blocking client for the local API (netctl, `netd up`, tests). One request per
//! connection: the CLI makes one or two calls, so keep-alive would buy nothing.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::types::{ErrorBody, ErrorReason};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach netd at {socket}: {source} (is `netd daemon` running? set --socket or NETD_SOCKET)"
    )]
    Connect {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to netd: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad answer from netd: {0}")]
    Protocol(String),
    /// The daemon answered with an error status; `message` is its explanation for
    /// people, `reason` what to act on (`None` from a netd before reasons).
    #[error("{message}")]
    Api {
        status: u16,
        message: String,
        reason: Option<ErrorReason>,
    },
}

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    pub fn new(socket: impl AsRef<Path>) -> Client {
        Client {
            socket: socket.as_ref().to_path_buf(),
            timeout: Duration::from_secs(120),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request; returns (status, JSON body or Null).
    pub fn raw(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<(u16, Value), ClientError> {
        let mut s = UnixStream::connect(&self.socket).map_err(|source| ClientError::Connect {
            socket: self.socket.display().to_string(),
            source,
        })?;
        s.set_read_timeout(Some(self.timeout))?;
        let body = body.unwrap_or(b"");
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: netd\r\nConnection: close\r\n");
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        // The server may answer and close before taking a whole oversized body (413); a
        // failed write is then not the error to report: read its answer first.
        let sent = s.write_all(req.as_bytes()).and_then(|_| s.write_all(body));
        let mut buf = Vec::new();
        let read = s.read_to_end(&mut buf);
        if buf.is_empty() {
            sent?;
            read?;
        }
        parse_response(&buf)
    }

    /// A request whose error statuses become `ClientError::Api`.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        let (status, v) = self.raw(method, path, bytes.as_deref())?;
        if status >= 400 {
            let (message, reason) = match serde_json::from_value::<ErrorBody>(v) {
                Ok(b) => (b.message, b.reason),
                Err(_) => (format!("netd answered HTTP {status}"), None),
            };
            return Err(ClientError::Api {
                status,
                message,
                reason,
            });
        }
        Ok(v)
    }

    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call("GET", path, None)
    }
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.call("POST", path, Some(body))
    }
    pub fn patch(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.call("PATCH", path, Some(body))
    }
    pub fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.call("DELETE", path, None)
    }
}

impl Client {
    /// `GET path` of a newline-delimited JSON stream (`/v1/events`): calls `each` with
    /// every line as it arrives, until the daemon ends the response or `each` answers
    /// false. An error status is `ClientError::Api`, as for `call`.
    pub fn stream_lines(&self, path: &str, mut each: impl FnMut(&str) -> bool) -> Result<(), ClientError> {
        use std::io::BufRead;
        let mut s = UnixStream::connect(&self.socket).map_err(|source| ClientError::Connect {
            socket: self.socket.display().to_string(),
            source,
        })?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: netd\r\nConnection: close\r\n\r\n").as_bytes())?;
        let mut r = std::io::BufReader::new(s);
        let mut head = String::new();
        let mut status_line = String::new();
        r.read_line(&mut status_line)?;
        let mut chunked = false;
        loop {
            head.clear();
            if r.read_line(&mut head)? == 0 || head == "\r\n" {
                break;
            }
            let l = head.to_ascii_lowercase();
            chunked |= l.starts_with("transfer-encoding:") && l.contains("chunked");
        }
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| ClientError::Protocol("bad status line".into()))?;
        let mut body = Vec::new();
        let mut pending = Vec::new();
        let read_chunk =
            |r: &mut std::io::BufReader<UnixStream>, out: &mut Vec<u8>| -> Result<bool, ClientError> {
                if !chunked {
                    let n = r.read_until(b'\n', out)?;
                    return Ok(n > 0);
                }
                let mut size = String::new();
                r.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| ClientError::Protocol("bad chunk size".into()))?;
                if n == 0 {
                    return Ok(false);
                }
                let mut buf = vec![0u8; n + 2];
                r.read_exact(&mut buf)?;
                out.extend_from_slice(&buf[..n]);
                Ok(true)
            };
        if status >= 400 {
            while read_chunk(&mut r, &mut body)? {}
            let (message, reason) = match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(b) => (b.message, b.reason),
                Err(_) => (format!("netd answered HTTP {status}"), None),
            };
            return Err(ClientError::Api {
                status,
                message,
                reason,
            });
        }
        while read_chunk(&mut r, &mut pending)? {
            while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                let line = String::from_utf8_lossy(&line);
                if !line.trim().is_empty() && !each(line.trim_end()) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

fn parse_response(buf: &[u8]) -> Result<(u16, Value), ClientError> {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| ClientError::Protocol("no end of headers".into()))?;
    let head = String::from_utf8_lossy(&buf[..split]);
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| ClientError::Protocol("bad status line".into()))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let mut body = buf[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body)?;
    }
    if body.is_empty() {
        return Ok((status, Value::Null));
    }
    let v =
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(format!("body is not JSON: {e}")))?;
    Ok((status, v))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| ClientError::Protocol("bad chunk".into()))?;
        let size_str = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| ClientError::Protocol("bad chunk size".into()))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err(ClientError::Protocol("short chunk".into()));
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked() {
        let (s, v) = parse_response(b"HTTP/1.1 201 Created\r\ncontent-length: 8\r\n\r\n{\"a\":1}\n").unwrap();
        assert_eq!((s, v["a"].as_i64()), (201, Some(1)));
        let (s, v) = parse_response(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"b\r\n4\r\n\":2}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, v["b"].as_i64()), (200, Some(2)));
        let (s, v) = parse_response(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!((s, v), (204, Value::Null));
        assert!(parse_response(b"garbage").is_err());
    }
}
