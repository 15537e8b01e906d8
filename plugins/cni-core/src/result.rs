//! Results on the wire: printing the 1.x model in whatever version the config asked for, and
//! parsing a result (a prevResult or a delegated plugin's output) of any version into the model.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::CniError;
use crate::json;
use crate::types::{get_str, CniResult, Dns, Interface, IpConfig, Route};
use crate::version::{family, ResultFamily};

/// JSON the way Go's `json.MarshalIndent(v, "", "    ")` prints it (libcni ignores
/// whitespace; people reading logs do not).
pub fn to_go_json(v: &Value) -> String {
    let mut out = Vec::with_capacity(512);
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    // Serializing a Value into a Vec cannot fail.
    let _ = v.serialize(&mut ser);
    String::from_utf8(out).unwrap_or_default()
}

fn route_v1(r: &Route) -> Value {
    let mut m = Map::new();
    m.insert("dst".into(), r.dst.to_string().into());
    if let Some(gw) = r.gw {
        m.insert("gw".into(), gw.to_string().into());
    }
    if r.mtu != 0 {
        m.insert("mtu".into(), r.mtu.into());
    }
    if r.advmss != 0 {
        m.insert("advmss".into(), r.advmss.into());
    }
    if r.priority != 0 {
        m.insert("priority".into(), r.priority.into());
    }
    if let Some(t) = r.table {
        m.insert("table".into(), t.into());
    }
    if let Some(s) = r.scope {
        m.insert("scope".into(), s.into());
    }
    Value::Object(m)
}

fn route_old(r: &Route) -> Value {
    let mut m = Map::new();
    m.insert("dst".into(), r.dst.to_string().into());
    if let Some(gw) = r.gw {
        m.insert("gw".into(), gw.to_string().into());
    }
    Value::Object(m)
}

fn interface_json(i: &Interface, v1: bool) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), i.name.clone().into());
    if !i.mac.is_empty() {
        m.insert("mac".into(), i.mac.clone().into());
    }
    if v1 && i.mtu != 0 {
        m.insert("mtu".into(), i.mtu.into());
    }
    if !i.sandbox.is_empty() {
        m.insert("sandbox".into(), i.sandbox.clone().into());
    }
    if v1 && !i.socket_path.is_empty() {
        m.insert("socketPath".into(), i.socket_path.clone().into());
    }
    if v1 && !i.pci_id.is_empty() {
        m.insert("pciID".into(), i.pci_id.clone().into());
    }
    Value::Object(m)
}

fn ip_json(ip: &IpConfig, with_version: bool) -> Value {
    let mut m = Map::new();
    if with_version {
        let v = if ip.address.is_ipv4() { "4" } else { "6" };
        m.insert("version".into(), v.into());
    }
    if let Some(i) = ip.interface {
        m.insert("interface".into(), i.into());
    }
    m.insert("address".into(), ip.address.to_string().into());
    if let Some(gw) = ip.gateway {
        m.insert("gateway".into(), gw.to_string().into());
    }
    Value::Object(m)
}

/// Converts the model into the wire shape of `version`. Fails only for 0.1/0.2 without any IP,
/// with libcni's message.
pub fn to_version(r: &CniResult, version: &str) -> Result<Value, CniError> {
    let mut m = Map::new();
    m.insert("cniVersion".into(), version.into());
    match family(version) {
        ResultFamily::V1 | ResultFamily::V04 => {
            let v1 = family(version) == ResultFamily::V1;
            if !r.interfaces.is_empty() {
                let l = r.interfaces.iter().map(|i| interface_json(i, v1)).collect();
                m.insert("interfaces".into(), Value::Array(l));
            }
            if !r.ips.is_empty() {
                let l = r.ips.iter().map(|i| ip_json(i, !v1)).collect();
                m.insert("ips".into(), Value::Array(l));
            }
            if !r.routes.is_empty() {
                let f = if v1 { route_v1 } else { route_old };
                m.insert(
                    "routes".into(),
                    Value::Array(r.routes.iter().map(f).collect()),
                );
            }
            if !v1 || !r.dns.is_empty() {
                m.insert("dns".into(), r.dns.to_value());
            }
        }
        ResultFamily::V02 => {
            let first4 = r.ips.iter().find(|i| i.address.is_ipv4());
            let first6 = r.ips.iter().find(|i| i.address.is_ipv6());
            if first4.is_none() && first6.is_none() {
                return Err(CniError::internal("cannot convert: no valid IP addresses"));
            }
            for (key, ip, v4) in [("ip4", first4, true), ("ip6", first6, false)] {
                let Some(ip) = ip else { continue };
                let mut o = Map::new();
                o.insert("ip".into(), ip.address.to_string().into());
                if let Some(gw) = ip.gateway {
                    o.insert("gateway".into(), gw.to_string().into());
                }
                let routes: Vec<Value> = r
                    .routes
                    .iter()
                    .filter(|rt| rt.dst.is_ipv4() == v4)
                    .map(route_old)
                    .collect();
                if !routes.is_empty() {
                    o.insert("routes".into(), Value::Array(routes));
                }
                m.insert(key.into(), Value::Object(o));
            }
            m.insert("dns".into(), r.dns.to_value());
        }
    }
    Ok(Value::Object(m))
}

/// Prints the model in `version` (Go indentation, no trailing newline).
pub fn print(r: &CniResult, version: &str) -> Result<String, CniError> {
    Ok(to_go_json(&to_version(r, version)?))
}

/// Parses a result of any version. `folded` must have lower-case keys ([`json::fold_keys`]);
/// `default_version` is used when the result itself has no `cniVersion` (libcni's fixup).
pub fn parse(folded: &Value, default_version: &str) -> Result<CniResult, CniError> {
    let ctx = "result";
    let o = folded
        .as_object()
        .ok_or_else(|| CniError::config("result: expected a JSON object"))?;
    let mut version = get_str(o, "cniversion", ctx)?;
    if version.is_empty() {
        version = default_version.to_string();
    }
    let list = |key: &str| -> Result<Vec<Value>, CniError> {
        match o.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(_) => Err(CniError::config(format!(
                "result: key {key:?} must be a list"
            ))),
        }
    };
    let mut r = CniResult {
        cni_version: version.clone(),
        dns: Dns::from_value(o.get("dns").unwrap_or(&Value::Null))?,
        ..Default::default()
    };
    // A 0.1/0.2 result has ip4/ip6; some runtimes hand a newer shape with an old version, so
    // decide by content, not only by the version string.
    let old_shape = o.contains_key("ip4") || o.contains_key("ip6");
    if family(&version) == ResultFamily::V02 || old_shape {
        for key in ["ip4", "ip6"] {
            let Some(v) = o.get(key).filter(|v| !v.is_null()) else {
                continue;
            };
            let ipo = v
                .as_object()
                .ok_or_else(|| CniError::config(format!("result: {key} must be an object")))?;
            let addr = get_str(ipo, "ip", ctx)?;
            let gw = get_str(ipo, "gateway", ctx)?;
            r.ips.push(IpConfig {
                interface: None,
                address: crate::types::parse_cidr(&addr, ctx)?,
                gateway: if gw.is_empty() {
                    None
                } else {
                    Some(crate::types::parse_ip(&gw, ctx)?)
                },
            });
            if let Some(Value::Array(routes)) = ipo.get("routes") {
                for rt in routes {
                    r.routes.push(Route::from_value(rt)?);
                }
            }
        }
        return Ok(r);
    }
    for i in list("interfaces")? {
        r.interfaces.push(Interface::from_value(&i)?);
    }
    for i in list("ips")? {
        r.ips.push(IpConfig::from_value(&i)?);
    }
    for rt in list("routes")? {
        r.routes.push(Route::from_value(&rt)?);
    }
    Ok(r)
}

/// Parses raw bytes (e.g. a delegated plugin's stdout).
pub fn parse_bytes(bytes: &[u8], default_version: &str) -> Result<CniResult, CniError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| CniError::internal(format!("failed to parse plugin result: {e}")))?;
    parse(&json::fold_keys(&v), default_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            cni_version: "1.1.0".into(),
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    mac: "aa:bb:cc:dd:ee:ff".into(),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:00:00:00:01".into(),
                    mtu: 1400,
                    sandbox: "/run/netns/x".into(),
                    ..Default::default()
                },
            ],
            ips: vec![
                IpConfig {
                    interface: Some(1),
                    address: "10.1.0.5/16".parse().unwrap(),
                    gateway: Some("10.1.0.1".parse().unwrap()),
                },
                IpConfig {
                    interface: Some(1),
                    address: "fd00::5/64".parse().unwrap(),
                    gateway: None,
                },
            ],
            routes: vec![
                Route::new("0.0.0.0/0".parse().unwrap(), None),
                Route {
                    priority: 5,
                    table: Some(0),
                    ..Route::new("::/0".parse().unwrap(), Some("fd00::1".parse().unwrap()))
                },
            ],
            dns: Dns::default(),
        }
    }

    #[test]
    fn v1_shape() {
        let v = to_version(&sample(), "1.1.0").unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["ips"][0]["address"], "10.1.0.5/16");
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["interfaces"][1]["mtu"], 1400);
        assert_eq!(v["routes"][1]["table"], 0);
        assert!(v.get("dns").is_none());
    }

    #[test]
    fn v04_shape() {
        let v = to_version(&sample(), "0.3.1").unwrap();
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["ips"][1]["version"], "6");
        assert!(v["interfaces"][1].get("mtu").is_none());
        assert!(v["routes"][1].get("priority").is_none());
        assert_eq!(v["dns"], serde_json::json!({}));
    }

    #[test]
    fn v02_shape() {
        let v = to_version(&sample(), "0.2.0").unwrap();
        assert_eq!(v["ip4"]["ip"], "10.1.0.5/16");
        assert_eq!(v["ip4"]["gateway"], "10.1.0.1");
        assert_eq!(v["ip4"]["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(v["ip6"]["routes"][0]["gw"], "fd00::1");
        assert!(v.get("interfaces").is_none());
        let empty = CniResult::default();
        assert_eq!(
            to_version(&empty, "0.1.0").unwrap_err().msg,
            "cannot convert: no valid IP addresses"
        );
    }

    #[test]
    fn round_trips_every_version() {
        for ver in crate::version::SUPPORTED {
            let printed = print(&sample(), ver).unwrap();
            let back = parse_bytes(printed.as_bytes(), "0.0.0").unwrap();
            assert_eq!(back.cni_version, *ver);
            assert_eq!(back.ips[0].address, sample().ips[0].address);
            assert_eq!(back.ips[1].address, sample().ips[1].address);
            assert_eq!(back.routes.len(), 2, "{ver}");
        }
    }

    #[test]
    fn parses_go_prev_result_without_sandbox_or_dns() {
        let raw =
            br#"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"aa:bb:cc:dd:ee:ff"}],
            "ips":[{"interface":0,"address":"10.1.0.5/16"}]}"#;
        let r = parse_bytes(raw, "1.0.0").unwrap();
        assert_eq!(r.interfaces[0].sandbox, "");
        assert_eq!(r.ips[0].interface, Some(0));
    }

    #[test]
    fn missing_version_takes_default() {
        let r = parse_bytes(br#"{"ips":[{"address":"10.0.0.2/24"}]}"#, "0.4.0").unwrap();
        assert_eq!(r.cni_version, "0.4.0");
    }

    #[test]
    fn bad_addresses_are_errors() {
        assert!(parse_bytes(
            br#"{"cniVersion":"1.0.0","ips":[{"address":"nope"}]}"#,
            "1.0.0"
        )
        .is_err());
        assert!(parse_bytes(br#"{"cniVersion":"1.0.0","ips":[{"address":5}]}"#, "1.0.0").is_err());
    }
}
