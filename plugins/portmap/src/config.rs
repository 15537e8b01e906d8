//! The portmap configuration: every key of the reference `PortMapConf`,
//! parsed with Go's leniency (`cni_core::json`) and validated before
//! anything is touched.

use std::net::IpAddr;

use serde::Deserialize;

use cni_core::{CniError, CniResult, Request};
use cni_nft::hostport::{Lane, Mapping};

/// The reference's default `markMasqBit`.
const DEFAULT_MARK_BIT: i64 = 13;

/// One `runtimeConfig.portMappings` entry, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMap {
    pub host_port: u16,
    pub container_port: u16,
    /// IPPROTO_* number.
    pub proto: u8,
    /// `None`: any host address (unset, "", 0.0.0.0 or ::).
    pub host_ip: Option<IpAddr>,
    /// The entry named a host IP (possibly unspecified): it only applies to
    /// that family.
    pub host_family_v6: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct Conf {
    pub snat: bool,
    pub masq_all: bool,
    pub lane4: Option<Lane>,
    pub lane6: Option<Lane>,
    pub ports: Vec<PortMap>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Raw {
    snat: Option<bool>,
    #[serde(rename = "masqall")]
    masq_all: Option<bool>,
    #[serde(rename = "markmasqbit")]
    mark_masq_bit: Option<i64>,
    #[serde(rename = "externalsetmarkchain")]
    external_set_mark_chain: Option<String>,
    #[serde(rename = "conditionsv4")]
    conditions_v4: Option<Vec<String>>,
    #[serde(rename = "conditionsv6")]
    conditions_v6: Option<Vec<String>>,
    backend: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawPort {
    #[serde(rename = "hostport")]
    host_port: i64,
    #[serde(rename = "containerport")]
    container_port: i64,
    protocol: String,
    #[serde(rename = "hostip")]
    host_ip: String,
}

pub fn load(req: &Request) -> Result<Conf, CniError> {
    let raw: Raw = req.decode("portmap config")?;
    if raw.mark_masq_bit.is_some() && raw.external_set_mark_chain.is_some() {
        return Err(CniError::config(
            "Cannot specify externalSetMarkChain and markMasqBit",
        ));
    }
    let bit = raw.mark_masq_bit.unwrap_or(DEFAULT_MARK_BIT);
    if !(0..=31).contains(&bit) {
        return Err(CniError::config("MasqMarkBit must be between 0 and 31"));
    }
    match raw.backend.as_deref() {
        None | Some("") | Some("iptables") | Some("nftables") => {}
        Some(b) => {
            return Err(CniError::config(format!(
                "unknown portmap backend {b:?}; use \"nftables\" or \"iptables\" (both are served by nftables)"
            )))
        }
    }
    let lane4 = lane(raw.conditions_v4.as_deref(), false)?;
    let lane6 = lane(raw.conditions_v6.as_deref(), true)?;
    let raw_ports: Vec<RawPort> = match req.runtime_config("portMappings") {
        None => Vec::new(),
        Some(v) => cni_core::json::decode(v, "runtimeConfig.portMappings")?,
    };
    let mut ports = Vec::with_capacity(raw_ports.len());
    for p in raw_ports {
        ports.push(port(p)?);
    }
    Ok(Conf {
        snat: raw.snat.unwrap_or(true),
        masq_all: raw.masq_all.unwrap_or(false),
        lane4,
        lane6,
        ports,
    })
}

/// `conditionsV4`/`conditionsV6` as a lane (`cni_nft::conditions`, the one parser the table
/// also uses to rebuild lanes); what it cannot translate is refused with code 7.
fn lane(conds: Option<&[String]>, v6: bool) -> Result<Option<Lane>, CniError> {
    cni_nft::conditions::parse(conds.unwrap_or_default(), v6).map_err(|e| match e {
        cni_nft::Error::Invalid(m) => CniError::config(m),
        e => CniError::config(e.to_string()),
    })
}

fn port(p: RawPort) -> Result<PortMap, CniError> {
    if p.container_port <= 0 || p.container_port > 65535 {
        return Err(CniError::config(format!(
            "Invalid container port number: {}",
            p.container_port
        )));
    }
    if p.host_port <= 0 || p.host_port > 65535 {
        return Err(CniError::config(format!(
            "Invalid host port number: {}",
            p.host_port
        )));
    }
    let proto = match p.protocol.to_ascii_lowercase().as_str() {
        "" | "tcp" => 6,
        "udp" => 17,
        "sctp" => 132,
        other => {
            return Err(CniError::config(format!(
                "port mapping {}: unknown protocol {other:?}; use tcp, udp or sctp",
                p.host_port
            )))
        }
    };
    let (host_ip, host_family_v6) = if p.host_ip.is_empty() {
        (None, None)
    } else {
        let ip: IpAddr = p.host_ip.parse().map_err(|_| {
            CniError::config(format!(
                "port mapping {}/{}: hostIP {:?} is not an IP address",
                p.host_port, p.protocol, p.host_ip
            ))
        })?;
        (Some(ip).filter(|i| !i.is_unspecified()), Some(ip.is_ipv6()))
    };
    Ok(PortMap {
        host_port: p.host_port as u16,
        container_port: p.container_port as u16,
        proto,
        host_ip,
        host_family_v6,
    })
}

/// The container's first IPv4 and first IPv6 address on `ifname`, as the
/// reference picks them from prevResult (addresses of other or host-side
/// interfaces are skipped).
pub fn container_ips(prev: &CniResult, ifname: &str) -> Vec<IpAddr> {
    let mut v4 = None;
    let mut v6 = None;
    for ip in &prev.ips {
        if let Some(i) = ip.interface {
            if let Some(intf) = prev.interfaces.get(i) {
                if intf.name != ifname || intf.sandbox.is_empty() {
                    continue;
                }
            }
        }
        let a = ip.address.ip();
        let slot = if a.is_ipv6() { &mut v6 } else { &mut v4 };
        if slot.is_none() {
            *slot = Some(a);
        }
    }
    [v4, v6].into_iter().flatten().collect()
}

/// The mappings for the container addresses `ips` (a host IP of the other
/// family skips the entry, as the reference does).
pub fn mappings(ports: &[PortMap], ips: &[IpAddr]) -> Vec<Mapping> {
    let mut out = Vec::new();
    for ip in ips {
        for p in ports {
            if p.host_family_v6.is_some_and(|v6| v6 != ip.is_ipv6()) {
                continue;
            }
            out.push(Mapping {
                proto: p.proto,
                host_ip: p.host_ip,
                host_port: p.host_port,
                dest: *ip,
                dest_port: p.container_port,
            });
        }
    }
    out
}
