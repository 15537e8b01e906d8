//! The result model (spec 1.x shape), used internally for every version. `result` converts it
//! to and from the 0.1/0.2 and 0.3/0.4 wire shapes.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::{Map, Value};

use crate::error::CniError;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub mtu: u32,
    pub sandbox: String,
    pub socket_path: String,
    pub pci_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Index into `interfaces`; absent in IPAM results.
    pub interface: Option<usize>,
    /// Host address with the subnet's prefix length, e.g. `10.1.0.5/16`.
    pub address: IpNetwork,
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
    pub mtu: u32,
    pub advmss: u32,
    pub priority: u32,
    pub table: Option<u32>,
    pub scope: Option<u32>,
}

impl Route {
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Route {
        Route {
            dst,
            gw,
            mtu: 0,
            advmss: 0,
            priority: 0,
            table: None,
            scope: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub domain: String,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

// ---- parsing helpers over folded (lower-case key) JSON -------------------------------------

fn type_err(ctx: &str, key: &str, want: &str, got: &Value) -> CniError {
    CniError::config(format!(
        "{ctx}: key {key:?} must be {want}, got {}",
        short(got)
    ))
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= 60 {
        return s;
    }
    // Cut on a character boundary: the value may hold any UTF-8 (found by fuzzing).
    let mut end = 57;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

pub(crate) fn get_str(o: &Map<String, Value>, key: &str, ctx: &str) -> Result<String, CniError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(type_err(ctx, key, "a string", v)),
    }
}

pub(crate) fn get_u32(
    o: &Map<String, Value>,
    key: &str,
    ctx: &str,
) -> Result<Option<u32>, CniError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                type_err(
                    ctx,
                    key,
                    "a non-negative integer",
                    &Value::Number(n.clone()),
                )
            }),
        Some(v) => Err(type_err(ctx, key, "a number", v)),
    }
}

pub(crate) fn get_str_list(
    o: &Map<String, Value>,
    key: &str,
    ctx: &str,
) -> Result<Vec<String>, CniError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                v => Err(type_err(ctx, key, "a list of strings", v)),
            })
            .collect(),
        Some(v) => Err(type_err(ctx, key, "a list of strings", v)),
    }
}

fn as_obj<'a>(v: &'a Value, ctx: &str) -> Result<&'a Map<String, Value>, CniError> {
    v.as_object()
        .ok_or_else(|| CniError::config(format!("{ctx}: expected an object, got {}", short(v))))
}

/// Parses `a.b.c.d/len` keeping the host bits (Go's `types.ParseCIDR`).
pub fn parse_cidr(s: &str, ctx: &str) -> Result<IpNetwork, CniError> {
    if !s.contains('/') {
        return Err(CniError::config(format!(
            "{ctx}: invalid CIDR address: {s} (expected address/prefix-length)"
        )));
    }
    s.parse::<IpNetwork>()
        .map_err(|_| CniError::config(format!("{ctx}: invalid CIDR address: {s}")))
}

pub fn parse_ip(s: &str, ctx: &str) -> Result<IpAddr, CniError> {
    s.parse::<IpAddr>()
        .map_err(|_| CniError::config(format!("{ctx}: invalid IP address: {s}")))
}

fn opt_ip(o: &Map<String, Value>, key: &str, ctx: &str) -> Result<Option<IpAddr>, CniError> {
    let s = get_str(o, key, ctx)?;
    if s.is_empty() {
        Ok(None)
    } else {
        parse_ip(&s, ctx).map(Some)
    }
}

impl Route {
    /// Parses a route object (folded keys), as in IPAM `routes` and results.
    pub fn from_value(v: &Value) -> Result<Route, CniError> {
        let ctx = "route";
        let o = as_obj(v, ctx)?;
        let dst = get_str(o, "dst", ctx)?;
        if dst.is_empty() {
            return Err(CniError::config("route: missing \"dst\""));
        }
        Ok(Route {
            dst: parse_cidr(&dst, ctx)?,
            gw: opt_ip(o, "gw", ctx)?,
            mtu: get_u32(o, "mtu", ctx)?.unwrap_or(0),
            advmss: get_u32(o, "advmss", ctx)?.unwrap_or(0),
            priority: get_u32(o, "priority", ctx)?.unwrap_or(0),
            table: get_u32(o, "table", ctx)?,
            scope: get_u32(o, "scope", ctx)?,
        })
    }
}

impl Dns {
    pub fn from_value(v: &Value) -> Result<Dns, CniError> {
        if v.is_null() {
            return Ok(Dns::default());
        }
        let ctx = "dns";
        let o = as_obj(v, ctx)?;
        Ok(Dns {
            nameservers: get_str_list(o, "nameservers", ctx)?,
            domain: get_str(o, "domain", ctx)?,
            search: get_str_list(o, "search", ctx)?,
            options: get_str_list(o, "options", ctx)?,
        })
    }

    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        if !self.nameservers.is_empty() {
            m.insert("nameservers".into(), self.nameservers.clone().into());
        }
        if !self.domain.is_empty() {
            m.insert("domain".into(), self.domain.clone().into());
        }
        if !self.search.is_empty() {
            m.insert("search".into(), self.search.clone().into());
        }
        if !self.options.is_empty() {
            m.insert("options".into(), self.options.clone().into());
        }
        Value::Object(m)
    }
}

impl Interface {
    pub fn from_value(v: &Value) -> Result<Interface, CniError> {
        let ctx = "interface";
        let o = as_obj(v, ctx)?;
        Ok(Interface {
            name: get_str(o, "name", ctx)?,
            mac: get_str(o, "mac", ctx)?,
            mtu: get_u32(o, "mtu", ctx)?.unwrap_or(0),
            sandbox: get_str(o, "sandbox", ctx)?,
            socket_path: get_str(o, "socketpath", ctx)?,
            pci_id: get_str(o, "pciid", ctx)?,
        })
    }
}

impl IpConfig {
    pub fn from_value(v: &Value) -> Result<IpConfig, CniError> {
        let ctx = "ip config";
        let o = as_obj(v, ctx)?;
        let addr = get_str(o, "address", ctx)?;
        let interface = match o.get("interface") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().map(|n| n as usize),
            Some(v) => return Err(type_err(ctx, "interface", "an integer", v)),
        };
        Ok(IpConfig {
            interface,
            address: parse_cidr(&addr, ctx)?,
            gateway: opt_ip(o, "gateway", ctx)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_error_cuts_long_non_ascii_values_on_a_char_boundary() {
        let v: Value = serde_json::json!({"address": ["é".repeat(40)]});
        let e = IpConfig::from_value(&v).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("\"address\" must be a string"), "{}", e.msg);
        assert!(e.msg.ends_with("é..."), "{}", e.msg);
    }
}
