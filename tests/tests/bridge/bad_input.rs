//! Bad input gets a clear CNI error with the right code and leaves nothing behind.

use serde_json::{json, Value};

use crate::common::*;

fn v4() -> Value {
    json!({"ranges": ranges(&["10.12.0.0/24"])})
}

/// Runs ADD in a fresh container netns and asserts the error and that nothing changed.
fn rejects(fx: &Fx, conf: &Value, args: &str, code: u64, needle: &str) {
    let before = fx.state();
    let ctr = cni_tests::Netns::new("tbc");
    let r = fx.call("ADD", ctr.path_str(), "bad", "eth0", conf, args);
    assert_err(&r, code, needle);
    assert_eq!(fx.state(), before, "{needle}: something was left behind");
    assert_empty_netns(&ctr);
}

#[test]
fn invalid_configs_are_rejected_before_touching_anything() {
    let fx = Fx::new();
    let conf = |keys: Value| fx.conf("1.0.0", keys, v4());
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"ipMasq": true, "ipMasqBackend": "pf"}),
            "",
            "unknown ipmasq backend \"pf\"",
        ),
        (
            json!({"vlan": -1}),
            "",
            "invalid VLAN ID -1 (must be between 0 and 4094)",
        ),
        (
            json!({"vlan": 5000}),
            "",
            "invalid VLAN ID 5000 (must be between 0 and 4094)",
        ),
        (
            json!({"hairpinMode": true, "promiscMode": true}),
            "",
            "cannot set hairpin mode and promiscuous mode at the same time",
        ),
        (
            json!({"runtimeConfig": {"mac": "zz:00:00:00:00:01"}}),
            "",
            "invalid MAC",
        ),
        (
            json!({"args": {"cni": {"mac": "02:00:00:00:01"}}}),
            "",
            "invalid MAC",
        ),
        (json!({}), "IgnoreUnknown=1;MAC=nope", "invalid MAC"),
        (json!({"vlanTrunk": [{"minID": 5}]}), "", "maxID is missing"),
    ];
    for (keys, args, needle) in cases {
        rejects(&fx, &conf(keys), args, 7, needle);
    }
}

#[test]
fn bridge_naming_a_non_bridge_link() {
    let fx = Fx::new();
    // No dummy driver on every kernel: a veth is just as much "not a bridge".
    let peer = format!("{}x", fx.br);
    fx.host
        .ip(&["link", "add", &fx.br, "type", "veth", "peer", "name", &peer]);
    rejects(
        &fx,
        &fx.conf("1.0.0", json!({}), v4()),
        "",
        7,
        "is not a bridge",
    );
    assert_eq!(
        fx.host.link(&fx.br).unwrap()["linkinfo"]["info_kind"],
        "veth"
    );
}

#[test]
fn cni_netns_not_a_netns() {
    let fx = Fx::new();
    let file = fx.data.path().join("not-a-netns");
    std::fs::write(&file, b"").unwrap();
    let conf = fx.conf("1.0.0", json!({"isGateway": true}), v4());
    for path in [file.to_str().unwrap(), "/run/netns/does-not-exist-tb"] {
        let before = fx.state();
        let r = fx.call("ADD", path, "badns", "eth0", &conf, "");
        assert_err(&r, 4, "failed to open netns");
        assert_eq!(fx.state(), before, "{path}");
    }
}

#[test]
fn second_add_of_the_same_ifname() {
    let fx = Fx::new();
    let conf = fx.conf("1.0.0", json!({"isGateway": true}), v4());
    let a = fx.attach(&conf);
    let before = fx.state();
    let r = fx.call("ADD", a.ctr.path_str(), "other", "eth0", &conf, "");
    assert_err(&r, 999, "already exists");
    assert_eq!(fx.state(), before, "no new veth or reservation");
    // The first attachment still works and still passes CHECK.
    assert!(ping_ok(&a.ctr, "10.12.0.1", 3));
    fx.check(&a).expect_ok();
}
