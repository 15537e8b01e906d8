//! The tuning config: the reference's keys, overrides and precedence, validated before anything
//! is touched.
//!
//! `sysctl` maps are read from the raw stdin, not the key-folded config: their keys are sysctl
//! paths that may contain interface names, which are case-sensitive, and Go decodes map keys
//! verbatim. Everything else goes through the folded config like every plugin of the suite.

use std::fmt;

use cni_core::{args, CniError, Request};
use cni_netlink::{parse_mac, Mac};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::sysctl::SysctlKey;

/// The reference's default `dataDir`.
pub const DEFAULT_DATA_DIR: &str = "/run/cni/tuning";

/// The validated config of one call.
#[derive(Debug, Clone, Default)]
pub struct Conf {
    pub data_dir: String,
    /// In config order (top-level `sysctl`, then new keys from `args.cni.sysctl`).
    pub sysctl: Vec<(SysctlKey, String)>,
    /// The MAC as configured (for messages) and parsed.
    pub mac: Option<(String, Mac)>,
    /// `promisc: true` turns promiscuous mode on; false leaves it alone (CHECK still expects it
    /// off, as the reference).
    pub promisc: bool,
    pub mtu: Option<u32>,
    pub allmulti: Option<bool>,
    pub txqlen: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Raw {
    #[serde(rename = "datadir")]
    data_dir: String,
    mac: String,
    promisc: bool,
    mtu: i64,
    allmulti: Option<bool>,
    #[serde(rename = "txqlen")]
    txqlen: Option<i64>,
}

/// `dataDir` alone: DEL and GC need nothing else, and must not fail on the rest.
pub fn data_dir(req: &Request) -> Result<String, CniError> {
    match cni_core::json::get(&req.conf, "dataDir") {
        None | Some(Value::Null) => Ok(DEFAULT_DATA_DIR.into()),
        Some(Value::String(s)) if s.is_empty() => Ok(DEFAULT_DATA_DIR.into()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(CniError::config(
            "failed to load netconf: \"dataDir\" must be a string (a directory path)",
        )),
    }
}

/// Loads and validates everything ADD and CHECK need.
pub fn load(req: &Request) -> Result<Conf, CniError> {
    let raw_sysctl = top_level_sysctl(&req.stdin)?;
    let raw: Raw = req.decode("netconf")?;
    let mut conf = Conf {
        data_dir: data_dir(req)?,
        promisc: raw.promisc,
        allmulti: raw.allmulti,
        ..Default::default()
    };
    let mut mtu = raw.mtu;
    let mut txqlen = raw.txqlen;

    // MAC precedence, as the reference: config < CNI_ARGS MAC < runtimeConfig.mac < args.cni.mac.
    let mut mac = raw.mac;
    let env_args = args::parse(&req.env.args, &["MAC"])?;
    if let Some(m) = env_args.get("MAC").filter(|m| !m.is_empty()) {
        mac = m.clone();
    }
    if let Some(v) = req.runtime_config("mac") {
        let m = as_str(v, "runtimeConfig.mac")?;
        if !m.is_empty() {
            mac = m;
        }
    }

    let mut sysctl = raw_sysctl;
    if let Some(a) = raw_args_cni(&req.stdin) {
        if let Some(v) = a.get("sysctl").filter(|v| !v.is_null()) {
            for (k, v) in string_map(v, "args.cni.sysctl")? {
                match sysctl.iter_mut().find(|(key, _)| *key == k) {
                    Some(entry) => entry.1 = v,
                    None => sysctl.push((k, v)),
                }
            }
        }
    }
    if let Some(v) = req.args_cni("mac") {
        mac = as_str(v, "args.cni.mac")?;
    }
    if let Some(v) = req.args_cni("promisc") {
        conf.promisc = as_bool(v, "args.cni.promisc")?;
    }
    if let Some(v) = req.args_cni("mtu") {
        mtu = as_int(v, "args.cni.mtu")?;
    }
    if let Some(v) = req.args_cni("allmulti") {
        conf.allmulti = Some(as_bool(v, "args.cni.allmulti")?);
    }
    if let Some(v) = req.args_cni("txQLen") {
        txqlen = Some(as_int(v, "args.cni.txQLen")?);
    }

    if !mac.is_empty() {
        let parsed = parse_mac(&mac).map_err(CniError::config)?;
        conf.mac = Some((mac, parsed));
    }
    conf.mtu = match mtu {
        0 => None,
        m => Some(u32::try_from(m).map_err(|_| {
            CniError::config(format!(
                "invalid mtu {m}: use a positive number the link accepts, e.g. 1400"
            ))
        })?),
    };
    conf.txqlen = txqlen
        .map(|q| {
            u32::try_from(q).map_err(|_| {
                CniError::config(format!(
                    "invalid txQLen {q}: use a transmit queue length of 0 or more, e.g. 1000"
                ))
            })
        })
        .transpose()?;
    conf.sysctl = sysctl
        .into_iter()
        .map(|(k, v)| Ok((SysctlKey::parse(&k, &req.env.ifname)?, v)))
        .collect::<Result<_, CniError>>()?;
    Ok(conf)
}

fn as_str(v: &Value, what: &str) -> Result<String, CniError> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| CniError::config(format!("{what} must be a string")))
}

fn as_bool(v: &Value, what: &str) -> Result<bool, CniError> {
    v.as_bool()
        .ok_or_else(|| CniError::config(format!("{what} must be true or false")))
}

fn as_int(v: &Value, what: &str) -> Result<i64, CniError> {
    v.as_i64()
        .ok_or_else(|| CniError::config(format!("{what} must be an integer")))
}

/// A `{"key": "value"}` map in order; values must be strings (as the reference's
/// `map[string]string`).
fn string_map(v: &Value, what: &str) -> Result<Vec<(String, String)>, CniError> {
    let o = v.as_object().ok_or_else(|| {
        CniError::config(format!(
            "{what} must be an object of sysctl names to string values"
        ))
    })?;
    o.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            other => Err(CniError::config(format!(
                "{what}: the value of {k:?} must be a string, got {other}; quote it, e.g. \"1\""
            ))),
        })
        .collect()
}

/// `args.cni` of the raw (unfolded) config, matched case-insensitively like Go's struct
/// fields; the last match wins.
fn raw_args_cni(stdin: &[u8]) -> Option<serde_json::Map<String, Value>> {
    let raw: Value = serde_json::from_slice(stdin).ok()?;
    let field = |o: &Value, name: &str| -> Option<Value> {
        o.as_object()?
            .iter()
            .rfind(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let cni = field(&field(&raw, "args")?, "cni")?;
    let mut out = serde_json::Map::new();
    for (k, v) in cni.as_object()? {
        out.insert(k.to_ascii_lowercase(), v.clone());
    }
    Some(out)
}

/// The top-level `sysctl` map(s) in order, refusing a key given twice with the reference's
/// message. Go merges every case variant of `sysctl` into one map and checks duplicates across
/// them, so this does too.
fn top_level_sysctl(stdin: &[u8]) -> Result<Vec<(String, String)>, CniError> {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(stdin);
    TopLevel(&mut out)
        .deserialize(&mut de)
        .map_err(|e| match e.to_string() {
            m if m.starts_with(DUPLICATE) => CniError::config(DUPLICATE),
            m => CniError::config(format!("failed to load netconf: sysctl: {m}")),
        })?;
    Ok(out)
}

const DUPLICATE: &str = "duplicated sysctl keys are not allowed";

struct TopLevel<'a>(&'a mut Vec<(String, String)>);

impl<'de> DeserializeSeed<'de> for TopLevel<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a network config object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        while let Some(k) = m.next_key::<String>()? {
            if k.eq_ignore_ascii_case("sysctl") {
                m.next_value_seed(SysctlMap(self.0))?;
            } else {
                m.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

struct SysctlMap<'a>(&'a mut Vec<(String, String)>);

impl<'de> DeserializeSeed<'de> for SysctlMap<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for SysctlMap<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of sysctl names to string values")
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        use serde::de::Error;
        while let Some(k) = m.next_key::<String>()? {
            if self.0.iter().any(|(seen, _)| *seen == k) {
                return Err(A::Error::custom(DUPLICATE));
            }
            let v: Value = m.next_value()?;
            let Value::String(v) = v else {
                return Err(A::Error::custom(format!(
                    "the value of {k:?} must be a string, got {v}; quote it, e.g. \"1\""
                )));
            };
            self.0.push((k, v));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_order_and_duplicates() {
        let v = top_level_sysctl(
            br#"{"name":"n","sysctl":{"net.b":"1","net.a":"2"},"Sysctl":{"net.c":"3"}}"#,
        )
        .unwrap();
        let keys: Vec<&str> = v.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["net.b", "net.a", "net.c"]);
        for dup in [
            r#"{"sysctl":{"net.a":"1","net.a":"2"}}"#,
            r#"{"sysctl":{"net.a":"1"},"SYSCTL":{"net.a":"1"}}"#,
        ] {
            assert_eq!(top_level_sysctl(dup.as_bytes()).unwrap_err().msg, DUPLICATE);
        }
        assert!(top_level_sysctl(br#"{"sysctl":null}"#).unwrap().is_empty());
        let e = top_level_sysctl(br#"{"sysctl":{"net.a":1}}"#).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("must be a string"), "{}", e.msg);
        assert_eq!(top_level_sysctl(br#"{"sysctl":[]}"#).unwrap_err().code, 7);
    }
}
