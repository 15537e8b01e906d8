//! Masquerade and forwarding state of the bridge. The default backend speaks nf_tables
//! in-process (`cni_nft`): one transaction per ADD or DEL, per-container state as map elements
//! tagged with (network, containerID, ifname), so DEL without IPs and GC find them.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use cni_core::{CniError, CniResult};
use cni_nft::masq::MasqSetup;

use crate::config::{Conf, MasqBackend};
use crate::iptables;

fn nft_err(e: cni_nft::Error) -> CniError {
    CniError::internal(e.to_string())
}

/// Lets the bridge's traffic through a dockerd-managed FORWARD chain (dockerd sets its policy
/// to DROP and loads br_netfilter), isolates it from our other bridges (unless
/// `isolateBridges` is false), and programs masquerade for the attachment (when `ipMasq`).
pub fn setup(
    conf: &Conf,
    id: &str,
    ifname: &str,
    bridge: &str,
    result: &CniResult,
) -> Result<(), CniError> {
    cni_nft::forward::ensure_bridge_forwarding(bridge, conf.isolate_bridges).map_err(|e| {
        nft_err(e).context(format!("failed to set up forwarding for bridge {bridge:?}"))
    })?;
    if !conf.ip_masq || result.ips.is_empty() {
        return Ok(());
    }
    let ips: Vec<IpNetwork> = result.ips.iter().map(|i| i.address).collect();
    match conf.masq_backend {
        MasqBackend::Nftables => {
            let pairs: Vec<(IpAddr, u8)> = ips.iter().map(|n| (n.ip(), n.prefix())).collect();
            MasqSetup::new()
                .and_then(|mut m| m.add(&conf.name, id, ifname, &pairs))
                .map_err(|e| nft_err(e).context("failed to set up masquerade"))
        }
        MasqBackend::Iptables => iptables::setup(&conf.name, id, &ips),
    }
}

/// Removes the attachment's masquerade state; `ips` when known (prevResult or the live link),
/// otherwise elements are found by their tag. Missing state is success.
pub fn teardown(
    conf: &Conf,
    id: &str,
    ifname: &str,
    ips: Option<&[IpAddr]>,
) -> Result<(), CniError> {
    if !conf.ip_masq {
        return Ok(());
    }
    match conf.masq_backend {
        MasqBackend::Nftables => MasqSetup::new()
            .and_then(|mut m| m.del(&conf.name, id, ifname, ips))
            .map_err(|e| nft_err(e).context("failed to remove masquerade")),
        MasqBackend::Iptables => iptables::teardown(&conf.name, id, ips),
    }
}

/// Drops masquerade elements of this network whose attachment is not in `valid`.
pub fn gc(conf: &Conf, valid: &[(String, String)]) -> Result<(), CniError> {
    let v: Vec<(&str, &str)> = valid
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    MasqSetup::new()
        .and_then(|mut m| m.gc(&conf.name, &v))
        .map(|_| ())
        .map_err(|e| nft_err(e).context("GC of masquerade state"))
}
