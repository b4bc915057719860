//! Forwarding names netd does not own to upstream servers, from the daemon's own ("host")
//! namespace: each upstream in turn, `attempts` rounds, `timeout` per try, then SERVFAIL
//! (the caller's), never a hang. Answers are cached for their smallest TTL (negative
//! answers for the SOA minimum, at most 5 minutes), keyed by name, type and class.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::server::Transport;

const CACHE_MAX: usize = 10_000;
const NEG_TTL_MAX: u32 = 300;

/// The host's upstream servers from a resolv.conf text, loopback ones left out (a stub
/// such as systemd-resolved's 127.0.0.53 is not reachable the same way for everyone,
/// and 127.0.0.11 would be ourselves).
/// The daemon forwards from the host's namespace, so a zone (`fe80::1%eth0`) is fine.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    super::resolv::lines(text)
        .filter_map(|l| match l {
            super::resolv::Line::Nameserver { ip, .. } if !ip.is_loopback() => Some(SocketAddr::new(ip, 53)),
            _ => None,
        })
        .collect()
}

type Key = (String, u16, u16);

struct Cached {
    msg: Message,
    stored: Instant,
    ttl: u32,
}

pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    attempts: u32,
    cache: Mutex<HashMap<Key, Cached>>,
}

fn min_ttl(m: &Message) -> Option<u32> {
    if m.metadata.response_code == ResponseCode::NXDomain || m.answers.is_empty() {
        return m
            .authorities
            .iter()
            .find_map(|r| match &r.data {
                RData::SOA(s) => Some(s.minimum.min(r.ttl)),
                _ => None,
            })
            .map(|t| t.min(NEG_TTL_MAX));
    }
    m.answers.iter().map(|r| r.ttl).min()
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration, attempts: u32) -> Forwarder {
        Forwarder {
            upstreams,
            timeout,
            attempts: attempts.max(1),
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    fn key(q: &Message) -> Option<Key> {
        let q = q.queries.first()?;
        Some((
            q.name().to_ascii().to_ascii_lowercase(),
            u16::from(q.query_type()),
            u16::from(q.query_class()),
        ))
    }

    fn cached(&self, key: &Key) -> Option<Message> {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let e = c.get(key)?;
        let age = e.stored.elapsed().as_secs() as u32;
        if age >= e.ttl {
            c.remove(key);
            return None;
        }
        let mut m = e.msg.clone();
        for r in m.answers.iter_mut().chain(m.authorities.iter_mut()) {
            r.ttl = r.ttl.saturating_sub(age);
        }
        Some(m)
    }

    fn store(&self, key: Key, msg: &Message) {
        let rc = msg.metadata.response_code;
        if (rc != ResponseCode::NoError && rc != ResponseCode::NXDomain) || msg.metadata.truncation {
            return;
        }
        let Some(ttl) = min_ttl(msg).filter(|t| *t > 0) else {
            return;
        };
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() >= CACHE_MAX {
            c.clear();
        }
        c.insert(
            key,
            Cached {
                msg: msg.clone(),
                stored: Instant::now(),
                ttl,
            },
        );
    }

    /// Resolves `name`/`qtype` upstream on behalf of `client` (whose flags and EDNS are
    /// kept). `None` means every upstream failed or timed out: answer SERVFAIL.
    pub async fn resolve(
        &self,
        client: &Message,
        name: &hickory_proto::rr::Name,
        qtype: RecordType,
        t: Transport,
    ) -> Option<Message> {
        let mut q = client.clone();
        q.metadata.id = rand::random();
        q.metadata.recursion_desired = true;
        q.answers.clear();
        q.authorities.clear();
        q.additionals.clear();
        q.signature = None;
        if let Some(first) = q.queries.first_mut() {
            first.set_name(name.clone());
            first.set_query_type(qtype);
        }
        let key = Self::key(&q)?;
        if let Some(m) = self.cached(&key) {
            return Some(m);
        }
        let bytes = q.to_vec().ok()?;
        for _ in 0..self.attempts {
            for up in &self.upstreams {
                let r = tokio::time::timeout(self.timeout, exchange(*up, &bytes, t)).await;
                let Ok(Ok(resp)) = r else { continue };
                let Ok(m) = Message::from_vec(&resp) else { continue };
                if m.metadata.id != q.metadata.id || m.queries != q.queries {
                    continue;
                }
                if m.metadata.response_code == ResponseCode::ServFail
                    || m.metadata.response_code == ResponseCode::Refused
                {
                    continue;
                }
                self.store(key, &m);
                return Some(m);
            }
        }
        None
    }
}

async fn exchange(up: SocketAddr, bytes: &[u8], t: Transport) -> std::io::Result<Vec<u8>> {
    match t {
        Transport::Udp => {
            let local: SocketAddr = if up.is_ipv4() {
                "0.0.0.0:0".parse().expect("literal")
            } else {
                "[::]:0".parse().expect("literal")
            };
            let s = UdpSocket::bind(local).await?;
            s.connect(up).await?;
            s.send(bytes).await?;
            let mut buf = vec![0u8; 65535];
            // A connected socket only takes datagrams from `up`; the id check is the caller's.
            let n = s.recv(&mut buf).await?;
            buf.truncate(n);
            Ok(buf)
        }
        Transport::Tcp => {
            let mut s = TcpStream::connect(up).await?;
            let len = u16::try_from(bytes.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
            let mut out = len.to_be_bytes().to_vec();
            out.extend_from_slice(bytes);
            s.write_all(&out).await?;
            let n = s.read_u16().await?;
            let mut buf = vec![0u8; usize::from(n)];
            s.read_exact(&mut buf).await?;
            Ok(buf)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_upstreams_skip_loopback() {
        let t = "search x\nnameserver 127.0.0.53\nnameserver 10.1.1.1\nnameserver ::1\nnameserver fe80::1%eth0\n# nameserver 9.9.9.9\nnameserver bogus\n";
        let v = upstreams_from_resolv_conf(t);
        assert_eq!(
            v,
            vec!["10.1.1.1:53".parse().unwrap(), "[fe80::1]:53".parse().unwrap()]
        );
    }
}
