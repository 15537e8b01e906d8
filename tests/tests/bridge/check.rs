//! CHECK passes on a good attachment and fails once the container was tampered with.

use serde_json::{json, Value};

use crate::common::*;

fn dual(fx: &Fx, version: &str) -> Value {
    fx.conf(
        version,
        json!({"isDefaultGateway": true}),
        json!({"ranges": ranges(&["10.5.0.0/24", "fd05::/64"])}),
    )
}

#[test]
fn check_passes_on_good_attachments() {
    let fx = Fx::new();
    for v in ["0.4.0", "1.0.0", "1.1.0"] {
        for subnets in [
            &["10.5.0.0/24"][..],
            &["fd05::/64"],
            &["10.5.0.0/24", "fd05::/64"],
        ] {
            let conf = fx.conf(
                v,
                json!({"isDefaultGateway": true}),
                json!({"ranges": ranges(subnets)}),
            );
            let a = fx.attach(&conf);
            let r = fx.check(&a);
            assert!(r.ok(), "CHECK {v} {subnets:?}: {} {}", r.stdout, r.stderr);
            fx.del(&a).expect_ok();
        }
    }
}

#[test]
fn check_fails_when_a_route_was_removed() {
    let fx = Fx::new();
    let a = fx.attach(&dual(&fx, "1.0.0"));
    fx.check(&a).expect_ok();
    a.ctr.ip(&["-4", "route", "del", "default"]);
    assert_err(&fx.check(&a), 999, "0.0.0.0/0");
    let b = fx.attach(&dual(&fx, "1.0.0"));
    b.ctr.ip(&["-6", "route", "del", "default"]);
    assert_err(&fx.check(&b), 999, "::/0");
}

#[test]
fn check_fails_when_an_address_was_removed() {
    let fx = Fx::new();
    let a = fx.attach(&dual(&fx, "1.0.0"));
    let addr = a.result["ips"][1]["address"].as_str().unwrap().to_string();
    a.ctr.ip(&["addr", "del", &addr, "dev", "eth0"]);
    assert_err(&fx.check(&a), 999, &addr);
}

#[test]
fn check_fails_when_the_interface_is_gone_or_prev_result_missing() {
    let fx = Fx::new();
    let a = fx.attach(&dual(&fx, "1.0.0"));
    let r = fx.call("CHECK", a.ctr.path_str(), &a.id, "eth0", &a.conf, "");
    assert_err(&r, 999, "prevResult");
    a.ctr.ip(&["link", "del", "eth0"]);
    let (code, _) = fx.check(&a).err();
    assert_eq!(code, 999);
}

/// The reference cannot CHECK an L2-only bridge ("no plugin name provided").
#[test]
fn check_works_on_an_l2_bridge() {
    let fx = Fx::new();
    let a = fx.attach(&fx.conf("1.0.0", json!({}), Value::Null));
    fx.check(&a).expect_ok();
    // ... and still detects a missing host port.
    fx.host.ip(&["link", "set", &a.host_veth(), "nomaster"]);
    let (code, msg) = fx.check(&a).err();
    assert_eq!(code, 999, "{msg}");
}

#[test]
fn check_matches_routes_of_its_own_interface() {
    // Two attachments of one network in the same netns both get a default route; removing
    // eth0's must fail eth0's CHECK even though eth1 still has one.
    let fx = Fx::new();
    let conf = fx.conf(
        "1.0.0",
        json!({"isDefaultGateway": true}),
        json!({"ranges": ranges(&["10.5.0.0/24"])}),
    );
    let a = fx.attach(&conf);
    let r = fx.call("ADD", a.ctr.path_str(), "second", "eth1", &conf, "");
    assert!(r.ok(), "second ADD: {} {}", r.stdout, r.stderr);
    let second = cni_tests::with_prev_result(&conf, &r.json());
    fx.check(&a).expect_ok();
    // The kernel appended eth1's default route next to eth0's; delete only eth0's.
    a.ctr.ip(&["-4", "route", "del", "default", "dev", "eth0"]);
    assert_err(&fx.check(&a), 999, "0.0.0.0/0");
    let r = fx.call("CHECK", a.ctr.path_str(), "second", "eth1", &second, "");
    assert!(r.ok(), "eth1 CHECK: {} {}", r.stdout, r.stderr);
    fx.call("DEL", a.ctr.path_str(), "second", "eth1", &second, "")
        .expect_ok();
    fx.del(&a).expect_ok();
}
