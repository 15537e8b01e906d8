//! What containerd's CRI plugin (through go-cni) sends for a pod: the loopback network first
//! (`cni-loopback`, ifname `lo`), then the pod network on `eth0`, all with the pod's CNI_ARGS
//! and the capability args `portMappings`, `ipRanges`, `dns`, `bandwidth`; the netns is
//! `/var/run/netns/cni-<uuid>`.

use serde_json::{json, Map, Value};

use super::{conf_list_from_bytes, Cni, NetworkConfigList, Result, RuntimeConf};

/// go-cni's built-in loopback network (`WithLoNetwork`).
pub const LOOPBACK_CONFLIST: &str =
    r#"{"cniVersion":"0.3.1","name":"cni-loopback","plugins":[{"type":"loopback"}]}"#;

/// A pod as CRI describes it to go-cni.
#[derive(Clone, Debug)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub sandbox_id: String,
    pub uid: String,
    /// `/var/run/netns/cni-<uuid>`.
    pub netns: String,
    pub port_mappings: Vec<Value>,
    pub ip_ranges: Option<Value>,
    pub dns: Value,
    pub bandwidth: Option<Value>,
}

/// A random UUID (the kernel's), as CRI names netns and pods.
pub fn uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("read /proc/sys/kernel/random/uuid")
        .trim()
        .to_string()
}

impl Pod {
    /// CRI's `CNI_ARGS` order.
    pub fn cni_args(&self) -> Vec<(String, String)> {
        [
            ("IgnoreUnknown", "1"),
            ("K8S_POD_NAMESPACE", self.namespace.as_str()),
            ("K8S_POD_NAME", self.name.as_str()),
            ("K8S_POD_INFRA_CONTAINER_ID", self.sandbox_id.as_str()),
            ("K8S_POD_UID", self.uid.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// CRI's capability args: portMappings and dns always, ipRanges with a pod CIDR,
    /// bandwidth with the bandwidth annotations.
    pub fn capability_args(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(
            "portMappings".into(),
            Value::Array(self.port_mappings.clone()),
        );
        if let Some(r) = &self.ip_ranges {
            m.insert("ipRanges".into(), r.clone());
        }
        m.insert("dns".into(), self.dns.clone());
        if let Some(b) = &self.bandwidth {
            m.insert("bandwidth".into(), b.clone());
        }
        m
    }

    pub fn runtime_conf(&self, ifname: &str) -> RuntimeConf {
        RuntimeConf {
            container_id: self.sandbox_id.clone(),
            netns: self.netns.clone(),
            ifname: ifname.into(),
            args: self.cni_args(),
            capability_args: self.capability_args(),
        }
    }
}

/// A CRI-style pod with defaults: DNS as kubelet passes it, no ports.
pub fn pod(name: &str, netns: &str) -> Pod {
    Pod {
        namespace: "default".into(),
        name: name.into(),
        sandbox_id: uuid().replace('-', ""),
        uid: uuid(),
        netns: netns.into(),
        port_mappings: Vec::new(),
        ip_ranges: None,
        dns: json!({"servers": ["10.96.0.10"], "searches": ["default.svc.cluster.local"], "options": ["ndots:5"]}),
        bandwidth: None,
    }
}

/// go-cni's `Setup`: loopback (`lo`) then the pod network (`eth0`); returns the pod
/// network's result.
pub fn setup(cni: &Cni, net: &NetworkConfigList, pod: &Pod) -> Result<Value> {
    let lo = conf_list_from_bytes(LOOPBACK_CONFLIST.as_bytes())?;
    cni.add_network_list(&lo, &pod.runtime_conf("lo"))?;
    cni.add_network_list(net, &pod.runtime_conf("eth0"))
}

/// go-cni's `Check` on the pod network.
pub fn check(cni: &Cni, net: &NetworkConfigList, pod: &Pod) -> Result<()> {
    cni.check_network_list(net, &pod.runtime_conf("eth0"))
}

/// go-cni's `Remove`: the networks in the same order as set up.
pub fn remove(cni: &Cni, net: &NetworkConfigList, pod: &Pod) -> Result<()> {
    let lo = conf_list_from_bytes(LOOPBACK_CONFLIST.as_bytes())?;
    cni.del_network_list(&lo, &pod.runtime_conf("lo"))?;
    cni.del_network_list(net, &pod.runtime_conf("eth0"))
}
