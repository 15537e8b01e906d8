//! A failed ADD leaves nothing: no veth, no reservation, no masquerade state.

use serde_json::json;

use crate::common::*;

#[test]
fn ipam_exhaustion_leaves_nothing() {
    let fx = Fx::new();
    // A /30 has a single allocatable address once .1 is the gateway.
    let conf = fx.conf(
        "1.0.0",
        json!({"isGateway": true, "ipMasq": true}),
        json!({"ranges": ranges(&["10.10.0.0/30"])}),
    );
    let first = fx.attach(&conf);
    let before = fx.state();
    let ctr = cni_tests::Netns::new("tbc");
    let r = fx.call("ADD", ctr.path_str(), "second", "eth0", &conf, "");
    let (_, msg) = r.err();
    assert!(msg.contains("no IP addresses available"), "{msg}");
    assert_eq!(fx.state(), before);
    assert_empty_netns(&ctr);
    // The first attachment is untouched.
    assert!(ping_ok(&first.ctr, "10.10.0.1", 3));
}

/// Fails after the veth and the IP exist (the bridge already has another IPv4 address and
/// forceAddress is off): the reference leaves the veth behind.
#[test]
fn failure_after_veth_creation_leaves_nothing() {
    let fx = Fx::new();
    fx.host.ip(&["link", "add", &fx.br, "type", "bridge"]);
    fx.host
        .ip(&["addr", "add", "192.168.77.1/24", "dev", &fx.br]);
    let conf = fx.conf(
        "1.0.0",
        json!({"isGateway": true, "ipMasq": true}),
        json!({"ranges": ranges(&["10.11.0.0/24"])}),
    );
    let before = fx.state();
    let ctr = cni_tests::Netns::new("tbc");
    let r = fx.call("ADD", ctr.path_str(), "clash", "eth0", &conf, "");
    assert_err(
        &r,
        999,
        "already has an IP address different from 10.11.0.1/24",
    );
    assert_eq!(
        fx.state(),
        before,
        "veth, reservation or nft element left behind"
    );
    assert_empty_netns(&ctr);
    assert_eq!(fx.host.addrs(&fx.br), vec!["192.168.77.1/24".to_string()]);

    // With forceAddress the old address is replaced.
    let mut forced = conf.clone();
    forced["forceAddress"] = true.into();
    let a = fx.attach(&forced);
    assert_eq!(fx.host.addrs(&fx.br), vec!["10.11.0.1/24".to_string()]);
    assert!(ping_ok(&a.ctr, "10.11.0.1", 3));
}
