//! `netctl`: Docker-like verbs over netd's local API.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};
use ipnetwork::IpNetwork;
use netd::api::client::Client;
use netd::model::{EndpointRequest, NetworkRequest, SandboxRequest, SubnetRequest};
use serde_json::{json, Value};

#[path = "netctl/cluster.rs"]
mod cluster;
#[path = "netctl/events.rs"]
mod events;
#[path = "netctl/graph.rs"]
mod graph;

#[derive(Parser)]
#[command(name = "netctl", version, about = "Manage netd networks and sandboxes")]
struct Cli {
    /// netd's API socket.
    #[arg(long, global = true, env = "NETD_SOCKET", default_value = netd::daemon::DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    cmd: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Manage networks.
    #[command(subcommand)]
    Network(NetCmd),
    /// Manage sandboxes (network namespaces for containers or processes).
    #[command(subcommand)]
    Sandbox(SbCmd),
    /// The embedded DNS server (127.0.0.11 in every sandbox).
    #[command(subcommand)]
    Dns(DnsCmd),
    /// Manage services (ExternalName: a CNAME under <name>.<namespace>.svc.<domain>).
    #[command(subcommand)]
    Service(SvcCmd),
    /// Apply Kubernetes objects: v1 Service (ClusterIP, NodePort, headless, ExternalName)
    /// and discovery.k8s.io/v1 EndpointSlice, from YAML or JSON (one object, several
    /// `---` documents, or a List).
    Apply(K8sArgs),
    /// Delete the Kubernetes objects a file names (as `apply` took them).
    Delete(K8sArgs),
    /// Stream the daemon's events (create, rm, connect, disconnect, publish, repairs,
    /// DNS forwarding failures), like `docker events`.
    Events(events::EventsArgs),
    /// Draw the networks, sandboxes (addresses, published ports) and services (VIPs,
    /// backends) as SVG or Graphviz DOT.
    Graph(graph::GraphArgs),
    /// The cluster's nodes (a daemon started with --cluster).
    #[command(subcommand)]
    Node(NodeCmd),
    /// Cluster-wide operations (a daemon started with --cluster).
    #[command(subcommand)]
    Cluster(ClusterCmd),
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Rotate the IPsec keys of encrypted overlay networks now: a new key is accepted
    /// everywhere first, then sends; returns once every node uses it.
    RotateKeys {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// List the nodes whose lease is alive.
    #[command(alias = "list")]
    Ls {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct K8sArgs {
    /// The file (`-` for standard input).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: PathBuf,
    /// Print what was done as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum SvcCmd {
    /// Create a service: with --external-name, NAME.NAMESPACE.svc.<cluster domain> is a
    /// CNAME to TARGET (Kubernetes' ExternalName); with --network, a VIP on each network
    /// balanced over the backends (sandboxes matching --selector, or named --backend).
    Create {
        name: String,
        /// The DNS name the service points to (a CNAME target, not an IP address).
        #[arg(long = "external-name", value_name = "TARGET")]
        external_name: Option<String>,
        /// Kubernetes-style namespace (default: default).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// A network the service has a VIP on and takes backends from (repeatable).
        #[arg(long = "network", value_name = "NET")]
        networks: Vec<String>,
        /// Backends: sandboxes carrying every label KEY=VALUE (repeatable, ANDed).
        #[arg(long = "selector", value_name = "KEY=VALUE")]
        selector: Vec<String>,
        /// A sandbox that is a backend by name (repeatable).
        #[arg(long = "backend", value_name = "SANDBOX")]
        backends: Vec<String>,
        /// PORT[:TARGET][/tcp|udp] (repeatable).
        #[arg(long = "port", value_name = "PORT[:TARGET][/udp]")]
        ports: Vec<String>,
        /// PUBLISHED:TARGET[/udp][,mode=host|ingress] (repeatable; default mode ingress).
        #[arg(short = 'p', long = "publish", value_name = "PUBLISHED:TARGET")]
        publish: Vec<String>,
        /// vip (default) or dnsrr.
        #[arg(long = "endpoint-mode")]
        endpoint_mode: Option<String>,
        /// client-ip[:SECONDS] or none.
        #[arg(long = "session-affinity")]
        session_affinity: Option<String>,
        /// NET=IP: the VIP to take on NET (repeatable; default: the next free address).
        #[arg(long = "vip", value_name = "NET=IP")]
        vips: Vec<String>,
        /// KEY=VALUE kept on the service (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Change a cluster_ip service: named backends, selector, ports, published ports.
    Update {
        name: String,
        #[arg(short = 'n', long, default_value = netd::model::DEFAULT_NAMESPACE)]
        namespace: String,
        #[arg(long = "add-backend", value_name = "SANDBOX")]
        add_backends: Vec<String>,
        #[arg(long = "rm-backend", value_name = "SANDBOX")]
        rm_backends: Vec<String>,
        /// Replaces the selector (repeatable; `--selector ""` alone clears it).
        #[arg(long = "selector", value_name = "KEY=VALUE")]
        selector: Vec<String>,
        /// Replaces the ports (repeatable).
        #[arg(long = "port")]
        ports: Vec<String>,
        /// Replaces the published ports (repeatable; `-p ""` alone clears them).
        #[arg(short = 'p', long = "publish")]
        publish: Vec<String>,
        #[arg(long = "session-affinity")]
        session_affinity: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List services.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Show services in detail (JSON).
    Inspect {
        names: Vec<String>,
        #[arg(short = 'n', long, default_value = netd::model::DEFAULT_NAMESPACE)]
        namespace: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove services.
    #[command(alias = "remove")]
    Rm {
        names: Vec<String>,
        #[arg(short = 'n', long, default_value = netd::model::DEFAULT_NAMESPACE)]
        namespace: String,
    },
}

#[derive(Subcommand)]
enum DnsCmd {
    /// List the records SANDBOX sees: its peers' names on shared networks, PTR, SRV.
    #[command(alias = "list")]
    Ls {
        sandbox: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ListArgs {
    /// JSON output.
    #[arg(long)]
    json: bool,
    /// Only names.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Subcommand)]
enum NetCmd {
    /// Create a network.
    Create {
        name: String,
        #[arg(short = 'd', long, default_value = "bridge")]
        driver: String,
        #[arg(long)]
        subnet: Vec<String>,
        #[arg(long)]
        gateway: Vec<String>,
        #[arg(long = "ip-range")]
        ip_range: Vec<String>,
        #[arg(long)]
        ipv6: bool,
        #[arg(long)]
        internal: bool,
        #[arg(long)]
        mtu: Option<u32>,
        /// Driver option KEY=VALUE: bridge: com.docker.network.* (as Docker); macvlan:
        /// parent=IFACE (required; eth0.10 is made as a VLAN link when missing),
        /// macvlan_mode=bridge|vepa|private|passthru; ipvlan: parent=IFACE,
        /// ipvlan_mode=l2|l3|l3s, ipvlan_flag=bridge|private|vepa.
        #[arg(short = 'o', long = "opt")]
        opt: Vec<String>,
        #[arg(long)]
        label: Vec<String>,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Show networks in detail (JSON).
    Inspect {
        names: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove networks.
    #[command(alias = "remove")]
    Rm { names: Vec<String> },
    /// Remove every network without endpoints.
    Prune {
        #[arg(short, long)]
        force: bool,
    },
    /// Attach a sandbox to a network.
    Connect {
        network: String,
        sandbox: String,
        #[arg(long)]
        ip: Option<String>,
        #[arg(long)]
        ip6: Option<String>,
        #[arg(long)]
        alias: Vec<String>,
        #[arg(long = "mac-address")]
        mac: Option<String>,
    },
    /// Detach a sandbox from a network.
    Disconnect { network: String, sandbox: String },
}

// Parsed once per process; boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum SbCmd {
    /// Create a sandbox: a network namespace at <netns-dir>/NAME.
    Create {
        name: String,
        /// Network to join (repeatable; first gives the default route), or host / none.
        #[arg(long)]
        network: Vec<String>,
        /// IPv4 address on the first network.
        #[arg(long)]
        ip: Option<String>,
        /// IPv6 address on the first network.
        #[arg(long)]
        ip6: Option<String>,
        /// Network-scoped alias on the first network.
        #[arg(long)]
        alias: Vec<String>,
        #[arg(long = "mac-address")]
        mac: Option<String>,
        /// Publish a port: [HOSTIP:][HOSTPORT:]PORT[/tcp|/udp].
        #[arg(short = 'p', long = "publish")]
        publish: Vec<String>,
        /// Publish every exposed port on an ephemeral host port.
        #[arg(short = 'P', long = "publish-all")]
        publish_all: bool,
        #[arg(long)]
        expose: Vec<String>,
        #[arg(long)]
        label: Vec<String>,
        /// Attach an existing network namespace (path) instead of creating one; netd
        /// never deletes it.
        #[arg(long)]
        netns: Option<String>,
    },
    /// List sandboxes.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Show sandboxes in detail (JSON).
    Inspect {
        names: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove sandboxes (their namespace, links and addresses).
    #[command(alias = "remove")]
    Rm { names: Vec<String> },
}

fn kv(items: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("invalid {what} {s:?}: expected KEY=VALUE"))
        })
        .collect()
}

/// Docker pairs --gateway and --ip-range with the --subnet that contains them.
fn subnets(subnet: &[String], gateway: &[String], ip_range: &[String]) -> anyhow::Result<Vec<SubnetRequest>> {
    let mut out: Vec<SubnetRequest> = subnet
        .iter()
        .map(|s| SubnetRequest {
            subnet: Some(s.clone()),
            ..Default::default()
        })
        .collect();
    let parsed: Vec<Option<IpNetwork>> = subnet.iter().map(|s| s.parse().ok()).collect();
    let home = |ip: IpAddr| -> anyhow::Result<usize> {
        parsed
            .iter()
            .position(|n| n.is_some_and(|n| n.contains(ip)))
            .or_else(|| {
                parsed
                    .iter()
                    .position(|n| n.is_some_and(|n| n.is_ipv4() == ip.is_ipv4()))
            })
            .ok_or_else(|| anyhow!("{ip} does not belong to any --subnet"))
    };
    for g in gateway {
        let ip: IpAddr = g
            .parse()
            .map_err(|_| anyhow!("invalid gateway {g:?}: expected an IP address"))?;
        let i = home(ip)?;
        if out[i].gateway.is_some() {
            bail!("more than one --gateway for subnet {}", subnet[i]);
        }
        out[i].gateway = Some(g.clone());
    }
    for r in ip_range {
        let n: IpNetwork = r
            .parse()
            .map_err(|_| anyhow!("invalid ip-range {r:?}: expected CIDR"))?;
        let i = home(n.network())?;
        out[i].ip_range = Some(r.clone());
    }
    Ok(out)
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn network_row(n: &Value) -> String {
    let subnets: Vec<&str> = n["subnets"]
        .as_array()
        .map(|a| a.iter().map(|x| s(&x["subnet"])).collect())
        .unwrap_or_default();
    let mut flags = Vec::new();
    if n["internal"].as_bool() == Some(true) {
        flags.push("internal");
    }
    if n["icc"].as_bool() == Some(false) {
        flags.push("icc=off");
    }
    if n["owner"].as_str() == Some("docker") {
        flags.push("docker");
    }
    format!(
        "{:<20} {:<8} {:<15} {:<34} {:<9} {}",
        s(&n["name"]),
        s(&n["driver"]),
        s(&n["bridge"]),
        subnets.join(","),
        n["endpoints"].as_array().map(|a| a.len()).unwrap_or(0),
        flags.join(",")
    )
}

fn sandbox_row(sb: &Value) -> String {
    let mut nets = Vec::new();
    for e in sb["endpoints"].as_array().into_iter().flatten() {
        let ip = e["ipv4"].as_str().or(e["ipv6"].as_str()).unwrap_or("-");
        nets.push(format!("{}={}", s(&e["network"]), ip));
    }
    let ports: Vec<String> = sb["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "{}:{}->{}/{}",
                p["host_ip"].as_str().unwrap_or("0.0.0.0"),
                p["host_port"],
                p["container_port"],
                s(&p["proto"])
            )
        })
        .collect();
    format!(
        "{:<20} {:<7} {:<40} {}",
        s(&sb["name"]),
        s(&sb["mode"]),
        if nets.is_empty() {
            "-".to_string()
        } else {
            nets.join(" ")
        },
        ports.join(", ")
    )
}

fn list(c: &Client, path: &str, a: &ListArgs, header: &str, row: fn(&Value) -> String) -> anyhow::Result<()> {
    list_value(c.get(path)?, a, header, row)
}

fn list_value(v: Value, a: &ListArgs, header: &str, row: fn(&Value) -> String) -> anyhow::Result<()> {
    if a.json {
        print_json(&v);
        return Ok(());
    }
    let items = v.as_array().cloned().unwrap_or_default();
    if a.quiet {
        for i in &items {
            println!("{}", s(&i["name"]));
        }
        return Ok(());
    }
    println!("{header}");
    for i in &items {
        println!("{}", row(i));
    }
    Ok(())
}

fn inspect(c: &Client, kind: &str, names: &[String]) -> anyhow::Result<()> {
    if names.is_empty() {
        bail!("inspect needs at least one name");
    }
    let mut out = Vec::new();
    for n in names {
        out.push(c.get(&format!("/v1/{kind}/{n}"))?);
    }
    print_json(&Value::Array(out));
    Ok(())
}

fn service_row(v: &Value) -> String {
    let target = match s(&v["kind"]) {
        "external_name" => s(&v["target"]).to_string(),
        _ => {
            let vips: Vec<String> = v["vips"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(n, ip)| format!("{n}={}", s(ip)))
                .collect();
            let ports: Vec<String> = v["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| format!("{}:{}/{}", p["port"], p["target_port"], s(&p["proto"])))
                .collect();
            let n = v["live_backends"].as_array().map(|a| a.len()).unwrap_or(0);
            format!(
                "{} {} backends={n}",
                if vips.is_empty() {
                    "-".to_string()
                } else {
                    vips.join(",")
                },
                ports.join(",")
            )
        }
    };
    format!(
        "{:<24} {:<16} {:<14} {}",
        s(&v["name"]),
        s(&v["namespace"]),
        s(&v["kind"]),
        target
    )
}

/// `NET=IP` pairs.
fn vip_pairs(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|i| {
            i.split_once('=')
                .map(|(n, ip)| (n.to_string(), ip.to_string()))
                .ok_or_else(|| anyhow!("invalid --vip {i:?}: expected NET=IP"))
        })
        .collect()
}

/// A repeatable flag that replaces a list: absent keeps it, `""` alone clears it.
fn replacing(items: Vec<String>) -> Option<Vec<String>> {
    match items.as_slice() {
        [] => None,
        [one] if one.is_empty() => Some(Vec::new()),
        _ => Some(items),
    }
}

fn service(c: &Client, cmd: SvcCmd) -> anyhow::Result<()> {
    match cmd {
        SvcCmd::Create {
            name,
            external_name,
            namespace,
            networks,
            selector,
            backends,
            ports,
            publish,
            endpoint_mode,
            session_affinity,
            vips,
            labels,
            json,
        } => {
            let req = netd::model::ServiceRequest {
                name,
                namespace,
                kind: None,
                external_name,
                networks,
                ports,
                selector,
                backends,
                endpoint_mode,
                session_affinity,
                publish,
                vips: vip_pairs(&vips)?,
                labels: kv(&labels, "label")?,
            };
            let v = match cluster::create_service(c, &req)? {
                Some(v) => v,
                None => c.post("/v1/services", &serde_json::to_value(&req)?)?,
            };
            if json {
                print_json(&v);
            } else {
                println!("{}", s(&v["id"]));
            }
        }
        SvcCmd::Update {
            name,
            namespace,
            add_backends,
            rm_backends,
            selector,
            ports,
            publish,
            session_affinity,
            json,
        } => {
            let up = netd::engine::ServiceUpdate {
                add_backends,
                rm_backends,
                selector: replacing(selector),
                ports: replacing(ports),
                publish: replacing(publish),
                session_affinity,
            };
            let v = cluster::update_service(c, &namespace, &name, &up)?;
            if json {
                print_json(&v);
            } else {
                println!("{name}");
            }
        }
        SvcCmd::Ls(a) => list(
            c,
            "/v1/services",
            &a,
            &format!(
                "{:<24} {:<16} {:<14} TARGET / VIPS PORTS BACKENDS",
                "NAME", "NAMESPACE", "KIND"
            ),
            service_row,
        )?,
        SvcCmd::Inspect { names, namespace, .. } => {
            let names: Vec<String> = names.iter().map(|n| format!("{namespace}/{n}")).collect();
            inspect(c, "services", &names)?
        }
        SvcCmd::Rm { names, namespace } => {
            if names.is_empty() {
                bail!("rm needs at least one service name");
            }
            for n in &names {
                cluster::remove_service(c, &namespace, n)?;
                println!("{n}");
            }
        }
    }
    Ok(())
}

/// `apply -f` / `delete -f`: the file's documents go to the daemon as JSON, which
/// decodes them with the Kubernetes types; YAML errors stop here.
fn k8s(c: &Client, verb: &str, a: K8sArgs) -> anyhow::Result<()> {
    let text = if a.file.as_os_str() == "-" {
        let mut t = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut t).context("reading standard input")?;
        t
    } else {
        std::fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file.display()))?
    };
    let docs = netd::k8s::documents(&text).map_err(|e| anyhow!("{}: {e}", a.file.display()))?;
    let v = c.post(&format!("/v1/k8s/{verb}"), &Value::Array(docs))?;
    if a.json {
        print_json(&v);
    } else {
        for r in v.as_array().into_iter().flatten() {
            println!(
                "{}/{} {}",
                s(&r["kind"]).to_ascii_lowercase(),
                s(&r["name"]),
                s(&r["action"])
            );
        }
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let c = Client::new(&cli.socket);
    match cli.cmd {
        Top::Node(NodeCmd::Ls { json }) => cluster::node_ls(&c, json)?,
        Top::Cluster(ClusterCmd::RotateKeys { json }) => cluster::rotate_keys(&c, json)?,
        Top::Network(cmd) => match cmd {
            NetCmd::Create {
                name,
                driver,
                subnet,
                gateway,
                ip_range,
                ipv6,
                internal,
                mtu,
                opt,
                label,
            } if driver == netd::model::DRIVER_OVERLAY => {
                let refused = [
                    (ipv6, "--ipv6"),
                    (!ip_range.is_empty(), "--ip-range"),
                    (
                        mtu.is_some(),
                        "--mtu (an overlay network's is the underlay's - 50)",
                    ),
                    (!label.is_empty(), "--label"),
                ]
                .into_iter()
                .filter_map(|(on, f)| on.then_some(f))
                .collect();
                // `-o encrypted` alone, as Docker takes it.
                let opt: Vec<String> = opt
                    .iter()
                    .map(|o| {
                        if o == "encrypted" {
                            "encrypted=".to_string()
                        } else {
                            o.clone()
                        }
                    })
                    .collect();
                let mut opts = kv(&opt, "option")?;
                let encrypted = opts.remove("encrypted");
                let block_prefix = match opts.remove("block_prefix") {
                    Some(v) => Some(v.parse::<u8>().map_err(|_| {
                        anyhow!("invalid -o block_prefix={v}: expected a prefix length (e.g. 28)")
                    })?),
                    None => None,
                };
                if let Some(k) = opts.keys().next() {
                    bail!("-o {k} is not supported for overlay networks (only block_prefix and encrypted)");
                }
                cluster::create_overlay(
                    &c,
                    &cluster::Create {
                        name: &name,
                        subnet: &subnet,
                        gateway: &gateway,
                        internal,
                        block_prefix,
                        encrypted,
                        refused,
                    },
                )?;
            }
            NetCmd::Create {
                name,
                driver,
                subnet,
                gateway,
                ip_range,
                ipv6,
                internal,
                mtu,
                opt,
                label,
            } => {
                let req = NetworkRequest {
                    name,
                    driver: Some(driver),
                    subnets: subnets(&subnet, &gateway, &ip_range)?,
                    ipv6,
                    internal,
                    mtu,
                    options: kv(&opt, "option")?,
                    labels: kv(&label, "label")?,
                };
                let v = c.post("/v1/networks", &serde_json::to_value(&req)?)?;
                println!("{}", s(&v["id"]));
            }
            NetCmd::Ls(a) => list_value(
                cluster::with_stored(&c, c.get("/v1/networks")?)?,
                &a,
                &format!(
                    "{:<20} {:<8} {:<15} {:<34} {:<9} FLAGS",
                    "NAME", "DRIVER", "BRIDGE", "SUBNETS", "ENDPOINTS"
                ),
                network_row,
            )?,
            NetCmd::Inspect { names, .. } => cluster::inspect_networks(&c, &names)?,
            NetCmd::Rm { names } => {
                if names.is_empty() {
                    bail!("rm needs at least one network name");
                }
                for n in &names {
                    cluster::remove(&c, n)?;
                    println!("{n}");
                }
            }
            NetCmd::Prune { .. } => {
                let v = c.post("/v1/networks/prune", &json!({}))?;
                for n in v["removed"].as_array().into_iter().flatten() {
                    println!("{}", s(n));
                }
            }
            NetCmd::Connect {
                network,
                sandbox,
                ip,
                ip6,
                alias,
                mac,
            } => {
                c.post(
                    &format!("/v1/networks/{network}/connect"),
                    &json!({"sandbox": sandbox, "ip": ip, "ip6": ip6, "aliases": alias, "mac": mac}),
                )?;
            }
            NetCmd::Disconnect { network, sandbox } => {
                c.post(
                    &format!("/v1/networks/{network}/disconnect"),
                    &json!({ "sandbox": sandbox }),
                )?;
            }
        },
        Top::Sandbox(cmd) => match cmd {
            SbCmd::Create {
                name,
                network,
                ip,
                ip6,
                alias,
                mac,
                publish,
                publish_all,
                expose,
                label,
                netns,
            } => {
                let mut networks: Vec<EndpointRequest> = network
                    .iter()
                    .map(|n| EndpointRequest {
                        network: n.clone(),
                        ..Default::default()
                    })
                    .collect();
                if ip.is_some() || ip6.is_some() || !alias.is_empty() || mac.is_some() {
                    let first = networks
                        .first_mut()
                        .context("--ip, --ip6, --alias and --mac-address need --network")?;
                    first.ip = ip;
                    first.ip6 = ip6;
                    first.aliases = alias;
                    first.mac = mac;
                }
                let req = SandboxRequest {
                    name,
                    networks,
                    ports: publish,
                    publish_all,
                    expose,
                    labels: kv(&label, "label")?,
                    netns,
                };
                let v = c.post("/v1/sandboxes", &serde_json::to_value(&req)?)?;
                println!("{}", s(&v["netns"]));
            }
            SbCmd::Ls(a) => list(
                &c,
                "/v1/sandboxes",
                &a,
                &format!("{:<20} {:<7} {:<40} PORTS", "NAME", "MODE", "NETWORKS"),
                sandbox_row,
            )?,
            SbCmd::Inspect { names, .. } => inspect(&c, "sandboxes", &names)?,
            SbCmd::Rm { names } => {
                if names.is_empty() {
                    bail!("rm needs at least one sandbox name");
                }
                for n in &names {
                    c.delete(&format!("/v1/sandboxes/{n}"))?;
                    println!("{n}");
                }
            }
        },
        Top::Service(cmd) => service(&c, cmd)?,
        Top::Apply(a) => k8s(&c, "apply", a)?,
        Top::Delete(a) => k8s(&c, "delete", a)?,
        Top::Events(a) => events::run(&c, &a)?,
        Top::Graph(a) => graph::run(&c, &a)?,
        Top::Dns(DnsCmd::Ls { sandbox, json }) => {
            let v = c.get(&format!("/v1/sandboxes/{sandbox}/dns"))?;
            if json {
                print_json(&v);
            } else {
                println!("{:<40} {:<6} {:<30} NETWORK", "NAME", "TYPE", "VALUE");
                for r in v.as_array().into_iter().flatten() {
                    println!(
                        "{:<40} {:<6} {:<30} {}",
                        s(&r["name"]),
                        s(&r["type"]),
                        s(&r["value"]),
                        s(&r["network"])
                    );
                }
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
