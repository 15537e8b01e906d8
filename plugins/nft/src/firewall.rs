//! State of the `firewall` plugin, in its own table `inet cni_rs_fw`:
//!
//! ```text
//! table inet cni_rs_fw {
//!     set allow4   { type ipv4_addr; }            # every container IP (per attachment)
//!     set allow6   { type ipv6_addr; }
//!     set iso4     { type ipv4_addr; }            # IPs with ingressPolicy same-bridge
//!     set iso6     { type ipv6_addr; }
//!     set iso4_br  { type ifname . ipv4_addr; }   # (their bridge, IP)
//!     set iso6_br  { type ifname . ipv6_addr; }
//!     chain forward {
//!         type filter hook forward priority filter; policy accept;
//!         ip daddr @iso4 iifname . ip daddr != @iso4_br ct state & (established|related) == 0
//!             ct status & dnat == 0 counter drop
//!         (the same for ip6)
//!         jump admin
//!         ip saddr @allow4 counter accept
//!         ip daddr @allow4 ct state established,related counter accept
//!         (the same for ip6)
//!     }
//!     chain admin { jump CNI-ADMIN }              # one jump per iptablesAdminChainName
//!     chain CNI-ADMIN { }                         # the admin's; never written by us
//! }
//! ```
//!
//! Every element carries the comment `"<network> <containerID> <ifname>"` (as in
//! [`crate::masq`]), so DEL without prevResult and GC find them by owner. The chains are static:
//! an ADD or DEL is one transaction of element operations whatever the number of containers.
//!
//! Why a drop and accepts here do what the reference's iptables rules do: in nf_tables a drop in
//! any table is final, so the isolation drop works whatever other tables say. An accept only
//! ends this table's chain; where iptables-nft's `filter` would drop forwarded traffic (dockerd's
//! FORWARD policy), the plugin additionally calls [`crate::forward::ensure_iface_accept`].
//!
//! Concurrency: as in [`crate::masq`]: the table, sets and `admin` chain are created with
//! NLM_F_CREATE (no-op when present); the `forward` chain with NLM_F_EXCL in the same
//! transaction as its rules, so it exists iff its rules do; an admin chain likewise together
//! with its jump. EEXIST on such a chain means another ADD won the race and the batch is retried
//! without it. Elements are added with NLM_F_EXCL; EEXIST means a stale element for a reused
//! IP, which is replaced (delete + add in one batch).

use std::collections::HashSet;
use std::net::IpAddr;

use crate::batch::{Batch, Create, OpTags, Split};
use crate::error::{Error, Result};
use crate::expr::{
    load_addr, match_ct_bits, match_nfproto, Expr, MetaKey, Verdict, CT_STATE_ESTABLISHED_RELATED,
    CT_STATUS_DNAT, NFT_CT_STATE, NFT_CT_STATUS,
};
use crate::owner::{owner_comment, parse_owner, validate_owner, OwnedElements};
use crate::query;
use crate::retry;
use crate::socket::NftSocket;
use crate::sys::{IFNAMSIZ, NFT_REG_1, NFT_REG_2};
use crate::types::*;

pub const TABLE: &str = crate::tables::FIREWALL;
pub const FAMILY: Family = Family::Inet;
const ELEMENTS: OwnedElements = OwnedElements {
    family: FAMILY,
    table: TABLE,
    op: "firewall delete",
};
pub const FORWARD: &str = "forward";
pub const ADMIN: &str = "admin";
/// The reference's default `iptablesAdminChainName`.
pub const DEFAULT_ADMIN_CHAIN: &str = "CNI-ADMIN";
/// Rules of the `forward` chain (CHECK compares the count).
const FORWARD_RULES: usize = 7;

/// What a set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Allow,
    Iso,
    IsoBridge,
}

fn set_name(kind: Kind, v6: bool) -> &'static str {
    match (kind, v6) {
        (Kind::Allow, false) => "allow4",
        (Kind::Allow, true) => "allow6",
        (Kind::Iso, false) => "iso4",
        (Kind::Iso, true) => "iso6",
        (Kind::IsoBridge, false) => "iso4_br",
        (Kind::IsoBridge, true) => "iso6_br",
    }
}

fn set_specs() -> Vec<SetSpec> {
    let mut v = Vec::new();
    for v6 in [false, true] {
        let ip = if v6 {
            KeyType::Ipv6Addr
        } else {
            KeyType::Ipv4Addr
        };
        for (kind, key) in [
            (Kind::Allow, ip.clone()),
            (Kind::Iso, ip.clone()),
            (Kind::IsoBridge, KeyType::Concat(vec![KeyType::IfName, ip])),
        ] {
            v.push(SetSpec::new(FAMILY, TABLE, set_name(kind, v6), key));
        }
    }
    v
}

/// One attachment as the firewall sees it.
#[derive(Debug, Clone)]
pub struct Attachment<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
    /// The container's IPs (prevResult).
    pub ips: &'a [IpAddr],
    /// `ingressPolicy: same-bridge`: the container's bridge, the only interface allowed to
    /// initiate connections to the IPs.
    pub same_bridge: Option<&'a str>,
    /// `iptablesAdminChainName` (default [`DEFAULT_ADMIN_CHAIN`]).
    pub admin_chain: &'a str,
}

/// One element of the firewall state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwEntry {
    pub set: String,
    /// The key as nft would print it (`10.88.0.5`, `"br0" . 10.88.0.5`).
    pub key: String,
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

/// Checks an `iptablesAdminChainName`: an iptables chain name (at most 28 characters, no
/// whitespace) that is not one of our own chains.
pub fn validate_admin_chain(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 28
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::Invalid(format!(
            "iptablesAdminChainName {name:?} is not a valid chain name (1-28 characters, no whitespace)"
        )));
    }
    if name == FORWARD || name == ADMIN {
        return Err(Error::Invalid(format!(
            "iptablesAdminChainName {name:?} is reserved by the firewall plugin's table {FAMILY} {TABLE}; choose another name"
        )));
    }
    Ok(())
}

fn validate_bridge(name: &str) -> Result<()> {
    if name.is_empty() || name.len() >= IFNAMSIZ || name.contains(['/', ':', ' ', '\0']) {
        return Err(Error::Invalid(format!(
            "firewall: bridge name {name:?} from prevResult is not a valid interface name"
        )));
    }
    Ok(())
}

/// The elements an attachment owns: (set, element with comment).
fn wanted(a: &Attachment<'_>, comment: &str) -> Vec<(&'static str, Element)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for ip in a.ips.iter().filter(|ip| seen.insert(**ip)) {
        let v6 = ip.is_ipv6();
        out.push((
            set_name(Kind::Allow, v6),
            Element::ip(*ip).with_comment(comment),
        ));
        if let Some(br) = a.same_bridge {
            out.push((
                set_name(Kind::Iso, v6),
                Element::ip(*ip).with_comment(comment),
            ));
            out.push((
                set_name(Kind::IsoBridge, v6),
                Element::ifname_ip(br, *ip).with_comment(comment),
            ));
        }
    }
    out
}

fn rule(chain: &str, exprs: Vec<Expr>, comment: &str) -> RuleSpec {
    RuleSpec {
        family: FAMILY,
        table: TABLE.into(),
        chain: chain.into(),
        exprs,
        comment: Some(comment.into()),
        append: true,
    }
}

fn nfproto(v6: bool) -> [Expr; 2] {
    match_nfproto(if v6 {
        libc::AF_INET6 as u8
    } else {
        libc::AF_INET as u8
    })
}

fn lookup(set: &str, invert: bool) -> Expr {
    Expr::Lookup {
        set: set.into(),
        sreg: NFT_REG_1,
        dreg: None,
        invert,
    }
}

/// The `forward` chain (exclusive) and its rules; returns the op index of the chain.
fn push_forward(b: &mut Batch) -> usize {
    let op = b.add_chain(
        &ChainSpec {
            family: FAMILY,
            table: TABLE.into(),
            name: FORWARD.into(),
            base: Some(BaseChain {
                hook: Hook::Forward,
                priority: priority::FILTER,
                chain_type: ChainType::Filter,
                policy: Some(Verdict::Accept),
            }),
            comment: Some("cni-rs firewall plugin".into()),
        },
        Create::Exclusive,
    );
    for v6 in [false, true] {
        let mut e: Vec<Expr> = nfproto(v6).into();
        e.push(load_addr(v6, true, NFT_REG_1));
        e.push(lookup(set_name(Kind::Iso, v6), false));
        e.push(Expr::Meta {
            key: MetaKey::IifName,
            dreg: NFT_REG_1,
        });
        e.push(load_addr(v6, true, NFT_REG_2));
        e.push(lookup(set_name(Kind::IsoBridge, v6), true));
        e.extend(match_ct_bits(
            NFT_CT_STATE,
            CT_STATE_ESTABLISHED_RELATED,
            false,
        ));
        e.extend(match_ct_bits(NFT_CT_STATUS, CT_STATUS_DNAT, false));
        e.extend([Expr::Counter, Expr::Immediate(Verdict::Drop)]);
        b.add_rule(&rule(
            FORWARD,
            e,
            "ingressPolicy same-bridge: only its own bridge may open connections to it",
        ));
    }
    b.add_rule(&rule(
        FORWARD,
        vec![Expr::Immediate(Verdict::Jump(ADMIN.into()))],
        "admin overrides (iptablesAdminChainName)",
    ));
    for v6 in [false, true] {
        let allow = set_name(Kind::Allow, v6);
        let mut from: Vec<Expr> = nfproto(v6).into();
        from.extend([
            load_addr(v6, false, NFT_REG_1),
            lookup(allow, false),
            Expr::Counter,
            Expr::Immediate(Verdict::Accept),
        ]);
        b.add_rule(&rule(FORWARD, from, "from the container"));
        let mut to: Vec<Expr> = nfproto(v6).into();
        to.extend([load_addr(v6, true, NFT_REG_1), lookup(allow, false)]);
        to.extend(match_ct_bits(
            NFT_CT_STATE,
            CT_STATE_ESTABLISHED_RELATED,
            true,
        ));
        to.extend([Expr::Counter, Expr::Immediate(Verdict::Accept)]);
        b.add_rule(&rule(FORWARD, to, "replies to the container"));
    }
    op
}

/// An admin chain (exclusive) and the jump to it from `admin`; returns the chain's op index.
fn push_admin_chain(b: &mut Batch, name: &str) -> usize {
    let op = b.add_chain(
        &ChainSpec {
            family: FAMILY,
            table: TABLE.into(),
            name: name.into(),
            base: None,
            comment: Some("admin rules, evaluated before the firewall plugin's accepts".into()),
        },
        Create::Exclusive,
    );
    push_admin_jump(b, name);
    op
}

/// The jump from `admin` to an admin chain, commented with the chain's name.
fn push_admin_jump(b: &mut Batch, name: &str) {
    b.add_rule(&rule(
        ADMIN,
        vec![Expr::Immediate(Verdict::Jump(name.into()))],
        name,
    ));
}

#[derive(Debug, Clone, Copy)]
enum Tag {
    Forward,
    AdminChain,
    AddElem(usize),
    DelElem(usize),
    Other,
}

/// The firewall state of this host (or network namespace).
pub struct Firewall {
    sock: NftSocket,
}

impl Firewall {
    /// Opens a netlink socket in the calling thread's network namespace.
    pub fn new() -> Result<Self> {
        Ok(Firewall {
            sock: NftSocket::new()?,
        })
    }

    /// Adds the attachment's elements (and on first use the table, sets and chains) in one
    /// transaction. Replaces elements a previous owner of the same IP left behind.
    pub fn add(&mut self, a: &Attachment<'_>) -> Result<()> {
        let comment = validate_owner("firewall", a.network, a.container_id, a.ifname)?;
        validate_admin_chain(a.admin_chain)?;
        if let Some(br) = a.same_bridge {
            validate_bridge(br)?;
        }
        let targets = wanted(a, &comment);
        // Fast path: `admin` jumps to the admin chain (so that chain exists) and `forward`
        // holds all its rules. A table flushed by hand (`nft flush table`) keeps its chains
        // without their rules: `forward` is then rebuilt and the jump added again.
        let jump = self.admin_jump_exists(a.admin_chain)?;
        let mut need_admin =
            !jump && !query::chain_exists(&mut self.sock, FAMILY, TABLE, a.admin_chain)?;
        let need_jump = !jump && !need_admin;
        let flushed = query::list_rules(&mut self.sock, FAMILY, TABLE, FORWARD)?
            .is_some_and(|r| r.len() < FORWARD_RULES);
        let mut infra = need_admin || flushed;
        let mut forward_exists = false;
        let mut replace = vec![false; targets.len()];
        retry::rejected("firewall add", || {
            let mut b = Batch::new();
            let mut tags = OpTags::new(Tag::Other);
            if infra {
                b.add_table(FAMILY, TABLE, Create::IfMissing);
                for s in set_specs() {
                    b.add_set(&s, Create::IfMissing);
                }
                b.add_chain(
                    &ChainSpec {
                        family: FAMILY,
                        table: TABLE.into(),
                        name: ADMIN.into(),
                        base: None,
                        comment: Some("jumps to the iptablesAdminChainName chains".into()),
                    },
                    Create::IfMissing,
                );
                if flushed {
                    b.del_chain(FAMILY, TABLE, FORWARD);
                }
                if !forward_exists || flushed {
                    let i = push_forward(&mut b);
                    tags.set(i, Tag::Forward);
                }
            }
            if need_admin {
                let i = push_admin_chain(&mut b, a.admin_chain);
                tags.set(i, Tag::AdminChain);
            } else if need_jump {
                push_admin_jump(&mut b, a.admin_chain);
            }
            for (ei, (set, el)) in targets.iter().enumerate() {
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
                    (Tag::Forward, libc::EEXIST) => forward_exists = true,
                    (Tag::AdminChain, libc::EEXIST) => need_admin = false,
                    (Tag::AddElem(ei), libc::EEXIST | libc::EBUSY) => replace[ei] = true,
                    (Tag::AddElem(_), libc::ENOENT) => {
                        // Table or set missing (first use, or deleted by hand).
                        if infra {
                            forward_exists = false;
                        }
                        infra = true;
                    }
                    (Tag::DelElem(ei), libc::ENOENT) => replace[ei] = false,
                    _ => return Err(err),
                }
            }
            Ok(Err(err))
        })
    }

    /// What of the attachment's state is missing or owned by someone else, as readable
    /// descriptions; empty when everything is in place. Read-only.
    pub fn check(&mut self, a: &Attachment<'_>) -> Result<Vec<String>> {
        let comment = validate_owner("firewall", a.network, a.container_id, a.ifname)?;
        validate_admin_chain(a.admin_chain)?;
        let mut missing = Vec::new();
        match query::list_rules(&mut self.sock, FAMILY, TABLE, FORWARD)? {
            None => {
                missing.push(format!("chain {FAMILY} {TABLE} {FORWARD}"));
                return Ok(missing);
            }
            Some(r) if r.len() < FORWARD_RULES => missing.push(format!(
                "rules of chain {FAMILY} {TABLE} {FORWARD} ({} of {FORWARD_RULES})",
                r.len()
            )),
            Some(_) => {}
        }
        if !query::chain_exists(&mut self.sock, FAMILY, TABLE, a.admin_chain)? {
            missing.push(format!("chain {FAMILY} {TABLE} {}", a.admin_chain));
        } else if !self.admin_jump_exists(a.admin_chain)? {
            missing.push(format!(
                "the jump to {} in chain {FAMILY} {TABLE} {ADMIN}",
                a.admin_chain
            ));
        }
        for (set, el) in wanted(a, &comment) {
            match query::get_element(&mut self.sock, FAMILY, TABLE, set, &el)? {
                None => missing.push(format!(
                    "element {} of set {FAMILY} {TABLE} {set}",
                    el.key_label()
                )),
                Some(e) if e.comment != el.comment => missing.push(format!(
                    "element {} of set {FAMILY} {TABLE} {set} belongs to {:?}, not {comment:?}",
                    el.key_label(),
                    e.comment.unwrap_or_default()
                )),
                Some(_) => {}
            }
        }
        Ok(missing)
    }

    /// Removes this attachment's elements, and only those (an element whose comment names
    /// another owner is left alone). With `ips` (prevResult) the elements are looked up by
    /// key; without, every set is searched by owner. `bridge` (prevResult) saves a dump of the
    /// `iso*_br` sets. Succeeds when nothing, not even the table, exists.
    pub fn del(
        &mut self,
        network: &str,
        container_id: &str,
        ifname: &str,
        ips: Option<&[IpAddr]>,
        bridge: Option<&str>,
    ) -> Result<()> {
        let owner = owner_comment(network, container_id, ifname);
        let mine = |e: &Element| e.comment.as_deref() == Some(owner.as_str());
        let mut victims = Vec::new();
        let mut push = |set: &str, element| {
            victims.push(SetElement {
                set: set.into(),
                element,
            })
        };
        match ips {
            Some(ips) => {
                let mut seen = HashSet::new();
                for ip in ips.iter().filter(|ip| seen.insert(**ip)) {
                    let v6 = ip.is_ipv6();
                    let mut keys = vec![
                        (set_name(Kind::Allow, v6), Element::ip(*ip)),
                        (set_name(Kind::Iso, v6), Element::ip(*ip)),
                    ];
                    if let Some(br) = bridge.filter(|b| validate_bridge(b).is_ok()) {
                        keys.push((set_name(Kind::IsoBridge, v6), Element::ifname_ip(br, *ip)));
                    }
                    let mut iso_found = false;
                    for (set, key) in keys {
                        if let Some(e) =
                            query::get_element(&mut self.sock, FAMILY, TABLE, set, &key)?
                        {
                            if mine(&e) {
                                iso_found |= set == set_name(Kind::Iso, v6);
                                push(set, e);
                            }
                        }
                    }
                    if iso_found && bridge.is_none() {
                        let set = set_name(Kind::IsoBridge, v6);
                        let key_ip = Element::ip(*ip).key;
                        for e in self.elements(set)? {
                            if mine(&e) && e.key.ends_with(&key_ip) {
                                push(set, e);
                            }
                        }
                    }
                }
            }
            None => {
                for l in self.all_elements()? {
                    if mine(&l.element) {
                        push(&l.set, l.element);
                    }
                }
            }
        }
        ELEMENTS.delete(&mut self.sock, victims, Split::Never)
    }

    /// Deletes every element of `network` whose (container ID, ifname) `keep` rejects.
    /// Returns the removed entries.
    pub fn gc(&mut self, network: &str, keep: &dyn Fn(&str, &str) -> bool) -> Result<Vec<FwEntry>> {
        let mut removed = Vec::new();
        let mut victims = Vec::new();
        for l in self.all_elements()? {
            let Some(entry) = to_entry(&l) else {
                continue;
            };
            if entry.network == network && !keep(&entry.container_id, &entry.ifname) {
                removed.push(entry);
                victims.push(l);
            }
        }
        ELEMENTS.delete(&mut self.sock, victims, Split::Chunks)?;
        Ok(removed)
    }

    /// Entries of `network` (all networks if `None`).
    pub fn list(&mut self, network: Option<&str>) -> Result<Vec<FwEntry>> {
        Ok(self
            .all_elements()?
            .iter()
            .filter_map(to_entry)
            .filter(|e| network.is_none_or(|n| e.network == n))
            .collect())
    }

    /// Whether `admin` jumps to `admin_chain` (its rule is commented with the chain's name).
    fn admin_jump_exists(&mut self, admin_chain: &str) -> Result<bool> {
        Ok(query::list_rules(&mut self.sock, FAMILY, TABLE, ADMIN)?
            .is_some_and(|r| r.iter().any(|x| x.comment.as_deref() == Some(admin_chain))))
    }

    fn elements(&mut self, set: &str) -> Result<Vec<Element>> {
        Ok(query::list_elements(&mut self.sock, FAMILY, TABLE, set)?.unwrap_or_default())
    }

    fn all_elements(&mut self) -> Result<Vec<SetElement>> {
        let sets: Vec<String> = set_specs().into_iter().map(|s| s.name).collect();
        ELEMENTS.dump(&mut self.sock, &sets)
    }
}

fn to_entry(l: &SetElement) -> Option<FwEntry> {
    let (network, container_id, ifname) = parse_owner(l.element.comment.as_deref()?)?;
    Some(FwEntry {
        set: l.set.clone(),
        key: l.element.key_label(),
        network: network.into(),
        container_id: container_id.into(),
        ifname: ifname.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_chain_names() {
        assert!(validate_admin_chain("CNI-ADMIN").is_ok());
        assert!(validate_admin_chain("").is_err());
        assert!(validate_admin_chain("a b").is_err());
        assert!(validate_admin_chain(&"x".repeat(29)).is_err());
        assert!(validate_admin_chain("forward").is_err());
    }

    #[test]
    fn wanted_elements() {
        let ips: Vec<IpAddr> = vec![
            "10.0.0.2".parse().unwrap(),
            "fd00::2".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
        ];
        let mut a = Attachment {
            network: "n",
            container_id: "c",
            ifname: "eth0",
            ips: &ips,
            same_bridge: None,
            admin_chain: DEFAULT_ADMIN_CHAIN,
        };
        let sets: Vec<&str> = wanted(&a, "n c eth0").iter().map(|(s, _)| *s).collect();
        assert_eq!(sets, ["allow4", "allow6"]);
        a.same_bridge = Some("br0");
        let w = wanted(&a, "n c eth0");
        assert_eq!(w.len(), 6);
        assert_eq!(w[2].1.key_label(), "\"br0\" . 10.0.0.2");
        assert_eq!(w[5].1.key_label(), "\"br0\" . fd00::2");
        assert_eq!(w[2].1.key.len(), 20);
        assert_eq!(w[5].1.key.len(), 32);
        assert_eq!(set_specs().len(), 6);
    }
}
