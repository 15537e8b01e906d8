//! RTM_NEWLINK replies straight into [`LinkInfo`], without netlink_packet_route.
//!
//! Why: the full decode turns every attribute of a ~1.5 KB link message
//! (stats64, the AF_SPEC inet/inet6 conf arrays, ...) into heap structures,
//! ~40-50 us of CPU and a few more text pages per plugin call, for the
//! dozen fields LinkInfo keeps. This is one pass over the bytes.
//!
//! Parity with the full decode ([`decode_link_full`], tested against it here
//! and on real kernel messages in tests/kernel.rs): the attributes read are
//! checked as netlink_packet_route checks them (integers of exactly their
//! size, UTF-8 names, the framing of every level walked, DATA after its
//! KIND) and a violation is a decode error; attributes not read are only
//! framed, not validated. VXLAN links take the full decode: their
//! [`crate::VxlanInfo`] reads many attributes and they are rare.

use netlink_packet_route::RouteNetlinkMessage;

use crate::error::{Error, Result};
use crate::link::{BridgePortInfo, LinkInfo, OperState};
use crate::nl::attr::{self, Attrs};
use crate::nl::Msg;
use crate::socket::{decode, decode_error};

pub(crate) const RTM_NEWLINK: u16 = 16;
/// `sizeof(struct ifinfomsg)`: family, pad, type, index, flags, change.
const IFINFOMSG_LEN: usize = 16;

// <linux/if_link.h>
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_TXQLEN: u16 = 13;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_LINKINFO: u16 = 18;
const IFLA_LINK_NETNSID: u16 = 37;
// IFLA_LINKINFO nest
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_INFO_XSTATS: u16 = 3;
const IFLA_INFO_SLAVE_KIND: u16 = 4;
const IFLA_INFO_SLAVE_DATA: u16 = 5;
// IFLA_INFO_DATA of a bridge
const IFLA_BR_VLAN_FILTERING: u16 = 7;
// IFLA_INFO_SLAVE_DATA of a bridge port
const IFLA_BRPORT_MODE: u16 = 4;
const IFLA_BRPORT_ISOLATED: u16 = 33;

/// The reply `m`, which must be an RTM_NEWLINK, as a [`LinkInfo`].
pub(crate) fn decode_link(m: Msg<'_>) -> Result<LinkInfo> {
    match fast(m.payload) {
        Ok(Some(info)) => Ok(info),
        Ok(None) => decode_link_full(m),
        Err(why) => Err(decode_error(format!("RTM_NEWLINK: {why}"))),
    }
}

/// Through netlink_packet_route: every attribute decoded, then picked by
/// [`LinkInfo::from_msg`].
pub(crate) fn decode_link_full(m: Msg<'_>) -> Result<LinkInfo> {
    match decode(m)? {
        Some(RouteNetlinkMessage::NewLink(l)) => Ok(LinkInfo::from_msg(l)),
        _ => Err(unexpected(m)),
    }
}

/// A reply of another type where a link was expected.
pub(crate) fn unexpected(m: Msg<'_>) -> Error {
    Error::msg("netlink", format!("unexpected reply {}", m.ty))
}

/// `Ok(None)`: a VXLAN link, for the full decode.
fn fast(p: &[u8]) -> std::result::Result<Option<LinkInfo>, String> {
    let Some(hdr) = p.get(..IFINFOMSG_LEN) else {
        return Err(format!(
            "{} bytes, shorter than its ifinfomsg header",
            p.len()
        ));
    };
    let word = |at: usize| u32::from_ne_bytes([hdr[at], hdr[at + 1], hdr[at + 2], hdr[at + 3]]);
    let mut info = LinkInfo::new(word(4), word(8));
    let mut attrs = Attrs::new(&p[IFINFOMSG_LEN..]);
    for (ty, v) in &mut attrs {
        match ty {
            IFLA_IFNAME => info.name = string(v, "IFLA_IFNAME")?.to_string(),
            IFLA_ADDRESS => info.mac = v.try_into().ok(),
            IFLA_MTU => info.mtu = int(v, attr::ne_u32, "IFLA_MTU")?,
            IFLA_TXQLEN => info.txqlen = int(v, attr::ne_u32, "IFLA_TXQLEN")?,
            IFLA_MASTER => match int(v, attr::ne_u32, "IFLA_MASTER")? {
                0 => {}
                m => info.master = Some(m),
            },
            IFLA_OPERSTATE => {
                info.oper_state = OperState::from(int(v, attr::ne_u8, "IFLA_OPERSTATE")?)
            }
            IFLA_LINK => info.link = Some(int(v, attr::ne_u32, "IFLA_LINK")?),
            IFLA_LINK_NETNSID => {
                info.link_netnsid = Some(int(v, attr::ne_i32, "IFLA_LINK_NETNSID")?)
            }
            // The guard reads the nest into `info`; false: a VXLAN link.
            IFLA_LINKINFO if !linkinfo(&mut info, v)? => return Ok(None),
            _ => {}
        }
    }
    if attrs.malformed() {
        return Err("malformed attribute".into());
    }
    Ok(Some(info))
}

/// IFLA_LINKINFO into `info`; false for a VXLAN link.
fn linkinfo(info: &mut LinkInfo, nest: &[u8]) -> std::result::Result<bool, String> {
    if nest.is_empty() {
        return Err("empty IFLA_LINKINFO".into());
    }
    let mut kind_seen = false;
    // IFLA_INFO_SLAVE_DATA is read by the SLAVE_KIND just before it.
    let mut port_kind: Option<&str> = None;
    let mut attrs = Attrs::new(nest);
    for (ty, v) in &mut attrs {
        match ty {
            IFLA_INFO_KIND => {
                let kind = string(v, "IFLA_INFO_KIND")?;
                if kind == "vxlan" {
                    return Ok(false);
                }
                info.kind = Some(kind.to_string());
                kind_seen = true;
            }
            IFLA_INFO_DATA | IFLA_INFO_XSTATS if !kind_seen => {
                return Err(format!(
                    "IFLA_LINKINFO attribute {ty} before IFLA_INFO_KIND"
                ));
            }
            IFLA_INFO_DATA if info.is_bridge() => {
                for (ty, v) in nested(v, "bridge IFLA_INFO_DATA")? {
                    if ty == IFLA_BR_VLAN_FILTERING {
                        info.vlan_filtering =
                            Some(int(v, attr::ne_u8, "IFLA_BR_VLAN_FILTERING")? != 0);
                    }
                }
            }
            IFLA_INFO_SLAVE_KIND => port_kind = Some(string(v, "IFLA_INFO_SLAVE_KIND")?),
            IFLA_INFO_SLAVE_DATA => match port_kind.take() {
                None => return Err("IFLA_INFO_SLAVE_DATA before IFLA_INFO_SLAVE_KIND".into()),
                Some("bridge") => info.bridge_port = Some(bridge_port(v)?),
                Some(_) => {}
            },
            _ => {}
        }
    }
    if attrs.malformed() {
        return Err("malformed attribute in IFLA_LINKINFO".into());
    }
    Ok(true)
}

fn bridge_port(nest: &[u8]) -> std::result::Result<BridgePortInfo, String> {
    let mut port = BridgePortInfo::default();
    for (ty, v) in nested(nest, "bridge port IFLA_INFO_SLAVE_DATA")? {
        match ty {
            IFLA_BRPORT_MODE => port.hairpin = int(v, attr::ne_u8, "IFLA_BRPORT_MODE")? != 0,
            IFLA_BRPORT_ISOLATED => {
                port.isolated = int(v, attr::ne_u8, "IFLA_BRPORT_ISOLATED")? != 0
            }
            _ => {}
        }
    }
    Ok(port)
}

/// The attributes of a nest the decoder reads all of, checked whole first.
fn nested<'a>(
    nest: &'a [u8],
    what: &str,
) -> std::result::Result<impl Iterator<Item = (u16, &'a [u8])>, String> {
    let mut check = Attrs::new(nest);
    (&mut check).for_each(drop);
    if check.malformed() {
        return Err(format!("malformed attribute in {what}"));
    }
    Ok(Attrs::new(nest))
}

fn int<T>(v: &[u8], read: fn(&[u8]) -> Option<T>, name: &str) -> std::result::Result<T, String> {
    read(v).ok_or_else(|| {
        format!(
            "{name} of {} bytes, want {}",
            v.len(),
            std::mem::size_of::<T>()
        )
    })
}

fn string<'a>(v: &'a [u8], name: &str) -> std::result::Result<&'a str, String> {
    attr::strict_str(v).ok_or_else(|| format!("{name} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::attr::AttrWriter;
    use crate::nl::frame::{begin, end, messages, NLMSG_HDRLEN};

    const IFF_UP_RUNNING: u32 = 0x41;

    /// An RTM_NEWLINK message: ifinfomsg for ifindex 7, then `attrs`.
    fn newlink(attrs: impl FnOnce(&mut AttrWriter<'_>)) -> Vec<u8> {
        let mut m = Vec::new();
        let at = begin(&mut m, RTM_NEWLINK, 0, 1);
        m.extend_from_slice(&[0, 0, 1, 0]); // AF_UNSPEC, pad, ARPHRD_ETHER
        m.extend_from_slice(&7u32.to_ne_bytes());
        m.extend_from_slice(&IFF_UP_RUNNING.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        attrs(&mut AttrWriter::new(&mut m));
        end(&mut m, at);
        m
    }

    fn fast_of(raw: &[u8]) -> Result<LinkInfo> {
        decode_link(messages(raw).next().unwrap())
    }

    fn full_of(raw: &[u8]) -> Result<LinkInfo> {
        decode_link_full(messages(raw).next().unwrap())
    }

    /// Both decoders give `want`.
    fn both(raw: &[u8], want: &LinkInfo) {
        assert_eq!(&full_of(raw).unwrap(), want, "full decode");
        assert_eq!(&fast_of(raw).unwrap(), want, "fast decode");
    }

    /// Both decoders fail.
    fn both_fail(raw: &[u8]) {
        assert!(full_of(raw).is_err(), "full decode accepted it");
        let e = fast_of(raw).unwrap_err();
        assert!(
            e.to_string().starts_with("netlink: decode kernel reply"),
            "{e}"
        );
    }

    fn base(w: &mut AttrWriter<'_>) {
        w.put(IFLA_IFNAME, b"br0\0");
        w.put(IFLA_ADDRESS, &[2, 0, 0, 0, 0, 1]);
        w.put(IFLA_MTU, &1500u32.to_ne_bytes());
        w.put(IFLA_TXQLEN, &1000u32.to_ne_bytes());
        w.put(IFLA_OPERSTATE, &[6]); // IF_OPER_UP
    }

    fn base_info() -> LinkInfo {
        let mut want = LinkInfo::new(7, IFF_UP_RUNNING);
        want.name = "br0".into();
        want.mac = Some([2, 0, 0, 0, 0, 1]);
        want.mtu = 1500;
        want.txqlen = 1000;
        want.oper_state = OperState::Up;
        want
    }

    #[test]
    fn plain_link_and_unknown_attributes() {
        let raw = newlink(|w| {
            base(w);
            // Unknown and unread ones: skipped, whatever they hold.
            w.put(0x3ff, &[1, 2, 3]);
            w.put(IFLA_MASTER, &0u32.to_ne_bytes());
            w.put(IFLA_LINK, &9u32.to_ne_bytes());
            w.put(IFLA_LINK_NETNSID, &(-1i32).to_ne_bytes());
        });
        let mut want = base_info();
        want.link = Some(9);
        want.link_netnsid = Some(-1);
        both(&raw, &want);
        // A hardware address that is not a MAC (an IP tunnel's) is None.
        let raw = newlink(|w| w.put(IFLA_ADDRESS, &[10, 0, 0, 1]));
        both(&raw, &LinkInfo::new(7, IFF_UP_RUNNING));
    }

    #[test]
    fn bridge_with_vlan_filtering() {
        let raw = newlink(|w| {
            base(w);
            w.nest(IFLA_LINKINFO, |w| {
                w.put(IFLA_INFO_KIND, b"bridge\0");
                w.nest(IFLA_INFO_DATA, |w| {
                    w.put(1, &15u32.to_ne_bytes()); // IFLA_BR_FORWARD_DELAY
                    w.put(IFLA_BR_VLAN_FILTERING, &[1]);
                });
            });
        });
        let mut want = base_info();
        want.kind = Some("bridge".into());
        want.vlan_filtering = Some(true);
        both(&raw, &want);
    }

    #[test]
    fn bridge_port() {
        let port = |hairpin: u8, isolated: u8| {
            newlink(|w| {
                w.put(IFLA_MASTER, &3u32.to_ne_bytes());
                w.nest(IFLA_LINKINFO, |w| {
                    w.put(IFLA_INFO_KIND, b"veth\0");
                    w.put(IFLA_INFO_SLAVE_KIND, b"bridge\0");
                    w.nest(IFLA_INFO_SLAVE_DATA, |w| {
                        w.put(1, &[0]); // IFLA_BRPORT_STATE
                        w.put(IFLA_BRPORT_MODE, &[hairpin]);
                        w.put(IFLA_BRPORT_ISOLATED, &[isolated]);
                    });
                });
            })
        };
        for (h, i) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            let mut want = LinkInfo::new(7, IFF_UP_RUNNING);
            want.master = Some(3);
            want.kind = Some("veth".into());
            want.bridge_port = Some(BridgePortInfo {
                hairpin: h == 1,
                isolated: i == 1,
            });
            both(&port(h, i), &want);
        }
        // A port of another kind of master: no bridge options.
        let raw = newlink(|w| {
            w.nest(IFLA_LINKINFO, |w| {
                w.put(IFLA_INFO_SLAVE_KIND, b"bond\0");
                w.nest(IFLA_INFO_SLAVE_DATA, |_| {});
            });
        });
        assert_eq!(fast_of(&raw).unwrap().bridge_port, None);
    }

    #[test]
    fn vxlan_takes_the_full_decode() {
        let raw = newlink(|w| {
            w.nest(IFLA_LINKINFO, |w| {
                w.put(IFLA_INFO_KIND, b"vxlan\0");
                w.nest(IFLA_INFO_DATA, |w| {
                    w.put(1, &42u32.to_ne_bytes()); // IFLA_VXLAN_ID
                    w.put(15, &4789u16.to_be_bytes()); // IFLA_VXLAN_PORT
                });
            });
        });
        let info = fast_of(&raw).unwrap();
        assert_eq!(info.vxlan.map(|v| (v.vni, v.port)), Some((42, 4789)));
        assert_eq!(info, full_of(&raw).unwrap());
    }

    #[test]
    fn wrong_lengths_are_errors() {
        for (ty, len) in [
            (IFLA_MTU, 3),
            (IFLA_MTU, 8),
            (IFLA_TXQLEN, 2),
            (IFLA_MASTER, 0),
            (IFLA_LINK, 5),
            (IFLA_LINK_NETNSID, 1),
            (IFLA_OPERSTATE, 4),
        ] {
            both_fail(&newlink(|w| w.put(ty, &vec![0; len])));
        }
        both_fail(&newlink(|w| w.put(IFLA_IFNAME, &[0xc3, 0x28, 0])));
        let e = fast_of(&newlink(|w| w.put(IFLA_MTU, &[1, 2]))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "netlink: decode kernel reply: RTM_NEWLINK: IFLA_MTU of 2 bytes, want 4"
        );
        let port = |mode: &[u8]| {
            newlink(|w| {
                w.nest(IFLA_LINKINFO, |w| {
                    w.put(IFLA_INFO_SLAVE_KIND, b"bridge\0");
                    w.nest(IFLA_INFO_SLAVE_DATA, |w| w.put(IFLA_BRPORT_MODE, mode));
                });
            })
        };
        both_fail(&port(&[1, 0]));
        both_fail(&port(&[]));
        let bridge = |vf: &[u8]| {
            newlink(|w| {
                w.nest(IFLA_LINKINFO, |w| {
                    w.put(IFLA_INFO_KIND, b"bridge\0");
                    w.nest(IFLA_INFO_DATA, |w| w.put(IFLA_BR_VLAN_FILTERING, vf));
                });
            })
        };
        both_fail(&bridge(&1u32.to_ne_bytes()));
        assert_eq!(fast_of(&bridge(&[0])).unwrap().vlan_filtering, Some(false));
    }

    #[test]
    fn truncated_and_misplaced_are_errors() {
        // ifinfomsg cut short.
        let mut m = Vec::new();
        let at = begin(&mut m, RTM_NEWLINK, 0, 1);
        m.extend_from_slice(&[0; 8]);
        end(&mut m, at);
        both_fail(&m);

        // An attribute whose length runs past the message: the message
        // length is kept, the attribute's grown.
        let mut raw = newlink(base);
        let first = NLMSG_HDRLEN + IFINFOMSG_LEN;
        raw[first] = 200;
        both_fail(&raw);
        // Length shorter than an attribute header.
        raw[first] = 3;
        both_fail(&raw);
        // A stub of two bytes after the last attribute.
        let mut raw = newlink(base);
        raw.extend_from_slice(&[4, 0, 0, 0]);
        let len = (raw.len() - 2) as u32;
        raw[..4].copy_from_slice(&len.to_ne_bytes());
        both_fail(&raw);

        // Inside IFLA_LINKINFO: a truncated KIND; DATA before KIND; SLAVE_DATA
        // without SLAVE_KIND; an empty nest.
        both_fail(&newlink(|w| w.put(IFLA_LINKINFO, &[9, 0, 1, 0, b'b'])));
        both_fail(&newlink(|w| {
            w.nest(IFLA_LINKINFO, |w| w.nest(IFLA_INFO_DATA, |_| {}))
        }));
        both_fail(&newlink(|w| {
            w.nest(IFLA_LINKINFO, |w| w.nest(IFLA_INFO_SLAVE_DATA, |_| {}))
        }));
        both_fail(&newlink(|w| w.put(IFLA_LINKINFO, &[])));
        // A truncated attribute inside bridge data.
        both_fail(&newlink(|w| {
            w.nest(IFLA_LINKINFO, |w| {
                w.put(IFLA_INFO_KIND, b"bridge\0");
                w.put(IFLA_INFO_DATA, &[8, 0, 7, 0, 1]);
            })
        }));
    }

    /// Every truncation and byte change of a full message: no panic; the
    /// fast decoder fails only where the full one fails too, and where both
    /// succeed they agree.
    #[test]
    fn every_truncation_and_flip_agrees_or_fails_alike() {
        let raw = newlink(|w| {
            base(w);
            w.put(IFLA_MASTER, &3u32.to_ne_bytes());
            w.nest(IFLA_LINKINFO, |w| {
                w.put(IFLA_INFO_KIND, b"bridge\0");
                w.nest(IFLA_INFO_DATA, |w| w.put(IFLA_BR_VLAN_FILTERING, &[1]));
                w.put(IFLA_INFO_SLAVE_KIND, b"bridge\0");
                w.nest(IFLA_INFO_SLAVE_DATA, |w| w.put(IFLA_BRPORT_MODE, &[1]));
            });
        });
        let check = |m: &[u8]| match (fast_of(m), full_of(m)) {
            (Ok(fast), Ok(full)) => assert_eq!(fast, full, "{m:?}"),
            (Err(e), Ok(_)) => panic!("only the fast decoder fails: {e}: {m:?}"),
            _ => {}
        };
        for at in NLMSG_HDRLEN..raw.len() {
            let mut cut = raw[..at].to_vec();
            cut[..4].copy_from_slice(&(at as u32).to_ne_bytes());
            check(&cut);
            for b in [0u8, 1, 2, 3, 4, 5, 7, 0x21, 0x80, 0xff] {
                let mut m = raw.clone();
                m[at] = b;
                check(&m);
            }
        }
    }
}
