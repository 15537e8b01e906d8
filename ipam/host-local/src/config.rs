//! The IPAM configuration, as the reference's `LoadIPAMConfig`: range sets from
//! `runtimeConfig.ipRanges`, the legacy single range and `ranges` (in that order), requested IPs
//! from `CNI_ARGS IP=`, `args.cni.ips` and `runtimeConfig.ips` (in that order, deduplicated),
//! routes, `dataDir` and `resolvConf`, with the reference's defaults and validation messages.
//!
//! Input is the skel's folded config (lower-case keys, last duplicate wins). Every problem is a
//! code-7 error whose message names the key and says what is expected.

use std::net::IpAddr;
use std::path::PathBuf;

use cni_core::types::Route;
use cni_core::{CniError, Request};
use serde_json::{Map, Value};

use crate::range::{canonical, RangeSet, RangeSpec};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConfig {
    pub name: String,
    pub cni_version: String,
    /// Final order: runtime `ipRanges`, legacy range, `ranges`; the index is the rangeID of
    /// `last_reserved_ip.<N>`.
    pub range_sets: Vec<RangeSet>,
    pub routes: Vec<Route>,
    pub data_dir: PathBuf,
    pub resolv_conf: Option<PathBuf>,
    /// Canonical (v4-mapped → v4), deduplicated, in request order.
    pub requested: Vec<IpAddr>,
}

fn err(msg: impl Into<String>) -> CniError {
    CniError::config(msg)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn type_err(key: &str, want: &str, got: &Value) -> CniError {
    err(format!("{key} must be {want}, got {}", kind(got)))
}

/// An optional object: absent and null are `None`.
fn opt_obj<'a>(
    v: Option<&'a Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, CniError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(other) => Err(type_err(key, "an object", other)),
    }
}

fn opt_list<'a>(v: Option<&'a Value>, key: &str, want: &str) -> Result<&'a [Value], CniError> {
    match v {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(type_err(key, want, other)),
    }
}

/// A string field (named in camelCase, looked up folded); absent, null and "" are all "not
/// set", as Go's zero values.
fn opt_str<'a>(o: &'a Map<String, Value>, field: &str, key: &str) -> Result<&'a str, CniError> {
    match o.get(&field.to_ascii_lowercase()) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(type_err(&format!("{key}.{field}"), "a string", other)),
    }
}

/// An IP field of a range (`net.IP` in Go: "" means unset).
fn opt_ip(o: &Map<String, Value>, field: &str, key: &str) -> Result<Option<IpAddr>, CniError> {
    let s = opt_str(o, field, key)?;
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<IpAddr>().map(Some).map_err(|_| {
        err(format!(
            "{key}.{field}: invalid IP address: {s:?} (expected e.g. \"10.1.2.3\" or \"2001:db8::3\")"
        ))
    })
}

fn range_spec(o: &Map<String, Value>, key: &str) -> Result<RangeSpec, CniError> {
    let subnet = opt_str(o, "subnet", key)?;
    let subnet = if subnet.is_empty() {
        None
    } else {
        Some(parse_subnet(subnet, &format!("{key}.subnet"))?)
    };
    Ok(RangeSpec {
        subnet,
        start: opt_ip(o, "rangeStart", key)?,
        end: opt_ip(o, "rangeEnd", key)?,
        gateway: opt_ip(o, "gateway", key)?,
    })
}

fn parse_subnet(s: &str, key: &str) -> Result<ipnetwork::IpNetwork, CniError> {
    let bad = || {
        err(format!(
            "{key}: invalid CIDR address: {s:?} (expected network/prefix-length, e.g. \"10.1.2.0/24\")"
        ))
    };
    // Go's ParseCIDR wants exactly one '/', a decimal prefix and a plain address.
    let Some((addr, len)) = s.split_once('/') else {
        return Err(bad());
    };
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) || addr.parse::<IpAddr>().is_err()
    {
        return Err(bad());
    }
    s.parse().map_err(|_| bad())
}

/// `[[{range}, …], …]` → specs per set (validated later, with the set index).
fn range_sets(v: Option<&Value>, key: &str) -> Result<Vec<Vec<RangeSpec>>, CniError> {
    let sets = opt_list(v, key, "a list of range sets ([[{\"subnet\": …}], …])")?;
    let mut out = Vec::with_capacity(sets.len());
    for (i, set) in sets.iter().enumerate() {
        let k = format!("{key}[{i}]");
        let Value::Array(ranges) = set else {
            return Err(type_err(
                &k,
                "a range set, i.e. a list of range objects ([{\"subnet\": …}])",
                set,
            ));
        };
        let mut specs = Vec::with_capacity(ranges.len());
        for (j, r) in ranges.iter().enumerate() {
            let k = format!("{k}[{j}]");
            let o = opt_obj(Some(r), &k)?.ok_or_else(|| type_err(&k, "an object", r))?;
            specs.push(range_spec(o, &k)?);
        }
        out.push(specs);
    }
    Ok(out)
}

/// `ip` or `ip/len` (the prefix is ignored, as the reference's `ip.IP`), canonicalized.
pub fn parse_requested(s: &str, source: &str) -> Result<IpAddr, CniError> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let prefix_ok = |ip: &IpAddr, l: &str| {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        !l.is_empty()
            && l.len() <= 3
            && l.bytes().all(|b| b.is_ascii_digit())
            && l.parse::<u32>().is_ok_and(|n| n <= max)
    };
    addr.parse::<IpAddr>()
        .ok()
        .filter(|ip| len.is_none_or(|l| prefix_ok(ip, l)))
        .map(canonical)
        .ok_or_else(|| {
            err(format!(
                "cannot understand ip: invalid IP address {s:?} in {source} (expected an address, optionally with /prefix-length)"
            ))
        })
}

fn requested_list(v: Option<&Value>, key: &str) -> Result<Vec<IpAddr>, CniError> {
    let list = opt_list(v, key, "a list of IP address strings")?;
    list.iter()
        .enumerate()
        .map(|(i, x)| match x {
            Value::String(s) => parse_requested(s, &format!("{key}[{i}]")),
            other => Err(type_err(&format!("{key}[{i}]"), "a string", other)),
        })
        .collect()
}

/// Loads and validates the IPAM config of a request; `default_data_dir` applies when the
/// config has no `dataDir`.
pub fn load(req: &Request, default_data_dir: &str) -> Result<IpamConfig, CniError> {
    load_value(
        &req.conf,
        &req.name,
        &req.cni_version,
        &req.env.args,
        default_data_dir,
    )
}

/// [`load`] over explicit inputs (the folded config, the network name, the config version and
/// CNI_ARGS).
pub fn load_value(
    conf: &Value,
    name: &str,
    cni_version: &str,
    cni_args: &str,
    default_data_dir: &str,
) -> Result<IpamConfig, CniError> {
    let top = conf
        .as_object()
        .ok_or_else(|| err("network config must be a JSON object"))?;
    let ipam =
        opt_obj(top.get("ipam"), "ipam")?.ok_or_else(|| err("IPAM config missing 'ipam' key"))?;
    let runtime = opt_obj(top.get("runtimeconfig"), "runtimeConfig")?;
    let args_cni = match opt_obj(top.get("args"), "args")? {
        Some(a) => opt_obj(a.get("cni"), "args.cni")?,
        None => None,
    };

    // Requested IPs: CNI_ARGS IP, then args.cni.ips, then runtimeConfig.ips.
    let mut requested = Vec::new();
    let env = cni_core::args::parse(cni_args, &["IP"])?;
    if let Some(ip) = env.get("IP").filter(|s| !s.is_empty()) {
        requested.push(parse_requested(ip, "CNI_ARGS IP")?);
    }
    if let Some(a) = args_cni {
        requested.extend(requested_list(a.get("ips"), "args.cni.ips")?);
    }
    if let Some(rc) = runtime {
        requested.extend(requested_list(rc.get("ips"), "runtimeConfig.ips")?);
    }
    let mut seen = Vec::with_capacity(requested.len());
    requested.retain(|ip| {
        let new = !seen.contains(ip);
        seen.push(*ip);
        new
    });

    // Range sets: runtimeConfig.ipRanges, legacy range (only if it has a subnet), ranges.
    let mut specs = match runtime {
        Some(rc) => range_sets(rc.get("ipranges"), "runtimeConfig.ipRanges")?,
        None => Vec::new(),
    };
    let legacy = range_spec(ipam, "ipam")?;
    if legacy.subnet.is_some() {
        specs.push(vec![legacy]);
    }
    specs.extend(range_sets(ipam.get("ranges"), "ipam.ranges")?);
    if specs.is_empty() {
        return Err(err(
            "no IP ranges specified (set ipam.ranges, e.g. [[{\"subnet\": \"10.22.0.0/16\"}]], or ipam.subnet)",
        ));
    }
    let mut range_sets = Vec::with_capacity(specs.len());
    let (mut n4, mut n6) = (0, 0);
    for (i, s) in specs.iter().enumerate() {
        let set =
            RangeSet::canonicalize(s).map_err(|e| err(format!("invalid range set {i}: {e}")))?;
        if set.v4() {
            n4 += 1;
        } else {
            n6 += 1;
        }
        range_sets.push(set);
    }
    if (n4 > 1 || n6 > 1) && !cni_core::version::at_least(cni_version, "0.3.0") {
        return Err(err(format!(
            "CNI version {cni_version} does not support more than 1 address per family"
        )));
    }
    for (i, a) in range_sets.iter().enumerate() {
        for (j, b) in range_sets.iter().enumerate().skip(i + 1) {
            if a.overlaps(b) {
                return Err(err(format!("range set {i} overlaps with {j}")));
            }
        }
    }

    let routes = opt_list(ipam.get("routes"), "ipam.routes", "a list of route objects")?
        .iter()
        .enumerate()
        .map(|(i, r)| Route::from_value(r).map_err(|e| e.context(format!("ipam.routes[{i}]"))))
        .collect::<Result<Vec<_>, _>>()?;
    let data_dir = opt_str(ipam, "dataDir", "ipam")?;
    let resolv_conf = opt_str(ipam, "resolvConf", "ipam")?;

    Ok(IpamConfig {
        name: name.to_string(),
        cni_version: cni_version.to_string(),
        range_sets,
        routes,
        data_dir: PathBuf::from(if data_dir.is_empty() {
            default_data_dir
        } else {
            data_dir
        }),
        resolv_conf: (!resolv_conf.is_empty()).then(|| PathBuf::from(resolv_conf)),
        requested,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(conf: &str, args: &str) -> Result<IpamConfig, CniError> {
        let raw: Value = serde_json::from_str(conf).unwrap();
        let folded = cni_core::json::fold_keys(&raw);
        let version = folded["cniversion"].as_str().unwrap_or("0.1.0").to_string();
        load_value(&folded, "mynet", &version, args, "/default")
    }

    fn ok(conf: &str) -> IpamConfig {
        load_str(conf, "").unwrap()
    }

    fn msg(conf: &str) -> String {
        let e = load_str(conf, "").unwrap_err();
        assert_eq!(e.code, 7, "{e:?}");
        e.msg
    }

    fn sets(c: &IpamConfig) -> Vec<String> {
        c.range_sets.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn legacy_range() {
        let c = ok(
            r#"{"cniVersion":"0.3.1","ipam":{"type":"host-local","subnet":"10.1.2.0/24",
            "rangeStart":"10.1.2.9","rangeEnd":"10.1.2.20","gateway":"10.1.2.30"}}"#,
        );
        assert_eq!(sets(&c), ["10.1.2.9-10.1.2.20"]);
        assert_eq!(c.range_sets[0].0[0].gateway_ip().to_string(), "10.1.2.30");
        assert_eq!(c.cni_version, "0.3.1");
        assert_eq!(c.data_dir, PathBuf::from("/default"));
        assert_eq!(c.resolv_conf, None);
    }

    #[test]
    fn new_style_with_defaults_and_order() {
        let c = ok(r#"{"cniVersion":"0.3.1",
            "runtimeConfig":{"ipRanges":[[{"subnet":"192.168.0.0/24"}]]},
            "ipam":{"subnet":"10.1.2.0/24",
                "ranges":[[{"subnet":"11.1.2.0/24"},{"subnet":"11.1.3.0/24"}],
                          [{"subnet":"2001:db8:1::/64"}]],
                "dataDir":"/x","resolvConf":"/r"}}"#);
        assert_eq!(
            sets(&c),
            [
                "192.168.0.1-192.168.0.254",
                "10.1.2.1-10.1.2.254",
                "11.1.2.1-11.1.2.254,11.1.3.1-11.1.3.254",
                "2001:db8:1::1-2001:db8:1:0:ffff:ffff:ffff:ffff",
            ]
        );
        assert_eq!(c.data_dir, PathBuf::from("/x"));
        assert_eq!(c.resolv_conf, Some(PathBuf::from("/r")));
    }

    #[test]
    fn keys_are_case_insensitive_and_last_duplicate_wins() {
        let c = ok(
            r#"{"cniVersion":"1.0.0","IPAM":{"TYPE":"host-local","SUBNET":"10.9.0.0/24",
            "subnet":"10.1.0.0/24","RangeStart":"10.1.0.5","DataDir":"/d"},
            "RuntimeConfig":{"IPS":["10.1.0.7"]}}"#,
        );
        assert_eq!(sets(&c), ["10.1.0.5-10.1.0.254"]);
        assert_eq!(c.data_dir, PathBuf::from("/d"));
        assert_eq!(c.requested, vec!["10.1.0.7".parse::<IpAddr>().unwrap()]);
        // Unknown keys are ignored.
        ok(r#"{"ipam":{"subnet":"10.1.0.0/24","frobnicate":[1,2]},"other":{}}"#);
    }

    #[test]
    fn requested_ips_order_prefixes_and_dedup() {
        let conf = r#"{"cniVersion":"0.3.1",
            "args":{"cni":{"ips":["10.1.2.11","11.11.11.11","2001:db8:1::11/64","10.1.2.10"]}},
            "runtimeConfig":{"ips":["192.168.0.1","192.168.0.5/24","2001:db8::1/64","::ffff:10.9.9.9"]},
            "ipam":{"subnet":"10.1.2.0/24"}}"#;
        let c = load_str(conf, "IP=10.1.2.10").unwrap();
        let got: Vec<String> = c.requested.iter().map(|i| i.to_string()).collect();
        assert_eq!(
            got,
            [
                "10.1.2.10",
                "10.1.2.11",
                "11.11.11.11",
                "2001:db8:1::11",
                "192.168.0.1",
                "192.168.0.5",
                "2001:db8::1",
                "10.9.9.9"
            ]
        );
        let c = load_str(r#"{"ipam":{"subnet":"10.1.2.0/24"}}"#, "IP=10.1.2.11/24").unwrap();
        assert_eq!(c.requested, vec!["10.1.2.11".parse::<IpAddr>().unwrap()]);
        assert!(c.requested[0].is_ipv4());
        let c = load_str(
            r#"{"ipam":{"subnet":"10.1.2.0/24"}}"#,
            "IgnoreUnknown=1;K8S_POD_NAME=p;IP=",
        )
        .unwrap();
        assert!(c.requested.is_empty());
        let e = load_str(r#"{"ipam":{"subnet":"10.1.2.0/24"}}"#, "K8S_POD_NAME=p").unwrap_err();
        assert_eq!(e.msg, "ARGS: unknown args [\"K8S_POD_NAME=p\"]");
        let e = load_str(r#"{"ipam":{"subnet":"10.1.2.0/24"}}"#, "IP=10.1.2.300").unwrap_err();
        assert!(e.msg.starts_with("cannot understand ip: "), "{}", e.msg);
        for bad in [
            r#"["x"]"#,
            r#"["10.0.0.1/"]"#,
            r#"["10.0.0.1/a"]"#,
            r#"[1]"#,
            r#""10.0.0.1""#,
        ] {
            let e = msg(&format!(
                r#"{{"args":{{"cni":{{"ips":{bad}}}}},"ipam":{{"subnet":"10.1.2.0/24"}}}}"#
            ));
            assert!(e.contains("args.cni.ips"), "{bad}: {e}");
        }
    }

    #[test]
    fn validation_messages() {
        assert_eq!(
            msg(r#"{"cniVersion":"1.0.0"}"#),
            "IPAM config missing 'ipam' key"
        );
        assert_eq!(msg(r#"{"ipam":null}"#), "IPAM config missing 'ipam' key");
        assert!(msg(r#"{"ipam":{}}"#).starts_with("no IP ranges specified"));
        assert!(msg(r#"{"ipam":{"rangeStart":"10.0.0.1"}}"#).starts_with("no IP ranges specified"));
        assert_eq!(
            msg(r#"{"ipam":{"ranges":[[{"subnet":"10.1.0.0/22"},{"subnet":"10.1.2.0/24"}]]}}"#),
            "invalid range set 0: subnets 10.1.0.1-10.1.3.254 and 10.1.2.1-10.1.2.254 overlap"
        );
        assert_eq!(
            msg(r#"{"ipam":{"ranges":[[{"subnet":"10.1.0.0/24"},{"subnet":"2001:db8::/64"}]]}}"#),
            "invalid range set 0: mixed address families"
        );
        assert_eq!(
            msg(
                r#"{"cniVersion":"0.3.1","ipam":{"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.1.0.0/16"}]]}}"#
            ),
            "range set 0 overlaps with 1"
        );
        assert_eq!(
            msg(
                r#"{"cniVersion":"0.3.1","ipam":{"subnet":"10.2.0.0/24","ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.3.0.0/24"},{"subnet":"10.2.0.0/25"}]]}}"#
            ),
            "range set 0 overlaps with 2"
        );
        assert_eq!(
            msg(r#"{"ipam":{"ranges":[[]]}}"#),
            "invalid range set 0: empty range set"
        );
        assert_eq!(
            msg(r#"{"ipam":{"subnet":"192.0.2.12/24"}}"#),
            "invalid range set 0: Network has host bits set. For a subnet mask of length 24 the network address is 192.0.2.0"
        );
        assert_eq!(
            msg(r#"{"ipam":{"subnet":"192.0.2.0/24","rangeEnd":"192.0.4.0"}}"#),
            "invalid range set 0: RangeEnd 192.0.4.0 not in network 192.0.2.0/24"
        );
        assert!(msg(r#"{"ipam":{"ranges":[[{"gateway":"10.0.0.1"}]]}}"#)
            .starts_with("invalid range set 0: range has no \"subnet\""));
    }

    #[test]
    fn old_versions_allow_one_address_per_family() {
        let two_v4 = r#"{"cniVersion":"0.2.0","ipam":{"ranges":[[{"subnet":"10.1.2.0/24"}],[{"subnet":"11.1.2.0/24"}]]}}"#;
        assert_eq!(
            msg(two_v4),
            "CNI version 0.2.0 does not support more than 1 address per family"
        );
        assert!(load_str(&two_v4.replace("0.2.0", "0.3.0"), "").is_ok());
        ok(
            r#"{"cniVersion":"0.2.0","ipam":{"ranges":[[{"subnet":"10.1.2.0/24"}],[{"subnet":"2001:db8:1::/64"}]]}}"#,
        );
        // A multi-range set is still one address.
        ok(
            r#"{"cniVersion":"0.1.0","ipam":{"ranges":[[{"subnet":"10.1.2.0/24"},{"subnet":"11.1.2.0/24"}]]}}"#,
        );
    }

    #[test]
    fn wrong_types_name_the_key() {
        for (conf, key) in [
            (r#"{"ipam":"host-local"}"#, "ipam must be an object"),
            (r#"{"ipam":{"subnet":24}}"#, "ipam.subnet must be a string"),
            (
                r#"{"ipam":{"subnet":"10.0.0.0"}}"#,
                "ipam.subnet: invalid CIDR address",
            ),
            (
                r#"{"ipam":{"subnet":"10.0.0.0/33"}}"#,
                "ipam.subnet: invalid CIDR address",
            ),
            (
                r#"{"ipam":{"subnet":"banana/8"}}"#,
                "ipam.subnet: invalid CIDR address",
            ),
            (
                r#"{"ipam":{"subnet":"10.0.0.0/24","gateway":"x"}}"#,
                "ipam.gateway: invalid IP address",
            ),
            (
                r#"{"ipam":{"ranges":{"subnet":"10.0.0.0/24"}}}"#,
                "ipam.ranges must be a list of range sets",
            ),
            (
                r#"{"ipam":{"ranges":[{"subnet":"10.0.0.0/24"}]}}"#,
                "ipam.ranges[0] must be a range set",
            ),
            (
                r#"{"ipam":{"ranges":[["10.0.0.0/24"]]}}"#,
                "ipam.ranges[0][0] must be an object",
            ),
            (
                r#"{"ipam":{"ranges":[[{"subnet":"10.0.0.0/24","rangeEnd":5}]]}}"#,
                "ipam.ranges[0][0].rangeEnd must be a string",
            ),
            (
                r#"{"ipam":{"subnet":"10.0.0.0/24","routes":{}}}"#,
                "ipam.routes must be a list",
            ),
            (
                r#"{"ipam":{"subnet":"10.0.0.0/24","routes":[{"dst":"x"}]}}"#,
                "ipam.routes[0]: route: invalid CIDR",
            ),
            (
                r#"{"ipam":{"subnet":"10.0.0.0/24","dataDir":1}}"#,
                "ipam.dataDir must be a string",
            ),
            (
                r#"{"ipam":{"subnet":"10.0.0.0/24","resolvConf":true}}"#,
                "ipam.resolvConf must be a string",
            ),
            (
                r#"{"runtimeConfig":[],"ipam":{"subnet":"10.0.0.0/24"}}"#,
                "runtimeConfig must be an object",
            ),
            (
                r#"{"runtimeConfig":{"ipRanges":[[{"subnet":1}]]},"ipam":{"subnet":"10.0.0.0/24"}}"#,
                "runtimeConfig.ipRanges[0][0].subnet must be a string",
            ),
            (
                r#"{"args":{"cni":[]},"ipam":{"subnet":"10.0.0.0/24"}}"#,
                "args.cni must be an object",
            ),
        ] {
            let m = msg(conf);
            assert!(m.contains(key), "{conf}: {m}");
        }
        // Empty strings are Go's zero values: unset.
        let c =
            ok(r#"{"ipam":{"subnet":"10.0.0.0/24","gateway":"","rangeStart":"","dataDir":""}}"#);
        assert_eq!(sets(&c), ["10.0.0.1-10.0.0.254"]);
        assert_eq!(c.data_dir, PathBuf::from("/default"));
        // Null args/runtimeConfig are fine.
        ok(r#"{"args":null,"runtimeConfig":null,"ipam":{"subnet":"10.0.0.0/24","routes":null}}"#);
    }

    #[test]
    fn routes_verbatim() {
        let c = ok(r#"{"ipam":{"subnet":"10.0.0.0/24","routes":[
            {"dst":"0.0.0.0/0"},{"dst":"192.168.0.0/16","gw":"1.1.1.1"},{"dst":"::/0"}]}}"#);
        let r: Vec<String> = c
            .routes
            .iter()
            .map(|r| format!("{} {:?}", r.dst, r.gw.map(|g| g.to_string())))
            .collect();
        assert_eq!(
            r,
            [
                "0.0.0.0/0 None",
                "192.168.0.0/16 Some(\"1.1.1.1\")",
                "::/0 None"
            ]
        );
    }
}
