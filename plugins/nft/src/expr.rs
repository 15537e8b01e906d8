//! Rule expressions: encoding to and decoding from NFTA_RULE_EXPRESSIONS,
//! plus verdicts (also used as verdict-map data) and small builders for the
//! matches this crate needs (`ip saddr`, `ip daddr 10.0.0.0/8`, `iifname`,
//! `ether saddr`).

use std::net::IpAddr;

use crate::attr::{self, AttrWriter, Attrs};
use crate::sys::*;

/// A verdict, in a rule (`immediate`) or as verdict-map data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    Continue,
    Jump(String),
    Goto(String),
}

impl Verdict {
    /// Writes NFTA_DATA_VERDICT { CODE, CHAIN } inside the current nest.
    pub fn encode(&self, w: &mut AttrWriter<'_>) {
        let (code, chain) = match self {
            Verdict::Accept => (NF_ACCEPT, None),
            Verdict::Drop => (NF_DROP, None),
            Verdict::Return => (NFT_RETURN, None),
            Verdict::Continue => (NFT_CONTINUE, None),
            Verdict::Jump(c) => (NFT_JUMP, Some(c)),
            Verdict::Goto(c) => (NFT_GOTO, Some(c)),
        };
        w.nest(NFTA_DATA_VERDICT, |w| {
            w.put_be32(NFTA_VERDICT_CODE, code as u32);
            if let Some(c) = chain {
                w.put_str(NFTA_VERDICT_CHAIN, c);
            }
        });
    }

    /// Decodes the content of an NFTA_DATA nest (value or verdict).
    pub fn decode(data_nest: &[u8]) -> Option<Verdict> {
        let v = attr::find(data_nest, NFTA_DATA_VERDICT)?;
        let code = attr::find_be32(v, NFTA_VERDICT_CODE)? as i32;
        let chain = || attr::find_str(v, NFTA_VERDICT_CHAIN).unwrap_or_default();
        Some(match code {
            NF_ACCEPT => Verdict::Accept,
            NF_DROP => Verdict::Drop,
            NFT_RETURN => Verdict::Return,
            NFT_CONTINUE => Verdict::Continue,
            NFT_JUMP => Verdict::Jump(chain()),
            NFT_GOTO => Verdict::Goto(chain()),
            _ => return None,
        })
    }
}

/// `meta` keys used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    IifName,
    OifName,
    NfProto,
    L4Proto,
    Other(u32),
}

impl MetaKey {
    fn raw(self) -> u32 {
        match self {
            MetaKey::IifName => NFT_META_IIFNAME,
            MetaKey::OifName => NFT_META_OIFNAME,
            MetaKey::NfProto => NFT_META_NFPROTO,
            MetaKey::L4Proto => NFT_META_L4PROTO,
            MetaKey::Other(k) => k,
        }
    }

    fn from_raw(k: u32) -> Self {
        match k {
            NFT_META_IIFNAME => MetaKey::IifName,
            NFT_META_OIFNAME => MetaKey::OifName,
            NFT_META_NFPROTO => MetaKey::NfProto,
            NFT_META_L4PROTO => MetaKey::L4Proto,
            k => MetaKey::Other(k),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Neq,
    Other(u32),
}

/// One nf_tables expression. `Other` keeps the name of expressions this
/// crate does not model, so decoded rules can still be compared safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Meta {
        key: MetaKey,
        dreg: u32,
    },
    /// Payload load; `base` is NFT_PAYLOAD_LL_HEADER (0, link layer) or
    /// NFT_PAYLOAD_NETWORK_HEADER (1).
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    Cmp {
        sreg: u32,
        op: CmpOp,
        data: Vec<u8>,
    },
    /// `dreg = (sreg & mask) ^ xor` over `mask.len()` bytes.
    Bitwise {
        sreg: u32,
        dreg: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// Set lookup; `dreg = Some(0)` makes it a verdict-map lookup (vmap).
    Lookup {
        set: String,
        sreg: u32,
        dreg: Option<u32>,
        invert: bool,
    },
    Immediate(Verdict),
    Counter,
    Masq,
    /// xtables compat match (`match name conntrack rev 3`), as iptables-nft
    /// writes it.
    Match {
        name: String,
        rev: u32,
        info: Vec<u8>,
    },
    /// Any other expression, given as its name and its NFTA_EXPR_DATA
    /// attributes `(type, payload)` (nested ones pre-encoded, type with
    /// NLA_F_NESTED). Used by [`crate::hostport`] for `fib`, `ct`, `nat` and
    /// immediate data. Never produced by decoding (that gives `Other`).
    Raw {
        name: String,
        attrs: Vec<(u16, Vec<u8>)>,
    },
    Other(String),
}

fn put_value(w: &mut AttrWriter<'_>, ty: u16, bytes: &[u8]) {
    w.nest(ty, |w| w.put(NFTA_DATA_VALUE, bytes));
}

fn value(nest: &[u8]) -> Vec<u8> {
    attr::find(nest, NFTA_DATA_VALUE)
        .unwrap_or_default()
        .to_vec()
}

impl Expr {
    fn name(&self) -> &str {
        match self {
            Expr::Meta { .. } => "meta",
            Expr::Payload { .. } => "payload",
            Expr::Cmp { .. } => "cmp",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Lookup { .. } => "lookup",
            Expr::Immediate(_) => "immediate",
            Expr::Counter => "counter",
            Expr::Masq => "masq",
            Expr::Match { .. } => "match",
            Expr::Raw { name, .. } => name,
            Expr::Other(n) => n,
        }
    }

    /// Writes one NFTA_LIST_ELEM { NAME, DATA } into an expressions list.
    pub fn encode(&self, w: &mut AttrWriter<'_>) {
        w.nest(NFTA_LIST_ELEM, |w| {
            w.put_str(NFTA_EXPR_NAME, self.name());
            w.nest(NFTA_EXPR_DATA, |w| self.encode_data(w));
        });
    }

    fn encode_data(&self, w: &mut AttrWriter<'_>) {
        match self {
            Expr::Meta { key, dreg } => {
                w.put_be32(NFTA_META_KEY, key.raw());
                w.put_be32(NFTA_META_DREG, *dreg);
            }
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                w.put_be32(NFTA_PAYLOAD_DREG, *dreg);
                w.put_be32(NFTA_PAYLOAD_BASE, *base);
                w.put_be32(NFTA_PAYLOAD_OFFSET, *offset);
                w.put_be32(NFTA_PAYLOAD_LEN, *len);
            }
            Expr::Cmp { sreg, op, data } => {
                w.put_be32(NFTA_CMP_SREG, *sreg);
                let op = match op {
                    CmpOp::Eq => NFT_CMP_EQ,
                    CmpOp::Neq => NFT_CMP_NEQ,
                    CmpOp::Other(o) => *o,
                };
                w.put_be32(NFTA_CMP_OP, op);
                put_value(w, NFTA_CMP_DATA, data);
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => {
                w.put_be32(NFTA_BITWISE_SREG, *sreg);
                w.put_be32(NFTA_BITWISE_DREG, *dreg);
                w.put_be32(NFTA_BITWISE_LEN, mask.len() as u32);
                put_value(w, NFTA_BITWISE_MASK, mask);
                put_value(w, NFTA_BITWISE_XOR, xor);
            }
            Expr::Lookup {
                set,
                sreg,
                dreg,
                invert,
            } => {
                w.put_str(NFTA_LOOKUP_SET, set);
                w.put_be32(NFTA_LOOKUP_SREG, *sreg);
                if let Some(d) = dreg {
                    w.put_be32(NFTA_LOOKUP_DREG, *d);
                }
                if *invert {
                    w.put_be32(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
                }
            }
            Expr::Immediate(v) => {
                w.put_be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
                w.nest(NFTA_IMMEDIATE_DATA, |w| v.encode(w));
            }
            Expr::Counter | Expr::Masq | Expr::Other(_) => {}
            Expr::Raw { attrs, .. } => {
                for (ty, payload) in attrs {
                    w.put(*ty, payload);
                }
            }
            Expr::Match { name, rev, info } => {
                w.put_str(NFTA_MATCH_NAME, name);
                w.put_be32(NFTA_MATCH_REV, *rev);
                w.put(NFTA_MATCH_INFO, info);
            }
        }
    }

    /// Decodes one NFTA_LIST_ELEM payload. Unknown or malformed
    /// expressions become `Other(name)`.
    pub fn decode(elem: &[u8]) -> Expr {
        let name = attr::find_str(elem, NFTA_EXPR_NAME).unwrap_or_default();
        let d = attr::find(elem, NFTA_EXPR_DATA).unwrap_or_default();
        let u = |ty| attr::find_be32(d, ty);
        let decoded = match name.as_str() {
            "meta" => u(NFTA_META_DREG)
                .zip(u(NFTA_META_KEY))
                .map(|(dreg, k)| Expr::Meta {
                    key: MetaKey::from_raw(k),
                    dreg,
                }),
            "payload" => (|| {
                Some(Expr::Payload {
                    dreg: u(NFTA_PAYLOAD_DREG)?,
                    base: u(NFTA_PAYLOAD_BASE)?,
                    offset: u(NFTA_PAYLOAD_OFFSET)?,
                    len: u(NFTA_PAYLOAD_LEN)?,
                })
            })(),
            "cmp" => (|| {
                let op = match u(NFTA_CMP_OP)? {
                    NFT_CMP_EQ => CmpOp::Eq,
                    NFT_CMP_NEQ => CmpOp::Neq,
                    o => CmpOp::Other(o),
                };
                Some(Expr::Cmp {
                    sreg: u(NFTA_CMP_SREG)?,
                    op,
                    data: value(attr::find(d, NFTA_CMP_DATA)?),
                })
            })(),
            "bitwise" => (|| {
                Some(Expr::Bitwise {
                    sreg: u(NFTA_BITWISE_SREG)?,
                    dreg: u(NFTA_BITWISE_DREG)?,
                    mask: value(attr::find(d, NFTA_BITWISE_MASK)?),
                    xor: value(attr::find(d, NFTA_BITWISE_XOR)?),
                })
            })(),
            "lookup" => (|| {
                Some(Expr::Lookup {
                    set: attr::find_str(d, NFTA_LOOKUP_SET)?,
                    sreg: u(NFTA_LOOKUP_SREG)?,
                    dreg: u(NFTA_LOOKUP_DREG),
                    invert: u(NFTA_LOOKUP_FLAGS).unwrap_or(0) & NFT_LOOKUP_F_INV != 0,
                })
            })(),
            "immediate" => (|| {
                if u(NFTA_IMMEDIATE_DREG)? != NFT_REG_VERDICT {
                    return None;
                }
                Verdict::decode(attr::find(d, NFTA_IMMEDIATE_DATA)?).map(Expr::Immediate)
            })(),
            "counter" => Some(Expr::Counter),
            "masq" => Some(Expr::Masq),
            "match" => (|| {
                Some(Expr::Match {
                    name: attr::find_str(d, NFTA_MATCH_NAME)?,
                    rev: u(NFTA_MATCH_REV)?,
                    info: attr::find(d, NFTA_MATCH_INFO)?.to_vec(),
                })
            })(),
            _ => None,
        };
        decoded.unwrap_or(Expr::Other(name))
    }
}

/// Encodes a list of expressions as the content of NFTA_RULE_EXPRESSIONS.
pub fn encode_list(w: &mut AttrWriter<'_>, exprs: &[Expr]) {
    for e in exprs {
        e.encode(w);
    }
}

/// Decodes the content of NFTA_RULE_EXPRESSIONS.
pub fn decode_list(list: &[u8]) -> Vec<Expr> {
    Attrs::new(list)
        .filter(|(t, _)| *t == NFTA_LIST_ELEM)
        .map(|(_, e)| Expr::decode(e))
        .collect()
}

// ---- builders -------------------------------------------------------------

/// NFPROTO_IPV4 / NFPROTO_IPV6 (same values as AF_INET / AF_INET6).
pub fn nfproto_of(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

/// `meta nfproto ipv4|ipv6`: the dependency nft itself emits before an
/// `ip`/`ip6` payload match in an inet table (and needs to print it back).
pub fn match_nfproto(proto: u8) -> [Expr; 2] {
    [
        Expr::Meta {
            key: MetaKey::NfProto,
            dreg: NFT_REG_1,
        },
        Expr::Cmp {
            sreg: NFT_REG_1,
            op: CmpOp::Eq,
            data: vec![proto],
        },
    ]
}

/// `meta l4proto <proto>`.
pub fn match_l4proto(proto: u8) -> [Expr; 2] {
    [
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: NFT_REG_1,
        },
        Expr::Cmp {
            sreg: NFT_REG_1,
            op: CmpOp::Eq,
            data: vec![proto],
        },
    ]
}

/// Loads `ip saddr`/`ip daddr` (or ip6) into `dreg`.
pub fn load_addr(v6: bool, daddr: bool, dreg: u32) -> Expr {
    let (offset, len) = match (v6, daddr) {
        (false, false) => (12, 4),
        (false, true) => (16, 4),
        (true, false) => (8, 16),
        (true, true) => (24, 16),
    };
    Expr::Payload {
        base: NFT_PAYLOAD_NETWORK_HEADER,
        offset,
        len,
        dreg,
    }
}

/// Loads `th dport` (the destination port of TCP, UDP or SCTP) into `dreg`.
pub fn load_dport(dreg: u32) -> Expr {
    Expr::Payload {
        base: NFT_PAYLOAD_TRANSPORT_HEADER,
        offset: 2,
        len: 2,
        dreg,
    }
}

/// Loads `ether saddr` (6 bytes at link-header offset 6) into `dreg`; in
/// the bridge family the link header is the Ethernet header.
pub fn load_ether_saddr(dreg: u32) -> Expr {
    Expr::Payload {
        base: NFT_PAYLOAD_LL_HEADER,
        offset: 6,
        len: 6,
        dreg,
    }
}

/// The address in network byte order (4 or 16 bytes).
pub(crate) fn addr_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Network mask of `prefix` bits over `len` bytes.
pub fn prefix_mask(len: usize, prefix: u8) -> Vec<u8> {
    let mut bits = usize::from(prefix).min(len * 8);
    let mut m = vec![0u8; len];
    for b in m.iter_mut() {
        let take = bits.min(8);
        *b = if take == 0 { 0 } else { 0xffu8 << (8 - take) };
        bits -= take;
    }
    m
}

/// `ip[6] saddr|daddr <net>/<prefix>` with the nfproto dependency:
/// payload load, a bitwise mask (omitted for a full-length prefix) and cmp.
pub fn match_addr_prefix(daddr: bool, net: IpAddr, prefix: u8) -> Vec<Expr> {
    let v6 = net.is_ipv6();
    let bytes = addr_bytes(&net);
    let mask = prefix_mask(bytes.len(), prefix);
    let masked: Vec<u8> = bytes.iter().zip(&mask).map(|(b, m)| b & m).collect();
    let mut v: Vec<Expr> = match_nfproto(nfproto_of(&net)).into();
    v.push(load_addr(v6, daddr, NFT_REG_1));
    if mask.iter().any(|&m| m != 0xff) {
        v.push(Expr::Bitwise {
            sreg: NFT_REG_1,
            dreg: NFT_REG_1,
            xor: vec![0; mask.len()],
            mask,
        });
    }
    v.push(Expr::Cmp {
        sreg: NFT_REG_1,
        op: CmpOp::Eq,
        data: masked,
    });
    v
}

/// xt_conntrack `--ctstate` bits (XT_CONNTRACK_STATE_BIT(IP_CT_ESTABLISHED=0) |
/// ..._BIT(IP_CT_RELATED=1)).
pub const XT_CTSTATE_RELATED_ESTABLISHED: u16 = (1 << 1) | (1 << 2);
/// xt_conntrack `--ctstate DNAT` (1 << (IP_CT_NUMBER + 2)).
pub const XT_CTSTATE_DNAT: u16 = 1 << 7;

/// `-m conntrack --ctstate <states>` as iptables-nft writes it: an xtables
/// compat match (rev 3) with a `struct xt_conntrack_mtinfo3` (XT_ALIGN'ed
/// size 168; host-order u16 `match_flags` at 146 and `state_mask` at 150, see
/// `linux/netfilter/xt_conntrack.h`). For rules in iptables' own chains,
/// which iptables must be able to list.
pub fn xt_conntrack_state(states: u16) -> Expr {
    const XT_CONNTRACK_STATE: u16 = 1;
    let mut info = vec![0u8; 168];
    info[146..148].copy_from_slice(&XT_CONNTRACK_STATE.to_ne_bytes());
    info[150..152].copy_from_slice(&states.to_ne_bytes());
    Expr::Match {
        name: "conntrack".into(),
        rev: 3,
        info,
    }
}

/// `ct` keys used here (NFT_CT_*).
pub const NFT_CT_STATE: u32 = 0;
pub const NFT_CT_STATUS: u32 = 2;
/// `ct state` bits: established, related (NF_CT_STATE_BIT of IP_CT_ESTABLISHED/RELATED).
pub const CT_STATE_ESTABLISHED_RELATED: u32 = (1 << 1) | (1 << 2);
/// `ct status dnat` (IPS_DST_NAT).
pub const CT_STATUS_DNAT: u32 = 1 << 5;

/// `ct <key> & bits != 0` (`set == true`) or `== 0`: conntrack state/status as nft encodes
/// it (a host-order u32 in the register).
pub fn match_ct_bits(key: u32, bits: u32, set: bool) -> [Expr; 3] {
    const NFTA_CT_DREG: u16 = 1;
    const NFTA_CT_KEY: u16 = 2;
    [
        Expr::Raw {
            name: "ct".into(),
            attrs: vec![
                (NFTA_CT_DREG, NFT_REG_1.to_be_bytes().to_vec()),
                (NFTA_CT_KEY, key.to_be_bytes().to_vec()),
            ],
        },
        Expr::Bitwise {
            sreg: NFT_REG_1,
            dreg: NFT_REG_1,
            mask: bits.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            sreg: NFT_REG_1,
            op: if set { CmpOp::Neq } else { CmpOp::Eq },
            data: vec![0; 4],
        },
    ]
}

/// Interface name as nft stores it: NUL-padded to IFNAMSIZ (set keys).
pub fn ifname_key(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.truncate(IFNAMSIZ - 1);
    v.resize(IFNAMSIZ, 0);
    v
}

/// `iifname|oifname == name` as iptables-nft writes it for `-i/-o name`
/// (compare the name plus its NUL terminator).
pub fn match_ifname(out: bool, name: &str) -> [Expr; 2] {
    let key = if out {
        MetaKey::OifName
    } else {
        MetaKey::IifName
    };
    let mut data = name.as_bytes().to_vec();
    data.truncate(IFNAMSIZ - 1);
    data.push(0);
    [
        Expr::Meta {
            key,
            dreg: NFT_REG_1,
        },
        Expr::Cmp {
            sreg: NFT_REG_1,
            op: CmpOp::Eq,
            data,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(prefix_mask(4, 16), vec![255, 255, 0, 0]);
        assert_eq!(prefix_mask(4, 4), vec![0xf0, 0, 0, 0]);
        assert_eq!(prefix_mask(4, 33), vec![255; 4]);
        assert_eq!(prefix_mask(16, 8)[..2], [255, 0]);
    }

    #[test]
    fn exprs_roundtrip() {
        let mut list: Vec<Expr> = match_addr_prefix(true, "10.1.2.0".parse().unwrap(), 23);
        list.push(Expr::Lookup {
            set: "s".into(),
            sreg: 1,
            dreg: Some(0),
            invert: false,
        });
        list.push(Expr::Lookup {
            set: "s".into(),
            sreg: 1,
            dreg: None,
            invert: true,
        });
        list.push(Expr::Counter);
        list.push(Expr::Masq);
        list.push(Expr::Immediate(Verdict::Goto("c".into())));
        list.push(Expr::Match {
            name: "conntrack".into(),
            rev: 3,
            info: vec![1, 2, 3, 4],
        });
        list.extend(match_ifname(false, "br0"));
        list.push(load_ether_saddr(NFT_REG_2));
        let mut buf = Vec::new();
        encode_list(&mut AttrWriter::new(&mut buf), &list);
        assert_eq!(decode_list(&buf), list);
    }

    #[test]
    fn garbage_decodes_to_other() {
        let mut buf = Vec::new();
        let mut w = AttrWriter::new(&mut buf);
        w.nest(NFTA_LIST_ELEM, |w| w.put_str(NFTA_EXPR_NAME, "cmp"));
        assert_eq!(decode_list(&buf), vec![Expr::Other("cmp".into())]);
    }
}
