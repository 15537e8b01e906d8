//! The CNI network configurations the shim hands to `bridge` and `host-local`, and the
//! host-local calls of the IPAM driver.
//!
//! Every docker network of one shim instance shares one host-local store (`name` =
//! [`Config::store_name`]), because IPAM calls only name a pool, while the `bridge` plugin's
//! single IPAM call for a dual-stack endpoint needs the v4 and v6 pools in one store. Pools of
//! one instance never overlap, so an address identifies its pool.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::err;
use crate::error::Result;
use crate::exec::{Call, Runner};
use crate::state::Network;

pub const CNI_VERSION: &str = "1.0.0";
/// `CNI_IFNAME` of every call (host-local keys reservations by container ID + ifname).
pub const IFNAME: &str = "eth0";

/// One host-local range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub subnet: IpNetwork,
    pub start: Option<IpAddr>,
    pub end: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
}

impl Range {
    pub fn whole(subnet: IpNetwork, gateway: Option<IpAddr>) -> Range {
        Range {
            subnet,
            start: None,
            end: None,
            gateway,
        }
    }

    fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("subnet".into(), json!(self.subnet.to_string()));
        if let Some(s) = self.start {
            m.insert("rangeStart".into(), json!(s.to_string()));
        }
        if let Some(e) = self.end {
            m.insert("rangeEnd".into(), json!(e.to_string()));
        }
        if let Some(g) = self.gateway {
            m.insert("gateway".into(), json!(g.to_string()));
        }
        Value::Object(m)
    }
}

/// The `ipam` section: host-local with one range set per range.
pub fn ipam_section(cfg: &Config, ranges: &[Range]) -> Value {
    let sets: Vec<Value> = ranges.iter().map(|r| json!([r.to_value()])).collect();
    json!({
        "type": "host-local",
        "dataDir": cfg.ipam_dir().to_string_lossy(),
        "ranges": sets,
    })
}

/// `args.cni` of a call: requested addresses (host-local) and MAC (bridge).
pub fn with_args(conf: &Value, ips: &[IpAddr], mac: Option<&str>) -> Value {
    let mut c = conf.clone();
    let mut cni = Map::new();
    if !ips.is_empty() {
        let v: Vec<String> = ips.iter().map(ToString::to_string).collect();
        cni.insert("ips".into(), json!(v));
    }
    if let Some(m) = mac.filter(|m| !m.is_empty()) {
        cni.insert("mac".into(), json!(m));
    }
    if !cni.is_empty() {
        c["args"] = json!({ "cni": cni });
    }
    c
}

/// The `bridge` plugin's config for an endpoint of `net` (addresses come from `ranges`).
pub fn bridge_conf(cfg: &Config, net: &Network, ranges: &[Range]) -> Value {
    let o = &net.opts;
    let mut c = json!({
        "cniVersion": CNI_VERSION,
        "name": cfg.store_name(),
        "type": "bridge",
        "bridge": net.bridge,
        "isGateway": true,
        "ipMasq": o.ip_masq && !net.internal,
        "hairpinMode": o.hairpin,
        "promiscMode": o.promisc,
        "portIsolation": o.port_isolation,
        "macspoofchk": o.macspoofchk,
        "isolateBridges": o.isolate_bridges,
        "ipam": ipam_section(cfg, ranges),
    });
    if o.mtu != 0 {
        c["mtu"] = json!(o.mtu);
    }
    if o.vlan != 0 {
        c["vlan"] = json!(o.vlan);
    }
    if let Some(b) = &o.ip_masq_backend {
        c["ipMasqBackend"] = json!(b);
    }
    c
}

/// Where host-local keeps a set of reservations: `<data_dir>/<name>/<ip>` holding
/// `<containerID>\r\n<ifname>`. The shim's own store, or a CNI network's store shared with
/// other runtimes; `ifname` is the `CNI_IFNAME` of every shim call on it, which marks the
/// shim's reservations in a shared store (host-local keys them by container ID + ifname).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreRef {
    pub data_dir: PathBuf,
    pub name: String,
    pub ifname: String,
}

impl StoreRef {
    /// The shim's own store (every unbound network).
    pub fn own(cfg: &Config) -> StoreRef {
        StoreRef {
            data_dir: cfg.ipam_dir(),
            name: cfg.store_name(),
            ifname: IFNAME.to_string(),
        }
    }

    /// The store of a bound CNI network: what `conf` (a bridge or host-local conf with an
    /// `ipam` section) names.
    pub fn of_conf(conf: &Value, ifname: &str) -> StoreRef {
        let data_dir = conf["ipam"]["dataDir"]
            .as_str()
            .filter(|d| !d.is_empty())
            .unwrap_or(crate::cniconf::DEFAULT_DATA_DIR);
        StoreRef {
            data_dir: PathBuf::from(data_dir),
            name: conf["name"].as_str().unwrap_or_default().to_string(),
            ifname: ifname.to_string(),
        }
    }

    /// Whether the store is shared with other runtimes (only entries with our ifname are ours).
    pub fn shared(&self, cfg: &Config) -> bool {
        *self != StoreRef::own(cfg)
    }
}

/// A host-local configuration: the store and the `ipam` section of calls on it.
#[derive(Debug, Clone)]
pub struct Ipam {
    pub store: StoreRef,
    pub section: Value,
}

impl Ipam {
    /// The shim's own store with `ranges`.
    pub fn own(cfg: &Config, ranges: &[Range]) -> Ipam {
        Ipam {
            store: StoreRef::own(cfg),
            section: ipam_section(cfg, ranges),
        }
    }

    /// A config good enough for a DEL in `store` (host-local releases by ID and ifname
    /// across the whole store; the range only has to be valid).
    pub fn for_release(store: &StoreRef, ip: Option<IpAddr>) -> Ipam {
        let r = any_range(ip.unwrap_or(IpAddr::from([192, 0, 2, 1])));
        let sets = json!([[r.to_value()]]);
        Ipam {
            store: store.clone(),
            section: json!({
                "type": "host-local",
                "dataDir": store.data_dir.to_string_lossy(),
                "ranges": sets,
            }),
        }
    }

    fn conf(&self) -> Value {
        json!({
            "cniVersion": CNI_VERSION,
            "name": self.store.name,
            "ipam": self.section,
        })
    }
}

/// CNI_NETNS of direct host-local calls: irrelevant to host-local but required non-empty for
/// ADD; deliberately a path that does not exist (the plugin refuses its own netns).
const HL_NETNS: &str = "/proc/cnm-shim-ipam-only";

/// Reserves an address of `subnet` through host-local under `handle`: `want` if given, else
/// the next free one. Returns the address with the subnet's prefix.
pub fn reserve(
    runner: &Runner,
    ipam: &Ipam,
    handle: &str,
    subnet: &IpNetwork,
    want: Option<IpAddr>,
) -> Result<IpNetwork> {
    let wants: Vec<IpAddr> = want.into_iter().collect();
    let conf = with_args(&ipam.conf(), &wants, None);
    let out = runner.run(&Call {
        plugin: "host-local",
        command: "ADD",
        container_id: handle,
        netns: HL_NETNS,
        ifname: &ipam.store.ifname,
        args: "",
        conf: &conf,
    })?;
    let res = cni_core::result::parse_bytes(&out, CNI_VERSION)
        .map_err(|e| err!("host-local returned an unreadable result: {}", e.msg))?;
    res.ips
        .iter()
        .map(|i| i.address)
        .find(|a| subnet.contains(a.ip()))
        .map(|a| IpNetwork::new(a.ip(), subnet.prefix()).unwrap_or(a))
        .ok_or_else(|| err!("host-local returned no address in {subnet}"))
}

/// Releases everything host-local holds under `handle` in `store` (idempotent).
pub fn release(runner: &Runner, store: &StoreRef, handle: &str) -> Result<()> {
    let ipam = Ipam::for_release(store, None);
    runner
        .run(&Call {
            plugin: "host-local",
            command: "DEL",
            container_id: handle,
            netns: "",
            ifname: &store.ifname,
            args: "",
            conf: &ipam.conf(),
        })
        .map(|_| ())
}

/// A harmless range for a DEL when no pool is known any more (host-local only validates it).
pub fn any_range(ip: IpAddr) -> Range {
    let prefix = if ip.is_ipv6() { 64 } else { 24 };
    let subnet = crate::pool::network_of(ip, prefix)
        .unwrap_or_else(|_| "192.0.2.0/24".parse().expect("valid"));
    Range::whole(subnet, None)
}

/// Reservations in a host-local store: `(ip, container ID, ifname)` (the reference's format).
/// In a shared store only the shim's (its ifname) are listed.
pub fn store_entries(cfg: &Config, store: &StoreRef) -> Vec<(IpAddr, String, String)> {
    let dir = store.data_dir.join(&store.name);
    let shared = store.shared(cfg);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut v = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(ip) = name.parse::<IpAddr>() else {
            continue;
        };
        let Ok(content) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let mut lines = content.lines();
        let id = lines.next().unwrap_or("").trim().to_string();
        let ifname = lines.next().unwrap_or(IFNAME).trim().to_string();
        if shared && ifname != store.ifname {
            continue;
        }
        v.push((ip, id, ifname));
    }
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netopts::NetOpts;
    use crate::state::{Phase, Subnet};

    fn cfg() -> Config {
        Config::from_args([
            "--name".to_string(),
            "t".into(),
            "--state-dir".into(),
            "/s".into(),
        ])
        .unwrap()
        .unwrap()
    }

    #[test]
    fn bridge_conf_shape() {
        let net = Network {
            id: "n".into(),
            phase: Phase::Ready,
            bridge: "cnm-x".into(),
            bridge_preexisted: false,
            internal: true,
            ipam: true,
            v4: Some(Subnet {
                pool: "10.1.0.0/24".parse().unwrap(),
                gateway: Some("10.1.0.1".parse().unwrap()),
            }),
            v6: None,
            opts: NetOpts {
                mtu: 1400,
                ..Default::default()
            },
            cni: None,
        };
        let r = Range::whole(
            "10.1.0.0/24".parse().unwrap(),
            Some("10.1.0.1".parse().unwrap()),
        );
        let c = bridge_conf(&cfg(), &net, &[r]);
        assert_eq!(c["name"], "cnm-t");
        assert_eq!(c["ipMasq"], false); // internal
        assert_eq!(c["mtu"], 1400);
        assert_eq!(c["ipam"]["dataDir"], "/s/ipam");
        assert_eq!(c["ipam"]["ranges"][0][0]["gateway"], "10.1.0.1");
        let a = with_args(
            &c,
            &["10.1.0.5".parse().unwrap()],
            Some("02:00:00:00:00:01"),
        );
        assert_eq!(a["args"]["cni"]["ips"][0], "10.1.0.5");
        assert_eq!(a["args"]["cni"]["mac"], "02:00:00:00:00:01");
        assert!(with_args(&c, &[], None).get("args").is_none());
    }
}
