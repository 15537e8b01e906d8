//! CreateNetwork / DeleteNetwork. A network is a bridge (`cnm-<id[:11]>` unless `-o bridge=`),
//! created by the `bridge` plugin at the first endpoint and deleted here (the plugin never
//! deletes bridges), plus its firewall state.

use std::net::IpAddr;

use serde_json::{json, Value};

use crate::api::{self, CreateNetwork, IpamData, NetworkRef};
use crate::endpoint;
use crate::err;
use crate::error::Result;
use crate::netns;
use crate::netopts;
use crate::pool;
use crate::shim::Shim;
use crate::state::{Network, Phase, Subnet};

fn subnet(data: &[IpamData], family: &str) -> Result<Option<Subnet>> {
    match data {
        [] => Ok(None),
        [d] => {
            let p = pool::parse_subnet(&d.pool, &format!("{family} subnet"))?;
            let gateway: Option<IpAddr> = if d.gateway.is_empty() {
                None
            } else {
                Some(pool::parse_addr(&d.gateway, "gateway")?.ip())
            };
            Ok(Some(Subnet { pool: p, gateway }))
        }
        _ => Err(err!(
            "cnm-shim supports one {family} subnet per network, got {}; pass a single --subnet per family",
            data.len()
        )),
    }
}

fn overlaps(a: &Network, b: &Network) -> bool {
    let subs = |n: &Network| {
        [n.v4.clone(), n.v6.clone()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
    };
    subs(a)
        .iter()
        .any(|x| subs(b).iter().any(|y| pool::overlaps(&x.pool, &y.pool)))
}

pub fn create(shim: &Shim, req: CreateNetwork) -> Result<Value> {
    let id = req.network_id.clone();
    if id.len() < 12 {
        return Err(err!("CreateNetwork: invalid NetworkID {id:?}"));
    }
    let empty = serde_json::Map::new();
    let generic = req
        .options
        .get(api::OPT_GENERIC)
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    // `cni.network` binds the network to a CNI network (crate::bind); the rest are bridge options.
    let mut generic = generic.clone();
    let cni_name = match generic.remove(crate::bind::OPT_CNI_NETWORK) {
        None => None,
        Some(Value::String(n)) if !n.is_empty() => Some(n),
        Some(v) => {
            return Err(err!(
                "network option cni.network={v}: give the name of a CNI network"
            ))
        }
    };
    // `cluster` joins a cluster network of cnm-agent (crate::cluster).
    let cluster = crate::cluster::take_options(&mut generic)?;
    if let (Some((c, _)), Some(n)) = (&cluster, &cni_name) {
        return Err(err!(
            "-o cluster={c} and -o cni.network={n} exclude each other; use one of them"
        ));
    }
    let opts = netopts::parse(&generic)?;
    let internal = req.options.get(api::OPT_INTERNAL).and_then(Value::as_bool) == Some(true);
    let v4 = subnet(&req.ipv4_data, "IPv4")?;
    let v6 = subnet(&req.ipv6_data, "IPv6")?;
    if v4.is_none() && v6.is_none() {
        return Err(err!(
            "CreateNetwork {id}: no subnet; give the network a --subnet"
        ));
    }
    let _g = shim.net_locks.lock(&id);
    if shim.read(|s| s.networks.contains_key(&id)) {
        return Ok(json!({}));
    }
    let binding = match &cluster {
        Some((name, sub)) => Some(join_cluster(
            shim, name, sub, &generic, &opts, &req, internal,
        )?),
        None => {
            shim.read(|s| crate::cluster::check_unbound(&shim.cfg, s, &req))?;
            shim.read(|s| {
                crate::bind::network(
                    &shim.cfg,
                    s,
                    cni_name.as_deref(),
                    &generic,
                    &opts,
                    &req,
                    internal,
                )
            })?
        }
    };
    let bridge = match &binding {
        Some(b) => b.bridge_name(),
        None => opts
            .bridge
            .clone()
            .unwrap_or_else(|| format!("cnm-{}", &id[..11])),
    };
    let mut net = Network {
        id: id.clone(),
        phase: Phase::Ready,
        bridge: bridge.clone(),
        bridge_preexisted: false,
        internal,
        ipam: false,
        v4,
        v6,
        opts,
        cni: binding,
    };
    let (conflicts, ipam): (Vec<(Network, bool)>, bool) = shim.read(|s| {
        let conflicts = s
            .networks
            .values()
            .filter(|o| o.bridge == bridge || overlaps(o, &net))
            .map(|o| (o.clone(), s.is_dead(o)))
            .collect();
        let ipam = [&net.v4, &net.v6]
            .into_iter()
            .flatten()
            .all(|sn| s.pools.values().any(|p| p.subnet == sn.pool));
        (conflicts, ipam)
    });
    net.ipam = ipam;
    for (old, dead) in conflicts {
        if !dead {
            return Err(err!(
                "cnm network {} already uses bridge {} or an overlapping subnet; choose another --subnet / -o bridge= or remove that network",
                &old.id[..12.min(old.id.len())],
                old.bridge
            ));
        }
        crate::warn!(
            "network {} (bridge {}) was released by docker but never deleted: removing it",
            old.id,
            old.bridge
        );
        let _og = shim.net_locks.lock(&old.id);
        if let Err(e) = teardown(shim, &old) {
            crate::warn!("removing stale network {}: {e}", old.id);
        }
    }
    match netns::link(&bridge)? {
        Some(l) if !l.is_bridge() => {
            return Err(err!(
                "link {bridge} exists and is not a bridge; choose another -o bridge= or remove that link"
            ))
        }
        Some(_) => net.bridge_preexisted = true,
        None => {}
    }
    // `--aux-address`es: docker requested them before this call and holds them for the
    // network's lifetime (never swept as unclaimed).
    let aux: Vec<IpAddr> = req
        .ipv4_data
        .iter()
        .chain(&req.ipv6_data)
        .flat_map(|d| d.aux_addresses.values())
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .collect();
    shim.update(|s| {
        s.networks.insert(id.clone(), net.clone());
        for ip in &aux {
            let h = s.pending_for(ip).map(|r| r.handle.clone());
            if let Some(r) = h.and_then(|h| s.reservations.get_mut(&h)) {
                r.aux_of = Some(id.clone());
            }
        }
        Ok(())
    })?;
    if internal {
        let _n = shim.lock_nft();
        cni_nft::hostport::HostPorts::new()
            .and_then(|mut t| t.set_internal(&bridge, true))
            .map_err(|e| err!("isolate internal network bridge {bridge}: {e}"))?;
    }
    crate::info!(
        "network {id} created: bridge {bridge}{}{}",
        if internal { " (internal)" } else { "" },
        net.cni
            .as_ref()
            .map(|b| format!(
                ", bound to {} network {} ({})",
                if b.cluster.is_some() {
                    "cluster"
                } else {
                    "CNI"
                },
                b.network,
                b.file.display()
            ))
            .unwrap_or_default()
    );
    Ok(json!({}))
}

/// `-o cluster=<name>`: joins through cnm-agent, refuses `-o` options that contradict the
/// cluster bridge (leaving again), and binds the pool to the cluster store.
fn join_cluster(
    shim: &Shim,
    name: &str,
    sub: &serde_json::Map<String, Value>,
    generic: &serde_json::Map<String, Value>,
    opts: &netopts::NetOpts,
    req: &CreateNetwork,
    internal: bool,
) -> Result<crate::cniconf::CniBinding> {
    let b = shim.read(|s| crate::cluster::join(&shim.cfg, s, name, sub, req, internal))?;
    if let Some((key, given, ck, theirs)) = crate::bind::contradictions(&b, generic, opts).first() {
        crate::cluster::leave(&shim.cfg, name);
        return Err(err!(
            "-o {key}={given} contradicts cluster network {name}: its bridge has {ck} {theirs} on this host; drop the option"
        ));
    }
    let subnet = b.range(false).map(|r| r.subnet);
    shim.update(|s| {
        for p in s.pools.values_mut().filter(|p| Some(p.subnet) == subnet) {
            p.cni = Some(b.clone());
        }
        Ok(())
    })?;
    Ok(b)
}

pub fn delete(shim: &Shim, req: NetworkRef) -> Result<Value> {
    let _g = shim.net_locks.lock(&req.network_id);
    let Some(net) = shim.read(|s| s.networks.get(&req.network_id).cloned()) else {
        return Ok(json!({}));
    };
    teardown(shim, &net)?;
    if let Some(b) = net.cni.as_ref().filter(|b| b.cluster.is_some()) {
        crate::cluster::leave(&shim.cfg, &b.network);
    }
    crate::info!("network {} deleted", net.id);
    Ok(json!({}))
}

/// Removes everything of `net` (its leftover endpoints, bridge, firewall state) and forgets
/// it. Idempotent; the caller holds the network lock. The `Deleting` phase is persisted first
/// so that a crash midway is finished at startup.
pub fn teardown(shim: &Shim, net: &Network) -> Result<()> {
    shim.update(|s| {
        if let Some(n) = s.networks.get_mut(&net.id) {
            n.phase = Phase::Deleting;
        }
        Ok(())
    })?;
    let mut errors = Vec::new();
    let eps: Vec<_> = shim.read(|s| {
        s.endpoints
            .values()
            .filter(|e| e.network == net.id)
            .cloned()
            .collect()
    });
    for ep in eps {
        crate::warn!("network {}: removing leftover endpoint {}", net.id, ep.id);
        if let Err(e) = endpoint::remove(shim, &ep) {
            errors.push(e.0);
        }
    }
    // A bound network's bridge and its forwarding rules belong to the CNI network: the other
    // runtime's containers keep using them (CNI never deletes bridges either).
    let shared = net.cni.is_some();
    if !net.bridge_preexisted && !shared {
        if let Err(e) = netns::delete_link(&net.bridge, "bridge") {
            errors.push(e.0);
        }
    }
    crate::shim::crash_point("delete-network:bridge-deleted");
    if !shared {
        if let Err(e) = cni_nft::forward::remove_bridge_forwarding(&net.bridge) {
            errors.push(format!("remove forwarding rules of {}: {e}", net.bridge));
        }
    }
    if let Err(e) = cni_nft::forward::remove_dnat_accept(&net.bridge) {
        errors.push(format!("remove DNAT accept rules of {}: {e}", net.bridge));
    }
    {
        // The published-ports table is shared with CNI containers: only our element goes.
        let _n = shim.lock_nft();
        let r = cni_nft::hostport::HostPorts::new()
            .and_then(|mut t| t.set_internal(&net.bridge, false));
        if let Err(e) = r {
            errors.push(format!("internal isolation of {}: {e}", net.bridge));
        }
    }
    if let Err(e) = endpoint::masq_gc(shim, Some(&net.id)) {
        errors.push(e.0);
    }
    if !errors.is_empty() {
        return Err(err!("delete network {}: {}", net.id, errors.join("; ")));
    }
    shim.update(|s| {
        s.networks.remove(&net.id);
        Ok(())
    })
}
