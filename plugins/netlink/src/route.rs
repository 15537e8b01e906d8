//! Routes (`ip route add|append|del|show`).

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage};
use netlink_packet_route::RouteNetlinkMessage;

use crate::addr::Family;
use crate::error::{Error, Result};
use crate::socket::Netlink;

pub const RT_TABLE_MAIN: u32 = 254;
pub const RT_TABLE_LOCAL: u32 = 255;
/// Protocol the Go netlink library (and so the reference plugin) uses; `ip
/// route` does not print it.
pub const RTPROT_BOOT: u8 = 3;
pub const RTPROT_STATIC: u8 = 4;
pub const RT_SCOPE_UNIVERSE: u8 = 0;
pub const RT_SCOPE_LINK: u8 = 253;
pub const RT_SCOPE_HOST: u8 = 254;
const RT_SCOPE_NOWHERE: u8 = 255;
pub const RTN_UNICAST: u8 = 1;

/// A route. `Route::default()` is a main-table unicast route, protocol boot,
/// scope universe: what the reference plugin's routes look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination network; None means the default route.
    pub dst: Option<(IpAddr, u8)>,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    /// Metric (RTA_PRIORITY).
    pub priority: Option<u32>,
    pub table: u32,
    pub scope: u8,
    pub protocol: u8,
    /// Route type (RTN_*), e.g. 1 unicast, 2 local.
    pub kind: u8,
    /// Only filled when reading: next hops of a multipath (ECMP) route.
    pub multipath: Vec<NextHop>,
    /// RTNH_F_ONLINK: the gateway is on the link even without a covering
    /// prefix (`ip route ... via GW dev D onlink`).
    pub onlink: bool,
}

/// One next hop of a multipath route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    pub gateway: Option<IpAddr>,
    pub oif: u32,
}

impl Default for Route {
    fn default() -> Self {
        Route {
            dst: None,
            gateway: None,
            oif: None,
            priority: None,
            table: RT_TABLE_MAIN,
            scope: RT_SCOPE_UNIVERSE,
            protocol: RTPROT_BOOT,
            kind: RTN_UNICAST,
            multipath: Vec::new(),
            onlink: false,
        }
    }
}

impl Route {
    /// Family from the destination or gateway.
    pub fn family(&self) -> Option<Family> {
        self.dst
            .map(|(ip, _)| Family::of(&ip))
            .or(self.gateway.map(|g| Family::of(&g)))
    }

    /// `ip route` style text for error messages.
    pub fn describe(&self) -> String {
        let mut s = match (self.dst, self.family()) {
            (Some((ip, len)), _) => format!("{ip}/{len}"),
            (None, Some(Family::V6)) => "default (::/0)".to_string(),
            (None, _) => "default (0.0.0.0/0)".to_string(),
        };
        if let Some(gw) = self.gateway {
            s += &format!(" via {gw}");
        }
        if let Some(oif) = self.oif {
            s += &format!(" dev ifindex {oif}");
        }
        if let Some(p) = self.priority {
            s += &format!(" metric {p}");
        }
        if self.onlink {
            s += " onlink";
        }
        if self.table != RT_TABLE_MAIN {
            s += &format!(" table {}", self.table);
        }
        s
    }
}

impl Netlink {
    /// `ip route add`: EEXIST if the same route exists.
    pub fn add_route(&mut self, r: &Route) -> Result<()> {
        self.route_request(r, NLM_F_CREATE | NLM_F_EXCL, "add")
    }

    /// `ip route append` (NLM_F_APPEND): for IPv6 the kernel merges routes
    /// that differ only in next hop into one ECMP route, like the
    /// reference's RouteAddEcmp.
    pub fn append_route(&mut self, r: &Route) -> Result<()> {
        self.route_request(r, NLM_F_CREATE | NLM_F_APPEND, "append")
    }

    /// `ip route replace`.
    pub fn replace_route(&mut self, r: &Route) -> Result<()> {
        self.route_request(r, NLM_F_CREATE | NLM_F_REPLACE, "replace")
    }

    /// `ip route del`: matches dst, gateway, oif, table and (if set) metric;
    /// any protocol, scope and type. ESRCH (is_not_found) if absent.
    pub fn del_route(&mut self, r: &Route) -> Result<()> {
        let loose = Route {
            scope: RT_SCOPE_NOWHERE,
            protocol: 0,
            kind: 0,
            ..r.clone()
        };
        self.route_request(&loose, 0, "delete")
    }

    fn route_request(&mut self, r: &Route, flags: u16, op: &str) -> Result<()> {
        let ctx = || format!("netlink: {op} route {}", r.describe());
        let msg = route_msg(r).map_err(|e| e.context(ctx()))?;
        let req = if op == "delete" {
            RouteNetlinkMessage::DelRoute(msg)
        } else {
            RouteNetlinkMessage::NewRoute(msg)
        };
        self.ack(req, flags).map(drop).map_err(|e| e.context(ctx()))
    }

    /// Routes of one family, optionally only of one table.
    pub fn routes(&mut self, family: Family, table: Option<u32>) -> Result<Vec<Route>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family.af();
        if let Some(t) = table {
            // Honoured by the kernel thanks to NETLINK_GET_STRICT_CHK.
            msg.header.table = u8::try_from(t).unwrap_or(0);
            msg.attributes.push(RouteAttribute::Table(t));
        }
        self.dump(RouteNetlinkMessage::GetRoute(msg), |m| match m {
            RouteNetlinkMessage::NewRoute(m) => {
                Some(parse_route(m)).filter(|r| table.is_none_or(|t| r.table == t))
            }
            _ => None,
        })
        .map_err(|e| e.context("netlink: list routes"))
    }
}

fn route_msg(r: &Route) -> Result<RouteMessage> {
    let Some(family) = r.family() else {
        return Err(Error::invalid(
            "",
            "route needs a destination or a gateway to pick the IP family",
        ));
    };
    if !r.multipath.is_empty() {
        return Err(Error::invalid(
            "",
            "multipath routes cannot be written; use append_route per next hop",
        ));
    }
    let mut msg = RouteMessage::default();
    msg.header.address_family = family.af();
    msg.header.table = u8::try_from(r.table).unwrap_or(0);
    msg.header.scope = r.scope.into();
    msg.header.protocol = r.protocol.into();
    msg.header.kind = r.kind.into();
    if r.onlink {
        msg.header.flags = RouteFlags::Onlink;
    }
    if let Some((dst, len)) = r.dst {
        if len > family.max_prefix() {
            return Err(Error::invalid(
                "",
                format!("prefix length must be 0-{}", family.max_prefix()),
            ));
        }
        msg.header.destination_prefix_length = len;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
    }
    if let Some(gw) = r.gateway {
        if Family::of(&gw) != family {
            return Err(Error::invalid(
                "",
                "gateway and destination are of different IP families",
            ));
        }
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    }
    if let Some(oif) = r.oif {
        msg.attributes.push(RouteAttribute::Oif(oif));
    }
    if let Some(p) = r.priority {
        msg.attributes.push(RouteAttribute::Priority(p));
    }
    if r.table > 255 {
        msg.attributes.push(RouteAttribute::Table(r.table));
    }
    Ok(msg)
}

fn route_ip(a: RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    }
}

fn parse_route(m: RouteMessage) -> Route {
    let h = &m.header;
    let mut r = Route {
        dst: None,
        gateway: None,
        oif: None,
        priority: None,
        table: u32::from(h.table),
        scope: h.scope.into(),
        protocol: h.protocol.into(),
        kind: h.kind.into(),
        multipath: Vec::new(),
        onlink: h.flags.contains(RouteFlags::Onlink),
    };
    let dst_len = h.destination_prefix_length;
    for attr in m.attributes {
        match attr {
            RouteAttribute::Destination(a) => r.dst = route_ip(a).map(|ip| (ip, dst_len)),
            RouteAttribute::Gateway(a) => r.gateway = route_ip(a),
            RouteAttribute::Oif(i) => r.oif = Some(i),
            RouteAttribute::Priority(p) => r.priority = Some(p),
            RouteAttribute::Table(t) => r.table = t,
            RouteAttribute::MultiPath(hops) => {
                r.multipath = hops
                    .into_iter()
                    .map(|h| NextHop {
                        oif: h.interface_index,
                        gateway: h.attributes.into_iter().find_map(|a| match a {
                            RouteAttribute::Gateway(a) => route_ip(a),
                            _ => None,
                        }),
                    })
                    .collect()
            }
            _ => {}
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_msg_validation() {
        assert_eq!(
            route_msg(&Route::default()).unwrap_err().errno(),
            Some(libc::EINVAL)
        );
        let r = Route {
            dst: Some(("10.0.0.0".parse().unwrap(), 33)),
            ..Default::default()
        };
        assert!(route_msg(&r).is_err());
        let r = Route {
            dst: Some(("10.0.0.0".parse().unwrap(), 8)),
            gateway: Some("fd00::1".parse().unwrap()),
            ..Default::default()
        };
        assert!(route_msg(&r).is_err());
        let r = Route {
            gateway: Some("fd00::1".parse().unwrap()),
            table: 1000,
            ..Default::default()
        };
        let m = route_msg(&r).unwrap();
        assert_eq!(m.header.table, 0);
        assert!(m.attributes.contains(&RouteAttribute::Table(1000)));
        assert_eq!(r.describe(), "default (::/0) via fd00::1 table 1000");
    }
}
