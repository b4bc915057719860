//! Kubernetes objects for `netctl apply -f` / `delete -f`: the `v1 Service` and
//! `discovery.k8s.io/v1 EndpointSlice` a kube-proxy replacement consumes, read with the
//! `k8s-openapi` types and translated into netd's service model (`translate`). Pure:
//! the engine allocates ClusterIPs and NodePorts and stores the result.
//!
//! The CLI turns a file (YAML, several `---` documents, or JSON) into JSON documents
//! (`documents`) and sends them to `POST /v1/k8s/apply`; the daemon decodes them here, so
//! the API takes the same objects from any client. A document may be a `List` (or a
//! `ServiceList`/`EndpointSliceList`) whose `items` are taken in order.

mod translate;

use k8s_openapi::api::core::v1::Service as K8sService;
use k8s_openapi::api::discovery::v1::EndpointSlice as K8sSlice;
use serde_json::Value;
use thiserror::Error;

pub use translate::{endpoint_slice, service, KubeService, KubeSlice, WantClusterIp};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum K8sError {
    #[error("invalid YAML: {0}")]
    Yaml(String),
    #[error("document {0}: expected a Kubernetes object (a mapping with apiVersion and kind)")]
    NotAnObject(usize),
    #[error(
        "document {doc}: unknown kind {kind:?} (apiVersion {api_version:?}): netd applies v1 Service and \
         discovery.k8s.io/v1 EndpointSlice"
    )]
    UnknownKind {
        doc: usize,
        kind: String,
        api_version: String,
    },
    #[error("{object}: {why}")]
    Invalid { object: String, why: String },
    #[error("no objects in the input")]
    Empty,
}

/// One object to apply or delete.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Service(Box<K8sService>),
    EndpointSlice(Box<K8sSlice>),
}

/// The JSON documents of a YAML or JSON text (JSON is YAML). Empty documents (a
/// trailing `---`) are skipped. The error is one line.
pub fn documents(text: &str) -> Result<Vec<Value>, K8sError> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v = Value::deserialize(doc).map_err(|e| K8sError::Yaml(one_line(&e.to_string())))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn str_field<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// The objects of `docs` (a JSON array of documents, or one document), lists flattened,
/// in order. Every object is checked for its kind and decoded with the k8s-openapi
/// types, which also check `apiVersion`.
pub fn objects(docs: &Value) -> Result<Vec<Object>, K8sError> {
    let docs: Vec<&Value> = match docs {
        Value::Array(a) => a.iter().collect(),
        v => vec![v],
    };
    let mut out = Vec::new();
    for (i, d) in docs.into_iter().enumerate() {
        collect(i + 1, d, &mut out)?;
    }
    if out.is_empty() {
        return Err(K8sError::Empty);
    }
    Ok(out)
}

fn collect(doc: usize, v: &Value, out: &mut Vec<Object>) -> Result<(), K8sError> {
    if !v.is_object() {
        return Err(K8sError::NotAnObject(doc));
    }
    let (api_version, kind) = (str_field(v, "apiVersion"), str_field(v, "kind"));
    let unknown = || K8sError::UnknownKind {
        doc,
        kind: kind.into(),
        api_version: api_version.into(),
    };
    let decode_err = |what: &str, e: serde_json::Error| K8sError::Invalid {
        object: format!("document {doc} ({what} {})", name_of(v)),
        why: one_line(&e.to_string()),
    };
    match (api_version, kind) {
        ("v1", "List" | "ServiceList") | ("discovery.k8s.io/v1", "EndpointSliceList") => {
            let items = v
                .get("items")
                .and_then(Value::as_array)
                .ok_or_else(|| K8sError::Invalid {
                    object: format!("document {doc} ({kind})"),
                    why: "a list needs items".into(),
                })?;
            for item in items {
                collect(doc, item, out)?;
            }
        }
        ("v1", "Service") => {
            let s: K8sService = serde_json::from_value(v.clone()).map_err(|e| decode_err("Service", e))?;
            out.push(Object::Service(Box::new(s)));
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            let s: K8sSlice =
                serde_json::from_value(v.clone()).map_err(|e| decode_err("EndpointSlice", e))?;
            out.push(Object::EndpointSlice(Box::new(s)));
        }
        _ => return Err(unknown()),
    }
    Ok(())
}

fn name_of(v: &Value) -> String {
    let m = v.get("metadata");
    let name = m.map(|m| str_field(m, "name")).unwrap_or("");
    if name.is_empty() {
        "without a name".into()
    } else {
        format!("{name:?}")
    }
}

#[cfg(test)]
mod tests;
