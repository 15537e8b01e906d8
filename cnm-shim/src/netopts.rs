//! `docker network create -o key=value` options: the `bridge` plugin's keys (case-insensitive,
//! as CNI configs are) and docker's own `com.docker.network.*` names for the same things, so
//! scripts written for docker's bridge driver keep working.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::err;
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetOpts {
    pub bridge: Option<String>,
    pub mtu: u32,
    pub ip_masq: bool,
    pub ip_masq_backend: Option<String>,
    pub hairpin: bool,
    pub promisc: bool,
    pub vlan: u16,
    pub port_isolation: bool,
    pub macspoofchk: bool,
    pub isolate_bridges: bool,
    /// Default host address of published ports.
    pub host_ip: Option<IpAddr>,
    /// Interface name prefix inside containers.
    pub iface_prefix: String,
}

impl Default for NetOpts {
    fn default() -> Self {
        NetOpts {
            bridge: None,
            mtu: 0,
            ip_masq: true,
            ip_masq_backend: None,
            hairpin: false,
            promisc: false,
            vlan: 0,
            port_isolation: false,
            macspoofchk: false,
            isolate_bridges: true,
            host_ip: None,
            iface_prefix: "eth".into(),
        }
    }
}

/// Every accepted key, for the error message.
const KEYS: &str = "bridge (com.docker.network.bridge.name), mtu (com.docker.network.driver.mtu), \
ipMasq (com.docker.network.bridge.enable_ip_masquerade), ipMasqBackend, hairpinMode, promiscMode, \
vlan, portIsolation (com.docker.network.bridge.enable_icc=false), macspoofchk, isolateBridges, \
com.docker.network.bridge.host_binding_ipv4, com.docker.network.container_iface_prefix";

fn as_str(key: &str, v: &Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(err!("network option {key}: expected a string, got {other}")),
    }
}

fn parse_bool(key: &str, s: &str) -> Result<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(err!("network option {key}={s}: use true or false")),
    }
}

fn parse_num(key: &str, s: &str, min: u32, max: u32) -> Result<u32> {
    s.parse::<u32>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| err!("network option {key}={s}: use a number between {min} and {max}"))
}

/// A valid interface name (what the kernel accepts, at most 15 bytes).
pub fn check_ifname(what: &str, name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(err!(
            "{what} {name:?} is not a valid interface name: use 1-15 characters without '/', ':' or spaces"
        ));
    }
    Ok(())
}

/// Parses the `com.docker.network.generic` map.
pub fn parse(generic: &Map<String, Value>) -> Result<NetOpts> {
    let mut o = NetOpts::default();
    for (key, v) in generic {
        let s = as_str(key, v)?;
        match key.to_ascii_lowercase().as_str() {
            "bridge" | "com.docker.network.bridge.name" => {
                check_ifname(&format!("network option {key}:"), &s)?;
                o.bridge = Some(s);
            }
            "mtu" | "com.docker.network.driver.mtu" => o.mtu = parse_num(key, &s, 68, 65535)?,
            "ipmasq" | "com.docker.network.bridge.enable_ip_masquerade" => {
                o.ip_masq = parse_bool(key, &s)?
            }
            "ipmasqbackend" => match s.as_str() {
                "nftables" | "iptables" => o.ip_masq_backend = Some(s),
                _ => return Err(err!("network option {key}={s}: use nftables or iptables")),
            },
            "hairpinmode" => o.hairpin = parse_bool(key, &s)?,
            "promiscmode" => o.promisc = parse_bool(key, &s)?,
            "vlan" => o.vlan = parse_num(key, &s, 0, 4094)? as u16,
            "portisolation" => o.port_isolation = parse_bool(key, &s)?,
            "com.docker.network.bridge.enable_icc" => o.port_isolation = !parse_bool(key, &s)?,
            "macspoofchk" => o.macspoofchk = parse_bool(key, &s)?,
            "isolatebridges" => o.isolate_bridges = parse_bool(key, &s)?,
            "com.docker.network.bridge.host_binding_ipv4" => {
                let ip: IpAddr = s
                    .parse()
                    .map_err(|_| err!("network option {key}={s}: not an IP address"))?;
                o.host_ip = (!ip.is_unspecified()).then_some(ip);
            }
            "com.docker.network.container_iface_prefix" => {
                if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(err!("network option {key}={s}: use 1-10 letters or digits"));
                }
                o.iface_prefix = s;
            }
            _ => {
                return Err(err!(
                    "unknown network option {key:?}; cnm-shim supports: {KEYS}"
                ))
            }
        }
    }
    if o.hairpin && o.promisc {
        return Err(err!(
            "network options hairpinMode and promiscMode cannot both be true; choose one"
        ));
    }
    if let (Some(b), true) = (&o.bridge, o.vlan != 0) {
        if b.len() + 1 + o.vlan.to_string().len() > 15 {
            return Err(err!(
                "bridge name {b:?} is too long for vlan {}: the gateway interface \"{b}.{}\" would exceed 15 characters; use a shorter -o bridge=",
                o.vlan, o.vlan
            ));
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> Result<NetOpts> {
        parse(v.as_object().unwrap())
    }

    #[test]
    fn keys_and_aliases() {
        let o = p(json!({})).unwrap();
        assert_eq!(o, NetOpts::default());
        let o = p(
            json!({"com.docker.network.bridge.name": "br-x", "MTU": "1400",
            "ipMasq": "false", "hairpinMode": "true", "vlan": "12",
            "com.docker.network.bridge.enable_icc": "false",
            "com.docker.network.bridge.host_binding_ipv4": "127.0.0.1"}),
        )
        .unwrap();
        assert_eq!(o.bridge.as_deref(), Some("br-x"));
        assert_eq!(
            (o.mtu, o.ip_masq, o.hairpin, o.vlan),
            (1400, false, true, 12)
        );
        assert!(o.port_isolation);
        assert_eq!(o.host_ip, Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn errors_name_the_key_and_fix() {
        let e = p(json!({"foo": "bar"})).unwrap_err();
        assert!(e.0.contains("\"foo\"") && e.0.contains("supports"), "{e}");
        assert!(p(json!({"mtu": "10"}))
            .unwrap_err()
            .0
            .contains("between 68"));
        assert!(p(json!({"ipMasq": "maybe"})).is_err());
        assert!(p(json!({"bridge": "a-very-long-bridge-name"})).is_err());
        assert!(p(json!({"hairpinMode": "true", "promiscMode": "true"})).is_err());
        assert!(p(json!({"bridge": "abcdefghijklm", "vlan": "100"})).is_err());
    }
}
