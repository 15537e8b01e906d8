//! Allocation, as the reference's `IPAllocator.Get`: one address per range set, a requested
//! address when one falls in the set, else round-robin from `last_reserved_ip.<N>` + 1, trying
//! `O_EXCL` creates. Everything that can be decided from the config alone (which requested
//! address goes to which set, gateways, leftovers, duplicates) is checked before the first file
//! is written; a failure after that releases what this call created.
//!
//! The next address after the last reserved one is almost always free, so an allocation costs
//! O(1) file creates. When it is not (a dense region, e.g. a pointer reset into a full block),
//! after a few misses we list the directory's names once and skip taken addresses in memory, and
//! a set whose taken count reaches its capacity is reported full without iterating.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

use cni_core::{CniError, IpConfig};

use crate::config::IpamConfig;
use crate::pool::Pool;
use crate::range::{to_u128, RangeSet};
use crate::store::{self, NetDir, Owner};

/// Misses before switching to the name listing.
const DENSE_AFTER: u32 = 16;

/// Which requested address (if any) each range set gets: the first remaining one the set
/// contains. Fails, as the reference, on a requested gateway or an address no set takes.
pub fn plan(conf: &IpamConfig) -> Result<Vec<Option<IpAddr>>, CniError> {
    let mut left = conf.requested.clone();
    let mut out = Vec::with_capacity(conf.range_sets.len());
    for (idx, set) in conf.range_sets.iter().enumerate() {
        let pos = left.iter().position(|ip| set.contains(*ip));
        let ip = pos.map(|p| left.remove(p));
        if let Some(ip) = ip {
            if set.range_for(ip).is_some_and(|r| r.gateway_ip() == ip) {
                return Err(CniError::internal(format!(
                    "failed to allocate for range {idx}: requested ip {ip} is subnet's gateway"
                )));
            }
        }
        out.push(ip);
    }
    if !left.is_empty() {
        let list: Vec<String> = left.iter().map(|ip| ip.to_string()).collect();
        return Err(CniError::internal(format!(
            "failed to allocate all requested IPs: {}",
            list.join(" ")
        )));
    }
    Ok(out)
}

/// The reference's duplicate check: an attachment may hold one address per set (requested
/// addresses skip it, as in the reference).
pub fn check_duplicates(
    conf: &IpamConfig,
    plan: &[Option<IpAddr>],
    held: &[IpAddr],
    container_id: &str,
) -> Result<(), CniError> {
    for (idx, set) in conf.range_sets.iter().enumerate() {
        if plan[idx].is_some() {
            continue;
        }
        if let Some(ip) = held.iter().find(|ip| set.contains(**ip)) {
            return Err(CniError::internal(format!(
                "failed to allocate for range {idx}: {ip} has been allocated to {container_id}, \
                 duplicate allocation is not allowed"
            )));
        }
    }
    Ok(())
}

/// Reserves one address per set for `owner`; on any failure releases what it reserved. The
/// error says whether that release left the files exactly as they were.
pub fn allocate(
    dir: &NetDir,
    conf: &IpamConfig,
    plan: &[Option<IpAddr>],
    owner: &Owner,
    pool: &mut Pool,
) -> Result<Vec<IpConfig>, (CniError, bool)> {
    let mut made: Vec<IpAddr> = Vec::with_capacity(conf.range_sets.len());
    let mut out = Vec::with_capacity(conf.range_sets.len());
    for (idx, set) in conf.range_sets.iter().enumerate() {
        let got = match plan[idx] {
            Some(ip) => reserve_requested(dir, set, idx, ip, owner, pool),
            None => reserve_next(dir, set, idx, owner, pool),
        };
        let got = got.and_then(|ip| match set.range_for(ip) {
            Some(r) => Ok((ip, r)),
            // Cannot happen: the address came from this set.
            None => Err((
                CniError::internal(format!("{ip} is not in {set}")),
                Some(ip),
            )),
        });
        match got {
            Ok((ip, r)) => {
                made.push(ip);
                out.push(IpConfig {
                    interface: None,
                    address: r.with_prefix(to_u128(ip)),
                    gateway: Some(r.gateway_ip()),
                });
            }
            Err((e, reserved)) => {
                made.extend(reserved);
                let clean = rollback(dir, &made);
                return Err((
                    e.context(format!("failed to allocate for range {idx}")),
                    clean,
                ));
            }
        }
    }
    Ok(out)
}

/// Releases addresses this call reserved (every one, even after a failure). Returns whether
/// all went.
pub fn rollback(dir: &NetDir, made: &[IpAddr]) -> bool {
    let mut all = true;
    for ip in made {
        all &= dir.release(*ip).is_ok();
    }
    all
}

type Failure = (CniError, Option<IpAddr>);

/// One exclusive create of `ip`'s file: through a recycled spare when there is one.
fn try_reserve(dir: &NetDir, pool: &mut Pool, ip: IpAddr, owner: &Owner) -> Result<bool, Failure> {
    if let Some(spare) = pool.prepare(owner).map(Path::to_path_buf) {
        match dir.reserve_linked(ip, &spare) {
            Ok(true) => {
                pool.consumed();
                return Ok(true);
            }
            Ok(false) => return Ok(false),
            Err(_) => pool.disable(),
        }
    }
    dir.reserve(ip, owner).map_err(|e| (e, None))
}

fn reserved(dir: &NetDir, idx: usize, ip: IpAddr) -> Result<IpAddr, Failure> {
    // As the reference, the pointer moves with every reservation, requested ones included.
    dir.set_last_reserved(idx, ip).map_err(|e| (e, Some(ip)))?;
    Ok(ip)
}

fn reserve_requested(
    dir: &NetDir,
    set: &RangeSet,
    idx: usize,
    ip: IpAddr,
    owner: &Owner,
    pool: &mut Pool,
) -> Result<IpAddr, Failure> {
    if try_reserve(dir, pool, ip, owner)? {
        return reserved(dir, idx, ip);
    }
    Err((
        CniError::internal(format!(
            "requested IP address {ip} is not available in range set {set}"
        )),
        None,
    ))
}

fn exhausted(set: &RangeSet) -> Failure {
    (
        CniError::internal(format!("no IP addresses available in range set: {set}")),
        None,
    )
}

/// Distinct allocatable addresses of `set` among `used`.
fn taken_in(set: &RangeSet, used: &HashSet<u128>) -> u128 {
    used.iter()
        .filter(|x| set.0.iter().any(|r| r.contains_u(**x) && r.gateway != **x))
        .count() as u128
}

fn reserve_next(
    dir: &NetDir,
    set: &RangeSet,
    idx: usize,
    owner: &Owner,
    pool: &mut Pool,
) -> Result<IpAddr, Failure> {
    let mut misses = 0u32;
    let mut used: Option<HashSet<u128>> = None;
    for (x, ri) in set.iter_from(dir.last_reserved(idx)) {
        if used.as_ref().is_some_and(|u| u.contains(&x)) {
            continue;
        }
        let ip = set.0[ri].ip(x);
        if try_reserve(dir, pool, ip, owner)? {
            return reserved(dir, idx, ip);
        }
        misses += 1;
        if misses == DENSE_AFTER {
            let ips = dir.used_ips().map_err(|e| {
                (
                    CniError::new(
                        cni_core::Code::Io,
                        format!("cannot list {}: {e}", dir.path().display()),
                    ),
                    None,
                )
            })?;
            let u = store::used_set(&ips, set.v4());
            if taken_in(set, &u) >= set.capacity() {
                return Err(exhausted(set));
            }
            used = Some(u);
        }
    }
    Err(exhausted(set))
}

/// STATUS: whether `set` has no free address, without taking the lock or creating anything.
/// Probes round-robin from the pointer a few times, then counts names.
pub fn set_is_full(net_dir: &Path, set: &RangeSet, idx: usize) -> bool {
    if !net_dir.is_dir() {
        return set.capacity() == 0;
    }
    let last = store::last_reserved_at(net_dir, idx);
    for (n, (x, ri)) in set.iter_from(last).enumerate() {
        if n as u32 >= DENSE_AFTER {
            break;
        }
        if !store::is_reserved_at(net_dir, set.0[ri].ip(x)) {
            return false;
        }
    }
    match store::used_ips_at(net_dir) {
        Ok(ips) => taken_in(set, &store::used_set(&ips, set.v4())) >= set.capacity(),
        // Unreadable: we cannot tell; ADD will report the real problem.
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_value;
    use crate::testutil::TempDir;
    use std::fs;

    fn conf(json: &str, t: &TempDir) -> IpamConfig {
        let raw: serde_json::Value = serde_json::from_str(json).unwrap();
        let folded = cni_core::json::fold_keys(&raw);
        let v = folded["cniversion"].as_str().unwrap_or("1.0.0").to_string();
        load_value(&folded, "net", &v, "", t.path().to_str().unwrap()).unwrap()
    }

    fn subnets(list: &[&str]) -> String {
        let r: Vec<String> = list
            .iter()
            .map(|s| format!(r#"{{"subnet":"{s}"}}"#))
            .collect();
        format!(
            r#"{{"cniVersion":"1.0.0","ipam":{{"ranges":[[{}]]}}}}"#,
            r.join(",")
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nopool() -> Pool {
        Pool::new(Path::new("/nonexistent"), "net", 0, false)
    }

    /// One reference round-robin case: existing files, last reserved IP, expected result.
    fn case(nets: &[&str], taken: &[&str], last: &str) -> Result<String, CniError> {
        let t = TempDir::new("alloc-case");
        let c = conf(&subnets(nets), &t);
        let d = NetDir::open(t.path(), "net").unwrap();
        for a in taken {
            assert!(d.reserve(ip(a), &Owner::legacy("id")).unwrap());
        }
        if !last.is_empty() {
            d.set_last_reserved(0, ip(last)).unwrap();
        }
        let p = plan(&c)?;
        let got = allocate(&d, &c, &p, &Owner::attachment("ID", "eth0"), &mut nopool())
            .map_err(|e| e.0)?;
        Ok(got[0].address.ip().to_string())
    }

    #[test]
    fn round_robin_table() {
        let cases: &[(&[&str], &[&str], &str, &str)] = &[
            (&["10.0.0.0/29"], &[], "", "10.0.0.2"),
            (&["2001:db8:1::0/64"], &[], "", "2001:db8:1::2"),
            (&["10.0.0.0/30"], &[], "", "10.0.0.2"),
            (&["10.0.0.0/29"], &["10.0.0.2"], "", "10.0.0.3"),
            (&["10.0.0.0/29"], &[], "10.0.0.5", "10.0.0.6"),
            (
                &["10.0.0.0/29"],
                &["10.0.0.4", "10.0.0.5"],
                "10.0.0.3",
                "10.0.0.6",
            ),
            (&["10.0.0.0/29"], &["10.0.0.6"], "10.0.0.5", "10.0.0.2"),
            (&["10.0.0.0/29"], &["10.0.0.2"], "10.0.0.128", "10.0.0.3"),
            (
                &["10.0.0.0/29"],
                &["10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6"],
                "10.0.0.3",
                "10.0.0.3",
            ),
            (&["10.0.0.0/30", "10.0.1.0/30"], &[], "", "10.0.0.2"),
            (&["10.0.0.0/30", "10.0.1.0/30"], &[], "10.0.0.2", "10.0.1.2"),
            (
                &["10.0.0.0/30", "10.0.1.0/30", "10.0.2.0/30"],
                &[],
                "10.0.2.2",
                "10.0.0.2",
            ),
        ];
        for (i, (nets, taken, last, want)) in cases.iter().enumerate() {
            assert_eq!(case(nets, taken, last).unwrap(), *want, "case {i}");
        }
    }

    #[test]
    fn exhaustion_table() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["10.0.0.0/30"], &["10.0.0.2"]),
            (
                &["10.0.0.0/29"],
                &["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"],
            ),
            (&["10.0.0.0/30", "10.0.1.0/30"], &["10.0.0.2", "10.0.1.2"]),
        ];
        for (nets, taken) in cases {
            let e = case(nets, taken, "").unwrap_err();
            assert_eq!(e.code, 999);
            assert!(
                e.msg.starts_with(
                    "failed to allocate for range 0: no IP addresses available in range set"
                ),
                "{}",
                e.msg
            );
        }
        let e = case(&["10.98.0.0/30"], &["10.98.0.2"], "").unwrap_err();
        assert_eq!(
            e.msg,
            "failed to allocate for range 0: no IP addresses available in range set: 10.98.0.1-10.98.0.2"
        );
    }

    #[test]
    fn broadcast_never_allocated_and_release_is_round_robin() {
        let t = TempDir::new("alloc-bcast");
        let c = conf(&subnets(&["192.168.1.0/29"]), &t);
        let d = NetDir::open(t.path(), "net").unwrap();
        let p = plan(&c).unwrap();
        for i in 2..7 {
            let got = allocate(
                &d,
                &c,
                &p,
                &Owner::attachment(&format!("ID{i}"), "eth0"),
                &mut nopool(),
            )
            .unwrap();
            assert_eq!(got[0].address.to_string(), format!("192.168.1.{i}/29"));
            assert_eq!(got[0].gateway, Some(ip("192.168.1.1")));
        }
        assert!(allocate(&d, &c, &p, &Owner::attachment("ID8", "eth0"), &mut nopool()).is_err());
        assert!(!t.path().join("net/192.168.1.7").exists());

        let t = TempDir::new("alloc-rr");
        let c = conf(&subnets(&["192.168.1.0/29"]), &t);
        let d = NetDir::open(t.path(), "net").unwrap();
        let o = Owner::attachment("ID", "eth0");
        let got = allocate(&d, &c, &p, &o, &mut nopool()).unwrap();
        assert_eq!(got[0].address.to_string(), "192.168.1.2/29");
        d.release(ip("192.168.1.2")).unwrap();
        let got = allocate(&d, &c, &p, &o, &mut nopool()).unwrap();
        assert_eq!(got[0].address.to_string(), "192.168.1.3/29");
    }

    #[test]
    fn requested_addresses() {
        let t = TempDir::new("alloc-req");
        let mut c = conf(&subnets(&["192.168.1.0/29"]), &t);
        let d = NetDir::open(t.path(), "net").unwrap();
        c.requested = vec![ip("192.168.1.5")];
        let p = plan(&c).unwrap();
        let o = Owner::attachment("ID", "eth0");
        let got = allocate(&d, &c, &p, &o, &mut nopool()).unwrap();
        assert_eq!(got[0].address.ip(), ip("192.168.1.5"));
        assert_eq!(d.last_reserved(0), Some(ip("192.168.1.5")));
        let (e, clean) = allocate(&d, &c, &p, &o, &mut nopool()).unwrap_err();
        assert!(clean);
        assert_eq!(
            e.msg,
            "failed to allocate for range 0: requested IP address 192.168.1.5 is not available in range set 192.168.1.1-192.168.1.6"
        );
        // Gateway, outside the range, two in one set.
        c.requested = vec![ip("192.168.1.1")];
        assert_eq!(
            plan(&c).unwrap_err().msg,
            "failed to allocate for range 0: requested ip 192.168.1.1 is subnet's gateway"
        );
        c.requested = vec![ip("192.168.1.7")];
        assert_eq!(
            plan(&c).unwrap_err().msg,
            "failed to allocate all requested IPs: 192.168.1.7"
        );
        c.requested = vec![ip("192.168.1.3"), ip("192.168.1.4")];
        assert!(plan(&c)
            .unwrap_err()
            .msg
            .starts_with("failed to allocate all requested IPs: 192.168.1."));
    }

    #[test]
    fn requested_outside_start_end_is_refused() {
        let t = TempDir::new("alloc-req2");
        let mut c = conf(
            r#"{"ipam":{"subnet":"192.168.1.0/29","rangeStart":"192.168.1.3","rangeEnd":"192.168.1.4"}}"#,
            &t,
        );
        c.requested = vec![ip("192.168.1.5")];
        assert!(plan(&c).is_err());
        c.requested = vec![ip("192.168.1.2")];
        assert!(plan(&c).is_err());
        c.requested = vec![ip("192.168.1.4")];
        assert_eq!(plan(&c).unwrap(), vec![Some(ip("192.168.1.4"))]);
    }

    #[test]
    fn duplicates() {
        let t = TempDir::new("alloc-dup");
        let c = conf(
            r#"{"cniVersion":"1.0.0","ipam":{"ranges":[[{"subnet":"10.1.2.0/24"}],[{"subnet":"2001:db8:1::/64"}]]}}"#,
            &t,
        );
        let p = plan(&c).unwrap();
        let e = check_duplicates(&c, &p, &[ip("2001:db8:1::2")], "dummy").unwrap_err();
        assert_eq!(
            e.msg,
            "failed to allocate for range 1: 2001:db8:1::2 has been allocated to dummy, duplicate allocation is not allowed"
        );
        check_duplicates(&c, &p, &[ip("10.9.9.9")], "dummy").unwrap();
        // A requested address skips the check for its set.
        let mut c2 = c.clone();
        c2.requested = vec![ip("10.1.2.9")];
        let p2 = plan(&c2).unwrap();
        check_duplicates(&c2, &p2, &[ip("10.1.2.3")], "dummy").unwrap();
    }

    #[test]
    fn failure_in_a_later_set_rolls_back_earlier_ones() {
        let t = TempDir::new("alloc-rollback");
        let c = conf(
            r#"{"cniVersion":"1.0.0","ipam":{"ranges":[[{"subnet":"10.1.2.0/24"}],[{"subnet":"10.5.0.0/30"}]]}}"#,
            &t,
        );
        let d = NetDir::open(t.path(), "net").unwrap();
        assert!(d.reserve(ip("10.5.0.2"), &Owner::legacy("x")).unwrap());
        let p = plan(&c).unwrap();
        let (e, clean) =
            allocate(&d, &c, &p, &Owner::attachment("c", "eth0"), &mut nopool()).unwrap_err();
        assert!(clean);
        assert!(
            e.msg
                .starts_with("failed to allocate for range 1: no IP addresses"),
            "{}",
            e.msg
        );
        assert!(!t.path().join("net/10.1.2.2").exists());
        // As the reference, the pointer of set 0 moved anyway.
        assert_eq!(d.last_reserved(0), Some(ip("10.1.2.2")));
    }

    #[test]
    fn dense_region_is_skipped_by_listing_once() {
        let t = TempDir::new("alloc-dense");
        let c = conf(&subnets(&["10.7.0.0/22"]), &t);
        let d = NetDir::open(t.path(), "net").unwrap();
        for i in 2..600u32 {
            let a = IpAddr::V4((u32::from(std::net::Ipv4Addr::new(10, 7, 0, 0)) + i).into());
            fs::write(t.path().join("net").join(a.to_string()), "x").unwrap();
        }
        let p = plan(&c).unwrap();
        let got = allocate(&d, &c, &p, &Owner::attachment("c", "eth0"), &mut nopool()).unwrap();
        assert_eq!(got[0].address.ip(), ip("10.7.2.88"));
        // Full: reported without walking the whole range.
        let t = TempDir::new("alloc-full");
        let c = conf(&subnets(&["10.7.0.0/24"]), &t);
        let d = NetDir::open(t.path(), "net").unwrap();
        for i in 2..255u32 {
            fs::write(t.path().join(format!("net/10.7.0.{i}")), "x").unwrap();
        }
        assert!(set_is_full(&t.path().join("net"), &c.range_sets[0], 0));
        let (e, _) = allocate(
            &d,
            &c,
            &plan(&c).unwrap(),
            &Owner::attachment("c", "eth0"),
            &mut nopool(),
        )
        .unwrap_err();
        assert!(e.msg.contains("no IP addresses available"), "{}", e.msg);
        fs::remove_file(t.path().join("net/10.7.0.77")).unwrap();
        assert!(!set_is_full(&t.path().join("net"), &c.range_sets[0], 0));
        let got = allocate(
            &d,
            &c,
            &plan(&c).unwrap(),
            &Owner::attachment("c", "eth0"),
            &mut nopool(),
        )
        .unwrap();
        assert_eq!(got[0].address.ip(), ip("10.7.0.77"));
    }

    #[test]
    fn status_probe_without_directory() {
        let t = TempDir::new("alloc-status");
        let c = conf(&subnets(&["10.7.0.0/24"]), &t);
        assert!(!set_is_full(&t.path().join("nope"), &c.range_sets[0], 0));
    }
}
