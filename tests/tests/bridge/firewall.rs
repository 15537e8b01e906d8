//! Masquerade state and isolation between bridges (the plugin's firewall layer), observed in
//! the host netns's nftables / iptables.

use serde_json::{json, Value};

use crate::common::*;

fn masq_conf(fx: &Fx, backend: Option<&str>) -> Value {
    let mut keys = json!({"isGateway": true, "ipMasq": true});
    if let Some(b) = backend {
        keys["ipMasqBackend"] = b.into();
    }
    fx.conf(
        "1.0.0",
        keys,
        json!({"ranges": ranges(&["10.7.0.0/24", "fd07::/64"])}),
    )
}

fn assert_masq_present(fx: &Fx, a: &Att) {
    let elems = fx.nft_elements();
    for ip in a.ips() {
        assert!(
            elems.contains(&ip),
            "{ip} not among nftables set/map elements after ADD: {elems:?}\n{}",
            fx.host.sh(&["nft", "list", "ruleset"])
        );
    }
}

fn assert_masq_gone(fx: &Fx, a: &Att) {
    let elems = fx.nft_elements();
    for ip in a.ips() {
        assert!(
            !elems.contains(&ip),
            "{ip} still in nftables after DEL:\n{}",
            fx.host.sh(&["nft", "list", "ruleset"])
        );
    }
}

#[test]
fn masq_state_follows_add_and_del() {
    let fx = Fx::new();
    let a = fx.attach(&masq_conf(&fx, None));
    let b = fx.attach(&masq_conf(&fx, Some("nftables")));
    assert_masq_present(&fx, &a);
    assert_masq_present(&fx, &b);
    fx.del(&a).expect_ok();
    assert_masq_gone(&fx, &a);
    assert_masq_present(&fx, &b);
    fx.del(&b).expect_ok();
    assert_masq_gone(&fx, &b);
}

/// What `ctr run --cni` does; the reference leaks its masquerade rules here.
#[test]
fn masq_state_removed_by_del_with_empty_netns_and_prev_result() {
    let fx = Fx::new();
    let a = fx.attach(&masq_conf(&fx, None));
    assert_masq_present(&fx, &a);
    fx.call("DEL", "", &a.id, "eth0", &fx.conf_with_prev(&a), "")
        .expect_ok();
    assert_masq_gone(&fx, &a);
}

/// No netns and no prevResult: the state must be found by attachment identity alone.
#[test]
fn masq_state_removed_by_del_with_empty_netns_without_prev_result() {
    let fx = Fx::new();
    let a = fx.attach(&masq_conf(&fx, None));
    assert_masq_present(&fx, &a);
    fx.call("DEL", "", &a.id, "eth0", &a.conf, "").expect_ok();
    assert_masq_gone(&fx, &a);
}

fn nat_rules(fx: &Fx) -> String {
    fx.host.sh(&["iptables", "-w", "-t", "nat", "-S"])
        + &fx.host.sh(&["ip6tables", "-w", "-t", "nat", "-S"])
}

#[test]
fn masq_iptables_backend_follows_add_and_del() {
    let fx = Fx::new();
    let a = fx.attach(&masq_conf(&fx, Some("iptables")));
    let rules = nat_rules(&fx);
    for ip in a.ips() {
        assert!(rules.contains(&ip), "{ip} not in the nat table:\n{rules}");
    }
    fx.call("DEL", "", &a.id, "eth0", &a.conf, "").expect_ok();
    let rules = nat_rules(&fx);
    for ip in a.ips() {
        assert!(
            !rules.contains(&ip),
            "{ip} still in the nat table:\n{rules}"
        );
    }
    assert!(!rules.contains("CNI-"), "chain left behind:\n{rules}");
}

/// Two bridges in one host netns, a container on A, a container on B; `keys` added to both.
fn two_bridges(fx: &Fx, keys: Value) -> (Att, Att, Att) {
    let mut base = json!({"isDefaultGateway": true, "ipMasq": true});
    for (k, v) in keys.as_object().unwrap() {
        base[k] = v.clone();
    }
    let conf_a = fx.conf(
        "1.0.0",
        base.clone(),
        json!({"ranges": ranges(&["10.8.0.0/24", "fd08::/64"])}),
    );
    base["bridge"] = format!("{}b", fx.br).into();
    let mut conf_b = fx.conf(
        "1.0.0",
        base,
        json!({"ranges": ranges(&["10.9.0.0/24", "fd09::/64"])}),
    );
    conf_b["name"] = format!("{}b", fx.net).into();
    (fx.attach(&conf_a), fx.attach(&conf_a), fx.attach(&conf_b))
}

/// Containers on two bridges of ours cannot reach each other through the host, while each
/// still reaches its own peers and gateway.
#[test]
fn two_bridges_are_isolated() {
    let fx = Fx::new();
    let (a1, a2, b1) = two_bridges(&fx, json!({}));
    // Sanity: same-bridge traffic and the gateways work, so a failure below is isolation.
    assert!(ping_ok(&a1.ctr, &a2.ip4(), 3));
    assert!(ping_ok(&a1.ctr, &a2.ip6(), 3));
    assert!(ping_ok(&a1.ctr, "10.8.0.1", 3));
    assert!(ping_ok(&b1.ctr, "10.9.0.1", 3));
    for (from, to) in [(&a1, &b1), (&b1, &a1), (&b1, &a2)] {
        for ip in to.ips() {
            assert!(
                !from.ctr.ping(&ip),
                "{} on one bridge reached {ip} on the other bridge",
                from.id
            );
        }
    }
}

/// The counterpart, which also shows the test above fails when isolation is missing.
#[test]
fn two_bridges_talk_when_isolation_is_off() {
    let fx = Fx::new();
    let (a1, _a2, b1) = two_bridges(&fx, json!({"isolateBridges": false}));
    for (from, to) in [(&a1, &b1), (&b1, &a1)] {
        for ip in to.ips() {
            assert!(ping_ok(&from.ctr, &ip, 3), "{} cannot reach {ip}", from.id);
        }
    }
}
