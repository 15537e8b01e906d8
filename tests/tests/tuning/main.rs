//! Integration tests of the `tuning` plugin: the built binary exec'd like a runtime on a veth
//! in a throwaway container netns, with a private dataDir; compared with Debian's reference
//! `/usr/lib/cni/tuning` (spec <= 1.0.0, no txQLen, no allow-list) on the same inputs.

use std::path::{Path, PathBuf};

use cni_tests::{bin, run, unique, Call, Netns, Reply, TempDir, REFERENCE_DIR};
use serde_json::{json, Value};

fn ours() -> PathBuf {
    bin("tuning")
}

fn reference() -> PathBuf {
    Path::new(REFERENCE_DIR).join("tuning")
}

/// A container netns with `eth0` (a veth whose peer stays in the same netns) and a dataDir.
struct Ctr {
    ns: Netns,
    data: TempDir,
    id: String,
}

impl Ctr {
    fn new() -> Ctr {
        let ns = Netns::new("tu");
        ns.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
        ]);
        Ctr {
            ns,
            data: TempDir::new("tudata"),
            id: unique("ctr"),
        }
    }

    fn conf(&self, version: &str, keys: Value) -> Value {
        let mut c = json!({
            "cniVersion": version,
            "name": "tnet",
            "type": "tuning",
            "dataDir": self.data.str(),
            "prevResult": {
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:aa", "sandbox": self.ns.path_str()}],
                "ips": [{"interface": 0, "address": "10.9.0.2/24", "gateway": "10.9.0.1"}]
            }
        });
        for (k, v) in keys.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    fn call_with(&self, plugin: &Path, cmd: &str, conf: &Value, args: &str) -> Reply {
        let mut c = Call::new(plugin, cmd);
        c.container_id = &self.id;
        c.netns = self.ns.path_str();
        c.ifname = "eth0";
        c.cni_path = "/nonexistent";
        c.args = args;
        run(&c, &conf.to_string())
    }

    fn call(&self, cmd: &str, conf: &Value) -> Reply {
        self.call_with(&ours(), cmd, conf, "")
    }

    fn link(&self) -> Value {
        self.ns.link("eth0").expect("eth0 exists")
    }

    fn state(&self) -> (String, u64, bool, bool, u64) {
        let l = self.link();
        let flag = |f: &str| l["flags"].as_array().unwrap().iter().any(|x| x == f);
        (
            l["address"].as_str().unwrap().to_string(),
            l["mtu"].as_u64().unwrap(),
            flag("PROMISC"),
            flag("ALLMULTI"),
            l["txqlen"].as_u64().unwrap(),
        )
    }

    fn sysctl(&self, path: &str) -> String {
        self.ns
            .sh(&["cat", &format!("/proc/sys/{path}")])
            .trim()
            .to_string()
    }

    fn saved(&self) -> PathBuf {
        self.data.path().join(format!("{}_eth0.json", self.id))
    }
}

fn all_keys() -> Value {
    json!({
        "mac": "02:11:22:33:44:55",
        "mtu": 1400,
        "promisc": true,
        "allmulti": true,
        "txQLen": 4242,
        "sysctl": {
            "net.ipv4.conf.IFNAME.arp_notify": "1",
            "net/ipv4/conf/peer0/arp_ignore": "2",
            "net.core.somaxconn": "1234"
        }
    })
}

#[test]
fn each_key_applied_checked_and_restored() {
    let c = Ctr::new();
    let before = c.state();
    let conf = c.conf("1.1.0", all_keys());
    let r = c.call("ADD", &conf).expect_ok().json();
    assert_eq!(r["cniVersion"], "1.1.0");
    assert_eq!(r["interfaces"][0]["mac"], "02:11:22:33:44:55");
    assert_eq!(r["ips"], conf["prevResult"]["ips"]);
    assert_eq!(
        c.state(),
        ("02:11:22:33:44:55".into(), 1400, true, true, 4242)
    );
    assert_eq!(c.sysctl("net/ipv4/conf/eth0/arp_notify"), "1");
    assert_eq!(c.sysctl("net/ipv4/conf/peer0/arp_ignore"), "2");
    assert_eq!(c.sysctl("net/core/somaxconn"), "1234");
    let saved: Value = serde_json::from_slice(&std::fs::read(c.saved()).unwrap()).unwrap();
    assert_eq!(
        saved,
        json!({"mac": before.0, "promisc": false, "mtu": before.1, "allmulti": false,
               "txQLen": before.4, "network": "tnet"})
    );
    c.call("CHECK", &conf).expect_ok();

    c.call("DEL", &conf).expect_ok();
    assert_eq!(c.state(), before);
    assert!(!c.saved().exists());
    // Idempotent.
    c.call("DEL", &conf).expect_ok();
    assert_eq!(c.state(), before);
}

#[test]
fn every_version_prints_prev_result_in_its_shape() {
    for v in [
        "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
    ] {
        let c = Ctr::new();
        let conf = c.conf(v, json!({"mtu": 1300}));
        let r = c.call("ADD", &conf).expect_ok().json();
        assert_eq!(r["cniVersion"], v);
        if v.starts_with("0.1") || v.starts_with("0.2") {
            assert_eq!(r["ip4"]["ip"], "10.9.0.2/24", "{v}: {r}");
            assert_eq!(r["ip4"]["gateway"], "10.9.0.1", "{v}: {r}");
        } else {
            assert_eq!(r["ips"][0]["address"], "10.9.0.2/24", "{v}: {r}");
            assert_eq!(r["interfaces"][0]["name"], "eth0", "{v}: {r}");
        }
        assert_eq!(c.link()["mtu"], 1300);
        c.call("DEL", &conf).expect_ok();
        assert_eq!(c.link()["mtu"], 1500);
    }
}

#[test]
fn sysctls_outside_the_netns_are_refused() {
    let c = Ctr::new();
    // Exists on the host, but is global: a container netns has no such file.
    assert!(Path::new("/proc/sys/net/core/netdev_max_backlog").exists());
    for key in [
        "kernel.pid_max",
        "vm/swappiness",
        "net/../kernel/pid_max",
        "net.ipv4..ip_forward",
        "net.core.netdev_max_backlog",
        "net.ipv4.conf.nosuchif0.arp_notify",
        "net.ipv4.conf",
    ] {
        let conf = c.conf("1.0.0", json!({"mtu": 1400, "sysctl": {key: "1"}}));
        let (code, msg) = c.call("ADD", &conf).err();
        assert_eq!(code, 7, "{key}: {msg}");
        assert!(msg.contains(&format!("{key:?}")), "{key}: {msg}");
        assert_eq!(c.link()["mtu"], 1500, "{key}: nothing may change");
        assert!(!c.saved().exists(), "{key}");
    }
}

/// The allow-list lives at a fixed path; the test writes it inside a private mount namespace
/// (an overlay on /etc seen only by the plugin process), so the host's /etc is never touched.
#[test]
fn allowlist_restricts_sysctls() {
    let c = Ctr::new();
    let tmp = TempDir::new("tuallow");
    let upper = tmp.path().join("upper");
    std::fs::create_dir_all(upper.join("cni/tuning")).unwrap();
    std::fs::create_dir_all(tmp.path().join("work")).unwrap();
    std::fs::write(
        upper.join("cni/tuning/allowlist.conf"),
        "^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]*$\n\n^net\\.core\\.somaxconn$\n",
    )
    .unwrap();
    let wrapper = tmp.path().join("tuning");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec unshare --mount --propagation private sh -c \
             'mount -t overlay overlay -o lowerdir=/etc,upperdir={u},workdir={w} /etc && exec {p}'\n",
            u = upper.display(),
            w = tmp.path().join("work").display(),
            p = ours().display()
        ),
    )
    .unwrap();
    sh_chmod(&wrapper);
    let allowed = c.conf(
        "1.0.0",
        json!({"sysctl": {"net.ipv4.conf.IFNAME.arp_notify": "1", "net.core.somaxconn": "999"}}),
    );
    c.call_with(&wrapper, "ADD", &allowed, "").expect_ok();
    assert_eq!(c.sysctl("net/core/somaxconn"), "999");
    // A new netns inherits the host's ip_forward (devconf_inherit_init_net=0): start from 0.
    c.ns.sh(&["sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"]);
    let refused = c.conf("1.0.0", json!({"sysctl": {"net.ipv4.ip_forward": "1"}}));
    let (code, msg) = c.call_with(&wrapper, "ADD", &refused, "").err();
    assert_eq!(code, 7);
    assert_eq!(
        msg,
        "Sysctl net.ipv4.ip_forward is not allowed. Only the following sysctls are allowed: \
         [^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]*$ ^net\\.core\\.somaxconn$]"
    );
    assert_eq!(c.sysctl("net/ipv4/ip_forward"), "0");
    // args.cni.sysctl is held to the same list.
    let mut via_args = c.conf("1.0.0", json!({}));
    via_args["args"] = json!({"cni": {"sysctl": {"net.ipv4.ip_forward": "1"}}});
    assert_eq!(c.call_with(&wrapper, "ADD", &via_args, "").err().0, 7);
    // Without the file (outside the private mount namespace) the same sysctl is allowed.
    assert!(!Path::new("/etc/cni/tuning/allowlist.conf").exists());
    c.call("ADD", &refused).expect_ok();
    assert_eq!(c.sysctl("net/ipv4/ip_forward"), "1");
}

fn sh_chmod(p: &Path) {
    cni_tests::sh(&["chmod", "0755", p.to_str().unwrap()]);
}

#[test]
fn mac_sources_and_precedence() {
    let c = Ctr::new();
    let before = c.state();
    // runtimeConfig.mac (capability "mac") over the config's mac and CNI_ARGS MAC.
    let mut conf = c.conf("1.0.0", json!({"mac": "02:00:00:00:01:01"}));
    conf["runtimeConfig"] = json!({"mac": "02:00:00:00:01:02"});
    let r = c
        .call_with(
            &ours(),
            "ADD",
            &conf,
            "IgnoreUnknown=1;MAC=02:00:00:00:01:03",
        )
        .expect_ok()
        .json();
    assert_eq!(r["interfaces"][0]["mac"], "02:00:00:00:01:02");
    assert_eq!(c.state().0, "02:00:00:00:01:02");
    c.call_with(
        &ours(),
        "CHECK",
        &conf,
        "IgnoreUnknown=1;MAC=02:00:00:00:01:03",
    )
    .expect_ok();
    c.call("DEL", &conf).expect_ok();
    assert_eq!(c.state(), before);
    // CNI_ARGS MAC over the config's; args.cni.mac over everything.
    let conf = c.conf("1.0.0", json!({"mac": "02:00:00:00:01:01"}));
    c.call_with(&ours(), "ADD", &conf, "MAC=02:00:00:00:01:03")
        .expect_ok();
    assert_eq!(c.state().0, "02:00:00:00:01:03");
    c.call("DEL", &conf).expect_ok();
    let mut conf = c.conf("1.0.0", json!({"mac": "02:00:00:00:01:01", "mtu": 1400}));
    conf["runtimeConfig"] = json!({"mac": "02:00:00:00:01:02"});
    conf["args"] = json!({"cni": {"mac": "02:00:00:00:01:04", "mtu": 1450, "promisc": true}});
    c.call("ADD", &conf).expect_ok();
    let s = c.state();
    assert_eq!((s.0.as_str(), s.1, s.2), ("02:00:00:00:01:04", 1450, true));
    c.call("DEL", &conf).expect_ok();
    assert_eq!(c.state(), before);
}

#[test]
fn failing_key_rolls_everything_back() {
    let c = Ctr::new();
    let before = c.state();
    let arp = c.sysctl("net/ipv4/conf/eth0/arp_notify");
    // Any saved file from an earlier attachment must come back unchanged too.
    std::fs::write(c.saved(), b"{\n \"mtu\": 1500\n}").unwrap();
    // veth's max MTU is 65535: the kernel refuses 70000 after sysctl, MAC and promisc are set.
    let conf = c.conf(
        "1.0.0",
        json!({"mac": "02:11:22:33:44:66", "promisc": true, "mtu": 70000,
               "sysctl": {"net.ipv4.conf.IFNAME.arp_notify": "1"}}),
    );
    let (code, msg) = c.call("ADD", &conf).err();
    assert_eq!(code, 999, "{msg}");
    assert!(msg.contains("MTU 70000") && msg.contains("eth0"), "{msg}");
    assert_eq!(c.state(), before);
    assert_eq!(c.sysctl("net/ipv4/conf/eth0/arp_notify"), arp);
    assert_eq!(std::fs::read(c.saved()).unwrap(), b"{\n \"mtu\": 1500\n}");
    std::fs::remove_file(c.saved()).unwrap();
    // Without an earlier file, none is left behind.
    c.call("ADD", &conf).err();
    assert!(!c.saved().exists());
}

#[test]
fn check_detects_drift() {
    let c = Ctr::new();
    let conf = c.conf(
        "1.0.0",
        json!({"mtu": 1400, "allmulti": true, "txQLen": 500,
               "sysctl": {"net.ipv4.conf.IFNAME.arp_notify": "1"}}),
    );
    c.call("ADD", &conf).expect_ok();
    c.call("CHECK", &conf).expect_ok();
    let drift = [
        (
            vec!["link", "set", "eth0", "mtu", "1500"],
            "Error: Tuning configured MTU of eth0 is 1400, current value is 1500",
        ),
        (
            vec!["link", "set", "eth0", "allmulticast", "off"],
            "Error: Tuning configured all-multicast mode of eth0 is true, current value is false",
        ),
        (
            vec!["link", "set", "eth0", "txqueuelen", "1000"],
            "Error: Tuning configured Transmit Queue Length of eth0 is 500, current value is 1000",
        ),
        (
            vec!["link", "set", "eth0", "promisc", "on"],
            "Error: Tuning link eth0 configured promisc is false, current value is 1",
        ),
    ];
    for (cmd, want) in drift {
        c.ns.ip(&cmd);
        assert_eq!(c.call("CHECK", &conf).err().1, want);
        c.call("ADD", &conf).expect_ok(); // re-applies (promisc stays: tuning does not clear it)
        if cmd.contains(&"promisc") {
            c.ns.ip(&["link", "set", "eth0", "promisc", "off"]);
        }
        c.call("CHECK", &conf).expect_ok();
    }
    c.ns.sh(&[
        "sh",
        "-c",
        "echo 0 > /proc/sys/net/ipv4/conf/eth0/arp_notify",
    ]);
    assert_eq!(
        c.call("CHECK", &conf).err().1,
        "Error: Tuning configured value of /proc/sys/net/ipv4/conf/eth0/arp_notify is 1, current value is 0"
    );
    c.ns.ip(&["link", "del", "eth0"]);
    let no_sysctl = c.conf("1.0.0", json!({"mtu": 1400}));
    assert_eq!(
        c.call("CHECK", &no_sysctl).err().1,
        "Cannot find container link eth0"
    );
}

#[test]
fn bad_input_codes() {
    let c = Ctr::new();
    let mut no_prev = c.conf("1.0.0", json!({"mtu": 1400}));
    no_prev.as_object_mut().unwrap().remove("prevResult");
    assert_eq!(
        c.call("ADD", &no_prev).err(),
        (7, "Required prevResult missing".into())
    );
    assert_eq!(
        c.call("CHECK", &no_prev).err(),
        (7, "Required prevResult missing".into())
    );
    let dup = format!(
        r#"{{"cniVersion":"1.0.0","name":"tnet","type":"tuning","dataDir":"{}","sysctl":{{"net.core.somaxconn":"1","net.core.somaxconn":"2"}},"prevResult":{}}}"#,
        c.data.str(),
        c.conf("1.0.0", json!({}))["prevResult"]
    );
    let plugin = ours();
    let mut call = Call::new(&plugin, "ADD");
    call.container_id = &c.id;
    call.netns = c.ns.path_str();
    call.ifname = "eth0";
    call.cni_path = "/x";
    assert_eq!(
        run(&call, &dup).err(),
        (7, "duplicated sysctl keys are not allowed".into())
    );
    for (keys, what) in [
        (json!({"mac": "nope"}), "invalid MAC address"),
        (json!({"mac": "01:00:5e:00:00:01"}), "multicast"),
        (json!({"mtu": -1}), "invalid mtu"),
        (json!({"mtu": "1400"}), "mtu"),
        (json!({"txQLen": -5}), "invalid txQLen"),
        (json!({"promisc": "yes"}), "promisc"),
        (
            json!({"sysctl": {"net.core.somaxconn": 5}}),
            "must be a string",
        ),
        (json!({"sysctl": ["net.core.somaxconn"]}), "sysctl"),
    ] {
        let (code, msg) = c.call("ADD", &c.conf("1.0.0", keys.clone())).err();
        assert_eq!(code, 7, "{keys}: {msg}");
        assert!(msg.contains(what), "{keys}: {msg}");
    }
    assert_eq!(c.link()["mtu"], 1500);
    // No such link, unopenable netns.
    let mut other = Call::new(&plugin, "ADD");
    other.container_id = &c.id;
    other.netns = c.ns.path_str();
    other.ifname = "eth9";
    other.cni_path = "/x";
    let (code, msg) = run(&other, &c.conf("1.0.0", json!({"mtu": 1400})).to_string()).err();
    assert_eq!(code, 999);
    assert!(msg.contains("\"eth9\""), "{msg}");
    other.ifname = "eth0";
    other.netns = "/run/netns/tu-does-not-exist";
    assert_eq!(
        run(&other, &c.conf("1.0.0", json!({"mtu": 1400})).to_string())
            .err()
            .0,
        4
    );
}

#[test]
fn del_is_best_effort() {
    let c = Ctr::new();
    let conf = c.conf("1.0.0", json!({"mtu": 1400}));
    // No file at all.
    c.call("DEL", &conf).expect_ok();
    // File but the link is gone.
    c.call("ADD", &conf).expect_ok();
    c.ns.ip(&["link", "del", "eth0"]);
    c.call("DEL", &conf).expect_ok();
    assert!(!c.saved().exists());
    // File but the netns is gone, or not given.
    for netns in ["/run/netns/tu-does-not-exist", ""] {
        std::fs::write(c.saved(), b"{\n \"mtu\": 1500\n}").unwrap();
        let plugin = ours();
        let mut call = Call::new(&plugin, "DEL");
        call.container_id = &c.id;
        call.netns = netns;
        call.ifname = "eth0";
        call.cni_path = "/x";
        let r = run(&call, &conf.to_string());
        assert!(r.ok(), "{netns:?}: {}", r.stdout);
        assert!(!c.saved().exists(), "{netns:?}");
    }
    // An unusable file is removed.
    std::fs::write(c.saved(), b"not json").unwrap();
    c.call("DEL", &conf).expect_ok();
    assert!(!c.saved().exists());
}

#[test]
fn gc_removes_stale_files_of_this_network_only() {
    let c = Ctr::new();
    let dir = c.data.path();
    let write = |name: &str, net: &str| {
        std::fs::write(
            dir.join(name),
            format!("{{\n \"mtu\": 1500,\n \"network\": \"{net}\"\n}}"),
        )
        .unwrap();
    };
    write("keep_eth0.json", "tnet");
    write("keep_net1.json", "tnet");
    write("stale_eth0.json", "tnet");
    write("other_eth0.json", "othernet");
    std::fs::write(dir.join("gofile_eth0.json"), b"{\n \"mtu\": 1500\n}").unwrap();
    let mut conf = c.conf("1.1.0", json!({}));
    conf.as_object_mut().unwrap().remove("prevResult");
    conf["cni.dev/valid-attachments"] = json!([
        {"containerID": "keep", "ifname": "eth0"},
        {"containerID": "keep", "ifname": "net1"}
    ]);
    let r = run(
        &Call {
            cni_path: "/x",
            ..Call::new(&ours(), "GC")
        },
        &conf.to_string(),
    );
    assert!(r.ok(), "{}", r.stdout);
    let mut left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "gofile_eth0.json",
            "keep_eth0.json",
            "keep_net1.json",
            "other_eth0.json"
        ]
    );
    let r = run(
        &Call {
            cni_path: "/x",
            ..Call::new(&ours(), "STATUS")
        },
        &conf.to_string(),
    );
    assert!(r.ok(), "{}", r.stdout);
}

/// Same inputs to the reference 1.1.1 and to ours: same result JSON, same link state, same saved
/// file, and each DELs what the other ADDed.
#[test]
fn same_as_reference() {
    let keys = json!({
        "mac": "02:11:22:33:44:77",
        "mtu": 1400,
        "promisc": true,
        "allmulti": true,
        "sysctl": {"net.ipv4.conf.IFNAME.arp_notify": "1", "net.core.somaxconn": "777"}
    });
    for v in ["0.3.1", "0.4.0", "1.0.0"] {
        let (a, b) = (Ctr::new(), Ctr::new());
        let before = (a.state(), b.state());
        let mut conf_a = a.conf(v, keys.clone());
        let mut conf_b = b.conf(v, keys.clone());
        // Same prevResult text for both (the sandbox path differs per netns otherwise).
        conf_b["prevResult"] = conf_a["prevResult"].clone();
        conf_a["prevResult"]["cniVersion"] = json!(v);
        conf_b["prevResult"]["cniVersion"] = json!(v);
        let want = a
            .call_with(&reference(), "ADD", &conf_a, "")
            .expect_ok()
            .json();
        let got = b.call("ADD", &conf_b).expect_ok().json();
        assert_eq!(normalize(got), normalize(want), "{v}");
        let (sa, sb) = (a.state(), b.state());
        assert_eq!((&sa.0, sa.1, sa.2, sa.3), (&sb.0, sb.1, sb.2, sb.3), "{v}");
        assert_eq!(
            a.sysctl("net/core/somaxconn"),
            b.sysctl("net/core/somaxconn")
        );
        let saved = |c: &Ctr| -> Value {
            let mut s: Value = serde_json::from_slice(&std::fs::read(c.saved()).unwrap()).unwrap();
            s.as_object_mut().unwrap().remove("network");
            s["mac"] = json!("-"); // each veth has its own random original MAC
            s
        };
        assert_eq!(saved(&b), saved(&a), "{v}");
        // Each DELs the other's ADD.
        if v != "0.3.1" {
            b.call_with(&ours(), "CHECK", &conf_b, "").expect_ok();
            // The reference's CHECK does not substitute IFNAME (its ADD does), so it fails on
            // its own ADD; ours checks the same file its ADD wrote.
            let (_, msg) = a.call_with(&reference(), "CHECK", &conf_a, "").err();
            assert!(msg.contains("/conf/IFNAME/arp_notify"), "{msg}");
            a.call_with(&ours(), "CHECK", &conf_a, "").expect_ok();
        }
        a.call_with(&ours(), "DEL", &conf_a, "").expect_ok();
        b.call_with(&reference(), "DEL", &conf_b, "").expect_ok();
        assert_eq!((a.state(), b.state()), before, "{v}");
        assert!(!a.saved().exists() && !b.saved().exists());
    }
}

/// The reference 1.1.1 prints an empty `dns` in 1.0.0 results and no IP `version` in 0.3/0.4
/// results (libcni reads both the same); see the loopback suite.
fn normalize(mut v: Value) -> Value {
    if v["cniVersion"] == "1.0.0" && v.get("dns") == Some(&json!({})) {
        v.as_object_mut().unwrap().remove("dns");
    }
    for ip in v["ips"].as_array_mut().into_iter().flatten() {
        ip.as_object_mut().unwrap().remove("version");
    }
    v
}
