//! DNS over TCP limits, from inside a real sandbox: a sandbox holds at most
//! `MAX_TCP_CONNS` connections to 127.0.0.11:53; one more is closed at once (not left
//! hanging), the open ones keep answering, and a slot freed by a close is usable again.
//! Removing a sandbox closes its open connections at once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use integration::harness::Host;
use integration::skip::no_root;
use netd::dns::listener::MAX_TCP_CONNS;

/// A TCP-framed query for `name` A with id `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut framed = (m.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&m);
    framed
}

/// Sends a query on `s` and returns (id, rcode, answer count), or the I/O error.
fn ask(s: &mut TcpStream, id: u16, name: &str) -> std::io::Result<(u16, u8, u16)> {
    s.write_all(&query(id, name))?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut msg)?;
    if msg.len() < 12 {
        return Err(std::io::Error::other("short answer"));
    }
    Ok((
        u16::from_be_bytes([msg[0], msg[1]]),
        msg[3] & 0x0f,
        u16::from_be_bytes([msg[6], msg[7]]),
    ))
}

fn connect_in(h: &Host, sandbox: &str) -> TcpStream {
    let s = netd::kernel::netns::run_in(&h.sb(sandbox), || TcpStream::connect("127.0.0.11:53"))
        .expect("enter sandbox")
        .expect("connect 127.0.0.11:53");
    s.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    s
}

#[test]
fn ndds_tcp_connections_per_sandbox_are_capped() {
    if no_root() {
        return;
    }
    let h = Host::new();
    h.ctl(&["network", "create", "t", "--subnet", "10.68.0.0/24"]);
    h.ctl(&["sandbox", "create", "a", "--network", "t"]);
    h.ctl(&["sandbox", "create", "b", "--network", "t"]);

    let mut open: Vec<TcpStream> = Vec::new();
    for i in 0..MAX_TCP_CONNS {
        let mut s = connect_in(&h, "a");
        assert_eq!(ask(&mut s, i as u16, "b").expect("answer"), (i as u16, 0, 1));
        open.push(s);
    }
    // One more: accepted by the kernel, then closed by netd without an answer.
    let mut extra = connect_in(&h, "a");
    let t0 = Instant::now();
    assert!(
        ask(&mut extra, 999, "b").is_err(),
        "connection over the cap was served"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "closed at once, not after a timeout"
    );
    // The open ones still answer, twice each (the idle close is 10 s).
    for (i, s) in open.iter_mut().enumerate() {
        assert_eq!(ask(s, 100 + i as u16, "b").expect("answer").1, 0);
    }
    // Another sandbox has its own allowance.
    let mut other = connect_in(&h, "b");
    assert_eq!(ask(&mut other, 7, "a").expect("b's own slot").2, 1);

    // A freed slot is usable again once netd sees the close.
    drop(open.pop());
    let t0 = Instant::now();
    loop {
        let mut s = connect_in(&h, "a");
        if let Ok(r) = ask(&mut s, 500, "b") {
            assert_eq!(r, (500, 0, 1));
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "slot not freed after a close"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
