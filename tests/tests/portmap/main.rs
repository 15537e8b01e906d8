//! Integration tests of the `portmap` plugin chained after our `bridge`: real nftables and real
//! traffic, every test in its own throwaway host netns with a "remote host" netns cabled to it.
//!
//! Needs root, `ip`, `nft` and the binaries built first (`cargo build --workspace --bins`).

mod common;

use cni_tests::with_prev_result;
use common::*;
use serde_json::{json, Value};

#[test]
fn tcp_and_udp_reach_the_container_from_remote_host_itself_loopback_and_hairpin() {
    let fx = Fx::new();
    let ports = json!([tcp(8080, 80), {"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]);
    let mut a = fx.attach(json!({}), ports);
    a.serve("tcp", 80);
    a.serve("udp", 53);
    // Another host, through the host's address: the container sees the remote's address.
    assert_eq!(reach(&fx.remote, "tcp", HOST4, 8080), REMOTE4);
    assert_eq!(reach(&fx.remote, "udp", HOST4, 5353), REMOTE4);
    // The host itself, on its own address and on 127.0.0.1 (masqueraded, route_localnet).
    assert_eq!(reach(&fx.host, "tcp", HOST4, 8080), HOST4);
    assert_eq!(reach(&fx.host, "udp", HOST4, 5353), HOST4);
    assert_ne!(reach(&fx.host, "tcp", "127.0.0.1", 8080), "127.0.0.1");
    let rl = fx.host.sh(&[
        "sysctl",
        "-n",
        &format!("net.ipv4.conf.{}.route_localnet", fx.br),
    ]);
    assert_eq!(rl.trim(), "1");
    // Hairpin: the container to its own published port, masqueraded to the gateway.
    assert_eq!(reach(&a.ctr, "tcp", HOST4, 8080), GW4);
    // Not published: nothing answers; the other host address answers too (no hostIP).
    unreachable(&fx.remote, "tcp", HOST4, 8081);
    assert_eq!(reach(&fx.remote, "tcp", "192.168.77.3", 8080), REMOTE4);
    fx.detach(&a);
    assert_eq!(fx.owned(&a), 0, "{}", fx.table());
    unreachable(&fx.remote, "tcp", HOST4, 8080);
}

#[test]
fn host_ip_v4_and_v6_and_dual_stack() {
    let fx = Fx::new();
    let ports = json!([
        {"hostPort": 8081, "containerPort": 80, "protocol": "tcp", "hostIP": HOST4},
        {"hostPort": 8082, "containerPort": 80, "protocol": "tcp", "hostIP": HOST6},
        tcp(8083, 80),
    ]);
    let mut a = fx.attach(json!({}), ports);
    a.serve("tcp", 80);
    assert_eq!(reach(&fx.remote, "tcp", HOST4, 8081), REMOTE4);
    unreachable(&fx.remote, "tcp", "192.168.77.3", 8081); // another host address
    assert_eq!(reach(&fx.remote, "tcp", HOST6, 8082), "fd77::2");
    unreachable(&fx.remote, "tcp", HOST4, 8082); // a v6 hostIP publishes nothing on v4
    assert_eq!(reach(&fx.remote, "tcp", HOST6, 8083), "fd77::2");
    assert_eq!(reach(&fx.remote, "tcp", "192.168.77.3", 8083), REMOTE4);
    // Hairpin over IPv6.
    assert_eq!(reach(&a.ctr, "tcp", HOST6, 8083), "fd00:250::1");
    let t = fx.table();
    assert!(
        t.contains(&format!(
            "192.168.77.1 . tcp . 8081 comment \"{} {} eth0\" : {} . 80",
            fx.net,
            a.id,
            a.ip4()
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "fd77::1 . tcp . 8082 comment \"{} {} eth0\" : {} . 80",
            fx.net,
            a.id,
            a.ip6()
        )),
        "{t}"
    );
    fx.detach(&a);
    assert_eq!(fx.owned(&a), 0, "{}", fx.table());
}

#[test]
fn sctp_mapping_is_programmed_and_carries_traffic_when_the_kernel_has_sctp() {
    let fx = Fx::new();
    let ports = json!([{"hostPort": 9000, "containerPort": 90, "protocol": "SCTP"}]);
    let mut a = fx.attach(json!({}), ports);
    let t = fx.table();
    assert!(
        t.contains(&format!(
            "sctp . 9000 comment \"{} {} eth0\" : {} . 90",
            fx.net,
            a.id,
            a.ip4()
        )),
        "{t}"
    );
    // SOCK_STREAM/IPPROTO_SCTP exists only with the sctp module.
    let sctp = unsafe_free_sctp_probe();
    if sctp {
        a.serve("sctp", 90);
        assert_eq!(reach(&fx.remote, "sctp", HOST4, 9000), REMOTE4);
    }
    fx.detach(&a);
    assert_eq!(fx.owned(&a), 0);
}

/// Whether this kernel offers SCTP sockets (probed with the echo helper, no unsafe here).
fn unsafe_free_sctp_probe() -> bool {
    let out = std::process::Command::new(cni_tests::bin("cni-echo"))
        .args(["send", "sctp", "127.0.0.1", "9", "probe"])
        .output()
        .expect("cni-echo");
    !String::from_utf8_lossy(&out.stderr).contains("Protocol not supported")
}

#[test]
fn conflict_names_the_holder_changes_nothing_and_del_after_failed_add_keeps_it() {
    let fx = Fx::new();
    let mut a = fx.attach(json!({}), json!([tcp(8080, 80)]));
    a.serve("tcp", 80);
    let before = fx.table();
    // Another container wants 8080/tcp (and a free port): refused as a whole.
    let (b, reply) = fx.try_attach(
        "1.0.0",
        true,
        json!({}),
        json!([tcp(8090, 80), tcp(8080, 81)]),
    );
    let (code, msg) = reply.err();
    assert_eq!(code, 7, "{msg}");
    assert!(
        msg.contains(&format!(
            "host port 8080/tcp is already published by {}/{}/eth0",
            fx.net, a.id
        )),
        "{msg}"
    );
    assert_eq!(fx.table(), before, "nothing half-made");
    // Same port on a specific host IP is the same claim.
    let (c, reply) = fx.try_attach(
        "1.0.0",
        true,
        json!({}),
        json!([{"hostPort": 8080, "containerPort": 80, "hostIP": "192.168.77.3"}]),
    );
    assert_eq!(reply.err().0, 7);
    // The runtime DELs the failed attachments (CRI does): the holder keeps its mapping.
    fx.detach(&b);
    fx.detach(&c);
    assert_eq!(fx.table(), before);
    assert_eq!(reach(&fx.remote, "tcp", HOST4, 8080), REMOTE4);
    // A re-ADD by the holder is idempotent.
    fx.portmap("ADD", &a, a.ctr.path_str()).expect_ok();
    assert_eq!(fx.table(), before);
    fx.detach(&a);
    assert_eq!(fx.owned(&a), 0);
}

#[test]
fn del_with_empty_netns_without_port_mappings_and_twice() {
    let fx = Fx::new();
    let a = fx.attach(json!({}), json!([tcp(8080, 80), tcp(8081, 81)]));
    // 2 claims, 2 any4, 2 any6, hairpin4, hairpin6
    assert_eq!(fx.owned(&a), 8, "{}", fx.table());
    fx.portmap("DEL", &a, "").expect_ok();
    assert_eq!(fx.owned(&a), 0, "{}", fx.table());
    fx.portmap("DEL", &a, "").expect_ok();
    // Without portMappings (and without prevResult): found by the owner tag.
    fx.portmap("ADD", &a, a.ctr.path_str()).expect_ok();
    assert!(fx.owned(&a) > 0);
    let mut bare = a.pm_conf.clone();
    bare.as_object_mut().unwrap().remove("runtimeConfig");
    fx.call("portmap", "DEL", "", &a.id, &bare).expect_ok();
    assert_eq!(fx.owned(&a), 0, "{}", fx.table());
    fx.call("portmap", "DEL", "", &a.id, &bare).expect_ok();
    fx.detach(&a);
}

#[test]
fn gc_removes_only_invalid_attachments_of_its_network() {
    let fx = Fx::new();
    let a = fx.attach(json!({}), json!([tcp(8080, 80)]));
    let b = fx.attach(json!({}), json!([tcp(8081, 80)]));
    let mut gc = fx.pm_conf("1.1.0", json!({}), Value::Null);
    gc["cni.dev/valid-attachments"] = json!([{"containerID": a.id, "ifname": "eth0"}]);
    fx.call("portmap", "GC", "", "", &gc).expect_ok();
    assert!(fx.owned(&a) > 0);
    assert_eq!(fx.owned(&b), 0, "{}", fx.table());
    // Another network's GC with an empty list leaves ours alone.
    let mut other = gc.clone();
    other["name"] = json!("othernet");
    other
        .as_object_mut()
        .unwrap()
        .remove("cni.dev/valid-attachments");
    fx.call("portmap", "GC", "", "", &other).expect_ok();
    assert!(fx.owned(&a) > 0);
    let mut status = fx.pm_conf("1.1.0", json!({}), Value::Null);
    status.as_object_mut().unwrap().remove("runtimeConfig");
    fx.call("portmap", "STATUS", "", "", &status).expect_ok();
    fx.detach(&a);
    fx.detach(&b);
}

#[test]
fn check_verifies_the_elements() {
    let fx = Fx::new();
    let a = fx.attach(json!({}), json!([tcp(8080, 80)]));
    fx.portmap("CHECK", &a, a.ctr.path_str()).expect_ok();
    fx.host.sh(&[
        "nft",
        "delete",
        "element",
        "inet",
        "cni_rs_ports",
        "any4",
        "{ tcp . 8080 }",
    ]);
    let (code, msg) = fx.portmap("CHECK", &a, a.ctr.path_str()).err();
    assert!(msg.contains("8080/tcp is missing"), "{code} {msg}");
    let (_, msg) = fx
        .call("portmap", "CHECK", a.ctr.path_str(), &a.id, &a.pm_conf)
        .err();
    assert!(msg.contains("Required prevResult missing"), "{msg}");
    fx.detach(&a);
    assert_eq!(fx.owned(&a), 0, "{}", fx.table());
}

#[test]
fn thousand_mappings_on_the_node_add_and_del_are_one_transaction_each_and_leak_nothing() {
    let fx = Fx::new();
    let many: Vec<Value> = (20000..21000).map(|p| tcp(p, 80)).collect();
    let filler = fx.attach(json!({}), json!(many));
    let table_with_filler = fx.table();
    let ctr = cni_tests::Netns::new("tpc");
    let id = cni_tests::unique("ctr");
    let bconf = fx.bridge_conf("1.0.0", true);
    let prev = fx
        .call("bridge", "ADD", ctr.path_str(), &id, &bconf)
        .expect_ok()
        .json();
    let pm = with_prev_result(
        &fx.pm_conf("1.0.0", json!({}), json!([tcp(8080, 80), tcp(8081, 81)])),
        &prev,
    );
    let g0 = fx.genid();
    fx.call("portmap", "ADD", ctr.path_str(), &id, &pm)
        .expect_ok();
    assert_eq!(fx.genid(), g0 + 1, "ADD is one transaction");
    fx.call("portmap", "DEL", ctr.path_str(), &id, &pm)
        .expect_ok();
    assert_eq!(fx.genid(), g0 + 2, "DEL is one transaction");
    assert_eq!(fx.table(), table_with_filler, "nothing leaked");
    fx.call(
        "bridge",
        "DEL",
        ctr.path_str(),
        &id,
        &with_prev_result(&bconf, &prev),
    )
    .expect_ok();
    fx.detach(&filler);
    assert_eq!(fx.owned(&filler), 0);
}

#[test]
fn every_version_passes_the_prev_result_through() {
    let fx = Fx::new();
    for v in ALL_VERSIONS {
        let (a, reply) = fx.try_attach(v, false, json!({}), json!([tcp(8080, 80)]));
        let reply = reply.expect_ok();
        assert_eq!(reply.json(), a.result, "{v}");
        assert_eq!(fx.owned(&a), 3, "{v}: {}", fx.table()); // claim, any4, hairpin4
        if v >= "0.4.0" {
            fx.portmap("CHECK", &a, a.ctr.path_str()).expect_ok();
        }
        fx.detach(&a);
        assert_eq!(fx.owned(&a), 0, "{v}");
    }
    // No portMappings: pass-through, nothing programmed.
    let (a, reply) = fx.try_attach("1.0.0", true, json!({}), Value::Null);
    assert_eq!(reply.expect_ok().json(), a.result);
    assert_eq!(fx.owned(&a), 0);
    fx.detach(&a);
}

#[test]
fn bad_input_is_refused_with_code_7_before_anything_is_made() {
    let fx = Fx::new();
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
        "ips": [{"address": "10.250.0.9/24", "interface": 0}]});
    let cases: Vec<(Value, Value, &str)> = vec![
        (
            json!({}),
            json!([tcp(0, 80)]),
            "Invalid host port number: 0",
        ),
        (
            json!({}),
            json!([{"hostPort": 8080, "containerPort": 70000}]),
            "Invalid container port number: 70000",
        ),
        (
            json!({}),
            json!([{"hostPort": 1, "containerPort": 1, "protocol": "icmp"}]),
            "unknown protocol",
        ),
        (
            json!({}),
            json!([{"hostPort": 1, "containerPort": 1, "hostIP": "nope"}]),
            "is not an IP address",
        ),
        (
            json!({"markMasqBit": 40}),
            json!([tcp(1, 1)]),
            "MasqMarkBit must be between 0 and 31",
        ),
        (
            json!({"markMasqBit": 1, "externalSetMarkChain": "X"}),
            json!([tcp(1, 1)]),
            "Cannot specify externalSetMarkChain and markMasqBit",
        ),
        (
            json!({"backend": "ebpf"}),
            json!([tcp(1, 1)]),
            "unknown portmap backend",
        ),
        (
            json!({"conditionsV4": ["-m", "comment"]}),
            json!([tcp(1, 1)]),
            "condition \"-m\"",
        ),
        (
            json!({"conditionsV4": ["tcp dport 80"]}),
            json!([tcp(1, 1)]),
            "condition \"tcp\"",
        ),
        (
            json!({}),
            json!([{"hostPort": "x", "containerPort": 1}]),
            "hostport",
        ),
    ];
    for (keys, ports, want) in cases {
        let conf = with_prev_result(&fx.pm_conf("1.0.0", keys.clone(), ports), &prev);
        let (code, msg) = fx.call("portmap", "ADD", "/dev/null", "c1", &conf).err();
        assert_eq!(code, 7, "{keys} {msg}");
        assert!(msg.contains(want), "{keys}: {msg} lacks {want:?}");
    }
    let conf = fx.pm_conf("1.0.0", json!({}), json!([tcp(1, 1)]));
    let (code, msg) = fx.call("portmap", "ADD", "/dev/null", "c1", &conf).err();
    assert_eq!(
        (code, msg.as_str()),
        (7, "must be called as chained plugin")
    );
    assert_eq!(fx.table(), "", "nothing was created");
}

#[test]
fn snat_false_and_masq_all() {
    let fx = Fx::new();
    let mut a = fx.attach(json!({"snat": false}), json!([tcp(8080, 80)]));
    a.serve("tcp", 80);
    assert!(
        !fx.table().contains(&format!("{} . {}", a.ip4(), a.ip4())),
        "no hairpin element"
    );
    assert_eq!(reach(&fx.remote, "tcp", HOST4, 8080), REMOTE4);
    fx.detach(&a);
    let mut b = fx.attach(json!({"masqAll": true}), json!([tcp(8081, 80)]));
    b.serve("tcp", 80);
    // Every connection is masqueraded: the container sees the bridge's address.
    assert_eq!(reach(&fx.remote, "tcp", HOST4, 8081), GW4);
    fx.detach(&b);
    assert_eq!(fx.owned(&b), 0);
}

#[test]
fn conditions_restrict_who_is_mapped() {
    let fx = Fx::new();
    let keys = json!({"conditionsV4": ["!", "-s", "192.168.77.2"], "conditionsV6": ["ip6 saddr != fd77::2"]});
    let mut a = fx.attach(keys.clone(), json!([tcp(8080, 80)]));
    a.serve("tcp", 80);
    unreachable(&fx.remote, "tcp", HOST4, 8080);
    unreachable(&fx.remote, "tcp", HOST6, 8080);
    assert_eq!(reach(&fx.host, "tcp", HOST4, 8080), HOST4);
    let t = fx.table();
    assert!(t.contains("ip saddr != 192.168.77.2 jump lane4-"), "{t}");
    // A second container with the same conditions shares the lane (no new rule).
    let rules = t.matches("jump lane").count();
    let b = fx.attach(keys, json!([tcp(8081, 80)]));
    assert_eq!(fx.table().matches("jump lane").count(), rules);
    fx.portmap("CHECK", &b, b.ctr.path_str()).expect_ok();
    fx.detach(&a);
    fx.detach(&b);
    assert_eq!(fx.owned(&a) + fx.owned(&b), 0, "{}", fx.table());
}
