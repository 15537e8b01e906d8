//! Plain descriptions of nf_tables objects: families, chains, sets, set
//! elements and rules, as given to [`crate::Batch`] and returned by queries.

use std::fmt;
use std::net::IpAddr;

use crate::expr::{ifname_key, Expr, Verdict};
use crate::sys::*;

/// nf_tables address family (NFPROTO_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Inet,
    Ip,
    Ip6,
    Arp,
    Bridge,
    Netdev,
}

impl Family {
    pub fn raw(self) -> u8 {
        match self {
            Family::Inet => 1,
            Family::Ip => 2,
            Family::Arp => 3,
            Family::Netdev => 5,
            Family::Bridge => 7,
            Family::Ip6 => 10,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Arp => "arp",
            Family::Bridge => "bridge",
            Family::Netdev => "netdev",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Netfilter hook of a base chain (inet/ip/ip6 numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    pub fn raw(self) -> u32 {
        match self {
            Hook::Prerouting => 0,
            Hook::Input => 1,
            Hook::Forward => NF_INET_FORWARD,
            Hook::Output => 3,
            Hook::Postrouting => NF_INET_POST_ROUTING,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    Nat,
    Route,
}

impl ChainType {
    pub fn name(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
            ChainType::Route => "route",
        }
    }
}

/// Standard priorities (nft's `srcnat`, `filter`, ...).
pub mod priority {
    pub const FILTER: i32 = 0;
    pub const SRCNAT: i32 = 100;
    pub const DSTNAT: i32 = -100;
}

/// Hook, priority, type and policy of a base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    pub hook: Hook,
    pub priority: i32,
    pub chain_type: ChainType,
    /// `Some(Verdict::Accept | Verdict::Drop)`; `None` leaves the default
    /// (accept) or the existing policy.
    pub policy: Option<Verdict>,
}

/// A chain to create. `base: None` makes a regular chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSpec {
    pub family: Family,
    pub table: String,
    pub name: String,
    pub base: Option<BaseChain>,
    pub comment: Option<String>,
}

/// Key type of a set, in nft's datatype terms (so `nft list` prints them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyType {
    Ipv4Addr,
    Ipv6Addr,
    IfName,
    /// `inet_proto` (1 byte; padded to 4 inside a concatenation).
    InetProto,
    /// `inet_service` (a port, 2 bytes big endian; padded to 4 inside a concatenation).
    InetService,
    /// `ether_addr` (6 bytes; padded to 8 inside a concatenation).
    EtherAddr,
    /// `a . b . c`: concatenation; each field padded to 4 bytes.
    Concat(Vec<KeyType>),
}

impl KeyType {
    /// (nft datatype id, key length in bytes).
    pub fn raw(&self) -> (u32, u32) {
        match self {
            KeyType::Ipv4Addr => (NFT_TYPE_IPADDR, 4),
            KeyType::Ipv6Addr => (NFT_TYPE_IP6ADDR, 16),
            KeyType::IfName => (NFT_TYPE_IFNAME, IFNAMSIZ as u32),
            KeyType::InetProto => (NFT_TYPE_INET_PROTO, 1),
            KeyType::InetService => (NFT_TYPE_INET_SERVICE, 2),
            KeyType::EtherAddr => (NFT_TYPE_ETHERADDR, 6),
            KeyType::Concat(parts) => parts.iter().fold((0, 0), |(ty, len), p| {
                let (t, l) = p.raw();
                ((ty << NFT_TYPE_BITS) | t, len + ((l + 3) & !3))
            }),
        }
    }
}

impl KeyType {
    /// nft's key byte order (stored in the set's userdata so that `nft list`
    /// renders elements): 1 host (strings), 2 big endian (addresses), 0 for
    /// concatenations, as nft itself writes.
    pub(crate) fn nft_byteorder(&self) -> u32 {
        match self {
            KeyType::Ipv4Addr | KeyType::Ipv6Addr | KeyType::EtherAddr | KeyType::InetService => 2,
            KeyType::IfName | KeyType::InetProto => 1,
            KeyType::Concat(_) => 0,
        }
    }
}

/// A set or map to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    pub family: Family,
    pub table: String,
    pub name: String,
    pub key: KeyType,
    /// Makes it a verdict map (`type <key> : verdict`).
    pub verdict_map: bool,
    /// Makes it a data map (`type <key> : <data>`), e.g. `ipv4_addr . inet_service`.
    pub data: Option<KeyType>,
    /// Extra NFT_SET_* flags (e.g. interval); MAP/CONCAT are added as needed.
    pub flags: u32,
}

impl SetSpec {
    /// A plain set (no map, no extra flags) of `key`.
    pub fn new(family: Family, table: &str, name: &str, key: KeyType) -> Self {
        SetSpec {
            family,
            table: table.into(),
            name: name.into(),
            key,
            verdict_map: false,
            data: None,
            flags: 0,
        }
    }

    pub(crate) fn kernel_flags(&self) -> u32 {
        let mut f = self.flags;
        if self.verdict_map || self.data.is_some() {
            f |= NFT_SET_MAP;
        }
        f
    }
}

/// A set element: key bytes (as the kernel stores them), optional verdict
/// (for verdict maps) or data (for data maps) and optional comment (userdata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub key: Vec<u8>,
    pub verdict: Option<Verdict>,
    pub data: Option<Vec<u8>>,
    pub comment: Option<String>,
}

/// An element together with the set holding it (dumps, deletions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetElement {
    pub set: String,
    pub element: Element,
}

impl Element {
    pub fn ip(ip: IpAddr) -> Self {
        let key = match ip {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        Element {
            key,
            verdict: None,
            data: None,
            comment: None,
        }
    }

    pub fn ifname(name: &str) -> Self {
        Element {
            key: ifname_key(name),
            verdict: None,
            data: None,
            comment: None,
        }
    }

    /// Key for an `ifname . ifname` set.
    pub fn ifname_pair(a: &str, b: &str) -> Self {
        let mut key = ifname_key(a);
        key.extend(ifname_key(b));
        Element {
            key,
            verdict: None,
            data: None,
            comment: None,
        }
    }

    /// Key for an `ifname . ipv4_addr|ipv6_addr` set.
    pub fn ifname_ip(name: &str, ip: IpAddr) -> Self {
        let mut key = ifname_key(name);
        key.extend(Element::ip(ip).key);
        Element {
            key,
            verdict: None,
            data: None,
            comment: None,
        }
    }

    /// Key for an `ifname . ether_addr` set: the name NUL-padded to
    /// IFNAMSIZ, then the MAC padded to the 4-byte register boundary.
    pub fn ifname_ether(name: &str, mac: [u8; 6]) -> Self {
        let mut key = ifname_key(name);
        key.extend_from_slice(&mac);
        key.extend_from_slice(&[0, 0]);
        Element {
            key,
            verdict: None,
            data: None,
            comment: None,
        }
    }

    /// The parts of an [`Element::ifname_ether`] key.
    pub fn key_ifname_ether(&self) -> Option<(String, [u8; 6])> {
        if self.key.len() != IFNAMSIZ + 8 {
            return None;
        }
        let (name, rest) = self.key.split_at(IFNAMSIZ);
        let end = name.iter().position(|&c| c == 0)?;
        let mac = <[u8; 6]>::try_from(&rest[..6]).ok()?;
        Some((String::from_utf8_lossy(&name[..end]).into_owned(), mac))
    }

    /// An element with raw key bytes (e.g. a concatenation built by the caller).
    pub fn raw(key: Vec<u8>) -> Self {
        Element {
            key,
            verdict: None,
            data: None,
            comment: None,
        }
    }

    /// Data-map value (raw bytes, concatenated fields padded to 4 bytes).
    pub fn with_data(mut self, d: Vec<u8>) -> Self {
        self.data = Some(d);
        self
    }

    pub fn with_verdict(mut self, v: Verdict) -> Self {
        self.verdict = Some(v);
        self
    }

    pub fn with_comment(mut self, c: impl Into<String>) -> Self {
        self.comment = Some(c.into());
        self
    }

    /// The key as an IP address, if it is 4 or 16 bytes long.
    pub fn key_ip(&self) -> Option<IpAddr> {
        ip_from_bytes(&self.key)
    }

    /// Human-readable key for error messages.
    pub fn key_label(&self) -> String {
        if let Some(l) = crate::hostport::port_key_label(&self.key) {
            return l;
        }
        if let Some((name, m)) = self.key_ifname_ether() {
            return format!(
                "\"{name}\" . {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            );
        }
        let second_ifname = self.key.len() == 2 * IFNAMSIZ
            && self.key[IFNAMSIZ].is_ascii_graphic()
            && self.key[2 * IFNAMSIZ - 1] == 0;
        if matches!(self.key.len(), 20 | 32) && self.key[0].is_ascii_graphic() && !second_ifname {
            let (name, ip) = self.key.split_at(IFNAMSIZ);
            let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
            let ip = Element {
                key: ip.to_vec(),
                verdict: None,
                data: None,
                comment: None,
            };
            if let Some(ip) = ip.key_ip() {
                return format!("\"{}\" . {ip}", String::from_utf8_lossy(&name[..end]));
            }
        }
        // A 16-byte key is an ifname rather than an IPv6 address when it is
        // a printable name padded with NULs.
        let ifname_like = self.key.len() == IFNAMSIZ
            && self.key[0].is_ascii_graphic()
            && self.key[IFNAMSIZ - 1] == 0;
        if let Some(ip) = self.key_ip().filter(|_| !ifname_like) {
            return ip.to_string();
        }
        let printable = |b: &[u8]| {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        };
        if !self.key.iter().all(|&c| c == 0 || c.is_ascii_graphic()) {
            return self.key.iter().map(|b| format!("{b:02x}")).collect();
        }
        self.key
            .chunks(IFNAMSIZ)
            .map(|c| format!("\"{}\"", printable(c)))
            .collect::<Vec<_>>()
            .join(" . ")
    }
}

/// A rule to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    pub family: Family,
    pub table: String,
    pub chain: String,
    pub exprs: Vec<Expr>,
    pub comment: Option<String>,
    /// Append at the end (`nft add rule`); `false` inserts at the top
    /// (`nft insert rule`, `iptables -I`).
    pub append: bool,
}

/// A rule as listed by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub handle: u64,
    pub exprs: Vec<Expr>,
    pub comment: Option<String>,
}

/// A chain as listed by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    pub name: String,
    pub handle: u64,
    /// Kernel use count: the chain's own rules plus rules and map
    /// elements jumping to it.
    pub use_count: u32,
    pub is_base: bool,
    /// Base chains: `Some(true)` if the policy is drop.
    pub policy_drop: Option<bool>,
    /// The chain's comment (userdata), which a rule flush leaves in place.
    pub comment: Option<String>,
}

/// An address from its 4 or 16 bytes in network order (`None` for any other length).
pub(crate) fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_key() {
        let k = KeyType::Concat(vec![KeyType::IfName, KeyType::IfName]);
        assert_eq!(k.raw(), (2665, 32));
        // nft's `type ifname . ether_addr`: (41 << 6) | 9, 16 + 8 bytes
        let k = KeyType::Concat(vec![KeyType::IfName, KeyType::EtherAddr]);
        assert_eq!(k.raw(), (2633, 24));
    }

    #[test]
    fn labels() {
        assert_eq!(
            Element::ip("10.1.2.3".parse().unwrap()).key_label(),
            "10.1.2.3"
        );
        assert_eq!(Element::ifname_pair("a", "b").key_label(), "\"a\" . \"b\"");
        assert_eq!(Element::ifname("veth1").key_label(), "\"veth1\"");
        assert_eq!(
            Element::ip("fd00::5".parse().unwrap()).key_label(),
            "fd00::5"
        );
        let e = Element::ifname_ether("veth1", [2, 0, 0, 0, 0xab, 1]);
        assert_eq!(e.key_label(), "\"veth1\" . 02:00:00:00:ab:01");
        assert_eq!(
            e.key_ifname_ether(),
            Some(("veth1".into(), [2, 0, 0, 0, 0xab, 1]))
        );
    }
}
