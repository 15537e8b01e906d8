//! Interop with the Debian reference `/usr/lib/cni/host-local` (Go, v1.1.1, speaks cniVersion
//! ≤ 1.0.0): both plugins against ONE data directory, interleaved and in parallel. No address may
//! be handed out twice, each must CHECK and DEL the other's reservations, and nothing may be left
//! behind. CI installs the reference; its absence is a failure, not a skip.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use common::*;

const PARALLEL: usize = 16;
const ADDS: usize = 224;

fn interop_conf(t: &TempDir) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"interop","type":"bridge",
        "ipam":{{"type":"host-local","dataDir":"{}",
        "ranges":[[{{"subnet":"10.77.0.0/16"}}],[{{"subnet":"fd77::/64"}}]]}}}}"#,
        t.str()
    )
}

/// Runs `job(i)` for `0..n` on `PARALLEL` threads.
fn parallel(n: usize, job: impl Fn(usize) + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                job(i);
            });
        }
    });
}

fn pick(i: usize, reference: &'static str) -> &'static str {
    if i.is_multiple_of(2) {
        OURS
    } else {
        reference
    }
}

fn other(bin: &'static str, reference: &'static str) -> &'static str {
    if bin == OURS {
        reference
    } else {
        OURS
    }
}

fn addresses(r: &serde_json::Value) -> Vec<String> {
    r["ips"]
        .as_array()
        .unwrap_or_else(|| panic!("no ips in {r}"))
        .iter()
        .map(|i| {
            let a = i["address"].as_str().unwrap();
            a.split('/').next().unwrap().to_string()
        })
        .collect()
}

#[test]
fn go_and_rust_share_one_data_dir() {
    let reference = reference_binary();
    let t = TempDir::new("interop");
    let ns = Netns::new();
    let c = interop_conf(&t);
    let dir = t.join("interop");

    // Interleaved, one at a time: each sees the other's reservations and round-robin pointer.
    let mut seen = HashSet::new();
    for i in 0..12 {
        let id = format!("seq{i}");
        let bin = pick(i, reference);
        let r = Call {
            bin,
            ..Call::new(ns.path(), &id)
        }
        .add(&c)
        .ok();
        for a in addresses(&r) {
            assert!(seen.insert(a.clone()), "{a} handed out twice");
        }
        // A second ADD of the same attachment by the other implementation is a duplicate.
        let dup = Call {
            bin: other(bin, reference),
            ..Call::new(ns.path(), &id)
        }
        .add(&c)
        .err();
        assert!(
            dup.1.contains("duplicate allocation is not allowed"),
            "{dup:?}"
        );
    }
    // Round-robin continued across implementations: exactly .2 … .13 and ::2 … ::d.
    let mut want: Vec<String> = (2..14).map(|i| format!("10.77.0.{i}")).collect();
    want.extend((2..14).map(|i| format!("fd77::{i:x}")));
    want.sort();
    let mut got: Vec<String> = seen.iter().cloned().collect();
    got.sort();
    assert_eq!(got, want);
    for i in 0..12 {
        let id = format!("seq{i}");
        let x = Call {
            bin: other(pick(i, reference), reference),
            ..Call::new(ns.path(), &id)
        };
        x.check(&c).ok();
        x.del(&c).ok();
        assert!(x.check(&c).err().1.contains("Failed to find address"));
    }
    assert!(ip_files(&dir).is_empty(), "{:?}", ip_files(&dir));

    // In parallel: 224 ADDs, 16 at a time, alternating implementations.
    let results: Mutex<BTreeMap<String, Vec<String>>> = Mutex::new(BTreeMap::new());
    parallel(ADDS, |i| {
        let id = format!("par{i}");
        let r = Call {
            bin: pick(i, reference),
            ..Call::new(ns.path(), &id)
        }
        .add(&c)
        .ok();
        results.lock().unwrap().insert(id, addresses(&r));
    });
    let results = results.into_inner().unwrap();
    assert_eq!(results.len(), ADDS);
    let mut all = HashSet::new();
    for (id, ips) in &results {
        assert_eq!(ips.len(), 2, "{id}: {ips:?}");
        for a in ips {
            assert!(all.insert(a.clone()), "{a} handed out twice");
            // The file says who owns it, in the reference format.
            let content = fs::read(dir.join(a)).unwrap();
            assert_eq!(content, format!("{id}\r\neth0").as_bytes(), "{a}");
        }
    }
    assert_eq!(ip_files(&dir).len(), 2 * ADDS);

    // Each CHECKs the other's reservations, in parallel.
    parallel(ADDS, |i| {
        Call {
            bin: other(pick(i, reference), reference),
            ..Call::new(ns.path(), &format!("par{i}"))
        }
        .check(&c)
        .ok();
    });

    // Each DELs the other's, in parallel with fresh ADDs by both.
    let fresh: Mutex<Vec<String>> = Mutex::new(Vec::new());
    parallel(ADDS + 32, |i| {
        if i < ADDS {
            Call {
                bin: other(pick(i, reference), reference),
                ..Call::new(ns.path(), &format!("par{i}"))
            }
            .del(&c)
            .ok();
        } else {
            let r = Call {
                bin: pick(i, reference),
                ..Call::new(ns.path(), &format!("new{i}"))
            }
            .add(&c)
            .ok();
            fresh.lock().unwrap().extend(addresses(&r));
        }
    });
    let fresh = fresh.into_inner().unwrap();
    let unique: HashSet<&String> = fresh.iter().collect();
    assert_eq!(unique.len(), 64, "fresh ADDs collided: {fresh:?}");
    let mut left = ip_files(&dir);
    let mut want: Vec<String> = fresh.clone();
    left.sort();
    want.sort();
    assert_eq!(left, want, "only the fresh reservations remain");
    parallel(32, |k| {
        let i = ADDS + k;
        Call {
            bin: other(pick(i, reference), reference),
            ..Call::new(ns.path(), &format!("new{i}"))
        }
        .del(&c)
        .ok();
    });
    assert!(ip_files(&dir).is_empty(), "{:?}", ip_files(&dir));
    // And our index agrees with the (now empty) directory.
    assert!(Call::new(ns.path(), "par0")
        .check(&c)
        .err()
        .1
        .contains("Failed to find address"));
}
