//! An nft batch as data: commands in order, where each set or map element change is
//! typed (family, table, set, add or delete, each element's key and value parts), the
//! service objects are typed (`svc_cmd::SvcCmd`) and everything else (tables, chains,
//! rules, flushes) is nft text.
//!
//! The kernel layer sends a batch of element changes only (every attach and detach) as
//! raw nfnetlink messages, encoding each part from its type (`kernel::nft_elements`),
//! and any other batch to libnftables as the text `Display` prints. Both take the same
//! value, so neither has to read the other's form back.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::model::Proto;

/// The nftables families netd's tables live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Inet,
    Bridge,
}

impl Family {
    /// The family's name in nft syntax.
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Bridge => "bridge",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One part of an element's key or value, of one nft type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// `ifname`: a valid interface name (the firewall leaves other names out).
    Ifname(String),
    /// `ipv4_addr`.
    Ipv4(Ipv4Addr),
    /// `ipv6_addr`.
    Ipv6(Ipv6Addr),
    /// `ether_addr`.
    Ether([u8; 6]),
    /// `inet_proto`.
    Proto(Proto),
    /// `inet_service`.
    Port(u16),
}

impl Part {
    pub fn ip(ip: IpAddr) -> Part {
        match ip {
            IpAddr::V4(a) => Part::Ipv4(a),
            IpAddr::V6(a) => Part::Ipv6(a),
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Ifname(n) => write!(f, "\"{n}\""),
            Part::Ipv4(a) => write!(f, "{a}"),
            Part::Ipv6(a) => write!(f, "{a}"),
            Part::Ether(m) => write!(
                f,
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            ),
            Part::Proto(p) => write!(f, "{p}"),
            Part::Port(p) => write!(f, "{p}"),
        }
    }
}

/// The parts of a (possibly concatenated) key or value, as nft writes them: `a . b`.
pub struct Parts<'a>(pub &'a [Part]);

impl fmt::Display for Parts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" . ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A set element (`value` None) or a map element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub key: Vec<Part>,
    pub value: Option<Vec<Part>>,
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Parts(&self.key))?;
        if let Some(v) = &self.value {
            write!(f, " : {}", Parts(v))?;
        }
        Ok(())
    }
}

/// `add|delete element FAMILY TABLE SET { ELEMENTS }`. Deletions carry keys only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementChange {
    pub add: bool,
    pub family: Family,
    pub table: String,
    pub set: String,
    /// Never empty (nft refuses an empty element list).
    pub elems: Vec<Element>,
}

impl fmt::Display for ElementChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.add { "add" } else { "delete" };
        write!(
            f,
            "{verb} element {} {} {} {{ ",
            self.family, self.table, self.set
        )?;
        for (i, e) in self.elems.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{e}")?;
        }
        f.write_str(" }")
    }
}

/// One command of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Elements(ElementChange),
    /// A command on the service objects (`svc_cmd`), typed so the kernel layer can
    /// send it without libnftables.
    Svc(super::svc_cmd::SvcCmd),
    /// Any other command, in nft syntax.
    Text(String),
}

/// Commands applied as one transaction, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub cmds: Vec<Command>,
}

impl Batch {
    /// A batch of nft text, one command a line.
    pub fn from_text(text: &str) -> Batch {
        Batch {
            cmds: text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| Command::Text(l.to_string()))
                .collect(),
        }
    }

    pub fn push_text(&mut self, cmd: String) {
        self.cmds.push(Command::Text(cmd));
    }

    pub fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }

    /// The element changes, when the batch holds nothing else (and something).
    pub fn element_changes(&self) -> Option<Vec<&ElementChange>> {
        let out: Option<Vec<&ElementChange>> = self
            .cmds
            .iter()
            .map(|c| match c {
                Command::Elements(e) => Some(e),
                Command::Svc(_) | Command::Text(_) => None,
            })
            .collect();
        out.filter(|v| !v.is_empty())
    }

    /// The service commands, when the batch holds nothing else (and something): such a
    /// batch goes to the kernel without libnftables (`kernel::nft_svc`).
    pub fn svc_commands(&self) -> Option<Vec<&super::svc_cmd::SvcCmd>> {
        let out: Option<Vec<_>> = self
            .cmds
            .iter()
            .map(|c| match c {
                Command::Svc(s) => Some(s),
                Command::Elements(_) | Command::Text(_) => None,
            })
            .collect();
        out.filter(|v| !v.is_empty())
    }
}

/// The batch in nft syntax: one command a line, each line ended; nothing when empty.
impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.cmds {
            match c {
                Command::Elements(e) => writeln!(f, "{e}")?,
                Command::Svc(c) => writeln!(f, "{c}")?,
                Command::Text(t) => writeln!(f, "{t}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_print_as_nft_writes_them() {
        let change = ElementChange {
            add: true,
            family: Family::Inet,
            table: "netd".into(),
            set: "pub4_addr".into(),
            elems: vec![
                Element {
                    key: vec![
                        Part::Ipv4(Ipv4Addr::LOCALHOST),
                        Part::Proto(Proto::Udp),
                        Part::Port(5353),
                    ],
                    value: Some(vec![Part::ip("10.89.0.3".parse().unwrap()), Part::Port(53)]),
                },
                Element {
                    key: vec![
                        Part::Ifname("vethA".into()),
                        Part::Ether([2, 0x42, 0, 0, 0, 0x0a]),
                    ],
                    value: None,
                },
            ],
        };
        assert_eq!(
            change.to_string(),
            "add element inet netd pub4_addr { 127.0.0.1 . udp . 5353 : 10.89.0.3 . 53, \
             \"vethA\" . 02:42:00:00:00:0a }"
        );
    }

    #[test]
    fn only_an_elements_only_batch_has_element_changes() {
        let change = ElementChange {
            add: false,
            family: Family::Bridge,
            table: "netd".into(),
            set: "ports".into(),
            elems: vec![Element {
                key: vec![Part::Ifname("a".into())],
                value: None,
            }],
        };
        let mut b = Batch::default();
        assert!(b.element_changes().is_none() && b.to_string().is_empty());
        b.cmds.push(Command::Elements(change.clone()));
        assert_eq!(b.element_changes(), Some(vec![&change]));
        assert_eq!(b.to_string(), "delete element bridge netd ports { \"a\" }\n");
        b.push_text("flush chain inet netd postrouting".into());
        assert!(b.element_changes().is_none());
        assert_eq!(
            Batch::from_text("add table inet x\n\nflush ruleset\n").cmds,
            [
                Command::Text("add table inet x".into()),
                Command::Text("flush ruleset".into())
            ]
        );
    }
}
