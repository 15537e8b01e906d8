//! Bridge-port settings of the host veth: hairpin, isolation and VLANs; and the VLAN gateway
//! interface `<bridge>.<vlan>`.

use cni_core::CniError;
use cni_netlink::{LinkInfo, Veth};

use crate::config::Conf;
use crate::errors::NlContext;
use crate::ids;
use crate::sys::Links;

/// Applies hairpin/isolation and VLANs to the freshly created host veth `port`.
pub fn configure(nl: &mut impl Links, port: &LinkInfo, conf: &Conf) -> Result<(), CniError> {
    // A new port starts with both off: only write what differs (one round trip saved per ADD).
    if conf.hairpin || conf.port_isolation {
        nl.set_bridge_port(port.index, conf.hairpin, conf.port_isolation)
            .ctx(|| format!("set hairpin/isolation on {:?}", port.name))?;
    }
    if conf.vlan == 0 && conf.trunk.is_none() {
        return Ok(());
    }
    let name = &port.name;
    if !conf.preserve_default_vlan {
        for v in nl
            .bridge_vlan_list(port.index)
            .ctx(|| format!("list vlans of {name:?}"))?
        {
            nl.bridge_vlan_del(port.index, v.vid)
                .ctx(|| format!("remove default vlan {} from {name:?}", v.vid))?;
        }
    }
    if conf.vlan != 0 {
        nl.bridge_vlan_add(port.index, conf.vlan, true, true, true)
            .ctx(|| format!("add vlan {} to {name:?}", conf.vlan))?;
    }
    if let Some(t) = &conf.trunk {
        for r in runs(&t.vids) {
            nl.bridge_vlan_add_range(port.index, r.clone(), false, true)
                .ctx(|| format!("add trunk vlans {}-{} to {name:?}", r.start(), r.end()))?;
        }
        if conf.vlan == 0 {
            // Untagged frames of a trunk-only port travel on VLAN 1, as in the reference.
            nl.bridge_vlan_add(port.index, 1, true, true, true)
                .ctx(|| format!("add native vlan 1 to {name:?}"))?;
        }
    }
    Ok(())
}

/// Groups sorted VLAN IDs into contiguous ranges, so a trunk is a few requests, not thousands.
fn runs(vids: &[u16]) -> Vec<std::ops::RangeInclusive<u16>> {
    let mut out = Vec::new();
    let mut iter = vids.iter().copied();
    let Some(mut start) = iter.next() else {
        return out;
    };
    let mut end = start;
    for v in iter {
        if v == end + 1 {
            end = v;
        } else {
            out.push(start..=end);
            start = v;
            end = v;
        }
    }
    out.push(start..=end);
    out
}

/// The interface that carries the gateway addresses of a VLAN network: a host-side veth named
/// `<bridge>.<vlan>` whose peer is a bridge port with that VLAN as PVID (reference layout).
pub fn ensure_vlan_gateway_if(
    nl: &mut impl Links,
    br: &LinkInfo,
    vlan: u16,
    mtu: u32,
) -> Result<LinkInfo, CniError> {
    let name = format!("{}.{vlan}", br.name);
    if let Some(l) = nl.link_by_name(&name).ctx(|| format!("look up {name:?}"))? {
        if !l.is_veth() {
            return Err(CniError::internal(format!(
                "{name:?} exists but is not a veth; remove it so the VLAN gateway interface can be created"
            )));
        }
        return Ok(l);
    }
    let peer = ids::host_veth_name();
    let created = nl.create_veth(&Veth {
        name: &name,
        peer_name: &peer,
        mtu: (mtu != 0).then_some(mtu),
        up: true,
        ..Default::default()
    });
    let l = match created {
        Ok(l) => l,
        Err(e) if e.is_exists() => {
            return nl
                .link_by_name(&name)
                .ctx(|| format!("look up {name:?}"))?
                .ok_or_else(|| CniError::internal(format!("{name:?} vanished")))
        }
        Err(e) => {
            return Err(CniError::internal(format!(
                "failed to create {name:?}: {e}"
            )))
        }
    };
    let p = nl
        .link_by_name(&peer)
        .ctx(|| format!("look up {peer:?}"))?
        .ok_or_else(|| CniError::internal(format!("peer {peer:?} of {name:?} vanished")))?;
    nl.update_link(
        p.index,
        &cni_netlink::LinkUpdate {
            master: Some(br.index),
            up: Some(true),
            ..Default::default()
        },
    )
    .ctx(|| format!("attach {peer:?} to bridge {:?}", br.name))?;
    for v in nl
        .bridge_vlan_list(p.index)
        .ctx(|| format!("list vlans of {peer:?}"))?
    {
        let _ = nl.bridge_vlan_del(p.index, v.vid);
    }
    nl.bridge_vlan_add(p.index, vlan, true, true, true)
        .ctx(|| format!("add vlan {vlan} to {peer:?}"))?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_runs() {
        assert!(runs(&[]).is_empty());
        assert_eq!(runs(&[5]), vec![5..=5]);
        assert_eq!(runs(&[1, 2, 3, 7, 9, 10]), vec![1..=3, 7..=7, 9..=10]);
    }
}
