//! The CNI `loopback` plugin: brings `lo` up in the container's network namespace.
//!
//! containerd's CRI runs it for every pod sandbox, so it does the least work that gives the
//! reference's result: one netlink socket opened inside the netns, one link lookup, one SETLINK
//! when `lo` is still down, and one address dump. DEL is a no-op (see `del`).

#![cfg_attr(not(test), no_main)]

use cni_core::{CniError, CniResult, Code, Interface, IpConfig, Plugin, Request};
use cni_netlink::{Address, Family, LinkInfo, NetNs, Netlink};
use ipnetwork::IpNetwork;

const LO: &str = "lo";

struct Loopback;

/// CNI_NETNS that cannot be opened or is not a network namespace.
fn bad_netns(path: &str, e: cni_netlink::Error) -> CniError {
    CniError::new(
        Code::InvalidEnv,
        format!("failed to open netns {path:?}: {e}"),
    )
}

fn nl(e: cni_netlink::Error) -> CniError {
    CniError::internal(e.to_string())
}

/// A socket inside CNI_NETNS and its `lo`.
fn open_lo(netns: &str) -> Result<(Netlink, LinkInfo), CniError> {
    let ns = NetNs::open(netns).map_err(|e| bad_netns(netns, e))?;
    let mut sock = Netlink::new_in_netns(&ns).map_err(nl)?;
    let lo = sock.link_by_name(LO).map_err(nl)?.ok_or_else(|| {
        CniError::internal(format!(
            "{netns} has no \"lo\" interface; pass a network namespace as CNI_NETNS"
        ))
    })?;
    Ok((sock, lo))
}

/// The first address of `family` on `lo`, after checking that every address of that family is
/// a loopback one (the reference's sanity check, with its message).
fn first_loopback(addrs: &[Address], family: Family) -> Result<Option<IpNetwork>, CniError> {
    let of_family: Vec<&Address> = addrs
        .iter()
        .filter(|a| Family::of(&a.ip) == family)
        .collect();
    if let Some(a) = of_family.iter().find(|a| !a.ip.is_loopback()) {
        return Err(CniError::internal(format!(
            "loopback interface found with non-loopback address \"{}\"",
            a.ip
        )));
    }
    of_family
        .first()
        .map(|a| {
            IpNetwork::new(a.ip, a.prefix_len).map_err(|e| {
                CniError::internal(format!("lo address {}/{}: {e}", a.ip, a.prefix_len))
            })
        })
        .transpose()
}

impl Plugin for Loopback {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        // Parse prevResult before touching the netns, as the reference does.
        let prev = req.prev_result()?;
        let netns = &req.env.netns;
        let (mut sock, lo) = open_lo(netns)?;
        if !lo.is_up() {
            sock.set_up(lo.index).map_err(nl)?;
        }
        // One dump for both families (the kernel adds 127.0.0.1/8 and ::1 when lo comes up).
        let addrs = sock.addresses(Some(lo.index), None).map_err(nl)?;
        let v4 = first_loopback(&addrs, Family::V4)?;
        let v6 = first_loopback(&addrs, Family::V6)?;
        if let Some(prev) = prev {
            return Ok(prev);
        }
        let ips = [v4, v6]
            .into_iter()
            .flatten()
            .map(|address| IpConfig {
                interface: Some(0),
                address,
                gateway: None,
            })
            .collect();
        Ok(CniResult {
            cni_version: req.cni_version.clone(),
            interfaces: vec![Interface {
                name: LO.into(),
                mac: "00:00:00:00:00:00".into(),
                sandbox: netns.clone(),
                ..Default::default()
            }],
            ips,
            ..Default::default()
        })
    }

    /// A no-op that always succeeds. The reference sets `lo` down, which gains nothing (the
    /// netns is about to go) and fails DEL when the netns is half torn down; a runtime that
    /// cannot DEL cannot remove the pod.
    fn del(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let (_, lo) = open_lo(&req.env.netns)?;
        if !lo.is_up() {
            return Err(CniError::internal("loopback interface is down"));
        }
        Ok(())
    }

    /// No state is kept, so there is nothing to collect.
    fn gc(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }

    fn status(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }
}

cni_core::plugin_main!(Loopback, "loopback");
