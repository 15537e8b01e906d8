//! A network config (or a conflist) on a plugin's stdin, through the real skel
//! (`cni_core::skel::dispatch`: JSON syntax, key folding, name and version gates) into every
//! plugin's config decoder: bridge, firewall, portmap, tuning, host-local, and `prevResult`.
//!
//! Invariants: the skel's stdout is always JSON (a result of the asked version, or an error
//! object with a well-known code); every decoder error is a config error (code 6 or 7, never
//! a panic); what a decoder accepts satisfies its documented bounds; key folding is idempotent.
#![no_main]

use cni_core::{json, result, skel, CniError, CniResult, IpConfig, Request};
use cni_fuzz::check_cni_error;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

/// Codes a config decoder may return: the skel's decoding error and the invalid config.
const CONF: &[u32] = &[6, 7];

fn load_all(req: &Request) {
    match cni_bridge::config::load(req) {
        Ok(c) => {
            assert!(c.mtu <= 65535, "bridge mtu {}", c.mtu);
            assert!(c.vlan <= 4094, "bridge vlan {}", c.vlan);
            assert!(
                cni_core::env::validate_ifname(&c.bridge).is_ok(),
                "{}",
                c.bridge
            );
            if let Some(t) = &c.trunk {
                assert!(t.vids.windows(2).all(|w| w[0] < w[1]), "{:?}", t.vids);
                assert!(
                    t.vids.iter().all(|v| (1..=4094).contains(v)),
                    "{:?}",
                    t.vids
                );
            }
        }
        Err(e) => check_cni_error(&e, CONF, "bridge config"),
    }
    if let Err(e) = cni_firewall::config::load(req) {
        check_cni_error(&e, CONF, "firewall config");
    }
    match cni_portmap::config::load(req) {
        Ok(c) => {
            for p in &c.ports {
                assert!(p.host_port != 0 && p.container_port != 0, "{p:?}");
            }
        }
        Err(e) => check_cni_error(&e, CONF, "portmap config"),
    }
    match cni_tuning::config::load(req) {
        Ok(c) => assert!(c.mtu != Some(0)),
        Err(e) => check_cni_error(&e, CONF, "tuning config"),
    }
    if let Err(e) = cni_tuning::config::data_dir(req) {
        check_cni_error(&e, CONF, "tuning dataDir");
    }
    match host_local::config::load(req, host_local::config::DEFAULT_DATA_DIR) {
        Ok(c) => {
            assert!(!c.range_sets.is_empty());
            for (i, ip) in c.requested.iter().enumerate() {
                assert!(!c.requested[..i].contains(ip), "duplicate request {ip}");
            }
        }
        Err(e) => check_cni_error(&e, CONF, "host-local config"),
    }
    match req.prev_result() {
        Ok(Some(prev)) => {
            let ips = cni_portmap::config::container_ips(&prev, &req.env.ifname);
            assert!(ips.len() <= 2);
            // A prevResult we accept can be printed back in the config's version (unless a
            // 0.1/0.2 result has no address, which has its own message).
            if let Err(e) = result::print(&prev, &req.cni_version) {
                check_cni_error(&e, &[999], "prevResult print");
            }
        }
        Ok(None) => {}
        Err(e) => check_cni_error(&e, CONF, "prevResult"),
    }
}

/// A plugin whose ADD runs every decoder and returns a fixed result.
const ALL_DECODERS: skel::Verbs = skel::Verbs {
    add: |req| {
        load_all(req);
        Ok(CniResult {
            cni_version: req.cni_version.clone(),
            ips: vec![IpConfig {
                interface: None,
                address: "10.0.0.2/24".parse().expect("literal"),
                gateway: None,
            }],
            ..Default::default()
        })
    },
    del: skel::nothing,
    check: skel::nothing,
    gc: skel::nothing,
    status: skel::nothing,
};

fn env(k: &str) -> Option<String> {
    Some(
        match k {
            "CNI_COMMAND" => "ADD",
            "CNI_CONTAINERID" => "fuzz-c1",
            "CNI_NETNS" => "/nonexistent/fuzz-netns",
            "CNI_IFNAME" => "eth0",
            "CNI_PATH" => "/nonexistent/fuzz-bin",
            _ => return None,
        }
        .to_string(),
    )
}

/// One plugin call with `stdin`, as a runtime makes it.
fn call(stdin: &[u8]) {
    let out = skel::dispatch(&ALL_DECODERS, "fuzz", &env, &mut &stdin[..]);
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", out.stdout));
    if out.code == 0 {
        let r = result::parse_bytes(out.stdout.as_bytes(), "0.0.0").expect("our own result");
        assert_eq!(r.ips.len(), 1, "{}", out.stdout);
    } else {
        let code = v["code"].as_u64().expect("error code");
        let msg = v["msg"].as_str().expect("error msg").to_string();
        let e = CniError::with_code(code as u32, msg);
        check_cni_error(&e, &[1, 4, 6, 7, 8, 999], "skel");
        // The ADD result conversion is the only 999 the fuzz plugin can cause.
        if code == 999 {
            assert_eq!(
                e.msg, "cannot convert: no valid IP addresses",
                "{}",
                out.stdout
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    call(data);
    let Ok(raw) = json::parse(data) else { return };
    let folded = json::fold_keys(&raw);
    assert_eq!(
        json::fold_keys(&folded),
        folded,
        "key folding is not idempotent"
    );
    // A conflist: libcni hands each plugin its entry with the list's name and cniVersion.
    let Value::Object(top) = &raw else { return };
    let Some(Value::Array(plugins)) = top.get("plugins") else {
        return;
    };
    for p in plugins.iter().take(8) {
        let Value::Object(entry) = p else { continue };
        let mut m: Map<String, Value> = entry.clone();
        for k in ["name", "cniVersion"] {
            if let Some(v) = top.get(k) {
                m.insert(k.into(), v.clone());
            }
        }
        call(&serde_json::to_vec(&m).expect("a Value serializes"));
    }
});
