//! The IpamDriver: pools are remembered by the shim, addresses are reserved by host-local.
//!
//! * RequestPool records the pool (`--subnet`, `--ip-range`); pools never overlap.
//! * The gateway request only records the gateway: it becomes the range's `gateway`, which
//!   host-local never hands out.
//! * Any other RequestAddress (aux addresses, endpoints) runs host-local ADD under a fresh
//!   handle (`CNI_CONTAINERID=cnm-req-<random>`), with `args.cni.ips` when docker asks for a
//!   specific address (`--ip`, `--aux-address`).
//! * CreateEndpoint converts that reservation into the endpoint's own (see
//!   [`crate::endpoint`]), so from RequestAddress to ReleaseAddress docker's address is always
//!   held in the store, under a handle the state knows.
//! * ReleaseAddress releases the handle once every address of it is released and no endpoint
//!   uses it; ReleasePool releases whatever is left in the pool.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::{json, Value};

use crate::api::{self, PoolRef, ReleaseAddress, RequestAddress, RequestPool};
use crate::cni::{self, Range};
use crate::err;
use crate::error::Result;
use crate::pool;
use crate::shim::{crash_point, new_handle, unix_now, Shim};
use crate::state::{Pool, ResIp, ResPhase, Reservation};

pub const LOCAL_SPACE: &str = "CnmShimLocal";
pub const GLOBAL_SPACE: &str = "CnmShimGlobal";
/// A pool not yet used by a network is considered claimed by a network being created for
/// this long.
const POOL_CLAIM_SECS: u64 = 60;
/// A reservation that no endpoint or `--aux-address` uses and docker did not release this
/// long after its RequestAddress or its endpoint's removal, or after the shim started, is
/// released. Docker asks for the endpoint within milliseconds of the address, and releases
/// the address within milliseconds of the endpoint's deletion; a call it was retrying while
/// the shim was down arrives within 8 s of the restart (its retries come 1, 3, 7 and 15 s
/// after the first attempt).
pub const UNCLAIMED_GRACE_SECS: u64 = 20;

pub fn capabilities() -> Value {
    json!({"RequiresMACAddress": false, "RequiresRequestReplay": false})
}

pub fn address_spaces() -> Value {
    json!({"LocalDefaultAddressSpace": LOCAL_SPACE, "GlobalDefaultAddressSpace": GLOBAL_SPACE})
}

fn pool_reply(p: &Pool) -> Value {
    json!({"PoolID": p.id, "Pool": p.subnet.to_string(), "Data": {}})
}

pub fn request_pool(shim: &Shim, req: RequestPool) -> Result<Value> {
    let space = if req.address_space.is_empty() {
        LOCAL_SPACE.to_string()
    } else {
        req.address_space.clone()
    };
    let binding = crate::bind::pool_binding(&shim.cfg, &req)?;
    let subnet = if let Some(b) = &binding {
        crate::bind::pool_subnet(b, &req)?
    } else if req.pool.is_empty() {
        if req.v6 {
            return Err(err!(
                "the cnm IPAM driver has no default IPv6 pool: pass an IPv6 --subnet (e.g. --ipv6 --subnet fd00:213::/64)"
            ));
        }
        let taken: Vec<IpNetwork> = shim.read(|s| s.pools.values().map(|p| p.subnet).collect());
        pool::pick_default(&shim.cfg.default_pool, shim.cfg.default_pool_size, &taken)
            .ok_or_else(|| {
                err!(
                    "no free /{} left in the default pool {}: pass --subnet or start cnm-shim with another --default-pool",
                    shim.cfg.default_pool_size,
                    shim.cfg.default_pool
                )
            })?
    } else {
        pool::parse_subnet(&req.pool, "--subnet")?
    };
    if subnet.is_ipv6() != req.v6 {
        return Err(err!(
            "--subnet {subnet} is not an IPv{} subnet",
            if req.v6 { 6 } else { 4 }
        ));
    }
    let range = if req.sub_pool.is_empty() {
        None
    } else {
        let r = pool::parse_subnet(&req.sub_pool, "--ip-range")?;
        if !subnet.contains(r.network()) || r.prefix() < subnet.prefix() {
            return Err(err!("--ip-range {r} is not inside --subnet {subnet}"));
        }
        Some(r)
    };
    // A cluster network's subnet (asked only when no CNI network claims it).
    let cluster = match &binding {
        None => crate::cluster::lookup(&shim.cfg, &subnet),
        Some(_) => None,
    };
    let id = match range {
        Some(r) => format!("{space}/{subnet}/{r}"),
        None => format!("{space}/{subnet}"),
    };
    let new = Pool {
        id: id.clone(),
        address_space: space,
        subnet,
        range,
        gateway: None,
        v6: req.v6,
        created: 0,
        cni: binding.clone(),
        cluster: cluster.clone(),
    };
    let _g = shim.pool_locks.lock(&id);
    let now = unix_now();
    let reply = shim.update(|s| {
        if s.pools.contains_key(&id) {
            let user = s.networks.values().find(|n| {
                !s.is_dead(n)
                    && [&n.v4, &n.v6]
                    .into_iter()
                    .flatten()
                    .any(|sn| pool::overlaps(&sn.pool, &subnet))
            });
            if let Some(n) = user {
                return Err(err!(
                    "subnet {subnet} is in use by cnm network {} (bridge {}); choose another --subnet or remove that network",
                    &n.id[..n.id.len().min(12)],
                    n.bridge
                ));
            }
            let p = s.pools.get_mut(&id).expect("checked above");
            let just_claimed = now.saturating_sub(p.created) < POOL_CLAIM_SECS;
            if let (Some(b), true) = (&binding, req.pool.is_empty() && just_claimed) {
                // dockerd re-asks when the pool we chose overlaps a host route, which the
                // CNI network's bridge is once a container of the other runtime runs.
                return Err(err!(
                    "dockerd refuses the pool {subnet} of CNI network {} because its bridge already routes it; pass the subnet explicitly: {}",
                    b.network,
                    crate::bind::command(&shim.cfg, b)
                ));
            }
            if just_claimed {
                return Err(err!(
                    "subnet {subnet} was just requested for another network that is being created; choose another --subnet or retry in a minute"
                ));
            }
            // Requested again by nobody's network: a ReleasePool that never arrived.
            crate::warn!("pool {id} requested again and unused: reusing it");
            p.gateway = None;
            p.created = now;
            p.cni = binding.clone();
            p.cluster = cluster.clone();
            return Ok(pool_reply(p));
        }
        if let Some(p) = s.pools.values().find(|p| pool::overlaps(&p.subnet, &subnet)) {
            return Err(err!(
                "subnet {subnet} overlaps pool {} of another cnm network; choose another --subnet",
                p.id
            ));
        }
        s.pools.insert(id.clone(), Pool { created: now, ..new });
        Ok(pool_reply(&s.pools[&id]))
    })?;
    match &binding {
        Some(b) => crate::info!(
            "pool {id} requested: shares the store of CNI network {} ({})",
            b.network,
            b.file.display()
        ),
        None => crate::info!("pool {id} requested"),
    }
    Ok(reply)
}

pub fn release_pool(shim: &Shim, req: PoolRef) -> Result<Value> {
    let _g = shim.pool_locks.lock(&req.pool_id);
    let Some(p) = shim.read(|s| s.pools.get(&req.pool_id).cloned()) else {
        return Ok(json!({}));
    };
    // Everything docker still holds in the pool is released with it.
    shim.update(|s| {
        s.pools.remove(&p.id);
        for r in s.reservations.values_mut() {
            for i in r.ips.iter_mut().filter(|i| p.subnet.contains(i.ip)) {
                i.released = true;
            }
        }
        Ok(())
    })?;
    let mut errors = Vec::new();
    for h in shim.read(|s| {
        s.reservations
            .values()
            .filter(|r| r.finished())
            .map(|r| r.handle.clone())
            .collect::<Vec<_>>()
    }) {
        if let Err(e) = release_handle(shim, &h) {
            errors.push(e.0);
        }
    }
    // Store entries in the pool that no reservation explains (e.g. a crash between the ADD
    // and the state update) go too; in a shared store only the shim's own (its ifname).
    let store = p.cni.as_ref().map_or_else(
        || cni::StoreRef::own(&shim.cfg),
        |b| crate::bind::store(&shim.cfg, b),
    );
    let known = shim.read(|s| s.reservations.keys().cloned().collect::<Vec<_>>());
    for (ip, id, _) in cni::store_entries(&shim.cfg, &store) {
        if p.subnet.contains(ip) && !known.contains(&id) {
            if let Err(e) = cni::release(&shim.runner, &store, &id) {
                errors.push(e.0);
            }
        }
    }
    crate::info!("pool {} released", p.id);
    if errors.is_empty() {
        Ok(json!({}))
    } else {
        Err(err!("release pool {}: {}", p.id, errors.join("; ")))
    }
}

/// Forgets `handle`, then runs host-local DEL for it. (A crash in between leaves a store entry
/// no reservation explains: startup reconciliation releases those.)
pub fn release_handle(shim: &Shim, handle: &str) -> Result<()> {
    let store = shim.update(|s| {
        Ok(s.reservations
            .remove(handle)
            .map_or_else(|| cni::StoreRef::own(&shim.cfg), |r| shim.store_of(&r)))
    })?;
    cni::release(&shim.runner, &store, handle)
}

/// Releases reservations nobody claimed (see [`Reservation::unclaimed`],
/// [`UNCLAIMED_GRACE_SECS`]): the reply to their RequestAddress was lost to a crash (docker
/// retries the call with an empty body, which is refused, so it never learns the address and
/// never releases it), or docker's ReleaseAddress after the endpoint's deletion was (docker
/// only logs a failed release). Run periodically.
pub fn sweep_unclaimed(shim: &Shim) {
    let stale = |r: &Reservation| r.unclaimed(unix_now(), shim.started, UNCLAIMED_GRACE_SECS);
    let candidates: Vec<(String, String)> = shim.read(|s| {
        s.reservations
            .values()
            .filter(|r| stale(r))
            .map(|r| {
                let pool = r.pool.clone().or_else(|| {
                    r.ips
                        .first()
                        .and_then(|i| s.pool_of(&i.ip))
                        .map(|p| p.id.clone())
                });
                (r.handle.clone(), pool.unwrap_or_else(|| r.handle.clone()))
            })
            .collect()
    });
    for (handle, pool) in candidates {
        // Under the pool lock, like CreateEndpoint's conversion: checked again, and left alone
        // if a CreateEndpoint for one of its addresses is on its way.
        let _g = shim.pool_locks.lock(&pool);
        let Some(r) = shim.read(|s| s.reservations.get(&handle).filter(|r| stale(r)).cloned())
        else {
            continue;
        };
        if r.ips.iter().any(|i| shim.in_flight.contains(&i.ip)) {
            continue;
        }
        let ips: Vec<String> = r.ips.iter().map(|i| i.ip.to_string()).collect();
        crate::warn!(
            "releasing {} ({handle}): no endpoint uses it and docker did not release it within {} s (a reply or a ReleaseAddress lost to a restart)",
            ips.join(" "),
            unix_now().saturating_sub(r.waiting_since.max(shim.started))
        );
        if let Err(e) = release_handle(shim, &handle) {
            crate::warn!("{e}");
        }
    }
}

fn parse_ip(s: &str, what: &str) -> Result<IpAddr> {
    Ok(pool::parse_addr(s, what)?.ip())
}

pub fn request_address(shim: &Shim, req: RequestAddress) -> Result<Value> {
    let Some(p) = shim.read(|s| s.pools.get(&req.pool_id).cloned()) else {
        return Err(err!(
            "unknown pool {:?}: it was released or not requested through this cnm-shim; recreate the network",
            req.pool_id
        ));
    };
    let want = if req.address.is_empty() {
        None
    } else {
        let ip = parse_ip(&req.address, "requested address")?;
        if !pool::usable(&p.subnet, ip) {
            return Err(err!(
                "address {ip} is not a usable address of subnet {}",
                p.subnet
            ));
        }
        Some(ip)
    };
    let is_gateway =
        req.options.get("RequestAddressType").map(String::as_str) == Some(api::GATEWAY_REQUEST);
    let _g = shim.pool_locks.lock(&p.id);
    if is_gateway {
        let gw = match (&p.cni, &p.cluster) {
            (Some(b), _) => crate::bind::gateway(b, &p.subnet, want)?,
            (None, Some(h)) => crate::cluster::gateway(h, want)?,
            (None, None) => want.unwrap_or_else(|| pool::first_host(&p.subnet)),
        };
        shim.update(|s| {
            if let Some(r) = s.holder_of(&gw) {
                return Err(err!(
                    "gateway {gw} is already reserved (by {}); choose another --gateway",
                    r.handle
                ));
            }
            if let Some(pp) = s.pools.get_mut(&p.id) {
                pp.gateway = Some(gw);
            }
            Ok(())
        })?;
        crate::info!("pool {}: gateway {gw}", p.id);
        return Ok(json!({"Address": format!("{gw}/{}", p.subnet.prefix()), "Data": {}}));
    }
    if want.is_some() && want == p.gateway {
        return Err(err!(
            "address {} is the gateway of subnet {}; choose another --ip/--aux-address",
            p.gateway.unwrap_or(p.subnet.ip()),
            p.subnet
        ));
    }
    // No write-ahead record: a crash between the ADD and the state update leaves a store
    // entry that no reservation explains, which startup reconciliation releases; a crash
    // after it, before docker got the reply, an unclaimed reservation (`sweep_unclaimed`).
    let handle = new_handle()?;
    let range = match (want, p.range) {
        (None, Some(r)) => {
            let (start, end) = pool::range_bounds(&p.subnet, &r);
            Range {
                subnet: p.subnet,
                start: Some(start),
                end: Some(end),
                gateway: p.gateway,
            }
        }
        _ => Range::whole(p.subnet, p.gateway),
    };
    if let (Some(b), Some(ip)) = (&p.cni, want) {
        crate::cluster::check_address(b, ip)?;
    }
    let ipam = match &p.cni {
        Some(b) => crate::bind::ipam(&shim.cfg, b, &[p.subnet])?,
        None => cni::Ipam::own(&shim.cfg, &[range]),
    };
    let shared = p.cni.as_ref().map(|_| ipam.store.clone());
    match cni::reserve(&shim.runner, &ipam, &handle, &p.subnet, want) {
        Ok(addr) => {
            crash_point("request-address:reserved");
            let saved = shim.update(|s| {
                s.reservations.insert(
                    handle.clone(),
                    Reservation {
                        handle: handle.clone(),
                        phase: ResPhase::Held,
                        pool: Some(p.id.clone()),
                        ips: vec![ResIp {
                            ip: addr.ip(),
                            released: false,
                        }],
                        endpoint: None,
                        store: shared,
                        waiting_since: unix_now(),
                        aux_of: None,
                    },
                );
                Ok(())
            });
            if let Err(e) = saved {
                let _ = cni::release(&shim.runner, &ipam.store, &handle);
                return Err(e);
            }
            // A crash from here until docker read the reply: `sweep_unclaimed` frees it.
            crash_point("request-address:saved");
            crate::debug!("pool {}: {} reserved as {handle}", p.id, addr.ip());
            Ok(json!({"Address": format!("{}/{}", addr.ip(), p.subnet.prefix()), "Data": {}}))
        }
        Err(e) => {
            if let Err(e2) = cni::release(&shim.runner, &ipam.store, &handle) {
                crate::warn!("rollback of {handle}: {e2}");
            }
            let what = want.map_or_else(|| "an address".to_string(), |ip| format!("address {ip}"));
            Err(e.context(format!("cannot reserve {what} in {}", p.subnet)))
        }
    }
}

pub fn release_address(shim: &Shim, req: ReleaseAddress) -> Result<Value> {
    let ip = parse_ip(&req.address, "released address")?;
    // A crash here loses the release (docker's retry is empty): `sweep_unclaimed` does it.
    crash_point("release-address:received");
    let pool = shim.read(|s| s.pools.get(&req.pool_id).cloned());
    let lock_key = pool.as_ref().map_or(req.pool_id.clone(), |p| p.id.clone());
    let orphan = {
        let _g = shim.pool_locks.lock(&lock_key);
        let (done, orphan) = shim.update(|s| {
            let is_gw = s
                .pools
                .get(&req.pool_id)
                .is_some_and(|p| p.gateway == Some(ip));
            if is_gw && s.holder_of(&ip).is_none() {
                if let Some(p) = s.pools.get_mut(&req.pool_id) {
                    p.gateway = None;
                }
                return Ok((None, None));
            }
            let Some(handle) = s.holder_of(&ip).map(|r| r.handle.clone()) else {
                // Never requested (docker releases a RequestPool-provided gateway too) or
                // already released: fine.
                return Ok((None, None));
            };
            let r = s.reservations.get_mut(&handle).expect("holder exists");
            for i in r.ips.iter_mut().filter(|i| i.ip == ip) {
                i.released = true;
            }
            // Docker releases an endpoint's addresses only after DeleteEndpoint: an endpoint
            // still here lost its DeleteEndpoint (e.g. the shim restarted in the middle).
            let orphan = r
                .endpoint
                .clone()
                .filter(|_| r.ips.iter().all(|i| i.released));
            // (Unless it is being deleted right now: that removal releases the addresses.)
            let orphan = orphan.filter(|e| {
                s.endpoints
                    .get(e)
                    .is_some_and(|ep| ep.phase == crate::state::Phase::Ready)
            });
            let done = r.finished().then(|| (handle, shim.store_of(r)));
            if let Some((h, _)) = &done {
                s.reservations.remove(h);
            }
            Ok((done, orphan))
        })?;
        crash_point("release-address:marked");
        if let Some((handle, store)) = done {
            cni::release(&shim.runner, &store, &handle)?;
            crate::debug!("{ip} released ({handle})");
        }
        orphan
    };
    if let Some(eid) = orphan {
        let Some(ep) = shim.read(|s| s.endpoints.get(&eid).cloned()) else {
            return Ok(json!({}));
        };
        crate::warn!(
            "endpoint {eid}: docker released its addresses without deleting it; removing it"
        );
        let _g = shim.net_locks.lock(&ep.network);
        crate::endpoint::remove(shim, &ep)?;
    }
    Ok(json!({}))
}
