//! Published ports (DNAT) and `--internal` bridge isolation for `cnm-shim`,
//! in a table owned by the caller (one per shim instance):
//!
//! ```text
//! table inet <table> {
//!     set internal { type ifname }                       # internal bridges
//!     set internal_self { type ifname . ifname }         # "br" . "br"
//!     chain ports {                                      # one rule per mapping
//!         meta nfproto ipv4 [ip daddr 127.0.0.1] meta l4proto tcp th dport 18080
//!             counter dnat ip to 10.213.1.2:80 comment "<owner>"
//!     }
//!     chain prerouting { type nat hook prerouting priority dstnat; fib daddr type local jump ports }
//!     chain output { type nat hook output priority dstnat; fib daddr type local jump ports }
//!     chain postrouting {                                # host -> 127.0.0.1:port -> container
//!         type nat hook postrouting priority srcnat;
//!         meta nfproto ipv4 ip saddr 127.0.0.0/8 oifname != "lo" masquerade
//!     }
//!     chain forward {                                    # internal: bridge <-> itself only
//!         type filter hook forward priority filter;
//!         iifname @internal iifname . oifname != @internal_self drop
//!         oifname @internal iifname . oifname != @internal_self drop
//!     }
//! }
//! ```
//!
//! `fib daddr type local` restricts DNAT to packets addressed to one of the
//! host's own addresses (what docker's `-m addrtype --dst-type LOCAL` does),
//! so forwarded traffic to other hosts is never rewritten. Loopback
//! destinations additionally need `route_localnet=1` on the bridge (set by
//! the caller) and the postrouting masquerade, because a packet leaving the
//! bridge with source 127.0.0.1 would be dropped as martian.
//!
//! dockerd's `filter FORWARD` (policy DROP when dockerd enabled forwarding)
//! would drop the DNAT-ed connection; [`ensure_dnat_accept`] inserts
//! `-o <bridge> -m conntrack --ctstate DNAT -j ACCEPT` into `DOCKER-USER`,
//! in iptables-nft's exact layout so `iptables -S` still reads the chain.
//!
//! Not thread-safe across processes: a table has one writer (its shim),
//! which serializes its calls. Everything is still idempotent and every
//! change is one transaction.

use std::net::IpAddr;

use crate::attr::AttrWriter;
use crate::batch::{Batch, Create};
use crate::error::{Error, Result};
use crate::expr::{
    match_addr_prefix, match_ifname, match_l4proto, match_nfproto, CmpOp, Expr, MetaKey, Verdict,
};
use crate::query;
use crate::socket::NftSocket;
use crate::sys::{
    NFTA_DATA_VALUE, NFTA_IMMEDIATE_DATA, NFTA_IMMEDIATE_DREG, NFT_REG_1, NFT_REG_2, NLA_F_NESTED,
};
use crate::types::*;

pub const FAMILY: Family = Family::Inet;
pub const PORTS_CHAIN: &str = "ports";
pub const INTERNAL_SET: &str = "internal";
pub const INTERNAL_SELF_SET: &str = "internal_self";
const DOCKER_USER: &str = "DOCKER-USER";
const MAX_ATTEMPTS: usize = 16;

// linux/netfilter/nf_tables.h (not in `sys`, which the crate owner keeps).
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
const NFPROTO_IPV4: u32 = 2;
const NFPROTO_IPV6: u32 = 10;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;

/// One published port: `host_ip:host_port/proto -> dest:dest_port`.
#[derive(Debug, Clone, PartialEq, Eq)]
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

// ---- expressions nf_tables has and `Expr` does not model ------------------

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

/// `th dport <port>` (needs a preceding l4proto match).
pub fn match_dport(port: u16) -> [Expr; 2] {
    [
        Expr::Payload {
            base: NFT_PAYLOAD_TRANSPORT_HEADER,
            offset: 2,
            len: 2,
            dreg: NFT_REG_1,
        },
        Expr::Cmp {
            sreg: NFT_REG_1,
            op: CmpOp::Eq,
            data: port.to_be_bytes().to_vec(),
        },
    ]
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

/// `dnat ip|ip6 to <addr in reg 1>:<port in reg 2>`.
pub fn dnat(v6: bool) -> Expr {
    Expr::Raw {
        name: "nat".into(),
        attrs: vec![
            (NFTA_NAT_TYPE, be32(NFT_NAT_DNAT)),
            (
                NFTA_NAT_FAMILY,
                be32(if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 }),
            ),
            (NFTA_NAT_REG_ADDR_MIN, be32(NFT_REG_1)),
            (NFTA_NAT_REG_PROTO_MIN, be32(NFT_REG_2)),
        ],
    }
}

fn addr_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The expressions of one mapping's rule.
pub fn mapping_exprs(m: &Mapping) -> Result<Vec<Expr>> {
    let v6 = m.dest.is_ipv6();
    let mut e: Vec<Expr> = match m.host_ip {
        Some(h) if h.is_ipv6() != v6 => {
            return Err(Error::Invalid(format!(
                "port mapping {}:{} -> {}:{}: host address and destination are of different IP families",
                h, m.host_port, m.dest, m.dest_port
            )))
        }
        Some(h) => match_addr_prefix(true, h, if v6 { 128 } else { 32 }),
        None => match_nfproto(if v6 { libc::AF_INET6 } else { libc::AF_INET } as u8).into(),
    };
    e.extend(match_l4proto(m.proto));
    e.extend(match_dport(m.host_port));
    e.push(immediate_data(NFT_REG_1, &addr_bytes(&m.dest)));
    e.push(immediate_data(NFT_REG_2, &m.dest_port.to_be_bytes()));
    e.push(Expr::Counter);
    e.push(dnat(v6));
    Ok(e)
}

fn rule(table: &str, chain: &str, exprs: Vec<Expr>, comment: Option<String>) -> RuleSpec {
    RuleSpec {
        family: FAMILY,
        table: table.into(),
        chain: chain.into(),
        exprs,
        comment,
        append: true,
    }
}

fn base_chain(
    table: &str,
    name: &str,
    hook: Hook,
    priority: i32,
    chain_type: ChainType,
) -> ChainSpec {
    ChainSpec {
        family: FAMILY,
        table: table.into(),
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

/// The port-mapping and isolation state of one table.
pub struct PortTable {
    sock: NftSocket,
    table: String,
}

impl PortTable {
    /// Opens a netlink socket in the calling thread's network namespace.
    pub fn new(table: &str) -> Result<Self> {
        if table.is_empty()
            || table.len() > 64
            || !table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(Error::Invalid(format!(
                "table name {table:?}: use 1-64 characters [A-Za-z0-9_]"
            )));
        }
        Ok(PortTable {
            sock: NftSocket::new()?,
            table: table.into(),
        })
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table, its sets, chains and static rules unless the
    /// `forward` chain (created last in the same transaction) exists.
    fn ensure_infra(&mut self) -> Result<()> {
        if query::chain_exists(&mut self.sock, FAMILY, &self.table, "forward")? {
            return Ok(());
        }
        let t = self.table.clone();
        let mut b = Batch::new();
        b.add_table(FAMILY, &t, Create::IfMissing);
        for (name, key) in [
            (INTERNAL_SET, KeyType::IfName),
            (INTERNAL_SELF_SET, KeyType::Concat(vec![KeyType::IfName; 2])),
        ] {
            let spec = SetSpec {
                family: FAMILY,
                table: t.clone(),
                name: name.into(),
                key,
                verdict_map: false,
                data: None,
                flags: 0,
            };
            b.add_set(&spec, Create::IfMissing);
        }
        let ports = ChainSpec {
            family: FAMILY,
            table: t.clone(),
            name: PORTS_CHAIN.into(),
            base: None,
            comment: None,
        };
        b.add_chain(&ports, Create::Exclusive);
        for (name, hook) in [("prerouting", Hook::Prerouting), ("output", Hook::Output)] {
            b.add_chain(
                &base_chain(&t, name, hook, priority::DSTNAT, ChainType::Nat),
                Create::Exclusive,
            );
            let mut e: Vec<Expr> = match_daddr_local().into();
            e.push(Expr::Immediate(Verdict::Jump(PORTS_CHAIN.into())));
            b.add_rule(&rule(&t, name, e, None));
        }
        b.add_chain(
            &base_chain(
                &t,
                "postrouting",
                Hook::Postrouting,
                priority::SRCNAT,
                ChainType::Nat,
            ),
            Create::Exclusive,
        );
        let mut e = match_addr_prefix(false, IpAddr::from([127, 0, 0, 0]), 8);
        let [load, Expr::Cmp { sreg, data, .. }] = match_ifname(true, "lo") else {
            unreachable!("match_ifname returns meta + cmp")
        };
        e.push(load);
        e.push(Expr::Cmp {
            sreg,
            op: CmpOp::Neq,
            data,
        });
        e.extend([Expr::Counter, Expr::Masq]);
        b.add_rule(&rule(
            &t,
            "postrouting",
            e,
            Some("published ports: host loopback -> container".into()),
        ));
        b.add_chain(
            &base_chain(
                &t,
                "forward",
                Hook::Forward,
                priority::FILTER,
                ChainType::Filter,
            ),
            Create::Exclusive,
        );
        let lookup = |set: &str, invert| Expr::Lookup {
            set: set.into(),
            sreg: NFT_REG_1,
            dreg: None,
            invert,
        };
        let meta = |key, dreg| Expr::Meta { key, dreg };
        for first in [MetaKey::IifName, MetaKey::OifName] {
            let e = vec![
                meta(first, NFT_REG_1),
                lookup(INTERNAL_SET, false),
                meta(MetaKey::IifName, NFT_REG_1),
                meta(MetaKey::OifName, NFT_REG_2),
                lookup(INTERNAL_SELF_SET, true),
                Expr::Counter,
                Expr::Immediate(Verdict::Drop),
            ];
            b.add_rule(&rule(
                &t,
                "forward",
                e,
                Some("internal network: no traffic to or from other interfaces".into()),
            ));
        }
        match b.commit(&mut self.sock) {
            Ok(()) => Ok(()),
            // Created meanwhile by someone else, in full (one transaction).
            Err(e) if e.failures().iter().all(|f| f.errno == libc::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Replaces every mapping of `owner` with `maps` in one transaction.
    pub fn set_mappings(&mut self, owner: &str, maps: &[Mapping]) -> Result<()> {
        if owner.is_empty() || crate::udata::encode_comment(owner).is_none() {
            return Err(Error::Invalid(format!(
                "owner {owner:?} is not a valid rule comment"
            )));
        }
        let rules: Vec<RuleSpec> = maps
            .iter()
            .map(|m| {
                mapping_exprs(m).map(|e| rule(&self.table, PORTS_CHAIN, e, Some(owner.to_string())))
            })
            .collect::<Result<_>>()?;
        if !rules.is_empty() {
            self.ensure_infra()?;
        }
        for _ in 0..MAX_ATTEMPTS {
            let old = self.handles_of(Some(owner))?;
            if old.is_empty() && rules.is_empty() {
                return Ok(());
            }
            let mut b = Batch::new();
            for h in &old {
                b.del_rule(FAMILY, &self.table, PORTS_CHAIN, *h);
            }
            for r in &rules {
                b.add_rule(r);
            }
            match b.commit(&mut self.sock) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_not_found() && !old.is_empty() => continue, // a rule vanished meanwhile
                Err(e) => return Err(e),
            }
        }
        Err(Error::Protocol(format!(
            "table {}: rules of {owner} kept changing",
            self.table
        )))
    }

    /// Removes every mapping of `owner` (none is fine).
    pub fn remove(&mut self, owner: &str) -> Result<()> {
        self.set_mappings(owner, &[])
    }

    /// Handles of the rules of `owner` (all rules if `None`) in `ports`.
    fn handles_of(&mut self, owner: Option<&str>) -> Result<Vec<u64>> {
        let rules = query::list_rules(&mut self.sock, FAMILY, &self.table, PORTS_CHAIN)?
            .unwrap_or_default();
        Ok(rules
            .into_iter()
            .filter(|r| owner.is_none_or(|o| r.comment.as_deref() == Some(o)))
            .map(|r| r.handle)
            .collect())
    }

    /// Owners (rule comments) that have mappings, de-duplicated.
    pub fn owners(&mut self) -> Result<Vec<String>> {
        let rules = query::list_rules(&mut self.sock, FAMILY, &self.table, PORTS_CHAIN)?
            .unwrap_or_default();
        let mut v: Vec<String> = rules.into_iter().filter_map(|r| r.comment).collect();
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
        if internal {
            self.ensure_infra()?;
        }
        let t = self.table.clone();
        let mut b = Batch::new();
        let elems = [
            (INTERNAL_SET, Element::ifname(bridge)),
            (INTERNAL_SELF_SET, Element::ifname_pair(bridge, bridge)),
        ];
        for (set, el) in &elems {
            if internal {
                b.add_element(FAMILY, &t, set, el, Create::IfMissing);
            } else {
                b.del_element(FAMILY, &t, set, el);
            }
        }
        match b.commit(&mut self.sock) {
            Ok(()) => Ok(()),
            Err(e) if !internal && e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Bridges currently marked internal.
    pub fn internal_bridges(&mut self) -> Result<Vec<String>> {
        let els = query::list_elements(&mut self.sock, FAMILY, &self.table, INTERNAL_SET)?
            .unwrap_or_default();
        Ok(els
            .iter()
            .map(|e| {
                let end = e.key.iter().position(|&c| c == 0).unwrap_or(e.key.len());
                String::from_utf8_lossy(&e.key[..end]).into_owned()
            })
            .collect())
    }

    /// Deletes the whole table (missing is fine).
    pub fn delete(&mut self) -> Result<()> {
        let mut b = Batch::new();
        b.del_table(FAMILY, &self.table);
        match b.commit(&mut self.sock) {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether the table exists.
    pub fn exists(&mut self) -> Result<bool> {
        query::table_exists(&mut self.sock, FAMILY, &self.table)
    }
}

// ---- DOCKER-USER: accept DNAT-ed connections into a bridge ----------------

fn dnat_comment(bridge: &str) -> String {
    format!("cnm-shim dnat {bridge}")
}

/// `-m conntrack --ctstate DNAT` (`struct xt_conntrack_mtinfo3`, 168 bytes
/// XT_ALIGN'ed; host-order u16 `match_flags` at 146 and `state_mask` at 150;
/// XT_CONNTRACK_STATE_DNAT = 1 << (IP_CT_NUMBER + 2) = 1 << 7).
fn conntrack_dnat() -> Expr {
    const XT_CONNTRACK_STATE: u16 = 1;
    const STATE_DNAT: u16 = 1 << 7;
    let mut info = vec![0u8; 168];
    info[146..148].copy_from_slice(&XT_CONNTRACK_STATE.to_ne_bytes());
    info[150..152].copy_from_slice(&STATE_DNAT.to_ne_bytes());
    Expr::Match {
        name: "conntrack".into(),
        rev: 3,
        info,
    }
}

fn dnat_accept_rule(fam: Family, bridge: &str) -> RuleSpec {
    let mut exprs: Vec<Expr> = match_ifname(true, bridge).into();
    exprs.extend([
        conntrack_dnat(),
        Expr::Counter,
        Expr::Immediate(Verdict::Accept),
    ]);
    RuleSpec {
        family: fam,
        table: "filter".into(),
        chain: DOCKER_USER.into(),
        exprs,
        comment: Some(dnat_comment(bridge)),
        append: false,
    }
}

/// Inserts `-o <bridge> -m conntrack --ctstate DNAT -j ACCEPT` at the top of
/// `ip`/`ip6 filter DOCKER-USER`, where that chain exists (dockerd with
/// iptables). Idempotent (found by its comment); runs under the ruleset
/// generation id so a concurrent change by dockerd makes it look again.
pub fn ensure_dnat_accept(bridge: &str) -> Result<()> {
    let sock = &mut NftSocket::new()?;
    let comment = dnat_comment(bridge);
    for fam in [Family::Ip, Family::Ip6] {
        let mut done = false;
        for _ in 0..MAX_ATTEMPTS {
            let genid = query::generation(sock)?;
            let Some(rules) = query::list_rules(sock, fam, "filter", DOCKER_USER)? else {
                done = true;
                break;
            };
            if rules
                .iter()
                .any(|r| r.comment.as_deref() == Some(comment.as_str()))
            {
                done = true;
                break;
            }
            let mut b = Batch::new().with_genid(genid);
            b.add_rule(&dnat_accept_rule(fam, bridge));
            match b.commit(sock) {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(e) if e.errno() == Some(libc::ERESTART) || e.is_not_found() => continue,
                Err(e) => return Err(e),
            }
        }
        if !done {
            return Err(Error::Protocol(format!(
                "{fam} filter {DOCKER_USER}: ruleset kept changing while adding the DNAT accept for {bridge}; retry"
            )));
        }
    }
    Ok(())
}

/// Removes what [`ensure_dnat_accept`] added for `bridge` (missing is fine).
pub fn remove_dnat_accept(bridge: &str) -> Result<()> {
    crate::forward::delete_docker_user_rules(&mut NftSocket::new()?, &dnat_comment(bridge))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::encode_list;

    #[test]
    fn mapping_rule_shape() {
        let m = Mapping {
            proto: 6,
            host_ip: None,
            host_port: 18080,
            dest: "10.213.1.2".parse().unwrap(),
            dest_port: 80,
        };
        let e = mapping_exprs(&m).unwrap();
        assert!(matches!(e.last(), Some(Expr::Raw { name, .. }) if name == "nat"));
        let mut buf = Vec::new();
        encode_list(&mut AttrWriter::new(&mut buf), &e);
        assert!(!buf.is_empty());
        let bad = Mapping {
            host_ip: Some("::1".parse().unwrap()),
            ..m
        };
        assert!(mapping_exprs(&bad).is_err());
    }

    #[test]
    fn table_names() {
        assert!(matches!(PortTable::new("bad name"), Err(Error::Invalid(_))));
    }
}
