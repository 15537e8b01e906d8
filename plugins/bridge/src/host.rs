//! Host-side network objects: the bridge itself and its gateway addresses.

use ipnetwork::IpNetwork;

use cni_core::CniError;
use cni_netlink::{Family, LinkInfo, LinkUpdate};

use crate::config::Conf;
use crate::errors::NlContext;
use crate::ids;
use crate::sys::{Links, Sys};

/// Returns the bridge, creating it if missing (`existing` is the caller's lookup of the name);
/// an existing link of another kind is an error. Idempotent check-then-set for promisc, up,
/// and the pinned MAC.
pub fn ensure_bridge<S: Sys>(
    sys: &mut S,
    nl: &mut S::Links,
    conf: &Conf,
    existing: Option<LinkInfo>,
) -> Result<LinkInfo, CniError> {
    let name = &conf.bridge;
    let mut br = match existing {
        Some(l) => l,
        None => {
            let vlan_filtering = conf.vlan != 0 || conf.trunk.is_some();
            let mtu = (conf.mtu != 0).then_some(conf.mtu);
            match nl.create_bridge(name, mtu, vlan_filtering, Some(ids::bridge_mac(name))) {
                Ok(l) => {
                    // New bridge: the reference turns off router advertisements on it.
                    let _ = sys.sysctl_set(&format!("net/ipv6/conf/{name}/accept_ra"), "0");
                    l
                }
                // Another ADD created it concurrently: use theirs.
                Err(e) if e.is_exists() => nl
                    .link_by_name(name)
                    .ctx(|| format!("look up bridge {name:?}"))?
                    .ok_or_else(|| {
                        CniError::internal(format!("bridge {name:?} vanished while being created"))
                    })?,
                Err(e) => {
                    return Err(CniError::internal(format!(
                        "failed to create bridge {name:?}: {e}"
                    )))
                }
            }
        }
    };
    if !br.is_bridge() {
        return Err(CniError::config(format!(
            "{name:?} already exists but is not a bridge (kind {}); set \"bridge\" to another name or remove that link",
            br.kind.as_deref().unwrap_or("none")
        )));
    }
    let mut upd = LinkUpdate::default();
    if !br.is_up() {
        upd.up = Some(true);
    }
    if conf.promisc && !br.is_promisc() {
        upd.promisc = Some(true);
    }
    // A bridge made by someone else (or by the reference) may have no pinned MAC; a zero MAC
    // is what the kernel leaves once the last port is gone.
    if br.mac.is_none() || br.mac == Some([0; 6]) {
        upd.mac = Some(ids::bridge_mac(name));
    }
    if upd.up.is_some() || upd.promisc.is_some() || upd.mac.is_some() {
        nl.update_link(br.index, &upd)
            .ctx(|| format!("configure bridge {name:?}"))?;
        if let Some(m) = upd.mac {
            br.mac = Some(m);
        }
    }
    Ok(br)
}

/// Puts every gateway address on `link` (the bridge, or `<bridge>.<vlan>`), like the
/// reference's `ensureAddr`: an exact match is kept; a different IPv4 address, or an
/// overlapping IPv6 one, is an error unless `forceAddress`, which replaces it. Several IPv4
/// gateways of the same ADD (several v4 range sets) may coexist.
pub fn ensure_gateway_addrs<S: Sys>(
    sys: &mut S,
    nl: &mut S::Links,
    link: &LinkInfo,
    gws: &[IpNetwork],
    force: bool,
) -> Result<(), CniError> {
    if gws.is_empty() {
        return Ok(());
    }
    // One dump for both families (a dual-stack ADD would otherwise make two).
    let all = nl
        .addresses(Some(link.index), None)
        .ctx(|| format!("list addresses of {:?}", link.name))?;
    for fam in [Family::V4, Family::V6] {
        let wanted: Vec<&IpNetwork> = gws
            .iter()
            .filter(|g| g.is_ipv4() == (fam == Family::V4))
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let existing: Vec<_> = all.iter().filter(|a| Family::of(&a.ip) == fam).collect();
        for gw in &wanted {
            if existing
                .iter()
                .any(|a| a.ip == gw.ip() && a.prefix_len == gw.prefix())
            {
                continue;
            }
            for a in &existing {
                if a.scope != 0 {
                    continue; // link-local and host-scope addresses never conflict
                }
                let other = IpNetwork::new(a.ip, a.prefix_len).ok();
                let ours = wanted
                    .iter()
                    .any(|w| w.ip() == a.ip && w.prefix() == a.prefix_len);
                let conflicts = match other {
                    Some(o) if fam == Family::V6 => o.contains(gw.ip()) || gw.contains(o.ip()),
                    Some(_) => !ours,
                    None => false,
                };
                if !conflicts {
                    continue;
                }
                if !force {
                    return Err(CniError::internal(format!(
                        "{:?} already has an IP address different from {gw} ({}/{}); set \"forceAddress\": true to replace it, or use another bridge",
                        link.name, a.ip, a.prefix_len
                    )));
                }
                nl.del_address(link.index, a.ip, a.prefix_len)
                    .ctx(|| format!("remove {}/{} from {:?}", a.ip, a.prefix_len, link.name))?;
            }
            match nl.add_address(link.index, gw.ip(), gw.prefix(), gw.is_ipv6()) {
                Ok(()) => {}
                Err(e) if e.is_exists() => {} // a parallel ADD added it first
                Err(e) => {
                    return Err(CniError::internal(format!(
                        "could not add IP address {gw} to {:?}: {e}",
                        link.name
                    )))
                }
            }
        }
        let sysctl = if fam == Family::V4 {
            "net/ipv4/ip_forward"
        } else {
            "net/ipv6/conf/all/forwarding"
        };
        sys.sysctl_set(sysctl, "1").map_err(|e| {
            CniError::internal(format!("failed to enable forwarding ({sysctl}): {e}"))
        })?;
    }
    Ok(())
}
