//! The CNI_* environment: which command, which container, which namespace and interface,
//! and `CNI_ARGS` (`K=V;K=V`, with `IgnoreUnknown`).

use std::collections::BTreeMap;

use crate::error::{code, CniError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Result<Command> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            "" => return Err(CniError::new(code::INVALID_ENV, "CNI_COMMAND is not set")),
            other => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("unknown CNI_COMMAND {other:?}: expected ADD, DEL, CHECK, GC, STATUS or VERSION"),
                ))
            }
        })
    }
}

/// CNI_ARGS keys this plugin understands. Others are an error unless `IgnoreUnknown`.
const KNOWN_ARGS: &[&str] = &[
    "IgnoreUnknown",
    "IP",
    "MAC",
    "K8S_POD_NAME",
    "K8S_POD_NAMESPACE",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub ips: Vec<String>,
    pub mac: Option<String>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
}

pub fn parse_cni_args(s: &str) -> Result<CniArgs> {
    let mut kv = BTreeMap::new();
    for part in s.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_ARGS: {part:?} is not KEY=VALUE"),
            ));
        };
        kv.insert(k.to_string(), v.to_string());
    }
    let ignore = kv
        .get("IgnoreUnknown")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true"))
        .unwrap_or(false);
    if !ignore {
        if let Some(k) = kv.keys().find(|k| !KNOWN_ARGS.contains(&k.as_str())) {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_ARGS: unknown key {k:?} (set IgnoreUnknown=1 to ignore)"),
            ));
        }
    }
    Ok(CniArgs {
        ips: kv
            .get("IP")
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        mac: kv.get("MAC").cloned(),
        pod_name: kv.get("K8S_POD_NAME").cloned(),
        pod_namespace: kv.get("K8S_POD_NAMESPACE").cloned(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    pub netns: Option<String>,
    pub ifname: String,
    pub args: CniArgs,
    pub path: Vec<String>,
}

/// The spec's rule for container IDs (libcni's `ValidateContainerID`).
fn valid_container_id(id: &str) -> bool {
    let mut c = id.chars();
    c.next().is_some_and(|f| f.is_ascii_alphanumeric())
        && c.all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-'))
}

/// Reads the environment through `get` (so tests need not touch the process's own).
pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Env> {
    let command = Command::parse(&get("CNI_COMMAND").unwrap_or_default())?;
    let need = |k: &str| -> Result<String> {
        match get(k) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(CniError::new(code::INVALID_ENV, format!("{k} is not set"))),
        }
    };
    let per_container = matches!(command, Command::Add | Command::Del | Command::Check);
    let (container_id, ifname) = if per_container {
        let id = need("CNI_CONTAINERID")?;
        if !valid_container_id(&id) {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_CONTAINERID {id:?} has invalid characters"),
            ));
        }
        let ifname = need("CNI_IFNAME")?;
        netd::model::validate_ifname(&ifname)
            .map_err(|e| CniError::new(code::INVALID_ENV, format!("CNI_IFNAME: {e}")))?;
        (id, ifname)
    } else {
        (String::new(), String::new())
    };
    let netns = match command {
        Command::Add | Command::Check => Some(need("CNI_NETNS")?),
        _ => get("CNI_NETNS").filter(|s| !s.is_empty()),
    };
    let path = if command == Command::Version {
        Vec::new()
    } else {
        need("CNI_PATH")?.split(':').map(str::to_string).collect()
    };
    let args = parse_cni_args(&get("CNI_ARGS").unwrap_or_default())?;
    Ok(Env {
        command,
        container_id,
        netns,
        ifname,
        args,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<Env> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_env(|k| m.get(k).cloned())
    }

    #[test]
    fn add_needs_container_netns_ifname_path() {
        let full = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc-1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ];
        let e = env(&full).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.path.len(), 2);
        for skip in 1..full.len() {
            let part: Vec<_> = full
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, p)| *p)
                .collect();
            let err = env(&part).unwrap_err();
            assert_eq!(err.code, code::INVALID_ENV, "without {}", full[skip].0);
            assert!(err.msg.contains(full[skip].0), "{}", err.msg);
        }
    }

    #[test]
    fn del_without_netns_is_fine_and_bad_values_are_code_4() {
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/x"),
        ])
        .unwrap();
        assert_eq!(e.netns, None);
        let bad = |k: &str, v: &str| {
            let mut p = vec![
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "abc"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/x"),
            ];
            p.retain(|(kk, _)| *kk != k);
            p.push((k, v));
            env(&p).unwrap_err().code
        };
        assert_eq!(bad("CNI_CONTAINERID", "../etc"), code::INVALID_ENV);
        assert_eq!(bad("CNI_IFNAME", "this-name-is-too-long"), code::INVALID_ENV);
        assert_eq!(bad("CNI_COMMAND", "FROB"), code::INVALID_ENV);
        assert_eq!(bad("CNI_ARGS", "FOO=1"), code::INVALID_ENV);
        assert_eq!(bad("CNI_ARGS", "garbage"), code::INVALID_ENV);
        assert_eq!(
            env(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Command::Version
        );
    }

    #[test]
    fn cni_args_as_podman_and_kubelet_send_them() {
        let a =
            parse_cni_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;FOO=bar").unwrap();
        assert_eq!(a.pod_name.as_deref(), Some("web-0"));
        assert_eq!(a.pod_namespace.as_deref(), Some("default"));
        let a = parse_cni_args("IP=10.1.0.9;MAC=02:00:00:00:00:09").unwrap();
        assert_eq!(a.ips, vec!["10.1.0.9"]);
        assert_eq!(a.mac.as_deref(), Some("02:00:00:00:00:09"));
        assert!(parse_cni_args("IgnoreUnknown=0;FOO=1").is_err());
        assert_eq!(parse_cni_args("").unwrap(), CniArgs::default());
    }
}
