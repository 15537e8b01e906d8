//! macspoofchk state against the real kernel, each test in its own netns:
//! layout (as nft reads it back), add/del/gc, concurrency, and real frames
//! through a bridge with a spoofed source MAC.

mod common;

use std::time::{Duration, Instant};

use cni_nft::spoofchk::{
    SpoofChk, SpoofEntry, ALLOWED_SET, CHAIN, FAMILY, OWNERS_SET, PORTS_SET, TABLE,
};
use cni_nft::{query, NftSocket};
use common::*;
use serde_json::Value;

const MAC1: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC2: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `nft -j list ruleset` as JSON objects (without the metainfo entry).
fn ruleset() -> Vec<Value> {
    let v: Value = serde_json::from_str(&nft(&["-j", "list", "ruleset"])).unwrap();
    let mut all = v["nftables"].as_array().cloned().unwrap_or_default();
    all.retain(|o| o.get("metainfo").is_none());
    all
}

fn of_kind<'a>(rs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    rs.iter().filter_map(|o| o.get(kind)).collect()
}

/// Elements of one of our sets as (key rendered by nft, comment).
fn elements(set: &str) -> Vec<(String, String)> {
    let rs: Value = serde_json::from_str(&nft(&["-j", "list", "ruleset"])).unwrap();
    test_support::nft_set_members(&rs, "bridge", TABLE, set)
}

fn our_rules() -> Vec<Value> {
    ruleset()
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r["family"] == "bridge" && r["table"] == TABLE)
        .cloned()
        .collect()
}

#[test]
fn layout_as_nft_reads_it() {
    in_netns(|| {
        let mut s = SpoofChk::new().unwrap();
        s.add("net", "c1", "eth0", "veth1", MAC1).unwrap();
        let rs = ruleset();
        println!("{}", nft(&["list", "ruleset"]));

        let tables = of_kind(&rs, "table");
        assert_eq!(tables.len(), 1);
        assert_eq!(tables[0]["family"], "bridge");
        assert_eq!(tables[0]["name"], TABLE);

        let chains = of_kind(&rs, "chain");
        assert_eq!(chains.len(), 1, "{chains:?}");
        let c = chains[0];
        assert_eq!(c["name"], CHAIN);
        assert_eq!(c["type"], "filter");
        assert_eq!(c["hook"], "prerouting");
        assert_eq!(c["prio"], -300);
        assert_eq!(c["policy"], "accept");

        let sets = of_kind(&rs, "set");
        let ty = |n: &str| {
            sets.iter()
                .find(|s| s["name"] == n)
                .map(|s| s["type"].clone())
        };
        assert_eq!(ty(PORTS_SET), Some(Value::from("ifname")));
        assert_eq!(
            ty(ALLOWED_SET),
            Some(serde_json::json!(["ifname", "ether_addr"]))
        );
        assert_eq!(
            elements(PORTS_SET),
            vec![("veth1".into(), "net c1 eth0".into())]
        );
        assert_eq!(
            elements(ALLOWED_SET),
            vec![("veth1 . 02:00:00:00:00:01".into(), "net c1 eth0".into())]
        );
        assert_eq!(ty(OWNERS_SET), Some(Value::from("ifname")));
        let owners = elements(OWNERS_SET);
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].0.len(), 15, "{owners:?}");
        assert_eq!(owners[0].1, "net c1 eth0 veth1 02:00:00:00:00:01");

        let rules = of_kind(&rs, "rule");
        assert_eq!(rules.len(), 1);
        let expr = serde_json::to_string(&rules[0]["expr"]).unwrap();
        assert_eq!(
            expr,
            r#"[{"match":{"op":"==","left":{"meta":{"key":"iifname"}},"right":"@spoofchk_ports"}},{"match":{"op":"!=","left":{"concat":[{"meta":{"key":"iifname"}},{"payload":{"protocol":"ether","field":"saddr"}}]},"right":"@spoofchk_allowed"}},{"counter":{"packets":0,"bytes":0}},{"drop":null}]"#
        );

        // Byte-for-byte what nft itself generates for the same rule.
        nft(&[
            "add rule bridge cni_rs prerouting iifname @spoofchk_ports iifname . ether saddr != @spoofchk_allowed counter drop",
        ]);
        let mut sock = NftSocket::new().unwrap();
        let rules = query::list_rules(&mut sock, FAMILY, TABLE, CHAIN)
            .unwrap()
            .unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].exprs, rules[1].exprs);
        assert_eq!(rules[0].exprs, cni_nft::spoofchk::spoofchk_rule());

        // The whole table survives an nft save/restore round trip.
        let saved = nft(&["list", "table", "bridge", TABLE]);
        nft(&["delete", "table", "bridge", TABLE]);
        let f = std::env::temp_dir().join(format!("spoofchk-{}.nft", std::process::id()));
        std::fs::write(&f, &saved).unwrap();
        nft(&["-f", f.to_str().unwrap()]);
        let _ = std::fs::remove_file(&f);
        assert_eq!(nft(&["list", "table", "bridge", TABLE]), saved);
    });
}

#[test]
fn add_del_gc() {
    in_netns(|| {
        let mut s = SpoofChk::new().unwrap();
        // Nothing exists yet: DEL and GC succeed and create nothing.
        s.del("net", "c1", "eth0").unwrap();
        assert!(s.gc("net", &|_, _| false).unwrap().is_empty());
        assert!(ruleset().is_empty());

        s.add("net", "c1", "eth0", "veth1", MAC1).unwrap();
        s.add("net", "c2", "eth0", "veth2", MAC2).unwrap();
        s.add("net", "c2", "eth1", "veth3", [2, 0, 0, 0, 0, 3])
            .unwrap();
        s.add("other", "c9", "eth0", "veth9", [2, 0, 0, 0, 0, 9])
            .unwrap();
        // Idempotent: the same ADD again changes nothing.
        s.add("net", "c1", "eth0", "veth1", MAC1).unwrap();
        assert_eq!(s.list(Some("net")).unwrap().len(), 3);
        assert_eq!(s.list(None).unwrap().len(), 4);
        assert_eq!(our_rules().len(), 1);
        assert_eq!(elements(PORTS_SET).len(), 4);

        // DEL needs only the owner.
        s.del("net", "c2", "eth0").unwrap();
        let ports: Vec<String> = elements(PORTS_SET).into_iter().map(|e| e.0).collect();
        assert_eq!(ports, ["veth1", "veth3", "veth9"]);
        assert!(!elements(ALLOWED_SET)
            .iter()
            .any(|e| e.0.starts_with("veth2")));
        assert!(!elements(OWNERS_SET)
            .iter()
            .any(|e| e.1.starts_with("net c2 eth0 ")));
        assert_eq!(elements(OWNERS_SET).len(), 3);
        s.del("net", "c2", "eth0").unwrap(); // second DEL

        // GC keeps the valid attachments of its network, and other networks.
        let removed = s.gc("net", &|c, i| (c, i) == ("c1", "eth0")).unwrap();
        assert_eq!(
            removed,
            vec![SpoofEntry {
                network: "net".into(),
                container_id: "c2".into(),
                ifname: "eth1".into(),
                host_veth: "veth3".into(),
                mac: [2, 0, 0, 0, 0, 3],
            }]
        );
        let ports: Vec<String> = elements(PORTS_SET).into_iter().map(|e| e.0).collect();
        assert_eq!(ports, ["veth1", "veth9"]);
        assert_eq!(elements(ALLOWED_SET).len(), 2);
        assert_eq!(elements(OWNERS_SET).len(), 2);
        assert_eq!(our_rules().len(), 1);

        // Table removed behind our back: DEL still succeeds, ADD recreates it.
        nft(&["delete", "table", "bridge", TABLE]);
        s.del("net", "c1", "eth0").unwrap();
        s.add("net", "c1", "eth0", "veth1", MAC1).unwrap();
        assert_eq!(our_rules().len(), 1);
        assert_eq!(elements(ALLOWED_SET).len(), 1);
    });
}

#[test]
fn reused_host_veth_name_replaces_stale_elements() {
    in_netns(|| {
        let mut s = SpoofChk::new().unwrap();
        s.add("net", "old", "eth0", "vethX", MAC1).unwrap();
        // The old attachment leaked; a new one gets the same host veth name.
        s.add("net", "new", "eth0", "vethX", MAC2).unwrap();
        assert_eq!(
            elements(PORTS_SET),
            vec![("vethX".into(), "net new eth0".into())]
        );
        // The old MAC must not stay allowed on that port.
        assert_eq!(
            elements(ALLOWED_SET),
            vec![("vethX . 02:00:00:00:00:02".into(), "net new eth0".into())]
        );
        // Nor its index entry.
        let owners = elements(OWNERS_SET);
        assert_eq!(owners.len(), 1, "{owners:?}");
        assert_eq!(owners[0].1, "net new eth0 vethX 02:00:00:00:00:02");
        // A late DEL of the old attachment leaves the new one alone.
        s.del("net", "old", "eth0").unwrap();
        assert_eq!(s.list(None).unwrap().len(), 1);
        assert_eq!(elements(PORTS_SET).len(), 1);
    });
}

#[test]
fn readd_of_same_owner_replaces_its_leaked_state() {
    in_netns(|| {
        let mut s = SpoofChk::new().unwrap();
        s.add("net", "c1", "eth0", "vethA", MAC1).unwrap();
        // The attachment leaked (no DEL); the runtime adds it again, with a
        // new host veth and MAC.
        s.add("net", "c1", "eth0", "vethB", MAC2).unwrap();
        assert_eq!(
            elements(PORTS_SET),
            vec![("vethB".into(), "net c1 eth0".into())]
        );
        assert_eq!(
            elements(ALLOWED_SET),
            vec![("vethB . 02:00:00:00:00:02".into(), "net c1 eth0".into())]
        );
        assert_eq!(elements(OWNERS_SET).len(), 1);
        s.del("net", "c1", "eth0").unwrap();
        assert!(elements(PORTS_SET).is_empty());
        assert!(elements(ALLOWED_SET).is_empty());
        assert!(elements(OWNERS_SET).is_empty());
    });
}

#[test]
fn index_slot_held_by_another_owner() {
    in_netns(|| {
        let mut s = SpoofChk::new().unwrap();
        s.add("net", "c1", "eth0", "veth1", MAC1).unwrap();
        // Simulate a hash collision: c1's slot now names another owner.
        let (slot, _) = elements(OWNERS_SET).remove(0);
        nft(&[&format!(
            "delete element bridge cni_rs spoofchk_owners {{ \"{slot}\" }}"
        )]);
        nft(&[&format!(
            "add element bridge cni_rs spoofchk_owners {{ \"{slot}\" comment \"net zz eth0 veth9 02:00:00:00:00:09\" }}"
        )]);
        // DEL of c1 deletes nothing of the other owner (and cannot find c1's
        // own elements: they are left to GC).
        s.del("net", "c1", "eth0").unwrap();
        assert_eq!(elements(OWNERS_SET).len(), 1);
        // ADD of c1 reports the collision.
        let e = s.add("net", "c1", "eth0", "veth2", MAC2).unwrap_err();
        assert!(e.to_string().contains("hash collision"), "{e}");
        // GC by owner comment cleans both.
        s.gc("net", &|_, _| false).unwrap();
        assert!(elements(PORTS_SET).is_empty());
        assert!(elements(ALLOWED_SET).is_empty());
        assert!(elements(OWNERS_SET).is_empty());
    });
}

#[test]
fn invalid_input_is_rejected_before_touching_the_kernel() {
    in_netns(|| {
        let mut s = SpoofChk::new().unwrap();
        for (net, id, ifn, port) in [
            ("n et", "c", "eth0", "veth1"),
            ("net", "", "eth0", "veth1"),
            ("net", "c", "eth0", ""),
            ("net", "c", "eth0", "veth0123456789ab"),
        ] {
            let e = s.add(net, id, ifn, port, MAC1).unwrap_err();
            assert!(e.to_string().contains("macspoofchk"), "{e}");
        }
        assert!(ruleset().is_empty());
    });
}

#[test]
fn concurrent_adds_and_dels_make_no_duplicates() {
    in_netns(|| {
        // 16 first ADDs racing to create the table, chain and rule.
        concurrently(16, |i| {
            let i = i as u8;
            SpoofChk::new()
                .unwrap()
                .add(
                    "net",
                    &format!("c{i}"),
                    "eth0",
                    &format!("veth{i}"),
                    [2, 0, 0, 0, 0, i],
                )
                .unwrap()
        });
        assert_eq!(our_rules().len(), 1, "{}", nft(&["list", "ruleset"]));
        assert_eq!(of_kind(&ruleset(), "chain").len(), 1);
        assert_eq!(elements(PORTS_SET).len(), 16);
        assert_eq!(elements(ALLOWED_SET).len(), 16);
        assert_eq!(elements(OWNERS_SET).len(), 16);

        // DELs of half, racing ADDs of new ones and 16 GCs of another network.
        concurrently(32, |i| {
            let (mut s, i) = (SpoofChk::new().unwrap(), i as u8);
            if i >= 16 {
                s.gc("elsewhere", &|_, _| false).unwrap();
            } else if i % 2 == 0 {
                s.del("net", &format!("c{i}"), "eth0").unwrap()
            } else {
                let n = i + 100;
                s.add(
                    "net",
                    &format!("c{n}"),
                    "eth0",
                    &format!("veth{n}"),
                    [2, 0, 0, 0, 1, n],
                )
                .unwrap()
            }
        });
        assert_eq!(our_rules().len(), 1);
        let mut sock = NftSocket::new().unwrap();
        let mut n = |set| {
            query::list_elements(&mut sock, FAMILY, TABLE, set)
                .unwrap()
                .unwrap()
                .len()
        };
        let counts = (n(PORTS_SET), n(ALLOWED_SET), n(OWNERS_SET));
        assert_eq!(counts, (16, 16, 16));
    });
}

// ---- real frames ------------------------------------------------------------

/// Container `c` gets `eth0` (MAC `mac`, address `addr`) whose peer
/// `host_if` is a port of `br0` in the calling (host) thread's netns.
fn attach(c: &NsThread, host_if: &'static str, mac: [u8; 6], addr: &'static str) {
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() }.to_string();
    c.run(move || {
        let mac = mac_str(mac);
        run(
            "ip",
            &[
                "link", "add", "eth0", "address", &mac, "type", "veth", "peer", "name", host_if,
                "netns", &me,
            ],
        );
        run("ip", &["addr", "add", addr, "dev", "eth0"]);
        run("ip", &["link", "set", "eth0", "up"]);
    });
    run("ip", &["link", "set", host_if, "master", "br0", "up"]);
}

fn drop_counter() -> u64 {
    let rules = our_rules();
    rules[0]["expr"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e["counter"]["packets"].as_u64())
        .unwrap()
}

#[test]
fn spoofed_source_mac_is_dropped() {
    in_netns(|| {
        let (c1, c2) = (NsThread::new(), NsThread::new());
        run("ip", &["link", "add", "br0", "type", "bridge"]);
        run("ip", &["link", "set", "br0", "up"]);
        attach(&c1, "vc1", MAC1, "10.0.0.1/24");
        attach(&c2, "vc2", MAC2, "10.0.0.2/24");
        // Static neighbours: what is filtered is the data frame itself, not
        // ARP resolution.
        c1.sh(&[
            "ip",
            "neigh",
            "replace",
            "10.0.0.2",
            "lladdr",
            "02:00:00:00:00:02",
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]);
        c2.sh(&[
            "ip",
            "neigh",
            "replace",
            "10.0.0.1",
            "lladdr",
            "02:00:00:00:00:01",
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]);
        assert!(
            udp(&c1, &c2, "10.0.0.2:7001").is_some(),
            "no connectivity at all"
        );

        let mut s = SpoofChk::new().unwrap();
        s.add("net", "c1", "eth0", "vc1", MAC1).unwrap();
        assert!(
            udp(&c1, &c2, "10.0.0.2:7002").is_some(),
            "legit MAC was dropped"
        );
        assert!(
            udp(&c2, &c1, "10.0.0.1:7003").is_some(),
            "unprotected port affected"
        );
        assert_eq!(drop_counter(), 0);

        // The container changes its MAC: its frames no longer pass.
        c1.sh(&["ip", "link", "set", "eth0", "address", "02:00:00:00:00:66"]);
        assert!(
            udp(&c1, &c2, "10.0.0.2:7004").is_none(),
            "spoofed MAC passed"
        );
        assert!(drop_counter() >= 3, "{}", nft(&["list", "ruleset"]));
        // Also when it spoofs the MAC of another container.
        c1.sh(&["ip", "link", "set", "eth0", "address", "02:00:00:00:00:02"]);
        assert!(
            udp(&c1, &c2, "10.0.0.2:7005").is_none(),
            "other container's MAC passed"
        );

        // Back to its own MAC: passes again.
        c1.sh(&["ip", "link", "set", "eth0", "address", "02:00:00:00:00:01"]);
        assert!(
            udp(&c1, &c2, "10.0.0.2:7006").is_some(),
            "legit MAC dropped after restore"
        );

        // After DEL the port is no longer protected.
        c1.sh(&["ip", "link", "set", "eth0", "address", "02:00:00:00:00:66"]);
        s.del("net", "c1", "eth0").unwrap();
        assert!(
            udp(&c1, &c2, "10.0.0.2:7007").is_some(),
            "dropped after DEL"
        );
    });
}

// ---- timings ----------------------------------------------------------------

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q) as usize];
    println!(
        "{name:<48} median {:>7.1?}  p90 {:>7.1?}  (n={})",
        p(0.5),
        p(0.9),
        v.len()
    );
}

/// Prints ADD/DEL/GC costs with 1000 to 20000 other attachments present
/// (asserts nothing about them). `--release -- --nocapture` to read them.
#[test]
fn timings() {
    in_netns(|| {
        let mut s = SpoofChk::new().unwrap();
        let t = Instant::now();
        s.add("net", "first", "eth0", "vfirst", MAC1).unwrap();
        println!(
            "first add (creates table, sets, chain, rule)     {:>7.1?}",
            t.elapsed()
        );
        let mut present = 1u32;
        for target in [1000u32, 5000, 20000] {
            let mut fills = vec![];
            while present < target {
                let t = Instant::now();
                let b = present.to_be_bytes();
                s.add(
                    "net",
                    &format!("c{present}"),
                    "eth0",
                    &format!("v{present}"),
                    [2, 1, b[0], b[1], b[2], b[3]],
                )
                .unwrap();
                fills.push(t.elapsed());
                present += 1;
            }
            println!("with {target} other attachments:");
            stats("  add (fill: new owner, new port)", fills);
            let (mut add, mut del) = (vec![], vec![]);
            for i in 0..100u8 {
                let t = Instant::now();
                s.add("net", "bench", "eth0", "vbench", [2, 2, 0, 0, 0, i])
                    .unwrap();
                add.push(t.elapsed());
                let t = Instant::now();
                s.del("net", "bench", "eth0").unwrap();
                del.push(t.elapsed());
            }
            stats("  add (1 txn, 3 elements)", add);
            stats("  del (3 lookups + 1 txn)", del);
            let t = Instant::now();
            let removed = s.gc("net", &|_, _| false).unwrap();
            assert_eq!(removed.len(), target as usize);
            let gc = t.elapsed();
            // Restore for the next round (gc removed everything of "net").
            println!("  gc removing all {target}: {gc:.1?}");
            present = 1;
            s.add("net", "first", "eth0", "vfirst", MAC1).unwrap();
        }
    });
}
