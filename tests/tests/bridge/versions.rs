//! Every CNI version gets the result shape of its spec; L2 with 0.1.0/0.2.0 is a clean error.

use serde_json::{json, Value};

use crate::common::*;

/// "10.3.0.N/24" or "fd03::N/64": host-local's round robin moves N on every ADD.
fn in_subnet(v: &Value, prefix: &str, len: &str) -> bool {
    v.as_str()
        .is_some_and(|s| s.starts_with(prefix) && s.ends_with(len))
}

fn assert_shape(fx: &Fx, att: &Att, version: &str) {
    let r = &att.result;
    assert_eq!(r["cniVersion"], version, "{r}");
    match version {
        "0.1.0" | "0.2.0" => {
            assert!(in_subnet(&r["ip4"]["ip"], "10.3.0.", "/24"), "{r}");
            assert_eq!(r["ip4"]["gateway"], "10.3.0.1", "{r}");
            assert!(in_subnet(&r["ip6"]["ip"], "fd03::", "/64"), "{r}");
            assert_eq!(r["ip6"]["gateway"], "fd03::1", "{r}");
            assert!(
                r.get("interfaces").is_none() && r.get("ips").is_none(),
                "{r}"
            );
        }
        _ => {
            let ifs = r["interfaces"].as_array().expect("interfaces");
            assert_eq!(ifs.len(), 3, "{r}");
            assert_eq!(ifs[0]["name"], fx.br.as_str());
            assert_eq!(
                ifs[0]["mac"],
                fx.mac(&fx.br).as_str(),
                "bridge MAC is the live one"
            );
            assert!(ifs[1]["name"].as_str().unwrap().starts_with("veth"), "{r}");
            assert_eq!(
                ifs[1]["mac"],
                fx.mac(ifs[1]["name"].as_str().unwrap()).as_str()
            );
            assert_ne!(
                ifs[1]["mac"], ifs[0]["mac"],
                "bridge MAC is pinned, not a port's"
            );
            assert_eq!(ifs[2]["name"], "eth0");
            assert_eq!(ifs[2]["sandbox"], att.ctr.path_str());
            assert_eq!(ifs[2]["mac"].as_str().unwrap().len(), 17);
            let ips = r["ips"].as_array().expect("ips");
            assert_eq!(ips.len(), 2, "{r}");
            let has_version = !version.starts_with('1');
            for (ip, (prefix, len, gw, fam)) in ips.iter().zip([
                ("10.3.0.", "/24", "10.3.0.1", "4"),
                ("fd03::", "/64", "fd03::1", "6"),
            ]) {
                assert!(in_subnet(&ip["address"], prefix, len), "{r}");
                assert_eq!(ip["gateway"], gw, "{r}");
                assert_eq!(ip["interface"], 2, "{r}");
                if has_version {
                    assert_eq!(ip["version"], fam, "{r}");
                } else {
                    assert!(ip.get("version").is_none(), "{r}");
                }
            }
        }
    }
}

#[test]
fn every_version_gets_its_result_shape() {
    every_version(&Fx::new(), &ALL_VERSIONS);
}

/// Debian's reference host-local speaks up to 1.0.0: interop with it in every version it knows.
#[test]
fn every_version_with_the_reference_ipam() {
    every_version(&Fx::with_ipam(reference_ipam()), &ALL_VERSIONS[..6]);
}

fn every_version(fx: &Fx, versions: &[&str]) {
    for &v in versions {
        let conf = fx.conf(
            v,
            json!({"isGateway": true}),
            json!({"ranges": ranges(&["10.3.0.0/24", "fd03::/64"])}),
        );
        let att = fx.attach(&conf);
        assert_shape(fx, &att, v);
        assert_eq!(
            att.ctr.addrs("eth0").len(),
            2,
            "{v}: addresses in the container"
        );
        if !["0.1.0", "0.2.0", "0.3.0", "0.3.1"].contains(&v) {
            fx.check(&att).expect_ok();
        }
        fx.del(&att).expect_ok();
        assert_empty_netns(&att.ctr);
        assert!(fx.reservations().is_empty(), "{v}: reservation released");
        assert_eq!(
            fx.host.link_names().len(),
            2,
            "{v}: only lo and the bridge remain"
        );
    }
}

#[test]
fn l2_result_in_every_version_from_0_3_0() {
    let fx = Fx::new();
    for v in &ALL_VERSIONS[2..] {
        let conf = fx.conf(v, json!({}), Value::Null);
        let att = fx.attach(&conf);
        let r = &att.result;
        assert_eq!(
            r["interfaces"].as_array().map(Vec::len),
            Some(3),
            "{v}: {r}"
        );
        assert!(r["ips"].as_array().is_none_or(Vec::is_empty), "{v}: {r}");
        let eth0 = att.ctr.link("eth0").expect("eth0");
        assert_eq!(eth0["operstate"], "UP", "{v}: L2 container side is up");
        fx.del(&att).expect_ok();
        assert_empty_netns(&att.ctr);
    }
}

#[test]
fn l2_with_0_1_0_and_0_2_0_is_a_clean_error() {
    let fx = Fx::new();
    for v in ["0.1.0", "0.2.0"] {
        let before = fx.state();
        let ctr = cni_tests::Netns::new("tbc");
        let conf = fx.conf(v, json!({}), Value::Null);
        let r = fx.call("ADD", ctr.path_str(), "l2old", "eth0", &conf, "");
        assert_err(&r, 7, "no valid IP addresses");
        assert_eq!(
            fx.state(),
            before,
            "{v}: nothing created on the host (not even the bridge)"
        );
        assert_empty_netns(&ctr);
    }
}
