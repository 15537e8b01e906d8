//! CNI network configurations from a conf dir, found the way libcni's `LoadConfList` finds
//! them (`.conflist` files first, then single-plugin `.conf`/`.json` files, each group in
//! lexical order; the first whose `name` matches wins), reduced to what a Docker network
//! bound to one of them needs: its `bridge` plugin entry (options, bridge name) and that
//! entry's host-local `ipam` section (ranges, `dataDir`, so the store is exactly the one the
//! other runtime's calls use).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::err;
use crate::error::Result;

/// host-local's `dataDir` when the config has none (reference `defaultDataDir`).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
/// The bridge plugin's bridge name when the config has none.
pub const DEFAULT_BRIDGE: &str = "cni0";

/// A Docker network's (or pool's) binding to a CNI network, snapshotted at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniBinding {
    /// The CNI network name (also host-local's store name).
    pub network: String,
    /// The file it came from (named in every error).
    pub file: PathBuf,
    /// The `bridge` plugin entry, verbatim, with `ipam.ranges` normalized (a legacy
    /// top-level `subnet` becomes range set 0, as host-local does).
    pub bridge: Value,
    /// A cluster network (`-o cluster=`): cnm-agent's run dir. Its ranges follow the host's
    /// blocks, so the bridge config is rebuilt at every use ([`crate::cluster::current`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<PathBuf>,
}

/// One host-local range as the conflist gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfRange {
    pub subnet: IpNetwork,
    pub gateway: IpAddr,
}

impl CniBinding {
    pub fn bridge_name(&self) -> String {
        self.bridge["bridge"]
            .as_str()
            .filter(|b| !b.is_empty())
            .unwrap_or(DEFAULT_BRIDGE)
            .to_string()
    }

    pub fn ipam(&self) -> &Value {
        &self.bridge["ipam"]
    }

    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(
            self.ipam()["dataDir"]
                .as_str()
                .filter(|d| !d.is_empty())
                .unwrap_or(DEFAULT_DATA_DIR),
        )
    }

    /// The first range of the range set of this family (host-local's gateway default: the
    /// first host address).
    pub fn range(&self, v6: bool) -> Option<ConfRange> {
        self.ipam()["ranges"].as_array()?.iter().find_map(|set| {
            let r = set.as_array()?.first()?;
            let subnet: IpNetwork = r["subnet"].as_str()?.parse().ok()?;
            let subnet = IpNetwork::new(subnet.network(), subnet.prefix()).ok()?;
            if subnet.is_ipv6() != v6 {
                return None;
            }
            let gateway = r["gateway"]
                .as_str()
                .and_then(|g| g.parse().ok())
                .unwrap_or_else(|| crate::pool::first_host(&subnet));
            Some(ConfRange { subnet, gateway })
        })
    }

    /// The `ipam` section restricted to the range sets of `subnets` (a v4-only request must
    /// not also take a v6 address).
    pub fn ipam_for(&self, subnets: &[IpNetwork]) -> Value {
        let mut ipam = self.ipam().clone();
        let sets: Vec<Value> = ipam["ranges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|set| {
                set[0]["subnet"]
                    .as_str()
                    .and_then(|s| s.parse::<IpNetwork>().ok())
                    .is_some_and(|n| subnets.iter().any(|w| w.contains(n.ip())))
            })
            .cloned()
            .collect();
        ipam["ranges"] = json!(sets);
        ipam
    }
}

fn files(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e))
        })
        .collect();
    v.sort();
    v
}

/// `(file, name, plugins)` of every readable configuration in `dir`, in libcni's order.
fn all(dir: &Path) -> Vec<(PathBuf, String, Vec<Value>)> {
    let mut out = Vec::new();
    let read = |p: &Path| -> Option<Value> { serde_json::from_slice(&std::fs::read(p).ok()?).ok() };
    for f in files(dir, &["conflist"]) {
        if let Some(v) = read(&f) {
            let name = v["name"].as_str().unwrap_or_default().to_string();
            let plugins = v["plugins"].as_array().cloned().unwrap_or_default();
            out.push((f, name, plugins));
        }
    }
    for f in files(dir, &["conf", "json"]) {
        if let Some(v) = read(&f) {
            let name = v["name"].as_str().unwrap_or_default().to_string();
            out.push((f, name, vec![v]));
        }
    }
    out
}

fn normalize_ipam(ipam: &mut Value) {
    if ipam.get("ranges").is_none() {
        if let Some(subnet) = ipam.get("subnet").cloned() {
            let mut r = json!({ "subnet": subnet });
            for k in ["rangeStart", "rangeEnd", "gateway"] {
                if let Some(v) = ipam.get(k) {
                    r[k] = v.clone();
                }
            }
            ipam["ranges"] = json!([[r]]);
            if let Some(o) = ipam.as_object_mut() {
                for k in ["subnet", "rangeStart", "rangeEnd", "gateway"] {
                    o.remove(k);
                }
            }
        }
    }
}

/// The CNI network `name` of `dir`, with its bridge plugin and host-local IPAM.
pub fn load(dir: &Path, name: &str) -> Result<CniBinding> {
    let found = all(dir);
    let Some((file, _, plugins)) = found.iter().find(|(_, n, _)| n == name) else {
        let names: Vec<&str> = found.iter().map(|(_, n, _)| n.as_str()).collect();
        return Err(err!(
            "cni.network={name}: no CNI network named {name:?} in {} (found: {}); put its conflist there or start cnm-shim with --cni-conf-dir <its directory>",
            dir.display(),
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        ));
    };
    let Some(bridge) = plugins.iter().find(|p| p["type"] == "bridge") else {
        return Err(err!(
            "cni.network={name}: {} has no bridge plugin; cnm-shim can only share bridge networks",
            file.display()
        ));
    };
    let mut bridge = bridge.clone();
    if bridge["ipam"]["type"] != "host-local" {
        return Err(err!(
            "cni.network={name}: the bridge plugin of {} does not use host-local IPAM (ipam.type {}); cnm-shim shares addresses only through a host-local store",
            file.display(),
            bridge["ipam"]["type"]
        ));
    }
    normalize_ipam(&mut bridge["ipam"]);
    let b = CniBinding {
        network: name.to_string(),
        file: file.clone(),
        bridge,
        cluster: None,
    };
    if b.range(false).is_none() && b.range(true).is_none() {
        return Err(err!(
            "cni.network={name}: {} has no usable ipam range (ipam.ranges[][].subnet)",
            file.display()
        ));
    }
    Ok(b)
}

/// The CNI network of `dir` one of whose ranges is exactly `subnet` (a `--subnet` that names
/// a CNI network's subnet shares its store). Unreadable files are skipped.
pub fn find_by_subnet(dir: &Path, subnet: &IpNetwork) -> Option<CniBinding> {
    all(dir).into_iter().find_map(|(_, name, _)| {
        let b = load(dir, &name).ok()?;
        (b.range(subnet.is_ipv6())?.subnet == *subnet).then_some(b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_like_libcni() {
        let dir = std::env::temp_dir().join(format!("cnm-cniconf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("10-a.conflist"),
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"loopback"},
               {"type":"bridge","bridge":"br-a","ipMasq":true,
                "ipam":{"type":"host-local","dataDir":"/x","subnet":"10.7.0.0/24"}},
               {"type":"portmap"}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("20-b.conf"),
            r#"{"cniVersion":"0.4.0","name":"b","type":"bridge",
               "ipam":{"type":"host-local","ranges":[[{"subnet":"10.8.0.0/24","gateway":"10.8.0.254"}],[{"subnet":"fd00:8::/64"}]]}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("30-c.conflist"),
            r#"{"name":"c","plugins":[{"type":"macvlan"}]}"#,
        )
        .unwrap();
        let a = load(&dir, "a").unwrap();
        assert_eq!(a.bridge_name(), "br-a");
        assert_eq!(a.data_dir(), PathBuf::from("/x"));
        let r = a.range(false).unwrap();
        assert_eq!(r.gateway.to_string(), "10.7.0.1");
        assert!(a.ipam().get("subnet").is_none());
        let b = load(&dir, "b").unwrap();
        assert_eq!(b.bridge_name(), DEFAULT_BRIDGE);
        assert_eq!(b.data_dir(), PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(b.range(false).unwrap().gateway.to_string(), "10.8.0.254");
        assert_eq!(b.range(true).unwrap().subnet.to_string(), "fd00:8::/64");
        let only4 = b.ipam_for(&["10.8.0.0/24".parse().unwrap()]);
        assert_eq!(only4["ranges"].as_array().unwrap().len(), 1);
        let e = load(&dir, "c").unwrap_err();
        assert!(
            e.0.contains("30-c.conflist") && e.0.contains("no bridge"),
            "{e}"
        );
        let e = load(&dir, "zz").unwrap_err();
        assert!(
            e.0.contains("found: a, c, b") && e.0.contains("--cni-conf-dir"),
            "{e}"
        );
        assert_eq!(
            find_by_subnet(&dir, &"10.8.0.0/24".parse().unwrap())
                .unwrap()
                .network,
            "b"
        );
        assert!(find_by_subnet(&dir, &"10.9.0.0/24".parse().unwrap()).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
