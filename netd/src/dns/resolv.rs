//! The resolv.conf every sandbox gets: netd's server only, `ndots:0` (as Docker: a
//! dotted name is tried as-is first), and for sandboxes in a Kubernetes-style namespace
//! the search domains `<ns>.svc.<domain> svc.<domain> <domain>`.

use std::collections::BTreeMap;

use super::records::search_domains;

pub fn sandbox_resolv_conf(labels: &BTreeMap<String, String>, cluster_domain: &str) -> String {
    let mut out = String::from(
        "# written by netd: its embedded DNS server answers in this sandbox\nnameserver 127.0.0.11\n",
    );
    let search = search_domains(labels, cluster_domain);
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    out.push_str("options ndots:0\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_kubernetes() {
        let plain = sandbox_resolv_conf(&BTreeMap::new(), "cluster.local");
        assert!(plain.contains("nameserver 127.0.0.11\n") && plain.contains("options ndots:0\n"));
        assert!(!plain.contains("search"));
        let mut l = BTreeMap::new();
        l.insert("netd.namespace".to_string(), "shop".to_string());
        let k = sandbox_resolv_conf(&l, "cluster.local");
        assert!(k.contains("search shop.svc.cluster.local svc.cluster.local cluster.local\n"));
    }
}
