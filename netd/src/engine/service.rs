//! Service operations: create, list, inspect, remove. An ExternalName service touches no
//! kernel object: validate, commit to the store, update memory, then hand the new name
//! table to the DNS server before the API answers (so the CNAME resolves when `create`
//! returns and is gone when `rm` returns).

use super::{new_id, now, Engine, EngineError, Result};
use crate::dns::records::{namespace_of, service_names};
use crate::model::{service_key, Service, ServiceKind, ServiceRequest};
use crate::store::{Bucket, Txn};

impl Engine {
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    pub fn service(&self, namespace: &str, name: &str) -> Result<&Service> {
        self.services
            .get(&service_key(namespace, name))
            .ok_or_else(|| EngineError::NoSuchService {
                namespace: namespace.into(),
                name: name.into(),
            })
    }

    pub fn create_service(&mut self, req: &ServiceRequest) -> Result<Service> {
        let (name, namespace, kind) = req.parse().map_err(EngineError::Invalid)?;
        // The model and the nftables layout of cluster_ip services exist (docs/services.md),
        // but no datapath serves them: storing one would answer 201 for a VIP that
        // carries nothing. Refused, like any request netd cannot carry out.
        if matches!(kind, ServiceKind::ClusterIp(_)) {
            return Err(EngineError::Invalid(format!(
                "service {name}: this netd has no load-balancing datapath for cluster_ip services; \
                 only external_name services can be created"
            )));
        }
        let key = service_key(&namespace, &name);
        if self.services.contains_key(&key) {
            return Err(EngineError::Conflict(format!(
                "service {name} already exists in namespace {namespace}"
            )));
        }
        // A sandbox in that namespace already answers under the same name: one name
        // cannot be both its addresses and a CNAME.
        if let Some(s) = self
            .sandboxes
            .values()
            .find(|s| namespace_of(s) == Some(namespace.as_str()) && service_names(s).any(|n| n == name))
        {
            return Err(EngineError::Conflict(format!(
                "sandbox {} already answers as service {name} in namespace {namespace}",
                s.name
            )));
        }
        let svc = Service {
            name,
            namespace,
            id: new_id(),
            kind,
            labels: req.labels.clone(),
            created: now(),
        };
        let mut txn = Txn::new();
        txn.put(Bucket::Services, &key, &svc);
        self.store.commit(&txn)?;
        self.services.insert(key, svc.clone());
        self.sync_dns();
        tracing::info!(service = %svc.name, namespace = %svc.namespace, "service created");
        Ok(svc)
    }

    pub fn remove_service(&mut self, namespace: &str, name: &str) -> Result<()> {
        self.service(namespace, name)?;
        let key = service_key(namespace, name);
        let mut txn = Txn::new();
        txn.delete(Bucket::Services, &key);
        self.store.commit(&txn)?;
        self.services.remove(&key);
        self.sync_dns();
        tracing::info!(service = %name, namespace, "service removed");
        Ok(())
    }
}
