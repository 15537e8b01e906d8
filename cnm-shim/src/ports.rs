//! `-p/--publish`: dockerd does no port publishing for remote drivers, so the shim publishes
//! ports in ProgramExternalConnectivity, from the `com.docker.network.portmap` option, and
//! removes them in RevokeExternalConnectivity and DeleteEndpoint. It uses the same engine as
//! the `portmap` CNI plugin (`cni_nft::hostport`, table `inet cni_rs_ports`), so a host port
//! is held by one container whichever runtime started it. Published ports answer on every
//! local address of the host (from outside and from the host itself, 127.0.0.1 included) or on
//! the given host IP.

use std::net::IpAddr;

use serde_json::{json, Value};

use cni_nft::hostport::{HostPorts, Mapping, Options};

use crate::api::{self, EndpointRef, PortBinding};
use crate::cni::IFNAME;
use crate::err;
use crate::error::Result;
use crate::shim::Shim;
use crate::state::{Endpoint, Network, Phase, PortMap};

/// Host ports picked for `-p CONTAINERPORT` (host port 0), as docker's own range.
const EPHEMERAL: std::ops::RangeInclusive<u16> = 49153..=65535;

pub use cni_nft::hostport::proto_name;

/// Two mappings of one endpoint that cannot coexist (one host address and port, two targets).
fn clash(a: &PortMap, b: &PortMap) -> bool {
    a.proto == b.proto
        && a.host_port == b.host_port
        && a.dest.is_ipv6() == b.dest.is_ipv6()
        && (a.host_ip.is_none() || b.host_ip.is_none() || a.host_ip == b.host_ip)
}

/// A (protocol, host port) is held by one endpoint, whatever the host IP: the rule of the
/// shared engine's claims.
fn taken(other: &PortMap, m: &PortMap) -> bool {
    other.proto == m.proto && other.host_port == m.host_port
}

fn port_free(proto: u8, port: u16) -> bool {
    match proto {
        6 => std::net::TcpListener::bind(("0.0.0.0", port)).is_ok(),
        17 => std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok(),
        _ => true,
    }
}

/// The mappings for `bindings` of endpoint `ep`, avoiding the ports in `used`.
pub fn plan(
    bindings: &[PortBinding],
    ep: &Endpoint,
    net: &Network,
    used: &[PortMap],
) -> Result<Vec<PortMap>> {
    let mut out: Vec<PortMap> = Vec::new();
    for b in bindings {
        if !matches!(b.proto, 6 | 17 | 132) {
            return Err(err!(
                "published port {}: unsupported protocol number {}",
                b.port,
                b.proto
            ));
        }
        let host_ip: Option<IpAddr> = if b.host_ip.is_empty() {
            net.opts.host_ip
        } else {
            Some(b.host_ip.parse().map_err(|_| {
                err!(
                    "published port {}: host IP {:?} is not an address",
                    b.port,
                    b.host_ip
                )
            })?)
        };
        let mut dests: Vec<IpAddr> = Vec::new();
        match host_ip {
            Some(h) if h.is_unspecified() && h.is_ipv4() => dests.extend(ep.addr4.map(|a| a.ip())),
            Some(h) if h.is_unspecified() => dests.extend(ep.addr6.map(|a| a.ip())),
            Some(h) => {
                let d = if h.is_ipv4() { ep.addr4 } else { ep.addr6 };
                let d = d.ok_or_else(|| {
                    err!(
                        "cannot publish on {h}: the container has no IPv{} address on this network",
                        if h.is_ipv4() { 4 } else { 6 }
                    )
                })?;
                dests.push(d.ip());
            }
            None => dests.extend([ep.addr4, ep.addr6].into_iter().flatten().map(|a| a.ip())),
        }
        let host_ip = host_ip.filter(|h| !h.is_unspecified());
        let mut host_port = b.host_port;
        if host_port == 0 {
            host_port = EPHEMERAL
                .clone()
                .find(|p| {
                    let probe = PortMap {
                        proto: b.proto,
                        host_ip,
                        host_port: *p,
                        dest: dests[0],
                        dest_port: b.port,
                    };
                    !used.iter().any(|u| taken(u, &probe))
                        && !out.iter().any(|u| clash(u, &probe))
                        && port_free(b.proto, *p)
                })
                .ok_or_else(|| {
                    err!(
                        "no free host port left for {}/{}",
                        b.port,
                        proto_name(b.proto)
                    )
                })?;
        }
        for dest in dests {
            let m = PortMap {
                proto: b.proto,
                host_ip,
                host_port,
                dest,
                dest_port: b.port,
            };
            if used.iter().any(|u| taken(u, &m)) || out.iter().any(|u| clash(u, &m)) {
                return Err(err!(
                    "host port {host_port}/{} is already published by another container; choose another -p host port",
                    proto_name(b.proto)
                ));
            }
            out.push(m);
        }
    }
    Ok(out)
}

fn to_nft(m: &PortMap) -> Mapping {
    Mapping {
        proto: m.proto,
        host_ip: m.host_ip,
        host_port: m.host_port,
        dest: m.dest,
        dest_port: m.dest_port,
    }
}

/// The engine's owner tag of an endpoint: (store name, endpoint ID, eth0), so reconcile and
/// GC find the shim's elements among those of CNI containers.
pub fn owner<'a>(store: &'a str, ep_id: &'a str) -> (&'a str, &'a str, &'a str) {
    (store, ep_id, IFNAME)
}

/// Docker's behaviour: hairpin and host-loopback connections are masqueraded.
fn options() -> Options {
    Options {
        snat: true,
        ..Default::default()
    }
}

fn nft_err(what: String, e: cni_nft::Error) -> crate::error::Error {
    match e {
        // Names the holder (maybe a CNI container): the user's to resolve.
        cni_nft::Error::Conflict(m) => err!("{m}"),
        e => err!("{what}: {e}"),
    }
}

/// Programs `maps` as the complete set of `owner`'s published ports; `old` is what was
/// programmed before (replaced when different).
pub fn apply(
    shim: &Shim,
    bridge: &str,
    ep_id: &str,
    old: &[PortMap],
    maps: &[PortMap],
) -> Result<()> {
    let _n = shim.lock_nft();
    if !maps.is_empty() {
        cni_nft::forward::ensure_dnat_accept(bridge)
            .map_err(|e| err!("accept published ports into {bridge}: {e}"))?;
        if maps.iter().any(|m| m.dest.is_ipv4()) {
            // Lets 127.0.0.1:<port> reach the container (docker does the same for docker0).
            cni_netlink::sysctl_set(&format!("net/ipv4/conf/{bridge}/route_localnet"), "1")
                .map_err(|e| err!("enable route_localnet on {bridge}: {e}"))?;
        }
    }
    let store = shim.cfg.store_name();
    let who = owner(&store, ep_id);
    let mut h = HostPorts::new().map_err(|e| err!("nftables: {e}"))?;
    if !old.is_empty() && old != maps {
        h.del(who, None, None, &options())
            .map_err(|e| nft_err(format!("remove published ports of {ep_id}"), e))?;
    }
    let nft: Vec<Mapping> = maps.iter().map(to_nft).collect();
    h.add(who, &nft, &options())
        .map_err(|e| nft_err(format!("program published ports of {ep_id}"), e))
}

pub fn program(shim: &Shim, req: EndpointRef) -> Result<Value> {
    let _g = shim.net_locks.lock(&req.network_id);
    let found = shim.read(|s| {
        let ep = s.endpoints.get(&req.endpoint_id)?.clone();
        let net = s.networks.get(&ep.network)?.clone();
        let used: Vec<PortMap> = s
            .endpoints
            .values()
            .filter(|e| e.id != ep.id)
            .flat_map(|e| e.ports.clone())
            .collect();
        Some((ep, net, used))
    });
    let Some((ep, net, used)) = found.filter(|(ep, _, _)| ep.phase == Phase::Ready) else {
        return Err(err!(
            "endpoint {} is unknown to cnm-shim; recreate the container",
            req.endpoint_id
        ));
    };
    if net.internal {
        return Ok(json!({}));
    }
    let bindings: Vec<PortBinding> = match req.options.get(api::OPT_PORTMAP) {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => {
            serde_json::from_value(v.clone()).map_err(|e| err!("cannot read the port map: {e}"))?
        }
    };
    if bindings.is_empty() && ep.ports.is_empty() {
        return Ok(json!({}));
    }
    let maps = plan(&bindings, &ep, &net, &used)?;
    apply(shim, &net.bridge, &ep.id, &ep.ports, &maps)?;
    shim.update(|s| {
        if let Some(e) = s.endpoints.get_mut(&ep.id) {
            e.ports = maps.clone();
        }
        Ok(())
    })?;
    crate::info!(
        "endpoint {}: published {} port mapping(s)",
        ep.id,
        maps.len()
    );
    Ok(json!({}))
}

pub fn revoke(shim: &Shim, req: EndpointRef) -> Result<Value> {
    let _g = shim.net_locks.lock(&req.network_id);
    if let Some(ep) = shim.read(|s| s.endpoints.get(&req.endpoint_id).cloned()) {
        unpublish(shim, &ep)?;
    }
    Ok(json!({}))
}

/// Removes the endpoint's published ports (none is fine).
pub fn unpublish(shim: &Shim, ep: &Endpoint) -> Result<()> {
    {
        let _n = shim.lock_nft();
        let store = shim.cfg.store_name();
        HostPorts::new()
            .and_then(|mut h| h.del(owner(&store, &ep.id), None, None, &options()))
            .map_err(|e| err!("remove published ports of {}: {e}", ep.id))?;
    }
    if !ep.ports.is_empty() {
        shim.update(|s| {
            if let Some(e) = s.endpoints.get_mut(&ep.id) {
                e.ports.clear();
            }
            Ok(())
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netopts::NetOpts;
    use crate::state::Subnet;

    fn ep(v6: bool) -> Endpoint {
        Endpoint {
            id: "e".into(),
            network: "n".into(),
            phase: Phase::Ready,
            link: "cnmx".into(),
            addr4: Some("10.1.0.2/24".parse().unwrap()),
            addr6: v6.then(|| "fd00::2/64".parse().unwrap()),
            mac: String::new(),
            conf: json!({}),
            result: None,
            converted: vec![],
            ports: vec![],
            ifname: "eth0".into(),
        }
    }

    fn net() -> Network {
        Network {
            id: "n".into(),
            phase: Phase::Ready,
            bridge: "b".into(),
            bridge_preexisted: false,
            internal: false,
            ipam: true,
            v4: Some(Subnet {
                pool: "10.1.0.0/24".parse().unwrap(),
                gateway: None,
            }),
            v6: None,
            opts: NetOpts::default(),
            cni: None,
        }
    }

    fn b(host_ip: &str, hp: u16, p: u16) -> PortBinding {
        PortBinding {
            proto: 6,
            ip: String::new(),
            port: p,
            host_ip: host_ip.into(),
            host_port: hp,
            host_port_end: hp,
        }
    }

    #[test]
    fn plans_families_and_conflicts() {
        let m = plan(&[b("", 18080, 80)], &ep(true), &net(), &[]).unwrap();
        assert_eq!(m.len(), 2); // v4 and v6
        let m4 = plan(&[b("127.0.0.1", 18080, 80)], &ep(true), &net(), &[]).unwrap();
        assert_eq!(m4.len(), 1);
        assert_eq!(m4[0].host_ip, Some("127.0.0.1".parse().unwrap()));
        let any4 = plan(&[b("0.0.0.0", 18080, 80)], &ep(true), &net(), &[]).unwrap();
        assert_eq!((any4.len(), any4[0].host_ip), (1, None));
        let e = plan(&[b("", 18080, 80)], &ep(false), &net(), &m4).unwrap_err();
        assert!(e.0.contains("already published"), "{e}");
        assert!(plan(&[b("::1", 1, 80)], &ep(false), &net(), &[]).is_err());
        let auto = plan(&[b("", 0, 80)], &ep(false), &net(), &[]).unwrap();
        assert!(EPHEMERAL.contains(&auto[0].host_port));
    }
}
