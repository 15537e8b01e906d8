//! The reference's `FirewallNetConf` keys, parsed with Go's leniency and validated before
//! anything is touched.

use serde::Deserialize;

use cni_core::{CniError, Request};
use cni_nft::firewall::{validate_admin_chain, DEFAULT_ADMIN_CHAIN};

/// `backend`: every name maps to the one nf_tables implementation; kept for messages and docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Iptables,
    Firewalld,
    Nftables,
}

/// `ingressPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    Open,
    SameBridge,
}

#[derive(Debug, Clone)]
pub struct Conf {
    pub name: String,
    pub backend: Backend,
    pub admin_chain: String,
    /// Accepted for compatibility; we program no firewalld zone (see docs/firewall.md).
    pub firewalld_zone: String,
    pub ingress: Ingress,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Raw {
    backend: String,
    #[serde(rename = "iptablesadminchainname")]
    iptables_admin_chain_name: String,
    #[serde(rename = "firewalldzone")]
    firewalld_zone: String,
    #[serde(rename = "ingresspolicy")]
    ingress_policy: String,
}

/// Parses and validates the config; nothing on the host is touched.
pub fn load(req: &Request) -> Result<Conf, CniError> {
    let raw: Raw = req.decode("netconf")?;
    let backend = match raw.backend.as_str() {
        "" | "iptables" => Backend::Iptables,
        "firewalld" => Backend::Firewalld,
        "nftables" => Backend::Nftables,
        other => {
            return Err(CniError::config(format!("unknown backend: {other:?}")).with_details(
                "key \"backend\" must be \"iptables\" (default), \"firewalld\" or \"nftables\"; all three use native nf_tables",
            ))
        }
    };
    let ingress = match raw.ingress_policy.as_str() {
        "" | "open" => Ingress::Open,
        "same-bridge" => Ingress::SameBridge,
        "isolated" => {
            return Err(CniError::config(
                "unsupported ingress policy: \"isolated\"",
            )
            .with_details(
                "key \"ingressPolicy\": \"isolated\" (no traffic between containers of the same bridge) is not implemented by this plugin; use \"same-bridge\" here together with the bridge plugin's \"portIsolation\": true",
            ))
        }
        other => {
            return Err(CniError::config(format!("unknown ingress policy: {other:?}"))
                .with_details("key \"ingressPolicy\" must be \"open\" (default) or \"same-bridge\""))
        }
    };
    let admin_chain = if raw.iptables_admin_chain_name.is_empty() {
        DEFAULT_ADMIN_CHAIN.to_string()
    } else {
        raw.iptables_admin_chain_name
    };
    validate_admin_chain(&admin_chain).map_err(|e| CniError::config(e.to_string()))?;
    let firewalld_zone = if raw.firewalld_zone.is_empty() {
        "trusted".to_string()
    } else {
        raw.firewalld_zone
    };
    Ok(Conf {
        name: req.name.clone(),
        backend,
        admin_chain,
        firewalld_zone,
        ingress,
    })
}
