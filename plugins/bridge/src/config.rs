//! The bridge plugin's network configuration: every key of the reference `NetConf`, parsed with
//! Go's leniency (see `cni_core::json`) and validated before anything is touched.

use serde::Deserialize;
use serde_json::Value;

use cni_core::{args, CniError, Dns, Request};

/// How masquerade state is programmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasqBackend {
    /// In-process nf_tables (default): per-container map elements in our own table.
    Nftables,
    /// The reference's iptables chains, for hosts whose NAT must live in iptables.
    Iptables,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trunk {
    /// Sorted, de-duplicated VLAN IDs.
    pub vids: Vec<u16>,
}

#[derive(Debug, Clone)]
pub struct Conf {
    pub name: String,
    pub bridge: String,
    pub is_gateway: bool,
    pub is_default_gateway: bool,
    pub force_address: bool,
    pub ip_masq: bool,
    pub masq_backend: MasqBackend,
    pub mtu: u32,
    pub hairpin: bool,
    pub promisc: bool,
    pub vlan: u16,
    pub trunk: Option<Trunk>,
    pub preserve_default_vlan: bool,
    pub macspoofchk: bool,
    pub enable_dad: bool,
    pub disable_container_interface: bool,
    pub port_isolation: bool,
    /// `ipam.type`; empty means an L2-only bridge.
    pub ipam_type: String,
    pub dns: Dns,
    /// Container-side MAC: runtimeConfig.mac > args.cni.mac > CNI_ARGS MAC.
    pub mac: Option<[u8; 6]>,
    /// Our extension (ignored by the reference): drop traffic between this bridge and our other
    /// bridges. Default true.
    pub isolate_bridges: bool,
}

impl Conf {
    pub fn l3(&self) -> bool {
        !self.ipam_type.is_empty()
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Raw {
    bridge: Option<String>,
    #[serde(rename = "isgateway")]
    is_gateway: bool,
    #[serde(rename = "isdefaultgateway")]
    is_default_gateway: bool,
    #[serde(rename = "forceaddress")]
    force_address: bool,
    #[serde(rename = "ipmasq")]
    ip_masq: bool,
    #[serde(rename = "ipmasqbackend")]
    ip_masq_backend: Option<String>,
    mtu: i64,
    #[serde(rename = "hairpinmode")]
    hairpin_mode: bool,
    #[serde(rename = "promiscmode")]
    promisc_mode: bool,
    vlan: i64,
    #[serde(rename = "vlantrunk")]
    vlan_trunk: Option<Vec<RawTrunk>>,
    #[serde(rename = "preservedefaultvlan")]
    preserve_default_vlan: bool,
    macspoofchk: bool,
    enabledad: bool,
    #[serde(rename = "disablecontainerinterface")]
    disable_container_interface: bool,
    #[serde(rename = "portisolation")]
    port_isolation: bool,
    ipam: Option<RawIpam>,
    #[serde(rename = "isolatebridges")]
    isolate_bridges: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawIpam {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawTrunk {
    id: Option<i64>,
    #[serde(rename = "minid")]
    min_id: Option<i64>,
    #[serde(rename = "maxid")]
    max_id: Option<i64>,
}

/// Parses and validates the whole request; nothing on the host is touched.
pub fn load(req: &Request) -> Result<Conf, CniError> {
    let raw: Raw = req.decode("netconf")?;
    if raw.vlan < 0 || raw.vlan > 4094 {
        return Err(CniError::config(format!(
            "invalid VLAN ID {} (must be between 0 and 4094)",
            raw.vlan
        )));
    }
    let trunk = collect_trunk(raw.vlan_trunk.as_deref())?;
    if raw.hairpin_mode && raw.promisc_mode {
        return Err(CniError::config(
            "cannot set hairpin mode and promiscuous mode at the same time",
        ));
    }
    if raw.mtu < 0 || raw.mtu > 65535 || (raw.mtu > 0 && raw.mtu < 68) {
        return Err(CniError::config(format!(
            "invalid mtu {}: use 0 for the kernel default or a value between 68 and 65535",
            raw.mtu
        )));
    }
    let bridge = raw
        .bridge
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "cni0".into());
    cni_core::env::validate_ifname(&bridge)
        .map_err(|e| CniError::config(format!("invalid bridge name {bridge:?}: {}", e.msg)))?;
    if raw.vlan != 0 && raw.ipam.as_ref().is_some_and(|i| !i.kind.is_empty()) {
        // The gateway then lives on "<bridge>.<vlan>", which must fit IFNAMSIZ.
        let gw_if = format!("{bridge}.{}", raw.vlan);
        if gw_if.len() > 15 {
            return Err(CniError::config(format!(
                "bridge name {bridge:?} is too long for vlan {}: the gateway interface {gw_if:?} would exceed 15 characters; use a shorter bridge name",
                raw.vlan
            )));
        }
    }
    let masq_backend = match raw.ip_masq_backend.as_deref() {
        None | Some("") | Some("nftables") => MasqBackend::Nftables,
        Some("iptables") => MasqBackend::Iptables,
        Some(other) => {
            return Err(CniError::config(format!(
                "unknown ipmasq backend {other:?}: use \"nftables\" or \"iptables\""
            )))
        }
    };
    let ipam_type = raw.ipam.map(|i| i.kind).unwrap_or_default();
    if raw.disable_container_interface && !ipam_type.is_empty() {
        return Err(CniError::config(
            "cannot use IPAM when DisableContainerInterface flag is set",
        ));
    }
    let dns = match cni_core::json::get(&req.conf, "dns") {
        Some(v) => Dns::from_value(v)?,
        None => Dns::default(),
    };
    Ok(Conf {
        name: req.name.clone(),
        bridge,
        is_gateway: raw.is_gateway || raw.is_default_gateway,
        is_default_gateway: raw.is_default_gateway,
        force_address: raw.force_address,
        ip_masq: raw.ip_masq,
        masq_backend,
        mtu: raw.mtu as u32,
        hairpin: raw.hairpin_mode,
        promisc: raw.promisc_mode,
        vlan: raw.vlan as u16,
        trunk,
        preserve_default_vlan: raw.preserve_default_vlan,
        macspoofchk: raw.macspoofchk,
        enable_dad: raw.enabledad,
        disable_container_interface: raw.disable_container_interface,
        port_isolation: raw.port_isolation,
        ipam_type,
        dns,
        mac: container_mac(req)?,
        isolate_bridges: raw.isolate_bridges.unwrap_or(true),
    })
}

/// The reference's `collectVlanTrunk`, with its exact messages.
fn collect_trunk(list: Option<&[RawTrunk]>) -> Result<Option<Trunk>, CniError> {
    let Some(list) = list else { return Ok(None) };
    if list.is_empty() {
        return Ok(None);
    }
    let in_range = |v: i64| (1..=4094).contains(&v);
    let mut vids = Vec::new();
    for t in list {
        if let Some(id) = t.id {
            if !in_range(id) {
                return Err(CniError::config("incorrect trunk id parameter"));
            }
            vids.push(id as u16);
        }
        match (t.min_id, t.max_id) {
            (Some(min), Some(max)) => {
                if !in_range(min) {
                    return Err(CniError::config("incorrect trunk minID parameter"));
                }
                if !in_range(max) {
                    return Err(CniError::config("incorrect trunk maxID parameter"));
                }
                if min > max {
                    return Err(CniError::config(
                        "minID is greater than maxID in trunk parameter",
                    ));
                }
                vids.extend((min..=max).map(|v| v as u16));
            }
            (None, Some(_)) => {
                return Err(CniError::config(
                    "minID and maxID should be configured simultaneously, minID is missing",
                ))
            }
            (Some(_), None) => {
                return Err(CniError::config(
                    "minID and maxID should be configured simultaneously, maxID is missing",
                ))
            }
            (None, None) => {}
        }
    }
    vids.sort_unstable();
    vids.dedup();
    Ok(Some(Trunk { vids }))
}

/// Parses a MAC (see [`cni_netlink::parse_mac`]); a bad one is an invalid config.
pub fn parse_mac(s: &str) -> Result<[u8; 6], CniError> {
    cni_netlink::parse_mac(s).map_err(CniError::config)
}

pub use cni_netlink::fmt_mac as format_mac;

fn container_mac(req: &Request) -> Result<Option<[u8; 6]>, CniError> {
    let as_str = |v: &Value, what: &str| -> Result<String, CniError> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| CniError::config(format!("{what} must be a string")))
    };
    if let Some(v) = req.runtime_config("mac") {
        return parse_mac(&as_str(v, "runtimeConfig.mac")?).map(Some);
    }
    if let Some(v) = req.args_cni("mac") {
        return parse_mac(&as_str(v, "args.cni.mac")?).map(Some);
    }
    let a = args::parse(&req.env.args, &["MAC"])?;
    match a.get("MAC") {
        Some(m) => parse_mac(m).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(j: &str) -> Result<Option<Trunk>, CniError> {
        let v: Vec<RawTrunk> = serde_json::from_str(j).unwrap();
        collect_trunk(Some(&v))
    }

    #[test]
    fn trunks() {
        assert_eq!(trunk("[]").unwrap(), None);
        let t = trunk(r#"[{"id":101},{"minid":200,"maxid":202},{"id":201}]"#)
            .unwrap()
            .unwrap();
        assert_eq!(t.vids, vec![101, 200, 201, 202]);
        for (j, m) in [
            (r#"[{"id":0}]"#, "incorrect trunk id parameter"),
            (r#"[{"id":4095}]"#, "incorrect trunk id parameter"),
            (
                r#"[{"minid":0,"maxid":3}]"#,
                "incorrect trunk minID parameter",
            ),
            (
                r#"[{"minid":1,"maxid":5000}]"#,
                "incorrect trunk maxID parameter",
            ),
            (
                r#"[{"minid":5,"maxid":3}]"#,
                "minID is greater than maxID in trunk parameter",
            ),
            (
                r#"[{"maxid":3}]"#,
                "minID and maxID should be configured simultaneously, minID is missing",
            ),
            (
                r#"[{"minid":3}]"#,
                "minID and maxID should be configured simultaneously, maxID is missing",
            ),
        ] {
            assert_eq!(trunk(j).unwrap_err().msg, m, "{j}");
        }
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:42:AC:11:00:02").unwrap(),
            [2, 0x42, 0xac, 0x11, 0, 2]
        );
        assert_eq!(parse_mac("02-42-ac-11-00-02").unwrap()[5], 2);
        assert_eq!(parse_mac("0242.ac11.0002").unwrap()[2], 0xac);
        for bad in [
            "",
            "02:42:ac:11:00",
            "zz:42:ac:11:00:02",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "02:42:ac:11:00:02:03",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
        assert_eq!(format_mac(&[2, 0, 0, 0, 0, 0xab]), "02:00:00:00:00:ab");
    }
}
