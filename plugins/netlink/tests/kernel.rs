//! Real-kernel tests. Each test runs on its own thread inside a fresh
//! network namespace (unshare(CLONE_NEWNET)); extra namespaces are held only
//! by open fds. Everything created disappears with the namespaces, and the
//! host's interfaces are never touched. Needs root.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use cni_netlink::*;
use nix::sched::{unshare, CloneFlags};
use serde_json::Value;

/// Run `f` on a new thread inside a private netns.
fn in_netns(f: impl FnOnce() + Send + 'static) {
    let h = std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET): run the tests as root");
        let me = std::fs::metadata(THREAD_NETNS).unwrap();
        let process = std::fs::metadata("/proc/self/ns/net").unwrap();
        assert_ne!(
            me.ino(),
            process.ino(),
            "refusing to test outside a private netns"
        );
        f()
    });
    if let Err(p) = h.join() {
        std::panic::resume_unwind(p)
    }
}

/// A second private netns, alive as long as the returned fd.
fn new_netns() -> File {
    std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).unwrap();
        File::open(THREAD_NETNS).unwrap()
    })
    .join()
    .unwrap()
}

/// Run a JSON-printing iproute2 command in the calling thread's netns (a
/// forked child inherits the forking thread's netns).
fn json(cmd: &str, args: &[&str]) -> Value {
    let out = Command::new(cmd).arg("-j").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout);
    if s.trim().is_empty() {
        return Value::Array(vec![]);
    }
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{cmd} {args:?}: {e}: {s}"))
}

fn ip(args: &[&str]) -> Value {
    json("ip", args)
}

fn mac_str(m: &Mac) -> String {
    fmt_mac(m)
}

fn up_veth_pair(nl: &mut Netlink, a: &str, b: &str) -> (u32, u32) {
    let v = nl
        .create_veth(&Veth {
            name: a,
            peer_name: b,
            up: true,
            ..Default::default()
        })
        .unwrap();
    let peer = nl.link_index(b).unwrap();
    nl.set_up(peer).unwrap();
    (v.index, peer)
}

/// Whether the kernel was built with CONFIG_BRIDGE_VLAN_FILTERING (this
/// project's VM kernel is not).
fn kernel_has_bridge_vlans(nl: &mut Netlink) -> bool {
    match nl.create_bridge("cnltvlanprobe", None, true, None) {
        Ok(br) => {
            nl.delete_link(br.index).unwrap();
            true
        }
        Err(e) if e.errno() == Some(libc::EOPNOTSUPP) => {
            assert_eq!(
                e.to_string(),
                "netlink: create bridge cnltvlanprobe: Operation not supported (os error 95): \
                 the kernel has no bridge VLAN support (CONFIG_BRIDGE_VLAN_FILTERING)"
            );
            eprintln!("kernel without CONFIG_BRIDGE_VLAN_FILTERING: VLAN checks skipped");
            false
        }
        Err(e) => panic!("{e}"),
    }
}

/// A bridge (VLAN filtering on when the kernel has it) with one end of a new
/// veth pair, both up, as its port: (VLAN filtering, bridge, port, peer).
fn bridge_with_port(
    nl: &mut Netlink,
    bridge: &str,
    port: &str,
    peer: &str,
) -> (bool, LinkInfo, u32, u32) {
    let vlans = kernel_has_bridge_vlans(nl);
    let br = nl.create_bridge(bridge, None, vlans, None).unwrap();
    let (port, peer) = up_veth_pair(nl, port, peer);
    nl.set_master(port, br.index).unwrap();
    (vlans, br, port, peer)
}

/// A VXLAN link from 192.0.2.1 on underlay `dev`, port 4789.
fn vxlan_192_0_2_1(name: &str, vni: u32, dev: u32) -> Vxlan<'_> {
    Vxlan {
        name,
        vni,
        local: "192.0.2.1".parse().unwrap(),
        dev,
        port: 4789,
        mtu: None,
        mac: None,
    }
}

#[test]
fn lookup_links() {
    in_netns(|| {
        let mut nl = Netlink::new().unwrap();
        let lo = nl.link_by_name("lo").unwrap().unwrap();
        assert_eq!(lo.index, 1);
        assert_eq!(lo.kind, None);
        assert_eq!(nl.link_by_index(1).unwrap().unwrap().name, "lo");
        assert!(nl.link_by_name("cnlt-none").unwrap().is_none());
        assert!(nl.link_by_index(424242).unwrap().is_none());
        let e = nl.link_index("cnlt-none").unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert_eq!(
            e.to_string(),
            "netlink: link cnlt-none: No such device (os error 19)"
        );
        let e = nl.link_by_name("cnlt-way-too-long-name").unwrap_err();
        assert_eq!(e.errno(), Some(libc::EINVAL));
        assert!(e.to_string().contains("1-15 bytes"), "{e}");

        let links = nl.dump_links().unwrap();
        let names: Vec<_> = links.iter().map(|l| l.name.clone()).collect();
        let want: Vec<_> = ip(&["link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, want);
    });
}

#[test]
fn bridge_lifecycle() {
    in_netns(|| {
        let mut nl = Netlink::new().unwrap();
        let mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x01];
        let vlans = kernel_has_bridge_vlans(&mut nl);
        let br = nl
            .create_bridge("cnltbr0", Some(1400), vlans, Some(mac))
            .unwrap();
        assert!(br.is_bridge());
        assert_eq!(
            (br.name.as_str(), br.mtu, br.mac),
            ("cnltbr0", 1400, Some(mac))
        );
        assert_eq!(br.vlan_filtering, Some(vlans));
        assert!(!br.is_up());

        let j = &ip(&["-d", "link", "show", "cnltbr0"])[0];
        assert_eq!(j["ifindex"], br.index);
        assert_eq!(j["mtu"], 1400);
        assert_eq!(j["address"], mac_str(&mac));
        assert_eq!(j["linkinfo"]["info_kind"], "bridge");
        assert_eq!(
            j["linkinfo"]["info_data"]["vlan_filtering"],
            u8::from(vlans)
        );

        let e = nl.create_bridge("cnltbr0", None, false, None).unwrap_err();
        assert!(e.is_exists());
        assert!(
            e.to_string()
                .starts_with("netlink: create bridge cnltbr0: File exists (os error 17)"),
            "{e}"
        );

        // Flags, MTU, MAC, each read back through ip(8) and the API.
        nl.set_promisc(br.index, true).unwrap();
        nl.set_up(br.index).unwrap();
        let flags = ip(&["link", "show", "cnltbr0"])[0]["flags"].clone();
        assert!(
            flags.as_array().unwrap().contains(&"PROMISC".into()),
            "{flags}"
        );
        assert!(flags.as_array().unwrap().contains(&"UP".into()), "{flags}");
        let info = nl.link_by_index(br.index).unwrap().unwrap();
        assert!(info.is_up() && info.is_promisc());
        nl.set_promisc(br.index, false).unwrap();
        nl.set_down(br.index).unwrap();
        let info = nl.link_by_index(br.index).unwrap().unwrap();
        assert!(!info.is_up() && !info.is_promisc());

        let mac2 = [0x02, 0, 0, 0, 0, 0x2a];
        nl.set_mac(br.index, mac2).unwrap();
        nl.set_mtu(br.index, 1300).unwrap();
        let j = &ip(&["link", "show", "cnltbr0"])[0];
        assert_eq!(j["address"], "02:00:00:00:00:2a");
        assert_eq!(j["mtu"], 1300);

        // Several changes, one request.
        nl.update_link(
            br.index,
            &LinkUpdate {
                up: Some(true),
                mtu: Some(1450),
                name: Some("cnltbr1"),
                ..Default::default()
            },
        )
        .unwrap();
        let info = nl.link_by_name("cnltbr1").unwrap().unwrap();
        assert_eq!((info.index, info.mtu, info.is_up()), (br.index, 1450, true));

        let e = nl.set_mtu(br.index, 10).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EINVAL));
        assert!(
            e.to_string()
                .starts_with("netlink: set cnltbr1 mtu 10: Invalid argument"),
            "{e}"
        );

        nl.delete_link(br.index).unwrap();
        assert!(nl.link_by_index(br.index).unwrap().is_none());
        let e = nl.delete_link(br.index).unwrap_err();
        assert!(e.is_not_found());
        assert_eq!(
            e.to_string(),
            format!(
                "netlink: delete link ifindex {}: No such device (os error 19)",
                br.index
            )
        );
        let e = nl.set_up(br.index).unwrap_err();
        assert!(e.is_not_found(), "{e}");

        // Default: no VLAN filtering, kernel MTU.
        let br = nl.create_bridge("cnltbr2", None, false, None).unwrap();
        assert_eq!((br.vlan_filtering, br.mtu), (Some(false), 1500));
    });
}

#[test]
fn veth_peer_created_in_other_netns() {
    in_netns(|| {
        let ns = new_netns();
        let mut host = Netlink::new().unwrap();
        let br = host
            .create_bridge("cnltbr0", Some(1400), false, None)
            .unwrap();
        let peer_mac = [0x0a, 0x58, 0x0a, 0x01, 0x02, 0x03];
        let v = host
            .create_veth(&Veth {
                name: "cnltv0",
                peer_name: "eth0",
                peer_netns: Some(ns.as_fd()),
                mtu: Some(1400),
                peer_mac: Some(peer_mac),
                master: Some(br.index),
                up: true,
                ..Default::default()
            })
            .unwrap();
        assert!(v.is_veth() && v.is_up());
        assert_eq!(
            (v.name.as_str(), v.mtu, v.master),
            ("cnltv0", 1400, Some(br.index))
        );
        let again = host.link_by_index(v.index).unwrap().unwrap();
        assert_eq!(again.master, Some(br.index));
        assert!(again.link_netnsid.is_some(), "peer is in another netns");
        assert!(
            host.link_by_name("eth0").unwrap().is_none(),
            "peer must not be in the host netns"
        );
        let j = &ip(&["-d", "link", "show", "cnltv0"])[0];
        assert_eq!(j["master"], "cnltbr0");
        assert_eq!(j["mtu"], 1400);
        // One queue each way, set at creation (no shrink, so no RCU grace period).
        assert_eq!(
            (&j["num_tx_queues"], &j["num_rx_queues"]),
            (&1.into(), &1.into())
        );
        let ports = host.links_with_master(br.index).unwrap();
        assert_eq!(
            ports.iter().map(|l| l.index).collect::<Vec<_>>(),
            vec![v.index]
        );

        // The container side, through a socket created inside its netns.
        let mut cont = Netlink::new_in_netns(&ns).unwrap();
        assert!(
            !is_current_netns(&ns).unwrap(),
            "thread must be back in its own netns"
        );
        let eth0 = cont.link_by_name("eth0").unwrap().unwrap();
        assert!(eth0.is_veth() && !eth0.is_up());
        assert_eq!((eth0.mac, eth0.mtu), (Some(peer_mac), 1400));
        assert_eq!(eth0.link, Some(v.index));
        assert_eq!(v.link, Some(eth0.index));
        // Host end is up but its peer is down: no carrier until eth0 is up.
        let before = host.link_by_index(v.index).unwrap().unwrap().oper_state;
        assert_eq!(before, OperState::LowerLayerDown);
        cont.set_up(eth0.index).unwrap();
        assert_eq!(
            host.link_by_index(v.index).unwrap().unwrap().oper_state,
            OperState::Up
        );
        let j = with_netns(&ns, || ip(&["-d", "link", "show", "eth0"])).unwrap();
        assert_eq!(j[0]["address"], mac_str(&peer_mac));
        assert_eq!(j[0]["mtu"], 1400);
        assert_eq!(
            (&j[0]["num_tx_queues"], &j[0]["num_rx_queues"]),
            (&1.into(), &1.into())
        );

        // Same names again: EEXIST, message names both ends.
        let e = host
            .create_veth(&Veth {
                name: "cnltv0",
                peer_name: "eth0",
                peer_netns: Some(ns.as_fd()),
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.is_exists(), "{e}");
        assert!(
            e.to_string()
                .contains("create veth cnltv0 with peer eth0 in netns fd"),
            "{e}"
        );

        // Deleting the host end removes both.
        host.delete_link(v.index).unwrap();
        assert!(cont.link_by_name("eth0").unwrap().is_none());

        // Created from the container side with the peer in the host, as
        // the reference does.
        let host_ns = File::open(THREAD_NETNS).unwrap();
        let c = cont
            .create_veth(&Veth {
                name: "eth1",
                peer_name: "cnltv1",
                peer_netns: Some(host_ns.as_fd()),
                ..Default::default()
            })
            .unwrap();
        let h = host.link_by_name("cnltv1").unwrap().unwrap();
        assert_eq!(h.link, Some(c.index));
    });
}

#[test]
fn plain_veth_and_move_to_netns() {
    in_netns(|| {
        let ns = new_netns();
        let mut nl = Netlink::new().unwrap();
        let (a, b) = up_veth_pair(&mut nl, "cnlta", "cnltb");
        let la = nl.link_by_index(a).unwrap().unwrap();
        assert_eq!(la.link, Some(b));
        assert!(la.link_netnsid.is_none());
        assert!(la.is_up() && nl.link_by_index(b).unwrap().unwrap().is_up());

        nl.move_to_netns_fd(b, ns.as_fd()).unwrap();
        assert!(nl.link_by_index(b).unwrap().is_none());
        let mut other = Netlink::new_in_netns(&ns).unwrap();
        let moved = other.link_by_name("cnltb").unwrap().unwrap();
        other.set_name(moved.index, "eth0").unwrap();
        assert_eq!(
            other.link_by_index(moved.index).unwrap().unwrap().name,
            "eth0"
        );
    });
}

#[test]
fn arp_notify_through_netlink() {
    in_netns(|| {
        let mut nl = Netlink::new().unwrap();
        let (a, _) = up_veth_pair(&mut nl, "cnltan0", "cnltan1");
        let path = "net/ipv4/conf/cnltan0/arp_notify";
        assert_eq!(sysctl_get(path).unwrap(), "0", "kernel default");
        let set = |nl: &mut Netlink, on| {
            nl.update_link(
                a,
                &LinkUpdate {
                    arp_notify: Some(on),
                    ..Default::default()
                },
            )
        };
        set(&mut nl, true).unwrap();
        assert_eq!(sysctl_get(path).unwrap(), "1");
        assert_eq!(sysctl_get("net/ipv4/conf/cnltan1/arp_notify").unwrap(), "0");
        set(&mut nl, true).unwrap();
        assert_eq!(sysctl_get(path).unwrap(), "1", "idempotent");
        set(&mut nl, false).unwrap();
        assert_eq!(sysctl_get(path).unwrap(), "0");
        let e = nl
            .update_link(
                9999,
                &LinkUpdate {
                    arp_notify: Some(true),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert!(e.to_string().contains("arp_notify 1"), "{e}");
    });
}

#[test]
fn bridge_port_options() {
    in_netns(|| {
        let mut nl = Netlink::new().unwrap();
        let br = nl.create_bridge("cnltbr0", None, false, None).unwrap();
        let (v, _) = up_veth_pair(&mut nl, "cnltv0", "cnltp0");
        let e = nl.set_bridge_port(v, true, false).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("netlink: set bridge port cnltv0 hairpin on isolated off"),
            "{e}"
        );
        assert_eq!(nl.link_by_index(v).unwrap().unwrap().bridge_port, None);

        nl.set_master(v, br.index).unwrap();
        for (hairpin, isolated) in [(true, true), (false, true), (true, false), (false, false)] {
            nl.set_bridge_port(v, hairpin, isolated).unwrap();
            let l = nl.link_by_index(v).unwrap().unwrap();
            assert_eq!(l.bridge_port, Some(BridgePortInfo { hairpin, isolated }));
            let j = &json("bridge", &["-d", "link", "show", "dev", "cnltv0"])[0];
            assert_eq!(j["hairpin"], hairpin, "{j}");
            assert_eq!(j["isolated"], isolated, "{j}");
        }
        nl.set_master(v, 0).unwrap();
        assert_eq!(nl.link_by_index(v).unwrap().unwrap().master, None);
    });
}

/// The fast RTM_NEWLINK decoder against netlink_packet_route's full decode,
/// on the kernel's own messages (with and without statistics): a bridge
/// (VLAN filtering on when the kernel has it), a veth pair with one end a
/// bridge port (hairpin and isolated on), a VXLAN link, `lo`.
#[test]
fn link_decode_parity_with_full_decode() {
    in_netns(|| {
        let mut nl = Netlink::new().unwrap();
        let (vlans, br, port, peer) = bridge_with_port(&mut nl, "cnltpbr0", "cnltpv0", "cnltpp0");
        nl.set_up(br.index).unwrap();
        nl.set_bridge_port(port, true, true).unwrap();
        nl.add_address(peer, "192.0.2.1".parse().unwrap(), 24, false)
            .unwrap();
        let vx = nl
            .create_vxlan(&vxlan_192_0_2_1("cnltpvx0", 77, peer))
            .unwrap();

        let mut fast = Vec::new();
        for index in [1, br.index, port, peer, vx.index] {
            for with_stats in [false, true] {
                let raw = nl.link_message_raw(index, with_stats).unwrap();
                let full = LinkInfo::decode_full(&raw).unwrap();
                let got = LinkInfo::decode(&raw).unwrap();
                assert_eq!(got, full, "ifindex {index}, statistics {with_stats}");
                if !with_stats {
                    fast.push(got);
                }
            }
        }
        // What was set is there: the parity is not that of two empty decodes.
        let [lo, br_got, port_got, peer_got, vx_got] = &fast[..] else {
            unreachable!()
        };
        assert_eq!((lo.name.as_str(), lo.kind.as_deref()), ("lo", None));
        assert_eq!(br_got.kind.as_deref(), Some("bridge"));
        assert_eq!((port_got.mtu, port_got.txqlen), (1500, 1000));
        assert_eq!(br_got.vlan_filtering, Some(vlans));
        assert_eq!(
            (port_got.master, port_got.bridge_port),
            (
                Some(br.index),
                Some(BridgePortInfo {
                    hairpin: true,
                    isolated: true
                })
            )
        );
        assert_eq!((port_got.link, peer_got.link), (Some(peer), Some(port)));
        assert_eq!((peer_got.master, peer_got.bridge_port), (None, None));
        assert!(peer_got.is_up() && peer_got.mac.is_some());
        assert_eq!(vx_got.vxlan.map(|v| (v.vni, v.dev)), Some((77, Some(peer))));
        // The dump decodes alike.
        let dumped = nl.dump_links().unwrap();
        assert_eq!(dumped.len(), fast.len());
        for l in &dumped {
            assert!(fast.contains(l), "{l:?}");
        }
    });
}

fn vlans_from_bridge_cmd(dev: &str) -> Vec<(u64, bool, bool)> {
    let j = json("bridge", &["vlan", "show", "dev", dev]);
    let Some(entry) = j.as_array().and_then(|a| a.first()) else {
        return vec![];
    };
    entry["vlans"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| {
            let flags = v["flags"].as_array().cloned().unwrap_or_default();
            let pvid = flags.contains(&"PVID".into());
            let untagged = flags.contains(&"Egress Untagged".into());
            let first = v["vlan"].as_u64().unwrap();
            let last = v["vlanEnd"].as_u64().unwrap_or(first);
            (first..=last).map(move |vid| (vid, pvid, untagged))
        })
        .collect()
}

#[test]
fn bridge_vlans() {
    in_netns(|| {
        let mut nl = Netlink::new().unwrap();
        let (vlans, br, v, _) = bridge_with_port(&mut nl, "cnltbr0", "cnltv0", "cnltp0");
        if !vlans {
            // Without kernel support: a clear error, nothing listed, the
            // link untouched. (Requests are checked byte-for-byte against
            // iproute2 in the unit tests.)
            let e = nl.bridge_vlan_add(v, 10, true, true, true).unwrap_err();
            assert_eq!(
                e.to_string(),
                "netlink: add vlan 10 pvid untagged on cnltv0: Operation not supported (os error 95): \
                 the kernel has no bridge VLAN support (CONFIG_BRIDGE_VLAN_FILTERING)"
            );
            assert!(nl.bridge_vlan_list(v).unwrap().is_empty());
            assert_eq!(vlans_from_bridge_cmd("cnltv0"), vec![]);
            let _ = nl.bridge_vlan_del(v, 1);
            assert!(nl.link_by_index(v).unwrap().is_some());
            let e = nl.bridge_vlan_add(v, 4095, false, false, true).unwrap_err();
            assert_eq!(e.errno(), Some(libc::EINVAL));
            let e = nl.bridge_vlan_add_range(v, std::ops::RangeInclusive::new(30, 20), false, true);
            assert!(e
                .unwrap_err()
                .to_string()
                .contains("add vlans 30-20 on cnltv0"));
            return;
        }

        let got = |nl: &mut Netlink| -> Vec<(u64, bool, bool)> {
            nl.bridge_vlan_list(v)
                .unwrap()
                .iter()
                .map(|x| (u64::from(x.vid), x.pvid(), x.untagged()))
                .collect()
        };
        // Default VID 1 pvid untagged on a new port.
        assert_eq!(got(&mut nl), vec![(1, true, true)]);
        assert_eq!(got(&mut nl), vlans_from_bridge_cmd("cnltv0"));

        nl.bridge_vlan_del(v, 1).unwrap();
        nl.bridge_vlan_add(v, 10, true, true, true).unwrap();
        nl.bridge_vlan_add(v, 20, false, false, true).unwrap();
        nl.bridge_vlan_add_range(v, 100..=103, false, true).unwrap();
        let want = vec![
            (10, true, true),
            (20, false, false),
            (100, false, false),
            (101, false, false),
            (102, false, false),
            (103, false, false),
        ];
        assert_eq!(got(&mut nl), want);
        assert_eq!(vlans_from_bridge_cmd("cnltv0"), want);

        // AF_BRIDGE RTM_DELLINK deletes the VLAN, never the link.
        nl.bridge_vlan_del(v, 20).unwrap();
        assert!(nl.link_by_index(v).unwrap().is_some());
        assert!(!got(&mut nl).iter().any(|x| x.0 == 20));

        for bad in [0u16, 4095] {
            let e = nl.bridge_vlan_add(v, bad, false, false, true).unwrap_err();
            assert_eq!(e.errno(), Some(libc::EINVAL));
            assert!(e.to_string().contains("on cnltv0"), "{e}");
        }
        assert!(nl
            .bridge_vlan_add_range(v, std::ops::RangeInclusive::new(30, 20), false, true)
            .is_err());

        // VLANs of the bridge device itself (`self`).
        nl.bridge_vlan_add(br.index, 10, false, false, false)
            .unwrap();
        assert!(nl
            .bridge_vlan_list(br.index)
            .unwrap()
            .iter()
            .any(|x| x.vid == 10));

        // Not a bridge port: nothing listed.
        let (other, _) = up_veth_pair(&mut nl, "cnltv1", "cnltp1");
        assert!(nl.bridge_vlan_list(other).unwrap().is_empty());
    });
}

#[test]
fn addresses() {
    in_netns(|| {
        let mut nl = Netlink::new().unwrap();
        let (a, b) = up_veth_pair(&mut nl, "cnlta", "cnltb");
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        nl.add_address(a, v4, 24, false).unwrap();
        let e = nl.add_address(a, v4, 24, false).unwrap_err();
        assert!(e.is_exists());
        assert_eq!(
            e.to_string(),
            "netlink: add address 10.1.2.3/24 to cnlta: File exists (os error 17): \
             ipv4: Address already assigned"
        );
        assert_eq!(
            e.detail(),
            Some("ipv4: Address already assigned"),
            "kernel ext-ack text"
        );
        let j = ip(&["-4", "addr", "show", "dev", "cnlta"]);
        let ai = &j[0]["addr_info"][0];
        assert_eq!(ai["local"], "10.1.2.3");
        assert_eq!(ai["prefixlen"], 24);
        assert_eq!(ai["broadcast"], "10.1.2.255");

        // IPv6: without nodad the address is tentative (DAD), with nodad not.
        let dad: IpAddr = "fd00::2".parse().unwrap();
        let nodad: IpAddr = "fd00:1::2".parse().unwrap();
        nl.add_address(a, dad, 64, false).unwrap();
        nl.add_address(a, nodad, 64, true).unwrap();
        let v6 = nl.addresses(Some(a), Some(Family::V6)).unwrap();
        let find = |ip: IpAddr| *v6.iter().find(|x| x.ip == ip).unwrap();
        assert!(find(dad).tentative(), "{:?}", find(dad));
        assert!(!find(nodad).tentative() && !find(nodad).dadfailed());
        assert_ne!(find(nodad).flags & libc::IFA_F_NODAD, 0);
        assert!(v6.iter().all(|x| x.index == a && x.ip.is_ipv6()));
        let j = ip(&["-6", "addr", "show", "dev", "cnlta"]);
        let infos = j[0]["addr_info"].as_array().unwrap();
        let nd = infos.iter().find(|x| x["local"] == "fd00:1::2").unwrap();
        assert_eq!(nd["nodad"], true, "{nd}");
        let td = infos.iter().find(|x| x["local"] == "fd00::2").unwrap();
        assert_eq!(td["tentative"], true, "{td}");
        // link-local fe80:: has scope link (253).
        assert!(v6
            .iter()
            .any(|x| x.scope == RT_SCOPE_LINK && x.ip.to_string().starts_with("fe80")));

        let v4s = nl.addresses(Some(a), Some(Family::V4)).unwrap();
        assert_eq!(v4s.len(), 1);
        assert_eq!((v4s[0].ip, v4s[0].prefix_len, v4s[0].scope), (v4, 24, 0));
        assert!(nl.addresses(Some(b), Some(Family::V4)).unwrap().is_empty());
        let vb: IpAddr = "10.7.0.1".parse().unwrap();
        nl.add_address(b, vb, 32, false).unwrap();
        let all = nl.addresses(None, None).unwrap();
        assert!(all.iter().any(|x| x.ip == v4 && x.index == a));
        assert!(all
            .iter()
            .any(|x| x.ip == vb && x.index == b && x.prefix_len == 32));
        assert!(all.iter().any(|x| x.ip.is_ipv6()));

        nl.del_address(a, v4, 24).unwrap();
        let e = nl.del_address(a, v4, 24).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert!(
            e.to_string()
                .starts_with("netlink: delete address 10.1.2.3/24 from cnlta"),
            "{e}"
        );
        assert_eq!(
            nl.add_address(a, v4, 33, false).unwrap_err().errno(),
            Some(libc::EINVAL)
        );
        assert!(nl
            .add_address(4242, v4, 24, false)
            .unwrap_err()
            .is_not_found());
    });
}

#[test]
fn routes() {
    in_netns(|| {
        let mut nl = Netlink::new().unwrap();
        let (a, _) = up_veth_pair(&mut nl, "cnlta", "cnltb");
        let (c, _) = up_veth_pair(&mut nl, "cnltc", "cnltd");
        nl.add_address(a, "10.9.0.2".parse().unwrap(), 24, false)
            .unwrap();
        nl.add_address(a, "fd01::2".parse().unwrap(), 64, true)
            .unwrap();
        nl.add_address(c, "fd02::2".parse().unwrap(), 64, true)
            .unwrap();

        let def4 = Route {
            gateway: Some("10.9.0.1".parse().unwrap()),
            oif: Some(a),
            ..Default::default()
        };
        nl.add_route(&def4).unwrap();
        let e = nl.add_route(&def4).unwrap_err();
        assert!(e.is_exists());
        assert_eq!(
            e.to_string(),
            format!("netlink: add route default (0.0.0.0/0) via 10.9.0.1 dev ifindex {a}: File exists (os error 17)")
        );
        let j = ip(&["-4", "route", "show", "default"]);
        assert_eq!(j[0]["gateway"], "10.9.0.1");
        assert_eq!(j[0]["dev"], "cnlta");
        assert!(
            j[0].get("protocol").is_none(),
            "proto boot is not printed: {j}"
        );

        let r = Route {
            dst: Some(("192.168.7.0".parse().unwrap(), 24)),
            gateway: Some("10.9.0.5".parse().unwrap()),
            priority: Some(77),
            table: 1000,
            protocol: RTPROT_STATIC,
            ..Default::default()
        };
        nl.add_route(&r).unwrap();
        let t = nl.routes(Family::V4, Some(1000)).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].dst, r.dst);
        assert_eq!(
            (t[0].gateway, t[0].priority, t[0].table, t[0].protocol),
            (r.gateway, Some(77), 1000, 4)
        );
        assert_eq!(t[0].oif, Some(a));
        let j = ip(&["route", "show", "table", "1000"]);
        assert_eq!(j[0]["dst"], "192.168.7.0/24");
        assert_eq!(j[0]["metric"], 77);

        let main = nl.routes(Family::V4, Some(RT_TABLE_MAIN)).unwrap();
        assert!(main.iter().all(|x| x.table == RT_TABLE_MAIN));
        let d = main.iter().find(|x| x.dst.is_none()).unwrap();
        assert_eq!(
            (d.gateway, d.oif, d.protocol),
            (def4.gateway, Some(a), RTPROT_BOOT)
        );
        // Kernel's connected route: scope link, proto kernel.
        let conn = main
            .iter()
            .find(|x| x.dst == Some(("10.9.0.0".parse().unwrap(), 24)))
            .unwrap();
        assert_eq!(conn.scope, RT_SCOPE_LINK);

        // IPv6 ECMP through append, as the reference's RouteAddEcmp.
        for (gw, dev) in [("fd01::1", a), ("fd02::1", c)] {
            nl.append_route(&Route {
                gateway: Some(gw.parse().unwrap()),
                oif: Some(dev),
                ..Default::default()
            })
            .unwrap();
        }
        let v6 = nl.routes(Family::V6, Some(RT_TABLE_MAIN)).unwrap();
        let d6 = v6.iter().find(|x| x.dst.is_none()).unwrap();
        let mut hops: Vec<_> = d6
            .multipath
            .iter()
            .map(|h| (h.gateway.unwrap().to_string(), h.oif))
            .collect();
        hops.sort();
        assert_eq!(
            hops,
            vec![("fd01::1".to_string(), a), ("fd02::1".to_string(), c)]
        );
        let j = ip(&["-6", "route", "show", "default"]);
        assert_eq!(j[0]["nexthops"].as_array().unwrap().len(), 2, "{j}");

        // Delete: matches regardless of protocol; ESRCH the second time.
        nl.del_route(&r).unwrap();
        assert!(nl.routes(Family::V4, Some(1000)).unwrap().is_empty());
        let e = nl.del_route(&r).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        nl.del_route(&def4).unwrap();
        assert!(ip(&["-4", "route", "show", "default"])
            .as_array()
            .unwrap()
            .is_empty());

        // Replace is idempotent.
        let rep = Route {
            dst: Some(("10.50.0.0".parse().unwrap(), 16)),
            oif: Some(a),
            scope: RT_SCOPE_LINK,
            ..Default::default()
        };
        nl.replace_route(&rep).unwrap();
        nl.replace_route(&rep).unwrap();
        let j = ip(&["route", "show", "10.50.0.0/16"]);
        assert_eq!(j[0]["scope"], "link");
    });
}

#[test]
fn netns_open_validates() {
    let ns = NetNs::open("/proc/self/ns/net").unwrap();
    assert_eq!(ns.path(), std::path::Path::new("/proc/self/ns/net"));
    let e = NetNs::open("/proc/self/ns/mnt").unwrap_err();
    assert_eq!(e.errno(), Some(libc::EINVAL));
    assert!(e.to_string().contains("not a network namespace"), "{e}");
    // procfs is accepted like the reference (pre-3.19 kernels kept ns files
    // there); setns then refuses anything that is not a netns.
    let status = NetNs::open("/proc/self/status").unwrap();
    let e = status.run(|| ()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "netns: enter network namespace (setns): Invalid argument (os error 22)"
    );
    let e = NetNs::open("/dev/null").unwrap_err();
    assert!(e.to_string().contains("not a namespace file"), "{e}");
    let e = NetNs::open("/etc/hostname").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("netns: open /etc/hostname: Invalid argument"),
        "{e}"
    );
    let e = NetNs::open("/nonexistent/cnlt").unwrap_err();
    assert!(e.is_not_found());
    assert_eq!(
        e.to_string(),
        "netns: open /nonexistent/cnlt: No such file or directory (os error 2)"
    );
}

#[test]
fn netns_switching_restores() {
    in_netns(|| {
        let other = new_netns();
        let mine = NetNs::current().unwrap();
        assert!(mine.is_current().unwrap());
        assert!(!is_current_netns(&other).unwrap());
        let inside = with_netns(&other, || is_current_netns(&other).unwrap()).unwrap();
        assert!(inside);
        assert!(mine.is_current().unwrap());

        // A panic inside still switches back.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            with_netns(&other, || panic!("boom")).unwrap();
        }));
        assert!(r.is_err());
        assert!(mine.is_current().unwrap());

        // Sockets keep their netns: changes land where the socket was made.
        let mut there = Netlink::new_in_netns(&other).unwrap();
        assert!(mine.is_current().unwrap());
        there.create_bridge("cnltbr9", None, false, None).unwrap();
        let mut here = Netlink::new().unwrap();
        assert!(here.link_by_name("cnltbr9").unwrap().is_none());
        assert!(
            NetNs::open("/proc/thread-self/ns/net")
                .unwrap()
                .run(|| 7)
                .unwrap()
                == 7
        );
    });
}

#[test]
fn sysctls() {
    // Only the private netns changes: the process netns (read from this
    // thread, which never unshares) keeps its value. A sysctl nobody else
    // on the machine writes, so a parallel run cannot race the comparison.
    const PROBE: &str = "net/ipv4/conf/default/arp_notify";
    let host_before = sysctl_get(PROBE).unwrap();
    in_netns(|| {
        let flipped = if sysctl_get("net/ipv4/ip_forward").unwrap() == "1" {
            "0"
        } else {
            "1"
        };
        assert!(sysctl_set("net/ipv4/ip_forward", flipped).unwrap());
        assert!(!sysctl_set("net/ipv4/ip_forward", flipped).unwrap());
        assert_eq!(sysctl_get("net/ipv4/ip_forward").unwrap(), flipped);
        let flipped = if sysctl_get(PROBE).unwrap() == "1" {
            "0"
        } else {
            "1"
        };
        assert!(sysctl_set(PROBE, flipped).unwrap());

        // A read-only setting: fine when it already has the value, an error naming the
        // write otherwise.
        const RO: &str = "kernel/random/boot_id";
        let id = sysctl_get(RO).unwrap();
        assert!(!sysctl_set(RO, &id).unwrap());
        let e = sysctl_set(RO, "x").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("sysctl: set kernel/random/boot_id to \"x\": "),
            "{e}"
        );

        let e = sysctl_set("net/ipv6/conf/cnlt-none/accept_ra", "0").unwrap_err();
        assert!(e.is_not_found());
        assert_eq!(
            e.to_string(),
            "sysctl: read net/ipv6/conf/cnlt-none/accept_ra: No such file or directory (os error 2)"
        );

        // Container-side sysctl through with_netns.
        let other = new_netns();
        let mut nl = Netlink::new_in_netns(&other).unwrap();
        let (_, _) = up_veth_pair(&mut nl, "cnltc0", "cnltp");
        with_netns(&other, || {
            sysctl_set("net/ipv6/conf/cnltc0/accept_dad", "0").unwrap();
            assert_eq!(sysctl_get("net/ipv6/conf/cnltc0/accept_dad").unwrap(), "0");
        })
        .unwrap();
        assert!(sysctl_get("net/ipv6/conf/cnltc0/accept_dad")
            .unwrap_err()
            .is_not_found());
    });
    assert_eq!(sysctl_get(PROBE).unwrap(), host_before);
}

/// Rough latency of a bridge-plugin ADD's netlink part (printed, not
/// asserted): `cargo test -p cni-netlink --release -- --nocapture timing`.
#[test]
fn timing_bridge_add_flow() {
    in_netns(|| {
        let ns = new_netns();
        let t = std::time::Instant::now();
        let mut host = Netlink::new().unwrap();
        let mut cont = Netlink::new_in_netns(&ns).unwrap();
        let br = host
            .create_bridge("cnltbr0", Some(1500), false, None)
            .unwrap();
        host.set_up(br.index).unwrap();
        let v = host
            .create_veth(&Veth {
                name: "cnltv0",
                peer_name: "eth0",
                peer_netns: Some(ns.as_fd()),
                master: Some(br.index),
                up: true,
                ..Default::default()
            })
            .unwrap();
        host.set_bridge_port(v.index, false, false).unwrap();
        let eth0 = cont.link_index("eth0").unwrap();
        cont.add_address(eth0, "10.22.0.2".parse().unwrap(), 24, false)
            .unwrap();
        cont.set_up(eth0).unwrap();
        cont.add_route(&Route {
            gateway: Some("10.22.0.1".parse().unwrap()),
            oif: Some(eth0),
            ..Default::default()
        })
        .unwrap();
        host.add_address(br.index, "10.22.0.1".parse().unwrap(), 24, false)
            .unwrap();
        eprintln!("bridge ADD netlink flow: {:?}", t.elapsed());
    });
}

#[test]
fn vxlan_neigh_fdb_onlink_route() {
    in_netns(|| {
        let mut nl = Netlink::new().unwrap();
        let (ul, _) = up_veth_pair(&mut nl, "ul0", "ul1");
        nl.add_address(ul, "192.0.2.1".parse().unwrap(), 24, false)
            .unwrap();
        let mac: Mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        let vx = nl
            .create_vxlan(&Vxlan {
                mtu: Some(1450),
                mac: Some(mac),
                ..vxlan_192_0_2_1("vx-4097", 4097, ul)
            })
            .unwrap();
        assert_eq!(vx.kind.as_deref(), Some("vxlan"));
        assert_eq!(vx.mac, Some(mac));
        assert_eq!(vx.mtu, 1450);
        let info = nl.link_by_name("vx-4097").unwrap().unwrap().vxlan.unwrap();
        assert_eq!(info.vni, 4097);
        assert_eq!(info.local, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(info.dev, Some(ul));
        assert_eq!(info.port, 4789);
        assert!(!info.learning);
        let d = ip(&["-d", "link", "show", "vx-4097"]);
        let data = &d[0]["linkinfo"]["info_data"];
        assert_eq!(data["id"], 4097);
        assert_eq!(data["learning"], false);
        assert!(nl
            .create_vxlan(&vxlan_192_0_2_1("vx-4097", 4097, ul))
            .unwrap_err()
            .is_exists());
        nl.set_up(vx.index).unwrap();
        nl.add_address(vx.index, "10.250.1.0".parse().unwrap(), 32, false)
            .unwrap();

        // Static state for one remote block: ARP, FDB, route (idempotent replaces).
        let peer_mac: Mac = [0x02, 0xaa, 0, 0, 0, 2];
        let peer_tun: IpAddr = "10.250.2.0".parse().unwrap();
        let vtep: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..2 {
            nl.replace_neigh(vx.index, peer_tun, peer_mac).unwrap();
            nl.replace_fdb(vx.index, peer_mac, vtep).unwrap();
        }
        let route = Route {
            dst: Some(("10.250.2.0".parse().unwrap(), 26)),
            gateway: Some(peer_tun),
            oif: Some(vx.index),
            onlink: true,
            ..Default::default()
        };
        nl.replace_route(&route).unwrap();
        nl.replace_route(&route).unwrap();

        let n = nl.neighbours(vx.index, Family::V4).unwrap();
        assert_eq!(n.len(), 1, "{n:?}");
        assert_eq!(
            (n[0].ip, n[0].mac, n[0].permanent),
            (Some(peer_tun), Some(peer_mac), true)
        );
        let f = nl.fdb(vx.index).unwrap();
        let f: Vec<_> = f.iter().filter(|e| e.mac == Some(peer_mac)).collect();
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].ip, f[0].permanent), (Some(vtep), true));
        let fdb = json("bridge", &["fdb", "show", "dev", "vx-4097"]);
        assert!(
            fdb.as_array()
                .unwrap()
                .iter()
                .any(|e| e["mac"] == mac_str(&peer_mac)
                    && e["dst"] == "192.0.2.2"
                    && e["flags"].as_array().unwrap().iter().any(|f| f == "self")),
            "{fdb}"
        );
        let rs: Vec<_> = nl
            .routes(Family::V4, Some(RT_TABLE_MAIN))
            .unwrap()
            .into_iter()
            .filter(|r| r.oif == Some(vx.index) && r.gateway.is_some())
            .collect();
        assert_eq!(rs.len(), 1);
        assert!(rs[0].onlink);
        assert_eq!(rs[0].dst, Some(("10.250.2.0".parse().unwrap(), 26)));
        let shown = ip(&["route", "show", "10.250.2.0/26"]);
        assert!(
            shown[0]["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "onlink"),
            "{shown}"
        );

        // Removal in reverse order; a second delete reports not-found.
        nl.del_route(&route).unwrap();
        nl.del_fdb(vx.index, peer_mac, Some(vtep)).unwrap();
        nl.del_neigh(vx.index, peer_tun).unwrap();
        assert!(nl.del_neigh(vx.index, peer_tun).unwrap_err().is_not_found());
        assert!(nl
            .del_fdb(vx.index, peer_mac, Some(vtep))
            .unwrap_err()
            .is_not_found());
        assert!(nl.neighbours(vx.index, Family::V4).unwrap().is_empty());
        assert!(nl
            .fdb(vx.index)
            .unwrap()
            .iter()
            .all(|e| e.mac != Some(peer_mac)));
    });
}
