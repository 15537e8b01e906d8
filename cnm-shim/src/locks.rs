//! Named mutexes (one per network, one per pool), created on first use.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex};

/// The set of keys currently held; waiters sleep on the condvar until their key is free.
#[derive(Default)]
pub struct KeyedLocks {
    inner: Arc<(Mutex<HashSet<String>>, Condvar)>,
}

/// Holds a named lock; released on drop.
pub struct KeyGuard {
    key: String,
    inner: Arc<(Mutex<HashSet<String>>, Condvar)>,
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        let (m, cv) = &*self.inner;
        m.lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
        cv.notify_all();
    }
}

impl KeyedLocks {
    /// Blocks until `key` is free.
    pub fn lock(&self, key: &str) -> KeyGuard {
        let (m, cv) = &*self.inner;
        let mut held = m.lock().unwrap_or_else(|p| p.into_inner());
        while held.contains(key) {
            held = cv.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        held.insert(key.to_string());
        KeyGuard {
            key: key.to_string(),
            inner: self.inner.clone(),
        }
    }

    /// Locks several keys in sorted order (so two callers can never deadlock), without
    /// duplicates.
    pub fn lock_all(&self, keys: &[String]) -> Vec<KeyGuard> {
        let mut k: Vec<&String> = keys.iter().collect();
        k.sort();
        k.dedup();
        k.into_iter().map(|key| self.lock(key)).collect()
    }
}

/// Addresses some request is working on right now (a CreateEndpoint, possibly still waiting
/// for its locks): the unclaimed-reservation sweep leaves them alone.
#[derive(Default)]
pub struct InFlight {
    inner: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Marks addresses as in flight; unmarked on drop.
pub struct InFlightGuard {
    ips: Vec<IpAddr>,
    inner: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl InFlight {
    pub fn hold(&self, ips: &[IpAddr]) -> InFlightGuard {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for ip in ips {
            *m.entry(*ip).or_insert(0) += 1;
        }
        InFlightGuard {
            ips: ips.to_vec(),
            inner: self.inner.clone(),
        }
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(ip)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for ip in &self.ips {
            if let Some(n) = m.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn serializes_per_key() {
        let locks = Arc::new(KeyedLocks::default());
        let inside = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (l, i) = (locks.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let _g = l.lock_all(&["b".into(), "a".into(), "a".into()]);
                        assert_eq!(i.fetch_add(1, Ordering::SeqCst), 0);
                        i.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Other keys are independent.
        let _a = locks.lock("a");
        let _c = locks.lock("c");
    }

    #[test]
    fn in_flight_counts_holders() {
        let f = InFlight::default();
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let a = f.hold(&[ip]);
        let b = f.hold(&[ip]);
        drop(a);
        assert!(f.contains(&ip));
        drop(b);
        assert!(!f.contains(&ip));
    }
}
