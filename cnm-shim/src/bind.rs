//! Docker networks bound to a CNI network (`-o cni.network=<name>`): one bridge, one
//! host-local store and one set of bridge options for containers of two runtimes (Docker
//! through the shim, containerd & co. through libcni).
//!
//! * The pool must come from the shim's IPAM driver (`--ipam-driver <shim>`), which reserves
//!   in the CNI network's own store (`<ipam.dataDir>/<name>`): Docker's IPAM knows nothing of
//!   the other runtime's reservations. A pool is bound by `--ipam-opt cni.network=<name>` or
//!   by a `--subnet` equal to a CNI network's subnet.
//! * The shim's calls on a shared store use `CNI_IFNAME` = [`Config::bound_ifname`], which
//!   marks its reservations (host-local keys them by container ID + ifname): pool releases and
//!   reconciliation only ever touch those.
//! * Docker options that contradict the conflist are refused, naming both values and the file.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::{Map, Value};

use crate::api::{CreateNetwork, IpamData, RequestPool};
use crate::cni::{self, Ipam, StoreRef};
use crate::cniconf::{self, CniBinding};
use crate::config::Config;
use crate::err;
use crate::error::Result;
use crate::ipam::{GLOBAL_SPACE, LOCAL_SPACE};
use crate::netopts::NetOpts;
use crate::pool;
use crate::state::State;

/// The option key, in `-o` (network driver) and `--ipam-opt` (IPAM driver).
pub const OPT_CNI_NETWORK: &str = "cni.network";

/// The command that creates a network bound to `b` (named in errors). `--subnet` is needed:
/// dockerd checks a pool the IPAM driver chose against the host's routes, and the CNI
/// network's bridge routes that subnet as soon as one container runs on it.
pub fn command(cfg: &Config, b: &CniBinding) -> String {
    let subnet = b
        .range(false)
        .map_or_else(|| "<subnet>".to_string(), |r| r.subnet.to_string());
    format!(
        "docker network create -d {d} --ipam-driver {d} --subnet {subnet} -o cni.network={net} <name>",
        d = cfg.name,
        net = b.network
    )
}

pub fn store(cfg: &Config, b: &CniBinding) -> StoreRef {
    StoreRef {
        data_dir: b.data_dir(),
        name: b.network.clone(),
        ifname: cfg.bound_ifname(),
    }
}

/// host-local config for addresses of `subnets` in the bound network's store.
pub fn ipam(cfg: &Config, b: &CniBinding, subnets: &[IpNetwork]) -> Result<Ipam> {
    let b = crate::cluster::current(b)?;
    Ok(Ipam {
        store: store(cfg, &b),
        section: b.ipam_for(subnets),
    })
}

/// The `bridge` config of an endpoint: the conflist's bridge entry as it is (same bridge,
/// same options), its name (= store name), and its ipam restricted to the endpoint's families.
pub fn bridge_conf(cfg: &Config, b: &CniBinding, subnets: &[IpNetwork]) -> Result<Value> {
    let b = crate::cluster::current(b)?;
    let mut c = b.bridge.clone();
    c["cniVersion"] = Value::from(cni::CNI_VERSION);
    c["name"] = Value::from(b.network.clone());
    c["ipam"] = ipam(cfg, &b, subnets)?.section;
    if let Some(o) = c.as_object_mut() {
        // Per-call data of the other runtime, never meant for ours.
        o.remove("args");
        o.remove("runtimeConfig");
        o.remove("prevResult");
    }
    Ok(c)
}

/// RequestPool: the CNI network a pool request names (`--ipam-opt cni.network=`) or whose
/// subnet it asks for (`--subnet`).
pub fn pool_binding(cfg: &Config, req: &RequestPool) -> Result<Option<CniBinding>> {
    if let Some(name) = req.options.get(OPT_CNI_NETWORK) {
        return cniconf::load(&cfg.cni_conf_dir, name).map(Some);
    }
    if req.pool.is_empty() {
        return Ok(None);
    }
    let subnet = pool::parse_subnet(&req.pool, "--subnet")?;
    Ok(cniconf::find_by_subnet(&cfg.cni_conf_dir, &subnet))
}

/// RequestPool on a bound network: the conflist's subnet of that family.
pub fn pool_subnet(b: &CniBinding, req: &RequestPool) -> Result<IpNetwork> {
    let fam = if req.v6 { 6 } else { 4 };
    let Some(r) = b.range(req.v6) else {
        return Err(err!(
            "CNI network {} ({}) has no IPv{fam} range; {}",
            b.network,
            b.file.display(),
            if req.v6 {
                "drop --ipv6"
            } else {
                "cnm-shim needs an IPv4 range to share"
            }
        ));
    };
    if !req.pool.is_empty() {
        let want = pool::parse_subnet(&req.pool, "--subnet")?;
        if want != r.subnet {
            return Err(err!(
                "--subnet {want} contradicts CNI network {}: {} has subnet {}; drop --subnet or use {}",
                b.network,
                b.file.display(),
                r.subnet,
                r.subnet
            ));
        }
    }
    if !req.sub_pool.is_empty() {
        return Err(err!(
            "--ip-range {}: a network shared with CNI network {} allocates from the ranges of {}; drop --ip-range",
            req.sub_pool,
            b.network,
            b.file.display()
        ));
    }
    Ok(r.subnet)
}

/// The gateway of a bound pool: the conflist range's (a `--gateway` must equal it).
pub fn gateway(b: &CniBinding, subnet: &IpNetwork, want: Option<IpAddr>) -> Result<IpAddr> {
    let gw = b
        .range(subnet.is_ipv6())
        .map(|r| r.gateway)
        .unwrap_or_else(|| pool::first_host(subnet));
    match want {
        Some(w) if w != gw => Err(err!(
            "--gateway {w} contradicts CNI network {}: {} has gateway {gw}; drop --gateway or use {gw}",
            b.network,
            b.file.display()
        )),
        _ => Ok(gw),
    }
}

fn get_ci<'a>(o: &'a Value, key: &str) -> Option<&'a Value> {
    o.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn conf_bool(b: &CniBinding, key: &str) -> bool {
    get_ci(&b.bridge, key).and_then(Value::as_bool) == Some(true)
}

fn conf_num(b: &CniBinding, key: &str) -> u64 {
    get_ci(&b.bridge, key).and_then(Value::as_u64).unwrap_or(0)
}

/// Docker `-o` options that contradict the conflist's bridge entry: `(option, docker value,
/// conflist key, conflist value)`.
pub(crate) fn contradictions(
    b: &CniBinding,
    generic: &Map<String, Value>,
    o: &NetOpts,
) -> Vec<(String, String, &'static str, String)> {
    let mut v = Vec::new();
    for (key, given) in generic {
        let given = given
            .as_str()
            .map_or_else(|| given.to_string(), str::to_string);
        let (ck, ours, theirs): (&'static str, String, String) =
            match key.to_ascii_lowercase().as_str() {
                "bridge" | "com.docker.network.bridge.name" => (
                    "bridge",
                    o.bridge.clone().unwrap_or_default(),
                    b.bridge_name(),
                ),
                "mtu" | "com.docker.network.driver.mtu" => {
                    ("mtu", o.mtu.to_string(), conf_num(b, "mtu").to_string())
                }
                "ipmasq" | "com.docker.network.bridge.enable_ip_masquerade" => (
                    "ipMasq",
                    o.ip_masq.to_string(),
                    conf_bool(b, "ipMasq").to_string(),
                ),
                "ipmasqbackend" => (
                    "ipMasqBackend",
                    o.ip_masq_backend.clone().unwrap_or_default(),
                    get_ci(&b.bridge, "ipMasqBackend")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                ),
                "hairpinmode" => (
                    "hairpinMode",
                    o.hairpin.to_string(),
                    conf_bool(b, "hairpinMode").to_string(),
                ),
                "promiscmode" => (
                    "promiscMode",
                    o.promisc.to_string(),
                    conf_bool(b, "promiscMode").to_string(),
                ),
                "vlan" => ("vlan", o.vlan.to_string(), conf_num(b, "vlan").to_string()),
                "portisolation" | "com.docker.network.bridge.enable_icc" => (
                    "portIsolation",
                    o.port_isolation.to_string(),
                    conf_bool(b, "portIsolation").to_string(),
                ),
                "macspoofchk" => (
                    "macspoofchk",
                    o.macspoofchk.to_string(),
                    conf_bool(b, "macspoofchk").to_string(),
                ),
                "isolatebridges" => (
                    "isolateBridges",
                    o.isolate_bridges.to_string(),
                    conf_bool(b, "isolateBridges").to_string(),
                ),
                // Docker-side only (published ports, interface naming in the container).
                _ => continue,
            };
        if ours != theirs {
            let theirs = if ck == "mtu" && theirs == "0" {
                "unset (the link default)".to_string()
            } else {
                theirs
            };
            v.push((key.clone(), given, ck, theirs));
        }
    }
    v
}

/// CreateNetwork: checks a network against the CNI network it names (`Some(name)`), or a
/// network without `-o cni.network` against pools bound to one. Returns the binding.
pub fn network(
    cfg: &Config,
    s: &State,
    name: Option<&str>,
    generic: &Map<String, Value>,
    opts: &NetOpts,
    req: &CreateNetwork,
    internal: bool,
) -> Result<Option<CniBinding>> {
    let data: Vec<(&IpamData, bool)> = req
        .ipv4_data
        .iter()
        .map(|d| (d, false))
        .chain(req.ipv6_data.iter().map(|d| (d, true)))
        .collect();
    let pool_of = |d: &IpamData| -> Option<&crate::state::Pool> {
        let subnet = pool::parse_subnet(&d.pool, "subnet").ok()?;
        s.pools.values().find(|p| p.subnet == subnet)
    };
    let Some(name) = name else {
        for (d, _) in &data {
            if let Some(b) = pool_of(d).and_then(|p| p.cni.as_ref()) {
                return Err(err!(
                    "subnet {} belongs to CNI network {} ({}); to share it add -o cni.network={}: {}; otherwise choose another --subnet",
                    d.pool,
                    b.network,
                    b.file.display(),
                    b.network,
                    command(cfg, b)
                ));
            }
        }
        return Ok(None);
    };
    let b = cniconf::load(&cfg.cni_conf_dir, name)?;
    let cmd = command(cfg, &b);
    if internal {
        return Err(err!(
            "--internal cannot be used with -o cni.network={name}: the bridge {} is shared with the other runtime's containers; drop --internal",
            b.bridge_name()
        ));
    }
    for (d, v6) in &data {
        let fam = if *v6 { 6 } else { 4 };
        let Some(r) = b.range(*v6) else {
            return Err(err!(
                "cni.network={name}: {} has no IPv{fam} range but the network has IPv{fam} subnet {}; drop {}",
                b.file.display(),
                d.pool,
                if *v6 { "--ipv6" } else { "--subnet" }
            ));
        };
        if d.address_space != LOCAL_SPACE && d.address_space != GLOBAL_SPACE {
            return Err(err!(
                "cni.network={name}: the addresses of this network come from Docker's IPAM driver (address space {:?}), which does not know the addresses the other runtime holds in the shared store; add --ipam-driver {} --subnet {}: {cmd}",
                d.address_space,
                cfg.name,
                r.subnet
            ));
        }
        let subnet = pool::parse_subnet(&d.pool, "subnet")?;
        if subnet != r.subnet {
            return Err(err!(
                "subnet {subnet} contradicts CNI network {name}: {} has subnet {}; create the network with: {cmd}",
                b.file.display(),
                r.subnet
            ));
        }
        match pool_of(d).and_then(|p| p.cni.as_ref()) {
            Some(pb) if pb.network == name => {}
            Some(pb) => {
                return Err(err!(
                    "-o cni.network={name} contradicts --ipam-opt cni.network={}; use one CNI network: {cmd}",
                    pb.network
                ))
            }
            None => {
                return Err(err!(
                    "cni.network={name}: pool {subnet} was not requested for CNI network {name}; create the network with: {cmd}"
                ))
            }
        }
        if !d.gateway.is_empty() {
            let gw = pool::parse_addr(&d.gateway, "gateway")?.ip();
            gateway(&b, &subnet, Some(gw))?;
        }
    }
    let bad = contradictions(&b, generic, opts);
    if let Some((key, given, ck, theirs)) = bad.first() {
        return Err(err!(
            "-o {key}={given} contradicts CNI network {name}: {} has {ck} {theirs}; drop the option (the network uses the conflist's)",
            b.file.display()
        ));
    }
    Ok(Some(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn binding() -> CniBinding {
        CniBinding {
            network: "n".into(),
            file: "/etc/cni/net.d/10-n.conflist".into(),
            bridge: json!({"type":"bridge","bridge":"br-n","MTU":1400,"ipMasq":true,
                "ipam":{"type":"host-local","ranges":[[{"subnet":"10.5.0.0/24"}]]}}),
            cluster: None,
        }
    }

    #[test]
    fn contradictions_name_both_values() {
        let b = binding();
        let g = json!({"com.docker.network.bridge.name":"other","mtu":"1400","ipMasq":"true",
            "hairpinMode":"true","com.docker.network.container_iface_prefix":"e"});
        let g = g.as_object().unwrap();
        let o = crate::netopts::parse(g).unwrap();
        let c = contradictions(&b, g, &o);
        let keys: Vec<&str> = c.iter().map(|x| x.2).collect();
        assert_eq!(keys, ["bridge", "hairpinMode"], "{c:?}");
        assert_eq!(c[0].1, "other");
        assert_eq!(c[0].3, "br-n");
        let gw = gateway(
            &b,
            &"10.5.0.0/24".parse().unwrap(),
            Some("10.5.0.9".parse().unwrap()),
        )
        .unwrap_err();
        assert!(
            gw.0.contains("10.5.0.9")
                && gw.0.contains("10.5.0.1")
                && gw.0.contains("10-n.conflist")
        );
    }

    #[test]
    fn bridge_conf_is_the_conflists() {
        let cfg = Config::from_args(["--name".to_string(), "t".into()])
            .unwrap()
            .unwrap();
        let mut b = binding();
        b.bridge["args"] = json!({"x": 1});
        let c = bridge_conf(&cfg, &b, &["10.5.0.0/24".parse().unwrap()]).unwrap();
        assert_eq!(c["name"], "n");
        assert_eq!(c["bridge"], "br-n");
        assert_eq!(c["MTU"], 1400);
        assert!(c.get("args").is_none());
        assert_eq!(c["ipam"]["ranges"][0][0]["subnet"], "10.5.0.0/24");
        let s = store(&cfg, &b);
        assert_eq!(
            s.data_dir,
            std::path::PathBuf::from(cniconf::DEFAULT_DATA_DIR)
        );
        assert_eq!(s.ifname, "cnm-t");
    }
}
