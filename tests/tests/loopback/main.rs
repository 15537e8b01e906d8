//! Integration tests of the `loopback` plugin: the built binary exec'd like a runtime, in
//! throwaway network namespaces, compared with Debian's reference `/usr/lib/cni/loopback`.

use std::path::{Path, PathBuf};

use cni_tests::{bin, run, Call, Netns, Reply, REFERENCE_DIR};
use serde_json::{json, Value};

const ALL_VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

fn ours() -> PathBuf {
    bin("loopback")
}

fn reference() -> PathBuf {
    Path::new(REFERENCE_DIR).join("loopback")
}

/// A netns whose `lo` is down, as a fresh pod sandbox has it.
fn sandbox() -> Netns {
    let ns = Netns::new("lb");
    ns.ip(&["link", "set", "lo", "down"]);
    ns
}

fn lo_up(ns: &Netns) -> bool {
    let l = ns.link("lo").expect("lo exists");
    l["flags"].as_array().unwrap().iter().any(|f| f == "UP")
}

fn conf(version: &str) -> Value {
    json!({"cniVersion": version, "name": "lo-net", "type": "loopback"})
}

fn call(plugin: &Path, cmd: &str, netns: &str, conf: &Value) -> Reply {
    let mut c = Call::new(plugin, cmd);
    c.container_id = "lbctr";
    c.netns = netns;
    c.ifname = "eth0"; // ignored: loopback always works on lo
    c.cni_path = "/nonexistent";
    run(&c, &conf.to_string())
}

#[test]
fn add_brings_lo_up_with_each_version_shape() {
    for v in ALL_VERSIONS {
        let ns = sandbox();
        assert!(!lo_up(&ns));
        let r = call(&ours(), "ADD", ns.path_str(), &conf(v))
            .expect_ok()
            .json();
        assert!(lo_up(&ns), "{v}: lo not up");
        assert_eq!(r["cniVersion"], v);
        match v {
            "0.1.0" | "0.2.0" => {
                assert_eq!(r["ip4"]["ip"], "127.0.0.1/8", "{v}: {r}");
                assert_eq!(r["ip6"]["ip"], "::1/128", "{v}: {r}");
                assert!(r.get("interfaces").is_none(), "{v}: {r}");
                assert_eq!(r["dns"], json!({}));
            }
            _ => {
                assert_eq!(
                    r["interfaces"],
                    json!([{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": ns.path_str()}]),
                    "{v}"
                );
                let ips = r["ips"].as_array().unwrap();
                assert_eq!(ips.len(), 2, "{v}: {r}");
                assert_eq!(ips[0]["address"], "127.0.0.1/8");
                assert_eq!(ips[1]["address"], "::1/128");
                let old = v.starts_with("0.");
                for ip in ips {
                    assert_eq!(ip["interface"], 0, "{v}");
                    assert_eq!(ip.get("version").is_some(), old, "{v}: {r}");
                }
                assert_eq!(r.get("dns").is_some(), old, "{v}: {r}");
            }
        }
    }
}

#[test]
fn add_passes_prev_result_through() {
    let ns = sandbox();
    let prev = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:07", "sandbox": ns.path_str()}],
        "ips": [{"interface": 0, "address": "10.77.0.7/24", "gateway": "10.77.0.1"}],
        "routes": [{"dst": "0.0.0.0/0"}]
    });
    let mut c = conf("1.0.0");
    c["prevResult"] = prev.clone();
    let r = call(&ours(), "ADD", ns.path_str(), &c).expect_ok().json();
    assert_eq!(r, prev);
    assert!(lo_up(&ns));
}

#[test]
fn add_refuses_non_loopback_address_on_lo() {
    let ns = sandbox();
    ns.ip(&["addr", "add", "10.1.2.3/32", "dev", "lo"]);
    for p in [ours(), reference()] {
        let (code, msg) = call(&p, "ADD", ns.path_str(), &conf("1.0.0")).err();
        assert_eq!(
            msg,
            "loopback interface found with non-loopback address \"10.1.2.3\"",
            "{}",
            p.display()
        );
        assert_eq!(code, 999);
    }
}

#[test]
fn check_up_and_down() {
    let ns = sandbox();
    for v in ["0.4.0", "1.0.0", "1.1.0"] {
        let (_, msg) = call(&ours(), "CHECK", ns.path_str(), &conf(v)).err();
        assert_eq!(msg, "loopback interface is down", "{v}");
    }
    call(&ours(), "ADD", ns.path_str(), &conf("1.1.0")).expect_ok();
    for v in ["0.4.0", "1.0.0", "1.1.0"] {
        call(&ours(), "CHECK", ns.path_str(), &conf(v)).expect_ok();
    }
    ns.ip(&["link", "set", "lo", "down"]);
    let ours_err = call(&ours(), "CHECK", ns.path_str(), &conf("1.0.0")).err();
    let ref_err = call(&reference(), "CHECK", ns.path_str(), &conf("1.0.0")).err();
    assert_eq!(ours_err.1, ref_err.1);
}

#[test]
fn del_always_succeeds() {
    let ns = sandbox();
    call(&ours(), "ADD", ns.path_str(), &conf("1.0.0")).expect_ok();
    for v in ALL_VERSIONS {
        for netns in [
            ns.path_str(),
            "",
            "/run/netns/lb-does-not-exist",
            "/proc/1/ns/mnt",
        ] {
            let r = call(&ours(), "DEL", netns, &conf(v));
            assert!(r.ok(), "{v} DEL netns={netns:?}: {}", r.stdout);
            assert!(r.stdout.is_empty());
        }
    }
    // The netns's lo is left alone (the reference sets it down; nothing gains from that).
    assert!(lo_up(&ns));
}

#[test]
fn gc_and_status_succeed() {
    let c = conf("1.1.0");
    for cmd in ["GC", "STATUS"] {
        let r = run(
            &Call {
                cni_path: "/nonexistent",
                ..Call::new(&ours(), cmd)
            },
            &c.to_string(),
        );
        assert!(r.ok(), "{cmd}: {}", r.stdout);
    }
}

/// Where the reference 1.1.1 deviates from the spec's shapes, without changing the meaning: it
/// prints an empty `dns` object in 1.0.0 results (`omitempty` does not omit structs), and its
/// 0.3.x/0.4.0 results lack the `version` of each IP (which libcni infers when reading). Ours
/// carry `version` (checked in `add_brings_lo_up_with_each_version_shape`).
fn normalize(mut v: Value) -> Value {
    if v["cniVersion"] == "1.0.0" && v.get("dns") == Some(&json!({})) {
        v.as_object_mut().unwrap().remove("dns");
    }
    for ip in v["ips"].as_array_mut().into_iter().flatten() {
        ip.as_object_mut().unwrap().remove("version");
    }
    v
}

/// Same inputs, same results. The reference 1.1.1 prints the 1.0 shape for 0.1.0/0.2.0
/// configs (a bug: a 0.2.0 runtime cannot read it), so those are compared only with the spec's
/// shape, above.
#[test]
fn same_results_as_reference() {
    for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] {
        let ns = sandbox();
        let want = call(&reference(), "ADD", ns.path_str(), &conf(v))
            .expect_ok()
            .json();
        ns.ip(&["link", "set", "lo", "down"]);
        let got = call(&ours(), "ADD", ns.path_str(), &conf(v))
            .expect_ok()
            .json();
        assert_eq!(normalize(got), normalize(want), "{v}");

        let mut c = conf(v);
        c["prevResult"] = json!({
            "cniVersion": v,
            "interfaces": [{"name": "eth0", "sandbox": ns.path_str()}],
            "ips": [{"version": "4", "interface": 0, "address": "10.5.0.2/16"}],
            "dns": {}
        });
        let want = call(&reference(), "ADD", ns.path_str(), &c)
            .expect_ok()
            .json();
        let got = call(&ours(), "ADD", ns.path_str(), &c).expect_ok().json();
        assert_eq!(normalize(got), normalize(want), "{v} with prevResult");
    }
}

#[test]
fn missing_netns_on_add_is_an_error() {
    let (code, msg) = call(
        &ours(),
        "ADD",
        "/run/netns/lb-does-not-exist",
        &conf("1.0.0"),
    )
    .err();
    assert_eq!(code, 4);
    assert!(msg.contains("lb-does-not-exist"), "{msg}");
}
