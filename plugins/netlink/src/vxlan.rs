//! VXLAN links (`ip link add NAME type vxlan id VNI local IP dev DEV dstport P nolearning`).

use std::net::Ipv4Addr;

use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo as NlInfo, LinkMessage,
};

use crate::error::Result;
use crate::link::{check_ifname, LinkInfo};
use crate::mac::Mac;
use crate::socket::Netlink;

/// A VXLAN link to create. Learning is always off: the forwarding database
/// is written statically by its owner, never learned from traffic.
#[derive(Debug, Clone, Copy)]
pub struct Vxlan<'a> {
    pub name: &'a str,
    pub vni: u32,
    /// Source (VTEP) address of the encapsulated packets.
    pub local: Ipv4Addr,
    /// Underlay link the packets leave by.
    pub dev: u32,
    /// UDP destination port (IANA: 4789).
    pub port: u16,
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
}

/// The VXLAN attributes of an existing link, read back from IFLA_INFO_DATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VxlanInfo {
    pub vni: u32,
    pub local: Option<Ipv4Addr>,
    pub dev: Option<u32>,
    pub port: u16,
    pub learning: bool,
}

impl VxlanInfo {
    pub(crate) fn parse(opts: Vec<InfoVxlan>) -> VxlanInfo {
        let mut v = VxlanInfo::default();
        for o in opts {
            match o {
                InfoVxlan::Id(id) => v.vni = id,
                InfoVxlan::Local(ip) => v.local = Some(ip),
                InfoVxlan::Link(l) if l != 0 => v.dev = Some(l),
                InfoVxlan::Port(p) => v.port = p,
                InfoVxlan::Learning(l) => v.learning = l,
                _ => {}
            }
        }
        v
    }
}

impl Netlink {
    /// Creates a VXLAN link (down; set it up once configured). EEXIST if a
    /// link with that name exists.
    pub fn create_vxlan(&mut self, v: &Vxlan<'_>) -> Result<LinkInfo> {
        let ctx = || {
            format!(
                "netlink: create vxlan {} id {} local {} dev ifindex {} dstport {}",
                v.name, v.vni, v.local, v.dev, v.port
            )
        };
        check_ifname(v.name).map_err(|e| e.context(ctx()))?;
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(v.name.to_string()));
        if let Some(m) = v.mtu {
            msg.attributes.push(LinkAttribute::Mtu(m));
        }
        if let Some(m) = v.mac {
            msg.attributes.push(LinkAttribute::Address(m.to_vec()));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            NlInfo::Kind(InfoKind::Vxlan),
            NlInfo::Data(InfoData::Vxlan(vec![
                InfoVxlan::Id(v.vni),
                InfoVxlan::Local(v.local),
                InfoVxlan::Link(v.dev),
                InfoVxlan::Port(v.port),
                InfoVxlan::Learning(false),
            ])),
        ]));
        self.create_link(msg, v.name).map_err(|e| e.context(ctx()))
    }
}
