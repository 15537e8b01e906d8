//! STATUS and GC (spec 1.1.0), which the reference does not implement for the bridge.

use serde_json::{json, Value};

use crate::common::*;

fn conf(fx: &Fx) -> Value {
    fx.conf(
        "1.1.0",
        json!({"isGateway": true, "ipMasq": true}),
        json!({"ranges": ranges(&["10.16.0.0/24", "fd16::/64"])}),
    )
}

#[test]
fn status_delegates_to_ipam_and_succeeds_on_l2() {
    let fx = Fx::new();
    fx.call("STATUS", "", "", "", &conf(&fx), "").expect_ok();
    fx.call(
        "STATUS",
        "",
        "",
        "",
        &fx.conf("1.1.0", json!({}), Value::Null),
        "",
    )
    .expect_ok();
    // Delegation is real: an IPAM that is not in CNI_PATH fails STATUS.
    let mut bad = conf(&fx);
    bad["ipam"]["type"] = "no-such-ipam".into();
    let (code, msg) = fx.call("STATUS", "", "", "", &bad, "").err();
    assert_ne!(code, 0, "{msg}");
}

/// GC removes the masquerade state and the reservations of attachments not in the valid list,
/// and keeps those of valid ones.
#[test]
fn gc_removes_state_of_stale_attachments_only() {
    let fx = Fx::new();
    let c = conf(&fx);
    let keep = fx.attach(&c);
    let stale = fx.attach(&c);
    // The stale container vanished without DEL (runtime crash): netns and veth are gone.
    cni_tests::sh(&["ip", "netns", "del", &stale.ctr.name]);
    let elems = fx.nft_elements();
    assert!(stale.ips().iter().all(|ip| elems.contains(ip)), "{elems:?}");

    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": keep.id, "ifname": "eth0"}]);
    fx.call("GC", "", "", "", &gc, "").expect_ok();

    let elems = fx.nft_elements();
    for ip in stale.ips() {
        assert!(
            !elems.contains(&ip),
            "stale {ip} still masqueraded: {elems:?}"
        );
        assert!(
            !fx.reservations().contains(&ip),
            "stale {ip} still reserved"
        );
    }
    for ip in keep.ips() {
        assert!(
            elems.contains(&ip),
            "valid {ip} lost its masquerade: {elems:?}"
        );
        assert!(
            fx.reservations().contains(&ip),
            "valid {ip} lost its reservation"
        );
    }
    assert!(ping_ok(&keep.ctr, "10.16.0.1", 3));
}
