//! `netd responder`: answers every TCP connection and UDP datagram on the given ports
//! with its name, so a stack shows reachability without container images.

use std::path::Path;

use anyhow::Context;

use crate::kernel::probe::{answer, bind_responder};

pub fn run(name: &str, netns: Option<&Path>, tcp: &[u16], udp: &[u16]) -> anyhow::Result<()> {
    anyhow::ensure!(
        !tcp.is_empty() || !udp.is_empty(),
        "responder needs at least one --tcp or --udp port"
    );
    let (tl, ul) = bind_responder(netns, tcp.to_vec(), udp.to_vec()).context("bind responder ports")?;
    let msg = format!("{name}\n");
    let mut threads = Vec::new();
    for l in tl {
        let m = msg.clone();
        threads.push(std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                answer(s, &m);
            }
        }));
    }
    for u in ul {
        let m = msg.clone();
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((_, peer)) = u.recv_from(&mut buf) {
                let _ = u.send_to(m.as_bytes(), peer);
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}
