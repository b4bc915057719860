//! A CRI client for the tests: Kubernetes' own runtime path (kubelet → containerd's CRI
//! plugin → CNI) without a kubelet. It speaks `runtime.v1.RuntimeService` over the
//! runtime's unix socket with the handful of calls a kubelet makes to give a pod its
//! network: RunPodSandbox, PodSandboxStatus, StopPodSandbox, RemovePodSandbox.
//!
//! `crictl` would be the usual driver, but it is a Go program that no package registry
//! this project can reach ships, so the messages are declared here with prost's derive:
//! only the fields these calls use, with the field numbers of the CRI's `api.proto`
//! (unknown fields are skipped on decode, absent ones are the defaults, as protobuf has
//! it). A test drives a real containerd with it (`integration/tests/cni_cri.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionRequest {
    #[prost(string, tag = "1")]
    pub version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionResponse {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(string, tag = "2")]
    pub runtime_name: String,
    #[prost(string, tag = "3")]
    pub runtime_version: String,
    #[prost(string, tag = "4")]
    pub runtime_api_version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub uid: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxPodSandboxConfig {
    #[prost(string, tag = "1")]
    pub cgroup_parent: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxConfig {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<PodSandboxMetadata>,
    #[prost(string, tag = "2")]
    pub hostname: String,
    #[prost(string, tag = "3")]
    pub log_directory: String,
    #[prost(map = "string, string", tag = "6")]
    pub labels: HashMap<String, String>,
    #[prost(map = "string, string", tag = "7")]
    pub annotations: HashMap<String, String>,
    #[prost(message, optional, tag = "8")]
    pub linux: Option<LinuxPodSandboxConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RunPodSandboxRequest {
    #[prost(message, optional, tag = "1")]
    pub config: Option<PodSandboxConfig>,
    #[prost(string, tag = "2")]
    pub runtime_handler: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RunPodSandboxResponse {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

/// StopPodSandbox and RemovePodSandbox take the same request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxIdRequest {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatusRequest {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
    #[prost(bool, tag = "2")]
    pub verbose: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodIp {
    #[prost(string, tag = "1")]
    pub ip: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxNetworkStatus {
    #[prost(string, tag = "1")]
    pub ip: String,
    #[prost(message, repeated, tag = "2")]
    pub additional_ips: Vec<PodIp>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatus {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<PodSandboxMetadata>,
    /// 0 ready, 1 not ready.
    #[prost(int32, tag = "3")]
    pub state: i32,
    #[prost(message, optional, tag = "5")]
    pub network: Option<PodSandboxNetworkStatus>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatusResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<PodSandboxStatus>,
    /// With `verbose`: JSON documents; containerd's "info" holds the sandbox's runtime
    /// spec, and with it the path of the pod's network namespace.
    #[prost(map = "string, string", tag = "2")]
    pub info: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandbox {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<PodSandboxMetadata>,
    #[prost(int32, tag = "3")]
    pub state: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodSandboxResponse {
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<PodSandbox>,
}

/// A connection to one runtime's CRI socket, with a runtime of its own for the calls.
pub struct Cri {
    rt: tokio::runtime::Runtime,
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
}

impl Cri {
    pub fn connect(socket: &Path) -> Result<Cri> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let path: PathBuf = socket.to_path_buf();
        let ch = rt
            .block_on(async move {
                // The URI is required and ignored: the connector dials the socket.
                tonic::transport::Endpoint::try_from("http://cri.invalid")?
                    .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                        let p = path.clone();
                        async move {
                            let s = tokio::net::UnixStream::connect(p).await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                        }
                    }))
                    .await
            })
            .with_context(|| format!("CRI socket {}", socket.display()))?;
        Ok(Cri {
            rt,
            grpc: tonic::client::Grpc::new(ch),
        })
    }

    fn call<Q, R>(&mut self, method: &'static str, req: Q) -> Result<R>
    where
        Q: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        let grpc = &mut self.grpc;
        self.rt.block_on(async move {
            grpc.ready().await.context("CRI connection")?;
            let path = http::uri::PathAndQuery::from_static(method);
            let codec = tonic_prost::ProstCodec::<Q, R>::default();
            let resp = grpc
                .unary(tonic::Request::new(req), path, codec)
                .await
                .map_err(|s| anyhow::anyhow!("{method}: {} ({:?})", s.message(), s.code()))?;
            Ok(resp.into_inner())
        })
    }

    pub fn version(&mut self) -> Result<VersionResponse> {
        self.call(
            "/runtime.v1.RuntimeService/Version",
            VersionRequest { version: "v1".into() },
        )
    }

    /// A pod sandbox as a kubelet asks for one: metadata, hostname, a log directory.
    pub fn run_pod(&mut self, name: &str, namespace: &str, log_dir: &Path) -> Result<String> {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}-{}", std::process::id()),
                namespace: namespace.into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: log_dir.display().to_string(),
            ..Default::default()
        };
        let r: RunPodSandboxResponse = self.call(
            "/runtime.v1.RuntimeService/RunPodSandbox",
            RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            },
        )?;
        Ok(r.pod_sandbox_id)
    }

    pub fn status(&mut self, id: &str) -> Result<PodSandboxStatusResponse> {
        self.call(
            "/runtime.v1.RuntimeService/PodSandboxStatus",
            PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            },
        )
    }

    /// The pod's IP as the runtime reports it (from the CNI result).
    pub fn pod_ip(&mut self, id: &str) -> Result<String> {
        let s = self.status(id)?;
        Ok(s.status.and_then(|s| s.network).map(|n| n.ip).unwrap_or_default())
    }

    /// The path of the pod's network namespace, from the verbose status's runtime spec.
    pub fn pod_netns(&mut self, id: &str) -> Result<PathBuf> {
        let s = self.status(id)?;
        let info = s.info.get("info").context("no \"info\" in the verbose status")?;
        let v: serde_json::Value = serde_json::from_str(info)?;
        let nss = v
            .pointer("/runtimeSpec/linux/namespaces")
            .and_then(|n| n.as_array())
            .context("no namespaces in the runtime spec")?;
        nss.iter()
            .find(|n| n["type"] == "network")
            .and_then(|n| n["path"].as_str())
            .map(PathBuf::from)
            .context("no network namespace path in the runtime spec")
    }

    /// Every pod sandbox the runtime has (ListPodSandbox without a filter).
    pub fn pods(&mut self) -> Result<Vec<PodSandbox>> {
        let r: ListPodSandboxResponse = self.call("/runtime.v1.RuntimeService/ListPodSandbox", Empty {})?;
        Ok(r.items)
    }

    pub fn stop_pod(&mut self, id: &str) -> Result<()> {
        let _: Empty = self.call(
            "/runtime.v1.RuntimeService/StopPodSandbox",
            PodSandboxIdRequest {
                pod_sandbox_id: id.into(),
            },
        )?;
        Ok(())
    }

    pub fn remove_pod(&mut self, id: &str) -> Result<()> {
        let _: Empty = self.call(
            "/runtime.v1.RuntimeService/RemovePodSandbox",
            PodSandboxIdRequest {
                pod_sandbox_id: id.into(),
            },
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn a_status_with_fields_we_do_not_declare_decodes() {
        // created_at (4, varint) and labels (7) are not declared; they must be skipped.
        let mut buf = Vec::new();
        let st = PodSandboxStatus {
            id: "abc".into(),
            state: 0,
            network: Some(PodSandboxNetworkStatus {
                ip: "10.1.0.2".into(),
                additional_ips: vec![],
            }),
            ..Default::default()
        };
        st.encode(&mut buf).unwrap();
        buf.extend_from_slice(&[0x20, 0x05]); // field 4, varint 5
        let back = PodSandboxStatus::decode(buf.as_slice()).unwrap();
        assert_eq!(back.network.unwrap().ip, "10.1.0.2");
        assert_eq!(back.id, "abc");
    }
}
