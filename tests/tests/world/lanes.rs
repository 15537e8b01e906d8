//! portmap lanes (`conditionsV4`) and hand-made flushes of `inet cni_rs_ports`: three networks
//! on one host, two with different conditions (each maps only traffic addressed to its own
//! bridge's gateway) and one without. After a flush, the next ADD of ANY of them restores every
//! lane with its conditions: the other networks' published ports deliver again, and a packet
//! that does not match a lane's conditions is still not mapped.

use serde_json::{json, Value};

use cni_tests::chain::{settle, SuiteHost};
use cni_tests::libcni::{Cni, NetworkConfigList};
use cni_tests::suite::tcp_delivers;
use cni_tests::unique;

use super::{attach, Att};

struct Net {
    list: NetworkConfigList,
    bridge: String,
    gw: &'static str,
}

struct Lanes {
    sh: SuiteHost,
    cni: Cni,
    /// A: `-d <A's gateway>` (iptables style); B: `ip daddr <B's gateway>`; C: no conditions
    /// (and masqAll).
    nets: [Net; 3],
    next_port: std::cell::Cell<u16>,
}

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

impl Lanes {
    fn new() -> Lanes {
        let sh = SuiteHost::new("hfl");
        let net = |i: u8, gw: &'static str, conds: Value| {
            let bridge = unique("hflbr");
            let list = sh.chain_with_portmap(
                &unique("hfln"),
                &bridge,
                &format!("10.8{i}.0.0/24"),
                &format!("fd8{i}::/64"),
                conds,
            );
            Net { list, bridge, gw }
        };
        let nets = [
            net(1, "10.81.0.1", json!({"conditionsV4": ["-d", "10.81.0.1"]})),
            net(
                2,
                "10.82.0.1",
                json!({"conditionsV4": ["ip daddr 10.82.0.1"]}),
            ),
            // masqAll: the container (no default route) answers a client on another bridge.
            net(3, "10.83.0.1", json!({"masqAll": true})),
        ];
        let cni = sh.cni();
        Lanes {
            sh,
            cni,
            nets,
            next_port: std::cell::Cell::new(23000),
        }
    }

    fn add(&self, net: usize) -> Att {
        attach(&self.cni, &self.nets[net].list, &self.next_port)
    }

    fn check(&self, net: usize, att: &Att) -> Result<(), String> {
        self.cni
            .check_network_list(&self.nets[net].list, &att.rt)
            .map_err(|e| e.msg)
    }

    /// The host reaches the attachment's published port on the gateway of network `via`.
    fn delivers(&self, att: &Att, via: usize) -> bool {
        tcp_delivers(&att.ns, 80, &self.sh.host, self.nets[via].gw, att.port)
    }

    /// Each published port delivers on its own gateway; A's and B's are not mapped on C's
    /// gateway (their conditions do not match), while C's (no conditions) is mapped on A's
    /// gateway too.
    fn assert_mapped_as_configured(&self, atts: &[Att; 3], when: &str) {
        for (net, att) in atts.iter().enumerate() {
            assert!(
                self.delivers(att, net),
                "{when}: network {net}'s port delivers"
            );
        }
        assert!(
            self.delivers(&atts[C], A),
            "{when}: C's port on A's gateway"
        );
        for net in [A, B] {
            assert!(
                !self.delivers(&atts[net], C),
                "{when}: network {net}'s port must not be mapped for traffic to C's gateway"
            );
        }
    }

    /// The lane chain of network `net` (the target of the `dnat` rule naming its gateway).
    fn lane_chain(&self, net: usize) -> String {
        let rs = self.sh.host.nft_ruleset();
        let gw = self.nets[net].gw;
        rs["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i.get("rule"))
            .filter(|r| r["table"] == "cni_rs_ports" && r["chain"] == "dnat")
            .filter(|r| r["comment"].as_str().is_some_and(|c| c.contains(gw)))
            .flat_map(|r| r["expr"].as_array().into_iter().flatten())
            .find_map(|e| e["jump"]["target"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("no lane jump for {gw} in {rs}"))
    }

    fn del(&self, net: usize, att: &Att) {
        self.cni
            .del_network_list(&self.nets[net].list, &att.rt)
            .unwrap_or_else(|e| panic!("DEL {}: {e}", att.rt.container_id));
    }

    fn assert_clean(&self) {
        let names: Vec<&str> = self.nets.iter().map(|n| n.list.name.as_str()).collect();
        let bridges: Vec<&str> = self.nets.iter().map(|n| n.bridge.as_str()).collect();
        let left = settle(10, || self.sh.leftovers(&names, &bridges));
        assert!(left.is_empty(), "left behind: {left:#?}");
    }
}

/// Flushes by hand (`nft ARGS`), then: CHECK of each network reports what it lost (or passes
/// when the flush did not concern it), ONE new attachment of network `repairer` restores
/// everything, and every mapping is back as configured.
fn flushed_then_one_add(
    lanes: &Lanes,
    atts: &[Att; 3],
    nft: &[&str],
    reports: [Option<&str>; 3],
    repairer: usize,
) {
    lanes.sh.host.sh(&[&["nft"][..], nft].concat());
    let how = format!("`nft {}`", nft.join(" "));
    for (net, att) in atts.iter().enumerate() {
        match (lanes.check(net, att), reports[net]) {
            (Err(e), Some(chain)) => {
                eprintln!("world: CHECK of network {net} after {how}: {e}");
                assert!(
                    e.contains(chain) && e.contains("the next ADD"),
                    "after {how}, CHECK of network {net} names chain {chain} and the repair: {e}"
                );
            }
            (Ok(()), None) => {}
            (r, want) => panic!("after {how}, CHECK of network {net}: {r:?}, expected {want:?}"),
        }
    }
    let unmapped = reports.iter().position(Option::is_some).unwrap_or(A);
    assert!(
        !lanes.delivers(&atts[unmapped], unmapped),
        "after {how}, network {unmapped}'s port is not mapped any more"
    );
    let fresh = lanes.add(repairer);
    assert!(
        lanes.delivers(&fresh, repairer),
        "the repairing attachment works"
    );
    for (net, att) in atts.iter().enumerate() {
        lanes
            .check(net, att)
            .unwrap_or_else(|e| panic!("CHECK of network {net} after the repair: {e}"));
    }
    lanes.assert_mapped_as_configured(atts, &format!("after {how} and one ADD"));
    lanes.del(repairer, &fresh);
}

fn three_attachments(lanes: &Lanes) -> [Att; 3] {
    let atts = [lanes.add(A), lanes.add(B), lanes.add(C)];
    assert_ne!(lanes.lane_chain(A), lanes.lane_chain(B), "one lane each");
    lanes.assert_mapped_as_configured(&atts, "before any flush");
    atts
}

fn del_all(lanes: &Lanes, atts: [Att; 3]) {
    for (net, att) in atts.iter().enumerate() {
        lanes.del(net, att);
    }
    lanes.assert_clean();
}

#[test]
fn hf_world_ports_table_flushed_lanes_restored_by_any_add() {
    let lanes = Lanes::new();
    let atts = three_attachments(&lanes);
    // The network without conditions repairs the two lanes it has never used.
    flushed_then_one_add(
        &lanes,
        &atts,
        &["flush", "table", "inet", "cni_rs_ports"],
        [Some("dnat"), Some("dnat"), Some("dnat")],
        C,
    );
    del_all(&lanes, atts);
}

#[test]
fn hf_world_ports_lane_chain_flushed() {
    let lanes = Lanes::new();
    let atts = three_attachments(&lanes);
    let chain = lanes.lane_chain(A);
    // Only A's attachments lose their mapping; another lane's ADD restores it.
    flushed_then_one_add(
        &lanes,
        &atts,
        &["flush", "chain", "inet", "cni_rs_ports", &chain],
        [Some(&chain), None, None],
        B,
    );
    del_all(&lanes, atts);
}
