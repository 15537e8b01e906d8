//! Configuration inside the container's network namespace: sysctls, addresses, link state and
//! routes (the reference's `ConfigureIface`).

use std::time::{Duration, Instant};

use cni_core::{CniError, CniResult, Route};
use cni_netlink::{sysctl_set, Family, LinkUpdate, NetNs, Netlink, RTPROT_BOOT, RT_SCOPE_UNIVERSE};

use crate::errors::NlContext;
use crate::sys::Links;

/// The container's interface as [`enter`] prepares it.
#[derive(Debug, Clone, Copy)]
pub struct Iface<'a> {
    pub name: &'a str,
    /// It gets IPv6 addresses: IPv6 enabled, keep_addr_on_down and DAD (`enable_dad`).
    pub v6: bool,
    pub enable_dad: bool,
}

/// Enters the container netns once: opens the netlink socket used for the container side and
/// sets the interface's sysctls (`/proc/sys/net` binds to the netns of the opening thread).
pub fn enter(ns: &NetNs, iface: Iface<'_>) -> Result<Netlink, CniError> {
    let Iface {
        name: ifname,
        v6: has_v6,
        enable_dad,
    } = iface;
    let run = || -> Result<Netlink, cni_netlink::Error> {
        let sock = Netlink::new()?;
        if has_v6 {
            sysctl_set("net/ipv6/conf/lo/disable_ipv6", "0")?;
            sysctl_set(&format!("net/ipv6/conf/{ifname}/disable_ipv6"), "0")?;
            sysctl_set(&format!("net/ipv6/conf/{ifname}/keep_addr_on_down"), "1")?;
            if enable_dad {
                sysctl_set(&format!("net/ipv6/conf/{ifname}/enhanced_dad"), "1")?;
                sysctl_set(&format!("net/ipv6/conf/{ifname}/accept_dad"), "1")?;
            } else {
                sysctl_set(&format!("net/ipv6/conf/{ifname}/accept_dad"), "0")?;
            }
        }
        Ok(sock)
    };
    ns.run(run)
        .and_then(|r| r)
        .ctx(|| format!("configure {ifname:?} in {}", ns.path().display()))
}

/// Adds the result's addresses to `index`, sets arp_notify when it has IPv4 ones (the kernel
/// then sends a gratuitous ARP when the link comes up), brings it up, waits for DAD only when
/// asked to, and adds the routes.
pub fn configure(
    cnl: &mut impl Links,
    index: u32,
    ifname: &str,
    result: &CniResult,
    routes: &[Route],
    enable_dad: bool,
) -> Result<(), CniError> {
    for ip in &result.ips {
        let nodad = ip.address.is_ipv6() && !enable_dad;
        match cnl.add_address(index, ip.address.ip(), ip.address.prefix(), nodad) {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => {
                return Err(CniError::internal(format!(
                    "failed to add IP address {} to {ifname:?}: {e}",
                    ip.address
                )))
            }
        }
    }
    if result.ips.iter().any(|i| i.address.is_ipv4()) {
        // Its own request, before the `up`: the kernel applies it after a request's flags.
        let notify = LinkUpdate {
            arp_notify: Some(true),
            ..Default::default()
        };
        cnl.update_link(index, &notify)
            .ctx(|| format!("set arp_notify on {ifname:?}"))?;
    }
    cnl.set_up(index).ctx(|| format!("set {ifname:?} up"))?;
    if enable_dad && result.ips.iter().any(|i| i.address.is_ipv6()) {
        settle(cnl, index, ifname)?;
    }
    for r in routes {
        let nr = to_nl_route(r, index);
        match cnl.add_route(&nr) {
            Ok(()) => {}
            // Another attachment already has this destination: make it multipath, as the
            // reference's RouteAddEcmp does.
            Err(e) if e.is_exists() => match cnl.append_route(&nr) {
                Ok(()) => {}
                Err(e) if e.is_exists() => {}
                Err(e) => return Err(route_err(r, ifname, e)),
            },
            Err(e) => return Err(route_err(r, ifname, e)),
        }
    }
    Ok(())
}

fn route_err(r: &Route, ifname: &str, e: cni_netlink::Error) -> CniError {
    let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
    CniError::internal(format!(
        "failed to add route '{}{via} dev {ifname}': {e}",
        r.dst
    ))
}

pub fn to_nl_route(r: &Route, oif: u32) -> cni_netlink::Route {
    cni_netlink::Route {
        dst: (r.dst.prefix() != 0).then(|| (r.dst.network(), r.dst.prefix())),
        gateway: r.gw,
        oif: Some(oif),
        priority: (r.priority != 0).then_some(r.priority),
        table: r.table.unwrap_or(cni_netlink::RT_TABLE_MAIN),
        scope: r.scope.map(|s| s as u8).unwrap_or(RT_SCOPE_UNIVERSE),
        protocol: RTPROT_BOOT,
        ..Default::default()
    }
}

/// Waits (only with `enabledad`) until no IPv6 address on the link is tentative.
fn settle(cnl: &mut impl Links, index: u32, ifname: &str) -> Result<(), CniError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let addrs = cnl
            .addresses(Some(index), Some(Family::V6))
            .ctx(|| format!("list IPv6 addresses of {ifname:?}"))?;
        if let Some(a) = addrs.iter().find(|a| a.dadfailed()) {
            return Err(CniError::internal(format!(
                "IPv6 duplicate address detection failed for {} on {ifname:?}: the address is in use on the network",
                a.ip
            )));
        }
        if !addrs.iter().any(|a| a.tentative()) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CniError::internal(format!(
                "IPv6 addresses on {ifname:?} still tentative after 5s of duplicate address detection"
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
