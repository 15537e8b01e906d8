//! Neighbour (ARP/NDP) entries and bridge/VXLAN forwarding-database entries:
//! `ip neigh replace|del|show` and `bridge fdb replace|del|show ... self`.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::addr::Family;
use crate::error::{Error, Result};
use crate::mac::{fmt_mac, Mac};
use crate::socket::Netlink;

/// One neighbour or FDB entry as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    /// Neighbour entries: the IP; FDB entries: the remote VTEP (NDA_DST), if any.
    pub ip: Option<IpAddr>,
    pub mac: Option<Mac>,
    pub permanent: bool,
    /// NTF_SELF: an FDB entry of the device itself (e.g. a VXLAN's), not of a bridge master.
    pub own: bool,
}

fn addr(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v) => NeighbourAddress::Inet(v),
        IpAddr::V6(v) => NeighbourAddress::Inet6(v),
    }
}

fn msg(family: AddressFamily, ifindex: u32, state: NeighbourState) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family;
    m.header.ifindex = ifindex;
    m.header.state = state;
    m.header.kind = RouteType::Unspec;
    m
}

impl Neighbour {
    fn from_msg(m: NeighbourMessage) -> Neighbour {
        let mut n = Neighbour {
            ifindex: m.header.ifindex,
            ip: None,
            mac: None,
            permanent: m.header.state == NeighbourState::Permanent,
            own: m.header.flags.contains(NeighbourFlags::Own),
        };
        for a in m.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => {
                    n.ip = Some(IpAddr::V4(v))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => {
                    n.ip = Some(IpAddr::V6(v))
                }
                // FDB entries (AF_BRIDGE) carry the VTEP as raw bytes.
                NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                    n.ip = match b.len() {
                        4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                        _ => None,
                    }
                }
                NeighbourAttribute::LinkLayerAddress(l) => n.mac = l.as_slice().try_into().ok(),
                _ => {}
            }
        }
        n
    }
}

impl Netlink {
    /// `ip neigh replace IP lladdr MAC dev IFINDEX nud permanent`.
    pub fn replace_neigh(&mut self, ifindex: u32, ip: IpAddr, mac: Mac) -> Result<()> {
        let mut m = msg(Family::of(&ip).af(), ifindex, NeighbourState::Permanent);
        m.attributes.push(NeighbourAttribute::Destination(addr(ip)));
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        self.neigh_change(m, true, || {
            format!(
                "neigh replace {ip} lladdr {} dev ifindex {ifindex}",
                fmt_mac(&mac)
            )
        })
    }

    /// `ip neigh del IP dev IFINDEX`; not-found is an error the caller may ignore.
    pub fn del_neigh(&mut self, ifindex: u32, ip: IpAddr) -> Result<()> {
        let mut m = msg(Family::of(&ip).af(), ifindex, NeighbourState::None);
        m.attributes.push(NeighbourAttribute::Destination(addr(ip)));
        self.neigh_change(m, false, || format!("neigh del {ip} dev ifindex {ifindex}"))
    }

    /// `ip neigh show dev IFINDEX` for one family.
    pub fn neighbours(&mut self, ifindex: u32, family: Family) -> Result<Vec<Neighbour>> {
        let mut m = NeighbourMessage::default();
        m.header.family = family.af();
        m.attributes.push(NeighbourAttribute::IfIndex(ifindex));
        self.dump(RouteNetlinkMessage::GetNeighbour(m), |r| match r {
            RouteNetlinkMessage::NewNeighbour(m) => {
                Some(Neighbour::from_msg(m)).filter(|n| n.ifindex == ifindex)
            }
            _ => None,
        })
        .map_err(|e| e.context(format!("netlink: list neighbours of ifindex {ifindex}")))
    }

    /// `bridge fdb replace MAC dev IFINDEX dst DST self permanent`: the VXLAN
    /// device sends frames for MAC to the VTEP `dst`.
    pub fn replace_fdb(&mut self, ifindex: u32, mac: Mac, dst: IpAddr) -> Result<()> {
        let mut m = msg(AddressFamily::Bridge, ifindex, NeighbourState::Permanent);
        m.header.flags = NeighbourFlags::Own;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        m.attributes
            .push(NeighbourAttribute::Destination(addr(dst)));
        self.neigh_change(m, true, || {
            format!(
                "fdb replace {} dev ifindex {ifindex} dst {dst} self permanent",
                fmt_mac(&mac)
            )
        })
    }

    /// `bridge fdb del MAC dev IFINDEX [dst DST] self`.
    pub fn del_fdb(&mut self, ifindex: u32, mac: Mac, dst: Option<IpAddr>) -> Result<()> {
        let mut m = msg(AddressFamily::Bridge, ifindex, NeighbourState::None);
        m.header.flags = NeighbourFlags::Own;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        if let Some(d) = dst {
            m.attributes.push(NeighbourAttribute::Destination(addr(d)));
        }
        self.neigh_change(m, false, || {
            format!("fdb del {} dev ifindex {ifindex} self", fmt_mac(&mac))
        })
    }

    /// Replaces (creating it if needed) or deletes one neighbour or FDB entry; `what` (the
    /// command it stands for) names it in an error.
    fn neigh_change(
        &mut self,
        m: NeighbourMessage,
        replace: bool,
        what: impl FnOnce() -> String,
    ) -> Result<()> {
        let (req, flags) = if replace {
            (
                RouteNetlinkMessage::NewNeighbour(m),
                NLM_F_CREATE | NLM_F_REPLACE,
            )
        } else {
            (RouteNetlinkMessage::DelNeighbour(m), 0)
        };
        self.ack(req, flags)
            .map(drop)
            .map_err(|e| e.context(format!("netlink: {}", what())))
    }

    /// `bridge fdb show dev IFINDEX`: the device's own (NTF_SELF) entries.
    pub fn fdb(&mut self, ifindex: u32) -> Result<Vec<Neighbour>> {
        // With strict checking the kernel filters FDB dumps by the header's ifindex.
        let m = msg(AddressFamily::Bridge, ifindex, NeighbourState::None);
        self.dump(RouteNetlinkMessage::GetNeighbour(m), |r| match r {
            RouteNetlinkMessage::NewNeighbour(m) => {
                Some(Neighbour::from_msg(m)).filter(|n| n.ifindex == ifindex && n.own)
            }
            _ => None,
        })
        .map_err(|e: Error| e.context(format!("netlink: list fdb of ifindex {ifindex}")))
    }
}
