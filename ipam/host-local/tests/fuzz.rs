//! Property tests: random and mutated configs and environments fed to the config parser and to
//! the whole plugin through `cni_core::skel::dispatch`. Nothing may panic, every failure must be
//! a well-formed CNI error, and every success a well-formed result.

mod common;

use std::collections::HashMap;

use cni_core::skel::dispatch;
use host_local::HostLocal;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{json, Map, Value};

/// Keys the parser knows, in random case, plus junk.
fn key() -> impl Strategy<Value = String> {
    let known = prop_oneof![
        Just("ipam"),
        Just("subnet"),
        Just("rangeStart"),
        Just("rangeEnd"),
        Just("gateway"),
        Just("ranges"),
        Just("routes"),
        Just("dst"),
        Just("gw"),
        Just("runtimeConfig"),
        Just("ipRanges"),
        Just("ips"),
        Just("args"),
        Just("cni"),
        Just("type"),
        Just("cniVersion"),
        Just("mtu"),
    ];
    prop_oneof![
        4 => (known, any::<u64>()).prop_map(|(k, bits)| {
            k.chars()
                .enumerate()
                .map(|(i, c)| {
                    if bits >> (i % 64) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect()
        }),
        1 => "[a-zA-Z]{1,8}",
    ]
}

/// Strings that are nearly addresses and CIDRs, or garbage.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        // Valid subnets, so that random configs often get as far as allocating.
        3 => (0u8..=255, 0u8..=255).prop_map(|(a, b)| format!("10.{a}.{b}.0/24")),
        1 => (0u8..=255).prop_map(|a| format!("fd{a:x}::/120")),
        1 => (0u8..=255, 0u8..=255, 0u8..=255, 0u8..=255, 0u8..=40)
            .prop_map(|(a, b, c, d, l)| format!("{a}.{b}.{c}.{d}/{l}")),
        1 => (0u8..=255, 0u8..=255, 0u8..=255, 0u8..=255).prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        1 => (any::<u16>(), any::<u16>(), 0u8..=130).prop_map(|(a, b, l)| format!("fd{a:x}:{b:x}::/{l}")),
        1 => (any::<u16>(), any::<u16>()).prop_map(|(a, b)| format!("fd00::{a:x}:{b:x}")),
        1 => Just("::ffff:10.0.0.0/104".to_string()),
        1 => Just("0.0.0.0/0".to_string()),
        1 => Just("::/0".to_string()),
        1 => Just(String::new()),
        1 => "[0-9a-f.:/]{0,20}",
        1 => ".{0,12}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        text().prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn range() -> impl Strategy<Value = Value> {
    let maybe = || prop::option::weighted(0.2, text());
    (text(), maybe(), maybe(), maybe()).prop_map(|(s, a, b, g)| {
        let mut m = Map::new();
        m.insert("subnet".into(), json!(s));
        if let Some(a) = a {
            m.insert("rangeStart".into(), json!(a));
        }
        if let Some(b) = b {
            m.insert("rangeEnd".into(), json!(b));
        }
        if let Some(g) = g {
            m.insert("gateway".into(), json!(g));
        }
        Value::Object(m)
    })
}

fn sets() -> impl Strategy<Value = Vec<Vec<Value>>> {
    prop::collection::vec(prop::collection::vec(range(), 0..3), 0..3)
}

/// A plausible config (often valid) with random parts swapped in.
fn config() -> impl Strategy<Value = Value> {
    let version = prop::sample::select(vec![
        "0.1.0", "0.2.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "", "2.0",
    ]);
    (
        version,
        prop::option::weighted(0.3, text()),
        sets(),
        prop::option::of(sets()),
        prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec(text(), 1..3)],
        prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec((key(), value()), 1..3)],
        prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec((key(), value()), 1..3)],
    )
        .prop_map(|(v, legacy, ranges, ip_ranges, ips, junk_top, junk_ipam)| {
            let mut ipam = Map::new();
            ipam.insert("type".into(), json!("host-local"));
            if let Some(l) = legacy {
                ipam.insert("subnet".into(), json!(l));
            }
            ipam.insert("ranges".into(), json!(ranges));
            ipam.insert("routes".into(), json!([{"dst": "0.0.0.0/0"}]));
            for (k, val) in junk_ipam {
                ipam.insert(k, val);
            }
            let mut top = Map::new();
            top.insert("cniVersion".into(), json!(v));
            top.insert("name".into(), json!("fuzz"));
            top.insert("ipam".into(), Value::Object(ipam));
            if let Some(r) = ip_ranges {
                top.insert("runtimeConfig".into(), json!({"ipRanges": r, "ips": ips}));
            } else {
                top.insert("args".into(), json!({"cni": {"ips": ips}}));
            }
            for (k, val) in junk_top {
                top.insert(k, val);
            }
            top.insert(
                "cni.dev/valid-attachments".into(),
                json!([{"containerID": "c1", "ifname": "eth0"}]),
            );
            Value::Object(top)
        })
}

/// Forces every path in the config into `dir`: the fuzzer must never touch the real system.
fn confine(mut v: Value, dir: &str) -> Value {
    if let Some(top) = v.as_object_mut() {
        for (k, ipam) in top.iter_mut() {
            if !k.eq_ignore_ascii_case("ipam") {
                continue;
            }
            if let Some(m) = ipam.as_object_mut() {
                m.retain(|k, _| {
                    !k.eq_ignore_ascii_case("datadir") && !k.eq_ignore_ascii_case("resolvconf")
                });
                m.insert("dataDir".into(), json!(dir));
            }
        }
    }
    v
}

fn assert_well_formed(o: &cni_core::skel::Outcome, what: &str) {
    match o.code {
        0 => {
            if !o.stdout.is_empty() {
                let v: Value = serde_json::from_str(&o.stdout)
                    .unwrap_or_else(|e| panic!("{what}: bad result JSON {e}: {}", o.stdout));
                assert!(v.get("cniVersion").is_some(), "{what}: {v}");
            }
        }
        1 => {
            let v: Value = serde_json::from_str(&o.stdout)
                .unwrap_or_else(|e| panic!("{what}: bad error JSON {e}: {}", o.stdout));
            assert!(v["code"].as_u64().is_some(), "{what}: {v}");
            assert!(!v["msg"].as_str().unwrap_or("").is_empty(), "{what}: {v}");
        }
        c => panic!("{what}: exit code {c}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_on_random_json(v in value(), args in "[A-Za-z=;0-9./:]{0,24}") {
        let folded = cni_core::json::fold_keys(&v);
        let _ = host_local::config::load_value(&folded, "n", "1.0.0", &args, "/nonexistent");
    }

    #[test]
    fn parser_never_panics_on_plausible_configs(v in config(), args in prop::option::of(text())) {
        let folded = cni_core::json::fold_keys(&v);
        let args = args.map(|a| format!("IgnoreUnknown=1;IP={a}")).unwrap_or_default();
        match host_local::config::load_value(&folded, "n", "1.0.0", &args, "/nonexistent") {
            Ok(c) => prop_assert!(!c.range_sets.is_empty()),
            Err(e) => prop_assert!(e.code == 7 || e.code == 999, "{e:?}"),
        }
    }

    #[test]
    fn parser_never_panics_on_mutated_bytes(
        v in config(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = serde_json::to_vec(&v).unwrap();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if let Ok(raw) = serde_json::from_slice::<Value>(&bytes) {
            let folded = cni_core::json::fold_keys(&raw);
            let _ = host_local::config::load_value(&folded, "n", "0.2.0", "", "/nonexistent");
        }
    }
}

fn dispatch_case(
    dir: &common::TempDir,
    v: Value,
    cmd: &str,
    id: &str,
    ifname: &str,
    netns: &str,
    args: &str,
) {
    let stdin = serde_json::to_string(&confine(v, dir.str())).unwrap();
    let env: HashMap<String, String> = [
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", id),
        ("CNI_IFNAME", ifname),
        ("CNI_NETNS", netns),
        ("CNI_ARGS", args),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let plugin = HostLocal {
        default_data_dir: dir.str().to_string(),
    };
    let getenv = move |k: &str| env.get(k).cloned();
    let o = dispatch(&plugin, "host-local", &getenv, &mut stdin.as_bytes());
    assert_well_formed(&o, &format!("{cmd} {stdin}"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn dispatch_never_panics(
        v in prop_oneof![4 => config(), 1 => value()],
        env in prop_oneof![
            // Mostly a well-formed environment, so that calls get past the skel.
            3 => (
                prop::sample::select(vec!["ADD", "ADD", "ADD", "DEL", "CHECK", "GC", "STATUS"]),
                prop::sample::select(vec!["c1", "c2"]),
                Just("eth0"),
                Just("/nonexistent/ns"),
                Just(""),
            ),
            1 => (
                prop::sample::select(vec!["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION", "BOGUS", ""]),
                prop::sample::select(vec!["c1", "", "-bad", "a.b_c-1"]),
                prop::sample::select(vec!["eth0", "", "a/b", "0123456789abcdef"]),
                prop::sample::select(vec!["/nonexistent/ns", "", "/proc/self/ns/net"]),
                prop::sample::select(vec!["", "IP=10.0.0.5", "IgnoreUnknown=1;X=y", "X=y", "IP=zz", "a=b=c"]),
            ),
        ],
    ) {
        let (cmd, id, ifname, netns, args) = env;
        let dir = common::TempDir::new("fuzz");
        dispatch_case(&dir, v, cmd, id, ifname, netns, args);
    }
}

#[test]
fn dispatch_sequences_on_one_directory_stay_consistent() {
    // Many calls on one data directory: the index must never make a call fail oddly.
    let dir = common::TempDir::new("fuzz-seq");
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strat = (
        prop::sample::select(vec!["ADD", "DEL", "CHECK", "GC", "STATUS"]),
        prop::sample::select(vec!["c1", "c2", "c3"]),
        prop::sample::select(vec!["eth0", "net1"]),
    );
    for _ in 0..300 {
        let (cmd, id, ifname) = strat.new_tree(&mut runner).unwrap().current();
        let conf = json!({"cniVersion":"1.1.0","name":"seq","ipam":{"ranges":[[{"subnet":"10.3.0.0/29"}],[{"subnet":"fd03::/125"}]]},
            "cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]});
        dispatch_case(&dir, conf, cmd, id, ifname, "/nonexistent/ns", "");
    }
    // Whatever happened, every reservation file belongs to someone and the index agrees.
    let net = dir.path().join("seq");
    for f in common::ip_files(&net) {
        let c = std::fs::read_to_string(net.join(&f)).unwrap();
        assert!(c.starts_with('c') && c.contains("\r\n"), "{f}: {c:?}");
    }
}
