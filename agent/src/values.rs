//! Decoding of the values the agent reads from etcd. Every value goes through
//! [`decode_value`] (or its per-kind forms, which share one bounded parser), so a value that
//! some other etcd writer put there, bigger than any the agent writes or not what the key
//! should hold, is refused with an error naming the key, and the caller logs it and ignores
//! that key: a bad value never crashes or stalls the reconcile.
//!
//! Pure (no I/O, no async): the fuzz target calls [`decode_value`] directly.

use std::fmt;

use cni_cluster::model::NetConfig;
use ipnetwork::Ipv4Network;
use serde::de::DeserializeOwned;

use crate::keys::{self, BlockValue, ReleasedValue};

/// The largest value decoded. The agent's own values are a few hundred bytes (a block value
/// is ~110, a network config ~150); 64 KiB leaves two orders of magnitude for future fields
/// while bounding the parse work per key (etcd itself accepts values up to its 1.5 MiB
/// `--max-request-bytes`, and a re-list decodes every key of a network every resync).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// A value that was refused; `Display` names the key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub key: String,
    pub reason: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "etcd value at {}: {}", self.key, self.reason)
    }
}

impl std::error::Error for DecodeError {}

/// What a key of the agent's layout holds, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtcdValue {
    Config {
        net: String,
        config: NetConfig,
    },
    Block {
        net: String,
        block: Ipv4Network,
        value: BlockValue,
    },
    Released {
        net: String,
        block: Ipv4Network,
        value: ReleasedValue,
    },
}

fn refuse(key: &str, reason: String) -> DecodeError {
    DecodeError {
        key: key.to_string(),
        reason,
    }
}

/// The one JSON parser of etcd values: size first, then the type.
fn bounded_json<T: DeserializeOwned>(
    key: &str,
    value: &[u8],
    what: &str,
) -> Result<T, DecodeError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(refuse(
            key,
            format!(
                "{} bytes, more than the {MAX_VALUE_BYTES}-byte cap of a {what}; rewrite or delete the key",
                value.len()
            ),
        ));
    }
    serde_json::from_slice(value).map_err(|e| {
        refuse(
            key,
            format!("not a valid {what} ({e}); rewrite or delete the key"),
        )
    })
}

/// A `nets/<net>/blocks/<cidr>` value.
pub fn decode_block(key: &str, value: &[u8]) -> Result<BlockValue, DecodeError> {
    bounded_json(key, value, "block value")
}

/// A `nets/<net>/released/<cidr>` value.
pub fn decode_released(key: &str, value: &[u8]) -> Result<ReleasedValue, DecodeError> {
    bounded_json(key, value, "released-block marker")
}

/// A `nets/<net>/config` value, checked like a `--network` spec.
pub fn decode_config(key: &str, value: &[u8]) -> Result<NetConfig, DecodeError> {
    let c: NetConfig = bounded_json(key, value, "network config")?;
    c.validate()
        .map_err(|e| refuse(key, format!("invalid network config: {e}")))?;
    Ok(c)
}

/// Decodes any key of the agent's layout (`/cnm/v1/nets/<net>/{config,blocks/..,released/..}`);
/// `Ok(None)` for keys the agent does not read.
pub fn decode_value(key: &str, value: &[u8]) -> Result<Option<EtcdValue>, DecodeError> {
    let Some(rest) = key.strip_prefix(&keys::nets_prefix()) else {
        return Ok(None);
    };
    let Some((net, what)) = rest.split_once('/') else {
        return Ok(None);
    };
    if !keys::valid_net_name(net) {
        return Ok(None);
    }
    let net = net.to_string();
    if what == "config" {
        return decode_config(key, value).map(|config| Some(EtcdValue::Config { net, config }));
    }
    let Some(block) = keys::parse_block(what) else {
        return Ok(None);
    };
    if what.starts_with("blocks/") {
        decode_block(key, value).map(|value| Some(EtcdValue::Block { net, block, value }))
    } else if what.starts_with("released/") {
        decode_released(key, value).map(|value| Some(EtcdValue::Released { net, block, value }))
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &str =
        r#"{"host":"h1","vtep":"192.168.1.1","mac":"02:00:00:00:00:01","tunnel_ip":"10.250.0.1"}"#;

    #[test]
    fn hs_decodes_each_kind_by_key() {
        let k = "/cnm/v1/nets/n1/blocks/10.250.1.0-26";
        match decode_value(k, BLOCK.as_bytes()).unwrap() {
            Some(EtcdValue::Block { net, block, value }) => {
                assert_eq!(net, "n1");
                assert_eq!(block.to_string(), "10.250.1.0/26");
                assert_eq!(value.host, "h1");
            }
            other => panic!("{other:?}"),
        }
        let k = "/cnm/v1/nets/n1/released/10.250.1.0-26";
        assert!(matches!(
            decode_value(k, br#"{"host":"h1","at":5}"#).unwrap(),
            Some(EtcdValue::Released {
                value: ReleasedValue { at: 5, .. },
                ..
            })
        ));
        let cfg = br#"{"subnet":"10.250.0.0/16","block":26,"vni":7,"gateway":"10.250.0.1","port":4789,"mode":"blocks"}"#;
        assert!(matches!(
            decode_value("/cnm/v1/nets/n1/config", cfg).unwrap(),
            Some(EtcdValue::Config { .. })
        ));
        for other in [
            "/cnm/v1/nets/n1/status",
            "/other/x",
            "/cnm/v1/nets/n1",
            "/cnm/v1/nets/../config",
        ] {
            assert_eq!(decode_value(other, b"garbage").unwrap(), None, "{other}");
        }
    }

    #[test]
    fn hs_oversized_value_is_refused_naming_the_key() {
        let k = "/cnm/v1/nets/n1/blocks/10.250.1.0-26";
        // Valid JSON of the right type, padded past the cap: refused on size alone.
        let mut big = BLOCK.trim_end_matches('}').to_string();
        big.push_str(&format!(r#","pad":"{}"}}"#, "x".repeat(MAX_VALUE_BYTES)));
        let e = decode_block(k, big.as_bytes()).unwrap_err();
        assert_eq!(e.key, k);
        let msg = e.to_string();
        assert!(msg.contains(k) && msg.contains("65536-byte cap"), "{msg}");
        // The same value one byte under the cap would be parsed (unknown fields are ignored).
        let mut fits = BLOCK.trim_end_matches('}').to_string();
        let pad = MAX_VALUE_BYTES - fits.len() - r#","pad":""}"#.len();
        fits.push_str(&format!(r#","pad":"{}"}}"#, "x".repeat(pad)));
        assert_eq!(fits.len(), MAX_VALUE_BYTES);
        assert_eq!(decode_block(k, fits.as_bytes()).unwrap().host, "h1");
    }

    #[test]
    fn hs_malformed_values_are_errors_not_panics() {
        let k = "/cnm/v1/nets/n1/config";
        for bad in [
            &b""[..],
            b"null",
            b"{",
            b"\xff\xfe",
            br#"{"subnet":"10.250.0.1/16"}"#, // host bits set: fails validation
            br#"{"subnet":"not a cidr"}"#,
            &[b'['; 10_000][..], // deeper than serde_json's recursion limit
        ] {
            let e = decode_config(k, bad).unwrap_err();
            assert!(
                e.to_string().starts_with(&format!("etcd value at {k}: ")),
                "{e}"
            );
        }
        assert!(decode_block("k", br#"{"host":"h"}"#).is_err());
        assert!(decode_released("k", b"[]").is_err());
    }
}
