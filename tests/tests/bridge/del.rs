//! DEL is idempotent and cleans up whatever state the container netns is in.

use serde_json::{json, Value};

use crate::common::*;

fn conf(fx: &Fx) -> Value {
    fx.conf(
        "1.0.0",
        json!({"isGateway": true}),
        json!({"ranges": ranges(&["10.6.0.0/24", "fd06::/64"])}),
    )
}

fn assert_gone(fx: &Fx, a: &Att) {
    assert!(
        fx.host.link(&a.host_veth()).is_none(),
        "host veth {} left behind",
        a.host_veth()
    );
    assert!(fx.reservations().is_empty(), "{:?}", fx.reservations());
    assert_eq!(
        fx.host.link_names().len(),
        2,
        "only lo and the bridge: {:?}",
        fx.host.link_names()
    );
}

#[test]
fn del_twice_succeeds() {
    let fx = Fx::new();
    let a = fx.attach(&conf(&fx));
    fx.del(&a).expect_ok();
    assert_empty_netns(&a.ctr);
    assert_gone(&fx, &a);
    fx.del(&a).expect_ok();
    assert_gone(&fx, &a);
}

/// `ctr run --cni` sends DEL with an empty CNI_NETNS while the netns may still be alive: the
/// prevResult names the host veth, which must go (the reference leaves it).
#[test]
fn del_with_empty_netns_and_prev_result_removes_the_host_veth() {
    let fx = Fx::new();
    let a = fx.attach(&conf(&fx));
    let c = fx.conf_with_prev(&a);
    fx.call("DEL", "", &a.id, "eth0", &c, "").expect_ok();
    assert_gone(&fx, &a);
    assert_empty_netns(&a.ctr);
    fx.call("DEL", "", &a.id, "eth0", &c, "").expect_ok();
}

#[test]
fn del_with_a_deleted_netns() {
    let fx = Fx::new();
    let a = fx.attach(&conf(&fx));
    let path = a.ctr.path_str().to_string();
    cni_tests::sh(&["ip", "netns", "del", &a.ctr.name]);
    assert!(!std::path::Path::new(&path).exists());
    let c = fx.conf_with_prev(&a);
    fx.call("DEL", &path, &a.id, "eth0", &c, "").expect_ok();
    assert_gone(&fx, &a);
    // And without prevResult.
    fx.call("DEL", &path, &a.id, "eth0", &a.conf, "")
        .expect_ok();
}

#[test]
fn del_without_prev_result() {
    let fx = Fx::new();
    let a = fx.attach(&conf(&fx));
    fx.call("DEL", a.ctr.path_str(), &a.id, "eth0", &a.conf, "")
        .expect_ok();
    assert_empty_netns(&a.ctr);
    assert_gone(&fx, &a);
}

#[test]
fn del_of_an_attachment_never_added() {
    let fx = Fx::new();
    let ctr = cni_tests::Netns::new("tbc");
    let before = fx.state();
    fx.call("DEL", ctr.path_str(), "never", "eth0", &conf(&fx), "")
        .expect_ok();
    fx.call("DEL", "", "never", "eth0", &conf(&fx), "")
        .expect_ok();
    assert_eq!(fx.state(), before);
}
