//! Kubernetes' own runtime path: containerd's CRI plugin (Debian's containerd) runs pod
//! sandboxes whose network netd-cni makes, delegating to the netd of the test's host
//! namespace. The test plays the kubelet with `integration::cri` (RunPodSandbox,
//! PodSandboxStatus, StopPodSandbox, RemovePodSandbox over containerd's socket). The pod
//! sandbox image is made here from busybox-static (no registry is reachable), imported
//! with `ctr`. Two pods get addresses from netd, reach each other, and after
//! Stop/RemovePodSandbox netd holds nothing for them. Then the flannel use case: two
//! nodes of a netd cluster (etcd), a containerd on each, pods on an overlay network
//! (`"driver": "overlay"`) reaching each other across the nodes.

mod cni_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cni_support::{cni_bin, no_reference_plugin, Mode, Node};
use integration::cluster::{eventually, Cluster};
use integration::cri::Cri;
use integration::harness::{nsenter, run, sh};
use integration::skip::{no_file, no_program, no_root};
use serde_json::json;

const PAUSE_IMAGE: &str = "docker.io/netd/pause:test";

/// One containerd with its own root, state, socket and CNI config dir, in a namespace.
struct Containerd {
    dir: PathBuf,
    child: Option<Child>,
    pods: Vec<String>,
}

impl Containerd {
    fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn start(netns: &Path, dir: &Path, conf_dir: &Path) -> Containerd {
        std::fs::create_dir_all(dir).unwrap();
        // The CRI plugin runs the reference `loopback` plugin for every pod besides the
        // network's: one bin dir with both.
        let bin = dir.join("cni-bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(cni_bin(), bin.join("netd-cni")).unwrap();
        std::os::unix::fs::symlink("/usr/lib/cni/loopback", bin.join("loopback")).unwrap();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  disable_apparmor = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"
    max_conf_num = 1
"#,
            d = dir.display(),
            bin = bin.display(),
            conf = conf_dir.display(),
        );
        let cfg = dir.join("config.toml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        // nsenter execs containerd without forking: the child's PID is containerd's.
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(["containerd", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let c = Containerd {
            dir: dir.to_path_buf(),
            child: Some(child),
            pods: Vec::new(),
        };
        let t0 = Instant::now();
        while Cri::connect(&c.socket()).and_then(|mut k| k.version()).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "containerd's CRI did not answer: {}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // The pod sandbox image, which no registry could give it.
        let image = pause_image(dir);
        c.ctr(&[
            "images",
            "import",
            "--snapshotter",
            "native",
            image.to_str().unwrap(),
        ]);
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn ctr(&self, args: &[&str]) {
        let o = run(Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", "k8s.io"])
            .args(args));
        assert!(o.ok(), "ctr {args:?}: {} {}", o.stdout, o.stderr);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Pods first (also one whose RunPodSandbox failed half-way: this containerd
        // lists it), so the shims exit with their tasks and the pod namespaces go; then
        // containerd, by its PID.
        if let Ok(mut k) = Cri::connect(&self.socket()) {
            let listed = k.pods().map(|p| p.into_iter().map(|p| p.id).collect::<Vec<_>>());
            for id in self.pods.drain(..).chain(listed.unwrap_or_default()) {
                let _ = k.stop_pod(&id);
                let _ = k.remove_pod(&id);
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = sh(&format!(
            "umount -R {0}/state 2>/dev/null; umount -R {0}/root 2>/dev/null; rm -rf {0}",
            self.dir.display()
        ));
    }
}

/// An OCI image archive holding busybox-static, whose entrypoint sleeps: the pod
/// sandbox's process (what the pause image is to a kubelet).
fn pause_image(dir: &Path) -> PathBuf {
    let out = dir.join("pause.tar");
    let script = format!(
        r#"set -eu
d={d}/pause-oci; rm -rf "$d"; mkdir -p "$d/blobs/sha256" "$d/layer/bin"
cp /bin/busybox "$d/layer/bin/busybox"
tar -C "$d/layer" --owner=0 --group=0 -cf "$d/layer.tar" bin
blob() {{ s=$(sha256sum "$1" | cut -d' ' -f1); cp "$1" "$d/blobs/sha256/$s"; echo "$s"; }}
L=$(blob "$d/layer.tar"); LS=$(stat -c %s "$d/layer.tar")
printf '{{"architecture":"amd64","os":"linux","config":{{"Entrypoint":["/bin/busybox","sleep","2147483647"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:%s"]}}}}' "$L" >"$d/config.json"
C=$(blob "$d/config.json"); CS=$(stat -c %s "$d/config.json")
printf '{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}}]}}' "$C" "$CS" "$L" "$LS" >"$d/manifest.json"
M=$(blob "$d/manifest.json"); MS=$(stat -c %s "$d/manifest.json")
printf '{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{{"architecture":"amd64","os":"linux"}},"annotations":{{"io.containerd.image.name":"{PAUSE_IMAGE}","org.opencontainers.image.ref.name":"test"}}}}]}}' "$M" "$MS" >"$d/index.json"
echo '{{"imageLayoutVersion":"1.0.0"}}' >"$d/oci-layout"
tar -C "$d" -cf {out} oci-layout index.json blobs
"#,
        d = dir.display(),
        out = out.display(),
    );
    let o = run(Command::new("bash").arg("-c").arg(script));
    assert!(o.ok(), "making the pause image: {}", o.stderr);
    out
}

fn unavailable() -> bool {
    no_root()
        || no_program("containerd", "containerd")
        || no_program("ctr", "containerd")
        || no_program("containerd-shim-runc-v2", "containerd")
        || no_program("runc", "runc")
        || no_reference_plugin("loopback")
        || no_file(
            Path::new("/bin/busybox"),
            "busybox-static, scripts/install-deps.sh",
        )
}

#[test]
fn containerd_cri_runs_pods_whose_network_netd_cni_makes() {
    if unavailable() {
        return;
    }
    let node = Node::new(Mode::Delegating);
    let base = node.host.base.clone();
    let conf_dir = base.join("cri-net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let net = "ndcri";
    let mut plugin = node.conf(net, "10.244.9.0/24", json!({"isDefaultGateway": true}));
    plugin.as_object_mut().unwrap().remove("cniVersion");
    plugin.as_object_mut().unwrap().remove("name");
    let list = json!({"cniVersion": "1.0.0", "name": net, "plugins": [plugin]});
    std::fs::write(conf_dir.join("10-netd.conflist"), list.to_string()).unwrap();

    let mut ctd = Containerd::start(&node.host.netns(), &base.join("ctd"), &conf_dir);
    let mut cri = Cri::connect(&ctd.socket()).unwrap();
    let v = cri.version().unwrap();
    assert_eq!(v.runtime_name, "containerd", "{v:?}");

    let logs = base.join("pod-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut pods = Vec::new();
    for name in ["web", "db"] {
        let id = cri
            .run_pod(name, "default", &logs)
            .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e:#}\n{}", ctd.log()));
        ctd.pods.push(id.clone());
        let ip = cri.pod_ip(&id).unwrap();
        let ns = cri.pod_netns(&id).unwrap();
        pods.push((id, ip, ns));
    }
    // The addresses are netd's: from the config's subnet, one sandbox per pod in netd.
    for (_, ip, _) in &pods {
        assert!(ip.starts_with("10.244.9."), "pod IP {ip:?} not from netd's pool");
    }
    assert_ne!(pods[0].1, pods[1].1);
    let sandboxes = node.host.ctl(&["sandbox", "ls", "-q"]);
    assert_eq!(
        sandboxes.lines().filter(|l| l.starts_with("cni-")).count(),
        2,
        "netd's sandboxes: {sandboxes}"
    );
    // Pod to pod, and each pod's eth0 holds its address.
    let ping = nsenter(&pods[0].2, &["ping", "-c", "1", "-W", "2", &pods[1].1]);
    assert!(ping.ok(), "web -> db: {} {}", ping.stdout, ping.stderr);
    let addr = nsenter(&pods[1].2, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.stdout.contains(&pods[1].1), "db's eth0: {}", addr.stdout);

    // A kubelet stops, then removes; netd then holds nothing for either pod.
    for (id, _, _) in &pods {
        cri.stop_pod(id).unwrap();
        cri.remove_pod(id).unwrap();
    }
    ctd.pods.clear();
    assert!(cri.pods().unwrap().is_empty(), "containerd still lists pods");
    let t0 = Instant::now();
    loop {
        let left = node.host.ctl(&["sandbox", "ls", "-q"]);
        if !left.lines().any(|l| l.starts_with("cni-")) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "sandboxes left in netd: {left}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn containerd_pods_on_two_nodes_reach_each_other_over_an_overlay_network() {
    if unavailable() || no_program("etcd", "etcd-server") || no_program("etcdctl", "etcd-client") {
        return;
    }
    let c = Cluster::new(2);
    c.overlay(0, "podnet", "10.66.0.0/24");
    let mut pods = Vec::new();
    let mut runtimes = Vec::new();
    for (i, pod) in [(0, "front"), (1, "back")] {
        let host = c.node(i);
        let conf_dir = host.base.join("cri-net.d");
        std::fs::create_dir_all(&conf_dir).unwrap();
        // What a cluster's nodes would all carry: the network by name, the node's daemon.
        let list = json!({"cniVersion": "1.0.0", "name": "podnet", "plugins": [{
            "type": "netd-cni", "driver": "overlay",
            "socket": host.socket().display().to_string(),
        }]});
        std::fs::write(conf_dir.join("10-netd.conflist"), list.to_string()).unwrap();
        let mut ctd = Containerd::start(&host.netns(), &host.base.join("ctd"), &conf_dir);
        let mut cri = Cri::connect(&ctd.socket()).unwrap();
        let logs = host.base.join("pod-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let id = cri
            .run_pod(pod, "default", &logs)
            .unwrap_or_else(|e| panic!("RunPodSandbox {pod} on node {i}: {e:#}\n{}", ctd.log()));
        ctd.pods.push(id.clone());
        let ip = cri.pod_ip(&id).unwrap();
        assert!(
            ip.starts_with("10.66.0."),
            "pod {pod}: IP {ip:?} not from the overlay's subnet"
        );
        pods.push((cri.pod_netns(&id).unwrap(), ip));
        runtimes.push((ctd, cri, id));
    }
    assert_ne!(pods[0].1, pods[1].1);
    // Across the nodes, both ways, once the other node's entry has arrived.
    for (from, to) in [(0, 1), (1, 0)] {
        assert!(
            eventually(10, || nsenter(
                &pods[from].0,
                &["ping", "-c", "1", "-W", "1", &pods[to].1]
            )
            .ok()),
            "pod {from} -> pod {to} ({}) over the overlay",
            pods[to].1
        );
    }
    for (ctd, cri, id) in &mut runtimes {
        cri.stop_pod(id).unwrap();
        cri.remove_pod(id).unwrap();
        ctd.pods.clear();
    }
    for i in 0..2 {
        assert!(
            eventually(10, || !c
                .node(i)
                .ctl(&["sandbox", "ls", "-q"])
                .lines()
                .any(|l| l.starts_with("cni-"))),
            "node {i} still holds a pod's sandbox"
        );
    }
}
