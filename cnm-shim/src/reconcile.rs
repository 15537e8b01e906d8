//! Startup reconciliation: dockerd replays nothing after a restart (of itself or of the shim),
//! so the shim finishes or undoes what a crash interrupted (the persisted phases say what) and
//! removes what no network or endpoint of its state owns: host-local reservations, masquerade
//! elements, published ports, internal-bridge marks and stray endpoint links.
//!
//! Everything here is best-effort and logged: a failure must not keep the plugin from
//! serving docker.

use std::collections::HashSet;

use crate::cni::{self, IFNAME};
use crate::endpoint;
use crate::ipam;
use crate::network;
use crate::ports;
use crate::shim::Shim;
use crate::state::{Phase, ResPhase};

pub fn run(shim: &Shim) {
    // 1. RequestAddress calls cut short (state files of older versions): docker never got
    //    the address.
    let allocating: Vec<String> = shim.read(|s| {
        s.reservations
            .values()
            .filter(|r| r.phase == ResPhase::Allocating)
            .map(|r| r.handle.clone())
            .collect()
    });
    for h in allocating {
        crate::info!("reconcile: releasing interrupted address request {h}");
        if let Err(e) = ipam::release_handle(shim, &h) {
            crate::warn!("reconcile: {e}");
        }
    }
    // 2. Endpoints half-created (undo) or half-deleted (finish).
    let eps: Vec<_> = shim.read(|s| {
        s.endpoints
            .values()
            .filter(|e| e.phase != Phase::Ready)
            .cloned()
            .collect()
    });
    for ep in eps {
        crate::info!(
            "reconcile: finishing interrupted {:?} of endpoint {}",
            ep.phase,
            ep.id
        );
        if let Err(e) = endpoint::remove(shim, &ep) {
            crate::warn!("reconcile: {e}");
        }
    }
    // 3. Networks half-deleted.
    let nets: Vec<_> = shim.read(|s| {
        s.networks
            .values()
            .filter(|n| n.phase == Phase::Deleting)
            .cloned()
            .collect()
    });
    for n in nets {
        crate::info!("reconcile: finishing the deletion of network {}", n.id);
        if let Err(e) = network::teardown(shim, &n) {
            crate::warn!("reconcile: {e}");
        }
    }
    // 4. Reservations nobody needs any more (release interrupted after the state update).
    let finished: Vec<String> = shim.read(|s| {
        s.reservations
            .values()
            .filter(|r| r.finished())
            .map(|r| r.handle.clone())
            .collect()
    });
    for h in finished {
        if let Err(e) = ipam::release_handle(shim, &h) {
            crate::warn!("reconcile: {e}");
        }
    }
    // 5. Store entries no reservation explains. In a store shared with another runtime
    //    (bound networks) only entries with the shim's ifname are its own; the others belong
    //    to that runtime's containers and are never touched.
    let known: HashSet<String> = shim.read(|s| s.reservations.keys().cloned().collect());
    for store in shim.stores() {
        let mut done = HashSet::new();
        for (ip, id, _) in cni::store_entries(&shim.cfg, &store) {
            if known.contains(&id) || !done.insert(id.clone()) {
                continue;
            }
            crate::info!(
                "reconcile: releasing {ip} in store {}, reserved by {id} which nothing owns",
                store.name
            );
            if let Err(e) = cni::release(&shim.runner, &store, &id) {
                crate::warn!("reconcile: {e}");
            }
        }
    }
    // 6. nftables: published ports and internal marks of what still exists.
    nft(shim);
    // 7. Masquerade elements of endpoints we do not have.
    if let Err(e) = endpoint::masq_gc(shim, None) {
        crate::warn!("reconcile: {e}");
    }
    // 8. Endpoint links of ours (by name, on one of our bridges) that no endpoint owns.
    links(shim);
}

fn nft(shim: &Shim) {
    let (eps, nets) = shim.read(|s| {
        (
            s.endpoints.values().cloned().collect::<Vec<_>>(),
            s.networks.values().cloned().collect::<Vec<_>>(),
        )
    });
    let live: HashSet<&str> = eps.iter().map(|e| e.id.as_str()).collect();
    {
        let _n = shim.lock_nft();
        let store = shim.cfg.store_name();
        let r = cni_nft::hostport::HostPorts::new().and_then(|mut t| {
            // Elements of our endpoints that are gone (the table is shared with CNI
            // containers: only our store name's owners are considered).
            for o in t.gc(&store, &|id, ifname| ifname == IFNAME && live.contains(id))? {
                crate::info!("reconcile: removed published ports of gone endpoint {o}");
            }
            for b in t.internal_bridges()? {
                if nets.iter().any(|n| n.bridge == b)
                    && !nets.iter().any(|n| n.internal && n.bridge == b)
                {
                    t.set_internal(&b, false)?;
                }
            }
            Ok(())
        });
        if let Err(e) = r {
            crate::warn!("reconcile: published ports: {e}");
        }
        // The per-shim table of earlier versions (one rule per mapping) is superseded.
        legacy_table(shim);
    }
    for n in nets.iter().filter(|n| n.internal) {
        let _n = shim.lock_nft();
        if let Err(e) =
            cni_nft::hostport::HostPorts::new().and_then(|mut t| t.set_internal(&n.bridge, true))
        {
            crate::warn!("reconcile: isolate {}: {e}", n.bridge);
        }
    }
    // Re-program published ports (a no-op when the rules are intact).
    for ep in eps.iter().filter(|e| !e.ports.is_empty()) {
        if let Some(n) = nets.iter().find(|n| n.id == ep.network) {
            if let Err(e) = ports::apply(shim, &n.bridge, &ep.id, &ep.ports, &ep.ports) {
                crate::warn!("reconcile: {e}");
            }
        }
    }
}

/// Deletes `table inet cnm_<name>` left by a shim version that kept its own port table.
fn legacy_table(shim: &Shim) {
    let table = shim.cfg.nft_table();
    let r = cni_nft::NftSocket::new().and_then(|mut s| {
        if !cni_nft::query::table_exists(&mut s, cni_nft::Family::Inet, &table)? {
            return Ok(());
        }
        let mut b = cni_nft::Batch::new();
        b.del_table(cni_nft::Family::Inet, &table);
        b.commit(&mut s)
    });
    match r {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => crate::warn!("reconcile: remove legacy table inet {table}: {e}"),
    }
}

fn is_endpoint_link_name(name: &str) -> bool {
    name.len() == 15 && name.starts_with("cnm") && name[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn links(shim: &Shim) {
    let (owned, bridges): (HashSet<String>, HashSet<String>) = shim.read(|s| {
        (
            s.endpoints.values().map(|e| e.link.clone()).collect(),
            s.networks.values().map(|n| n.bridge.clone()).collect(),
        )
    });
    let all = match crate::netns::links() {
        Ok(l) => l,
        Err(e) => {
            crate::warn!("reconcile: {e}");
            return;
        }
    };
    let bridge_index: HashSet<u32> = all
        .iter()
        .filter(|l| l.is_bridge() && bridges.contains(&l.name))
        .map(|l| l.index)
        .collect();
    for l in &all {
        if !l.is_veth() || !is_endpoint_link_name(&l.name) || owned.contains(&l.name) {
            continue;
        }
        // Ours only if its peer is a port of one of our bridges (same netns).
        let peer_on_ours = l.link_netnsid.is_none()
            && l.link
                .and_then(|p| all.iter().find(|x| x.index == p))
                .and_then(|p| p.master)
                .is_some_and(|m| bridge_index.contains(&m));
        if peer_on_ours {
            crate::info!("reconcile: deleting stray endpoint link {}", l.name);
            if let Err(e) = crate::netns::delete_link(&l.name, "veth") {
                crate::warn!("reconcile: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn link_names() {
        assert!(super::is_endpoint_link_name("cnm0123456789ab"));
        assert!(!super::is_endpoint_link_name("cnm-0123456789a"));
        assert!(!super::is_endpoint_link_name("cnm0123"));
    }
}
