//! 200 ADD/DEL cycles leave no link, address, reservation or nftables element behind.

use std::collections::BTreeSet;

use serde_json::json;

use crate::common::*;

#[test]
fn two_hundred_add_del_cycles_leave_nothing() {
    let fx = Fx::new();
    let conf = fx.conf(
        "1.1.0",
        json!({"isGateway": true, "ipMasq": true}),
        json!({"ranges": ranges(&["10.13.0.0/24", "fd13::/64"])}),
    );
    let ctr = cni_tests::Netns::new("tbc");
    // One attachment that stays, so shared state (bridge, subnet chains) exists throughout and
    // only per-attachment state is measured.
    let keep = fx.attach(&conf);
    let links = fx.host.link_names();
    let br_addrs = fx.host.addrs(&fx.br);
    let elems = fx.nft_elements();
    let ruleset_len = fx.host.sh(&["nft", "list", "ruleset"]).lines().count();
    let mut seen = BTreeSet::new();
    for i in 0..200 {
        let id = format!("leak{i}");
        let r = fx.call("ADD", ctr.path_str(), &id, "eth1", &conf, "");
        assert!(r.ok(), "ADD {i}: {} {}", r.stdout, r.stderr);
        let res = r.json();
        for ip in result_ips(&res) {
            seen.insert(ip);
        }
        let c = cni_tests::with_prev_result(&conf, &res);
        let r = fx.call("DEL", ctr.path_str(), &id, "eth1", &c, "");
        assert!(r.ok(), "DEL {i}: {} {}", r.stdout, r.stderr);
    }
    assert!(seen.len() > 2, "host-local round-robin hands out new IPs");
    assert_eq!(fx.host.link_names(), links);
    assert_eq!(fx.host.addrs(&fx.br), br_addrs);
    assert_empty_netns(&ctr);
    assert_eq!(
        fx.reservations().len(),
        2,
        "only the kept attachment's reservations"
    );
    assert_eq!(fx.nft_elements(), elems);
    assert_eq!(
        fx.host.sh(&["nft", "list", "ruleset"]).lines().count(),
        ruleset_len,
        "the ruleset grew"
    );
    fx.del(&keep).expect_ok();
    assert!(fx.reservations().is_empty());
}
