//! Endpoints, the design verified against dockerd 20.10 (reference §5.4, option b):
//!
//! * **CreateEndpoint** runs `bridge` ADD (IPAM `host-local`, requesting exactly the addresses
//!   docker got from RequestAddress) with `CNI_NETNS` = a shim-owned temporary netns, then
//!   renames the container end `cnm<endpoint id[:12]>` and moves it into the shim's netns.
//!   The RequestAddress reservation is converted into the endpoint's: its handle is released
//!   and the bridge's host-local call takes the same address under the endpoint ID, all under
//!   the pool lock, so no other request can take the address in between.
//! * **Join** only answers: `InterfaceName{SrcName, DstPrefix}` and the gateways; docker moves
//!   the link into the container during its prestart hook (the container netns does not exist
//!   yet at Join for `docker run`).
//! * **DeleteEndpoint** deletes the link docker moved back after Leave and runs `bridge` DEL
//!   with the stored prevResult (bridge: host veth, masquerade). The address stays reserved
//!   under the endpoint ID until docker's ReleaseAddress, because docker considers it
//!   allocated until then.

use std::net::IpAddr;
use std::sync::Arc;

use ipnetwork::IpNetwork;
use serde_json::{json, Value};

use crate::api::{CreateEndpoint, EndpointRef};
use crate::cni::{self, Range, StoreRef, IFNAME};
use crate::err;
use crate::error::Result;
use crate::exec::Call;
use crate::netns;
use crate::pool;
use crate::ports;
use crate::shim::{crash_point, Shim};
use crate::state::{Endpoint, Held, Network, Phase, ResIp, ResPhase, Reservation, State};

/// `cnm` + 12 hex digits of the endpoint ID (15 characters, IFNAMSIZ), another slice of the
/// ID if those are taken by another endpoint.
fn link_name(s: &State, eid: &str) -> String {
    let hex: String = eid.chars().filter(char::is_ascii_hexdigit).collect();
    let taken = |n: &str| s.endpoints.values().any(|e| e.link == n && e.id != eid);
    for start in (0..hex.len().saturating_sub(11)).step_by(12) {
        let n = format!("cnm{}", &hex[start..(start + 12).min(hex.len())]);
        if !taken(&n) {
            return n;
        }
    }
    format!("cnm{:0>12}", &hex[..hex.len().min(12)])
}

fn parse_if_addr(
    s: &str,
    net: Option<&crate::state::Subnet>,
    what: &str,
) -> Result<Option<IpNetwork>> {
    if s.is_empty() {
        return Ok(None);
    }
    let a = pool::parse_addr(s, what)?;
    match net {
        Some(sn) if sn.pool.contains(a.ip()) => Ok(Some(a)),
        Some(sn) => Err(err!(
            "{what} {a} is outside the network's subnet {}",
            sn.pool
        )),
        None => Err(err!("{what} {a} given, but the network has no such subnet")),
    }
}

/// The host-local ranges of an endpoint's addresses.
fn ranges(net: &Network, addr4: Option<IpNetwork>, addr6: Option<IpNetwork>) -> Vec<Range> {
    let mut r = Vec::new();
    if let (Some(_), Some(sn)) = (addr4, &net.v4) {
        r.push(Range::whole(sn.pool, sn.gateway));
    }
    if let (Some(_), Some(sn)) = (addr6, &net.v6) {
        r.push(Range::whole(sn.pool, sn.gateway));
    }
    r
}

fn mac_reply(requested: &str, mac: &str) -> Value {
    if requested.is_empty() && !mac.is_empty() {
        json!({"Interface": {"MacAddress": mac}})
    } else {
        json!({})
    }
}

pub fn create(shim: &Shim, req: CreateEndpoint) -> Result<Value> {
    let (nid, eid) = (req.network_id.clone(), req.endpoint_id.clone());
    if !cni_core::env::valid_id(&eid) || eid.len() < 12 {
        return Err(err!("CreateEndpoint: invalid EndpointID {eid:?}"));
    }
    // Docker holds these addresses from RequestAddress: not unclaimed while we wait for locks.
    let requested: Vec<IpAddr> = [&req.interface.address, &req.interface.address_ipv6]
        .into_iter()
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .collect();
    let _in_flight = shim.in_flight.hold(&requested);
    let _g = shim.net_locks.lock(&nid);
    let Some(net) = shim.read(|s| s.networks.get(&nid).cloned()) else {
        return Err(err!(
            "network {nid} is unknown to cnm-shim (its state in {} does not have it); remove the network and create it again",
            shim.cfg.state_dir.display()
        ));
    };
    if let Some(ep) = shim.read(|s| s.endpoints.get(&eid).cloned()) {
        if ep.phase == Phase::Ready {
            return Ok(mac_reply(&req.interface.mac_address, &ep.mac));
        }
        return Err(err!(
            "endpoint {eid} is being changed by another request; retry"
        ));
    }
    let addr4 = parse_if_addr(&req.interface.address, net.v4.as_ref(), "address")?;
    let addr6 = parse_if_addr(&req.interface.address_ipv6, net.v6.as_ref(), "IPv6 address")?;
    if addr4.is_none() && addr6.is_none() {
        return Err(err!(
            "endpoint {eid} has no address: create the network with --ipam-driver {} (or docker's default IPAM); the null IPAM driver is not supported",
            shim.cfg.name
        ));
    }
    let ips: Vec<IpAddr> = [addr4, addr6]
        .into_iter()
        .flatten()
        .map(|a| a.ip())
        .collect();
    let pool_ids: Vec<String> = shim.read(|s| {
        ips.iter()
            .filter_map(|ip| s.pool_of(ip).map(|p| p.id.clone()))
            .collect()
    });
    let _pg = shim.pool_locks.lock_all(&pool_ids);
    let (conf, ifname) = match &net.cni {
        Some(b) => {
            let subnets: Vec<IpNetwork> = [(addr4, &net.v4), (addr6, &net.v6)]
                .into_iter()
                .filter_map(|(a, sn)| a.and(sn.as_ref().map(|sn| sn.pool)))
                .collect();
            (
                crate::bind::bridge_conf(&shim.cfg, b, &subnets)?,
                shim.cfg.bound_ifname(),
            )
        }
        None => (
            cni::bridge_conf(&shim.cfg, &net, &ranges(&net, addr4, addr6)),
            IFNAME.to_string(),
        ),
    };
    let shared = net.cni.as_ref().map(|_| StoreRef::of_conf(&conf, &ifname));
    let ep = shim.update(|s| {
        let converted: Vec<Held> = ips
            .iter()
            .filter_map(|ip| {
                s.pending_for(ip).map(|r| Held {
                    handle: r.handle.clone(),
                    ip: *ip,
                })
            })
            .collect();
        let ep = Endpoint {
            id: eid.clone(),
            network: nid.clone(),
            phase: Phase::Creating,
            link: link_name(s, &eid),
            addr4,
            addr6,
            mac: req.interface.mac_address.clone(),
            conf: conf.clone(),
            result: None,
            converted,
            ports: Vec::new(),
            ifname: ifname.clone(),
        };
        s.endpoints.insert(eid.clone(), ep.clone());
        Ok(ep)
    })?;
    // A cluster network's bridge answers ARP for the other hosts' blocks (undo_create rolls
    // the ADD back if that fails).
    let built = build(shim, &ep, &ips).and_then(|r| {
        if let Some(b) = &net.cni {
            crate::cluster::after_add(b)?;
        }
        Ok(r)
    });
    match built {
        Ok((result, mac, tmp)) => {
            shim.update(|s| {
                for h in &ep.converted {
                    s.reservations.remove(&h.handle);
                }
                s.reservations.insert(
                    eid.clone(),
                    Reservation {
                        handle: eid.clone(),
                        phase: ResPhase::Held,
                        pool: None,
                        ips: ips
                            .iter()
                            .map(|ip| ResIp {
                                ip: *ip,
                                released: false,
                            })
                            .collect(),
                        endpoint: Some(eid.clone()),
                        store: shared.clone(),
                        waiting_since: crate::shim::unix_now(),
                        aux_of: None,
                    },
                );
                let e = s.endpoints.get_mut(&eid).expect("inserted above");
                e.phase = Phase::Ready;
                e.result = Some(result.clone());
                e.mac = mac.clone();
                Ok(())
            })?;
            move_in_background(shim, &ep, tmp)?;
            crate::info!(
                "endpoint {eid} created on {}: {} {}",
                net.bridge,
                ep.link,
                ips.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            Ok(mac_reply(&req.interface.mac_address, &mac))
        }
        Err(e) => {
            undo_create(shim, &ep);
            Err(e.context(format!("create endpoint {}", &eid[..12])))
        }
    }
}

/// bridge ADD into a temporary netns. Returns the CNI result, the container end's MAC and
/// the netns (the container end is still in it: see [`move_in_background`]).
fn build(shim: &Shim, ep: &Endpoint, ips: &[IpAddr]) -> Result<(Value, String, netns::TempNetns)> {
    // The addresses docker holds under RequestAddress handles are given up here and taken
    // again by the bridge's host-local call, under the pool lock.
    let store = store_of(ep);
    for h in &ep.converted {
        cni::release(&shim.runner, &store, &h.handle)?;
    }
    crash_point("create-endpoint:released");
    // A link of ours left by an earlier, interrupted attempt for this very endpoint.
    netns::delete_link(&ep.link, "veth")?;
    let tmp = shim.spare_netns.take()?;
    let netns_path = tmp.path();
    let conf = cni::with_args(&ep.conf, ips, Some(&ep.mac));
    let out = shim.runner.run(&Call {
        plugin: "bridge",
        command: "ADD",
        container_id: &ep.id,
        netns: &netns_path,
        ifname: &ep.ifname,
        args: "",
        conf: &conf,
    })?;
    crash_point("create-endpoint:added");
    let result: Value = serde_json::from_slice(&out)
        .map_err(|e| err!("bridge returned an unreadable result ({e})"))?;
    let mac = result["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["sandbox"].as_str() == Some(netns_path.as_str()))
        .and_then(|i| i["mac"].as_str())
        .unwrap_or_default()
        .to_string();
    Ok((result, mac, tmp))
}

/// Moves the container end out of the temporary netns (10-20 ms of kernel time) while docker
/// records the endpoint; Join waits for it ([`netns::PendingMoves`]).
fn move_in_background(shim: &Shim, ep: &Endpoint, tmp: netns::TempNetns) -> Result<()> {
    let host = shim
        .host_ns
        .try_clone()
        .map_err(|e| err!("duplicate the netns fd: {e}"))?;
    let slot = shim.pending_moves.start(&ep.id);
    let link = ep.link.clone();
    let ifname = ep.ifname.clone();
    std::thread::spawn(move || {
        let r = tmp.move_out(&ifname, &link, &host);
        drop(tmp);
        crash_point("create-endpoint:moved");
        slot.finish(r);
    });
    Ok(())
}

/// Undoes a CreateEndpoint that failed or was interrupted: plumbing removed, the endpoint's
/// reservation released, and docker's addresses held again under their RequestAddress
/// handles (docker releases them next). Best-effort; forgets the endpoint.
pub fn undo_create(shim: &Shim, ep: &Endpoint) {
    if let Err(e) = netns::delete_link(&ep.link, "veth") {
        crate::warn!("undo endpoint {}: {e}", ep.id);
    }
    if let Err(e) = bridge_del(shim, ep) {
        crate::warn!("undo endpoint {}: {e}", ep.id);
    }
    let store = store_of(ep);
    if let Err(e) = cni::release(&shim.runner, &store, &ep.id) {
        crate::warn!("undo endpoint {}: {e}", ep.id);
    }
    // The endpoint's ipam section covers its addresses (same store, same ranges).
    let ipam = cni::Ipam {
        store: store.clone(),
        section: ep.conf["ipam"].clone(),
    };
    for h in &ep.converted {
        let subnet = [ep.addr4, ep.addr6]
            .into_iter()
            .flatten()
            .find(|a| a.ip() == h.ip)
            .and_then(|a| pool::network_of(a.ip(), a.prefix()).ok())
            .unwrap_or_else(|| cni::any_range(h.ip).subnet);
        let _ = cni::release(&shim.runner, &store, &h.handle);
        if let Err(e) = cni::reserve(&shim.runner, &ipam, &h.handle, &subnet, Some(h.ip)) {
            crate::warn!(
                "undo endpoint {}: cannot hold {} for docker again ({e}); forgetting it",
                ep.id,
                h.ip
            );
            let _ = shim.update(|s| {
                s.reservations.remove(&h.handle);
                Ok(())
            });
        }
    }
    let _ = shim.update(|s| {
        s.endpoints.remove(&ep.id);
        if let Some(r) = s.reservations.get_mut(&ep.id) {
            r.endpoint = None;
        }
        Ok(())
    });
}

/// `bridge` DEL with the stored prevResult and without the IPAM section (the address is
/// released separately, when docker releases it).
fn bridge_del(shim: &Shim, ep: &Endpoint) -> Result<()> {
    let mut conf = ep.conf.clone();
    if let Some(o) = conf.as_object_mut() {
        o.remove("ipam");
        if let Some(r) = &ep.result {
            o.insert("prevResult".into(), r.clone());
        }
    }
    shim.runner
        .run(&Call {
            plugin: "bridge",
            command: "DEL",
            container_id: &ep.id,
            netns: "",
            ifname: &ep.ifname,
            args: "",
            conf: &conf,
        })
        .map(|_| ())
}

/// The host-local store of an endpoint's addresses: what its bridge conf names.
fn store_of(ep: &Endpoint) -> StoreRef {
    StoreRef::of_conf(&ep.conf, &ep.ifname)
}

/// DeleteEndpoint: records the deletion and answers; the plumbing (bridge DEL, a few ms) is
/// removed right after on another thread, which takes the network lock, so any later call on
/// the network sees it done. ReleaseAddress of the endpoint's addresses, arriving meanwhile,
/// leaves their release to that thread. A crash before it is done is finished at startup
/// (`Deleting`).
pub fn delete(shim: &Arc<Shim>, req: EndpointRef) -> Result<Value> {
    let _g = shim.net_locks.lock(&req.network_id);
    let Some(ep) = shim.read(|s| s.endpoints.get(&req.endpoint_id).cloned()) else {
        return Ok(json!({}));
    };
    if ep.phase != Phase::Ready {
        return Ok(json!({}));
    }
    shim.update(|s| {
        if let Some(e) = s.endpoints.get_mut(&ep.id) {
            e.phase = Phase::Deleting;
        }
        Ok(())
    })?;
    crash_point("delete-endpoint:recorded");
    let shim = shim.clone();
    std::thread::spawn(move || {
        let _g = shim.net_locks.lock(&ep.network);
        match remove(&shim, &ep) {
            Ok(()) => crate::info!("endpoint {} deleted", ep.id),
            Err(e) => crate::warn!("{e}"),
        }
    });
    Ok(json!({}))
}

/// Removes an endpoint (DeleteEndpoint, leftovers of a deleted network, reconciliation).
/// The caller holds the network lock.
pub fn remove(shim: &Shim, ep: &Endpoint) -> Result<()> {
    shim.pending_moves.wait(&ep.id, shim.cfg.exec_timeout);
    if ep.phase == Phase::Creating {
        undo_create(shim, ep);
        return Ok(());
    }
    // Every step is idempotent: an interrupted removal is finished at startup (`Deleting`), by
    // ReleaseAddress (docker releases the addresses of an endpoint it deleted) or by
    // DeleteNetwork.
    let mut errors = Vec::new();
    if let Err(e) = ports::unpublish(shim, ep) {
        errors.push(e.0);
    }
    // bridge DEL deletes the host end named in the prevResult, which takes the container end
    // (back in our netns as SrcName after Leave, or still in a dying container) with it.
    if let Err(e) = bridge_del(shim, ep) {
        errors.push(e.0);
    }
    // Without a prevResult, or if the pair survived: delete our end. Deleting a veth takes the
    // kernel 10-30 ms (RCU); nothing waits for it, so it happens off the request path (a
    // crash before it is done leaves a link that startup reconciliation removes).
    let link = ep.link.clone();
    std::thread::spawn(move || {
        if let Err(e) = netns::delete_link(&link, "veth") {
            crate::warn!("{e}");
        }
    });
    if !errors.is_empty() {
        return Err(err!("delete endpoint {}: {}", ep.id, errors.join("; ")));
    }
    crash_point("delete-endpoint:deleted");
    let finished = shim.update(|s| {
        s.endpoints.remove(&ep.id);
        // With docker's own IPAM driver, docker releases the addresses there, never here.
        let ours = s.networks.get(&ep.network).is_none_or(|n| n.ipam);
        let done = s.reservations.get_mut(&ep.id).and_then(|r| {
            r.endpoint = None;
            // Docker's ReleaseAddress comes next (`ipam::sweep_unclaimed` if it is lost).
            r.waiting_since = crate::shim::unix_now();
            if !ours {
                r.ips.iter_mut().for_each(|i| i.released = true);
            }
            r.finished().then(|| r.handle.clone())
        });
        if let Some(h) = &done {
            s.reservations.remove(h);
        }
        Ok(done)
    })?;
    if let Some(h) = finished {
        cni::release(&shim.runner, &store_of(ep), &h)?;
    }
    Ok(())
}

pub fn join(shim: &Shim, req: EndpointRef) -> Result<Value> {
    let found = shim.read(|s| {
        let ep = s.endpoints.get(&req.endpoint_id)?.clone();
        let net = s.networks.get(&ep.network)?.clone();
        Some((ep, net))
    });
    let Some((ep, net)) = found.filter(|(ep, _)| ep.phase == Phase::Ready) else {
        return Err(err!(
            "endpoint {} is unknown to cnm-shim (state lost or creation failed); recreate the container",
            req.endpoint_id
        ));
    };
    if let Some(r) = shim.pending_moves.wait(&ep.id, shim.cfg.exec_timeout) {
        r.map_err(|e| e.context(format!("endpoint {}", ep.id)))?;
    }
    match netns::link(&ep.link)? {
        Some(l) if l.is_veth() => {}
        _ => {
            return Err(err!(
                "the interface {} of endpoint {} is gone (cnm-shim restarted while creating it?); run the docker command again",
                ep.link,
                ep.id
            ))
        }
    }
    let gw = |addr: Option<IpNetwork>, sn: &Option<crate::state::Subnet>| {
        if net.internal {
            return None;
        }
        addr.and(sn.as_ref().and_then(|s| s.gateway))
    };
    let (gw4, gw6) = (gw(ep.addr4, &net.v4), gw(ep.addr6, &net.v6));
    let mut reply = json!({
        "InterfaceName": {"SrcName": ep.link, "DstPrefix": net.opts.iface_prefix},
        "DisableGatewayService": gw4.is_none() && gw6.is_none(),
    });
    if let Some(g) = gw4 {
        reply["Gateway"] = json!(g.to_string());
    }
    if let Some(g) = gw6 {
        reply["GatewayIPv6"] = json!(g.to_string());
    }
    crate::debug!("join {}: {reply}", ep.id);
    Ok(reply)
}

pub fn oper_info(shim: &Shim, req: EndpointRef) -> Value {
    let v = shim.read(|s| {
        s.endpoints.get(&req.endpoint_id).map(|ep| {
            let bridge = s
                .networks
                .get(&ep.network)
                .map(|n| n.bridge.clone())
                .unwrap_or_default();
            json!({
                "cnm-shim.link": ep.link,
                "cnm-shim.bridge": bridge,
                "cnm-shim.ports": ep.ports.iter().map(|p| format!(
                    "{}:{}/{} -> {}:{}",
                    p.host_ip.map(|i| i.to_string()).unwrap_or_default(),
                    p.host_port,
                    ports::proto_name(p.proto),
                    p.dest,
                    p.dest_port
                )).collect::<Vec<_>>(),
            })
        })
    });
    json!({"Value": v.unwrap_or_else(|| json!({}))})
}

/// Drops masquerade elements tagged with our network name whose endpoint we no longer have
/// (optionally: also those of network `except`), then empty per-subnet chains.
pub fn masq_gc(shim: &Shim, except: Option<&str>) -> Result<()> {
    let valid: std::collections::HashSet<String> = shim.read(|s| {
        s.endpoints
            .values()
            .filter(|e| Some(e.network.as_str()) != except)
            .map(|e| e.id.clone())
            .collect()
    });
    let keep = |id: &str, ifname: &str| ifname == IFNAME && valid.contains(id);
    // Bound networks' elements are tagged with the CNI network's name and shared with the
    // other runtime's containers: only ours (our ifname) are candidates.
    let ours = shim.cfg.bound_ifname();
    let keep_shared = |id: &str, ifname: &str| ifname != ours || valid.contains(id);
    let shared: std::collections::BTreeSet<String> = shim.read(|s| {
        s.networks
            .values()
            .filter_map(|n| n.cni.as_ref().map(|b| b.network.clone()))
            .collect()
    });
    cni_nft::masq::MasqSetup::new()
        .and_then(|mut m| {
            m.gc(&shim.cfg.store_name(), &keep)?;
            for name in &shared {
                m.gc(name, &keep_shared)?;
            }
            m.prune_subnets()
        })
        .map_err(|e| err!("masquerade cleanup: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_fit_and_avoid_collisions() {
        let mut s = State::default();
        let eid = "0123456789abcdef0123456789abcdef";
        assert_eq!(link_name(&s, eid), "cnm0123456789ab");
        let other = Endpoint {
            id: "other".into(),
            network: "n".into(),
            phase: Phase::Ready,
            link: "cnm0123456789ab".into(),
            addr4: None,
            addr6: None,
            mac: String::new(),
            conf: json!({}),
            result: None,
            converted: vec![],
            ports: vec![],
            ifname: "eth0".into(),
        };
        s.endpoints.insert("other".into(), other);
        assert_eq!(link_name(&s, eid), "cnmcdef01234567");
    }
}
