//! DEL: idempotent and best-effort. Everything this plugin made for the attachment is removed
//! even when CNI_NETNS is empty or dead (what `ctr run --cni` sends): the veth through the
//! prevResult's host interface, and the masquerade state by attachment identity.
//!
//! Order: find the veth (and its addresses), remove the masquerade state, release the IPs,
//! then delete the veth. Deleting a veth costs the kernel 10-30 ms (it waits for an RCU grace
//! period), which would be 90% of a DEL; that last step therefore runs in a detached process
//! (see [`crate::reaper`]) and DEL returns at once. The container end is gone moments later;
//! an ADD that finds its name still present waits for it (see `add`).

use std::net::IpAddr;

use cni_core::{CniError, Command, Request};
use cni_netlink::{Family, NetNs};

use crate::config::{self, Conf};
use crate::errors::nl;
use crate::sys::{Links, Real, Sys};

pub fn del(req: &Request) -> Result<(), CniError> {
    del_with(&mut Real, req)
}

/// DEL against any [`Sys`] (the plugin passes [`Real`]; unit tests a recording fake).
pub fn del_with<S: Sys>(sys: &mut S, req: &Request) -> Result<(), CniError> {
    let conf = config::load(req)?;
    let prev = match req.prev_result() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bridge: DEL ignores an unreadable prevResult: {e}");
            None
        }
    };
    let mut ips: Option<Vec<IpAddr>> = prev
        .as_ref()
        .filter(|p| !p.ips.is_empty())
        .map(|p| p.ips.iter().map(|i| i.address.ip()).collect());
    let mut errors: Vec<CniError> = Vec::new();

    let mut doomed = find_container_link(sys, req, &mut ips).unwrap_or_else(|e| {
        eprintln!("bridge: DEL: {e}");
        None
    });
    if doomed.is_none() {
        if let Some(p) = &prev {
            doomed = find_host_veth(sys, &conf, p).unwrap_or_else(|e| {
                eprintln!("bridge: DEL: {e}");
                None
            });
        }
    }
    // Masquerade before IPAM: teardown checks that an element still belongs to this
    // attachment, which only holds while the IP is not yet free for someone else.
    if let Err(e) = sys.firewall_teardown(&conf, req, ips.as_deref()) {
        errors.push(e);
    }
    if conf.l3() {
        if let Err(e) = sys.ipam(&conf, Command::Del, req) {
            errors.push(e);
        }
    }
    sys.finish_del(doomed);
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => {
            let first = errors[0].code;
            let msg: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            Err(CniError::with_code(first, msg.join("; ")))
        }
    }
}

/// Finds CNI_IFNAME inside CNI_NETNS, collecting its global addresses when the prevResult did
/// not give them. Returns a socket in that netns and the link's index.
fn find_container_link<S: Sys>(
    sys: &mut S,
    req: &Request,
    ips: &mut Option<Vec<IpAddr>>,
) -> Result<Option<(S::Links, u32)>, CniError> {
    let path = &req.env.netns;
    if path.is_empty() {
        return Ok(None);
    }
    let ns = match NetNs::open(path) {
        Ok(ns) => ns,
        Err(e) if e.is_not_found() => return Ok(None), // netns already gone: so is the veth
        Err(e) => {
            return Err(CniError::internal(format!(
                "cannot open netns {path:?} ({e}); cleaning up from the prevResult instead"
            )))
        }
    };
    let mut cnl = sys.open_container(&ns)?;
    let Some(link) = cnl.link_by_name(&req.env.ifname).map_err(nl)? else {
        return Ok(None);
    };
    if ips.is_none() {
        let addrs = cnl.addresses(Some(link.index), None).map_err(nl)?;
        let global: Vec<IpAddr> = addrs
            .iter()
            .filter(|a| a.scope == 0 && !(Family::of(&a.ip) == Family::V6 && is_link_local6(&a.ip)))
            .map(|a| a.ip)
            .collect();
        if !global.is_empty() {
            *ips = Some(global);
        }
    }
    Ok(Some((cnl, link.index)))
}

fn is_link_local6(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// Without a usable netns, the host end named in the prevResult — but only if it still is a
/// veth on our bridge (names can be reused).
fn find_host_veth<S: Sys>(
    sys: &mut S,
    conf: &Conf,
    prev: &cni_core::CniResult,
) -> Result<Option<(S::Links, u32)>, CniError> {
    let Some(host_if) = prev
        .interfaces
        .iter()
        .find(|i| i.sandbox.is_empty() && i.name != conf.bridge && i.name.starts_with("veth"))
    else {
        return Ok(None);
    };
    let mut hnl = sys.open_host()?;
    let Some(br) = hnl.link_by_name(&conf.bridge).map_err(nl)? else {
        return Ok(None);
    };
    let Some(l) = hnl.link_by_name(&host_if.name).map_err(nl)? else {
        return Ok(None);
    };
    if l.is_veth() && l.master == Some(br.index) {
        return Ok(Some((hnl, l.index)));
    }
    Ok(None)
}
