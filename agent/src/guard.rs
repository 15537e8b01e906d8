//! The agent's use of `cni_nft::vxlan_guard`: the set of VTEPs allowed to send VXLAN for a
//! VNI follows the hosts listed in etcd (same reconcile as the routes).

use std::net::Ipv4Addr;

use anyhow::{Context, Result};

pub fn sync(vni: u32, port: u16, vteps: &[Ipv4Addr]) -> Result<()> {
    let mut v = vteps.to_vec();
    v.sort();
    v.dedup();
    cni_nft::vxlan_guard::sync(vni, port, &v)
        .map(drop)
        .with_context(|| format!("nftables VXLAN guard for vni {vni}"))
}

pub fn remove(vni: u32) -> Result<()> {
    cni_nft::vxlan_guard::remove(vni)
        .with_context(|| format!("remove nftables VXLAN guard for vni {vni}"))
}
