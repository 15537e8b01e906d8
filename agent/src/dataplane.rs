//! The kernel side of a cluster network on this host, reconciled level-triggered: the VXLAN
//! link `vx-<vni>` with the host's tunnel IP, and per remote block a permanent ARP entry, a
//! permanent FDB entry and an onlink route (flannel's static L3 model). Blocking netlink
//! (`cni_netlink`), run on the blocking pool.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result};
use cni_netlink::{Family, Mac, Netlink, Route, Vxlan, RT_TABLE_MAIN};
use ipnetwork::Ipv4Network;

/// One remote block and how to reach its host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub block: Ipv4Network,
    pub tunnel_ip: Ipv4Addr,
    pub mac: Mac,
    pub vtep: Ipv4Addr,
}

/// Everything the data plane of one network should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub link: String,
    pub vni: u32,
    pub port: u16,
    pub vtep: Ipv4Addr,
    pub underlay: String,
    pub mtu: u32,
    pub mac: Mac,
    /// This host's tunnel IP (a /32 on the link); None while the host holds no block.
    pub tunnel_ip: Option<Ipv4Addr>,
    pub peers: Vec<Peer>,
}

/// What a reconcile changed (all zero on a converged host).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    pub link_created: bool,
    pub added: usize,
    pub removed: usize,
}

/// MAC of the VXLAN link: locally administered, unicast, stable for (host, vni), so a
/// restarted agent finds the same one and peers' entries stay valid.
pub fn vtep_mac(host: &str, vni: u32) -> Mac {
    // FNV-1a: tiny and stable across Rust versions (unlike DefaultHasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in host.bytes().chain(vni.to_be_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [0x02 | (b[0] & 0xfc), b[1], b[2], b[3], b[4], b[5]]
}

/// A MAC as [`cni_netlink::fmt_mac`] wrote it into etcd.
pub use cni_netlink::parse_mac_record as parse_mac;

/// The underlay's first IPv4 address and MTU.
pub fn underlay(name: &str) -> Result<(Ipv4Addr, u32)> {
    let mut nl = Netlink::new()?;
    let link = nl
        .link_by_name(name)?
        .with_context(|| format!("underlay interface {name} not found; pass --underlay <iface>"))?;
    let addr = nl
        .addresses(Some(link.index), Some(Family::V4))?
        .into_iter()
        .find_map(|a| match a.ip {
            IpAddr::V4(v) => Some(v),
            _ => None,
        })
        .with_context(|| format!("underlay interface {name} has no IPv4 address for the VTEP"))?;
    Ok((addr, link.mtu))
}

fn ensure_link(nl: &mut Netlink, d: &Desired, ch: &mut Changes) -> Result<u32> {
    let dev = nl.link_index(&d.underlay)?;
    if let Some(l) = nl.link_by_name(&d.link)? {
        let ok = l.vxlan.is_some_and(|v| {
            v.vni == d.vni
                && v.local == Some(d.vtep)
                && v.dev == Some(dev)
                && v.port == d.port
                && !v.learning
        }) && l.mac == Some(d.mac);
        if ok {
            if l.mtu != d.mtu {
                nl.set_mtu(l.index, d.mtu)?;
            }
            if !l.is_up() {
                nl.set_up(l.index)?;
            }
            return Ok(l.index);
        }
        // Not ours or stale (VTEP moved): recreate.
        nl.delete_link(l.index)?;
    }
    let l = nl.create_vxlan(&Vxlan {
        name: &d.link,
        vni: d.vni,
        local: d.vtep,
        dev,
        port: d.port,
        mtu: Some(d.mtu),
        mac: Some(d.mac),
    })?;
    nl.set_up(l.index)?;
    ch.link_created = true;
    Ok(l.index)
}

fn ensure_tunnel_ip(
    nl: &mut Netlink,
    idx: u32,
    want: Option<Ipv4Addr>,
    ch: &mut Changes,
) -> Result<()> {
    let have = nl.addresses(Some(idx), Some(Family::V4))?;
    for a in &have {
        if Some(a.ip) != want.map(IpAddr::V4) || a.prefix_len != 32 {
            nl.del_address(idx, a.ip, a.prefix_len)?;
            ch.removed += 1;
        }
    }
    if let Some(ip) = want {
        if !have
            .iter()
            .any(|a| a.ip == IpAddr::V4(ip) && a.prefix_len == 32)
        {
            nl.add_address(idx, IpAddr::V4(ip), 32, false)?;
            ch.added += 1;
        }
    }
    Ok(())
}

/// Brings the kernel to `d`: diffs a netlink dump against it and applies only the
/// difference, so a restarted agent adopts what is there without flapping.
pub fn reconcile(d: &Desired) -> Result<Changes> {
    let mut ch = Changes::default();
    let mut nl = Netlink::new()?;
    let idx = ensure_link(&mut nl, d, &mut ch)?;
    ensure_tunnel_ip(&mut nl, idx, d.tunnel_ip, &mut ch)?;

    let want_neigh: BTreeSet<(Ipv4Addr, Mac)> =
        d.peers.iter().map(|p| (p.tunnel_ip, p.mac)).collect();
    let want_fdb: BTreeSet<(Mac, Ipv4Addr)> = d.peers.iter().map(|p| (p.mac, p.vtep)).collect();
    let want_route: BTreeSet<(Ipv4Network, Ipv4Addr)> =
        d.peers.iter().map(|p| (p.block, p.tunnel_ip)).collect();

    let neigh: BTreeSet<(Ipv4Addr, Mac)> = nl
        .neighbours(idx, Family::V4)?
        .into_iter()
        .filter(|n| n.permanent)
        .filter_map(|n| match (n.ip, n.mac) {
            (Some(IpAddr::V4(ip)), Some(m)) => Some((ip, m)),
            _ => None,
        })
        .collect();
    let fdb: BTreeSet<(Mac, Ipv4Addr)> = nl
        .fdb(idx)?
        .into_iter()
        .filter(|n| n.permanent)
        .filter_map(|n| match (n.mac, n.ip) {
            (Some(m), Some(IpAddr::V4(ip))) if m != [0; 6] && Some(m) != Some(d.mac) => {
                Some((m, ip))
            }
            _ => None,
        })
        .collect();
    let routes: Vec<Route> = nl
        .routes(Family::V4, Some(RT_TABLE_MAIN))?
        .into_iter()
        .filter(|r| r.oif == Some(idx) && r.gateway.is_some())
        .collect();
    let have_route: BTreeSet<(Ipv4Network, Ipv4Addr)> = routes
        .iter()
        .filter(|r| r.onlink)
        .filter_map(|r| match (r.dst, r.gateway) {
            (Some((IpAddr::V4(n), l)), Some(IpAddr::V4(g))) => {
                Some((Ipv4Network::new(n, l).ok()?, g))
            }
            _ => None,
        })
        .collect();

    // Remove first (routes, then FDB, then ARP: the reverse of adding), so a block that moved
    // to another host never has two next hops.
    for r in &routes {
        let key = match (r.dst, r.gateway) {
            (Some((IpAddr::V4(n), l)), Some(IpAddr::V4(g))) => {
                Ipv4Network::new(n, l).ok().map(|n| (n, g))
            }
            _ => None,
        };
        if key.is_none_or(|k| !want_route.contains(&k) || !r.onlink) {
            nl.del_route(r)?;
            ch.removed += 1;
        }
    }
    for (m, ip) in fdb.difference(&want_fdb) {
        nl.del_fdb(idx, *m, Some(IpAddr::V4(*ip)))?;
        ch.removed += 1;
    }
    for (ip, _) in neigh.difference(&want_neigh) {
        if !want_neigh.iter().any(|(w, _)| w == ip) {
            nl.del_neigh(idx, IpAddr::V4(*ip))?;
            ch.removed += 1;
        }
    }
    // Add: ARP, FDB, then the route last (flannel's order).
    for (ip, m) in want_neigh.difference(&neigh) {
        nl.replace_neigh(idx, IpAddr::V4(*ip), *m)?;
        ch.added += 1;
    }
    for (m, ip) in want_fdb.difference(&fdb) {
        nl.replace_fdb(idx, *m, IpAddr::V4(*ip))?;
        ch.added += 1;
    }
    for (block, gw) in want_route.difference(&have_route) {
        nl.replace_route(&Route {
            dst: Some((IpAddr::V4(block.network()), block.prefix())),
            gateway: Some(IpAddr::V4(*gw)),
            oif: Some(idx),
            onlink: true,
            ..Default::default()
        })?;
        ch.added += 1;
    }
    Ok(ch)
}

/// Removes the network's VXLAN link (with it every route, ARP and FDB entry on it).
pub fn remove(link: &str) -> Result<bool> {
    let mut nl = Netlink::new()?;
    match nl.link_by_name(link)? {
        Some(l) => {
            nl.delete_link(l.index)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Remote blocks whose onlink route is on `link` now (what `status` calls programmed).
pub fn programmed(link: &str) -> Result<BTreeSet<Ipv4Network>> {
    let mut nl = Netlink::new()?;
    let Some(l) = nl.link_by_name(link)? else {
        return Ok(BTreeSet::new());
    };
    Ok(nl
        .routes(Family::V4, Some(RT_TABLE_MAIN))?
        .into_iter()
        .filter(|r| r.oif == Some(l.index) && r.gateway.is_some() && r.onlink)
        .filter_map(|r| match r.dst {
            Some((IpAddr::V4(n), len)) => Ipv4Network::new(n, len).ok(),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_stable_local_unicast() {
        let a = vtep_mac("h1", 4097);
        assert_eq!(a, vtep_mac("h1", 4097));
        assert_ne!(a, vtep_mac("h2", 4097));
        assert_ne!(a, vtep_mac("h1", 4098));
        assert_eq!(a[0] & 0x03, 0x02);
        assert_eq!(parse_mac(&cni_netlink::fmt_mac(&a)), Some(a));
        assert_eq!(parse_mac("zz"), None);
    }
}
