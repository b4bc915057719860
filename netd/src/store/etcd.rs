//! The cluster store on etcd (v3 API over gRPC, `etcd-client`): `cluster::ClusterStore`.
//!
//! Keys and records are `cluster::keys` and the JSON of `cluster`'s records. Every write
//! that must not race is one transaction: a network with its VNI, a block claim, a
//! network's removal while it has no endpoints. The node's record and its endpoints are
//! bound to one lease, renewed every third of its TTL by a task of this store; if etcd
//! was away longer than the TTL, the lease is gone, so a new one is granted, the node
//! record put again and `lease_epoch` bumped (the agent then republishes endpoints).
//!
//! Unary calls get a deadline of their own (`CALL_TIMEOUT`): the client's per-request
//! timeout would also cut the long-lived watch and keep-alive streams.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Notify;

use crate::cluster::ipsec::{KeyRing, RingAck};
use crate::cluster::wireguard::{WgRecord, WgRotation};
use crate::cluster::{
    keys, AddrRecord, BlockRecord, ClusterError, ClusterStore, EndpointRecord, NetworkRecord, NodeRecord,
    ServiceRecord, StackPartRecord, StackRecord, LEASE_TTL_S,
};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub struct EtcdStore {
    client: Client,
    lease: Arc<AtomicI64>,
    epoch: Arc<AtomicU64>,
    changed: Arc<Notify>,
    /// Woken for changes under `stacks/` (and after a reconnect): `cluster::stacks`.
    stacks_changed: Arc<Notify>,
    /// Woken for changes under `wireguard/` (and after a reconnect): the agent's
    /// WireGuard follower, which moves a peer to its new key without waiting for a pass.
    wireguard_changed: Arc<Notify>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            t.abort();
        }
    }
}

async fn call<T>(
    op: &str,
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => r.map_err(ClusterError::store(op)),
        Err(_) => Err(ClusterError::Store {
            op: op.to_string(),
            msg: format!("no answer within {} s", CALL_TIMEOUT.as_secs()),
        }),
    }
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    // Our plain records always serialize.
    serde_json::to_vec(v).unwrap_or_default()
}

impl EtcdStore {
    /// Connects (failing within a few seconds when no endpoint answers) and starts the
    /// watch on the whole prefix. With `tls`, over TLS (`https://` endpoints) with its CA
    /// and, when given, its client certificate.
    pub async fn connect(
        endpoints: &[String],
        tls: Option<&crate::cluster::ClusterTls>,
    ) -> Result<EtcdStore, ClusterError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(3), Duration::from_secs(3));
        if let Some(t) = tls {
            let mut o =
                etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(&t.ca));
            if let Some((cert, key)) = &t.identity {
                o = o.identity(etcd_client::Identity::from_pem(cert, key));
            }
            opts = opts.with_tls(o);
        }
        let mut client = call("connect", Client::connect(endpoints, Some(opts))).await?;
        // A first request: connect() alone may succeed before any endpoint answered.
        call("status", client.status()).await?;
        let store = EtcdStore {
            client,
            lease: Arc::new(AtomicI64::new(0)),
            epoch: Arc::new(AtomicU64::new(0)),
            changed: Arc::new(Notify::new()),
            stacks_changed: Arc::new(Notify::new()),
            wireguard_changed: Arc::new(Notify::new()),
            tasks: Mutex::new(Vec::new()),
        };
        let watch = tokio::spawn(watch_loop(
            store.client.clone(),
            Arc::clone(&store.changed),
            vec![
                (keys::stacks(), Arc::clone(&store.stacks_changed)),
                (keys::wireguards(), Arc::clone(&store.wireguard_changed)),
            ],
        ));
        store.spawned(watch);
        Ok(store)
    }

    fn spawned(&self, t: tokio::task::JoinHandle<()>) {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(t);
    }

    /// Revokes the lease: the node and its endpoints leave the cluster now, not after
    /// the TTL (a clean daemon stop).
    pub async fn leave(&self) -> Result<(), ClusterError> {
        let id = self.lease.load(Ordering::Relaxed);
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            t.abort();
        }
        if id != 0 {
            call("revoke lease", self.client.clone().lease_revoke(id)).await?;
        }
        Ok(())
    }

    /// Puts `v` at `k` under the node's lease (`what` names it in errors).
    async fn put_leased(&self, what: &str, k: String, v: Vec<u8>) -> Result<(), ClusterError> {
        let lease = self.lease.load(Ordering::Relaxed);
        call(
            &format!("put {what} {k}"),
            self.client
                .clone()
                .put(k.clone(), v, Some(PutOptions::new().with_lease(lease))),
        )
        .await
        .map(drop)
    }

    /// The record at `k` (`what` names it in errors), if there is one.
    async fn get_json<T: DeserializeOwned>(&self, what: &str, k: String) -> Result<Option<T>, ClusterError> {
        let resp = call(&format!("get {what}"), self.client.clone().get(k, None)).await?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(kv) => serde_json::from_slice(kv.value())
                .map(Some)
                .map_err(|e| ClusterError::Invalid(format!("{what} in the store is unreadable: {e}"))),
        }
    }

    /// Puts `new` at `k` if the value there is still `old` (`None`: no key), one
    /// transaction; `Ok(false)` when someone changed it first.
    async fn replace_json<T: Serialize>(
        &self,
        what: &str,
        k: String,
        old: Option<&T>,
        new: &T,
    ) -> Result<bool, ClusterError> {
        let cmp = match old {
            None => Compare::create_revision(k.clone(), CompareOp::Equal, 0),
            Some(o) => Compare::value(k.clone(), CompareOp::Equal, json(o)),
        };
        let txn = Txn::new().when([cmp]).and_then([TxnOp::put(k, json(new), None)]);
        let r = call(&format!("put {what}"), self.client.clone().txn(txn)).await?;
        Ok(r.succeeded())
    }

    async fn list<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, ClusterError> {
        let mut c = self.client.clone();
        let resp = call(
            &format!("get {prefix}"),
            c.get(prefix, Some(GetOptions::new().with_prefix())),
        )
        .await?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| match serde_json::from_slice(kv.value()) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!(key = %String::from_utf8_lossy(kv.key()), error = %e, "cluster store: skipping a bad record");
                    None
                }
            })
            .collect())
    }
}

/// Grants a lease and puts the node's record under it.
async fn grant_and_put(client: &Client, rec: &NodeRecord) -> Result<i64, ClusterError> {
    let mut c = client.clone();
    let lease = call("grant lease", c.lease_grant(LEASE_TTL_S, None)).await?.id();
    call(
        &format!("put node {}", rec.name),
        c.put(
            keys::node(&rec.name),
            json(rec),
            Some(PutOptions::new().with_lease(lease)),
        ),
    )
    .await?;
    Ok(lease)
}

/// Renews the lease every third of its TTL; replaces it when etcd says it is gone or the
/// stream breaks and the lease cannot be confirmed.
async fn keep_alive_loop(
    client: Client,
    rec: NodeRecord,
    lease: Arc<AtomicI64>,
    epoch: Arc<AtomicU64>,
    changed: Arc<Notify>,
) {
    let period = Duration::from_secs((LEASE_TTL_S / 3).max(1) as u64);
    loop {
        let id = lease.load(Ordering::Relaxed);
        let alive = async {
            let (mut keeper, mut stream) = client.clone().lease_keep_alive(id).await?;
            loop {
                keeper.keep_alive().await?;
                match tokio::time::timeout(CALL_TIMEOUT, stream.message()).await {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                    Ok(Ok(_)) => return Ok::<(), etcd_client::Error>(()), // expired
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Ok(()),
                }
                tokio::time::sleep(period).await;
            }
        };
        if let Err(e) = alive.await {
            tracing::warn!(error = %e, "cluster: lease keep-alive failed");
        }
        // Still ours? (A broken stream does not mean an expired lease.)
        let ttl = client.clone().lease_time_to_live(id, None).await.map(|r| r.ttl());
        if matches!(ttl, Ok(t) if t > 0) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        loop {
            match grant_and_put(&client, &rec).await {
                Ok(new) => {
                    lease.store(new, Ordering::Relaxed);
                    epoch.fetch_add(1, Ordering::Relaxed);
                    changed.notify_one();
                    tracing::warn!(
                        lease = new,
                        "cluster: lease lost; registered again under a new one"
                    );
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cluster: cannot register the node; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Wakes the agent at every change under the prefix, and after each (re)connect of the
/// watch, since changes may have been missed meanwhile (a compaction, etcd away): the
/// agent re-reads everything it needs, so a wake-up is also a full resync. Each of
/// `parts` (a key prefix and its waker) is also woken for changes under its prefix.
async fn watch_loop(client: Client, changed: Arc<Notify>, parts: Vec<(String, Arc<Notify>)>) {
    loop {
        let res = async {
            let mut stream = client
                .clone()
                .watch(keys::PREFIX, Some(WatchOptions::new().with_prefix()))
                .await?;
            changed.notify_one();
            for (_, n) in &parts {
                n.notify_one();
            }
            while let Some(resp) = stream.message().await? {
                if resp.canceled() {
                    break;
                }
                if !resp.events().is_empty() {
                    changed.notify_one();
                }
                for (prefix, n) in &parts {
                    let under = |e: &etcd_client::Event| {
                        e.kv().is_some_and(|kv| kv.key().starts_with(prefix.as_bytes()))
                    };
                    if resp.events().iter().any(under) {
                        n.notify_one();
                    }
                }
            }
            Ok::<(), etcd_client::Error>(())
        }
        .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "cluster: watch broke; resyncing");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl ClusterStore for EtcdStore {
    async fn register_node(&self, rec: &NodeRecord) -> Result<(), ClusterError> {
        let id = grant_and_put(&self.client, rec).await?;
        self.lease.store(id, Ordering::Relaxed);
        let t = tokio::spawn(keep_alive_loop(
            self.client.clone(),
            rec.clone(),
            Arc::clone(&self.lease),
            Arc::clone(&self.epoch),
            Arc::clone(&self.changed),
        ));
        self.spawned(t);
        Ok(())
    }

    fn lease_epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>, ClusterError> {
        self.list(&keys::nodes()).await
    }

    async fn networks(&self) -> Result<Vec<NetworkRecord>, ClusterError> {
        self.list(&keys::networks()).await
    }

    async fn create_network(&self, rec: &NetworkRecord) -> Result<bool, ClusterError> {
        let (k, v) = (keys::network(&rec.name), keys::vni(rec.vni));
        let txn = Txn::new()
            .when([
                Compare::create_revision(k.clone(), CompareOp::Equal, 0),
                Compare::create_revision(v.clone(), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put(k, json(rec), None),
                TxnOp::put(v, rec.name.clone(), None),
            ]);
        let r = call(
            &format!("create network {}", rec.name),
            self.client.clone().txn(txn),
        )
        .await?;
        Ok(r.succeeded())
    }

    async fn delete_network(&self, rec: &NetworkRecord) -> Result<bool, ClusterError> {
        // No endpoint key under the network: its range's newest creation is revision 0.
        let eps = keys::endpoints_of(&rec.name);
        let txn = Txn::new()
            .when([Compare::create_revision(eps, CompareOp::Equal, 0).with_prefix()])
            .and_then([
                TxnOp::delete(keys::network(&rec.name), None),
                TxnOp::delete(keys::vni(rec.vni), None),
                TxnOp::delete(keys::blocks(&rec.name), Some(DeleteOptions::new().with_prefix())),
                TxnOp::delete(keys::addrs(&rec.name), Some(DeleteOptions::new().with_prefix())),
            ]);
        let r = call(
            &format!("delete network {}", rec.name),
            self.client.clone().txn(txn),
        )
        .await?;
        Ok(r.succeeded())
    }

    async fn blocks(&self, net: &str) -> Result<Vec<BlockRecord>, ClusterError> {
        self.list(&keys::blocks(net)).await
    }

    async fn claim_block(&self, rec: &BlockRecord) -> Result<bool, ClusterError> {
        let k = keys::block(&rec.network, &rec.block);
        let txn = Txn::new()
            .when([Compare::create_revision(k.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(k, json(rec), None)]);
        let r = call(
            &format!("claim block {}", rec.block),
            self.client.clone().txn(txn),
        )
        .await?;
        Ok(r.succeeded())
    }

    async fn release_block(&self, rec: &BlockRecord) -> Result<bool, ClusterError> {
        let k = keys::block(&rec.network, &rec.block);
        let txn = Txn::new()
            .when([Compare::value(k.clone(), CompareOp::Equal, json(rec))])
            .and_then([TxnOp::delete(k, None)]);
        let r = call(
            &format!("release block {}", rec.block),
            self.client.clone().txn(txn),
        )
        .await?;
        Ok(r.succeeded())
    }

    async fn endpoints(&self) -> Result<Vec<EndpointRecord>, ClusterError> {
        self.list(&keys::endpoints()).await
    }

    async fn put_endpoint(&self, rec: &EndpointRecord) -> Result<(), ClusterError> {
        self.put_leased(
            "endpoint",
            keys::endpoint(&rec.network, &rec.node, &rec.sandbox),
            json(rec),
        )
        .await
    }

    async fn delete_endpoint(&self, rec: &EndpointRecord) -> Result<(), ClusterError> {
        let k = keys::endpoint(&rec.network, &rec.node, &rec.sandbox);
        call(
            &format!("delete endpoint {k}"),
            self.client.clone().delete(k.clone(), None),
        )
        .await
        .map(drop)
    }

    async fn services(&self) -> Result<Vec<ServiceRecord>, ClusterError> {
        self.list(&keys::services()).await
    }

    async fn create_service(&self, rec: &ServiceRecord, addrs: &[AddrRecord]) -> Result<bool, ClusterError> {
        let k = keys::service(rec.namespace(), &rec.request.name);
        let mut when = vec![Compare::create_revision(k.clone(), CompareOp::Equal, 0)];
        let mut then = vec![TxnOp::put(k.clone(), json(rec), None)];
        for a in addrs {
            let ak = keys::addr(&a.network, a.ip);
            when.push(Compare::create_revision(ak.clone(), CompareOp::Equal, 0));
            then.push(TxnOp::put(ak, json(a), None));
        }
        let txn = Txn::new().when(when).and_then(then);
        let r = call(&format!("create service {k}"), self.client.clone().txn(txn)).await?;
        Ok(r.succeeded())
    }

    async fn replace_service(&self, old: &ServiceRecord, new: &ServiceRecord) -> Result<bool, ClusterError> {
        let k = keys::service(old.namespace(), &old.request.name);
        let txn = Txn::new()
            .when([Compare::value(k.clone(), CompareOp::Equal, json(old))])
            .and_then([TxnOp::put(k.clone(), json(new), None)]);
        let r = call(&format!("update service {k}"), self.client.clone().txn(txn)).await?;
        Ok(r.succeeded())
    }

    async fn delete_service(&self, rec: &ServiceRecord, addrs: &[AddrRecord]) -> Result<(), ClusterError> {
        let k = keys::service(rec.namespace(), &rec.request.name);
        let mut ops = vec![TxnOp::delete(k.clone(), None)];
        ops.extend(
            addrs
                .iter()
                .map(|a| TxnOp::delete(keys::addr(&a.network, a.ip), None)),
        );
        call(
            &format!("delete service {k}"),
            self.client.clone().txn(Txn::new().and_then(ops)),
        )
        .await
        .map(drop)
    }

    async fn addrs(&self, net: &str) -> Result<Vec<AddrRecord>, ClusterError> {
        self.list(&keys::addrs(net)).await
    }

    async fn claim_addr(&self, rec: &AddrRecord) -> Result<bool, ClusterError> {
        let k = keys::addr(&rec.network, rec.ip);
        let txn = Txn::new()
            .when([Compare::create_revision(k.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(k, json(rec), None)]);
        let r = call(&format!("claim address {}", rec.ip), self.client.clone().txn(txn)).await?;
        Ok(r.succeeded())
    }

    async fn release_addr_of_gone(&self, rec: &AddrRecord, node: &str) -> Result<bool, ClusterError> {
        let k = keys::addr(&rec.network, rec.ip);
        let txn = Txn::new()
            .when([
                Compare::value(k.clone(), CompareOp::Equal, json(rec)),
                Compare::create_revision(keys::node(node), CompareOp::Equal, 0),
            ])
            .and_then([TxnOp::delete(k, None)]);
        let r = call(
            &format!("release address {}", rec.ip),
            self.client.clone().txn(txn),
        )
        .await?;
        Ok(r.succeeded())
    }

    async fn stacks(&self) -> Result<Vec<StackRecord>, ClusterError> {
        self.list(&keys::stacks()).await
    }

    async fn put_stack(&self, rec: &StackRecord) -> Result<(), ClusterError> {
        let k = keys::stack(&rec.name);
        call(
            &format!("put stack {k}"),
            self.client.clone().put(k.clone(), json(rec), None),
        )
        .await
        .map(drop)
    }

    async fn delete_stack(&self, name: &str) -> Result<bool, ClusterError> {
        let k = keys::stack(name);
        let r = call(
            &format!("delete stack {k}"),
            self.client.clone().delete(k.clone(), None),
        )
        .await?;
        Ok(r.deleted() > 0)
    }

    async fn stack_parts(&self, stack: &str) -> Result<Vec<StackPartRecord>, ClusterError> {
        self.list(&keys::stack_parts(stack)).await
    }

    async fn put_stack_part(&self, rec: &StackPartRecord) -> Result<(), ClusterError> {
        self.put_leased("stack part", keys::stack_part(&rec.stack, &rec.node), json(rec))
            .await
    }

    async fn delete_stack_part(&self, stack: &str, node: &str) -> Result<(), ClusterError> {
        let k = keys::stack_part(stack, node);
        call(
            &format!("delete stack part {k}"),
            self.client.clone().delete(k.clone(), None),
        )
        .await
        .map(drop)
    }

    async fn ipsec_ring(&self) -> Result<Option<KeyRing>, ClusterError> {
        self.get_json("the IPsec key ring", keys::ipsec_ring()).await
    }

    async fn replace_ipsec_ring(&self, old: Option<&KeyRing>, new: &KeyRing) -> Result<bool, ClusterError> {
        self.replace_json("the IPsec key ring", keys::ipsec_ring(), old, new)
            .await
    }

    async fn ipsec_acks(&self) -> Result<Vec<RingAck>, ClusterError> {
        self.list(&keys::ipsec_acks()).await
    }

    async fn put_ipsec_ack(&self, rec: &RingAck) -> Result<(), ClusterError> {
        self.put_leased("IPsec ack", keys::ipsec_ack(&rec.node), json(rec))
            .await
    }

    async fn wireguards(&self) -> Result<Vec<WgRecord>, ClusterError> {
        self.list(&keys::wireguards()).await
    }

    async fn put_wireguard(&self, rec: &WgRecord) -> Result<(), ClusterError> {
        self.put_leased("WireGuard key", keys::wireguard(&rec.node), json(rec))
            .await
    }

    async fn wireguard_rotation(&self) -> Result<Option<WgRotation>, ClusterError> {
        self.get_json("the WireGuard key epoch", keys::wireguard_rotation())
            .await
    }

    async fn replace_wireguard_rotation(
        &self,
        old: Option<&WgRotation>,
        new: &WgRotation,
    ) -> Result<bool, ClusterError> {
        self.replace_json("the WireGuard key epoch", keys::wireguard_rotation(), old, new)
            .await
    }

    async fn delete_wireguard(&self, node: &str) -> Result<(), ClusterError> {
        let k = keys::wireguard(node);
        call(
            &format!("delete {k}"),
            self.client.clone().delete(k.clone(), None),
        )
        .await
        .map(drop)
    }

    async fn stacks_changed(&self) {
        self.stacks_changed.notified().await
    }

    async fn wireguard_changed(&self) {
        self.wireguard_changed.notified().await
    }

    async fn changed(&self) {
        self.changed.notified().await
    }
}
