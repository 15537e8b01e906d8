//! Bridge port VLANs (`bridge vlan add|del|show`): AF_BRIDGE RTM_SETLINK /
//! RTM_DELLINK with IFLA_AF_SPEC { IFLA_BRIDGE_FLAGS, IFLA_BRIDGE_VLAN_INFO }.

use std::ops::RangeInclusive;

use netlink_packet_route::link::{
    AfSpecBridge, BridgeFlag, BridgeVlanInfo, BridgeVlanInfoFlags, LinkAttribute, LinkExtentMask,
    LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::{Error, Result};
use crate::socket::Netlink;

/// One VLAN entry of a bridge port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeVlan {
    pub vid: u16,
    /// Raw `BRIDGE_VLAN_INFO_*` flags.
    pub flags: u16,
}

impl BridgeVlan {
    pub fn pvid(&self) -> bool {
        self.flags & BridgeVlanInfoFlags::Pvid.bits() != 0
    }
    pub fn untagged(&self) -> bool {
        self.flags & BridgeVlanInfoFlags::Untagged.bits() != 0
    }
}

impl Netlink {
    /// `bridge vlan add dev PORT vid VID [pvid] [untagged] master|self`.
    /// `master` configures the VLAN in the port's bridge (the usual case);
    /// `!master` means `self` (e.g. VLANs of the bridge device itself).
    pub fn bridge_vlan_add(
        &mut self,
        port: u32,
        vid: u16,
        pvid: bool,
        untagged: bool,
        master: bool,
    ) -> Result<()> {
        let mut flags = BridgeVlanInfoFlags::empty();
        if pvid {
            flags |= BridgeVlanInfoFlags::Pvid;
        }
        if untagged {
            flags |= BridgeVlanInfoFlags::Untagged;
        }
        let what = format!(
            "add vlan {vid}{}{}",
            if pvid { " pvid" } else { "" },
            if untagged { " untagged" } else { "" }
        );
        self.vlan_request(port, vid..=vid, flags, master, true, &what)
    }

    /// Add the tagged VLANs `vids` (e.g. a trunk 100..=200) in one request.
    pub fn bridge_vlan_add_range(
        &mut self,
        port: u32,
        vids: RangeInclusive<u16>,
        untagged: bool,
        master: bool,
    ) -> Result<()> {
        let flags = if untagged {
            BridgeVlanInfoFlags::Untagged
        } else {
            BridgeVlanInfoFlags::empty()
        };
        let what = format!("add vlans {}-{}", vids.start(), vids.end());
        self.vlan_request(port, vids, flags, master, true, &what)
    }

    /// `bridge vlan del dev PORT vid VID` (on the port's master bridge).
    pub fn bridge_vlan_del(&mut self, port: u32, vid: u16) -> Result<()> {
        let what = format!("delete vlan {vid}");
        self.vlan_request(
            port,
            vid..=vid,
            BridgeVlanInfoFlags::empty(),
            true,
            false,
            &what,
        )
    }

    fn vlan_request(
        &mut self,
        port: u32,
        vids: RangeInclusive<u16>,
        flags: BridgeVlanInfoFlags,
        master: bool,
        add: bool,
        what: &str,
    ) -> Result<()> {
        let (first, last) = (*vids.start(), *vids.end());
        if !(1..=4094).contains(&first) || !(1..=4094).contains(&last) || first > last {
            let dev = self.dev_name(port);
            return Err(Error::invalid(
                format!("netlink: {what} on {dev}"),
                "VLAN IDs must be within 1-4094 (and min <= max)",
            ));
        }
        let req = vlan_msg(port, first, last, flags, master, add);
        match self.ack(req, 0) {
            Ok(_) => Ok(()),
            Err(e) => {
                let dev = self.dev_name(port);
                let hint = (e.errno() == Some(libc::EOPNOTSUPP))
                    .then(|| crate::link::VLAN_FILTERING_HINT.to_string());
                Err(e
                    .context(format!("netlink: {what} on {dev}"))
                    .with_detail(hint))
            }
        }
    }

    /// VLANs of bridge port `port` (`bridge vlan show dev PORT`). Empty when
    /// the link is not a bridge port.
    pub fn bridge_vlan_list(&mut self, port: u32) -> Result<Vec<BridgeVlan>> {
        let mut msg = LinkMessage::default();
        msg.header.interface_family = AddressFamily::Bridge;
        // Uncompressed list: one entry per VID, no range flags to expand.
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::Brvlan]));
        // The AF_BRIDGE dump cannot be filtered by index: filter here.
        let lists = self
            .dump(RouteNetlinkMessage::GetLink(msg), |m| match m {
                RouteNetlinkMessage::NewLink(m) if m.header.index == port => Some(m.attributes),
                _ => None,
            })
            .map_err(|e| e.context(format!("netlink: list vlans of ifindex {port}")))?;
        let mut out = Vec::new();
        for attr in lists.into_iter().flatten() {
            if let LinkAttribute::AfSpecBridge(spec) = attr {
                for s in spec {
                    if let AfSpecBridge::VlanInfo(v) = s {
                        out.push(BridgeVlan {
                            vid: v.vid,
                            flags: v.flags.bits(),
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The request iproute2's `bridge vlan add|del` sends (byte-identical, see
/// the tests): SETLINK/DELLINK, family AF_BRIDGE, IFLA_AF_SPEC with
/// IFLA_BRIDGE_FLAGS (add only; master is the kernel default) and one
/// IFLA_BRIDGE_VLAN_INFO, or a RANGE_BEGIN/RANGE_END pair.
fn vlan_msg(
    port: u32,
    first: u16,
    last: u16,
    flags: BridgeVlanInfoFlags,
    master: bool,
    add: bool,
) -> RouteNetlinkMessage {
    let mut spec = Vec::with_capacity(3);
    if add || !master {
        spec.push(AfSpecBridge::Flags(if master {
            BridgeFlag::Controller
        } else {
            BridgeFlag::LowerDev
        }));
    }
    if first == last {
        spec.push(AfSpecBridge::VlanInfo(BridgeVlanInfo { flags, vid: first }));
    } else {
        spec.push(AfSpecBridge::VlanInfo(BridgeVlanInfo {
            flags: flags | BridgeVlanInfoFlags::RangeBegin,
            vid: first,
        }));
        spec.push(AfSpecBridge::VlanInfo(BridgeVlanInfo {
            flags: flags | BridgeVlanInfoFlags::RangeEnd,
            vid: last,
        }));
    }
    let mut msg = LinkMessage::default();
    msg.header.interface_family = AddressFamily::Bridge;
    msg.header.index = port;
    msg.attributes.push(LinkAttribute::AfSpecBridge(spec));
    // With AF_BRIDGE, RTM_DELLINK is the bridge's VLAN delete handler, not a
    // link delete.
    if add {
        RouteNetlinkMessage::SetLink(msg)
    } else {
        RouteNetlinkMessage::DelLink(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{
        NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST,
    };

    /// Serialize like the socket does, with iproute2's sequence number.
    fn bytes(m: RouteNetlinkMessage) -> Vec<u8> {
        let mut h = NetlinkHeader::default();
        h.flags = NLM_F_REQUEST | NLM_F_ACK;
        h.sequence_number = 0x6b03_df1b;
        let mut p = NetlinkMessage::new(h, NetlinkPayload::from(m));
        p.finalize();
        let mut buf = vec![0; p.buffer_len()];
        p.serialize(&mut buf);
        buf
    }

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    const HDR: &str = "1b df 03 6b 00 00 00 00 07 00 00 00";

    /// Golden bytes captured with `strace -e write=3 bridge vlan ...`
    /// (iproute2 6.1), port ifindex 4, bridge ifindex 2.
    #[test]
    fn matches_iproute2() {
        let pvid_untagged = BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged;
        // bridge vlan add dev P vid 10 pvid untagged master
        let want = hex(&format!(
            "34 00 00 00 13 00 05 00 {HDR} 04 00 00 00 00 00 00 00 00 00 00 00 \
             14 00 1a 00 06 00 00 00 01 00 00 00 08 00 02 00 06 00 0a 00"
        ));
        assert_eq!(bytes(vlan_msg(4, 10, 10, pvid_untagged, true, true)), want);
        // bridge vlan add dev P vid 100-103 master
        let want = hex(&format!(
            "3c 00 00 00 13 00 05 00 {HDR} 04 00 00 00 00 00 00 00 00 00 00 00 \
             1c 00 1a 00 06 00 00 00 01 00 00 00 08 00 02 00 08 00 64 00 08 00 02 00 10 00 67 00"
        ));
        let none = BridgeVlanInfoFlags::empty();
        assert_eq!(bytes(vlan_msg(4, 100, 103, none, true, true)), want);
        // bridge vlan del dev P vid 1
        let want = hex(&format!(
            "2c 00 00 00 11 00 05 00 {HDR} 04 00 00 00 00 00 00 00 00 00 00 00 \
             0c 00 1a 00 08 00 02 00 00 00 01 00"
        ));
        assert_eq!(bytes(vlan_msg(4, 1, 1, none, true, false)), want);
        // bridge vlan add dev BR vid 10 self
        let want = hex(&format!(
            "34 00 00 00 13 00 05 00 {HDR} 02 00 00 00 00 00 00 00 00 00 00 00 \
             14 00 1a 00 06 00 00 00 02 00 00 00 08 00 02 00 00 00 0a 00"
        ));
        assert_eq!(bytes(vlan_msg(2, 10, 10, none, false, true)), want);
    }
}
