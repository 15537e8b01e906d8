//! What cnm-agent reads back from shared places, decoded as it decodes them: the etcd values
//! under `/cnm/v1` (network config, block leases, release markers) and their keys, its
//! `state.json`, and the `network.json`/`blocks.json` the `cluster` plugin reads. The first
//! byte picks the kind.
//!
//! The agent's pure modules (`keys`, `values`: the one decoder of etcd values, with its size
//! cap; `state`) are compiled in here from their source files, so the fuzz build does not
//! pull in the agent's tokio/etcd-client stack.
//!
//! Invariants: no panic on any value, including the block arithmetic the agent and the
//! plugin run on what they decoded; keys and values print back to what was read.
#![no_main]

use cni_cluster::model::{self, HostBlocks, LocalNetwork, NetConfig};
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../agent/src/keys.rs"]
mod keys;
#[allow(dead_code)]
#[path = "../../agent/src/state.rs"]
mod state;
#[allow(dead_code)]
#[path = "../../agent/src/values.rs"]
mod values;

/// Round trip through serde: what the agent writes must read back the same.
fn round_trip<T>(v: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = serde_json::to_vec(v).expect("serializes");
    let back: T = serde_json::from_slice(&bytes).expect("reads back");
    assert_eq!(&back, v);
}

/// The arithmetic run on every block the agent or the plugin holds.
fn check_block(b: &ipnetwork::Ipv4Network) {
    let cap = model::block_capacity(b);
    let free = model::free_in(b, &[]);
    assert_eq!(cap, free);
    let (s, e) = model::block_range(b);
    if cap > 0 {
        assert!(s <= e && b.contains(s) && b.contains(e), "{b}: {s}-{e}");
        assert_eq!(u32::from(e) - u32::from(s) + 1, cap as u32);
    }
}

/// A network config as the agent takes it from etcd (`NetConfig::decode`) and then uses it.
fn net_config(bytes: &[u8]) {
    let c = match NetConfig::decode(bytes) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.is_empty());
            return;
        }
    };
    round_trip(&c);
    assert_eq!(c.difference(&c), None);
    let want = 1u64 << (c.block - c.subnet.prefix());
    assert_eq!(c.blocks().take(64).count() as u64, want.min(64));
    for b in c.blocks().take(64) {
        assert!(c.subnet.contains(b.network()), "{b} outside {}", c.subnet);
        check_block(&b);
        let _ = c.claimable(&b);
    }
}

fn host_files(bytes: &[u8]) {
    if let Ok(h) = serde_json::from_slice::<HostBlocks>(bytes) {
        round_trip(&h);
        for b in h
            .blocks
            .iter()
            .chain(h.lost.iter().map(|l| &l.cidr))
            .take(64)
        {
            check_block(b);
        }
    }
    if let Ok(n) = serde_json::from_slice::<LocalNetwork>(bytes) {
        round_trip(&n);
    }
}

fn etcd_values(bytes: &[u8]) {
    // `<key>\n<value>`: through the agent's one decoder, as its watch and re-list read them.
    if let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
        if let Ok(key) = std::str::from_utf8(&bytes[..nl]) {
            match values::decode_value(key, &bytes[nl + 1..]) {
                Ok(Some(values::EtcdValue::Block { block, .. })) => check_block(&block),
                Ok(Some(values::EtcdValue::Config { config, .. })) => {
                    assert_eq!(config.validate(), Ok(()), "{key}: decoded but invalid")
                }
                Ok(_) => {}
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
    }
    if let Ok(v) = serde_json::from_slice::<keys::BlockValue>(bytes) {
        round_trip(&v);
    }
    if let Ok(v) = serde_json::from_slice::<keys::ReleasedValue>(bytes) {
        round_trip(&v);
    }
    if let Ok(s) = serde_json::from_slice::<state::LocalState>(bytes) {
        round_trip(&s);
        for b in s.blocks.iter().take(64) {
            check_block(b);
        }
    }
}

fn etcd_key(bytes: &[u8]) {
    let Ok(k) = std::str::from_utf8(bytes) else {
        return;
    };
    let _ = keys::valid_net_name(k);
    if let Some(b) = keys::parse_block(k) {
        // The key the agent would write for that block names the same block.
        assert_eq!(keys::parse_block(&keys::block("n", &b)), Some(b), "{k}");
        assert_eq!(keys::parse_block(&keys::released("n", &b)), Some(b), "{k}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 4 {
        0 => net_config(rest),
        1 => host_files(rest),
        2 => etcd_values(rest),
        _ => etcd_key(rest),
    }
});
