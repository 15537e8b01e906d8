//! `macspoofchk` for the bridge plugin: frames entering the bridge from a
//! protected host veth must carry the container's MAC as source. Our own
//! table in the bridge family:
//!
//! ```text
//! table bridge cni_rs {
//!     set spoofchk_ports {                 # protected host veths
//!         type ifname
//!         elements = { "veth1a2b3c4d" comment "<network> <containerID> <ifname>" }
//!     }
//!     set spoofchk_allowed {               # (host veth, container MAC)
//!         type ifname . ether_addr
//!         elements = { "veth1a2b3c4d" . 0a:58:0a:58:00:05 comment "<network> <containerID> <ifname>" }
//!     }
//!     set spoofchk_owners {                # owner index, never matched by packets
//!         type ifname
//!         elements = { "5d1c0e9a7b3f24e" comment "<network> <containerID> <ifname> veth1a2b3c4d 0a:58:0a:58:00:05" }
//!     }
//!     chain prerouting {
//!         type filter hook prerouting priority dstnat; policy accept;   # -300
//!         iifname @spoofchk_ports iifname . ether saddr != @spoofchk_allowed counter drop
//!     }
//! }
//! ```
//!
//! One static rule for all attachments, so an ADD or DEL only adds or
//! removes three set elements (one transaction) whatever the number of
//! containers, and the per-packet cost is two hash lookups. The reference
//! (go-nft, `table bridge nat`) instead creates two chains and four rules
//! per attachment with two `nft` execs; the filtering is the same: drop
//! what enters from the host veth with another source MAC.
//!
//! Ownership: every element carries the comment `<network> <containerID>
//! <ifname>` (as in [`crate::masq`]) so GC finds stale attachments. DEL
//! knows only that owner (it may come with an empty or dead netns), and
//! searching the sets by comment means dumping them, which the kernel does
//! in O(n^2) (each dump part re-walks the set from the start: 14 ms at
//! 5000 attachments). Hence the owner index: its key is the first 60 bits
//! of SHA-256(owner) in hex, and its comment names the host veth and MAC,
//! so DEL is three element lookups and one transaction.
//!
//! Concurrency: the table and sets are created with NLM_F_CREATE; the
//! chain is created with NLM_F_EXCL in the same transaction as its rule,
//! so the rule exists exactly once however many ADDs race. Elements are
//! added with NLM_F_EXCL: EEXIST means stale elements (a leaked attachment
//! whose host veth name was reused, or an earlier ADD of the same owner),
//! which are replaced in the same transaction as the new ones are added.

use cni_netlink::{fmt_mac, parse_mac_record};
use sha2::{Digest, Sha256};

use crate::batch::{Batch, Create, OpTags, Split};
use crate::error::{Error, Result};
use crate::expr::{load_ether_saddr, Expr, MetaKey, Verdict};
use crate::owner::{owner_comment, parse_owner, OwnedElements};
use crate::query;
use crate::retry;
use crate::socket::NftSocket;
use crate::sys::{IFNAMSIZ, NFT_REG_1, NFT_REG_2};
use crate::types::*;

pub const TABLE: &str = crate::tables::MAIN;
pub const FAMILY: Family = Family::Bridge;
const ELEMENTS: OwnedElements = OwnedElements {
    family: FAMILY,
    table: TABLE,
    op: "macspoofchk delete",
};
pub const CHAIN: &str = "prerouting";
pub const PORTS_SET: &str = "spoofchk_ports";
pub const ALLOWED_SET: &str = "spoofchk_allowed";
pub const OWNERS_SET: &str = "spoofchk_owners";
/// As the reference: nft's bridge `dstnat` (ebtables' nat PREROUTING), so
/// the check runs before bridge `filter` (-200) chains.
pub const PRIORITY: i32 = -300;
const RULE_COMMENT: &str =
    "cni-rs macspoofchk: drop frames from a protected port with a foreign source MAC";

/// One protected attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoofEntry {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub host_veth: String,
    pub mac: [u8; 6],
}

/// Index key of an owner: 15 hex digits (60 bits) of SHA-256, the longest
/// that fits an `ifname` key. A collision (another owner in the slot) makes
/// ADD fail; with a cryptographic hash it cannot be provoked on purpose and
/// by chance it takes ~10^9 attachments on one host to reach 50%.
fn index_key(owner: &str) -> String {
    let h = Sha256::digest(owner.as_bytes());
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    hex[..IFNAMSIZ - 1].to_string()
}

/// `<network> <containerID> <ifname> <hostVeth> <mac>`.
fn index_comment(owner: &str, host_veth: &str, mac: &[u8; 6]) -> String {
    format!("{owner} {host_veth} {}", fmt_mac(mac))
}

/// (owner, host veth, MAC) of an index comment.
fn parse_index(comment: &str) -> Option<(&str, &str, [u8; 6])> {
    let (rest, mac) = comment.rsplit_once(' ')?;
    let (owner, veth) = rest.rsplit_once(' ')?;
    parse_owner(owner)?;
    Some((owner, veth, parse_mac_record(mac)?))
}

/// The (network, containerID, ifname) an element of any of our sets
/// belongs to.
fn element_owner(e: &Element) -> Option<(&str, &str, &str)> {
    parse_owner(element_owner_str(e.comment.as_deref()?)?)
}

/// The `<network> <containerID> <ifname>` part of a comment of any of our
/// sets.
fn element_owner_str(c: &str) -> Option<&str> {
    match parse_owner(c) {
        Some(_) => Some(c),
        None => parse_index(c).map(|(o, _, _)| o),
    }
}

fn validate(network: &str, container_id: &str, ifname: &str, host_veth: &str) -> Result<String> {
    for (what, v) in [
        ("network name", network),
        ("container ID", container_id),
        ("interface name", ifname),
    ] {
        if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c == '\0') {
            return Err(Error::Invalid(format!(
                "macspoofchk: {what} {v:?} is empty or contains whitespace; it cannot be recorded in an nftables comment"
            )));
        }
    }
    if host_veth.is_empty()
        || host_veth.len() >= IFNAMSIZ
        || host_veth.contains(|c: char| c.is_whitespace() || c == '/' || c == ':' || c == '\0')
    {
        return Err(Error::Invalid(format!(
            "macspoofchk: host interface name {host_veth:?} is not a valid interface name"
        )));
    }
    let owner = owner_comment(network, container_id, ifname);
    let longest = index_comment(&owner, host_veth, &[0; 6]).len();
    if longest > crate::MAX_COMMENT {
        return Err(Error::Invalid(format!(
            "macspoofchk: network name + container ID + ifname + host veth + MAC are {longest} bytes, more than the {} an nftables comment holds; shorten the network name",
            crate::MAX_COMMENT
        )));
    }
    Ok(owner)
}

fn set_spec(name: &str, key: KeyType) -> SetSpec {
    SetSpec::new(FAMILY, TABLE, name, key)
}

/// The table, the three sets, and the chain (exclusive) with its one
/// rule; returns the op index of the chain creation, or `None` if
/// `chain_exists`.
fn push_infra(b: &mut Batch, chain_exists: bool) -> Option<usize> {
    b.add_table(FAMILY, TABLE, Create::IfMissing);
    b.add_set(&set_spec(PORTS_SET, KeyType::IfName), Create::IfMissing);
    b.add_set(
        &set_spec(
            ALLOWED_SET,
            KeyType::Concat(vec![KeyType::IfName, KeyType::EtherAddr]),
        ),
        Create::IfMissing,
    );
    b.add_set(&set_spec(OWNERS_SET, KeyType::IfName), Create::IfMissing);
    if chain_exists {
        return None;
    }
    let i = b.add_chain(
        &ChainSpec {
            family: FAMILY,
            table: TABLE.into(),
            name: CHAIN.into(),
            base: Some(BaseChain {
                hook: Hook::Prerouting,
                priority: PRIORITY,
                chain_type: ChainType::Filter,
                policy: Some(Verdict::Accept),
            }),
            comment: Some("cni-rs macspoofchk".into()),
        },
        Create::Exclusive,
    );
    b.add_rule(&RuleSpec {
        family: FAMILY,
        table: TABLE.into(),
        chain: CHAIN.into(),
        exprs: spoofchk_rule(),
        comment: Some(RULE_COMMENT.into()),
        append: true,
    });
    Some(i)
}

/// `iifname @spoofchk_ports iifname . ether saddr != @spoofchk_allowed
/// counter drop`, encoded exactly as nft 1.0.6 does (so `nft list` prints
/// it back): the concatenation is iifname in reg 1 (16 bytes) followed by
/// the MAC in reg 2, looked up as one 24-byte key.
pub fn spoofchk_rule() -> Vec<Expr> {
    let iifname = || Expr::Meta {
        key: MetaKey::IifName,
        dreg: NFT_REG_1,
    };
    vec![
        iifname(),
        Expr::Lookup {
            set: PORTS_SET.into(),
            sreg: NFT_REG_1,
            dreg: None,
            invert: false,
        },
        iifname(),
        load_ether_saddr(NFT_REG_2),
        Expr::Lookup {
            set: ALLOWED_SET.into(),
            sreg: NFT_REG_1,
            dreg: None,
            invert: true,
        },
        Expr::Counter,
        Expr::Immediate(Verdict::Drop),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Chain,
    DelStale,
    AddPort,
    AddIndex,
    Other,
}

fn push_unique(out: &mut Vec<SetElement>, set: &str, element: Element) {
    if !out
        .iter()
        .any(|l| l.set == set && l.element.key == element.key)
    {
        out.push(SetElement {
            set: set.into(),
            element,
        });
    }
}

/// The MAC spoof check state of this host (or network namespace).
pub struct SpoofChk {
    sock: NftSocket,
}

impl SpoofChk {
    /// Opens a netlink socket in the calling thread's network namespace.
    pub fn new() -> Result<Self> {
        Ok(SpoofChk {
            sock: NftSocket::new()?,
        })
    }

    /// Drops frames entering from `host_veth` whose source MAC is not
    /// `mac`. One transaction of three element adds in the steady state;
    /// creates the table on first use. Replaces stale elements of the same
    /// host veth name (a leaked attachment whose name was reused) and of
    /// an earlier ADD of the same owner.
    pub fn add(
        &mut self,
        network: &str,
        container_id: &str,
        ifname: &str,
        host_veth: &str,
        mac: [u8; 6],
    ) -> Result<()> {
        let owner = validate(network, container_id, ifname, host_veth)?;
        let port = Element::ifname(host_veth).with_comment(owner.clone());
        let allowed = Element::ifname_ether(host_veth, mac).with_comment(owner.clone());
        let index = Element::ifname(&index_key(&owner))
            .with_comment(index_comment(&owner, host_veth, &mac));

        let mut infra = false;
        let mut chain_exists = false;
        let mut stale: Vec<SetElement> = Vec::new();
        retry::rejected("macspoofchk add", || {
            let mut b = Batch::new();
            let mut tags = OpTags::new(Tag::Other);
            if infra {
                if let Some(i) = push_infra(&mut b, chain_exists) {
                    tags.set(i, Tag::Chain);
                }
            }
            for l in &stale {
                tags.set(
                    b.del_element(FAMILY, TABLE, &l.set, &l.element),
                    Tag::DelStale,
                );
            }
            let i = b.add_element(FAMILY, TABLE, PORTS_SET, &port, Create::Exclusive);
            tags.set(i, Tag::AddPort);
            let i = b.add_element(FAMILY, TABLE, ALLOWED_SET, &allowed, Create::Exclusive);
            tags.set(i, Tag::AddPort);
            let i = b.add_element(FAMILY, TABLE, OWNERS_SET, &index, Create::Exclusive);
            tags.set(i, Tag::AddIndex);

            let Some(err) = b.try_commit(&mut self.sock)? else {
                return Ok(Ok(()));
            };
            let (mut port_taken, mut index_taken, mut restale) = (false, false, false);
            for f in err.failures() {
                match (tags.get(f.index), f.errno) {
                    (Tag::Chain, libc::EEXIST) => chain_exists = true,
                    (Tag::AddPort, libc::EEXIST) => port_taken = true,
                    (Tag::AddIndex, libc::EEXIST) => index_taken = true,
                    (Tag::AddPort | Tag::AddIndex, libc::ENOENT) => {
                        // Table or a set missing: first use (or removed by
                        // an admin); create what this attempt assumed.
                        if infra {
                            chain_exists = false;
                        }
                        infra = true;
                    }
                    // Deleted meanwhile (a racing DEL/GC): look again.
                    (Tag::DelStale, libc::ENOENT) => restale = true,
                    _ => return Err(err),
                }
            }
            if restale {
                stale.clear();
            }
            if port_taken || restale {
                self.stale_of_port(host_veth, &mut stale)?;
            }
            if index_taken || restale {
                self.stale_of_owner(&owner, &mut stale)?;
            }
            Ok(Err(err))
        })
    }

    /// Removes this attachment's elements, found through the owner index:
    /// three lookups and one transaction, whatever the number of
    /// attachments. Elements are deleted only if they still name this
    /// owner. Succeeds when nothing (not even the table) exists.
    pub fn del(&mut self, network: &str, container_id: &str, ifname: &str) -> Result<()> {
        let owner = owner_comment(network, container_id, ifname);
        let mut victims = Vec::new();
        // A slot held by another owner means this one was never indexed
        // (its ADD failed): nothing to delete.
        self.indexed(&owner, &mut victims)?;
        self.delete_elements(victims)
    }

    /// Deletes every element of `network` whose (container ID, ifname) is
    /// not in `valid` (dumps the sets: GC is rare). Returns the removed
    /// attachments (those with an allowed MAC).
    pub fn gc(
        &mut self,
        network: &str,
        keep: &dyn Fn(&str, &str) -> bool,
    ) -> Result<Vec<SpoofEntry>> {
        let mut victims = Vec::new();
        for l in self.elements()? {
            let Some((net, cid, ifn)) = element_owner(&l.element) else {
                continue;
            };
            if net == network && !keep(cid, ifn) {
                victims.push(l);
            }
        }
        let removed = victims.iter().filter_map(to_entry).collect();
        self.delete_elements(victims)?;
        Ok(removed)
    }

    /// Protected attachments of `network` (all networks if `None`).
    pub fn list(&mut self, network: Option<&str>) -> Result<Vec<SpoofEntry>> {
        Ok(self
            .elements()?
            .iter()
            .filter_map(to_entry)
            .filter(|e| network.is_none_or(|n| e.network == n))
            .collect())
    }

    fn get(&mut self, set: &'static str, key: &Element) -> Result<Option<Element>> {
        query::get_element(&mut self.sock, FAMILY, TABLE, set, key)
    }

    /// Adds to `out` the index element of `owner` and the port and allowed
    /// elements it points to, each only if it names `owner`. Returns the
    /// other owner holding the slot (a hash collision), if any.
    fn indexed(&mut self, owner: &str, out: &mut Vec<SetElement>) -> Result<Option<String>> {
        let key = Element::ifname(&index_key(owner));
        let Some(ix) = self.get(OWNERS_SET, &key)? else {
            return Ok(None);
        };
        let Some((o, veth, mac)) = ix.comment.as_deref().and_then(parse_index) else {
            // Not written by us: free the slot.
            push_unique(out, OWNERS_SET, ix);
            return Ok(None);
        };
        if o != owner {
            return Ok(Some(o.to_string()));
        }
        let veth = veth.to_string();
        push_unique(out, OWNERS_SET, ix);
        let mine = |e: &Element| e.comment.as_deref() == Some(owner);
        if let Some(p) = self.get(PORTS_SET, &Element::ifname(&veth))?.filter(mine) {
            push_unique(out, PORTS_SET, p);
        }
        if let Some(a) = self
            .get(ALLOWED_SET, &Element::ifname_ether(&veth, mac))?
            .filter(mine)
        {
            push_unique(out, ALLOWED_SET, a);
        }
        Ok(None)
    }

    /// Stale state of an earlier ADD of the same owner (its index slot is
    /// taken); an error if another owner holds the slot.
    fn stale_of_owner(&mut self, owner: &str, out: &mut Vec<SetElement>) -> Result<()> {
        match self.indexed(owner, out)? {
            None => Ok(()),
            Some(other) => Err(Error::Invalid(format!(
                "macspoofchk: the owner index slot {:?} of {owner:?} is held by {other:?} (hash collision); DEL that attachment first",
                index_key(owner)
            ))),
        }
    }

    /// Stale state on a reused host veth name: its port element, every
    /// allowed MAC of it (a dump, but only on this rare path, so that no
    /// old MAC can stay allowed), and the index entry of its old owner.
    fn stale_of_port(&mut self, host_veth: &str, out: &mut Vec<SetElement>) -> Result<()> {
        let key = Element::ifname(host_veth);
        if let Some(p) = self.get(PORTS_SET, &key)? {
            if let Some(old) = p.comment.as_deref().filter(|c| parse_owner(c).is_some()) {
                let ix_key = Element::ifname(&index_key(old));
                if let Some(ix) = self.get(OWNERS_SET, &ix_key)? {
                    if ix
                        .comment
                        .as_deref()
                        .and_then(parse_index)
                        .is_some_and(|(o, v, _)| o == old && v == host_veth)
                    {
                        push_unique(out, OWNERS_SET, ix);
                    }
                }
            }
            push_unique(out, PORTS_SET, p);
        }
        for e in
            query::list_elements(&mut self.sock, FAMILY, TABLE, ALLOWED_SET)?.unwrap_or_default()
        {
            if e.key.starts_with(&key.key) {
                push_unique(out, ALLOWED_SET, e);
            }
        }
        Ok(())
    }

    /// Every element of the three sets (empty if the table does not exist).
    fn elements(&mut self) -> Result<Vec<SetElement>> {
        ELEMENTS.dump(&mut self.sock, &[PORTS_SET, ALLOWED_SET, OWNERS_SET])
    }

    /// Deletes `victims` (vanished ones are skipped), all of one owner in the same
    /// transaction, in transactions of about [`crate::batch::DELETE_CHUNK`] elements.
    fn delete_elements(&mut self, mut victims: Vec<SetElement>) -> Result<()> {
        fn owner(e: &Element) -> Option<&str> {
            e.comment.as_deref().and_then(element_owner_str)
        }
        victims.sort_by_cached_key(|l| owner(&l.element).map(str::to_string));
        ELEMENTS.delete(
            &mut self.sock,
            victims,
            Split::ChunksKeeping(&|a, b| owner(a) == owner(b)),
        )
    }
}

fn to_entry(l: &SetElement) -> Option<SpoofEntry> {
    if l.set != ALLOWED_SET {
        return None;
    }
    let (network, container_id, ifname) = parse_owner(l.element.comment.as_deref()?)?;
    let (host_veth, mac) = l.element.key_ifname_ether()?;
    Some(SpoofEntry {
        network: network.into(),
        container_id: container_id.into(),
        ifname: ifname.into(),
        host_veth,
        mac,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(validate("net", "c1", "eth0", "veth01234567").is_ok());
        assert!(validate("net", "c 1", "eth0", "veth1").is_err());
        assert!(validate("", "c1", "eth0", "veth1").is_err());
        // Fits the 3-field comment, not the index comment.
        assert!(validate(&"n".repeat(170), &"c".repeat(64), "eth0", "veth1").is_err());
        for bad in ["", "veth0123456789ab", "a/b", "a b", "a:b"] {
            assert!(validate("net", "c1", "eth0", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn index_comment_roundtrip() {
        let mac = [0x0a, 0x58, 0, 0, 0xff, 5];
        let c = index_comment("net c1 eth0", "veth1", &mac);
        assert_eq!(c, "net c1 eth0 veth1 0a:58:00:00:ff:05");
        assert_eq!(parse_index(&c), Some(("net c1 eth0", "veth1", mac)));
        let e = Element::ifname("x").with_comment(c);
        assert_eq!(element_owner(&e), Some(("net", "c1", "eth0")));
        assert_eq!(parse_index("net c1 eth0 veth1"), None);
        assert_eq!(parse_index("net c1 eth0 veth1 0a:58:00:00:ff"), None);
        assert_eq!(parse_mac_record("0a:58:00:00:ff:05:00"), None);
        let k = index_key("net c1 eth0");
        assert_eq!(k.len(), 15);
        assert_ne!(k, index_key("net c1 eth1"));
    }

    #[test]
    fn entry_from_allowed_element_only() {
        let c = owner_comment("net", "c1", "eth0");
        let mac = [0x0a, 0x58, 0, 0, 0, 5];
        let allowed = SetElement {
            set: ALLOWED_SET.into(),
            element: Element::ifname_ether("veth1", mac).with_comment(c.clone()),
        };
        assert_eq!(
            to_entry(&allowed),
            Some(SpoofEntry {
                network: "net".into(),
                container_id: "c1".into(),
                ifname: "eth0".into(),
                host_veth: "veth1".into(),
                mac,
            })
        );
        let port = SetElement {
            set: PORTS_SET.into(),
            element: Element::ifname("veth1").with_comment(c),
        };
        assert_eq!(to_entry(&port), None);
    }
}
