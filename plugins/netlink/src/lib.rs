//! Small blocking rtnetlink client for the CNI `bridge` plugin.
//!
//! No async runtime: each plugin call is a short-lived process, so every
//! request is one send and one or two recvs on a socket opened once per
//! network namespace ([`Netlink::new`], [`Netlink::new_in_netns`]).
//!
//! Modules have one job each: [`nl`] (the netlink layer shared with
//! `cni-nft`: socket, framing, error and ext-ack parsing, attributes),
//! `socket` (rtnetlink requests: ACKs, GETs, dumps; typed or raw replies), `link`,
//! `link_decode` (RTM_NEWLINK to LinkInfo without the full decode),
//! `addr`, `route`, `neigh` (ARP and FDB entries), `mac` (MAC parsing and formatting), `vxlan`, `bridge_vlan`, `netns` (setns), `sysctl`, `error`.

mod addr;
mod bridge_vlan;
mod errno;
mod error;
mod link;
mod link_decode;
mod mac;
mod neigh;
mod netns;
pub mod nl;
mod route;
mod socket;
mod sysctl;
mod vxlan;

pub use addr::{Address, Family};
pub use bridge_vlan::BridgeVlan;
pub use error::{Error, Result};
pub use link::{check_ifname, BridgePortInfo, LinkInfo, LinkUpdate, OperState, Veth};
pub use mac::{fmt_mac, local_unicast, parse_mac, parse_mac_record, Mac};
pub use neigh::Neighbour;
pub use netns::{is_current_netns, with_netns, NetNs, THREAD_NETNS};
pub use route::{
    NextHop, Route, RTN_UNICAST, RTPROT_BOOT, RTPROT_STATIC, RT_SCOPE_HOST, RT_SCOPE_LINK,
    RT_SCOPE_UNIVERSE, RT_TABLE_LOCAL, RT_TABLE_MAIN,
};
pub use socket::Netlink;
pub use sysctl::{sysctl_get, sysctl_set};
pub use vxlan::{Vxlan, VxlanInfo};
