//! `macspoofchk` through the built `bridge` binary, exec'd like a runtime does, in a throwaway
//! host netns: ADD protects the host veth with the container's MAC, real frames with another
//! source MAC are dropped, DEL (also without netns) and GC remove the state, a failed ADD rolls
//! it back.
//!
//! Needs root, `ip`, `nft`, `busybox` and the binaries built first (`cargo build --workspace
//! --bins`).

use cni_tests::{
    bin, nft_set_members, run, unique, with_prev_result, Call, Netns, PluginDir, Reply, TempDir,
};
use serde_json::{json, Value};

struct Fx {
    host: Netns,
    data: TempDir,
    cni: PluginDir,
    bridge_bin: std::path::PathBuf,
    br: String,
    net: String,
}

struct Att {
    ctr: Netns,
    id: String,
    conf: Value,
    result: Value,
}

impl Att {
    fn host_veth(&self) -> String {
        self.result["interfaces"][1]["name"]
            .as_str()
            .unwrap()
            .to_string()
    }
    fn mac(&self) -> String {
        self.result["interfaces"][2]["mac"]
            .as_str()
            .unwrap()
            .to_string()
    }
    fn ip4(&self) -> String {
        let a = self.result["ips"][0]["address"].as_str().unwrap();
        a.split('/').next().unwrap().to_string()
    }
}

impl Fx {
    fn new() -> Fx {
        let bridge_bin = bin("bridge");
        let cni = PluginDir::new(&[("bridge", &bridge_bin), ("host-local", &bin("host-local"))]);
        Fx {
            host: Netns::new("tsh"),
            data: TempDir::new("tsdata"),
            cni,
            bridge_bin,
            br: unique("tsbr"),
            net: unique("tsnet"),
        }
    }

    fn conf(&self, macspoofchk: bool) -> Value {
        json!({
            "cniVersion": "1.1.0",
            "name": self.net,
            "type": "bridge",
            "bridge": self.br,
            "isGateway": true,
            "macspoofchk": macspoofchk,
            "ipam": {
                "type": "host-local",
                "dataDir": self.data.str(),
                "ranges": [[{"subnet": "10.77.0.0/24"}]],
            },
        })
    }

    fn call(&self, command: &str, netns: &str, id: &str, conf: &Value) -> Reply {
        let call = Call::in_host(
            &self.bridge_bin,
            command,
            &self.host,
            self.cni.path(),
            netns,
            id,
        );
        run(&call, &conf.to_string())
    }

    fn attach(&self, conf: &Value) -> Att {
        let ctr = Netns::new("tsc");
        let id = unique("ctr");
        let r = self.call("ADD", ctr.path_str(), &id, conf).expect_ok();
        Att {
            ctr,
            id,
            conf: conf.clone(),
            result: r.json(),
        }
    }

    fn del(&self, att: &Att, netns: &str) -> Reply {
        let c = with_prev_result(&att.conf, &att.result);
        self.call("DEL", netns, &att.id, &c)
    }

    /// Elements of `bridge cni_rs <set>` as nft renders them (`"a . b"` for concatenations),
    /// with their comments.
    fn elements(&self, set: &str) -> Vec<(String, String)> {
        nft_set_members(&self.host.nft_ruleset(), "bridge", "cni_rs", set)
    }

    /// (port, allowed, owners) element counts.
    fn counts(&self) -> (usize, usize, usize) {
        (
            self.elements("spoofchk_ports").len(),
            self.elements("spoofchk_allowed").len(),
            self.elements("spoofchk_owners").len(),
        )
    }

    fn spoofchk_rules(&self) -> usize {
        let rs = self.host.nft_ruleset();
        rs["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| o["rule"]["family"] == "bridge" && o["rule"]["table"] == "cni_rs")
            .count()
    }

    fn owner(&self, att: &Att) -> String {
        format!("{} {} eth0", self.net, att.id)
    }
}

#[test]
fn add_protects_the_port_and_del_removes_it() {
    let fx = Fx::new();
    let conf = fx.conf(true);
    let a = fx.attach(&conf);
    let b = fx.attach(&conf);
    assert_eq!(
        fx.elements("spoofchk_allowed"),
        {
            let mut v = vec![
                (format!("{} . {}", a.host_veth(), a.mac()), fx.owner(&a)),
                (format!("{} . {}", b.host_veth(), b.mac()), fx.owner(&b)),
            ];
            v.sort();
            v
        },
        "{}",
        fx.host.sh(&["nft", "list", "ruleset"])
    );
    assert!(fx
        .elements("spoofchk_ports")
        .contains(&(a.host_veth(), fx.owner(&a))));
    assert_eq!(fx.counts(), (2, 2, 2));
    assert_eq!(fx.spoofchk_rules(), 1);

    fx.del(&a, a.ctr.path_str()).expect_ok();
    assert_eq!(fx.counts(), (1, 1, 1));
    assert!(!fx
        .elements("spoofchk_ports")
        .iter()
        .any(|e| e.0 == a.host_veth()));
    fx.del(&a, a.ctr.path_str()).expect_ok(); // second DEL

    // DEL with an empty netns (ctr run --cni, netns already gone) still finds it by owner.
    fx.del(&b, "").expect_ok();
    assert_eq!(fx.counts(), (0, 0, 0));
    assert_eq!(fx.spoofchk_rules(), 1);
}

#[test]
fn without_macspoofchk_no_bridge_table() {
    let fx = Fx::new();
    let a = fx.attach(&fx.conf(false));
    let tables = fx.host.sh(&["nft", "list", "tables"]);
    assert!(!tables.contains("table bridge"), "{tables}");
    fx.del(&a, a.ctr.path_str()).expect_ok();
}

#[test]
fn spoofed_source_mac_is_dropped() {
    let fx = Fx::new();
    let conf = fx.conf(true);
    let a = fx.attach(&conf);
    let b = fx.attach(&conf);
    let ping = |from: &Netns, to: &str| (0..3).any(|_| from.ping(to));
    assert!(ping(&a.ctr, &b.ip4()), "no connectivity with the legit MAC");
    assert!(ping(&a.ctr, "10.77.0.1"), "gateway unreachable");

    // The container changes its MAC: its frames (to the other container and to the host) are
    // dropped.
    a.ctr
        .ip(&["link", "set", "eth0", "address", "02:42:de:ad:be:ef"]);
    assert!(
        !ping(&a.ctr, &b.ip4()),
        "spoofed MAC reached the other container"
    );
    assert!(!a.ctr.ping("10.77.0.1"), "spoofed MAC reached the gateway");
    // Spoofing the other container's MAC does not help either.
    a.ctr.ip(&["link", "set", "eth0", "address", &b.mac()]);
    assert!(!a.ctr.ping(&b.ip4()), "the other container's MAC passed");

    // Back to its own MAC: passes again; the other container was never affected.
    a.ctr.ip(&["link", "set", "eth0", "address", &a.mac()]);
    assert!(ping(&a.ctr, &b.ip4()), "legit MAC dropped after restore");
    assert!(ping(&b.ctr, &a.ip4()));

    // After DEL of b, a's protection is intact.
    fx.del(&b, b.ctr.path_str()).expect_ok();
    a.ctr
        .ip(&["link", "set", "eth0", "address", "02:42:de:ad:be:ef"]);
    assert!(!a.ctr.ping("10.77.0.1"));
}

#[test]
fn gc_removes_stale_attachments() {
    let fx = Fx::new();
    let conf = fx.conf(true);
    let keep = fx.attach(&conf);
    let stale = fx.attach(&conf);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": keep.id, "ifname": "eth0"}]);
    fx.call("GC", "", "", &gc).expect_ok();
    assert_eq!(
        fx.elements("spoofchk_ports"),
        vec![(keep.host_veth(), fx.owner(&keep))]
    );
    assert_eq!(fx.counts(), (1, 1, 1));
    assert!(!fx
        .elements("spoofchk_owners")
        .iter()
        .any(|e| e.1.contains(&stale.id)));
    // GC runs even when macspoofchk is now off: the state may predate the change.
    let mut gc = fx.conf(false);
    gc["cni.dev/valid-attachments"] = json!([]);
    fx.call("GC", "", "", &gc).expect_ok();
    assert_eq!(fx.counts(), (0, 0, 0));
}

#[test]
fn failed_add_rolls_back_the_spoof_check() {
    let fx = Fx::new();
    // Make the step after macspoofchk (bridge isolation in `inet cni_rs`) fail: a set of ours
    // with the wrong key type.
    fx.host.sh(&[
        "nft",
        "add table inet cni_rs; add set inet cni_rs fwd_isolated_self { type ipv4_addr; }",
    ]);
    let ctr = Netns::new("tsc");
    let r = fx.call("ADD", ctr.path_str(), &unique("ctr"), &fx.conf(true));
    let (_, msg) = r.err();
    assert!(
        msg.contains("forwarding"),
        "failed for another reason: {msg}"
    );
    assert_eq!(fx.counts(), (0, 0, 0), "{}", r.stdout);
    // The container side is gone too.
    assert!(ctr.link("eth0").is_none());
}
