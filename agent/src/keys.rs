//! The etcd key layout under `/cnm/v1` and the JSON values stored there.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

pub const ROOT: &str = "/cnm/v1";

pub fn nets_prefix() -> String {
    format!("{ROOT}/nets/")
}
pub fn net_prefix(net: &str) -> String {
    format!("{ROOT}/nets/{net}/")
}
pub fn config(net: &str) -> String {
    format!("{ROOT}/nets/{net}/config")
}
pub fn blocks_prefix(net: &str) -> String {
    format!("{ROOT}/nets/{net}/blocks/")
}
pub fn released_prefix(net: &str) -> String {
    format!("{ROOT}/nets/{net}/released/")
}
/// `10.250.1.0/26` is stored as `10.250.1.0-26` (flannel's form: no '/' inside a key segment).
pub fn block(net: &str, b: &Ipv4Network) -> String {
    format!("{}{}-{}", blocks_prefix(net), b.network(), b.prefix())
}
pub fn released(net: &str, b: &Ipv4Network) -> String {
    format!("{}{}-{}", released_prefix(net), b.network(), b.prefix())
}

/// The block of a `.../blocks/10.250.1.0-26` or `.../released/...` key. A key with host bits
/// (`10.250.1.5-26`) names no block: the agent never writes one, and taking it would make a
/// second, different entry for the same block (found by fuzzing).
pub fn parse_block(key: &str) -> Option<Ipv4Network> {
    let last = key.rsplit('/').next()?;
    let (ip, len) = last.split_once('-')?;
    Ipv4Network::new(ip.parse().ok()?, len.parse().ok()?)
        .ok()
        .filter(|b| b.ip() == b.network())
}

/// Value of `blocks/<cidr>`: who owns the block and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockValue {
    pub host: String,
    pub vtep: Ipv4Addr,
    pub mac: String,
    pub tunnel_ip: Ipv4Addr,
}

/// Value of `released/<cidr>`: the quarantine marker of an expired block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasedValue {
    pub host: String,
    pub at: u64,
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether `name` may name a cluster network: it becomes an etcd key segment and a directory
/// under the agent's run and state dirs.
pub fn valid_net_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_keys_round_trip() {
        let b: Ipv4Network = "10.250.1.0/26".parse().unwrap();
        let k = block("n1", &b);
        assert_eq!(k, "/cnm/v1/nets/n1/blocks/10.250.1.0-26");
        assert_eq!(parse_block(&k), Some(b));
        assert_eq!(parse_block(&released("n1", &b)), Some(b));
        assert_eq!(parse_block("/cnm/v1/nets/n1/config"), None);
        assert_eq!(parse_block("/cnm/v1/nets/n1/blocks/10.250.1.5-26"), None);
    }
}
