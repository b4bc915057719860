//! Per-sandbox serving loops: one UDP task and one TCP accept task on the sockets opened
//! in the sandbox's namespace. Local answers are computed inline (microseconds); a
//! forwarded query gets a task of its own so a slow upstream never holds up local names.
//! UDP is read and answered in batches (`kernel::udp_batch`): queries that queued while
//! the thread was off the CPU drain with two system calls per 32 instead of two each.

use std::cell::RefCell;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::server::{forwarded_reply, handle, Forward, Outcome, Transport};
use super::Shared;
use crate::kernel::udp_batch::{self, Batch};

/// A TCP client gets this long between messages before we close the connection.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// TCP connections one sandbox may hold open at once. A resolver opens one per truncated
/// answer and closes it after; a program that opens and holds hundreds would otherwise
/// hold as many descriptors of netd's. One over the cap is closed at once (the client
/// sees EOF and retries) rather than left waiting in the listen backlog.
pub const MAX_TCP_CONNS: usize = 16;

/// The tasks serving one sandbox; dropping it stops them (and closes the sockets, which
/// is what lets the sandbox's namespace go away).
pub struct SandboxListener {
    pub ino: u64,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for SandboxListener {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl SandboxListener {
    /// Starts serving `sandbox` on already-bound sockets (must run inside the runtime).
    pub fn start(
        shared: Arc<Shared>,
        sandbox: &str,
        ino: u64,
        udp: AsyncFd<std::net::UdpSocket>,
        tcp: TcpListener,
    ) -> Self {
        let name: Arc<str> = Arc::from(sandbox);
        let udp = Arc::new(udp);
        let tasks = vec![
            tokio::spawn(udp_loop(shared.clone(), name.clone(), udp)),
            tokio::spawn(tcp_loop(shared, name, tcp)),
        ];
        SandboxListener { ino, tasks }
    }
}

async fn forward(shared: &Shared, sandbox: &str, f: &Forward, t: Transport) -> Option<Vec<u8>> {
    let t0 = Instant::now();
    let Ok(_permit) = shared.inflight.clone().try_acquire_owned() else {
        shared.observe_forward(sandbox, f, false, t0);
        return forwarded_reply(f, None, t);
    };
    let up = shared.forwarder.resolve(&f.request, &f.name, f.qtype, t).await;
    shared.observe_forward(sandbox, f, up.is_some(), t0);
    forwarded_reply(f, up.as_ref(), t)
}

thread_local! {
    /// One set of receive slots per serving thread (the DNS runtime has one), shared by
    /// every sandbox's loop: a batch is read, answered and sent without an await between.
    static SLOTS: RefCell<Batch> = RefCell::new(Batch::default());
}

/// Batches one loop serves before letting the other sandboxes' loops run.
const ROUNDS: usize = 4;

async fn udp_loop(shared: Arc<Shared>, sandbox: Arc<str>, sock: Arc<AsyncFd<std::net::UdpSocket>>) {
    let fd = sock.as_raw_fd();
    let mut replies: Vec<(Vec<u8>, libc::sockaddr_storage)> = Vec::with_capacity(udp_batch::BATCH);
    loop {
        let Ok(mut ready) = sock.readable().await else {
            return;
        };
        let mut more = false;
        for _ in 0..ROUNDS {
            let got = SLOTS.with_borrow_mut(|b| {
                let n = b.recv(fd)?;
                let table = shared.table();
                for i in 0..n {
                    let Some((req, peer)) = b.get(i) else { continue };
                    let t0 = Instant::now();
                    match handle(&table, &sandbox, shared.settings.ttl, req, Transport::Udp) {
                        Outcome::Reply(r) => {
                            shared.observe_answer(&r, t0);
                            replies.push((r, b.peer(i)))
                        }
                        Outcome::Drop => {}
                        Outcome::Forward(f) => {
                            let (shared, sock, sb) = (shared.clone(), sock.clone(), sandbox.clone());
                            tokio::spawn(async move {
                                if let Some(r) = forward(&shared, &sb, &f, Transport::Udp).await {
                                    let _ = sock.async_io(Interest::WRITABLE, |s| s.send_to(&r, peer)).await;
                                }
                            });
                        }
                    }
                }
                Ok::<usize, std::io::Error>(n)
            });
            if !replies.is_empty() {
                if let Err(e) = udp_batch::send(fd, &replies) {
                    tracing::debug!(sandbox = %sandbox, error = %e, "dns udp send");
                }
                replies.clear();
            }
            more = matches!(got, Ok(n) if n == udp_batch::BATCH);
            match got {
                Ok(_) if more => continue,
                // A short batch took everything queued: no need for one more call that
                // says EAGAIN. Tokio clears readiness only if no new event came in since
                // this guard was made, so a datagram that arrived meanwhile is not missed.
                Ok(_) => ready.clear_ready(),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => ready.clear_ready(),
                Err(e) => tracing::debug!(sandbox = %sandbox, error = %e, "dns udp recv"),
            }
            break;
        }
        drop(ready);
        if more {
            tokio::task::yield_now().await;
        }
    }
}

async fn tcp_loop(shared: Arc<Shared>, sandbox: Arc<str>, l: TcpListener) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CONNS));
    // The connections belong to this task: when the sandbox goes (the task is aborted),
    // they are closed with it instead of holding its namespace until their idle close.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let s = match l.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors, say: do not spin on a listener that stays readable.
                tracing::debug!(sandbox = %sandbox, error = %e, "dns tcp accept");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(sandbox = %sandbox, "dns tcp: {MAX_TCP_CONNS} connections open, closing a new one");
            drop(s);
            continue;
        };
        let (shared, sb) = (shared.clone(), sandbox.clone());
        conns.spawn(async move {
            tcp_conn(shared, sb, s).await;
            drop(permit);
        });
        while conns.try_join_next().is_some() {}
    }
}

async fn tcp_conn(shared: Arc<Shared>, sandbox: Arc<str>, mut s: TcpStream) {
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, s.read_u16()).await else {
            return;
        };
        let mut msg = vec![0u8; usize::from(len)];
        if !matches!(
            tokio::time::timeout(TCP_IDLE, s.read_exact(&mut msg)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let t0 = Instant::now();
        let out = {
            let table = shared.table();
            handle(&table, &sandbox, shared.settings.ttl, &msg, Transport::Tcp)
        };
        let reply = match out {
            Outcome::Reply(b) => {
                shared.observe_answer(&b, t0);
                b
            }
            Outcome::Drop => return,
            Outcome::Forward(f) => match forward(&shared, &sandbox, &f, Transport::Tcp).await {
                Some(b) => b,
                None => return,
            },
        };
        let Ok(n) = u16::try_from(reply.len()) else { return };
        let mut framed = n.to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        if s.write_all(&framed).await.is_err() {
            return;
        }
    }
}
