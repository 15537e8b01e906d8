//! Parallel ADDs racing to create the same bridge, gateway addresses and nftables state.

use std::collections::BTreeSet;

use serde_json::json;

use crate::common::*;

#[test]
fn parallel_adds_on_a_new_bridge() {
    let fx = Fx::new();
    let conf = fx.conf(
        "1.1.0",
        json!({"isDefaultGateway": true, "ipMasq": true}),
        json!({"ranges": ranges(&["10.17.0.0/24", "fd17::/64"])}),
    );
    let atts: Vec<Att> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8).map(|_| s.spawn(|| fx.attach(&conf))).collect();
        hs.into_iter().map(|h| h.join().expect("ADD")).collect()
    });
    let ips: BTreeSet<String> = atts.iter().flat_map(|a| a.ips()).collect();
    assert_eq!(ips.len(), 16, "duplicate IPs: {ips:?}");
    let addrs = fx.host.addrs(&fx.br);
    assert_eq!(addrs.len(), 2, "one gateway address per family: {addrs:?}");
    let elems = fx.nft_elements();
    assert!(ips.iter().all(|ip| elems.contains(ip)), "{elems:?}");
    for a in &atts {
        assert!(ping_ok(&a.ctr, "10.17.0.1", 3), "{}", a.id);
        assert!(ping_ok(&a.ctr, &atts[0].ip6(), 3), "{}", a.id);
    }
    std::thread::scope(|s| {
        for a in &atts {
            s.spawn(|| fx.del(a).expect_ok());
        }
    });
    assert!(fx.reservations().is_empty());
    assert_eq!(fx.host.link_names().len(), 2);
    let elems = fx.nft_elements();
    assert!(!ips.iter().any(|ip| elems.contains(ip)), "{elems:?}");
}
