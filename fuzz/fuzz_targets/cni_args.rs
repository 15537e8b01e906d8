//! `CNI_ARGS` (`K=V;K=V`) and the rest of the CNI_* environment, plus the values plugins take
//! from it (host-local's `IP`, bridge/tuning's `MAC`) and spec version strings.
//!
//! Invariants: `args::parse` returns exactly the known keys, each with the value of its last
//! pair, and fails only with code 999 "ARGS: ..."; the environment fails only with code 3/4;
//! an accepted version string prints back to the same triple.
#![no_main]

use cni_core::{args, env, version};
use cni_fuzz::{check_cni_error, utf8};
use libfuzzer_sys::fuzz_target;

const KNOWN: &[&str] = &["IP", "MAC", "K8S_POD_NAME"];

fn check_args(raw: &str) {
    match args::parse(raw, KNOWN) {
        Ok(m) => {
            if raw.is_empty() {
                assert!(m.is_empty());
                return;
            }
            let pairs: Vec<(&str, &str)> = raw
                .split(';')
                .map(|p| p.split_once('=').expect("accepted pairs have '='"))
                .collect();
            for (k, v) in &m {
                assert!(KNOWN.contains(&k.as_str()), "unknown key {k} accepted");
                let last = pairs
                    .iter()
                    .rev()
                    .find(|(pk, _)| pk == k)
                    .expect("key from input");
                assert_eq!(last.1, v, "{k}: not the last value");
            }
            for (k, _) in &pairs {
                if KNOWN.contains(k) {
                    assert!(m.contains_key(*k), "{k} dropped");
                }
            }
            if let Some(ip) = m.get("IP") {
                match host_local::config::parse_requested(ip, "CNI_ARGS IP") {
                    // Canonical: a v4-mapped v6 address is reported as v4.
                    Ok(std::net::IpAddr::V6(v6)) => {
                        assert!(v6.to_ipv4_mapped().is_none(), "{v6} not canonical")
                    }
                    Ok(_) => {}
                    Err(e) => check_cni_error(&e, &[7], "CNI_ARGS IP"),
                }
            }
            if let Some(mac) = m.get("MAC") {
                match cni_bridge::config::parse_mac(mac) {
                    Ok(b) => {
                        let s = cni_bridge::config::format_mac(&b);
                        assert_eq!(cni_bridge::config::parse_mac(&s).ok(), Some(b), "{s}");
                    }
                    Err(e) => check_cni_error(&e, &[7], "CNI_ARGS MAC"),
                }
            }
        }
        Err(e) => {
            check_cni_error(&e, &[999], "CNI_ARGS");
            assert!(e.msg.starts_with("ARGS: "), "{}", e.msg);
        }
    }
}

fn check_env(fields: &[&str]) {
    let get = |k: &str| {
        let i = [
            "CNI_COMMAND",
            "CNI_CONTAINERID",
            "CNI_NETNS",
            "CNI_IFNAME",
            "CNI_ARGS",
            "CNI_PATH",
            "CNI_NETNS_OVERRIDE",
        ]
        .iter()
        .position(|n| *n == k)?;
        fields.get(i).map(|s| s.to_string())
    };
    match env::Env::load(&get) {
        Ok(e) => {
            if matches!(
                e.command,
                Some(env::Command::Add | env::Command::Del | env::Command::Check)
            ) {
                assert!(env::valid_id(&e.container_id), "{:?}", e.container_id);
                assert!(env::validate_ifname(&e.ifname).is_ok(), "{:?}", e.ifname);
            }
            if let Some(c) = e.command {
                assert_eq!(env::Command::parse(c.as_str()), Some(c));
            }
        }
        Err(e) => check_cni_error(&e, &[3, 4], "CNI env"),
    }
}

fn check_version(s: &str) {
    if let Some((a, b, c)) = version::parse(s) {
        let printed = format!("{a}.{b}.{c}");
        assert_eq!(version::parse(&printed), Some((a, b, c)));
        assert!(version::at_least(s, s), "{s} < itself");
        assert!(version::at_least(s, "0.0.0") && version::at_least(&printed, s));
        // Families follow the order of versions.
        let f = version::family(s);
        if version::at_least(s, "1.0.0") {
            assert_eq!(f, version::ResultFamily::V1);
        }
    } else {
        assert!(!version::at_least(s, "0.0.0"));
        assert!(version::check_supported(s).is_err());
    }
    if let Err(e) = version::check_supported(s) {
        check_cni_error(&e, &[1], "version");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(s) = utf8(data) else { return };
    check_args(s);
    check_version(s);
    let fields: Vec<&str> = s.split('\n').collect();
    check_env(&fields);
    if let Some(a) = fields.get(4) {
        check_args(a);
    }
});
