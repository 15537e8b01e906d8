//! The built `host-local` binary, run exactly like a runtime runs it: every verb and version,
//! the reference's test expectations, bad input, and the on-disk format.

mod common;

use std::fs;

use common::*;
use serde_json::Value;

#[test]
fn version_and_about() {
    let o = exec(OURS, &[("CNI_COMMAND", "VERSION")], "");
    let v = o.ok();
    assert_eq!(v["cniVersion"], "1.1.0");
    let got: Vec<&str> = v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(got, VERSIONS);
    let o = exec(OURS, &[], "");
    assert_eq!(o.code, 0);
    assert!(o.stdout.is_empty());
    assert!(o.stderr.contains("CNI host-local plugin"), "{}", o.stderr);
}

#[test]
fn every_version_add_check_del() {
    let t = TempDir::new("versions");
    let ns = Netns::new();
    for (i, v) in VERSIONS.iter().enumerate() {
        let name = format!("net{i}");
        let c = conf(v, &name, "10.10.0.0/24", t.str());
        let call = Call::new(ns.path(), "ctr1");
        let o = call.add(&c);
        // The first ADD on a new network prints nothing but the result (no "Error retrieving
        // last reserved ip" noise).
        assert!(o.stderr.is_empty(), "{o:?}");
        let r = o.ok();
        assert_eq!(r["cniVersion"], *v);
        match *v {
            "0.1.0" | "0.2.0" => {
                assert_eq!(r["ip4"]["ip"], "10.10.0.2/24", "{r}");
                assert_eq!(r["ip4"]["gateway"], "10.10.0.1");
                assert!(r.get("ips").is_none());
            }
            "0.3.0" | "0.3.1" | "0.4.0" => {
                assert_eq!(r["ips"][0]["version"], "4", "{r}");
                assert_eq!(r["ips"][0]["address"], "10.10.0.2/24");
                assert!(r.get("dns").is_some());
            }
            _ => {
                assert!(r["ips"][0].get("version").is_none(), "{r}");
                assert_eq!(r["ips"][0]["address"], "10.10.0.2/24");
                assert_eq!(r["ips"][0]["gateway"], "10.10.0.1");
                assert!(r["ips"][0].get("interface").is_none());
            }
        }
        let dir = t.join(&name);
        assert_eq!(fs::read(dir.join("10.10.0.2")).unwrap(), b"ctr1\r\neth0");
        let checkable = !matches!(*v, "0.1.0" | "0.2.0" | "0.3.0" | "0.3.1");
        if checkable {
            call.check(&c).ok();
        } else {
            assert_eq!(
                call.check(&c).err(),
                (1, "config version does not allow CHECK".into())
            );
        }
        call.del(&c).ok();
        assert!(ip_files(&dir).is_empty());
        call.del(&c).ok(); // idempotent
        if checkable {
            assert_eq!(
                call.check(&c).err(),
                (
                    999,
                    "host-local: Failed to find address added by container ctr1".into()
                )
            );
        }
        // GC and STATUS exist only from 1.1.0 on.
        let gc_stdin = c.replacen('{', r#"{"cni.dev/valid-attachments":[],"#, 1);
        let gc = network_verb(OURS, "GC", &gc_stdin);
        let status = network_verb(OURS, "STATUS", &c);
        if *v == "1.1.0" {
            gc.ok();
            status.ok();
        } else {
            assert_eq!(gc.err(), (1, "config version does not allow GC".into()));
            assert_eq!(
                status.err(),
                (1, "config version does not allow STATUS".into())
            );
        }
    }
}

fn dual_conf(version: &str, t: &TempDir) -> String {
    format!(
        r#"{{"cniVersion":"{version}","name":"mynet","type":"ipvlan","master":"foo0",
        "ipam":{{"type":"host-local","dataDir":"{}",
          "routes":[{{"dst":"0.0.0.0/0"}},{{"dst":"::/0"}},{{"dst":"192.168.0.0/16","gw":"1.1.1.1"}},{{"dst":"2001:db8:2::0/64","gw":"2001:db8:3::1"}}],
          "ranges":[[{{"subnet":"10.1.2.0/24"}},{{"subnet":"10.2.2.0/24"}}],[{{"subnet":"2001:db8:1::0/64"}}]]}}}}"#,
        t.str()
    )
}

#[test]
fn dual_stack_reference_expectations() {
    let t = TempDir::new("dual");
    let ns = Netns::new();
    for v in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let c = dual_conf(v, &t);
        let call = Call::new(ns.path(), "dummy");
        let r = call.add(&c).ok();
        let ips = r["ips"].as_array().unwrap();
        assert_eq!(ips.len(), 2, "{r}");
        assert_eq!(ips[0]["address"], "10.1.2.2/24");
        assert_eq!(ips[0]["gateway"], "10.1.2.1");
        assert_eq!(ips[1]["address"], "2001:db8:1::2/64");
        assert_eq!(ips[1]["gateway"], "2001:db8:1::1");
        if v.starts_with("0.") {
            assert!(r.to_string().contains("\"version\":"));
        }
        let routes: Vec<String> = r["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| format!("{} {}", x["dst"], x["gw"]))
            .collect();
        assert_eq!(
            routes,
            [
                "\"0.0.0.0/0\" null",
                "\"::/0\" null",
                "\"192.168.0.0/16\" \"1.1.1.1\"",
                "\"2001:db8:2::/64\" \"2001:db8:3::1\""
            ]
        );
        let dir = t.join("mynet");
        assert_eq!(fs::read(dir.join("10.1.2.2")).unwrap(), b"dummy\r\neth0");
        assert_eq!(
            fs::read(dir.join("2001:db8:1::2")).unwrap(),
            b"dummy\r\neth0"
        );
        assert_eq!(
            fs::read(dir.join("last_reserved_ip.0")).unwrap(),
            b"10.1.2.2"
        );
        assert_eq!(
            fs::read(dir.join("last_reserved_ip.1")).unwrap(),
            b"2001:db8:1::2"
        );
        call.del(&c).ok();
        assert!(ip_files(&dir).is_empty());
        // Start the next version from scratch (round-robin would move on).
        fs::remove_dir_all(&dir).unwrap();
    }
    // 0.1/0.2 carry one address per family: one v4 and one v6 set is fine...
    let call = Call::new(ns.path(), "dummy");
    let r = call.add(&dual_conf("0.2.0", &t)).ok();
    assert_eq!(r["ip4"]["ip"], "10.1.2.2/24");
    assert_eq!(r["ip6"]["ip"], "2001:db8:1::2/64");
    assert_eq!(r["ip6"]["routes"][0]["dst"], "::/0");
    // ...two v4 sets are not: ADD and DEL both refuse.
    let c = format!(
        r#"{{"cniVersion":"0.2.0","name":"n02","ipam":{{"dataDir":"{}",
        "ranges":[[{{"subnet":"10.1.2.0/24"}}],[{{"subnet":"10.1.3.0/24"}}]]}}}}"#,
        t.str()
    );
    let want = (
        7,
        "CNI version 0.2.0 does not support more than 1 address per family".to_string(),
    );
    assert_eq!(call.add(&c).err(), want);
    assert_eq!(call.del(&c).err(), want);
}

#[test]
fn duplicate_add_and_ifnames_and_unknown_del() {
    let t = TempDir::new("dup");
    let ns = Netns::new();
    let c = conf("1.0.0", "mynet", "10.1.2.0/24", t.str());
    let a = Call::new(ns.path(), "dummy");
    assert_eq!(first_ip(&a.add(&c).ok()), "10.1.2.2");
    let e = a.add(&c).err();
    assert_eq!(
        e,
        (
            999,
            "failed to allocate for range 0: 10.1.2.2 has been allocated to dummy, duplicate allocation is not allowed".into()
        )
    );
    let b = Call::new(ns.path(), "other");
    assert_eq!(first_ip(&b.add(&c).ok()), "10.1.2.3");
    assert_eq!(a.add(&c).err().0, 999);
    // Same container, another ifname on another network: DEL of one keeps the other.
    let c2 = conf("1.0.0", "mynet2", "10.5.0.0/24", t.str());
    let a2 = Call {
        ifname: "net1",
        ..a.clone()
    };
    a2.add(&c2).ok();
    a.del(&c).ok();
    assert_eq!(ip_files(&t.join("mynet")), ["10.1.2.3"]);
    assert_eq!(
        fs::read(t.join("mynet2/10.5.0.2")).unwrap(),
        b"dummy\r\nnet1"
    );
    a2.check(&c2).ok();
    // DEL of an unknown attachment succeeds and changes nothing.
    Call::new(ns.path(), "nobody").del(&c).ok();
    assert_eq!(ip_files(&t.join("mynet")), ["10.1.2.3"]);
}

#[test]
fn legacy_and_foreign_files() {
    let t = TempDir::new("legacy");
    let ns = Netns::new();
    let c = conf("1.0.0", "mynet", "10.1.2.0/24", t.str());
    let dir = t.join("mynet");
    // First call creates the directory and index; then "Go" writes behind our back.
    let a = Call::new(ns.path(), "first");
    a.add(&c).ok();
    fs::write(dir.join("10.1.2.3"), "legacyid").unwrap();
    fs::write(dir.join("10.1.2.4"), "goctr\r\neth0").unwrap();
    let leg = Call::new(ns.path(), "legacyid");
    leg.check(&c).ok();
    // ADD for the legacy id is a duplicate (the reference's GetByID matches id-only files).
    assert!(leg.add(&c).err().1.contains("duplicate allocation"));
    let go = Call::new(ns.path(), "goctr");
    go.check(&c).ok();
    // Our next allocation skips both foreign files.
    let n = Call::new(ns.path(), "next");
    assert_eq!(first_ip(&n.add(&c).ok()), "10.1.2.5");
    leg.del(&c).ok();
    go.del(&c).ok();
    assert_eq!(ip_files(&dir), ["10.1.2.2", "10.1.2.5"]);
    // A file "Go" deleted is noticed too.
    fs::remove_file(dir.join("10.1.2.2")).unwrap();
    assert!(a.check(&c).err().1.contains("Failed to find address"));
    // Only our own index file, spare-inode pool and boot marker sit beside the network directory.
    let mut names: Vec<String> = fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [".mynet.rsboot", ".mynet.rsindex", ".mynet.rspool", "mynet"]
    );
}

#[test]
fn requested_ips() {
    let t = TempDir::new("req");
    let ns = Netns::new();
    let multi = |v: &str, extra: &str| {
        format!(
            r#"{{"cniVersion":"{v}","name":"req","ipam":{{"dataDir":"{}",
            "ranges":[[{{"subnet":"10.1.2.0/24"}}],[{{"subnet":"10.1.3.0/24"}}],[{{"subnet":"2001:db8:1::/64"}}]]}}{extra}}}"#,
            t.str()
        )
    };
    let addrs = |r: &Value| -> Vec<String> {
        r["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["address"].as_str().unwrap().to_string())
            .collect()
    };
    let call = Call::new(ns.path(), "r1");
    let r = call
        .add(&multi(
            "1.0.0",
            r#","args":{"cni":{"ips":["10.1.2.88","10.1.3.77","2001:db8:1::999"]}}"#,
        ))
        .ok();
    assert_eq!(
        addrs(&r),
        ["10.1.2.88/24", "10.1.3.77/24", "2001:db8:1::999/64"]
    );
    call.del(&multi("1.0.0", "")).ok();
    // runtimeConfig.ips (prefix ignored) and CNI_ARGS IP; CNI_ARGS comes first.
    let withargs = Call {
        args: "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.1.2.50/24",
        ..call.clone()
    };
    let r = withargs
        .add(&multi(
            "1.0.0",
            r#","runtimeConfig":{"ips":["10.1.3.60/24"]}"#,
        ))
        .ok();
    // The dynamic set continues after the address requested last time.
    assert_eq!(
        addrs(&r),
        ["10.1.2.50/24", "10.1.3.60/24", "2001:db8:1::99a/64"]
    );
    withargs.del(&multi("1.0.0", "")).ok();
    // Taken, gateway, two in one set, outside every range, unknown CNI_ARGS, 0.2.0.
    let c = conf("1.0.0", "req2", "192.168.1.0/29", t.str());
    let reqc = |ip: &str| {
        c.replacen(
            '{',
            &format!(r#"{{"args":{{"cni":{{"ips":["{ip}"]}}}},"#),
            1,
        )
    };
    Call::new(ns.path(), "a").add(&reqc("192.168.1.5")).ok();
    assert_eq!(
        Call::new(ns.path(), "b").add(&reqc("192.168.1.5")).err(),
        (999, "failed to allocate for range 0: requested IP address 192.168.1.5 is not available in range set 192.168.1.1-192.168.1.6".into())
    );
    assert_eq!(
        Call::new(ns.path(), "b").add(&reqc("192.168.1.1")).err(),
        (
            999,
            "failed to allocate for range 0: requested ip 192.168.1.1 is subnet's gateway".into()
        )
    );
    assert_eq!(
        Call::new(ns.path(), "b").add(&reqc("10.9.9.9")).err(),
        (999, "failed to allocate all requested IPs: 10.9.9.9".into())
    );
    let two = c.replacen(
        '{',
        r#"{"args":{"cni":{"ips":["192.168.1.2","192.168.1.3"]}},"#,
        1,
    );
    assert!(Call::new(ns.path(), "b")
        .add(&two)
        .err()
        .1
        .starts_with("failed to allocate all requested IPs: 192.168.1."));
    let bad = Call {
        args: "K8S_POD_NAME=p",
        ..Call::new(ns.path(), "b")
    };
    assert_eq!(
        bad.add(&c).err(),
        (999, "ARGS: unknown args [\"K8S_POD_NAME=p\"]".into())
    );
    // Nothing was left behind by the failures (a: .5 only).
    assert_eq!(ip_files(&t.join("req2")), ["192.168.1.5"]);
}

#[test]
fn resolv_conf_and_missing_resolv_conf() {
    let t = TempDir::new("dns");
    let ns = Netns::new();
    fs::write(
        t.join("resolv.conf"),
        "nameserver 192.0.2.0\nsearch a.example b.example\ndomain example.com\noptions ndots:2\n",
    )
    .unwrap();
    let c = format!(
        r#"{{"cniVersion":"1.0.0","name":"dns","ipam":{{"dataDir":"{0}","subnet":"10.1.2.0/24","resolvConf":"{0}/resolv.conf"}}}}"#,
        t.str()
    );
    let r = Call::new(ns.path(), "d").add(&c).ok();
    assert_eq!(r["dns"]["nameservers"][0], "192.0.2.0");
    assert_eq!(r["dns"]["search"][1], "b.example");
    assert_eq!(r["dns"]["domain"], "example.com");
    assert_eq!(r["dns"]["options"][0], "ndots:2");
    let missing = c.replace("resolv.conf\"", "nope.conf\"");
    let (code, msg) = Call::new(ns.path(), "e").add(&missing).err();
    assert_eq!(code, 5);
    assert!(msg.contains("nope.conf"), "{msg}");
    // Nothing reserved for the failed ADD.
    assert_eq!(ip_files(&t.join("dns")), ["10.1.2.2"]);
}

#[test]
fn bad_input() {
    let t = TempDir::new("bad");
    let ns = Netns::new();
    let call = Call::new(ns.path(), "c");
    let d = t.str();
    let cases: Vec<(String, u64, &str)> = vec![
        ("{".into(), 6, "error unmarshall network config"),
        ("".into(), 6, "unexpected end of JSON input"),
        (r#"{"cniVersion":"1.0.0","ipam":{}}"#.into(), 7, "missing network name"),
        (r#"{"cniVersion":"1.0.0","name":"n"}"#.into(), 7, "IPAM config missing 'ipam' key"),
        (format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"dataDir":"{d}"}}}}"#), 7, "no IP ranges specified"),
        (format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"dataDir":"{d}","subnet":"10.1.2.0/33"}}}}"#), 7, "ipam.subnet: invalid CIDR address"),
        (format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"dataDir":"{d}","subnet":"10.1.2.0"}}}}"#), 7, "ipam.subnet: invalid CIDR address"),
        (format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"dataDir":"{d}","subnet":["10.1.2.0/24"]}}}}"#), 7, "ipam.subnet must be a string"),
        (format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"dataDir":"{d}","ranges":"10.1.2.0/24"}}}}"#), 7, "ipam.ranges must be a list of range sets"),
        (format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"dataDir":"{d}","subnet":"10.1.2.5/24"}}}}"#), 7, "invalid range set 0: Network has host bits set. For a subnet mask of length 24 the network address is 10.1.2.0"),
        (format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"dataDir":"{d}","subnet":"10.1.2.0/31"}}}}"#), 7, "invalid range set 0: Network 10.1.2.0/31 too small to allocate from"),
        (format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"dataDir":"{d}","ranges":[[{{"subnet":"10.1.0.0/22"}},{{"subnet":"10.1.2.0/24"}}]]}}}}"#), 7, "invalid range set 0: subnets 10.1.0.1-10.1.3.254 and 10.1.2.1-10.1.2.254 overlap"),
        (format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"dataDir":"{d}","ranges":[[{{"subnet":"10.1.0.0/24"}}],[{{"subnet":"10.1.0.0/25"}}]]}}}}"#), 7, "range set 0 overlaps with 1"),
        (format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"dataDir":"{d}","ranges":[[{{"subnet":"10.1.0.0/24"}},{{"subnet":"fd00::/64"}}]]}}}}"#), 7, "invalid range set 0: mixed address families"),
        (format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"dataDir":"{d}","subnet":"10.1.2.0/24","rangeStart":"10.1.3.1"}}}}"#), 7, "invalid range set 0: RangeStart 10.1.3.1 not in network 10.1.2.0/24"),
        (format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"dataDir":"{d}","subnet":"10.1.2.0/24","gateway":"10.1.2.x"}}}}"#), 7, "ipam.gateway: invalid IP address"),
        (format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"dataDir":{d:?},"subnet":"10.1.2.0/24","routes":[{{"dst":"0.0.0.0/0","mtu":"x"}}]}}}}"#), 7, "ipam.routes[0]"),
        (format!(r#"{{"cniVersion":"9.9.9","name":"n","ipam":{{"dataDir":"{d}","subnet":"10.1.2.0/24"}}}}"#), 1, "incompatible CNI versions"),
    ];
    for (stdin, code, msg) in &cases {
        for verb in ["ADD", "DEL"] {
            let (c, m) = call.run(verb, stdin).err();
            assert_eq!(c, *code, "{verb} {stdin}: {m}");
            assert!(m.contains(msg), "{verb} {stdin}: {m:?} lacks {msg:?}");
        }
    }
    // Nothing was created for any of them.
    assert!(fs::read_dir(t.path()).unwrap().next().is_none());

    // Bad environment.
    let c = conf("1.0.0", "n", "10.1.2.0/24", d);
    let env_cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("CNI_COMMAND", "ADD"), ("CNI_PATH", "/x")],
            "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME] missing",
        ),
        (
            vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "-x"),
                ("CNI_NETNS", ns.path()),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/x"),
            ],
            "invalid characters in containerID",
        ),
        (
            vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "x"),
                ("CNI_NETNS", ns.path()),
                ("CNI_IFNAME", "a/b"),
                ("CNI_PATH", "/x"),
            ],
            "interface name contains / or : or whitespace characters",
        ),
        (
            vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "x"),
                ("CNI_NETNS", ns.path()),
                ("CNI_IFNAME", "0123456789abcdef"),
                ("CNI_PATH", "/x"),
            ],
            "interface name is too long",
        ),
        (
            vec![("CNI_COMMAND", "BOGUS"), ("CNI_PATH", "/x")],
            "unknown CNI_COMMAND: BOGUS",
        ),
    ];
    for (env, msg) in env_cases {
        let (code, m) = exec(OURS, &env, &c).err();
        assert_eq!(code, 4, "{m}");
        assert!(m.contains(msg), "{m:?} lacks {msg:?}");
    }
    // The plugin's own netns is refused before anything is reserved.
    let own = Call::new("/proc/self/ns/net", "x");
    assert_eq!(own.add(&c).err().0, 8);
    assert!(ip_files(&t.join("n")).is_empty());
}

#[test]
fn unwritable_data_dir() {
    let t = TempDir::new("unwritable");
    let ns = Netns::new();
    fs::write(t.join("file"), "x").unwrap();
    let under_file = format!("{}/file/sub", t.str());
    let c = conf("1.0.0", "n", "10.1.2.0/24", &under_file);
    for verb in ["ADD", "DEL", "CHECK"] {
        let (code, msg) = Call::new(ns.path(), "x").run(verb, &c).err();
        assert_eq!(code, 5, "{verb}: {msg}");
        assert!(msg.contains(&under_file), "{verb}: {msg}");
    }
    // A read-only directory: the reservation cannot be written.
    fs::create_dir(t.join("ro")).unwrap();
    fs::create_dir(t.join("ro/n")).unwrap();
    fs::write(t.join("ro/n/lock"), "").unwrap();
    let c = conf("1.0.0", "n", "10.1.2.0/24", &format!("{}/ro", t.str()));
    {
        let _ro = ReadOnly::new(&t.join("ro"));
        let (code, msg) = Call::new(ns.path(), "x").add(&c).err();
        assert_eq!(code, 5, "{msg}");
        assert!(msg.contains(&format!("{}/ro/n/10.1.2.2", t.str())), "{msg}");
        // Read-only DEL/CHECK still answer (by scanning: no index can be written).
        Call::new(ns.path(), "x").del(&c).ok();
        assert!(Call::new(ns.path(), "x")
            .check(&c)
            .err()
            .1
            .contains("Failed to find"));
    }
}

#[test]
fn exhausted_range_and_status() {
    let t = TempDir::new("full");
    let ns = Netns::new();
    let c = conf("1.1.0", "n", "10.98.0.0/30", t.str());
    network_verb(OURS, "STATUS", &c).ok();
    Call::new(ns.path(), "a").add(&c).ok();
    assert_eq!(
        Call::new(ns.path(), "b").add(&c).err(),
        (
            999,
            "failed to allocate for range 0: no IP addresses available in range set: 10.98.0.1-10.98.0.2".into()
        )
    );
    assert_eq!(
        network_verb(OURS, "STATUS", &c).err(),
        (
            50,
            "no IP addresses available in range set: 10.98.0.1-10.98.0.2".into()
        )
    );
    Call::new(ns.path(), "a").del(&c).ok();
    network_verb(OURS, "STATUS", &c).ok();
    // Dual-stack: one full set is enough to make ADD impossible.
    let d = format!(
        r#"{{"cniVersion":"1.1.0","name":"d","ipam":{{"dataDir":"{}",
        "ranges":[[{{"subnet":"10.99.0.0/30"}}],[{{"subnet":"fd00::/64"}}]]}}}}"#,
        t.str()
    );
    Call::new(ns.path(), "a").add(&d).ok();
    let (code, msg) = network_verb(OURS, "STATUS", &d).err();
    assert_eq!(code, 50);
    assert!(
        msg.contains("10.99.0.1-10.99.0.2") && !msg.contains("fd00"),
        "{msg}"
    );
    // A failed dual-stack ADD leaves nothing behind.
    assert!(Call::new(ns.path(), "b")
        .add(&d)
        .err()
        .1
        .contains("range 0"));
    assert_eq!(ip_files(&t.join("d")), ["10.99.0.2", "fd00::2"]);
}

#[test]
fn gc_semantics() {
    let t = TempDir::new("gc");
    let ns = Netns::new();
    let c = conf("1.1.0", "g", "10.20.0.0/24", t.str());
    let dir = t.join("g");
    for (id, ifname) in [
        ("keep", "eth0"),
        ("keep", "net1"),
        ("drop", "eth0"),
        ("other", "eth0"),
    ] {
        Call {
            ifname,
            ..Call::new(ns.path(), id)
        }
        .add(&c)
        .ok();
    }
    fs::write(dir.join("10.20.0.100"), "keep").unwrap(); // legacy of a valid container
    fs::write(dir.join("10.20.0.101"), "gone").unwrap(); // legacy of an invalid one
    let gc = |list: &str, key: &str| {
        let stdin = c.replacen('{', &format!(r#"{{"{key}":{list},"#), 1);
        network_verb(OURS, "GC", &stdin)
    };
    gc(
        r#"[{"containerID":"keep","ifname":"eth0"},{"containerID":"other","ifname":"eth0"}]"#,
        "cni.dev/valid-attachments",
    )
    .ok();
    assert_eq!(ip_files(&dir), ["10.20.0.100", "10.20.0.2", "10.20.0.5"]);
    assert!(dir.join("lock").exists() && dir.join("last_reserved_ip.0").exists());
    // The index followed: DEL of a survivor works, re-ADD of a collected one is no duplicate.
    Call::new(ns.path(), "other").del(&c).ok();
    Call::new(ns.path(), "drop").add(&c).ok();
    // The older key name, an empty list: release everything.
    gc("[]", "cni.dev/attachments").ok();
    assert!(ip_files(&dir).is_empty());
    assert_eq!(
        fs::read(dir.join("last_reserved_ip.0")).unwrap(),
        b"10.20.0.6"
    );
    // No list at all is how libcni says "nothing is valid any more": release everything.
    Call::new(ns.path(), "late").add(&c).ok();
    assert_eq!(ip_files(&dir).len(), 1);
    network_verb(OURS, "GC", &c).ok();
    assert!(ip_files(&dir).is_empty());
}

#[test]
fn case_insensitive_keys_and_last_duplicate() {
    let t = TempDir::new("case");
    let ns = Netns::new();
    let c = format!(
        r#"{{"CNIVERSION":"1.0.0","Name":"c","IPAM":{{"TYPE":"host-local","SUBNET":"10.7.0.0/24","subnet":"10.8.0.0/24","RangeStart":"10.8.0.9","DataDir":"{}"}},
        "RuntimeConfig":{{"IPS":["10.8.0.20"]}}}}"#,
        t.str()
    );
    let r = Call::new(ns.path(), "x").add(&c).ok();
    assert_eq!(r["ips"][0]["address"], "10.8.0.20/24");
    let r = Call::new(ns.path(), "y")
        .add(&c.replace(r#""RuntimeConfig":{"IPS":["10.8.0.20"]}"#, r#""z":1"#))
        .ok();
    assert_eq!(r["ips"][0]["address"], "10.8.0.21/24");
}

#[test]
fn released_inodes_are_recycled_safely() {
    use std::os::unix::fs::MetadataExt;
    let t = TempDir::new("pool");
    let ns = Netns::new();
    let c = conf("1.0.0", "p", "10.30.0.0/24", t.str());
    let dir = t.join("p");
    let ino = |ip: &str| fs::metadata(dir.join(ip)).unwrap().ino();
    let spare = t.join(".p.rspool/0");
    Call::new(ns.path(), "a").add(&c).ok();
    let first = ino("10.30.0.2");
    Call::new(ns.path(), "a").del(&c).ok();
    // The released file waits in the pool, then becomes the next reservation, rewritten.
    assert!(spare.exists());
    assert_eq!(
        first_ip(&Call::new(ns.path(), "b").add(&c).ok()),
        "10.30.0.3"
    );
    assert!(!spare.exists());
    assert_eq!(ino("10.30.0.3"), first);
    assert_eq!(fs::read(dir.join("10.30.0.3")).unwrap(), b"b\r\neth0");
    let md = fs::metadata(dir.join("10.30.0.3")).unwrap();
    assert_eq!(md.mode() & 0o777, 0o600);
    assert_eq!(md.nlink(), 1);
    // After a foreign write the recorded spares are not trusted: a fresh file, and the stale
    // pool name is left alone until a later DEL replaces it.
    Call::new(ns.path(), "b").del(&c).ok();
    assert!(spare.exists());
    fs::write(dir.join("10.30.0.50"), "go\r\neth0").unwrap();
    assert_eq!(
        first_ip(&Call::new(ns.path(), "c").add(&c).ok()),
        "10.30.0.4"
    );
    assert_ne!(ino("10.30.0.4"), first);
    assert_eq!(fs::read(&spare).unwrap(), b"b\r\neth0");
    Call::new(ns.path(), "c").del(&c).ok();
    assert_eq!(fs::read(&spare).unwrap(), b"c\r\neth0");
    assert_eq!(ip_files(&dir), ["10.30.0.50"]);
}
