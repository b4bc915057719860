//! What an engine operation can fail with. Each edge turns a variant into its own
//! answer in one place: the local API into an HTTP status and a reason (`api::server::
//! error`), the CNI plugin into a CNI code (`netd_cni::error::from_engine`), the Docker
//! plugin into `{"Err": …}` (`api::docker_plugin::PluginError`). Edges decide by variant,
//! never by a message's text; the messages are for people and stay as they were.
//!
//! The variants an edge acts on (a name taken, an object missing, a network that differs,
//! a kernel failure worth a reconcile and a retry) name the object; the reasons of a
//! refused request (`Invalid`, `Conflict`) are the model's or the engine's explanation,
//! which no edge inspects.

use crate::ipam::IpamError;
use crate::kernel::KernelError;
use crate::plan::PlanError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request is malformed or asks for what netd does not do. Nothing changed.
    #[error("{0}")]
    Invalid(String),
    #[error("no such network: {0}")]
    NoSuchNetwork(String),
    #[error("no such sandbox: {0}")]
    NoSuchSandbox(String),
    #[error("no such service: {name} in namespace {namespace}")]
    NoSuchService { namespace: String, name: String },
    #[error("sandbox {sandbox} is not connected to network {network}")]
    NotConnected { sandbox: String, network: String },
    /// A Docker network ID netd has no network for; the ID is shortened to 12 digits.
    #[error("network {0} is not known to netd (it was not created with -d netd, or netd's state was wiped)")]
    NoSuchDockerNetwork(String),
    #[error("endpoint {endpoint} is not known to netd on network {network}")]
    NoSuchDockerEndpoint { network: String, endpoint: String },
    /// A Docker IPAM PoolID netd did not hand out.
    #[error("no such netd address pool: {0:?}")]
    NoSuchPool(String),
    #[error("this daemon runs no DNS server")]
    NoDnsServer,
    #[error("sandbox {0} gets no DNS from netd (network mode host or none)")]
    NoDns(String),
    #[error("network with name {0} already exists")]
    NetworkExists(String),
    #[error("sandbox with name {0} already exists")]
    SandboxExists(String),
    /// The request clashes with what exists (a bridge, parent, port or interface name in
    /// use, a network still in use). Nothing changed.
    #[error("{0}")]
    Conflict(String),
    /// IPAM refused: a subnet overlaps, an address is taken, a pool is exhausted.
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// The network exists but is not the one the request describes (`NetworkRequest::
    /// mismatch`); the message says which property differs. Nothing changed.
    #[error("{0}")]
    NetworkMismatch(String),
    /// A kernel call outside a plan failed (a lookup, a probe, an nftables batch).
    #[error("{op}: {source}")]
    Kernel {
        op: String,
        #[source]
        source: KernelError,
    },
    /// A plan step failed; the applied steps were undone.
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A helper thread of the operation panicked; what it did was undone.
    #[error("{0} panicked")]
    Panicked(&'static str),
    /// The request needs a kernel feature this kernel lacks (a VLAN network without
    /// bridge VLAN filtering). Nothing was changed.
    #[error("{what}: this kernel has no {feature}")]
    Unsupported { what: String, feature: &'static str },
    /// netd's nftables tables in this namespace belong to another engine (another state
    /// dir, or the daemon next to the plugin). Nothing was changed.
    #[error(
        "netd's nftables tables in this network namespace belong to \"{theirs}\", not to \"{mine}\": \
         one netd manages a namespace (one netd daemon, or netd-cni standalone with one stateDir for \
         every network; next to a daemon use netd-cni's \"socket\")"
    )]
    Foreign { theirs: String, mine: String },
}

impl EngineError {
    /// `op` failed in the kernel: the constructor for `map_err`.
    pub fn kernel(op: impl Into<String>) -> impl FnOnce(KernelError) -> EngineError {
        let op = op.into();
        move |source| EngineError::Kernel { op, source }
    }

    /// Whether the kernel refused something netd expected to work: the state netd
    /// trusted may have drifted (a flushed ruleset, a link removed by hand), so a full
    /// reconcile and one more try can succeed.
    pub fn is_kernel_failure(&self) -> bool {
        matches!(self, EngineError::Kernel { .. } | EngineError::Plan(_))
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;
