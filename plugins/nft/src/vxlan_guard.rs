//! The VXLAN guard of cluster networks (`cnm-agent`): only VTEPs registered in etcd may send
//! VXLAN to this host. Table `ip cnm_vxlan`, one set of peer VTEP addresses per VNI and one rule
//! per VNI in an input chain:
//!
//! ```text
//! meta l4proto udp  udp dport <port>  @th,96,24 <vni>  ip saddr != @vteps_<vni>  counter drop
//! ```
//!
//! Matching the VNI inside the VXLAN header (transport offset 12, 3 bytes) keeps networks
//! that share port 4789 independent. A sync is one atomic batch: elements added and removed
//! by diff against a dump, so the set never flaps.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use crate::batch::{Batch, Create};
use crate::error::Result;
use crate::expr::{load_addr, load_dport, match_l4proto, CmpOp, Expr, Verdict};
use crate::query;
use crate::socket::NftSocket;
use crate::sys::{NFT_PAYLOAD_TRANSPORT_HEADER, NFT_REG_1};
use crate::types::*;

pub const TABLE: &str = crate::tables::VXLAN_GUARD;
pub const CHAIN: &str = "input";

pub fn set_name(vni: u32) -> String {
    format!("vteps_{vni}")
}

fn rule_comment(vni: u32) -> String {
    format!("cnm vxlan guard vni {vni}")
}

/// The rule's expressions (see the module doc).
pub fn guard_rule(vni: u32, port: u16) -> Vec<Expr> {
    let vni_be = vni.to_be_bytes();
    let mut e: Vec<Expr> = match_l4proto(libc::IPPROTO_UDP as u8).into();
    e.extend([
        load_dport(NFT_REG_1),
        Expr::Cmp {
            sreg: NFT_REG_1,
            op: CmpOp::Eq,
            data: port.to_be_bytes().to_vec(),
        },
        // The VNI: 3 bytes at transport offset 12 (8 bytes of UDP header + 4 into VXLAN's).
        Expr::Payload {
            base: NFT_PAYLOAD_TRANSPORT_HEADER,
            offset: 12,
            len: 3,
            dreg: NFT_REG_1,
        },
        Expr::Cmp {
            sreg: NFT_REG_1,
            op: CmpOp::Eq,
            data: vni_be[1..].to_vec(),
        },
        load_addr(false, false, NFT_REG_1),
        Expr::Lookup {
            set: set_name(vni),
            sreg: NFT_REG_1,
            dreg: None,
            invert: true,
        },
        Expr::Counter,
        Expr::Immediate(Verdict::Drop),
    ]);
    e
}

/// Makes the set of `vni` hold exactly `vteps` (creating table, chain, set and rule when
/// missing). Returns (added, removed) element counts.
pub fn sync(vni: u32, port: u16, vteps: &[Ipv4Addr]) -> Result<(usize, usize)> {
    let mut sock = NftSocket::new()?;
    let set = set_name(vni);
    let elems = query::list_elements(&mut sock, Family::Ip, TABLE, &set)?;
    let set_there = elems.is_some();
    let have: BTreeSet<Vec<u8>> = elems
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.key)
        .collect();
    let rules = query::list_rules(&mut sock, Family::Ip, TABLE, CHAIN)?;
    let chain_there = rules.is_some();
    let rule_there = rules
        .unwrap_or_default()
        .iter()
        .any(|r| r.comment.as_deref() == Some(rule_comment(vni).as_str()));
    let want: BTreeSet<Vec<u8>> = vteps.iter().map(|v| v.octets().to_vec()).collect();
    let mut b = Batch::new();
    // Only what is missing: re-declaring the existing base chain in a batch makes the kernel
    // commit wait ~15 ms (measured), paid on every peer change otherwise.
    if !chain_there {
        b.add_table(Family::Ip, TABLE, Create::IfMissing);
        b.add_chain(
            &ChainSpec {
                family: Family::Ip,
                table: TABLE.into(),
                name: CHAIN.into(),
                base: Some(BaseChain {
                    hook: Hook::Input,
                    priority: 0,
                    chain_type: ChainType::Filter,
                    policy: None,
                }),
                comment: None,
            },
            Create::IfMissing,
        );
    }
    if !set_there {
        b.add_table(Family::Ip, TABLE, Create::IfMissing);
        b.add_set(
            &SetSpec::new(Family::Ip, TABLE, &set, KeyType::Ipv4Addr),
            Create::IfMissing,
        );
    }
    let mut added = 0;
    for k in want.difference(&have) {
        let ip = Ipv4Addr::new(k[0], k[1], k[2], k[3]);
        b.add_element(
            Family::Ip,
            TABLE,
            &set,
            &Element::ip(IpAddr::V4(ip)),
            Create::IfMissing,
        );
        added += 1;
    }
    let mut removed = 0;
    for k in have.difference(&want) {
        if k.len() == 4 {
            let ip = Ipv4Addr::new(k[0], k[1], k[2], k[3]);
            b.del_element(Family::Ip, TABLE, &set, &Element::ip(IpAddr::V4(ip)));
            removed += 1;
        }
    }
    if !rule_there {
        b.add_rule(&RuleSpec {
            family: Family::Ip,
            table: TABLE.into(),
            chain: CHAIN.into(),
            exprs: guard_rule(vni, port),
            comment: Some(rule_comment(vni)),
            append: true,
        });
    }
    if rule_there && added == 0 && removed == 0 {
        return Ok((0, 0));
    }
    b.commit(&mut sock)?;
    Ok((added, removed))
}

/// Removes the rule and set of `vni`, and the table when nothing else is left in it.
pub fn remove(vni: u32) -> Result<()> {
    let mut sock = NftSocket::new()?;
    if !query::table_exists(&mut sock, Family::Ip, TABLE)? {
        return Ok(());
    }
    let rules = query::list_rules(&mut sock, Family::Ip, TABLE, CHAIN)?.unwrap_or_default();
    let mine: Vec<u64> = rules
        .iter()
        .filter(|r| r.comment.as_deref() == Some(rule_comment(vni).as_str()))
        .map(|r| r.handle)
        .collect();
    let others = rules.len() - mine.len();
    let mut b = Batch::new();
    if others == 0
        && query::list_sets(&mut sock, Family::Ip, TABLE)?
            .iter()
            .all(|s| *s == set_name(vni))
    {
        b.del_table(Family::Ip, TABLE);
    } else {
        for h in mine {
            b.del_rule(Family::Ip, TABLE, CHAIN, h);
        }
        if query::set_exists(&mut sock, Family::Ip, TABLE, &set_name(vni))? {
            b.del_set(Family::Ip, TABLE, &set_name(vni));
        }
    }
    b.commit(&mut sock)
}
