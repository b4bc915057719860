//! `netd`: the daemon (`netd daemon`), stacks (`netd up|down|ps|ls`) and the built-in
//! responder stacks use to show reachability (`netd responder`). Parsing only; the work
//! is in the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use netd::daemon::{self, ConfigFile, DaemonOptions};
use netd::stack::admin;

#[derive(Parser)]
#[command(name = "netd", version, about = "Kernel-level container networking daemon")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone, Debug)]
struct DaemonArgs {
    /// TOML config file (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the store and lock live.
    #[arg(long, env = "NETD_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// API socket path.
    #[arg(long, env = "NETD_SOCKET")]
    socket: Option<PathBuf>,
    /// Where sandbox namespaces are bound.
    #[arg(long)]
    netns_dir: Option<PathBuf>,
    /// Where per-sandbox resolv.conf files go (`<dir>/<sandbox>/resolv.conf`).
    #[arg(long)]
    etc_netns_dir: Option<PathBuf>,
    /// Group allowed to use the socket (mode 0660 instead of 0600).
    #[arg(long)]
    socket_group: Option<String>,
    /// Serve Docker's plugin protocol at DIR/netd.sock (`none` to disable).
    #[arg(long, env = "NETD_DOCKER_PLUGIN_DIR", value_name = "DIR")]
    docker_plugin_dir: Option<PathBuf>,
    /// Where Kubernetes ClusterIPs (`netctl apply`) come from [default: 10.96.0.0/12].
    #[arg(long, value_name = "CIDR")]
    service_cidr: Option<ipnetwork::IpNetwork>,
    /// Service load balancer: nftables (default), ipvs or ebpf.
    #[arg(long, value_name = "nftables|ipvs|ebpf")]
    lb: Option<netd::lb::LbKind>,
    /// The cgroup v2 whose sockets `--lb ebpf` balances [default: the hierarchy's root,
    /// /sys/fs/cgroup/unified on a hybrid host].
    #[arg(long, value_name = "DIR")]
    bpf_cgroup: Option<PathBuf>,
    /// The devices of the eBPF routing mesh (`--lb ebpf`): published ingress ports and
    /// NodePorts arriving on them are balanced in tc [default: every device with an
    /// IPv4 address except loopback and netd's bridges, followed as they come and go].
    #[arg(long, value_name = "DEV[,DEV...]", value_delimiter = ',')]
    lb_devices: Option<Vec<String>>,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default; loopback only
    /// unless --metrics-public).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Allow --metrics-addr off loopback.
    #[arg(long)]
    metrics_public: bool,
    /// Join a cluster whose store is etcd (`etcd://IP:PORT[,IP:PORT…]`): overlay networks.
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
    /// This node's name in the cluster [default: the host name].
    #[arg(long, requires = "cluster")]
    node: Option<String>,
    /// This node's underlay address: VXLAN tunnels start and end here.
    #[arg(long, value_name = "IP", requires = "cluster")]
    advertise_addr: Option<std::net::Ipv4Addr>,
    /// UDP port of VXLAN traffic between nodes.
    #[arg(long, value_name = "PORT", requires = "cluster")]
    data_port: Option<u16>,
    /// How often the IPsec keys of encrypted overlay networks rotate (`12h`, `30m`,
    /// `90s`; `0`: only with `netctl cluster rotate-keys`) [default: 12h].
    #[arg(long, value_name = "DURATION", requires = "cluster")]
    key_rotation: Option<String>,
    /// CA (PEM) etcd's server certificate chains to: the cluster store over TLS.
    #[arg(long, value_name = "FILE", requires = "cluster")]
    cluster_ca: Option<PathBuf>,
    /// This node's client certificate (PEM) for etcd's --client-cert-auth.
    #[arg(long, value_name = "FILE", requires = "cluster_ca")]
    cluster_cert: Option<PathBuf>,
    /// The key (PEM) of --cluster-cert.
    #[arg(long, value_name = "FILE", requires = "cluster_ca")]
    cluster_key: Option<PathBuf>,
}

#[derive(Args, Clone, Debug)]
struct StackArgs {
    /// Stack name (default: the file's `name`, else its file name).
    #[arg(short = 'p', long)]
    name: Option<String>,
    #[command(flatten)]
    daemon: DaemonArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Daemon(DaemonArgs),
    /// Converge the daemon to a stack file, show who reaches whom; in the foreground the
    /// stack is removed on Ctrl-C, with -d it stays up.
    Up {
        file: PathBuf,
        /// Exit 0 only if every expected reachability and isolation holds (then tear
        /// down, unless -d).
        #[arg(long)]
        check: bool,
        /// Leave the stack up on the running daemon and return.
        #[arg(short = 'd', long)]
        detach: bool,
        /// Write the stack's picture here once it is up (SVG; DOT if FILE ends in .dot).
        #[arg(long, value_name = "FILE")]
        graph: Option<PathBuf>,
        #[command(flatten)]
        stack: StackArgs,
    },
    /// Remove a stack: its sandboxes, networks and responders.
    Down {
        file: Option<PathBuf>,
        #[command(flatten)]
        stack: StackArgs,
    },
    /// List a stack's networks and sandboxes.
    Ps {
        file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        stack: StackArgs,
    },
    /// List the stacks on the daemon.
    Ls {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Run a userspace WireGuard device in the foreground until SIGTERM/SIGINT (tests,
    /// benchmarks).
    #[command(hide = true)]
    Wireguard {
        name: String,
        #[arg(long)]
        private_key_file: PathBuf,
        #[arg(long)]
        listen_port: u16,
        #[arg(long, default_value_t = 1420)]
        mtu: u32,
        /// IPv4 address and prefix of the link (`ip addr add`).
        #[arg(long)]
        address: Option<ipnetwork::Ipv4Network>,
        /// PUBKEY_BASE64,ENDPOINT_IP:PORT,ALLOWED_CIDR[+CIDR...] (repeatable).
        #[arg(long = "peer")]
        peers: Vec<String>,
    },
    /// Answer TCP/UDP on the given ports with NAME (used inside stack sandboxes).
    Responder {
        #[arg(long)]
        name: String,
        /// Enter this network namespace first.
        #[arg(long)]
        netns: Option<PathBuf>,
        #[arg(long = "tcp")]
        tcp: Vec<u16>,
        #[arg(long = "udp")]
        udp: Vec<u16>,
    },
}

fn options(a: &DaemonArgs) -> anyhow::Result<DaemonOptions> {
    let file = match &a.config {
        Some(p) => ConfigFile::load(p)?,
        None => ConfigFile::default(),
    };
    let mut o = DaemonOptions::default();
    if let Some(v) = a.state_dir.clone().or(file.state_dir) {
        o.state_dir = v;
    }
    if let Some(v) = a.socket.clone().or(file.socket) {
        o.socket = v;
    }
    if let Some(v) = a.netns_dir.clone().or(file.netns_dir) {
        o.engine.netns_dir = v;
    }
    if let Some(v) = a.etc_netns_dir.clone().or(file.etc_netns_dir) {
        o.engine.etc_netns_dir = v;
    }
    o.socket_group = a.socket_group.clone().or(file.socket_group);
    match a.docker_plugin_dir.as_deref() {
        Some(d) if d.as_os_str() == "none" || d.as_os_str().is_empty() => o.docker_plugin_dir = None,
        Some(d) => o.docker_plugin_dir = Some(d.to_path_buf()),
        None => {}
    }
    if let Some(c) = a.service_cidr.or(file.service_cidr) {
        // The CIDR's own address, as IPAM's subnets: 10.96.0.1/12 is a typo.
        anyhow::ensure!(
            c.network() == c.ip(),
            "--service-cidr {c}: host bits are set (did you mean {}/{}?)",
            c.network(),
            c.prefix()
        );
        o.engine.service_cidr = c;
    }
    if let Some(i) = file.ipam {
        o.engine.ipam = i;
    }
    if let Some(m) = a.metrics_addr {
        daemon::check_metrics_addr(m, a.metrics_public)?;
        o.metrics_addr = Some(m);
    }
    if let Some(lb) = a.lb {
        o.engine.lb = lb;
    }
    if let Some(url) = &a.cluster {
        let mut endpoints = netd::cluster::parse_cluster_url(url)?;
        let tls = match &a.cluster_ca {
            Some(ca) => Some(netd::cluster::ClusterTls::load(
                ca,
                a.cluster_cert.as_deref(),
                a.cluster_key.as_deref(),
            )?),
            None => None,
        };
        if tls.is_some() {
            // etcd:// with the TLS flags: the same endpoints over TLS.
            for e in &mut endpoints {
                if let Some(rest) = e.strip_prefix("http://") {
                    *e = format!("https://{rest}");
                }
            }
        } else if endpoints.iter().any(|e| e.starts_with("https://")) {
            anyhow::bail!("--cluster etcds://… needs --cluster-ca FILE (the CA of etcd's certificate)");
        }
        let node = match &a.node {
            Some(n) => n.clone(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")?
                .trim()
                .to_string(),
        };
        netd::model::validate_name(&node).map_err(|e| anyhow::anyhow!("--node: {e}"))?;
        let advertise = a.advertise_addr.ok_or_else(|| {
            anyhow::anyhow!("--cluster needs --advertise-addr IP (this node's underlay address)")
        })?;
        let data_port = a.data_port.unwrap_or(netd::cluster::DEFAULT_DATA_PORT);
        anyhow::ensure!(data_port != 0, "--data-port 0: expected a UDP port");
        let key_rotation_s = match &a.key_rotation {
            Some(v) => {
                netd::cluster::ipsec::parse_duration(v).map_err(|e| anyhow::anyhow!("--key-rotation {e}"))?
            }
            None => netd::cluster::ipsec::DEFAULT_ROTATION_S,
        };
        o.cluster = Some(netd::cluster::ClusterConfig {
            endpoints,
            node,
            advertise,
            data_port,
            tls,
            key_rotation_s,
            wg_key: o.state_dir.join("wireguard.key"),
        });
    }
    if let Some(cg) = &a.bpf_cgroup {
        o.engine.bpf_cgroup = Some(cg.clone());
    }
    if let Some(devs) = &a.lb_devices {
        anyhow::ensure!(
            o.engine.lb == netd::lb::LbKind::Ebpf,
            "--lb-devices needs --lb ebpf (the routing mesh is the eBPF datapath's)"
        );
        if let Some(bad) = devs
            .iter()
            .find(|d| d.is_empty() || d.len() > 15 || d.contains('/'))
        {
            anyhow::bail!("--lb-devices: {bad:?} is not a device name");
        }
        o.engine.lb_devices = Some(devs.clone());
    }
    if let Some(d) = file.dns {
        o.dns = d;
    }
    if let Some((lo, hi)) = file.ephemeral_ports {
        anyhow::ensure!(
            lo > 0 && lo <= hi,
            "ephemeral_ports: expected [low, high] with 0 < low <= high"
        );
        o.engine.ephemeral_ports = (lo, hi);
    }
    Ok(o)
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NETD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        // By default a failed write is reported with eprintln!, which panics when stderr
        // is a closed pipe (`netd up 2>&1 | tee` after Ctrl-C): inside an engine
        // operation that would abort it half-way. A lost log line is the lesser harm.
        .log_internal_errors(false)
        .init();
}

async fn ctrl_c_or_term() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Responder {
            name,
            netns,
            tcp,
            udp,
        } => netd::stack::responder::run(&name, netns.as_deref(), &tcp, &udp),
        Cmd::Wireguard {
            name,
            private_key_file,
            listen_port,
            mtu,
            address,
            peers,
        } => {
            init_logs();
            netd::wireguard::run(&netd::wireguard::Args {
                name,
                private_key_file,
                listen_port,
                mtu,
                address,
                peers,
            })
        }
        Cmd::Daemon(a) => {
            init_logs();
            options(&a).and_then(|o| {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                rt.block_on(daemon::run(o, ctrl_c_or_term()))
            })
        }
        Cmd::Up {
            file,
            check,
            detach,
            graph,
            stack,
        } => {
            init_logs();
            let a = netd::stack::UpArgs {
                file,
                name: stack.name,
                check,
                detach,
                graph,
            };
            options(&stack.daemon).and_then(|o| netd::stack::up(&a, o))
        }
        Cmd::Down { file, stack } => {
            init_logs();
            let name = admin::stack_name(file.as_deref(), stack.name.as_deref());
            name.and_then(|n| options(&stack.daemon).and_then(|o| admin::down(&n, o)))
        }
        Cmd::Ps { file, json, stack } => {
            let name = admin::stack_name(file.as_deref(), stack.name.as_deref());
            name.and_then(|n| options(&stack.daemon).and_then(|o| admin::ps(&n, json, o)))
        }
        Cmd::Ls { json, daemon } => options(&daemon).and_then(|o| admin::ls(json, o)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!: stderr may be a pipe whose reader is gone (`netd up 2>&1 | tee`).
            let _ = writeln!(std::io::stderr(), "netd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
