//! The daemon's shared context: configuration, the persisted state behind one mutex, the
//! per-network and per-pool locks, and the plugin runner.
//!
//! Lock order: network lock → pool locks (sorted) → state mutex (held only for in-memory
//! changes and the state file write, never across a plugin exec) ; the nftables mutex is taken
//! alone.

use std::fs::File;
use std::sync::{Mutex, MutexGuard};

use crate::config::Config;
use crate::err;
use crate::error::Result;
use crate::exec::Runner;
use crate::locks::KeyedLocks;
use crate::state::{State, Store};

pub struct Shim {
    pub cfg: Config,
    pub runner: Runner,
    store: Store,
    state: Mutex<State>,
    pub net_locks: KeyedLocks,
    pub pool_locks: KeyedLocks,
    /// Serializes writes to our nftables table (its only writer is this process).
    nft: Mutex<()>,
    /// The shim's (= dockerd's) network namespace.
    pub host_ns: File,
    pub spare_netns: crate::netns::SpareNetns,
    pub pending_moves: crate::netns::PendingMoves,
    /// UNIX seconds of this process's start.
    pub started: u64,
    /// Addresses of CreateEndpoint calls in progress.
    pub in_flight: crate::locks::InFlight,
}

impl Shim {
    pub fn new(cfg: Config) -> Result<Shim> {
        let store = Store::new(&cfg.state_dir);
        let state = store.load()?;
        Ok(Shim {
            runner: Runner {
                cni_path: cfg.cni_path.clone(),
                timeout: cfg.exec_timeout,
            },
            cfg,
            store,
            state: Mutex::new(state),
            net_locks: KeyedLocks::default(),
            pool_locks: KeyedLocks::default(),
            nft: Mutex::new(()),
            host_ns: crate::netns::current()?,
            spare_netns: Default::default(),
            pending_moves: Default::default(),
            started: unix_now(),
            in_flight: Default::default(),
        })
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.lock_state())
    }

    /// Applies `f` to a copy of the state and persists it; the in-memory state changes only if
    /// `f` succeeded and the file was written.
    pub fn update<T>(&self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let mut guard = self.lock_state();
        let mut next = guard.clone();
        let out = f(&mut next)?;
        if next != *guard {
            let t = std::time::Instant::now();
            self.store.save(&next)?;
            crate::debug!("state saved in {} us", t.elapsed().as_micros());
            *guard = next;
        }
        Ok(out)
    }

    /// The store a reservation lives in.
    pub fn store_of(&self, r: &crate::state::Reservation) -> crate::cni::StoreRef {
        r.store
            .clone()
            .unwrap_or_else(|| crate::cni::StoreRef::own(&self.cfg))
    }

    /// The shim's own store plus every shared store a pool, network or reservation of the
    /// state uses.
    pub fn stores(&self) -> Vec<crate::cni::StoreRef> {
        let mut v = vec![crate::cni::StoreRef::own(&self.cfg)];
        let extra: Vec<crate::cni::StoreRef> = self.read(|s| {
            let pools = s.pools.values().filter_map(|p| p.cni.as_ref());
            let nets = s.networks.values().filter_map(|n| n.cni.as_ref());
            let mut e: Vec<_> = pools
                .chain(nets)
                .map(|b| crate::bind::store(&self.cfg, b))
                .collect();
            e.extend(s.reservations.values().filter_map(|r| r.store.clone()));
            e
        });
        for st in extra {
            if !v.contains(&st) {
                v.push(st);
            }
        }
        v
    }

    pub fn lock_nft(&self) -> MutexGuard<'_, ()> {
        self.nft.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Seconds since the UNIX epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Test hook: aborts the process (like `kill -9`) when `CNM_SHIM_CRASH_AT` names this point,
/// so the end-to-end tests can crash the shim at exact places between persisted state and
/// external effects. Compiled into debug builds only (the ones the tests run): a no-op in the
/// installed release binary, which does not even contain the variable's name (checked by
/// `check_release_binaries` in scripts/lib.sh).
#[cfg(debug_assertions)]
pub fn crash_point(name: &str) {
    if std::env::var("CNM_SHIM_CRASH_AT").is_ok_and(|v| v == name) {
        crate::warn!("CNM_SHIM_CRASH_AT={name}: aborting (test hook)");
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn crash_point(_name: &str) {}

/// A new host-local handle (`CNI_CONTAINERID`) for an address docker requested.
pub fn new_handle() -> Result<String> {
    let mut b = [0u8; 8];
    cni_core::random::fill(&mut b).map_err(|e| err!("getrandom: {e}"))?;
    Ok(format!(
        "cnm-req-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn handles_are_unique_valid_ids() {
        let a = super::new_handle().unwrap();
        let b = super::new_handle().unwrap();
        assert_ne!(a, b);
        assert!(cni_core::env::valid_id(&a), "{a}");
    }
}
