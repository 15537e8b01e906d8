//! Per-key behaviour visible with `ip` and `bridge`: hairpin, port isolation, promisc, MTU,
//! VLANs, gateway placement, default routes, container MAC.

use serde_json::{json, Value};

use crate::common::*;

fn v4() -> Value {
    json!({"ranges": ranges(&["10.4.0.0/24"])})
}

fn slave_data(fx: &Fx, veth: &str) -> Value {
    fx.host.link(veth).expect("host veth")["linkinfo"]["info_slave_data"].clone()
}

#[test]
fn hairpin_and_port_isolation_on_the_host_veth() {
    let fx = Fx::new();
    let on = fx.attach(&fx.conf(
        "1.0.0",
        json!({"hairpinMode": true, "portIsolation": true}),
        v4(),
    ));
    let off = fx.attach(&fx.conf("1.0.0", json!({}), v4()));
    let d = slave_data(&fx, &on.host_veth());
    assert_eq!(d["hairpin"], true, "{d}");
    assert_eq!(d["isolated"], true, "{d}");
    let d = slave_data(&fx, &off.host_veth());
    assert_eq!(d["hairpin"], false, "{d}");
    assert_eq!(d["isolated"], false, "{d}");
    // Same view through `bridge -d link`.
    let v: Value = serde_json::from_str(&fx.host.sh(&[
        "bridge",
        "-j",
        "-d",
        "link",
        "show",
        "dev",
        &on.host_veth(),
    ]))
    .unwrap();
    assert_eq!(v[0]["hairpin"], true, "{v}");
    assert_eq!(v[0]["isolated"], true, "{v}");
    assert_eq!(v[0]["master"], fx.br.as_str(), "{v}");
}

#[test]
fn promisc_mode_on_the_bridge() {
    let fx = Fx::new();
    let off = fx.conf("1.0.0", json!({"bridge": format!("{}p", fx.br)}), v4());
    let _a = fx.attach(&off);
    let br = fx.host.link(&format!("{}p", fx.br)).unwrap();
    assert_eq!(br["promiscuity"], 0, "promisc off by default");
    let _b = fx.attach(&fx.conf("1.0.0", json!({"promiscMode": true}), v4()));
    let br = fx.host.link(&fx.br).unwrap();
    assert!(
        br["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "PROMISC"),
        "{br}"
    );
}

#[test]
fn mtu_on_new_bridge_and_both_veth_ends() {
    let fx = Fx::new();
    let a = fx.attach(&fx.conf("1.0.0", json!({"mtu": 1400}), v4()));
    assert_eq!(fx.host.link(&fx.br).unwrap()["mtu"], 1400);
    assert_eq!(fx.host.link(&a.host_veth()).unwrap()["mtu"], 1400);
    assert_eq!(a.ctr.link("eth0").unwrap()["mtu"], 1400);
}

#[test]
fn is_gateway_puts_the_gateway_on_the_bridge() {
    let fx = Fx::new();
    let a = fx.attach(&fx.conf(
        "1.0.0",
        json!({"isGateway": true}),
        json!({"ranges": ranges(&["10.4.0.0/24", "fd04::/64"])}),
    ));
    let addrs = fx.host.addrs(&fx.br);
    assert!(addrs.contains(&"10.4.0.1/24".to_string()), "{addrs:?}");
    assert!(addrs.contains(&"fd04::1/64".to_string()), "{addrs:?}");
    assert_eq!(
        fx.host.sh(&["sysctl", "-n", "net.ipv4.ip_forward"]).trim(),
        "1"
    );
    assert_eq!(
        fx.host
            .sh(&["sysctl", "-n", "net.ipv6.conf.all.forwarding"])
            .trim(),
        "1"
    );
    assert_eq!(a.result["ips"][0]["gateway"], "10.4.0.1");
    // Without isGateway: no address on the bridge.
    let fx2 = Fx::new();
    let _b = fx2.attach(&fx2.conf("1.0.0", json!({}), v4()));
    assert!(fx2.host.addrs(&fx2.br).is_empty());
}

fn default_routes(ns: &cni_tests::Netns, v6: bool) -> Vec<Value> {
    let fam = if v6 { "-6" } else { "-4" };
    ns.ip_json(&[fam, "route", "show", "default"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn is_default_gateway_adds_default_routes() {
    let fx = Fx::new();
    let a = fx.attach(&fx.conf(
        "1.0.0",
        json!({"isDefaultGateway": true}),
        json!({"ranges": ranges(&["10.4.0.0/24", "fd04::/64"])}),
    ));
    let r4 = default_routes(&a.ctr, false);
    assert_eq!(r4.len(), 1, "{r4:?}");
    assert_eq!(r4[0]["gateway"], "10.4.0.1");
    assert_eq!(r4[0]["dev"], "eth0");
    let r6 = default_routes(&a.ctr, true);
    assert_eq!(r6.len(), 1, "{r6:?}");
    assert_eq!(r6[0]["gateway"], "fd04::1");
    assert!(fx.host.addrs(&fx.br).contains(&"10.4.0.1/24".to_string()));
    let routes = a.result["routes"].as_array().unwrap();
    assert!(routes
        .iter()
        .any(|r| r["dst"] == "0.0.0.0/0" && r["gw"] == "10.4.0.1"));
    fx.check(&a).expect_ok();
}

/// The reference fails this with "file exists" (duplicate default route).
#[test]
fn is_default_gateway_with_ipam_default_route_without_gw() {
    let fx = Fx::new();
    let a = fx.attach(&fx.conf(
        "1.0.0",
        json!({"isDefaultGateway": true}),
        json!({"ranges": ranges(&["10.4.0.0/24"]), "routes": [{"dst": "0.0.0.0/0"}]}),
    ));
    let r4 = default_routes(&a.ctr, false);
    assert_eq!(r4.len(), 1, "{r4:?}");
    assert_eq!(r4[0]["gateway"], "10.4.0.1");
    fx.check(&a).expect_ok();
    fx.del(&a).expect_ok();
}

/// runtimeConfig.mac beats args.cni.mac beats CNI_ARGS MAC.
#[test]
fn container_mac_sources_and_precedence() {
    let fx = Fx::new();
    let base = fx.conf("1.0.0", json!({}), v4());
    let cases: [(Value, &str, &str); 3] = [
        (
            json!({}),
            "IgnoreUnknown=1;MAC=02:00:00:00:00:03",
            "02:00:00:00:00:03",
        ),
        (
            json!({"args": {"cni": {"mac": "02:00:00:00:00:02"}}}),
            "IgnoreUnknown=1;MAC=02:00:00:00:00:03",
            "02:00:00:00:00:02",
        ),
        (
            json!({"args": {"cni": {"mac": "02:00:00:00:00:02"}},
                   "runtimeConfig": {"mac": "02:00:00:00:00:01"}}),
            "IgnoreUnknown=1;MAC=02:00:00:00:00:03",
            "02:00:00:00:00:01",
        ),
    ];
    for (extra, args, want) in cases {
        let mut conf = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        let ctr = cni_tests::Netns::new("tbc");
        let r = fx
            .call("ADD", ctr.path_str(), "macid", "eth0", &conf, args)
            .expect_ok();
        assert_eq!(ctr.link("eth0").unwrap()["address"], want);
        assert_eq!(r.json()["interfaces"][2]["mac"], want);
        fx.call("DEL", ctr.path_str(), "macid", "eth0", &conf, args)
            .expect_ok();
    }
}

/// Whether this kernel has CONFIG_BRIDGE_VLAN_FILTERING (some minimal kernels do not).
fn vlan_filtering_supported(fx: &Fx) -> bool {
    let name = format!("{}v", fx.br);
    let ok = fx
        .host
        .exec(&[
            "ip",
            "link",
            "add",
            &name,
            "type",
            "bridge",
            "vlan_filtering",
            "1",
        ])
        .status
        .success();
    if ok {
        fx.host.ip(&["link", "del", &name]);
    }
    ok
}

/// VLAN IDs of a bridge port with their flags.
fn vlans(fx: &Fx, dev: &str) -> Vec<(u64, Vec<String>)> {
    let v: Value =
        serde_json::from_str(&fx.host.sh(&["bridge", "-j", "vlan", "show", "dev", dev])).unwrap();
    let mut out = Vec::new();
    for port in v.as_array().into_iter().flatten() {
        for e in port["vlans"].as_array().into_iter().flatten() {
            let flags: Vec<String> = e["flags"]
                .as_array()
                .map(|f| f.iter().map(|x| x.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            let start = e["vlan"].as_u64().unwrap();
            let end = e["vlanEnd"].as_u64().unwrap_or(start);
            for id in start..=end {
                out.push((id, flags.clone()));
            }
        }
    }
    out
}

#[test]
fn vlan_access_trunk_and_preserve_default() {
    let fx = Fx::new();
    if !vlan_filtering_supported(&fx) {
        // Then every VLAN config must fail cleanly, leaving nothing behind.
        eprintln!("kernel without bridge VLAN filtering: checking the clean failure only");
        let before = fx.state();
        let ctr = cni_tests::Netns::new("tbc");
        let conf = fx.conf("1.0.0", json!({"vlan": 100}), v4());
        let r = fx.call("ADD", ctr.path_str(), "vlanid", "eth0", &conf, "");
        let (code, msg) = r.err();
        assert_eq!(code, 999, "{msg}");
        assert_eq!(fx.state(), before);
        assert_empty_netns(&ctr);
        return;
    }
    let access = fx.attach(&fx.conf("1.0.0", json!({"vlan": 100}), Value::Null));
    let br = fx.host.link(&fx.br).unwrap();
    assert_eq!(br["linkinfo"]["info_data"]["vlan_filtering"], 1, "{br}");
    let v = vlans(&fx, &access.host_veth());
    assert_eq!(v.len(), 1, "default VLAN removed: {v:?}");
    assert_eq!(v[0].0, 100);
    assert!(v[0].1.contains(&"PVID".into()) && v[0].1.contains(&"Egress Untagged".into()));

    let trunk = fx.attach(&fx.conf(
        "1.0.0",
        json!({"vlanTrunk": [{"id": 101}, {"minID": 200, "maxID": 203}]}),
        Value::Null,
    ));
    let v = vlans(&fx, &trunk.host_veth());
    let ids: Vec<u64> = v.iter().map(|x| x.0).collect();
    assert_eq!(ids, vec![1, 101, 200, 201, 202, 203], "{v:?}");
    assert!(v[0].1.contains(&"PVID".into()), "native VLAN 1: {v:?}");

    let keep = fx.attach(&fx.conf(
        "1.0.0",
        json!({"vlan": 100, "preserveDefaultVlan": true}),
        Value::Null,
    ));
    let ids: Vec<u64> = vlans(&fx, &keep.host_veth()).iter().map(|x| x.0).collect();
    assert!(ids.contains(&1) && ids.contains(&100), "{ids:?}");

    // L3 + vlan: the gateway lives on "<bridge>.<vlan>", a 4th interface in the result.
    let fx3 = Fx::new();
    let l3 = fx3.attach(&fx3.conf("1.0.0", json!({"vlan": 7, "isGateway": true}), v4()));
    let gw_if = format!("{}.7", fx3.br);
    assert_eq!(l3.result["interfaces"].as_array().unwrap().len(), 4);
    assert!(fx3.host.addrs(&gw_if).contains(&"10.4.0.1/24".to_string()));
    assert!(fx3.host.addrs(&fx3.br).is_empty());
    assert!(ping_ok(&l3.ctr, "10.4.0.1", 3));
}

/// A bridge whose ports all left has MAC 00:00:00:00:00:00 (kernel behaviour); the reference
/// then fails with "could not set bridge's mac: invalid argument". Ours works, and the bridge
/// MAC stays stable across ADD/DEL.
#[test]
fn bridge_with_zero_mac_and_stable_mac() {
    let fx = Fx::new();
    let port = format!("{}q", fx.br);
    fx.host.ip(&["link", "add", &fx.br, "type", "bridge"]);
    fx.host.ip(&[
        "link", "add", &port, "type", "veth", "peer", "name", "tbpeer",
    ]);
    fx.host.ip(&["link", "set", &port, "master", &fx.br]);
    fx.host.ip(&["link", "del", &port]);
    assert_eq!(
        fx.mac(&fx.br),
        "00:00:00:00:00:00",
        "kernel did not zero the MAC"
    );
    let conf = fx.conf("1.0.0", json!({"isGateway": true}), v4());
    let a = fx.attach(&conf);
    let mac = fx.mac(&fx.br);
    assert_ne!(mac, "00:00:00:00:00:00");
    assert_eq!(a.result["interfaces"][0]["mac"], mac.as_str());
    assert!(ping_ok(&a.ctr, "10.4.0.1", 3));
    fx.del(&a).expect_ok();
    assert_eq!(fx.mac(&fx.br), mac, "MAC changed when the last port left");
    let b = fx.attach(&conf);
    assert_eq!(fx.mac(&fx.br), mac);
    assert_eq!(b.result["interfaces"][0]["mac"], mac.as_str());
}

fn sysctl(ns: &cni_tests::Netns, key: &str) -> String {
    ns.sh(&["sysctl", "-n", key]).trim().to_string()
}

/// IPv6 DAD is off unless `enabledad` (the reference then blocks ~2 s per ADD); with it the
/// address is no longer tentative when ADD returns.
#[test]
fn ipv6_dad_only_with_enabledad() {
    let fx = Fx::new();
    let v6 = json!({"ranges": ranges(&["fd04::/64"])});
    let a = fx.attach(&fx.conf("1.0.0", json!({"isGateway": true}), v6.clone()));
    assert_eq!(sysctl(&a.ctr, "net.ipv6.conf.eth0.accept_dad"), "0");
    let b = fx.attach(&fx.conf("1.0.0", json!({"isGateway": true, "enabledad": true}), v6));
    assert_eq!(sysctl(&b.ctr, "net.ipv6.conf.eth0.accept_dad"), "1");
    assert_eq!(sysctl(&b.ctr, "net.ipv6.conf.eth0.enhanced_dad"), "1");
    let addrs = b.ctr.ip_json(&["-6", "addr", "show", "dev", "eth0"]);
    let tentative: Vec<&Value> = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["scope"] == "global" && x["tentative"] == true)
        .collect();
    assert!(
        tentative.is_empty(),
        "still tentative after ADD: {tentative:?}"
    );
    assert!(ping_ok(&b.ctr, "fd04::1", 3));
}

#[test]
fn disable_container_interface() {
    let fx = Fx::new();
    let a = fx.attach(&fx.conf(
        "1.0.0",
        json!({"disableContainerInterface": true}),
        Value::Null,
    ));
    let eth0 = a.ctr.link("eth0").unwrap();
    assert!(
        !eth0["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{eth0}"
    );
    let ctr = cni_tests::Netns::new("tbc");
    let r = fx.call(
        "ADD",
        ctr.path_str(),
        "dci",
        "eth0",
        &fx.conf("1.0.0", json!({"disableContainerInterface": true}), v4()),
        "",
    );
    assert_err(
        &r,
        7,
        "cannot use IPAM when DisableContainerInterface flag is set",
    );
    assert_empty_netns(&ctr);
}

/// `macspoofchk`: frames with another source MAC than the attachment's are dropped; the state
/// goes away on DEL. Checked by behaviour, and by the MAC's presence in the ruleset.
#[test]
fn macspoofchk_drops_spoofed_frames() {
    let fx = Fx::new();
    let a = fx.attach(&fx.conf(
        "1.0.0",
        json!({"isGateway": true, "macspoofchk": true}),
        v4(),
    ));
    let mac = a.result["interfaces"][2]["mac"]
        .as_str()
        .unwrap()
        .to_string();
    let ruleset = |fx: &Fx| fx.host.nft_ruleset().to_string().to_lowercase();
    assert!(ruleset(&fx).contains(&mac), "{mac} not in the ruleset");
    assert!(ping_ok(&a.ctr, "10.4.0.1", 3));
    a.ctr
        .ip(&["link", "set", "eth0", "address", "02:00:00:5f:00:01"]);
    assert!(!ping_ok(&a.ctr, "10.4.0.1", 2), "spoofed MAC got through");
    a.ctr.ip(&["link", "set", "eth0", "address", &mac]);
    assert!(ping_ok(&a.ctr, "10.4.0.1", 3), "original MAC blocked too");
    fx.del(&a).expect_ok();
    assert!(!ruleset(&fx).contains(&mac), "{mac} left in the ruleset");
}

/// Frames seen on every interface of one netns, including ones created later (an AF_PACKET
/// socket for every protocol, bound to no interface): a host veth's frames are seen as they
/// arrive, before the bridge decides anything (an ARP-only socket would see them only once
/// the bridge passes them up, which depends on the port's state at that instant).
struct ArpTap(std::os::fd::OwnedFd);

impl ArpTap {
    fn open(ns: &cni_tests::Netns) -> ArpTap {
        use std::os::fd::FromRawFd;
        // A packet socket stays bound to the netns it was made in.
        let fd = cni_tests::in_netns(ns.path_str(), move || {
            const ETH_P_ALL: u16 = 0x0003;
            // SAFETY: plain socket calls; `sa` is a zeroed sockaddr_ll of the size passed,
            // `tv` a valid timeval, both outliving the calls; the fd is checked and then owned.
            unsafe {
                let fd = libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    i32::from(ETH_P_ALL.to_be()),
                );
                assert!(
                    fd >= 0,
                    "AF_PACKET socket: {}",
                    std::io::Error::last_os_error()
                );
                let mut sa: libc::sockaddr_ll = std::mem::zeroed();
                sa.sll_family = libc::AF_PACKET as u16;
                sa.sll_protocol = ETH_P_ALL.to_be();
                let rc = libc::bind(
                    fd,
                    (&sa as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 200_000,
                };
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                );
                fd
            }
        });
        // SAFETY: `fd` was just created above and nothing else owns it.
        ArpTap(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
    }

    /// Whether a gratuitous ARP (sender IP = target IP = `ip`) arrives within `secs`.
    fn saw_gratuitous(&self, ip: std::net::Ipv4Addr, secs: u64) -> bool {
        use std::os::fd::AsRawFd;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        let mut buf = [0u8; 256];
        while std::time::Instant::now() < deadline {
            // SAFETY: `buf` is valid for writes of its length for the duration of the call.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            // Ethernet (14, ARP ethertype at 12) + ARP for IPv4 over Ethernet (28): sender IP
            // at 28, target IP at 38.
            let arp = n >= 42 && buf[12..14] == [0x08, 0x06];
            if arp && buf[28..32] == ip.octets() && buf[38..42] == ip.octets() {
                return true;
            }
        }
        false
    }
}

/// With IPv4, the container's interface has arp_notify set before it goes up, so it sends a
/// gratuitous ARP as ADD brings it up (as with the reference).
#[test]
fn ipv4_container_announces_itself_at_up() {
    let fx = Fx::new();
    let conf = fx.conf("1.0.0", json!({"isGateway": true}), v4());
    let tap = ArpTap::open(&fx.host);
    let b = fx.attach(&conf);
    assert_eq!(sysctl(&b.ctr, "net.ipv4.conf.eth0.arp_notify"), "1");
    let ip: std::net::Ipv4Addr = b.ip4().parse().unwrap();
    assert!(
        tap.saw_gratuitous(ip, 3),
        "no gratuitous ARP for {ip} on the host veth {}",
        b.host_veth()
    );
    fx.del(&b).expect_ok();
}
