//! ipMasq state against the real kernel, each test in its own netns.

mod common;

use std::net::IpAddr;

use cni_nft::masq::MasqSetup;
use common::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn child_process_inherits_thread_netns() {
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    let inner = in_netns(|| run("readlink", &["/proc/self/ns/net"]));
    assert_ne!(inner.trim(), host.to_string_lossy());
}

#[test]
fn add_creates_layout() {
    let out = in_netns(|| {
        let mut m = MasqSetup::new().unwrap();
        m.add(
            "mynet",
            "c1",
            "eth0",
            &[(ip("10.88.0.5"), 16), (ip("fd00::5"), 64)],
        )
        .unwrap();
        list_table()
    });
    println!("{out}");
    for want in [
        "set masq4-0a58-16 {",
        "type ipv4_addr",
        "elements = { 10.88.0.5 comment \"mynet c1 eth0\" }",
        "elements = { fd00::5 comment \"mynet c1 eth0\" }",
        "type nat hook postrouting priority srcnat; policy accept;",
        "ip saddr @masq4-0a58-16 jump masq4-0a58-16 comment \"masq4-0a58-16\"",
        "ip6 saddr @masq6-fd00000000000000-64 jump masq6-fd00000000000000-64",
        "ip daddr 10.88.0.0/16 return",
        "ip daddr 224.0.0.0/4 return",
        "ip6 daddr fd00::/64 return",
        "ip6 daddr ff00::/8 return",
        "masquerade",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn add_is_idempotent_and_replaces_reused_ip() {
    in_netns(|| {
        let mut m = MasqSetup::new().unwrap();
        m.add("net", "c1", "eth0", &[(ip("10.1.0.2"), 24)]).unwrap();
        let rules = rule_count();
        assert_eq!(rules, 4); // jump + 3 in the subnet chain
                              // Same call again: no new rules, same single element.
        m.add("net", "c1", "eth0", &[(ip("10.1.0.2"), 24)]).unwrap();
        assert_eq!(rule_count(), rules);
        // Another container in the same subnet: no new rules.
        m.add("net", "c2", "eth0", &[(ip("10.1.0.3"), 24)]).unwrap();
        assert_eq!(rule_count(), rules);
        // IP reused by a new container (stale element from a leak):
        // replaced, with the new owner.
        m.add("net", "c3", "eth0", &[(ip("10.1.0.2"), 24)]).unwrap();
        let l = m.list(Some("net")).unwrap();
        assert_eq!(l.len(), 2, "{l:?}");
        let e = l.iter().find(|e| e.ip == ip("10.1.0.2")).unwrap();
        assert_eq!(e.container_id, "c3");
        // Same IP, different subnet size: moves to the new subnet.
        m.add("net", "c4", "eth0", &[(ip("10.1.0.2"), 16)]).unwrap();
        let l = m.list(Some("net")).unwrap();
        let mine: Vec<_> = l.iter().filter(|e| e.ip == ip("10.1.0.2")).collect();
        assert_eq!(mine.len(), 1, "{l:?}");
        assert_eq!(mine[0].subnet, "masq4-0a01-16");
        assert_eq!(mine[0].container_id, "c4");
        assert_eq!(rule_count(), rules + 4);
    });
}

#[test]
fn del_with_ips_only_touches_own_elements() {
    in_netns(|| {
        let mut m = MasqSetup::new().unwrap();
        m.add(
            "net",
            "c1",
            "eth0",
            &[(ip("10.1.0.2"), 24), (ip("fd01::2"), 64)],
        )
        .unwrap();
        m.add("net", "c2", "eth0", &[(ip("10.1.0.3"), 24)]).unwrap();
        // c1's DEL naming c2's address (stale prevResult) leaves c2 alone.
        m.del("net", "c1", "eth0", Some(&[ip("10.1.0.3")])).unwrap();
        assert_eq!(m.list(None).unwrap().len(), 3);
        m.del(
            "net",
            "c1",
            "eth0",
            Some(&[ip("10.1.0.2"), ip("fd01::2"), ip("10.9.9.9")]),
        )
        .unwrap();
        let l = m.list(None).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].container_id, "c2");
        // Second DEL: nothing left, still success.
        m.del("net", "c1", "eth0", Some(&[ip("10.1.0.2")])).unwrap();
        assert!(!list_table().contains("10.1.0.2"));
    });
}

#[test]
fn del_without_ips_finds_by_owner() {
    in_netns(|| {
        let mut m = MasqSetup::new().unwrap();
        m.add(
            "net",
            "c1",
            "eth0",
            &[(ip("10.1.0.2"), 24), (ip("fd01::2"), 64)],
        )
        .unwrap();
        m.add("net", "c1", "eth1", &[(ip("10.2.0.2"), 24)]).unwrap();
        m.add("other", "c1", "eth0", &[(ip("10.3.0.2"), 24)])
            .unwrap();
        m.del("net", "c1", "eth0", None).unwrap();
        let mut left: Vec<String> = m
            .list(None)
            .unwrap()
            .iter()
            .map(|e| e.ip.to_string())
            .collect();
        left.sort();
        assert_eq!(left, vec!["10.2.0.2", "10.3.0.2"]);
    });
}

#[test]
fn del_and_gc_succeed_without_table() {
    in_netns(|| {
        let mut m = MasqSetup::new().unwrap();
        m.del("net", "c1", "eth0", None).unwrap();
        m.del("net", "c1", "eth0", Some(&[ip("10.1.0.2"), ip("fd00::1")]))
            .unwrap();
        assert!(m.gc("net", &|_, _| false).unwrap().is_empty());
        assert!(m.list(None).unwrap().is_empty());
        assert_eq!(list_table(), "");
    });
}

#[test]
fn gc_removes_stale_entries_of_one_network_and_unused_chains() {
    in_netns(|| {
        let mut m = MasqSetup::new().unwrap();
        m.add("net", "keep", "eth0", &[(ip("10.1.0.2"), 24)])
            .unwrap();
        m.add("net", "stale", "eth0", &[(ip("10.1.0.3"), 24)])
            .unwrap();
        m.add("net", "keep", "eth1", &[(ip("10.5.0.3"), 24)])
            .unwrap();
        m.add("other", "stale", "eth0", &[(ip("10.2.0.3"), 24)])
            .unwrap();
        let removed = m.gc("net", &|c, i| (c, i) == ("keep", "eth0")).unwrap();
        let mut r: Vec<String> = removed.iter().map(|e| e.ip.to_string()).collect();
        r.sort();
        assert_eq!(r, vec!["10.1.0.3", "10.5.0.3"]);
        let mut left: Vec<String> = m
            .list(None)
            .unwrap()
            .iter()
            .map(|e| e.ip.to_string())
            .collect();
        left.sort();
        assert_eq!(left, vec!["10.1.0.2", "10.2.0.3"]);
        let t = list_table();
        assert!(
            !t.contains("masq4-0a0500-24"),
            "unused subnet not pruned:\n{t}"
        );
        assert!(t.contains("masq4-0a0100-24") && t.contains("masq4-0a0200-24"));
        // Chain pruned under an element's feet is re-created by the next ADD.
        m.add("net", "new", "eth0", &[(ip("10.5.0.9"), 24)])
            .unwrap();
        assert!(list_table().contains("chain masq4-0a0500-24"));
    });
}

#[test]
fn concurrent_adds_make_no_duplicates() {
    in_netns(|| {
        let adds = concurrently(16, |i| {
            // Two subnets shared by everyone, one private per thread, plus v6.
            MasqSetup::new().unwrap().add(
                "net",
                &format!("c{i}"),
                "eth0",
                &[
                    (format!("10.{}.0.{}", i % 2, i + 2).parse().unwrap(), 24),
                    (format!("10.100.{i}.2").parse().unwrap(), 24),
                    (format!("fd00::{:x}", i + 2).parse().unwrap(), 64),
                ],
            )
        });
        for r in adds {
            r.expect("concurrent add failed");
        }
        let m = MasqSetup::new().unwrap().list(Some("net")).unwrap();
        assert_eq!(m.len(), 48);
        // (2 shared v4 + 16 private v4 + 1 v6 subnets) * (jump + 3).
        assert_eq!(rule_count(), (2 + 16 + 1) * 4, "{}", list_table());
        // And concurrent DELs.
        let dels = concurrently(16, |i| {
            MasqSetup::new()
                .unwrap()
                .del("net", &format!("c{i}"), "eth0", None)
        });
        for r in dels {
            r.expect("concurrent del failed");
        }
        assert!(MasqSetup::new().unwrap().list(None).unwrap().is_empty());
    });
}

#[test]
fn rejects_whitespace_in_owner() {
    in_netns(|| {
        let e = MasqSetup::new()
            .unwrap()
            .add("my net", "c1", "eth0", &[(ip("10.1.0.2"), 24)])
            .unwrap_err();
        assert!(e.to_string().contains("network name"), "{e}");
    });
}

#[test]
fn prune_never_removes_a_subnet_in_use() {
    use cni_nft::query;
    use cni_nft::{Element, Family, NftSocket};
    in_netns(|| {
        let ns = current_netns();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pruner = {
            let (ns, stop) = (ns.try_clone().unwrap(), stop.clone());
            std::thread::spawn(move || {
                enter_netns(&ns);
                let mut m = MasqSetup::new().unwrap();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    m.gc("other", &|_, _| false).unwrap();
                    n += 1;
                }
                n
            })
        };
        let mut m = MasqSetup::new().unwrap();
        let mut s = NftSocket::new().unwrap();
        for i in 0..200u32 {
            let a = ip(&format!("10.7.{}.2", i % 3));
            m.add("keep", "c", "eth0", &[(a, 24)]).unwrap();
            let set = cni_nft::masq::subnet_name(a, 24);
            assert!(
                query::get_element(&mut s, Family::Inet, "cni_rs", &set, &Element::ip(a))
                    .unwrap()
                    .is_some(),
                "element vanished after add"
            );
            let rules = query::list_rules(&mut s, Family::Inet, "cni_rs", &set).unwrap();
            assert_eq!(
                rules.map(|r| r.len()),
                Some(3),
                "subnet chain pruned while in use"
            );
            m.del("keep", "c", "eth0", Some(&[a])).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let prunes = pruner.join().unwrap();
        println!("{prunes} concurrent gc/prune runs");
        assert!(prunes > 0);
    });
}

#[test]
fn gc_of_thousands_of_elements_is_chunked() {
    in_netns(|| {
        let mut m = MasqSetup::new().unwrap();
        for i in 0..3000u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a10_0000 + 2 + i));
            m.add("net", &format!("c{i}"), "eth0", &[(a, 16)]).unwrap();
        }
        let removed = m.gc("net", &|c, i| (c, i) == ("c7", "eth0")).unwrap();
        assert_eq!(removed.len(), 2999);
        let left = m.list(Some("net")).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].container_id, "c7");
    });
}
