//! Published host ports (the `portmap` plugin and cnm-shim's `-p`): one
//! table whose rules change only when a lane is added; every mapping is a map
//! or set ELEMENT, so an ADD or DEL is one transaction whose cost does not
//! depend on how many ports the node publishes.
//!
//! ```text
//! table inet cni_rs_ports {
//!     set claims { type inet_proto . inet_service }          # who holds a host port
//!         elements = { tcp . 8080 comment "<network> <containerID> <ifname>" }
//!     map ip4  { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }  # hostIP set
//!     map any4 { type inet_proto . inet_service : ipv4_addr . inet_service }              # any host address
//!     map ip6, any6                                           # the same for IPv6
//!     set hairpin4 { type ipv4_addr . ipv4_addr }             # "cip . cip" when snat
//!     set hairpin6 { type ipv6_addr . ipv6_addr }
//!     set masqall4 { type ipv4_addr }, masqall6               # masqAll containers
//!     map standby4 { type ipv4_addr . inet_proto . inet_service . ipv4_addr : inet_service }
//!     map standby6                                            # host IP . port . container : port
//!     set internal { type ifname }, internal_self             # cnm-shim --internal bridges
//!     chain dnat {
//!         meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @ip4
//!         meta nfproto ipv4 dnat ip to meta l4proto . th dport map @any4
//!         meta nfproto ipv6 dnat ip6 to ip6 daddr . meta l4proto . th dport map @ip6
//!         meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @any6
//!     }
//!     chain prerouting { type nat hook prerouting priority dstnat; fib daddr type local jump dnat }
//!     chain output { type nat hook output priority dstnat; fib daddr type local jump dnat }
//!     chain postrouting {
//!         type nat hook postrouting priority srcnat;
//!         ct status dnat ip saddr 127.0.0.0/8 ip daddr . ip daddr @hairpin4 masquerade
//!         ct status dnat ip saddr . ip daddr @hairpin4 masquerade
//!         ct status dnat ip6 saddr . ip6 daddr @hairpin6 masquerade
//!         ct status dnat ip daddr @masqall4 masquerade
//!         ct status dnat ip6 daddr @masqall6 masquerade
//!     }
//!     chain forward { type filter hook forward priority filter;  # --internal isolation
//!         iifname @internal iifname . oifname != @internal_self drop
//!         oifname @internal iifname . oifname != @internal_self drop
//!     }
//!     # A lane per distinct conditionsV4/V6 (see `crate::conditions`): its maps,
//!     map ip4-<hex>, any4-<hex>                               # (ip6-, any6- for V6)
//!     # its jump, inserted at the top of `dnat`,
//!     #   meta nfproto ipv4 ip saddr 10.0.0.0/8 jump lane4-<hex> comment "conditionsV4: ..."
//!     # and its chain, whose comment keeps the conditions when the rules are flushed.
//!     chain lane4-<hex> { comment "conditionsV4: ip saddr 10.0.0.0/8"
//!         the two DNAT rules of `dnat`, looking up @ip4-<hex> and @any4-<hex>
//!     }
//! }
//! ```
//!
//! Hand-made damage (`nft flush table`, `nft flush chain`, a chain deleted)
//! leaves the elements without the rules that use them. ADD notices it from
//! the one chain dump it does anyway and rebuilds every chain, every lane
//! included, in the same transaction as its elements; CHECK names the
//! chains (`repair`).
//!
//! `fib daddr type local` rewrites only traffic addressed to one of the
//! host's own addresses (from another host or from the host itself), never
//! forwarded traffic. Host-loopback sources need `route_localnet=1` on the
//! container's host interface (set by the caller) and the masquerade.
//!
//! Ownership: a (protocol, host port) is held by ONE attachment, whatever
//! host IP it is published on. Its `claims` element is added with
//! NLM_F_EXCL in the same transaction as the map elements, so a conflict
//! aborts everything; the holder is then read from the claim's comment. A
//! re-ADD by the same owner is a no-op. Another attachment of the same
//! container (podman and multus attach one container to several networks,
//! each with its portmap) is not refused: the first holder serves the port,
//! which reaches the same container, and the later one records its mappings
//! as `standby` elements. When the holder's DEL (or GC) frees the port, the
//! standby attachment is handed it in one transaction (claim and DNAT
//! elements), as the reference's second rule would take over. DEL removes
//! only elements whose claim or comment names the caller.

use std::collections::HashSet;
use std::net::IpAddr;

use crate::attr::AttrWriter;
use crate::batch::{Batch, Create, Split};
use crate::error::{Error, Result};
use crate::expr::{
    addr_bytes, load_addr, load_dport, match_addr_prefix, match_ct_bits, match_nfproto, CmpOp,
    Expr, MetaKey, Verdict, CT_STATUS_DNAT, NFT_CT_STATUS,
};
use crate::owner::{parse_owner, validate_owner, OwnedElements};
use crate::query;
use crate::retry::{self, Plan};
use crate::socket::NftSocket;
use crate::sys::{
    NFTA_DATA_VALUE, NFTA_IMMEDIATE_DATA, NFTA_IMMEDIATE_DREG, NFT_REG_1, NFT_REG_2, NLA_F_NESTED,
};
use crate::types::*;

pub use crate::conditions::Lane;

mod repair;

pub const TABLE: &str = crate::tables::PORTS;
pub const FAMILY: Family = Family::Inet;
const ELEMENTS: OwnedElements = OwnedElements {
    family: FAMILY,
    table: TABLE,
    op: "portmap delete",
};
pub const CLAIMS: &str = "claims";
pub const INTERNAL_SET: &str = "internal";
pub const INTERNAL_SELF_SET: &str = "internal_self";
const DNAT_CHAIN: &str = "dnat";
/// Created last in the infrastructure transaction: present iff all is.
const LAST_CHAIN: &str = "forward";
/// Every per-attachment set of the table.
const OWNED_SETS: [&str; 11] = [
    CLAIMS,
    "ip4",
    "any4",
    "ip6",
    "any6",
    "hairpin4",
    "hairpin6",
    "masqall4",
    "masqall6",
    STANDBY_SETS[0],
    STANDBY_SETS[1],
];
/// Mappings of ports held by another attachment of the same container (see `add`).
const STANDBY_SETS: [&str; 2] = ["standby4", "standby6"];

// linux/netfilter/nf_tables.h
const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const RTN_LOCAL: u32 = 2;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFT_NAT_DNAT: u32 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
/// 32-bit registers: NFT_REG32_00 overlays NFT_REG_1.
const REG32_00: u32 = 8;
const REG32_01: u32 = 9;
const REG32_02: u32 = 10;
const REG32_04: u32 = 12;
const REG32_05: u32 = 13;

/// One published port: `host_ip:host_port/proto -> dest:dest_port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mapping {
    /// IPPROTO_TCP (6), IPPROTO_UDP (17) or IPPROTO_SCTP (132).
    pub proto: u8,
    /// Only packets to this host address; `None` = any local address of
    /// `dest`'s family.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub dest: IpAddr,
    pub dest_port: u16,
}

pub fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        132 => "sctp",
        _ => "?",
    }
}

// ---- expressions ----------------------------------------------------------

fn be32(v: u32) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

/// `fib daddr type local`.
pub fn match_daddr_local() -> [Expr; 2] {
    [
        Expr::Raw {
            name: "fib".into(),
            attrs: vec![
                (NFTA_FIB_DREG, be32(NFT_REG_1)),
                (NFTA_FIB_RESULT, be32(NFT_FIB_RESULT_ADDRTYPE)),
                (NFTA_FIB_FLAGS, be32(NFTA_FIB_F_DADDR)),
            ],
        },
        // The address type is stored in host byte order.
        Expr::Cmp {
            sreg: NFT_REG_1,
            op: CmpOp::Eq,
            data: RTN_LOCAL.to_ne_bytes().to_vec(),
        },
    ]
}

fn load_l4proto(dreg: u32) -> Expr {
    Expr::Meta {
        key: MetaKey::L4Proto,
        dreg,
    }
}

/// Loads constant `data` into register `dreg`.
pub fn immediate_data(dreg: u32, data: &[u8]) -> Expr {
    let mut nested = Vec::new();
    AttrWriter::new(&mut nested).put(NFTA_DATA_VALUE, data);
    Expr::Raw {
        name: "immediate".into(),
        attrs: vec![
            (NFTA_IMMEDIATE_DREG, be32(dreg)),
            (NFTA_IMMEDIATE_DATA | NLA_F_NESTED, nested),
        ],
    }
}

/// `dnat ip|ip6 to <addr in addr_reg>:<port in proto_reg>`.
fn dnat(v6: bool, addr_reg: u32, proto_reg: u32) -> Expr {
    let fam = if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 };
    Expr::Raw {
        name: "nat".into(),
        attrs: vec![
            (NFTA_NAT_TYPE, be32(NFT_NAT_DNAT)),
            (NFTA_NAT_FAMILY, be32(u32::from(fam))),
            (NFTA_NAT_REG_ADDR_MIN, be32(addr_reg)),
            (NFTA_NAT_REG_PROTO_MIN, be32(proto_reg)),
        ],
    }
}

fn lookup(set: &str, sreg: u32, dreg: Option<u32>) -> Expr {
    Expr::Lookup {
        set: set.into(),
        sreg,
        dreg,
        invert: false,
    }
}

/// The two DNAT rules of one family, looking up the maps `ip<4|6><sfx>`
/// and `any<4|6><sfx>`. The map data is `address . port`, each field padded
/// to 4 bytes, landing in NFT_REG_1: v4 address in NFT_REG32_00 and port in
/// NFT_REG32_01; v6 address in NFT_REG_1 (four 32-bit registers) and port
/// in NFT_REG32_04.
fn dnat_rules(v6: bool, lane_sfx: &str) -> Vec<Vec<Expr>> {
    let (fam, f, port_reg) = if v6 {
        (NFPROTO_IPV6, "6", REG32_04)
    } else {
        (NFPROTO_IPV4, "4", REG32_01)
    };
    // hostIP . proto . port
    let mut a: Vec<Expr> = match_nfproto(fam).into();
    a.push(load_addr(v6, true, NFT_REG_1));
    let (p, d) = if v6 {
        (REG32_04, REG32_05)
    } else {
        (REG32_01, REG32_02)
    };
    a.extend([load_l4proto(p), load_dport(d)]);
    a.push(lookup(
        &format!("ip{f}{lane_sfx}"),
        NFT_REG_1,
        Some(NFT_REG_1),
    ));
    a.push(Expr::Counter);
    a.push(dnat(v6, NFT_REG_1, port_reg));
    // proto . port
    let mut b: Vec<Expr> = match_nfproto(fam).into();
    b.extend([load_l4proto(REG32_00), load_dport(REG32_01)]);
    b.push(lookup(
        &format!("any{f}{lane_sfx}"),
        NFT_REG_1,
        Some(NFT_REG_1),
    ));
    b.push(Expr::Counter);
    b.push(dnat(v6, NFT_REG_1, port_reg));
    vec![a, b]
}

/// Per-call options of [`HostPorts`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Masquerade hairpin and host-loopback connections (the reference's `snat`).
    pub snat: bool,
    /// Masquerade every connection to a published port (`masqAll`).
    pub masq_all: bool,
    pub lane4: Option<Lane>,
    pub lane6: Option<Lane>,
}

impl Options {
    fn lane(&self, v6: bool) -> Option<&Lane> {
        if v6 {
            self.lane6.as_ref()
        } else {
            self.lane4.as_ref()
        }
    }

    /// The lanes that `maps` publish through (a lane of a family without mappings stays unmade).
    fn used_lanes(&self, maps: &[Mapping]) -> Vec<&Lane> {
        [&self.lane4, &self.lane6]
            .into_iter()
            .flatten()
            .filter(|l| maps.iter().any(|m| m.dest.is_ipv6() == l.v6))
            .collect()
    }
}

/// The masquerade rules of `postrouting`.
fn postrouting_rules() -> Vec<(Vec<Expr>, &'static str)> {
    // `ct status dnat`: the connection was destination-NATed.
    let ct = || -> Vec<Expr> { match_ct_bits(NFT_CT_STATUS, CT_STATUS_DNAT, true).into() };
    let mut out = Vec::new();
    // Host loopback -> container (route_localnet); `daddr . daddr` in
    // hairpin4 means "a container published with snat".
    let mut e = ct();
    e.extend(match_addr_prefix(false, IpAddr::from([127, 0, 0, 0]), 8));
    e.extend([
        load_addr(false, true, REG32_00),
        load_addr(false, true, REG32_01),
    ]);
    e.extend([
        lookup("hairpin4", NFT_REG_1, None),
        Expr::Counter,
        Expr::Masq,
    ]);
    out.push((e, "published ports: host loopback -> container"));
    for v6 in [false, true] {
        let fam = if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 };
        let sfx = if v6 { "6" } else { "4" };
        let mut e = ct();
        e.extend(match_nfproto(fam));
        let second = if v6 { NFT_REG_2 } else { REG32_01 };
        e.extend([load_addr(v6, false, NFT_REG_1), load_addr(v6, true, second)]);
        e.extend([
            lookup(&format!("hairpin{sfx}"), NFT_REG_1, None),
            Expr::Counter,
            Expr::Masq,
        ]);
        out.push((
            e,
            "published ports: hairpin (container to its own published port)",
        ));
    }
    for v6 in [false, true] {
        let fam = if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 };
        let sfx = if v6 { "6" } else { "4" };
        let mut e = ct();
        e.extend(match_nfproto(fam));
        e.push(load_addr(v6, true, NFT_REG_1));
        e.extend([
            lookup(&format!("masqall{sfx}"), NFT_REG_1, None),
            Expr::Counter,
            Expr::Masq,
        ]);
        out.push((e, "published ports: masqAll"));
    }
    out
}

// ---- element keys ---------------------------------------------------------

/// `inet_proto . inet_service`, each padded to 4 bytes.
fn proto_port(proto: u8, port: u16) -> Vec<u8> {
    let p = port.to_be_bytes();
    vec![proto, 0, 0, 0, p[0], p[1], 0, 0]
}

/// `addr . inet_service` (map data).
fn addr_port(ip: &IpAddr, port: u16) -> Vec<u8> {
    let mut v = addr_bytes(ip);
    let p = port.to_be_bytes();
    v.extend([p[0], p[1], 0, 0]);
    v
}

pub(crate) fn sfx(v6: bool) -> &'static str {
    if v6 {
        "6"
    } else {
        "4"
    }
}

fn claim_key(proto: u8, port: u16) -> Element {
    Element::raw(proto_port(proto, port))
}

/// The map and key of a mapping (which map depends on the host IP and the lane).
fn map_key(m: &Mapping, lane: Option<&Lane>) -> (String, Element) {
    let v6 = m.dest.is_ipv6();
    let lx = lane.map(Lane::suffix).unwrap_or_default();
    match m.host_ip {
        Some(h) => {
            let mut k = addr_bytes(&h);
            k.extend(proto_port(m.proto, m.host_port));
            (format!("ip{}{lx}", sfx(v6)), Element::raw(k))
        }
        None => (
            format!("any{}{lx}", sfx(v6)),
            Element::raw(proto_port(m.proto, m.host_port)),
        ),
    }
}

/// A standby mapping: `host IP . proto . port . container address` (the unspecified
/// address for "any host IP") with the container port as data.
fn standby_key(m: &Mapping) -> (String, Element) {
    let v6 = m.dest.is_ipv6();
    let host = m.host_ip.unwrap_or(if v6 {
        IpAddr::from([0u8; 16])
    } else {
        IpAddr::from([0u8; 4])
    });
    let mut k = addr_bytes(&host);
    k.extend(proto_port(m.proto, m.host_port));
    k.extend(addr_bytes(&m.dest));
    let el = Element::raw(k).with_data(m.dest_port.to_be_bytes().to_vec());
    (format!("standby{}", sfx(v6)), el)
}

/// The mapping a standby element records (`None` for a malformed one).
fn standby_mapping(el: &Element) -> Option<Mapping> {
    let a = match el.key.len() {
        16 => 4,
        40 => 16,
        _ => return None,
    };
    let k = &el.key;
    let host = ip_from_bytes(&k[..a])?;
    let (proto, host_port) = parse_proto_port(&k[a..a + 8])?;
    let data = el.data.as_deref().filter(|d| d.len() >= 2)?;
    Some(Mapping {
        proto,
        host_ip: (!host.is_unspecified()).then_some(host),
        host_port,
        dest: ip_from_bytes(&k[a + 8..])?,
        dest_port: u16::from_be_bytes([data[0], data[1]]),
    })
}

/// The inverse of [`proto_port`].
fn parse_proto_port(b: &[u8]) -> Option<(u8, u16)> {
    match b {
        [p, 0, 0, 0, hi, lo, 0, 0] => Some((*p, u16::from_be_bytes([*hi, *lo]))),
        _ => None,
    }
}

fn hairpin_key(ip: &IpAddr) -> (String, Element) {
    let mut k = addr_bytes(ip);
    k.extend(addr_bytes(ip));
    (format!("hairpin{}", sfx(ip.is_ipv6())), Element::raw(k))
}

fn masqall_key(ip: &IpAddr) -> (String, Element) {
    (format!("masqall{}", sfx(ip.is_ipv6())), Element::ip(*ip))
}

// ---- table layout ---------------------------------------------------------

fn set_spec(name: &str, key: KeyType, data: Option<KeyType>) -> SetSpec {
    SetSpec {
        data,
        ..SetSpec::new(FAMILY, TABLE, name, key)
    }
}

fn set_specs() -> Vec<SetSpec> {
    use KeyType::*;
    let pp = || Concat(vec![InetProto, InetService]);
    vec![
        set_spec(CLAIMS, pp(), None),
        set_spec(
            "ip4",
            Concat(vec![Ipv4Addr, InetProto, InetService]),
            Some(Concat(vec![Ipv4Addr, InetService])),
        ),
        set_spec("any4", pp(), Some(Concat(vec![Ipv4Addr, InetService]))),
        set_spec(
            "ip6",
            Concat(vec![Ipv6Addr, InetProto, InetService]),
            Some(Concat(vec![Ipv6Addr, InetService])),
        ),
        set_spec("any6", pp(), Some(Concat(vec![Ipv6Addr, InetService]))),
        set_spec("hairpin4", Concat(vec![Ipv4Addr, Ipv4Addr]), None),
        set_spec("hairpin6", Concat(vec![Ipv6Addr, Ipv6Addr]), None),
        set_spec("masqall4", Ipv4Addr, None),
        set_spec("masqall6", Ipv6Addr, None),
        standby_spec(false),
        standby_spec(true),
        set_spec(INTERNAL_SET, IfName, None),
        set_spec(INTERNAL_SELF_SET, Concat(vec![IfName, IfName]), None),
    ]
}

fn standby_spec(v6: bool) -> SetSpec {
    use KeyType::*;
    let a = if v6 { Ipv6Addr } else { Ipv4Addr };
    set_spec(
        STANDBY_SETS[v6 as usize],
        Concat(vec![a.clone(), InetProto, InetService, a]),
        Some(InetService),
    )
}

fn rule(chain: &str, exprs: Vec<Expr>, comment: Option<&str>) -> RuleSpec {
    RuleSpec {
        family: FAMILY,
        table: TABLE.into(),
        chain: chain.into(),
        exprs,
        comment: comment.map(Into::into),
        append: true,
    }
}

fn base_chain(name: &str, hook: Hook, priority: i32, chain_type: ChainType) -> ChainSpec {
    ChainSpec {
        family: FAMILY,
        table: TABLE.into(),
        name: name.into(),
        base: Some(BaseChain {
            hook,
            priority,
            chain_type,
            policy: Some(Verdict::Accept),
        }),
        comment: None,
    }
}

/// A chain of the table with the rules it is created with.
struct ChainLayout {
    spec: ChainSpec,
    rules: Vec<RuleSpec>,
}

fn regular_chain(name: &str, comment: Option<String>) -> ChainSpec {
    ChainSpec {
        family: FAMILY,
        table: TABLE.into(),
        name: name.into(),
        base: None,
        comment,
    }
}

/// The fixed chains in creation order: `dnat` first (the base chains jump
/// to it), [`LAST_CHAIN`] last.
fn infra_chains() -> Vec<ChainLayout> {
    let mut out = Vec::new();
    let dnat = [false, true]
        .into_iter()
        .flat_map(|v6| dnat_rules(v6, ""))
        .map(|e| rule(DNAT_CHAIN, e, None))
        .collect();
    out.push(ChainLayout {
        spec: regular_chain(DNAT_CHAIN, None),
        rules: dnat,
    });
    for (name, hook) in [("prerouting", Hook::Prerouting), ("output", Hook::Output)] {
        let mut e: Vec<Expr> = match_daddr_local().into();
        e.push(Expr::Immediate(Verdict::Jump(DNAT_CHAIN.into())));
        out.push(ChainLayout {
            spec: base_chain(name, hook, priority::DSTNAT, ChainType::Nat),
            rules: vec![rule(name, e, None)],
        });
    }
    out.push(ChainLayout {
        spec: base_chain(
            "postrouting",
            Hook::Postrouting,
            priority::SRCNAT,
            ChainType::Nat,
        ),
        rules: postrouting_rules()
            .into_iter()
            .map(|(e, comment)| rule("postrouting", e, Some(comment)))
            .collect(),
    });
    let meta = |key, dreg| Expr::Meta { key, dreg };
    let isolation = [MetaKey::IifName, MetaKey::OifName].map(|first| {
        let e = vec![
            meta(first, NFT_REG_1),
            lookup(INTERNAL_SET, NFT_REG_1, None),
            meta(MetaKey::IifName, NFT_REG_1),
            meta(MetaKey::OifName, NFT_REG_2),
            Expr::Lookup {
                set: INTERNAL_SELF_SET.into(),
                sreg: NFT_REG_1,
                dreg: None,
                invert: true,
            },
            Expr::Counter,
            Expr::Immediate(Verdict::Drop),
        ];
        rule(
            LAST_CHAIN,
            e,
            Some("internal network: no traffic to or from other interfaces"),
        )
    });
    out.push(ChainLayout {
        spec: base_chain(
            LAST_CHAIN,
            Hook::Forward,
            priority::FILTER,
            ChainType::Filter,
        ),
        rules: isolation.into(),
    });
    out
}

/// Adds the table, its sets, its chains and their rules. Chains are
/// created with NLM_F_EXCL, so the rules exist exactly once: EEXIST on one
/// means another process created them meanwhile. Returns those chain adds.
fn push_infra(b: &mut Batch) -> Vec<usize> {
    b.add_table(FAMILY, TABLE, Create::IfMissing);
    for s in set_specs() {
        b.add_set(&s, Create::IfMissing);
    }
    let mut excl = Vec::new();
    for c in infra_chains() {
        excl.push(b.add_chain(&c.spec, Create::Exclusive));
        for r in &c.rules {
            b.add_rule(r);
        }
    }
    excl
}

/// A lane's chain, its rules, and its jump from `dnat` (inserted before
/// the default lookups). The chain's comment keeps the conditions, which a
/// rule flush leaves in place.
fn lane_layout(lane: &Lane) -> (ChainLayout, RuleSpec) {
    let chain = lane.chain();
    let rules = dnat_rules(lane.v6, &lane.suffix())
        .into_iter()
        .map(|e| rule(&chain, e, None))
        .collect();
    let mut e: Vec<Expr> = match_nfproto(if lane.v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 }).into();
    e.extend(lane.exprs.iter().cloned());
    e.push(Expr::Immediate(Verdict::Jump(chain.clone())));
    let mut jump = rule(DNAT_CHAIN, e, Some(&lane.comment()));
    jump.append = false;
    let layout = ChainLayout {
        spec: regular_chain(&chain, Some(lane.comment())),
        rules,
    };
    (layout, jump)
}

/// Adds a lane's maps, chain, rules and its jump from `dnat`. Returns the
/// index of the chain add (NLM_F_EXCL: EEXIST means the lane exists).
fn push_lane(b: &mut Batch, lane: &Lane) -> usize {
    let f = sfx(lane.v6);
    let sx = lane.suffix();
    let (addr, key_ip) = if lane.v6 {
        (KeyType::Ipv6Addr, KeyType::Ipv6Addr)
    } else {
        (KeyType::Ipv4Addr, KeyType::Ipv4Addr)
    };
    let data = || Some(KeyType::Concat(vec![addr.clone(), KeyType::InetService]));
    let pp = vec![KeyType::InetProto, KeyType::InetService];
    let mut ipk = vec![key_ip];
    ipk.extend(pp.clone());
    b.add_set(
        &set_spec(&format!("ip{f}{sx}"), KeyType::Concat(ipk), data()),
        Create::IfMissing,
    );
    b.add_set(
        &set_spec(&format!("any{f}{sx}"), KeyType::Concat(pp), data()),
        Create::IfMissing,
    );
    let (chain, jump) = lane_layout(lane);
    let at = b.add_chain(&chain.spec, Create::Exclusive);
    for r in &chain.rules {
        b.add_rule(r);
    }
    b.add_rule(&jump);
    at
}

/// Whether `name` is one of `prefixes` and a lane suffix's 12 hex digits.
fn lane_named(name: &str, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|p| {
        name.strip_prefix(p)
            .is_some_and(|h| h.len() == 12 && h.bytes().all(|c| c.is_ascii_hexdigit()))
    })
}

/// Whether `set` is one of a lane's maps (`ip4-<hex>`, `any6-<hex>`, ...).
fn is_lane_map(set: &str) -> bool {
    lane_named(set, &["ip4-", "ip6-", "any4-", "any6-"])
}

/// Whether `chain` is a lane's (`lane4-<hex>`, `lane6-<hex>`).
fn is_lane_chain(chain: &str) -> bool {
    lane_named(chain, &["lane4-", "lane6-"])
}

// ---- the engine -----------------------------------------------------------

/// What happens when an element to add already exists with another owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnTaken {
    /// Refuse: the holder is named in the error (claims and DNAT maps).
    Refuse,
    /// Replace it (per-IP snat/masqAll state left by a previous user of the IP).
    Replace,
}

struct Want {
    set: String,
    el: Element,
    on_taken: OnTaken,
    /// The (protocol, host port) a claim or DNAT element publishes; `None` for per-IP state.
    port: Option<(u8, u16)>,
    /// Present and ours: nothing to do.
    done: bool,
    /// Present and someone else's (`OnTaken::Replace`): delete first.
    replace: bool,
}

/// One element of the table with the set holding it.
pub type Owned = SetElement;

/// The published-port state of this network namespace.
pub struct HostPorts {
    sock: NftSocket,
}

impl HostPorts {
    /// Opens a netlink socket in the calling thread's network namespace.
    pub fn new() -> Result<Self> {
        Ok(HostPorts {
            sock: NftSocket::new()?,
        })
    }

    /// Publishes `maps` for the attachment (`network`, `container_id`,
    /// `ifname`) in one transaction: a claim per (protocol, host port), a
    /// DNAT map element per mapping, and per container address a hairpin
    /// element (when `snat`) and a masqAll element (when `masq_all`).
    /// Another owner's claim on a port fails with [`Error::Conflict`]
    /// naming it, and nothing is changed; a port held by another attachment
    /// of the same container is left to it. Idempotent for the same owner.
    /// Chains damaged by hand (a flush) are rebuilt, every lane included,
    /// in the same transaction (see `repair`).
    pub fn add(
        &mut self,
        owner: (&str, &str, &str),
        maps: &[Mapping],
        opts: &Options,
    ) -> Result<()> {
        let tag = validate_owner("portmap", owner.0, owner.1, owner.2)?;
        let mut want = plan_add(&tag, maps, opts)?;
        if want.is_empty() {
            return Ok(());
        }
        let own = opts.used_lanes(maps);
        // Set once a port is left to another attachment of the container (see below).
        let mut standby = false;
        // The one read of the common path: is every chain whole (see `repair`)?
        let mut repair = !repair::Survey::read(&mut self.sock)?
            .damage(&own)
            .is_empty();
        retry::rejected("portmap add", || {
            let mut b = Batch::new();
            let mut fix = repair::Fix::default();
            if repair {
                fix = repair::plan(&mut self.sock, &mut b, &own)?;
                repair = fix.found;
            }
            if standby {
                // Tables made before standby sets existed get them here.
                for v6 in [false, true] {
                    b.add_set(&standby_spec(v6), Create::IfMissing);
                }
            }
            // op index -> (want index, is delete)
            let mut ops: Vec<(usize, usize, bool)> = Vec::new();
            for (i, w) in want.iter().enumerate().filter(|(_, w)| !w.done) {
                if w.replace {
                    ops.push((b.del_element(FAMILY, TABLE, &w.set, &w.el), i, true));
                }
                ops.push((
                    b.add_element(FAMILY, TABLE, &w.set, &w.el, Create::Exclusive),
                    i,
                    false,
                ));
            }
            // Every element may be in place while the chains still need the repair.
            if b.is_empty() {
                return Ok(Ok(()));
            }
            if let Some(genid) = fix.genid {
                b = b.with_genid(genid);
            }
            let Some(err) = b.try_commit(&mut self.sock)? else {
                return Ok(Ok(()));
            };
            let mut taken = Vec::new();
            for f in err.failures() {
                // The ruleset changed since the repair read it, or a chain it creates was
                // created meanwhile: the next attempt looks again.
                if (f.errno == libc::ERESTART && fix.genid.is_some())
                    || (f.errno == libc::EEXIST && fix.excl.contains(&f.index))
                {
                    repair = true;
                    continue;
                }
                let Some(&(_, wi, del)) = ops.iter().find(|(op, _, _)| *op == f.index) else {
                    return Err(err);
                };
                match (del, f.errno) {
                    (false, libc::ENOENT) => repair = true,
                    (false, libc::EEXIST | libc::EBUSY) => taken.push(wi),
                    (true, libc::ENOENT) => want[wi].replace = false,
                    _ => return Err(err),
                }
            }
            // Refusals first, so a conflict is reported before anything is replaced.
            taken.sort_by_key(|&i| want[i].on_taken == OnTaken::Replace);
            for wi in taken {
                let w = &want[wi];
                let Some(have) = query::get_element(&mut self.sock, FAMILY, TABLE, &w.set, &w.el)?
                else {
                    continue; // removed meanwhile: add again
                };
                let mine = have.comment.as_deref() == Some(tag.as_str());
                if mine && have.data == w.el.data {
                    want[wi].done = true;
                } else if mine || w.on_taken == OnTaken::Replace {
                    want[wi].replace = true;
                } else if let Some(port) = w.port.filter(|_| same_container(&have, &tag)) {
                    // The container publishes this port through another of its attachments:
                    // that one serves it (same container), this one stays out of its way and
                    // stands by to take the port over (not with conditions: a lane's
                    // mappings are not handed over).
                    for x in want.iter_mut().filter(|x| x.port == Some(port)) {
                        x.done = true;
                    }
                    if opts.lane4.is_none() && opts.lane6.is_none() {
                        for m in maps.iter().filter(|m| (m.proto, m.host_port) == port) {
                            let (set, el) = standby_key(m);
                            if !want.iter().any(|x| x.set == set && x.el.key == el.key) {
                                want.push(Want {
                                    set,
                                    el: el.with_comment(&tag),
                                    on_taken: OnTaken::Replace,
                                    port: None,
                                    done: false,
                                    replace: false,
                                });
                            }
                        }
                        standby = true;
                    }
                } else {
                    return Err(conflict(w, &have));
                }
            }
            Ok(Err(err))
        })
    }

    /// Removes the attachment's elements in one transaction. With `maps`
    /// (DEL with portMappings) only their keys are looked up, and a map
    /// element is removed only under a claim this owner holds; `ips` (the
    /// container addresses from prevResult) locate the hairpin/masqAll
    /// elements, else those two kinds of sets are searched by owner. Without
    /// `maps` every set is searched by owner. Missing state is success.
    pub fn del(
        &mut self,
        owner: (&str, &str, &str),
        maps: Option<&[Mapping]>,
        ips: Option<&[IpAddr]>,
        opts: &Options,
    ) -> Result<()> {
        let tag = validate_owner("portmap", owner.0, owner.1, owner.2)?;
        let Some(maps) = maps else {
            let sets = self.owned_sets()?;
            let victims = self.dump(&sets, |c| c == tag)?;
            let freed = freed_ports(&victims);
            self.delete(victims, Split::Never)?;
            return self.promote(&freed);
        };
        let mut victims = Vec::new();
        let mut candidates: Vec<(String, Element)> = Vec::new();
        let mut seen_claims = HashSet::new();
        for m in maps {
            let key = claim_key(m.proto, m.host_port);
            if !seen_claims.insert(key.key.clone()) {
                continue;
            }
            match self.get(CLAIMS, &key)? {
                Some(c) if c.comment.as_deref() == Some(tag.as_str()) => {
                    victims.push(Owned {
                        set: CLAIMS.into(),
                        element: c,
                    });
                }
                _ => continue, // not ours: never touch its maps
            }
            // Both families: DEL may come without the container's addresses.
            for mm in maps
                .iter()
                .filter(|x| (x.proto, x.host_port) == (m.proto, m.host_port))
            {
                for dest in [IpAddr::from([0u8; 4]), IpAddr::from([0u8; 16])] {
                    if mm.host_ip.is_some_and(|h| h.is_ipv6() != dest.is_ipv6()) {
                        continue;
                    }
                    let m = Mapping { dest, ..mm.clone() };
                    candidates.push(map_key(&m, None));
                    if let Some(lane) = opts.lane(dest.is_ipv6()) {
                        candidates.push(map_key(&m, Some(lane)));
                    }
                }
            }
        }
        // Standby mappings (of ports another attachment of a container holds): few. Ours go;
        // another's may take over a port we free.
        let standby = self.dump(&STANDBY_SETS, |_| true)?;
        let heirs = standby
            .iter()
            .any(|o| o.element.comment.as_deref() != Some(tag.as_str()));
        victims.extend(
            standby
                .into_iter()
                .filter(|o| o.element.comment.as_deref() == Some(tag.as_str())),
        );
        match ips {
            Some(ips) => {
                for ip in ips {
                    candidates.push(hairpin_key(ip));
                    candidates.push(masqall_key(ip));
                }
            }
            None => {
                let sets = ["hairpin4", "hairpin6", "masqall4", "masqall6"];
                victims.extend(self.dump(&sets, |c| c == tag)?);
            }
        }
        let mut seen = HashSet::new();
        for (set, key) in candidates {
            if !seen.insert((set.clone(), key.key.clone())) {
                continue;
            }
            if let Some(e) = self.get(&set, &key)? {
                if e.comment.as_deref() == Some(tag.as_str()) {
                    victims.push(Owned { set, element: e });
                }
            }
        }
        let freed = if heirs {
            freed_ports(&victims)
        } else {
            Vec::new()
        };
        self.delete(victims, Split::Never)?;
        self.promote(&freed)
    }

    /// Verifies that every element [`HostPorts::add`] makes for these
    /// arguments exists, holds the right data and is owned by the caller.
    pub fn check(
        &mut self,
        owner: (&str, &str, &str),
        maps: &[Mapping],
        opts: &Options,
    ) -> Result<()> {
        let tag = validate_owner("portmap", owner.0, owner.1, owner.2)?;
        repair::check(&mut self.sock, &opts.used_lanes(maps))?;
        let want = plan_add(&tag, maps, opts)?;
        let mut elsewhere = HashSet::new();
        for w in want.iter().filter(|w| w.set == CLAIMS) {
            if let (Some(port), Some(have)) = (w.port, self.get(CLAIMS, &w.el)?) {
                if same_container(&have, &tag) {
                    elsewhere.insert(port);
                }
            }
        }
        for w in want
            .into_iter()
            .filter(|w| w.port.is_none_or(|p| !elsewhere.contains(&p)))
        {
            match self.get(&w.set, &w.el)? {
                None => {
                    return Err(Error::Invalid(format!(
                        "{} is missing from set {FAMILY} {TABLE} {}",
                        w.el.key_label(),
                        w.set
                    )))
                }
                Some(have) if have.comment.as_deref() != Some(tag.as_str()) => {
                    return Err(conflict(&w, &have))
                }
                Some(have) if have.data != w.el.data => {
                    return Err(Error::Invalid(format!(
                        "{} in map {FAMILY} {TABLE} {} points elsewhere than {}",
                        w.el.key_label(),
                        w.set,
                        describe_data(w.el.data.as_deref().unwrap_or_default())
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Deletes every element of `network` whose (container ID, ifname) is
    /// not kept. Returns the owner tags removed.
    pub fn gc(&mut self, network: &str, keep: &dyn Fn(&str, &str) -> bool) -> Result<Vec<String>> {
        let sets = self.owned_sets()?;
        let victims = self.dump(&sets, |c| {
            parse_owner(c).is_some_and(|(n, id, ifn)| n == network && !keep(id, ifn))
        })?;
        let mut owners: Vec<String> = victims
            .iter()
            .filter_map(|o| o.element.comment.clone())
            .collect();
        owners.sort();
        owners.dedup();
        let freed = freed_ports(&victims);
        self.delete(victims, Split::Chunks)?;
        self.promote(&freed)?;
        Ok(owners)
    }

    /// Every owned element (of all owners), e.g. for inspection and reconciliation.
    pub fn list(&mut self) -> Result<Vec<Owned>> {
        let sets = self.owned_sets()?;
        self.dump(&sets, |_| true)
    }

    /// The owner tags holding at least one claim.
    pub fn owners(&mut self) -> Result<Vec<String>> {
        let mut v: Vec<String> = self
            .dump(&[CLAIMS], |_| true)?
            .into_iter()
            .filter_map(|o| o.element.comment)
            .collect();
        v.sort();
        v.dedup();
        Ok(v)
    }

    /// Makes `bridge` internal (forwarding only between its own ports) or not.
    pub fn set_internal(&mut self, bridge: &str, internal: bool) -> Result<()> {
        let present = self.internal_bridges()?.iter().any(|b| b == bridge);
        if present == internal {
            return Ok(());
        }
        for _ in 0..2 {
            let mut b = Batch::new();
            if internal && !query::chain_exists(&mut self.sock, FAMILY, TABLE, LAST_CHAIN)? {
                push_infra(&mut b);
            }
            for (set, el) in [
                (INTERNAL_SET, Element::ifname(bridge)),
                (INTERNAL_SELF_SET, Element::ifname_pair(bridge, bridge)),
            ] {
                if internal {
                    b.add_element(FAMILY, TABLE, set, &el, Create::IfMissing);
                } else {
                    b.del_element(FAMILY, TABLE, set, &el);
                }
            }
            match b.commit(&mut self.sock) {
                Ok(()) => return Ok(()),
                Err(e) if !internal && e.is_not_found() => return Ok(()),
                // Infrastructure created concurrently: once more without it.
                Err(e) if e.failures().iter().any(|f| f.errno == libc::EEXIST) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Protocol(format!(
            "table {FAMILY} {TABLE}: could not mark {bridge} internal; retry"
        )))
    }

    /// Bridges currently marked internal.
    pub fn internal_bridges(&mut self) -> Result<Vec<String>> {
        let els =
            query::list_elements(&mut self.sock, FAMILY, TABLE, INTERNAL_SET)?.unwrap_or_default();
        Ok(els
            .iter()
            .map(|e| {
                let end = e.key.iter().position(|&c| c == 0).unwrap_or(e.key.len());
                String::from_utf8_lossy(&e.key[..end]).into_owned()
            })
            .collect())
    }

    /// Whether the table exists.
    pub fn exists(&mut self) -> Result<bool> {
        query::table_exists(&mut self.sock, FAMILY, TABLE)
    }

    /// The per-attachment sets: the fixed ones and every lane's maps.
    fn owned_sets(&mut self) -> Result<Vec<String>> {
        let mut v: Vec<String> = OWNED_SETS.iter().map(|s| s.to_string()).collect();
        v.extend(
            query::list_sets(&mut self.sock, FAMILY, TABLE)?
                .into_iter()
                .filter(|s| is_lane_map(s)),
        );
        Ok(v)
    }

    fn get(&mut self, set: &str, key: &Element) -> Result<Option<Element>> {
        query::get_element(&mut self.sock, FAMILY, TABLE, set, key)
    }

    fn dump<S: AsRef<str>>(
        &mut self,
        sets: &[S],
        pick: impl Fn(&str) -> bool,
    ) -> Result<Vec<Owned>> {
        let mut all = ELEMENTS.dump(&mut self.sock, sets)?;
        all.retain(|o| o.element.comment.as_deref().is_some_and(&pick));
        Ok(all)
    }

    /// Hands each port of `freed` (its claim just removed) to a standby attachment of the
    /// same container, if there is one: its claim and DNAT elements are added and its standby
    /// elements removed, in one transaction under the ruleset generation. A port someone
    /// claimed meanwhile stays theirs. With several standbys, the first owner tag wins.
    fn promote(&mut self, freed: &[(u8, u16, String)]) -> Result<()> {
        if freed.is_empty() {
            return Ok(());
        }
        let gave_up = || {
            "portmap: handing a freed port to a standby attachment: the ruleset kept changing"
                .to_string()
        };
        retry::at_generation(&mut self.sock, retry::ATTEMPTS, gave_up, |sock| {
            let standby = query::dump_elements(sock, FAMILY, TABLE, &STANDBY_SETS)?;
            let mut b = Batch::new();
            for (proto, port, container) in freed {
                let mut cands: Vec<(&str, Mapping, &Owned)> = standby
                    .iter()
                    .filter_map(|se| {
                        let owner = se.element.comment.as_deref()?;
                        let m = standby_mapping(&se.element)?;
                        let same = parse_owner(owner).is_some_and(|o| o.1 == container);
                        (same && (m.proto, m.host_port) == (*proto, *port))
                            .then_some((owner, m, se))
                    })
                    .collect();
                cands.sort_by(|a, b| a.0.cmp(b.0));
                let Some(heir) = cands.first().map(|c| c.0) else {
                    continue;
                };
                let claim = claim_key(*proto, *port);
                if query::get_element(sock, FAMILY, TABLE, CLAIMS, &claim)?.is_some() {
                    continue;
                }
                b.add_element(
                    FAMILY,
                    TABLE,
                    CLAIMS,
                    &claim.with_comment(heir),
                    Create::Exclusive,
                );
                for (_, m, se) in cands.iter().filter(|c| c.0 == heir) {
                    let (set, key) = map_key(m, None);
                    // A leftover without a claim (a kill between two transactions) is replaced.
                    if let Some(old) = query::get_element(sock, FAMILY, TABLE, &set, &key)? {
                        b.del_element(FAMILY, TABLE, &set, &old);
                    }
                    let el = key
                        .with_data(addr_port(&m.dest, m.dest_port))
                        .with_comment(heir);
                    b.add_element(FAMILY, TABLE, &set, &el, Create::Exclusive);
                    b.del_element(FAMILY, TABLE, &se.set, &se.element);
                }
            }
            Ok(match b.is_empty() {
                true => Plan::Done(()),
                false => Plan::Commit(b, ()),
            })
        })
    }

    fn delete(&mut self, victims: Vec<Owned>, split: Split<'_>) -> Result<()> {
        ELEMENTS.delete(&mut self.sock, victims, split)
    }
}

/// The elements an ADD makes, de-duplicated; two mappings of one host
/// address/port to different destinations are refused.
fn plan_add(tag: &str, maps: &[Mapping], opts: &Options) -> Result<Vec<Want>> {
    let mut want: Vec<Want> = Vec::new();
    let mut push = |set: String, el: Element, on_taken, port: Option<(u8, u16)>| {
        if let Some(w) = want.iter().find(|w| w.set == set && w.el.key == el.key) {
            if w.el.data != el.data {
                return Err(Error::Invalid(format!(
                    "{} is mapped twice, to {} and to {}; publish a host port once",
                    el.key_label(),
                    describe_data(w.el.data.as_deref().unwrap_or_default()),
                    describe_data(el.data.as_deref().unwrap_or_default()),
                )));
            }
            return Ok(());
        }
        want.push(Want {
            set,
            el: el.with_comment(tag),
            on_taken,
            port,
            done: false,
            replace: false,
        });
        Ok(())
    };
    for m in maps {
        if m.host_ip.is_some_and(|h| h.is_ipv6() != m.dest.is_ipv6()) {
            return Err(Error::Invalid(format!(
                "port mapping {}/{}: host IP and container address are of different IP families",
                m.host_port,
                proto_name(m.proto)
            )));
        }
        let port = Some((m.proto, m.host_port));
        push(
            CLAIMS.into(),
            claim_key(m.proto, m.host_port),
            OnTaken::Refuse,
            port,
        )?;
        let (set, key) = map_key(m, opts.lane(m.dest.is_ipv6()));
        push(
            set,
            key.with_data(addr_port(&m.dest, m.dest_port)),
            OnTaken::Refuse,
            port,
        )?;
    }
    let mut ips: Vec<IpAddr> = maps.iter().map(|m| m.dest).collect();
    ips.sort();
    ips.dedup();
    for ip in &ips {
        if opts.snat {
            let (s, k) = hairpin_key(ip);
            push(s, k, OnTaken::Replace, None)?;
        }
        if opts.masq_all {
            let (s, k) = masqall_key(ip);
            push(s, k, OnTaken::Replace, None)?;
        }
    }
    Ok(want)
}

/// The (protocol, port, container ID) of every claim among `victims`.
fn freed_ports(victims: &[Owned]) -> Vec<(u8, u16, String)> {
    victims
        .iter()
        .filter(|o| o.set == CLAIMS)
        .filter_map(|o| {
            let (proto, port) = parse_proto_port(&o.element.key)?;
            let owner = parse_owner(o.element.comment.as_deref()?)?;
            Some((proto, port, owner.1.to_string()))
        })
        .collect()
}

/// Whether `have` belongs to another attachment (network or interface) of the container
/// `tag` names: podman, multus and CRI give one container several attachments, and each
/// network's portmap is asked to publish the same ports. The first one holds them; all
/// reach the same container.
fn same_container(have: &Element, tag: &str) -> bool {
    let (Some(theirs), Some(ours)) = (
        have.comment.as_deref().and_then(parse_owner),
        parse_owner(tag),
    ) else {
        return false;
    };
    theirs != ours && theirs.1 == ours.1
}

fn conflict(w: &Want, have: &Element) -> Error {
    let holder = have
        .comment
        .as_deref()
        .and_then(parse_owner)
        .map(|(n, id, ifn)| format!("{n}/{id}/{ifn}"))
        .unwrap_or_else(|| format!("{:?}", have.comment.as_deref().unwrap_or("unknown")));
    Error::Conflict(format!(
        "host port {} is already published by {holder}; choose another host port or remove that container first",
        w.el.key_label()
    ))
}

fn describe_data(d: &[u8]) -> String {
    let (addr, port) = match d.len() {
        8 => (
            IpAddr::from(<[u8; 4]>::try_from(&d[..4]).unwrap_or_default()),
            &d[4..6],
        ),
        20 => (
            IpAddr::from(<[u8; 16]>::try_from(&d[..16]).unwrap_or_default()),
            &d[16..18],
        ),
        _ => return "?".into(),
    };
    let port = u16::from_be_bytes([port[0], port[1]]);
    match addr {
        IpAddr::V6(a) => format!("[{a}]:{port}"),
        IpAddr::V4(a) => format!("{a}:{port}"),
    }
}

/// Label of a published-port key: `8080/tcp`, `10.0.0.1:8080/tcp`,
/// `[fd00::1]:8080/tcp`; `None` for keys of another shape.
pub(crate) fn port_key_label(k: &[u8]) -> Option<String> {
    let pp = |k: &[u8]| -> Option<String> {
        match parse_proto_port(k)? {
            (p @ (6 | 17 | 132), port) => Some(format!("{port}/{}", proto_name(p))),
            _ => None,
        }
    };
    match k.len() {
        8 => pp(k),
        12 => Some(format!("{}:{}", ip_from_bytes(&k[..4])?, pp(&k[4..])?)),
        24 => Some(format!("[{}]:{}", ip_from_bytes(&k[..16])?, pp(&k[16..])?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(host_ip: Option<&str>, dest: &str) -> Mapping {
        Mapping {
            proto: 6,
            host_ip: host_ip.map(|h| h.parse().unwrap()),
            host_port: 8080,
            dest: dest.parse().unwrap(),
            dest_port: 80,
        }
    }

    #[test]
    fn keys_and_labels() {
        let (set, k) = map_key(&m(None, "10.0.0.2"), None);
        assert_eq!((set.as_str(), k.key_label()), ("any4", "8080/tcp".into()));
        let (set, k) = map_key(&m(Some("10.1.1.1"), "10.0.0.2"), None);
        assert_eq!(k.key.len(), 12);
        assert_eq!(
            (set.as_str(), k.key_label()),
            ("ip4", "10.1.1.1:8080/tcp".into())
        );
        let (set, k) = map_key(&m(Some("fd00::1"), "fd00::2"), None);
        assert_eq!(k.key.len(), 24);
        assert_eq!(
            (set.as_str(), k.key_label()),
            ("ip6", "[fd00::1]:8080/tcp".into())
        );
        assert_eq!(
            describe_data(&addr_port(&"10.0.0.2".parse().unwrap(), 80)),
            "10.0.0.2:80"
        );
        assert_eq!(addr_port(&"fd00::2".parse().unwrap(), 80).len(), 20);
    }

    #[test]
    fn standby_elements_round_trip() {
        for (host, dest) in [
            (None, "10.0.0.2"),
            (Some("10.9.9.9"), "10.0.0.2"),
            (None, "fd00::2"),
            (Some("fd00::9"), "fd00::2"),
        ] {
            let mut want = m(host, dest);
            want.dest_port = 8080;
            let (set, el) = standby_key(&want);
            assert_eq!(set, format!("standby{}", sfx(want.dest.is_ipv6())));
            let spec = set_specs().into_iter().find(|s| s.name == set).unwrap();
            assert_eq!(el.key.len() as u32, spec.key.raw().1, "{set} key length");
            assert_eq!(standby_mapping(&el), Some(want));
        }
        assert_eq!(standby_mapping(&Element::raw(vec![0; 7])), None);
        assert_eq!(standby_mapping(&Element::raw(vec![0; 16])), None, "no data");
    }

    #[test]
    fn key_type_lengths() {
        let specs = set_specs();
        let ip4 = specs.iter().find(|s| s.name == "ip4").unwrap();
        assert_eq!(ip4.key.raw().1, 12);
        assert_eq!(ip4.data.as_ref().unwrap().raw().1, 8);
        let ip6 = specs.iter().find(|s| s.name == "ip6").unwrap();
        assert_eq!(ip6.key.raw().1, 24);
        assert_eq!(ip6.data.as_ref().unwrap().raw().1, 20);
    }

    #[test]
    fn plan_dedups_and_refuses_double_mapping() {
        let maps = [m(None, "10.0.0.2"), m(None, "fd00::2"), m(None, "10.0.0.2")];
        let o = Options {
            snat: true,
            ..Default::default()
        };
        let w = plan_add("n c e", &maps, &o).unwrap();
        // one claim, any4, any6, hairpin4, hairpin6
        assert_eq!(w.len(), 5);
        let mut other = m(None, "10.0.0.2");
        other.dest_port = 81;
        assert!(plan_add("n c e", &[m(None, "10.0.0.2"), other], &o).is_err());
        assert!(plan_add("n c e", &[m(Some("fd00::1"), "10.0.0.2")], &o).is_err());
    }
}
