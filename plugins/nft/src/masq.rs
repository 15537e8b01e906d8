//! ipMasq state for the bridge plugin, in our own table `inet cni_rs`:
//!
//! ```text
//! table inet cni_rs {
//!     set masq4-0a58-16 {                  # one per subnet: its container IPs
//!         type ipv4_addr
//!         elements = { 10.88.0.5 comment "<network> <containerID> <ifname>" }
//!     }
//!     chain postrouting {
//!         type nat hook postrouting priority srcnat; policy accept;
//!         ip saddr @masq4-0a58-16 jump masq4-0a58-16 comment "masq4-0a58-16"
//!     }
//!     chain masq4-0a58-16 {                # one per subnet
//!         comment "cni-rs ipMasq for 10.88.0.0/16"
//!         ip daddr 10.88.0.0/16 return
//!         ip daddr 224.0.0.0/4 return
//!         counter masquerade
//!     }
//! }
//! ```
//!
//! Per container IP there is exactly one element in the set of its subnet,
//! commented with its owner, so GC and DEL-without-IPs find elements by
//! network + (containerID, ifname). Rules exist per *subnet*, never per
//! container.
//!
//! Why plain sets and not one `ip saddr vmap @masq4` with an element
//! `<ip> : goto <subnet chain>` per container: the kernel re-validates the
//! whole table whenever an element with a jump/goto verdict is added, and
//! that walks every element of every verdict map (measured on 6.18: one
//! add costs 10 us with 1 element, 106 us with 1000, 2.5 ms with 20000).
//! Adding to a plain set costs ~9 us regardless of its size.
//!
//! Semantics match the reference (`-d <subnet> ACCEPT`, `! -d 224.0.0.0/4
//! MASQUERADE`): `jump` + `return` falls through to the next subnet rule,
//! so rule order does not matter.
//!
//! Idempotency under concurrency: the table and the base chain are created
//! with NLM_F_CREATE (no-op when present); rules are not idempotent, so a
//! subnet's chain is created with NLM_F_EXCL in the same transaction as its
//! rules, its set and its jump rule: the chain exists iff all of them do.
//! EEXIST on that chain means another process won the race, and the batch
//! is retried without it. Elements are added with NLM_F_EXCL; EEXIST means
//! a stale element for a reused IP, which is replaced (delete + add in one
//! batch); when a subnet is created, elements for the same IPs in other
//! (overlapping) subnets' sets are removed in the same batch. An element
//! add fails with ENOENT if its subnet was pruned
//! meanwhile, which triggers re-creation; pruning itself runs under the
//! ruleset generation id, so it never removes a subnet that gained an
//! element after it looked.

use std::collections::HashSet;
use std::net::IpAddr;

use crate::batch::{Batch, Create, OpTags, Split};
use crate::error::{Error, Result};
use crate::expr::{load_addr, match_addr_prefix, match_nfproto, nfproto_of, Expr, Verdict};
use crate::owner::{owner_comment, parse_owner, validate_owner, OwnedElements};
use crate::query;
use crate::retry::{self, Plan};
use crate::socket::NftSocket;
use crate::sys::NFT_REG_1;
use crate::types::*;

pub const TABLE: &str = crate::tables::MAIN;
pub const FAMILY: Family = Family::Inet;
const ELEMENTS: OwnedElements = OwnedElements {
    family: FAMILY,
    table: TABLE,
    op: "ipMasq delete",
};
pub const POSTROUTING: &str = "postrouting";
const SUBNET_PREFIX: [&str; 2] = ["masq4-", "masq6-"];

/// One masqueraded container address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqEntry {
    pub ip: IpAddr,
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    /// Name of the subnet's set and chain, e.g. `masq4-0a58-16`.
    pub subnet: String,
}

/// A subnet known by its set/chain name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Subnet {
    name: String,
    net: IpAddr,
    prefix: u8,
}

impl Subnet {
    fn of(ip: IpAddr, prefix: u8) -> Self {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.min(max);
        Subnet {
            name: subnet_name(ip, prefix),
            net: network_of(ip, prefix),
            prefix,
        }
    }

    fn contains(&self, ip: &IpAddr) -> bool {
        ip.is_ipv4() == self.net.is_ipv4() && network_of(*ip, self.prefix) == self.net
    }
}

/// Network address of `ip/prefix`.
fn network_of(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let p = u32::from(prefix.min(32));
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            IpAddr::from((u32::from(a) & mask).to_be_bytes())
        }
        IpAddr::V6(a) => {
            let p = u32::from(prefix.min(128));
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            IpAddr::from((u128::from(a) & mask).to_be_bytes())
        }
    }
}

/// Per-subnet set/chain name: family, the significant hex nibbles of the
/// network address, and the prefix length, e.g. `masq4-0a58-16`,
/// `masq6-fd00000000000000-64`. Injective (no hash collisions), decodable
/// ([`parse_subnet_name`]) and a plain nft identifier (survives
/// `nft list ruleset | nft -f -`).
pub fn subnet_name(ip: IpAddr, prefix: u8) -> String {
    let (bytes, max, fam) = match network_of(ip, prefix) {
        IpAddr::V4(a) => (a.octets().to_vec(), 32u8, 0),
        IpAddr::V6(a) => (a.octets().to_vec(), 128u8, 1),
    };
    let prefix = prefix.min(max);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let nibbles = usize::from(prefix).div_ceil(4).max(1);
    format!("{}{}-{}", SUBNET_PREFIX[fam], &hex[..nibbles], prefix)
}

/// Inverse of [`subnet_name`]: (network address, prefix length).
pub fn parse_subnet_name(name: &str) -> Option<(IpAddr, u8)> {
    let (v6, rest) = if let Some(r) = name.strip_prefix(SUBNET_PREFIX[0]) {
        (false, r)
    } else {
        (true, name.strip_prefix(SUBNET_PREFIX[1])?)
    };
    let (hex, prefix) = rest.split_once('-')?;
    let prefix: u8 = prefix.parse().ok()?;
    let width = if v6 { 32 } else { 8 };
    if prefix > width * 4
        || hex.is_empty()
        || hex.len() > width as usize
        || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    let full = format!("{hex:0<w$}", w = width as usize);
    let ip = if v6 {
        IpAddr::from(u128::from_str_radix(&full, 16).ok()?.to_be_bytes())
    } else {
        IpAddr::from(u32::from_str_radix(&full, 16).ok()?.to_be_bytes())
    };
    (subnet_name(ip, prefix) == name).then_some((ip, prefix))
}

fn multicast(v6: bool) -> (IpAddr, u8) {
    if v6 {
        (
            IpAddr::from([0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            8,
        )
    } else {
        (IpAddr::from([224, 0, 0, 0]), 4)
    }
}

fn rule(chain: &str, exprs: Vec<Expr>, comment: Option<String>) -> RuleSpec {
    RuleSpec {
        family: FAMILY,
        table: TABLE.into(),
        chain: chain.into(),
        exprs,
        comment,
        append: true,
    }
}

fn postrouting_spec() -> ChainSpec {
    ChainSpec {
        family: FAMILY,
        table: TABLE.into(),
        name: POSTROUTING.into(),
        base: Some(BaseChain {
            hook: Hook::Postrouting,
            priority: priority::SRCNAT,
            chain_type: ChainType::Nat,
            policy: Some(Verdict::Accept),
        }),
        comment: Some("cni-rs ipMasq: one rule per subnet".into()),
    }
}

/// Adds a subnet's set, chain (exclusive), chain rules and jump rule;
/// returns the op index of the chain creation.
fn push_subnet(b: &mut Batch, s: &Subnet) -> usize {
    let v6 = s.net.is_ipv6();
    b.add_set(
        &SetSpec::new(
            FAMILY,
            TABLE,
            &s.name,
            if v6 {
                KeyType::Ipv6Addr
            } else {
                KeyType::Ipv4Addr
            },
        ),
        Create::IfMissing,
    );
    let chain_op = b.add_chain(
        &ChainSpec {
            family: FAMILY,
            table: TABLE.into(),
            name: s.name.clone(),
            base: None,
            comment: Some(format!("cni-rs ipMasq for {}/{}", s.net, s.prefix)),
        },
        Create::Exclusive,
    );
    let mut local = match_addr_prefix(true, s.net, s.prefix);
    local.push(Expr::Immediate(Verdict::Return));
    b.add_rule(&rule(&s.name, local, None));
    let (mc, mcp) = multicast(v6);
    let mut mcast = match_addr_prefix(true, mc, mcp);
    mcast.push(Expr::Immediate(Verdict::Return));
    b.add_rule(&rule(&s.name, mcast, None));
    b.add_rule(&rule(&s.name, vec![Expr::Counter, Expr::Masq], None));
    let mut jump: Vec<Expr> = match_nfproto(nfproto_of(&s.net)).into();
    jump.push(load_addr(v6, false, NFT_REG_1));
    jump.push(Expr::Lookup {
        set: s.name.clone(),
        sreg: NFT_REG_1,
        dreg: None,
        invert: false,
    });
    jump.push(Expr::Immediate(Verdict::Jump(s.name.clone())));
    b.add_rule(&rule(POSTROUTING, jump, Some(s.name.clone())));
    chain_op
}

#[derive(Debug, Clone, Copy)]
enum Tag {
    Subnet(usize),
    AddElem(usize),
    DelElem(usize),
    DelStale,
    Other,
}

/// The masquerade state of this host (or network namespace).
pub struct MasqSetup {
    sock: NftSocket,
}

impl MasqSetup {
    /// Opens a netlink socket in the calling thread's network namespace.
    pub fn new() -> Result<Self> {
        Ok(MasqSetup {
            sock: NftSocket::new()?,
        })
    }

    /// Works on an already open socket (one socket for a caller's whole firewall setup).
    pub fn with_socket(sock: NftSocket) -> Self {
        MasqSetup { sock }
    }

    /// Masquerades traffic from each `(container IP, prefix length)` to
    /// destinations outside its subnet and not multicast. One transaction
    /// in the steady state; creates the table/chains/sets of a subnet on
    /// its first use. Replaces an existing element for the same IP (IP
    /// reuse by a new container).
    pub fn add(
        &mut self,
        network: &str,
        container_id: &str,
        ifname: &str,
        ips: &[(IpAddr, u8)],
    ) -> Result<()> {
        let comment = validate_owner("ipMasq", network, container_id, ifname)?;
        let mut targets: Vec<(Element, usize)> = Vec::new(); // element, subnet index
        let mut subnets: Vec<Subnet> = Vec::new();
        let mut seen = HashSet::new();
        for &(ip, p) in ips {
            if !seen.insert(ip) {
                continue;
            }
            let s = Subnet::of(ip, p);
            let si = match subnets.iter().position(|x| x.name == s.name) {
                Some(i) => i,
                None => {
                    subnets.push(s);
                    subnets.len() - 1
                }
            };
            targets.push((Element::ip(ip).with_comment(comment.clone()), si));
        }
        if targets.is_empty() {
            return Ok(());
        }

        // A subnet whose jump is missing from an existing postrouting chain had its rules
        // flushed by hand (`nft flush table`): its chain is rebuilt (deleted with whatever
        // rules it has left, then created again with the rules and the jump).
        let jumps = self.jumps()?;
        let mut rebuild: Vec<bool> = subnets
            .iter()
            .map(|s| jumps.as_ref().is_some_and(|j| !j.contains(&s.name)))
            .collect();
        for (si, s) in subnets.iter().enumerate() {
            if rebuild[si] && !query::chain_exists(&mut self.sock, FAMILY, TABLE, &s.name)? {
                rebuild[si] = false;
            }
        }
        let mut infra = rebuild.iter().any(|r| *r);
        // Elements for the same IPs in *other* subnets' sets (the IP was
        // used with another prefix before): looked up once when a subnet
        // has to be created, and deleted in the same batch.
        let mut stale: Option<Vec<SetElement>> = None;
        let mut subnet_exists = vec![false; subnets.len()];
        let mut replace = vec![false; targets.len()];
        retry::rejected("ipMasq add", || {
            let mut b = Batch::new();
            let mut tags = OpTags::new(Tag::Other);
            if infra && stale.is_none() {
                stale = Some(self.elements_elsewhere(&targets, &subnets)?);
            }
            for l in stale.iter().flatten() {
                let i = b.del_element(FAMILY, TABLE, &l.set, &l.element);
                tags.set(i, Tag::DelStale);
            }
            if infra {
                b.add_table(FAMILY, TABLE, Create::IfMissing);
                b.add_chain(&postrouting_spec(), Create::IfMissing);
                for (si, s) in subnets.iter().enumerate() {
                    if rebuild[si] {
                        b.del_chain(FAMILY, TABLE, &s.name);
                    }
                    if !subnet_exists[si] {
                        let i = push_subnet(&mut b, s);
                        tags.set(i, Tag::Subnet(si));
                    }
                }
            }
            for (ei, (el, si)) in targets.iter().enumerate() {
                let set = &subnets[*si].name;
                if replace[ei] {
                    let i = b.del_element(FAMILY, TABLE, set, el);
                    tags.set(i, Tag::DelElem(ei));
                }
                let i = b.add_element(FAMILY, TABLE, set, el, Create::Exclusive);
                tags.set(i, Tag::AddElem(ei));
            }
            let Some(err) = b.try_commit(&mut self.sock)? else {
                return Ok(Ok(()));
            };
            for f in err.failures() {
                match (tags.get(f.index), f.errno) {
                    (Tag::Subnet(si), libc::EEXIST) => subnet_exists[si] = true,
                    (Tag::AddElem(ei), libc::EEXIST | libc::EBUSY) => replace[ei] = true,
                    (Tag::AddElem(_), libc::ENOENT) => {
                        // Table or subnet missing (first use, or pruned
                        // concurrently): (re)create what this attempt did
                        // not find existing.
                        if infra {
                            subnet_exists.iter_mut().for_each(|x| *x = false);
                        }
                        infra = true;
                    }
                    (Tag::DelElem(ei), libc::ENOENT) => replace[ei] = false,
                    (Tag::DelStale, libc::ENOENT) => stale = None, // look again
                    _ => return Err(err),
                }
            }
            Ok(Err(err))
        })
    }

    /// Removes this attachment's elements. With `ips` (from prevResult)
    /// only those addresses are looked up; without, every subnet set is
    /// searched by owner comment. Either way an element is deleted only if
    /// its comment names this (network, container ID, ifname), so an
    /// address already reassigned to another container is left alone.
    /// Succeeds when nothing (not even the table) exists.
    ///
    /// Call it *before* releasing the IPs in IPAM: the ownership check and
    /// the delete are two steps, so an IP handed to a new container in
    /// between could otherwise lose its (replaced) element.
    pub fn del(
        &mut self,
        network: &str,
        container_id: &str,
        ifname: &str,
        ips: Option<&[IpAddr]>,
    ) -> Result<()> {
        let owner = owner_comment(network, container_id, ifname);
        let mine = |e: &Element| e.comment.as_deref() == Some(owner.as_str());
        let subnets = self.subnets()?;
        let mut victims = Vec::new();
        match ips {
            Some(ips) => {
                let mut seen = HashSet::new();
                for ip in ips.iter().filter(|ip| seen.insert(**ip)) {
                    for s in subnets.iter().filter(|s| s.contains(ip)) {
                        let key = Element::ip(*ip);
                        if let Some(e) =
                            query::get_element(&mut self.sock, FAMILY, TABLE, &s.name, &key)?
                        {
                            if mine(&e) {
                                victims.push(SetElement {
                                    set: s.name.clone(),
                                    element: e,
                                });
                            }
                        }
                    }
                }
            }
            None => {
                for l in self.elements(&subnets)? {
                    if mine(&l.element) {
                        victims.push(l);
                    }
                }
            }
        }
        ELEMENTS.delete(&mut self.sock, victims, Split::Never)
    }

    /// Deletes every element of `network` whose (container ID, ifname) is
    /// not in `valid`, then removes subnets left without elements. Returns
    /// the removed entries.
    pub fn gc(
        &mut self,
        network: &str,
        keep: &dyn Fn(&str, &str) -> bool,
    ) -> Result<Vec<MasqEntry>> {
        let subnets = self.subnets()?;
        let mut removed = Vec::new();
        let mut victims = Vec::new();
        for l in self.elements(&subnets)? {
            let Some(entry) = to_entry(&l) else { continue };
            if entry.network == network && !keep(&entry.container_id, &entry.ifname) {
                removed.push(entry);
                victims.push(l);
            }
        }
        ELEMENTS.delete(&mut self.sock, victims, Split::Chunks)?;
        // Pruning is housekeeping: under constant churn it may not settle, and an empty
        // subnet chain left for the next GC is harmless. Only real errors fail the GC.
        match self.prune_subnets() {
            Ok(()) | Err(Error::Protocol(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(removed)
    }

    /// Entries of `network` (all networks if `None`).
    pub fn list(&mut self, network: Option<&str>) -> Result<Vec<MasqEntry>> {
        let subnets = self.subnets()?;
        Ok(self
            .elements(&subnets)?
            .iter()
            .filter_map(to_entry)
            .filter(|e| network.is_none_or(|n| e.network == n))
            .collect())
    }

    /// Removes the set, chain and jump rule of every subnet without
    /// elements. Runs under the ruleset generation id: if anything changed
    /// after it looked (e.g. an ADD put an element into one of them), the
    /// kernel rejects the batch and it looks again.
    pub fn prune_subnets(&mut self) -> Result<()> {
        let gave_up = || "ipMasq prune: ruleset kept changing; retry".to_string();
        retry::at_generation(&mut self.sock, retry::ATTEMPTS, gave_up, |sock| {
            let mut empty = Vec::new();
            for s in list_subnets(sock)? {
                if query::list_elements(sock, FAMILY, TABLE, &s.name)?.is_some_and(|e| e.is_empty())
                {
                    empty.push(s.name);
                }
            }
            if empty.is_empty() {
                return Ok(Plan::Done(()));
            }
            let rules = query::list_rules(sock, FAMILY, TABLE, POSTROUTING)?.unwrap_or_default();
            let mut b = Batch::new();
            for name in &empty {
                for r in rules
                    .iter()
                    .filter(|r| r.comment.as_deref() == Some(name.as_str()))
                {
                    b.del_rule(FAMILY, TABLE, POSTROUTING, r.handle);
                }
                b.del_chain(FAMILY, TABLE, name);
                b.del_set(FAMILY, TABLE, name);
            }
            Ok(Plan::Commit(b, ()))
        })
    }

    /// Names of the subnets the postrouting chain jumps to (the jump rules' comments); None
    /// when the chain (or the table) does not exist.
    fn jumps(&mut self) -> Result<Option<HashSet<String>>> {
        Ok(
            query::list_rules(&mut self.sock, FAMILY, TABLE, POSTROUTING)?
                .map(|rules| rules.into_iter().filter_map(|r| r.comment).collect()),
        )
    }

    /// What of the attachment's masquerade state is missing or someone else's, as readable
    /// descriptions; empty when everything is in place. Read-only.
    pub fn check(
        &mut self,
        network: &str,
        container_id: &str,
        ifname: &str,
        ips: &[(IpAddr, u8)],
    ) -> Result<Vec<String>> {
        let comment = validate_owner("ipMasq", network, container_id, ifname)?;
        let Some(jumps) = self.jumps()? else {
            return Ok(vec![format!("chain {FAMILY} {TABLE} {POSTROUTING}")]);
        };
        let mut missing = Vec::new();
        for &(ip, p) in ips {
            let s = Subnet::of(ip, p);
            if !jumps.contains(&s.name) {
                missing.push(format!(
                    "the jump to {} in chain {FAMILY} {TABLE} {POSTROUTING}",
                    s.name
                ));
            }
            match query::list_rules(&mut self.sock, FAMILY, TABLE, &s.name)? {
                None => missing.push(format!("chain {FAMILY} {TABLE} {}", s.name)),
                Some(r) if r.len() < 3 => missing.push(format!(
                    "rules of chain {FAMILY} {TABLE} {} ({} of 3)",
                    s.name,
                    r.len()
                )),
                Some(_) => {}
            }
            let el = Element::ip(ip);
            match query::get_element(&mut self.sock, FAMILY, TABLE, &s.name, &el)? {
                None => missing.push(format!("element {ip} of set {FAMILY} {TABLE} {}", s.name)),
                Some(e) if e.comment.as_deref() != Some(comment.as_str()) => missing.push(format!(
                    "element {ip} of set {FAMILY} {TABLE} {} belongs to {:?}, not {comment:?}",
                    s.name,
                    e.comment.unwrap_or_default()
                )),
                Some(_) => {}
            }
        }
        Ok(missing)
    }

    /// Elements for the target IPs in subnet sets other than the target's.
    fn elements_elsewhere(
        &mut self,
        targets: &[(Element, usize)],
        subnets: &[Subnet],
    ) -> Result<Vec<SetElement>> {
        let existing = self.subnets()?;
        let mut found = Vec::new();
        for (el, si) in targets {
            let Some(ip) = el.key_ip() else { continue };
            for s in existing
                .iter()
                .filter(|s| s.name != subnets[*si].name && s.contains(&ip))
            {
                if let Some(e) = query::get_element(&mut self.sock, FAMILY, TABLE, &s.name, el)? {
                    found.push(SetElement {
                        set: s.name.clone(),
                        element: e,
                    });
                }
            }
        }
        Ok(found)
    }

    /// Subnets present in the table (empty if there is no table).
    fn subnets(&mut self) -> Result<Vec<Subnet>> {
        list_subnets(&mut self.sock)
    }

    fn elements(&mut self, subnets: &[Subnet]) -> Result<Vec<SetElement>> {
        let sets: Vec<&str> = subnets.iter().map(|s| s.name.as_str()).collect();
        ELEMENTS.dump(&mut self.sock, &sets)
    }
}

fn to_entry(l: &SetElement) -> Option<MasqEntry> {
    let (network, container_id, ifname) = parse_owner(l.element.comment.as_deref()?)?;
    Some(MasqEntry {
        ip: l.element.key_ip()?,
        network: network.into(),
        container_id: container_id.into(),
        ifname: ifname.into(),
        subnet: l.set.clone(),
    })
}

/// The subnet sets of our table.
fn list_subnets(sock: &mut NftSocket) -> Result<Vec<Subnet>> {
    Ok(query::list_sets(sock, FAMILY, TABLE)?
        .into_iter()
        .filter_map(|name| {
            parse_subnet_name(&name).map(|(net, prefix)| Subnet { name, net, prefix })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_names_roundtrip() {
        let cases = [
            ("10.88.3.4", 16, "masq4-0a58-16"),
            ("10.88.3.4", 24, "masq4-0a5803-24"),
            ("10.88.3.4", 0, "masq4-0-0"),
            ("10.88.3.4", 32, "masq4-0a580304-32"),
            ("10.88.3.4", 30, "masq4-0a580304-30"),
            ("fd00::1", 64, "masq6-fd00000000000000-64"),
        ];
        for (ip, p, name) in cases {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(subnet_name(ip, p), name);
            assert_eq!(parse_subnet_name(name), Some((network_of(ip, p), p)));
        }
        assert_eq!(
            subnet_name("fd00::1".parse().unwrap(), 200),
            format!("masq6-fd{}01-128", "0".repeat(28))
        );
        for bad in [
            "masq4-0a58",
            "masq4-zz-8",
            "masq4-0a58-33",
            "masq4-0a5800-16",
            "postrouting",
            "masq6--1",
            "masq4-0a58-16x",
        ] {
            assert_eq!(parse_subnet_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn subnet_contains() {
        let s = Subnet::of("10.88.3.4".parse().unwrap(), 16);
        assert!(s.contains(&"10.88.200.1".parse().unwrap()));
        assert!(!s.contains(&"10.89.0.1".parse().unwrap()));
        assert!(!s.contains(&"::1".parse().unwrap()));
    }
}
