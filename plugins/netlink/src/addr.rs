//! IP addresses on links (`ip addr add|del|show`).

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::{Error, Result};
use crate::socket::Netlink;

/// An IP family, for dump filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    pub(crate) fn af(self) -> AddressFamily {
        match self {
            Family::V4 => AddressFamily::Inet,
            Family::V6 => AddressFamily::Inet6,
        }
    }

    pub(crate) fn max_prefix(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// An address as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub ip: IpAddr,
    pub prefix_len: u8,
    /// Raw `IFA_F_*` flags (from IFA_FLAGS, which has all 32 bits).
    pub flags: u32,
    /// Raw `RT_SCOPE_*` scope (0 universe, 253 link, 254 host).
    pub scope: u8,
}

impl Address {
    /// IPv6 duplicate address detection still running.
    pub fn tentative(&self) -> bool {
        self.flags & libc::IFA_F_TENTATIVE != 0
    }
    /// IPv6 duplicate address detection found a duplicate.
    pub fn dadfailed(&self) -> bool {
        self.flags & libc::IFA_F_DADFAILED != 0
    }
}

impl Netlink {
    /// `ip addr add IP/PREFIX dev INDEX [nodad]`. `nodad` (IPv6 only) makes
    /// the address usable at once instead of after ~1-2 s of DAD. IPv4
    /// addresses get the subnet broadcast address like the Go reference.
    /// EEXIST if the address is already there.
    pub fn add_address(
        &mut self,
        index: u32,
        ip: IpAddr,
        prefix_len: u8,
        nodad: bool,
    ) -> Result<()> {
        let mut msg = addr_msg(index, ip, prefix_len);
        if let IpAddr::V4(v4) = ip {
            if prefix_len < 31 {
                msg.attributes
                    .push(AddressAttribute::Broadcast(broadcast(v4, prefix_len)));
            }
        }
        if nodad && ip.is_ipv6() {
            msg.header.flags = AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.addr_request(
            index,
            ip,
            prefix_len,
            RouteNetlinkMessage::NewAddress(msg),
            true,
        )
    }

    /// `ip addr del IP/PREFIX dev INDEX`. EADDRNOTAVAIL (is_not_found) if
    /// absent.
    pub fn del_address(&mut self, index: u32, ip: IpAddr, prefix_len: u8) -> Result<()> {
        let msg = addr_msg(index, ip, prefix_len);
        self.addr_request(
            index,
            ip,
            prefix_len,
            RouteNetlinkMessage::DelAddress(msg),
            false,
        )
    }

    fn addr_request(
        &mut self,
        index: u32,
        ip: IpAddr,
        prefix_len: u8,
        req: RouteNetlinkMessage,
        add: bool,
    ) -> Result<()> {
        let max = Family::of(&ip).max_prefix();
        let res = if prefix_len > max {
            Err(Error::invalid("", format!("prefix length must be 0-{max}")))
        } else {
            let flags = if add { NLM_F_CREATE | NLM_F_EXCL } else { 0 };
            self.ack(req, flags).map(drop)
        };
        res.map_err(|e| {
            let dev = self.dev_name(index);
            let op = if add { "add address" } else { "delete address" };
            let prep = if add { "to" } else { "from" };
            e.context(format!("netlink: {op} {ip}/{prefix_len} {prep} {dev}"))
        })
    }

    /// Addresses, optionally only of link `index` and/or one family.
    pub fn addresses(
        &mut self,
        index: Option<u32>,
        family: Option<Family>,
    ) -> Result<Vec<Address>> {
        let mut msg = AddressMessage::default();
        if let Some(f) = family {
            msg.header.family = f.af();
        }
        // Honoured by the kernel thanks to NETLINK_GET_STRICT_CHK.
        msg.header.index = index.unwrap_or(0);
        self.dump(RouteNetlinkMessage::GetAddress(msg), |m| match m {
            RouteNetlinkMessage::NewAddress(m) => parse_addr(m)
                .filter(|a| index.is_none_or(|i| a.index == i))
                .filter(|a| family.is_none_or(|f| Family::of(&a.ip) == f)),
            _ => None,
        })
        .map_err(|e| e.context("netlink: list addresses"))
    }
}

fn addr_msg(index: u32, ip: IpAddr, prefix_len: u8) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = Family::of(&ip).af();
    msg.header.prefix_len = prefix_len;
    msg.header.index = index;
    msg.header.scope = AddressScope::Universe;
    // IFA_LOCAL is the address itself; IFA_ADDRESS the peer, equal to it on
    // non point-to-point links (what `ip addr add` sends).
    msg.attributes.push(AddressAttribute::Local(ip));
    msg.attributes.push(AddressAttribute::Address(ip));
    msg
}

fn broadcast(ip: Ipv4Addr, prefix_len: u8) -> Ipv4Addr {
    let host_mask = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
    Ipv4Addr::from(u32::from(ip) | host_mask)
}

fn parse_addr(m: AddressMessage) -> Option<Address> {
    let mut local = None;
    let mut address = None;
    let mut flags = u32::from(m.header.flags.bits());
    for attr in m.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(ip),
            AddressAttribute::Address(ip) => address = Some(ip),
            AddressAttribute::Flags(f) => flags = f.bits(),
            _ => {}
        }
    }
    Some(Address {
        index: m.header.index,
        // IPv4 puts the own address in IFA_LOCAL; IPv6 only sends IFA_ADDRESS.
        ip: local.or(address)?,
        prefix_len: m.header.prefix_len,
        flags,
        scope: u8::from(m.header.scope),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_addr() {
        let ip = Ipv4Addr::new(10, 1, 2, 3);
        assert_eq!(broadcast(ip, 24), Ipv4Addr::new(10, 1, 2, 255));
        assert_eq!(broadcast(ip, 0), Ipv4Addr::BROADCAST);
        assert_eq!(broadcast(ip, 32), ip);
        assert_eq!(broadcast(ip, 16), Ipv4Addr::new(10, 1, 255, 255));
    }
}
