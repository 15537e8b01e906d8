//! Integration tests of the `firewall` plugin, chained after our `bridge` + `host-local` the
//! way a runtime runs a conflist (ADD with the bridge's result as prevResult; CHECK/DEL with the
//! final result). Every test runs in its own throwaway "host" netns (bridges, FORWARD policies
//! and nftables never touch the real host), using the bridge suite's fixture.
//!
//! Needs root, `ip`, `nft`, `iptables`, `busybox`, the reference plugins in /usr/lib/cni and
//! the binaries built first (`cargo build --workspace --bins`).

#[allow(dead_code)]
#[path = "../bridge/common.rs"]
mod common;

use std::path::{Path, PathBuf};

use cni_tests::{bin, nft_set_elements, run, unique, with_prev_result, Call, Netns, Reply};
use serde_json::{json, Value};

use common::*;

const TABLE: &str = "cni_rs_fw";
const FW_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

fn fw_bin() -> PathBuf {
    bin("firewall")
}

fn reference_fw() -> PathBuf {
    PathBuf::from(cni_tests::REFERENCE_DIR).join("firewall")
}

/// The firewall entry of the conflist.
fn fw_conf(fx: &Fx, version: &str, keys: Value) -> Value {
    let mut c = json!({"cniVersion": version, "name": fx.net, "type": "firewall"});
    for (k, v) in keys.as_object().into_iter().flatten() {
        c[k] = v.clone();
    }
    c
}

/// A bridge conf routing everything via the gateway, without our bridge's own inter-bridge
/// isolation (so only the firewall decides).
fn br_conf(fx: &Fx, version: &str, bridge: &str, subnet: &str) -> Value {
    fx.conf(
        version,
        json!({"bridge": bridge, "isGateway": true, "isolateBridges": false}),
        json!({"ranges": ranges(&[subnet]), "routes": [{"dst": "0.0.0.0/0"}]}),
    )
}

#[allow(clippy::too_many_arguments)]
fn call_plugin(
    fx: &Fx,
    plugin: &Path,
    command: &str,
    netns: &str,
    id: &str,
    ifname: &str,
    conf: &Value,
) -> Reply {
    let call = Call {
        container_id: id,
        netns,
        ifname,
        cni_path: fx.cni.path(),
        host: Some(&fx.host),
        ..Call::new(plugin, command)
    };
    run(&call, &conf.to_string())
}

/// One container: bridge ADD, then firewall ADD with its result.
struct Chained {
    att: Att,
    fw: Value,
    /// The firewall's ADD result (the final result of the conflist).
    result: Value,
}

impl Chained {
    fn fw_with_prev(&self) -> Value {
        with_prev_result(&self.fw, &self.result)
    }
}

fn add_chain(fx: &Fx, br: &Value, fw: &Value, plugin: &Path) -> Chained {
    let att = fx.attach(br);
    let c = with_prev_result(fw, &att.result);
    let r = call_plugin(fx, plugin, "ADD", att.ctr.path_str(), &att.id, "eth0", &c).expect_ok();
    Chained {
        result: r.json(),
        att,
        fw: fw.clone(),
    }
}

fn fw_call(fx: &Fx, cmd: &str, ch: &Chained, conf: &Value) -> Reply {
    call_plugin(
        fx,
        &fw_bin(),
        cmd,
        ch.att.ctr.path_str(),
        &ch.att.id,
        "eth0",
        conf,
    )
}

/// Firewall DEL then bridge DEL, as a runtime does (reverse order).
fn del_chain(fx: &Fx, ch: &Chained) {
    fw_call(fx, "DEL", ch, &ch.fw_with_prev()).expect_ok();
    let br = with_prev_result(&ch.att.conf, &ch.result);
    fx.call("DEL", ch.att.ctr.path_str(), &ch.att.id, "eth0", &br, "")
        .expect_ok();
}

/// Every element string of our table in `ns`.
fn fw_elements(ns: &Netns) -> Vec<String> {
    let out = ns.exec(&["nft", "-j", "list", "table", "inet", TABLE]);
    if !out.status.success() {
        return Vec::new();
    }
    nft_set_elements(&serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

fn table_exists(ns: &Netns) -> bool {
    ns.exec(&["nft", "list", "table", "inet", TABLE])
        .status
        .success()
}

/// iptables' FORWARD with policy drop (what `iptables -P FORWARD DROP` or dockerd leave).
fn forward_drop(ns: &Netns) {
    ns.sh(&[
        "nft",
        "add table ip filter; add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }",
    ]);
}

fn assert_blocked(from: &Netns, to: &str, what: &str) {
    assert!(
        !from.ping(to),
        "{what}: ping to {to} passed but must be dropped"
    );
}

fn assert_reaches(from: &Netns, to: &str, what: &str) {
    assert!(ping_ok(from, to, 3), "{what}: ping to {to} failed");
}

#[test]
fn open_policy_allows_traffic_through_forward_drop() {
    let fx = Fx::new();
    forward_drop(&fx.host);
    let (b1, b2) = (unique("fwa"), unique("fwb"));
    let a = fx.attach(&br_conf(&fx, "1.0.0", &b1, "10.61.1.0/24"));
    let b = fx.attach(&br_conf(&fx, "1.0.0", &b2, "10.61.2.0/24"));
    // The FORWARD drop policy is in force: without the firewall nothing crosses.
    assert_blocked(&a.ctr, &b.ip4(), "bridge only, FORWARD policy drop");
    let fw = fw_conf(&fx, "1.0.0", json!({}));
    let mut chained = Vec::new();
    for att in [a, b] {
        let c = with_prev_result(&fw, &att.result);
        let r = fw_call_raw(&fx, &att, &c).expect_ok();
        assert_eq!(
            r.json(),
            att.result,
            "the result is prevResult passed through"
        );
        chained.push(Chained {
            result: r.json(),
            att,
            fw: fw.clone(),
        });
    }
    let (a, b) = (&chained[0], &chained[1]);
    assert_reaches(&a.att.ctr, &b.att.ip4(), "a -> b with firewall");
    assert_reaches(&b.att.ctr, &a.att.ip4(), "b -> a with firewall");
    let rules = fx.host.sh(&["iptables", "-S", "FORWARD"]);
    assert!(
        rules.contains(&format!("-i {b1} ")) && rules.contains(&format!("-o {b1} ")),
        "accept rules for {b1} in FORWARD:\n{rules}"
    );
    for ch in &chained {
        del_chain(&fx, ch);
    }
    assert!(fw_elements(&fx.host).is_empty());
}

/// A firewall call in `host` without a fixture (CNI_PATH is required but unused).
fn raw(host: &Netns, cmd: &str, id: &str, netns: &str, conf: &Value) -> Reply {
    let plugin = fw_bin();
    let call = Call::in_host(&plugin, cmd, host, "/opt/cni/bin", netns, id);
    run(&call, &conf.to_string())
}

fn fw_call_raw(fx: &Fx, att: &Att, conf: &Value) -> Reply {
    call_plugin(
        fx,
        &fw_bin(),
        "ADD",
        att.ctr.path_str(),
        &att.id,
        "eth0",
        conf,
    )
}

#[test]
fn same_bridge_blocks_other_bridges_one_way_and_replies_pass() {
    let fx = Fx::new();
    let (b1, b2) = (unique("fwi"), unique("fwo"));
    let iso = fw_conf(&fx, "1.0.0", json!({"ingressPolicy": "same-bridge"}));
    let open = fw_conf(&fx, "1.0.0", json!({}));
    let c1 = br_conf(&fx, "1.0.0", &b1, "10.62.1.0/24");
    let a = add_chain(&fx, &c1, &iso, &fw_bin());
    let a2 = add_chain(&fx, &c1, &iso, &fw_bin());
    let b = add_chain(
        &fx,
        &br_conf(&fx, "1.0.0", &b2, "10.62.2.0/24"),
        &open,
        &fw_bin(),
    );
    assert_blocked(
        &b.att.ctr,
        &a.att.ip4(),
        "other bridge -> same-bridge container",
    );
    assert_reaches(
        &a.att.ctr,
        &b.att.ip4(),
        "same-bridge container -> other bridge",
    );
    assert_reaches(&a.att.ctr, &a2.att.ip4(), "same bridge");
    assert_reaches(&a2.att.ctr, &a.att.ip4(), "same bridge, other way");
    // The host itself may still reach it (OUTPUT, not FORWARD), as with the reference.
    assert_reaches(&fx.host, &a.att.ip4(), "host -> container");
    // CHECK passes; DEL of a's firewall lifts the isolation for a only.
    fw_call(&fx, "CHECK", &a, &a.fw_with_prev()).expect_ok();
    fw_call(&fx, "DEL", &a, &a.fw_with_prev()).expect_ok();
    assert_reaches(
        &b.att.ctr,
        &a.att.ip4(),
        "after DEL of the isolated attachment",
    );
    assert_blocked(&b.att.ctr, &a2.att.ip4(), "a2 still isolated");
    fw_call(&fx, "DEL", &a2, &a2.fw_with_prev()).expect_ok();
    fw_call(&fx, "DEL", &b, &b.fw_with_prev()).expect_ok();
    assert!(fw_elements(&fx.host).is_empty());
}

#[test]
fn check_detects_a_hand_deleted_element() {
    let fx = Fx::new();
    let fw = fw_conf(&fx, "1.0.0", json!({}));
    let ch = add_chain(
        &fx,
        &br_conf(&fx, "1.0.0", &fx.br, "10.63.0.0/24"),
        &fw,
        &fw_bin(),
    );
    fw_call(&fx, "CHECK", &ch, &ch.fw_with_prev()).expect_ok();
    let ip = ch.att.ip4();
    fx.host.sh(&[
        "nft",
        &format!("delete element inet {TABLE} allow4 {{ {ip} }}"),
    ]);
    let r = fw_call(&fx, "CHECK", &ch, &ch.fw_with_prev());
    let (code, msg) = r.err();
    assert_eq!(code, 999, "{msg}");
    assert!(
        r.stdout.contains(&ip),
        "CHECK error names {ip}: {}",
        r.stdout
    );
    // CHECK without prevResult is refused like the reference.
    let r = fw_call(&fx, "CHECK", &ch, &ch.fw);
    assert_err(&r, 7, "missing prevResult from earlier plugin");
    del_chain(&fx, &ch);
}

#[test]
fn del_is_idempotent_and_works_without_netns_or_prev_result() {
    let fx = Fx::new();
    let fw = fw_conf(&fx, "1.0.0", json!({"ingressPolicy": "same-bridge"}));
    let br = br_conf(&fx, "1.0.0", &fx.br, "10.64.0.0/24");
    let a = add_chain(&fx, &br, &fw, &fw_bin());
    let b = add_chain(&fx, &br, &fw, &fw_bin());
    // allow4 ip, iso4 ip, iso4_br "bridge" . ip: 4 strings per attachment.
    assert_eq!(fw_elements(&fx.host).len(), 8, "3 elements per attachment");
    // DEL with prevResult, twice.
    for _ in 0..2 {
        fw_call(&fx, "DEL", &a, &a.fw_with_prev()).expect_ok();
    }
    let left = fw_elements(&fx.host);
    assert!(!left.contains(&a.att.ip4()), "{left:?}");
    assert!(left.contains(&b.att.ip4()), "b untouched: {left:?}");
    // DEL with an empty CNI_NETNS and no prevResult (ctr run --cni): removed by tag.
    for _ in 0..2 {
        call_plugin(&fx, &fw_bin(), "DEL", "", &b.att.id, "eth0", &b.fw).expect_ok();
    }
    assert!(fw_elements(&fx.host).is_empty());
    // DEL for something never added, in a netns without our table.
    let empty = Fx::new();
    call_plugin(&empty, &fw_bin(), "DEL", "", "nothing", "eth0", &fw).expect_ok();
    assert!(!table_exists(&empty.host));
    for ch in [&a, &b] {
        let br = with_prev_result(&ch.att.conf, &ch.result);
        fx.call("DEL", ch.att.ctr.path_str(), &ch.att.id, "eth0", &br, "")
            .expect_ok();
    }
}

#[test]
fn gc_removes_stale_attachments_only() {
    let fx = Fx::new();
    let fw = fw_conf(&fx, "1.1.0", json!({}));
    let br = br_conf(&fx, "1.1.0", &fx.br, "10.65.0.0/24");
    let a = add_chain(&fx, &br, &fw, &fw_bin());
    let b = add_chain(&fx, &br, &fw, &fw_bin());
    // Another network's element in the same table must survive every GC here.
    let mut other = fw_conf(&fx, "1.1.0", json!({}));
    other["name"] = json!("othernet");
    let prev = json!({"cniVersion": "1.1.0", "interfaces": [{"name": "obr0"}],
        "ips": [{"address": "10.99.0.9/24", "interface": 0}]});
    let octr = Netns::new("tfwo");
    raw(
        &fx.host,
        "ADD",
        "octr",
        octr.path_str(),
        &with_prev_result(&other, &prev),
    )
    .expect_ok();

    let mut gc = fw.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": a.att.id, "ifname": "eth0"}]);
    call_plugin(&fx, &fw_bin(), "GC", "", "", "", &gc).expect_ok();
    let left = fw_elements(&fx.host);
    assert!(
        left.contains(&a.att.ip4()),
        "valid attachment kept: {left:?}"
    );
    assert!(
        !left.contains(&b.att.ip4()),
        "stale attachment removed: {left:?}"
    );
    assert!(left.contains(&"10.99.0.9".to_string()), "{left:?}");

    // Without a list nothing of this network is valid.
    call_plugin(&fx, &fw_bin(), "GC", "", "", "", &fw).expect_ok();
    assert_eq!(fw_elements(&fx.host), vec!["10.99.0.9".to_string()]);
    // STATUS is fine.
    call_plugin(&fx, &fw_bin(), "STATUS", "", "", "", &fw).expect_ok();
    for ch in [&a, &b] {
        let br = with_prev_result(&ch.att.conf, &ch.result);
        fx.call("DEL", ch.att.ctr.path_str(), &ch.att.id, "eth0", &br, "")
            .expect_ok();
    }
}

#[test]
fn sixteen_parallel_adds_then_dels_leave_no_elements() {
    let host = Netns::new("tfwp");
    let net = unique("tfwnet");
    let conf = json!({"cniVersion": "1.0.0", "name": net, "type": "firewall",
        "ingressPolicy": "same-bridge"});
    let ctr = Netns::new("tfwpc");
    let call = |cmd: &'static str, i: usize, c: &Value| {
        raw(&host, cmd, &format!("par{i}"), ctr.path_str(), c)
    };
    let prev = |i: usize| {
        json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "pbr0"}, {"name": "veth", "sandbox": "/x"}],
            "ips": [{"address": format!("10.66.0.{}/24", i + 2), "interface": 1},
                    {"address": format!("fd66::{:x}/64", i + 2), "interface": 1}]})
    };
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..16)
            .map(|i| {
                let c = with_prev_result(&conf, &prev(i));
                let call = &call;
                s.spawn(move || call("ADD", i, &c))
            })
            .collect();
        for h in hs {
            h.join().unwrap().expect_ok();
        }
    });
    // Per IP: allow, iso, and the two strings of "bridge" . ip.
    assert_eq!(fw_elements(&host).len(), 16 * 2 * 4);
    let rules = host.sh(&["nft", "-a", "list", "chain", "inet", TABLE, "forward"]);
    assert_eq!(
        rules.matches("handle").count() - 1,
        7,
        "static rules created exactly once:\n{rules}"
    );
    let admin = host.sh(&["nft", "list", "chain", "inet", TABLE, "admin"]);
    assert_eq!(admin.matches("jump CNI-ADMIN").count(), 1, "{admin}");
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..16)
            .map(|i| {
                let c = with_prev_result(&conf, &prev(i));
                let call = &call;
                s.spawn(move || call("DEL", i, &c))
            })
            .collect();
        for h in hs {
            h.join().unwrap().expect_ok();
        }
    });
    assert!(fw_elements(&host).is_empty(), "{:?}", fw_elements(&host));
}

#[test]
fn every_supported_version_add_check_del() {
    for v in FW_VERSIONS {
        let fx = Fx::new();
        let fw = fw_conf(&fx, v, json!({"ingressPolicy": "same-bridge"}));
        let ch = add_chain(
            &fx,
            &br_conf(&fx, v, &fx.br, "10.67.0.0/24"),
            &fw,
            &fw_bin(),
        );
        assert_eq!(
            ch.result["cniVersion"], v,
            "printed in the config's version"
        );
        assert_eq!(ch.result, ch.att.result, "{v}: prevResult passed through");
        assert!(fw_elements(&fx.host).contains(&ch.att.ip4()), "{v}");
        fw_call(&fx, "CHECK", &ch, &ch.fw_with_prev()).expect_ok();
        del_chain(&fx, &ch);
        assert!(fw_elements(&fx.host).is_empty(), "{v}");
    }
}

#[test]
fn unsupported_versions_are_refused() {
    let host = Netns::new("tfwv");
    let ctr = Netns::new("tfwvc");
    let prev = json!({"cniVersion": "0.3.1", "interfaces": [{"name": "br"}],
        "ips": [{"version": "4", "address": "10.68.0.2/24"}]});
    for v in ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "9.9.9"] {
        let conf = json!({"cniVersion": v, "name": "n", "type": "firewall", "prevResult": prev});
        let r = raw(&host, "ADD", "c", ctr.path_str(), &conf);
        assert_err(&r, 1, "incompatible CNI versions");
    }
    assert!(!table_exists(&host));
    let plugin = fw_bin();
    let r = run(&Call::new(&plugin, "VERSION"), "");
    let v = r.json();
    assert_eq!(v["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));
}

#[test]
fn bad_input_is_code_7_naming_the_key_and_leaves_nothing() {
    let host = Netns::new("tfwb");
    let ctr = Netns::new("tfwbc");
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "br0"}],
        "ips": [{"address": "10.69.0.2/24", "interface": 0}]});
    let no_host_iface = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": "/x"}],
        "ips": [{"address": "10.69.0.2/24", "interface": 0}]});
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"backend": "ebtables", "prevResult": prev}),
            "backend",
        ),
        (json!({"backend": 5, "prevResult": prev}), "backend"),
        (
            json!({"ingressPolicy": "bogus", "prevResult": prev}),
            "ingress policy",
        ),
        (
            json!({"ingressPolicy": "isolated", "prevResult": prev}),
            "isolated",
        ),
        (
            json!({"iptablesAdminChainName": "a b", "prevResult": prev}),
            "iptablesAdminChainName",
        ),
        (
            json!({"iptablesAdminChainName": "forward", "prevResult": prev}),
            "iptablesAdminChainName",
        ),
        (json!({}), "missing prevResult from earlier plugin"),
        (
            json!({"ingressPolicy": "same-bridge", "prevResult": no_host_iface}),
            "interface needs to be set for ingress policy",
        ),
    ];
    for (keys, needle) in cases {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "firewall"});
        for (k, v) in keys.as_object().unwrap() {
            conf[k] = v.clone();
        }
        let r = raw(&host, "ADD", "c", ctr.path_str(), &conf);
        let (code, msg) = r.err();
        assert_eq!(code, 7, "{conf}: {}", r.stdout);
        assert!(
            r.stdout.contains(needle),
            "{conf}: error {msg:?} does not name {needle:?}: {}",
            r.stdout
        );
    }
    assert!(!table_exists(&host), "a refused ADD created state");
    // Every backend name is accepted.
    for b in ["iptables", "firewalld", "nftables"] {
        let conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "firewall",
            "backend": b, "firewalldZone": "trusted", "prevResult": prev});
        raw(&host, "ADD", "c", ctr.path_str(), &conf).expect_ok();
    }
}

/// The same conflist (cniVersion 1.0.0, our bridge + firewall) with the reference firewall and
/// with ours, each in its own host netns with a FORWARD drop policy: the same pings pass and
/// fail, for the open policy and for same-bridge on both bridges.
#[test]
fn same_connectivity_as_the_reference_firewall() {
    let outcome = |plugin: &Path, policy: &str| -> Vec<bool> {
        let fx = Fx::new();
        forward_drop(&fx.host);
        let fw = fw_conf(
            &fx,
            "1.0.0",
            json!({"backend": "iptables", "ingressPolicy": policy}),
        );
        let (b1, b2) = (unique("fwr"), unique("fws"));
        let a = add_chain(
            &fx,
            &br_conf(&fx, "1.0.0", &b1, "10.70.1.0/24"),
            &fw,
            plugin,
        );
        let a2 = add_chain(
            &fx,
            &br_conf(&fx, "1.0.0", &b1, "10.70.1.0/24"),
            &fw,
            plugin,
        );
        let b = add_chain(
            &fx,
            &br_conf(&fx, "1.0.0", &b2, "10.70.2.0/24"),
            &fw,
            plugin,
        );
        let res = vec![
            ping_ok(&a.att.ctr, &b.att.ip4(), 2),
            ping_ok(&b.att.ctr, &a.att.ip4(), 2),
            ping_ok(&a.att.ctr, &a2.att.ip4(), 2),
        ];
        for ch in [&a, &a2, &b] {
            let d = call_plugin(
                &fx,
                plugin,
                "DEL",
                ch.att.ctr.path_str(),
                &ch.att.id,
                "eth0",
                &ch.fw_with_prev(),
            );
            d.expect_ok();
        }
        res
    };
    for policy in ["open", "same-bridge"] {
        let theirs = outcome(&reference_fw(), policy);
        let ours = outcome(&fw_bin(), policy);
        assert_eq!(
            ours, theirs,
            "{policy}: [a->b, b->a, a->a2] reachability differs from the reference"
        );
        let want = if policy == "open" {
            vec![true, true, true]
        } else {
            vec![false, false, true]
        };
        assert_eq!(ours, want, "{policy}");
    }
}
