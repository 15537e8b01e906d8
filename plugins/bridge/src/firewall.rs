//! Masquerade, MAC spoof check and forwarding state of the bridge. The default backend speaks
//! nf_tables in-process (`cni_nft`): one transaction per ADD or DEL, per-container state as set
//! elements tagged with (network, containerID, ifname), so DEL without IPs and GC find them.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use cni_core::gc::ValidAttachments;
use cni_core::{CniError, CniResult};
use cni_nft::masq::MasqSetup;
use cni_nft::spoofchk::SpoofChk;
use cni_nft::NftSocket;

use crate::config::{Conf, MasqBackend};
use crate::iptables;

fn nft_err(e: cni_nft::Error) -> CniError {
    CniError::internal(e.to_string())
}

/// The host side of one attachment, as the firewall needs it.
pub struct Port<'a> {
    pub bridge: &'a str,
    pub host_veth: &'a str,
    /// The container interface's MAC: the only source MAC allowed from `host_veth` with
    /// `macspoofchk`.
    pub container_mac: [u8; 6],
}

/// Drops frames from the host veth whose source MAC is not the container's (when
/// `macspoofchk`), lets the bridge's traffic through a dockerd-managed FORWARD chain (dockerd
/// sets its policy to DROP and loads br_netfilter), isolates it from our other bridges (unless
/// `isolateBridges` is false), and programs masquerade for the attachment (when `ipMasq`).
pub fn setup(
    conf: &Conf,
    id: &str,
    ifname: &str,
    port: &Port<'_>,
    result: &CniResult,
) -> Result<(), CniError> {
    if conf.macspoofchk {
        SpoofChk::new()
            .and_then(|mut s| s.add(&conf.name, id, ifname, port.host_veth, port.container_mac))
            .map_err(|e| nft_err(e).context("failed to set up macspoofchk"))?;
    }
    let bridge = port.bridge;
    // One nf_tables socket for forwarding and masquerade (each socket costs ~10 syscalls).
    let fwd_err =
        |e| nft_err(e).context(format!("failed to set up forwarding for bridge {bridge:?}"));
    let mut sock = NftSocket::new().map_err(fwd_err)?;
    cni_nft::forward::ensure_bridge_forwarding_with(&mut sock, bridge, conf.isolate_bridges)
        .map_err(fwd_err)?;
    if !conf.ip_masq || result.ips.is_empty() {
        return Ok(());
    }
    let ips: Vec<IpNetwork> = result.ips.iter().map(|i| i.address).collect();
    match conf.masq_backend {
        MasqBackend::Nftables => {
            let pairs: Vec<(IpAddr, u8)> = ips.iter().map(|n| (n.ip(), n.prefix())).collect();
            MasqSetup::with_socket(sock)
                .add(&conf.name, id, ifname, &pairs)
                .map_err(|e| nft_err(e).context("failed to set up masquerade"))
        }
        MasqBackend::Iptables => iptables::setup(&conf.name, id, &ips),
    }
}

/// Removes the attachment's spoof check (found by its tag: the host veth and MAC are not
/// needed) and masquerade state (`ips` when known, from prevResult or the live link, otherwise
/// by tag). Missing state is success; both parts are attempted even if one fails.
pub fn teardown(
    conf: &Conf,
    id: &str,
    ifname: &str,
    ips: Option<&[IpAddr]>,
) -> Result<(), CniError> {
    let spoof = if conf.macspoofchk {
        let ctx = "failed to remove macspoofchk";
        SpoofChk::new()
            .map_err(|e| nft_err(e).context(ctx))
            .and_then(|mut s| {
                let r = s
                    .del(&conf.name, id, ifname)
                    .map_err(|e| nft_err(e).context(ctx));
                crate::reaper::linger(s); // its close is slow after a delete: see reaper
                r
            })
    } else {
        Ok(())
    };
    let masq = teardown_masq(conf, id, ifname, ips);
    match (spoof, masq) {
        (Ok(()), r) | (r, Ok(())) => r,
        (Err(a), Err(b)) => Err(CniError::internal(format!("{a}; {b}"))),
    }
}

fn teardown_masq(
    conf: &Conf,
    id: &str,
    ifname: &str,
    ips: Option<&[IpAddr]>,
) -> Result<(), CniError> {
    if !conf.ip_masq {
        return Ok(());
    }
    match conf.masq_backend {
        MasqBackend::Nftables => {
            let mut m =
                MasqSetup::new().map_err(|e| nft_err(e).context("failed to remove masquerade"))?;
            let r = m
                .del(&conf.name, id, ifname, ips)
                .map_err(|e| nft_err(e).context("failed to remove masquerade"));
            crate::reaper::linger(m); // its close is slow after a delete: see reaper
            r
        }
        MasqBackend::Iptables => iptables::teardown(&conf.name, id, ips),
    }
}

/// Drops the forwarding state (isolation elements, DOCKER-USER accepts) of a bridge that no
/// longer exists, e.g. deleted by hand: nothing else would ever remove it. (A bridge that
/// exists keeps it, whoever else uses it.)
pub fn gc_gone_bridge(bridge: &str) -> Result<(), CniError> {
    cni_nft::forward::remove_bridge_forwarding(bridge).map_err(|e| {
        nft_err(e).context(format!("GC of forwarding state of gone bridge {bridge:?}"))
    })
}

/// Drops masquerade and spoof check elements of this network whose attachment is not in
/// `valid`. Runs whatever `ipMasq`/`macspoofchk` say now: they may have been on when the
/// stale attachments were made.
pub fn gc(conf: &Conf, valid: &ValidAttachments) -> Result<(), CniError> {
    let keep = |id: &str, ifname: &str| valid.keeps(id, ifname);
    let masq = MasqSetup::new()
        .and_then(|mut m| m.gc(&conf.name, &keep))
        .map(|_| ())
        .map_err(|e| nft_err(e).context("GC of masquerade state"));
    let spoof = SpoofChk::new()
        .and_then(|mut s| s.gc(&conf.name, &keep))
        .map(|_| ())
        .map_err(|e| nft_err(e).context("GC of macspoofchk state"));
    match (masq, spoof) {
        (Ok(()), r) | (r, Ok(())) => r,
        (Err(a), Err(b)) => Err(CniError::internal(format!("{a}; {b}"))),
    }
}
