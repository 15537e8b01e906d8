//! Two containers on one bridge reach each other and the gateway: IPv4, IPv6, dual-stack.

use serde_json::json;

use crate::common::*;

fn two_containers_talk(subnets: &[&str], gateways: &[&str]) {
    let fx = Fx::new();
    let conf = fx.conf(
        "1.0.0",
        json!({"isGateway": true}),
        json!({"ranges": ranges(subnets)}),
    );
    let a = fx.attach(&conf);
    let b = fx.attach(&conf);
    assert_eq!(
        a.ips().len(),
        subnets.len(),
        "one address per subnet: {}",
        a.result
    );
    for gw in gateways {
        assert!(
            fx.host
                .addrs(&fx.br)
                .iter()
                .any(|x| x.starts_with(&format!("{gw}/"))),
            "gateway {gw} not on the bridge: {:?}",
            fx.host.addrs(&fx.br)
        );
    }
    for (from, to) in [(&a, &b), (&b, &a)] {
        for ip in to.ips() {
            assert!(ping_ok(&from.ctr, &ip, 3), "{} cannot ping {ip}", from.id);
        }
        for gw in gateways {
            assert!(
                ping_ok(&from.ctr, gw, 3),
                "{} cannot ping the gateway {gw}",
                from.id
            );
        }
    }
    fx.del(&a).expect_ok();
    fx.del(&b).expect_ok();
    assert_eq!(
        fx.host.link_names().len(),
        2,
        "only lo and the bridge remain"
    );
    assert!(fx.reservations().is_empty());
}

#[test]
fn ipv4_containers_ping_each_other_and_gateway() {
    two_containers_talk(&["10.1.0.0/24"], &["10.1.0.1"]);
}

#[test]
fn ipv6_containers_ping_each_other_and_gateway() {
    two_containers_talk(&["fd01::/64"], &["fd01::1"]);
}

#[test]
fn dual_stack_containers_ping_each_other_and_gateway() {
    two_containers_talk(&["10.1.0.0/24", "fd01::/64"], &["10.1.0.1", "fd01::1"]);
}

/// The reference host-local as IPAM still works with our bridge (mixed deployments).
#[test]
fn reference_ipam_interop() {
    let fx = Fx::with_ipam(reference_ipam());
    let conf = fx.conf(
        "1.0.0",
        json!({"isDefaultGateway": true}),
        json!({"ranges": ranges(&["10.2.0.0/24", "fd02::/64"])}),
    );
    let a = fx.attach(&conf);
    let b = fx.attach(&conf);
    assert!(ping_ok(&a.ctr, &b.ip4(), 3));
    assert!(ping_ok(&b.ctr, &a.ip6(), 3));
    assert_eq!(fx.reservations().len(), 4);
    fx.check(&a).expect_ok();
    fx.del(&a).expect_ok();
    fx.del(&b).expect_ok();
    assert!(fx.reservations().is_empty());
}
