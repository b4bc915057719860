//! resolv.conf, read and written. Read: the host's, by one parser (`lines`) for both its
//! readers, the forwarder (its upstreams) and a sandbox's copy without the embedded
//! server (`copy_for_sandbox`). Written: what every sandbox gets with the embedded
//! server: netd's server only, `ndots:0` (as Docker: a dotted name is tried as-is first),
//! and for sandboxes in a Kubernetes-style namespace the search domains
//! `<ns>.svc.<domain> svc.<domain> <domain>`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::records::search_domains;

pub fn sandbox_resolv_conf(labels: &BTreeMap<String, String>, cluster_domain: &str) -> String {
    let mut out = String::from(
        "# written by netd: its embedded DNS server answers in this sandbox\nnameserver 127.0.0.11\n",
    );
    let search = search_domains(labels, cluster_domain);
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    out.push_str("options ndots:0\n");
    out
}

/// A line of a resolv.conf that netd uses, keyword first as the C library reads it (the
/// keyword, then blanks). Other lines (comments, `domain`, `sortlist`) are left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// `nameserver ADDR[%zone]` with an address that parses; `text` is the line.
    Nameserver {
        ip: IpAddr,
        zone: Option<&'a str>,
        text: &'a str,
    },
    Search(&'a str),
    Options(&'a str),
}

/// The lines of `text` netd uses, in order; a nameserver that is not an address is
/// left out (the C library skips it too).
pub fn lines(text: &str) -> impl Iterator<Item = Line<'_>> {
    text.lines().filter_map(|l| {
        let t = l.trim();
        let (key, rest) = t.split_once([' ', '\t'])?;
        match key {
            "nameserver" => {
                let addr = rest.split_whitespace().next()?;
                let (ip, zone) = match addr.split_once('%') {
                    Some((ip, zone)) => (ip, Some(zone)),
                    None => (addr, None),
                };
                Some(Line::Nameserver {
                    ip: ip.parse().ok()?,
                    zone,
                    text: t,
                })
            }
            "search" => Some(Line::Search(t)),
            "options" => Some(Line::Options(t)),
            _ => None,
        }
    })
}

/// A sandbox's resolv.conf without the embedded server: the host's servers, search and
/// options, as Docker does, minus the servers a sandbox cannot reach: loopback ones (the
/// sandbox's own loopback) and link-local ones with a zone (it names a host link).
pub fn copy_for_sandbox(host: &str) -> String {
    let mut out = String::from("# written by netd\n");
    let mut servers = 0;
    for l in lines(host) {
        let text = match l {
            Line::Nameserver { ip, zone, text } => {
                if ip.is_loopback() || zone.is_some() {
                    continue;
                }
                servers += 1;
                text
            }
            Line::Search(text) | Line::Options(text) => text,
        };
        out.push_str(text);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("# the host has no usable nameserver for sandboxes\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "# comment\nsearch example.com\nnameserver 127.0.0.53\nnameserver 10.1.1.1\n\
        nameserver ::1\nnameserver fe80::1%eth0\n# nameserver 9.9.9.9\nnameserver bogus\n\
        nameservers 10.9.9.9\ndomain example.com\n  options ndots:2 \nnameserver\t10.2.2.2\n";

    #[test]
    fn one_parser_for_the_host_file() {
        let v: Vec<Line> = lines(HOST).collect();
        let ns = |ip: &str, zone, text| Line::Nameserver {
            ip: ip.parse().unwrap(),
            zone,
            text,
        };
        assert_eq!(
            v,
            vec![
                Line::Search("search example.com"),
                ns("127.0.0.53", None, "nameserver 127.0.0.53"),
                ns("10.1.1.1", None, "nameserver 10.1.1.1"),
                ns("::1", None, "nameserver ::1"),
                ns("fe80::1", Some("eth0"), "nameserver fe80::1%eth0"),
                Line::Options("options ndots:2"),
                ns("10.2.2.2", None, "nameserver\t10.2.2.2"),
            ]
        );
    }

    #[test]
    fn a_sandbox_copy_keeps_what_it_can_reach() {
        assert_eq!(
            copy_for_sandbox(HOST),
            "# written by netd\nsearch example.com\nnameserver 10.1.1.1\noptions ndots:2\nnameserver\t10.2.2.2\n"
        );
        assert_eq!(
            copy_for_sandbox("nameserver 127.0.0.53\n"),
            "# written by netd\n# the host has no usable nameserver for sandboxes\n"
        );
    }

    #[test]
    fn plain_and_kubernetes() {
        let plain = sandbox_resolv_conf(&BTreeMap::new(), "cluster.local");
        assert!(plain.contains("nameserver 127.0.0.11\n") && plain.contains("options ndots:0\n"));
        assert!(!plain.contains("search"));
        let mut l = BTreeMap::new();
        l.insert("netd.namespace".to_string(), "shop".to_string());
        let k = sandbox_resolv_conf(&l, "cluster.local");
        assert!(k.contains("search shop.svc.cluster.local svc.cluster.local cluster.local\n"));
    }
}
