//! Micro-benchmark (prints timings, asserts nothing about them): one ADD
//! and one DEL transaction, with 1000 other containers present.
//! `cargo test -p cni-nft --release --test bench -- --nocapture`

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use cni_nft::forward::ensure_bridge_forwarding;
use cni_nft::masq::MasqSetup;
use common::*;

fn ip(i: u32) -> IpAddr {
    IpAddr::from((0x0a40_0000u32 + i).to_be_bytes()) // 10.64.0.0/10
}

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q) as usize];
    println!(
        "{name:<44} median {:>7.1?}  p90 {:>7.1?}  (n={})",
        p(0.5),
        p(0.9),
        v.len()
    );
}

#[test]
fn bench_add_del() {
    in_netns(|| {
        let mut m = MasqSetup::new().unwrap();
        let t = Instant::now();
        m.add("net", "first", "eth0", &[(ip(1), 10)]).unwrap();
        println!(
            "first add (creates table/maps/chains)        {:>7.1?}",
            t.elapsed()
        );
        for i in 2..1002 {
            m.add("net", &format!("c{i}"), "eth0", &[(ip(i), 10)])
                .unwrap();
        }
        let (mut add, mut del, mut del_dump, mut add_both) = (vec![], vec![], vec![], vec![]);
        for i in 0..200u32 {
            let a = ip(5000 + i);
            let t = Instant::now();
            m.add("net", "bench", "eth0", &[(a, 10)]).unwrap();
            add.push(t.elapsed());
            let t = Instant::now();
            m.del("net", "bench", "eth0", Some(&[a])).unwrap();
            del.push(t.elapsed());
            let six: IpAddr = format!("fd00::{:x}", i + 1).parse().unwrap();
            let t = Instant::now();
            m.add("net", "bench", "eth0", &[(a, 10), (six, 64)])
                .unwrap();
            add_both.push(t.elapsed());
            let t = Instant::now();
            m.del("net", "bench", "eth0", None).unwrap();
            del_dump.push(t.elapsed());
        }
        println!("with 1000 other containers in the maps:");
        stats("add (1 IPv4)", add);
        stats("del with IPs (list sets + get + 1 txn)", del);
        stats("add (IPv4 + IPv6)", add_both);
        stats("del without IPs (dump 1000 + 1 txn)", del_dump);
        ensure_bridge_forwarding("br0", true).unwrap();
        let mut fwd = vec![];
        for _ in 0..200 {
            let t = Instant::now();
            ensure_bridge_forwarding("br0", true).unwrap();
            fwd.push(t.elapsed());
        }
        stats("ensure_bridge_forwarding (no change)", fwd);
        assert_eq!(m.list(None).unwrap().len(), 1001);
    });
}
