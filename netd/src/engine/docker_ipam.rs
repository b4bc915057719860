//! Docker's IPAM driver (`RequestPool`, `ReleasePool`, `RequestAddress`,
//! `ReleaseAddress`) over netd's pools: a Docker pool is a netd pool under the key
//! `docker-ipam:<cidr>`, which is also the PoolID Docker keeps, so Docker's and netctl's
//! subnets never overlap. Its leases are dockerd's (`LEASE_OWNER`): reconcile never
//! releases them, only `ReleaseAddress` does.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::docker::{is_ipam_pool, DockerPool, IPAM_PREFIX, LEASE_OWNER};
use super::{Engine, EngineError, Result};
use crate::ipam;
use crate::model::ParsedSubnet;
use crate::store::{Bucket, Txn};

impl Engine {
    pub(super) fn pool_id_for(subnet: &IpNetwork) -> String {
        format!("{IPAM_PREFIX}{subnet}")
    }

    fn ipam_pool(&self, id: &str) -> Result<&ipam::Pool> {
        if !is_ipam_pool(id) {
            return Err(EngineError::NoSuchPool(id.into()));
        }
        self.pools
            .get(id)
            .ok_or_else(|| EngineError::NoSuchPool(id.into()))
    }

    fn save_pool(&mut self, key: &str, pool: ipam::Pool) -> Result<()> {
        let mut txn = Txn::new();
        txn.put(Bucket::Pools, key, &pool);
        self.store.commit(&txn)?;
        self.pools.insert(key.to_string(), pool);
        Ok(())
    }

    /// `IpamDriver.RequestPool`: a subnet that no netd network, other Docker pool or host
    /// route uses; `pool` None picks one from the default pools.
    pub fn docker_request_pool(
        &mut self,
        pool: Option<IpNetwork>,
        sub_pool: Option<IpNetwork>,
        v6: bool,
    ) -> Result<DockerPool> {
        if let Some(p) = pool {
            if p.is_ipv6() != v6 {
                return Err(EngineError::Invalid(format!(
                    "pool {p} is not an {} subnet",
                    if v6 { "IPv6" } else { "IPv4" }
                )));
            }
            if p.network() != p.ip() {
                return Err(EngineError::Invalid(format!(
                    "invalid pool {p}: host bits are set; did you mean {}/{}?",
                    p.network(),
                    p.prefix()
                )));
            }
        }
        if sub_pool.is_some() && pool.is_none() {
            return Err(EngineError::Invalid("--ip-range needs --subnet".into()));
        }
        let routes = self
            .kernel
            .routed_prefixes()
            .map_err(EngineError::kernel("list the host's routes"))?;
        let existing: Vec<&ipam::Pool> = self.pools.values().collect();
        let req = pool.map(|subnet| ParsedSubnet {
            subnet,
            gateway: None,
            ip_range: sub_pool,
        });
        let p = ipam::new_pool(&self.cfg.ipam, "docker", v6, req.as_ref(), &existing, &routes)?;
        let id = Self::pool_id_for(&p.subnet);
        let subnet = p.subnet;
        self.save_pool(&id, p)?;
        tracing::info!(pool = %subnet, "docker: pool reserved");
        Ok(DockerPool { id, pool: subnet })
    }

    /// `IpamDriver.ReleasePool`.
    pub fn docker_release_pool(&mut self, id: &str) -> Result<()> {
        self.ipam_pool(id)?;
        let mut txn = Txn::new();
        txn.delete(Bucket::Pools, id);
        self.store.commit(&txn)?;
        self.pools.remove(id);
        tracing::info!(pool = %id, "docker: pool released");
        Ok(())
    }

    /// `IpamDriver.RequestAddress`: the gateway (a specific one moves the pool's gateway),
    /// a specific address, or the next free one.
    pub fn docker_request_address(
        &mut self,
        id: &str,
        want: Option<IpAddr>,
        gateway: bool,
    ) -> Result<IpNetwork> {
        let mut pool = self.ipam_pool(id)?.clone();
        let addr = if gateway {
            match want {
                None => pool.gateway,
                Some(a) if a == pool.gateway => a,
                Some(a) => {
                    // allocate() checks subnet, reserved addresses and existing leases.
                    pool.allocate(LEASE_OWNER, Some(a))?;
                    pool.release(a);
                    pool.gateway = a;
                    a
                }
            }
        } else {
            pool.allocate(LEASE_OWNER, want)?
        };
        let prefix = pool.prefix_len();
        self.save_pool(id, pool)?;
        IpNetwork::new(addr, prefix).map_err(|e| EngineError::Invalid(e.to_string()))
    }

    /// `IpamDriver.ReleaseAddress` (the gateway is part of the pool: nothing to free).
    pub fn docker_release_address(&mut self, id: &str, addr: IpAddr) -> Result<()> {
        let mut pool = self.ipam_pool(id)?.clone();
        if addr == pool.gateway || !pool.release(addr) {
            return Ok(());
        }
        self.save_pool(id, pool)
    }
}
