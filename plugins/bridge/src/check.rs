//! CHECK: the attachment still looks the way ADD left it (the reference's checks; unlike the
//! reference it also works on an L2-only bridge, where there is no IPAM to ask).

use cni_core::{CniError, Command, Request};
use cni_netlink::{NetNs, Netlink};

use crate::config::{self, format_mac, MasqBackend};
use crate::container::to_nl_route;
use crate::errors::{bad_netns, NlContext};

pub fn check(req: &Request) -> Result<(), CniError> {
    let conf = config::load(req)?;
    let ns = NetNs::open(&req.env.netns).map_err(|e| bad_netns(&req.env.netns, e))?;
    if conf.l3() {
        crate::ipam::run(&conf, Command::Check, req)?;
    }
    let prev = req
        .prev_result()?
        .ok_or_else(|| CniError::internal("Required prevResult missing"))?;
    let ifname = &req.env.ifname;
    let mut hnl = Netlink::new().map_err(crate::errors::nl)?;
    let mut cnl = Netlink::new_in_netns(&ns).map_err(crate::errors::nl)?;

    // Bridge.
    let br_if = prev.interfaces.iter().find(|i| i.name == conf.bridge);
    let br = hnl
        .link_by_name(&conf.bridge)
        .ctx(|| format!("look up bridge {:?}", conf.bridge))?
        .ok_or_else(|| CniError::internal(format!("bridge {:?} not found", conf.bridge)))?;
    if !br.is_bridge() {
        return Err(CniError::internal(format!(
            "{:?} is not a bridge",
            conf.bridge
        )));
    }
    if let Some(bi) = br_if.filter(|b| !b.mac.is_empty()) {
        let live = br.mac.map(|m| format_mac(&m)).unwrap_or_default();
        if !live.eq_ignore_ascii_case(&bi.mac) {
            return Err(CniError::internal(format!(
                "bridge {:?} MAC {live} does not match prevResult MAC {}",
                conf.bridge, bi.mac
            )));
        }
    }
    if br.is_promisc() != conf.promisc {
        return Err(CniError::internal(format!(
            "Bridge interface {} configured Promisc Mode {} doesn't match current state: {} ",
            conf.bridge,
            conf.promisc,
            br.is_promisc()
        )));
    }

    // Container interface.
    let cont_if = prev
        .interfaces
        .iter()
        .find(|i| i.name == *ifname && !i.sandbox.is_empty())
        .ok_or_else(|| {
            CniError::internal(format!("interface {ifname:?} not found in prevResult"))
        })?;
    if cont_if.sandbox != req.env.netns {
        return Err(CniError::internal(format!(
            "Sandbox in prevResult {} doesn't match configured netns: {}",
            cont_if.sandbox, req.env.netns
        )));
    }
    let c = cnl
        .link_by_name(ifname)
        .ctx(|| format!("look up {ifname:?} in the container"))?
        .ok_or_else(|| CniError::internal(format!("{ifname:?} not found in {}", req.env.netns)))?;
    if !c.is_veth() {
        return Err(CniError::internal(format!(
            "{ifname:?} in the container is not a veth"
        )));
    }
    let live = c.mac.map(|m| format_mac(&m)).unwrap_or_default();
    if !cont_if.mac.is_empty() && !live.eq_ignore_ascii_case(&cont_if.mac) {
        return Err(CniError::internal(format!(
            "{ifname:?} MAC {live} does not match prevResult MAC {}",
            cont_if.mac
        )));
    }

    // Host end: the container end's peer, enslaved to our bridge.
    let peer = c.link.unwrap_or(0);
    let host = hnl.link_by_index(peer).ctx(|| "look up host veth".into())?;
    match host {
        Some(h) if h.master == Some(br.index) && h.is_veth() => {}
        _ => {
            return Err(CniError::internal(format!(
                "CNI veth created for bridge {} was not found",
                conf.bridge
            )))
        }
    }

    // Addresses and routes.
    let addrs = cnl
        .addresses(Some(c.index), None)
        .ctx(|| format!("list addresses of {ifname:?}"))?;
    for ip in &prev.ips {
        if !addrs
            .iter()
            .any(|a| a.ip == ip.address.ip() && a.prefix_len == ip.address.prefix())
        {
            return Err(CniError::internal(format!(
                "Failed to match addr {} on interface {ifname}",
                ip.address
            )));
        }
    }
    // One dump per (family, table), not per route.
    let mut tables: std::collections::HashMap<(bool, Option<u32>), Vec<cni_netlink::Route>> =
        std::collections::HashMap::new();
    for r in &prev.routes {
        let want = to_nl_route(r, c.index);
        let key = (r.dst.is_ipv4(), r.table);
        let routes = match tables.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let fam = if key.0 {
                    cni_netlink::Family::V4
                } else {
                    cni_netlink::Family::V6
                };
                e.insert(
                    cnl.routes(fam, r.table)
                        .ctx(|| "list container routes".into())?,
                )
            }
        };
        // The route must go out of this attachment's interface (another attachment in the
        // same netns may have the same destination).
        let found = routes.iter().any(|have| {
            have.dst == want.dst
                && ((have.oif == Some(c.index) && (r.gw.is_none() || have.gateway == r.gw))
                    || have
                        .multipath
                        .iter()
                        .any(|n| n.oif == c.index && (r.gw.is_none() || n.gateway == r.gw)))
        });
        if !found {
            let gw =
                r.gw.map(|g| g.to_string())
                    .unwrap_or_else(|| "<nil>".into());
            return Err(CniError::internal(format!(
                "Expected Route {{Dst:{} GW:{gw}}} not found in routing table of {ifname}",
                r.dst
            )));
        }
    }

    // Masquerade (our nftables table; someone may have flushed or deleted it).
    if conf.ip_masq && conf.masq_backend == MasqBackend::Nftables && !prev.ips.is_empty() {
        let pairs: Vec<_> = prev
            .ips
            .iter()
            .map(|i| (i.address.ip(), i.address.prefix()))
            .collect();
        let missing = cni_nft::masq::MasqSetup::new()
            .and_then(|mut m| m.check(&conf.name, &req.env.container_id, ifname, &pairs))
            .map_err(|e| CniError::internal(format!("masquerade CHECK: {e}")))?;
        if !missing.is_empty() {
            return Err(CniError::internal(format!(
                "masquerade state of container {} ({ifname}) is incomplete; missing: {}; run DEL and ADD again to restore it",
                req.env.container_id,
                missing.join(", ")
            )));
        }
    }
    Ok(())
}
