//! `-p/--publish`: dockerd does no port publishing for remote drivers, so the shim publishes
//! ports in ProgramExternalConnectivity, from the `com.docker.network.portmap` option, and
//! removes them in RevokeExternalConnectivity and DeleteEndpoint. It uses the same engine as
//! the `portmap` CNI plugin (`cni_nft::hostport`, table `inet cni_rs_ports`), so a host port
//! is held by one container whichever runtime started it. Published ports answer on every
//! local address of the host (from outside and from the host itself, 127.0.0.1 included) or on
//! the given host IP. What to program is planned by `portplan` (pure); this module probes the
//! host for free ports and programs the plan.

use serde_json::{json, Value};

use cni_nft::hostport::{HostPorts, Mapping, Options};

use crate::api::EndpointRef;
use crate::cni::IFNAME;
use crate::err;
use crate::error::Result;
use crate::portplan::{self, Target};
use crate::shim::Shim;
use crate::state::{Endpoint, Phase, PortMap};

pub use cni_nft::hostport::proto_name;

/// Whether the host has `port` free, by binding it (the probe `portplan::plan` picks with).
fn port_free(proto: u8, port: u16) -> bool {
    match proto {
        6 => std::net::TcpListener::bind(("0.0.0.0", port)).is_ok(),
        17 => std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok(),
        _ => true,
    }
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
    let bindings = portplan::bindings(&req.options)?;
    if bindings.is_empty() && ep.ports.is_empty() {
        return Ok(json!({}));
    }
    let maps = portplan::plan(&bindings, &Target::of(&ep, &net), &used, port_free)?;
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
