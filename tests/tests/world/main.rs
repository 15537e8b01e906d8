//! The world changing underneath the bridge/portmap/firewall chain: the container's netns
//! deleted between ADD and DEL, the bridge deleted by hand, our nftables tables flushed or
//! deleted by hand. CHECK reports what is missing, the next ADD repairs (and works, traffic
//! included), DEL of the old attachment still succeeds, and nothing is left behind.

use cni_tests::chain::{result_ips, runtime_conf, settle, SuiteHost};
use cni_tests::libcni::{Cni, GcArgs, NetworkConfigList, RuntimeConf};
use cni_tests::suite::tcp_delivers;
use cni_tests::{unique, Netns};
use serde_json::Value;

mod lanes;

const GW4: &str = "10.81.0.1";

struct Fx {
    sh: SuiteHost,
    list: NetworkConfigList,
    bridge: String,
    cni: Cni,
    next_port: std::cell::Cell<u16>,
}

struct Att {
    ns: Netns,
    rt: RuntimeConf,
    port: u16,
    result: Value,
}

/// ADD of a new container to `list`, publishing the next port of `next_port`.
fn attach(cni: &Cni, list: &NetworkConfigList, next_port: &std::cell::Cell<u16>) -> Att {
    let ns = Netns::new("hfwc");
    let port = next_port.get();
    next_port.set(port + 1);
    let rt = runtime_conf(&ns, &unique("hfwid"), Some(port));
    let result = cni
        .add_network_list(list, &rt)
        .unwrap_or_else(|e| panic!("ADD to {}: {e}", list.name));
    Att {
        ns,
        rt,
        port,
        result,
    }
}

impl Fx {
    fn new() -> Fx {
        let sh = SuiteHost::new("hfw");
        let bridge = unique("hfwbr");
        let list = sh.chain(&unique("hfwn"), &bridge, "10.81.0.0/24", "fd81::/64");
        let cni = sh.cni();
        Fx {
            sh,
            list,
            bridge,
            cni,
            next_port: std::cell::Cell::new(22000),
        }
    }

    fn add(&self) -> Att {
        attach(&self.cni, &self.list, &self.next_port)
    }

    fn check(&self, att: &Att) -> Result<(), String> {
        self.cni
            .check_network_list(&self.list, &att.rt)
            .map_err(|e| e.msg)
    }

    fn del(&self, att: &Att) {
        self.cni
            .del_network_list(&self.list, &att.rt)
            .unwrap_or_else(|e| panic!("DEL {}: {e}", att.rt.container_id));
    }

    /// The attachment works: its gateway answers, and its published port delivers from the
    /// host to the container.
    fn works(&self, att: &Att) -> bool {
        att.ns.ping(GW4) && tcp_delivers(&att.ns, 80, &self.sh.host, GW4, att.port)
    }

    fn assert_clean(&self) {
        let left = settle(10, || {
            self.sh
                .leftovers(&[self.list.name.as_str()], &[self.bridge.as_str()])
        });
        assert!(left.is_empty(), "left behind: {left:#?}");
    }
}

#[test]
fn hf_world_netns_deleted_between_add_and_del() {
    let fx = Fx::new();
    let keep = fx.add();
    let att = fx.add();
    assert!(fx.works(&att), "the attachment works before its netns goes");
    let host_veth = att.result["interfaces"][1]["name"]
        .as_str()
        .expect("host veth in result")
        .to_string();
    let ips = result_ips(&att.result);
    let Att { ns, rt, .. } = att;
    drop(ns);
    let started = std::time::Instant::now();
    fx.cni
        .del_network_list(&fx.list, &rt)
        .unwrap_or_else(|e| panic!("DEL with the netns gone: {e}"));
    eprintln!(
        "world: DEL with the netns gone took {:?}",
        started.elapsed()
    );
    assert!(
        fx.sh.host.link_gone_after_del(&host_veth),
        "host veth {host_veth} left"
    );
    let reserved = cni_tests::host_local_reservations(fx.sh.data.path(), &fx.list.name);
    for ip in &ips {
        assert!(!reserved.contains(ip), "{ip} still reserved");
    }
    let elems = cni_tests::nft_set_elements(&fx.sh.host.nft_ruleset());
    for ip in &ips {
        assert!(
            !elems.iter().any(|e| e == ip),
            "{ip} still in an nftables set: {elems:?}"
        );
    }
    // A second DEL (the runtime retrying) is fine too.
    fx.cni
        .del_network_list(&fx.list, &rt)
        .unwrap_or_else(|e| panic!("second DEL: {e}"));
    assert!(fx.works(&keep), "the other attachment is untouched");
    fx.del(&keep);
    fx.assert_clean();
}

#[test]
fn hf_world_bridge_deleted_by_hand() {
    let fx = Fx::new();
    let old = fx.add();
    assert!(fx.works(&old));
    fx.check(&old).expect("CHECK before");
    fx.sh.host.ip(&["link", "del", &fx.bridge]);
    let err = fx
        .check(&old)
        .expect_err("CHECK must report the missing bridge");
    eprintln!("world: CHECK with the bridge gone: {err}");
    assert!(
        err.contains(&fx.bridge),
        "the CHECK error names the bridge: {err}"
    );
    let new = fx.add();
    assert!(fx.sh.host.link(&fx.bridge).is_some(), "ADD recreated it");
    assert!(fx.works(&new), "the attachment after the bridge came back");
    fx.check(&new).expect("CHECK of the new attachment");
    fx.del(&old);
    fx.del(&new);
    fx.assert_clean();
    // Deleted by hand once more with no attachment left: only GC can drop the bridge's
    // isolation elements now, and it must.
    fx.sh.host.ip(&["link", "del", &fx.bridge]);
    let named = |fx: &Fx| {
        cni_tests::nft_set_elements(&fx.sh.host.nft_ruleset())
            .into_iter()
            .filter(|e| e.contains(fx.bridge.as_str()))
            .collect::<Vec<_>>()
    };
    assert!(
        !named(&fx).is_empty(),
        "the bridge's isolation elements exist before GC (else this checks nothing)"
    );
    fx.cni
        .gc_network_list(&fx.list, GcArgs::List(&[]))
        .unwrap_or_else(|e| panic!("GC with the bridge gone: {e}"));
    assert_eq!(
        named(&fx),
        Vec::<String>::new(),
        "GC left elements naming the gone bridge"
    );
    let left = fx.sh.leftovers(&[fx.list.name.as_str()], &[]);
    assert!(left.is_empty(), "left behind after GC: {left:#?}");
}

/// One hand-made change of our nftables state, then CHECK / ADD / DEL.
fn nft_changed_by_hand(what: &[&str], check_mentions: &[&str]) {
    let fx = Fx::new();
    let old = fx.add();
    assert!(fx.works(&old));
    fx.sh.host.sh(&[&["nft"][..], what].concat());
    let err = fx
        .check(&old)
        .expect_err(&format!("CHECK must report `nft {}`", what.join(" ")));
    eprintln!("world: CHECK after `nft {}`: {err}", what.join(" "));
    assert!(
        check_mentions.iter().any(|m| err.contains(m)),
        "the CHECK error after `nft {}` names one of {check_mentions:?}: {err}",
        what.join(" ")
    );
    let new = fx.add();
    assert!(
        fx.works(&new),
        "ADD after `nft {}` repairs: the new attachment works",
        what.join(" ")
    );
    fx.check(&new).expect("CHECK of the new attachment");
    if what[0] == "flush" {
        // The old attachment's elements survived the flush: with the rules back it is whole.
        fx.check(&old)
            .unwrap_or_else(|e| panic!("CHECK of the old attachment after the repair: {e}"));
        assert!(fx.works(&old), "the old attachment works again");
    }
    fx.del(&old);
    fx.del(&new);
    fx.assert_clean();
}

#[test]
fn hf_world_ports_table_deleted() {
    nft_changed_by_hand(
        &["delete", "table", "inet", "cni_rs_ports"],
        &["cni_rs_ports", "port"],
    );
}

#[test]
fn hf_world_firewall_table_deleted() {
    nft_changed_by_hand(
        &["delete", "table", "inet", "cni_rs_fw"],
        &["cni_rs_fw", "firewall"],
    );
}

#[test]
fn hf_world_ports_table_flushed() {
    nft_changed_by_hand(
        &["flush", "table", "inet", "cni_rs_ports"],
        &["cni_rs_ports", "port"],
    );
}

#[test]
fn hf_world_masquerade_table_flushed() {
    nft_changed_by_hand(&["flush", "table", "inet", "cni_rs"], &["cni_rs", "masq"]);
}

#[test]
fn hf_world_masquerade_table_deleted() {
    nft_changed_by_hand(&["delete", "table", "inet", "cni_rs"], &["cni_rs", "masq"]);
}

#[test]
fn hf_world_firewall_table_flushed() {
    nft_changed_by_hand(
        &["flush", "table", "inet", "cni_rs_fw"],
        &["cni_rs_fw", "firewall"],
    );
}
