//! The published-ports engine (`cni_nft::hostport`) against the real kernel,
//! each test in its own netns; `nft` reads back what was written.

mod common;

use cni_nft::forward::{ensure_dnat_accept, remove_dnat_accept};
use cni_nft::hostport::{HostPorts, Mapping, Options, TABLE};
use common::*;

fn list() -> String {
    let out = std::process::Command::new("nft")
        .args(["list", "table", "inet", TABLE])
        .output()
        .expect("exec nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn m(proto: u8, host_ip: Option<&str>, hp: u16, dest: &str, dp: u16) -> Mapping {
    Mapping {
        proto,
        host_ip: host_ip.map(|h| h.parse().unwrap()),
        host_port: hp,
        dest: dest.parse().unwrap(),
        dest_port: dp,
    }
}

#[test]
fn elements_render_in_nft_and_conflicts_name_the_holder() {
    in_netns(|| {
        let mut h = HostPorts::new().unwrap();
        let all = Options {
            snat: true,
            masq_all: true,
            ..Default::default()
        };
        let a = ("net1", "ctr1", "eth0");
        let maps = [
            m(6, None, 18080, "10.213.1.2", 80),
            m(6, None, 18080, "fd00:213::2", 80),
            m(17, Some("10.1.1.1"), 5353, "10.213.1.2", 53),
            m(132, Some("fd00::1"), 9000, "fd00:213::2", 90),
        ];
        h.add(a, &maps, &all).unwrap();
        h.add(a, &maps, &all).unwrap(); // idempotent
        let s = list();
        println!("{s}");
        for want in [
            "type inet_proto . inet_service",
            "tcp . 18080 comment \"net1 ctr1 eth0\"",
            "tcp . 18080 comment \"net1 ctr1 eth0\" : 10.213.1.2 . 80",
            "tcp . 18080 comment \"net1 ctr1 eth0\" : fd00:213::2 . 80",
            "10.1.1.1 . udp . 5353 comment \"net1 ctr1 eth0\" : 10.213.1.2 . 53",
            "fd00::1 . sctp . 9000 comment \"net1 ctr1 eth0\" : fd00:213::2 . 90",
            "10.213.1.2 . 10.213.1.2",
            "dnat ip to ip daddr . meta l4proto . th dport map @ip4",
            "dnat ip to meta l4proto . th dport map @any4",
            "dnat ip6 to ip6 daddr . meta l4proto . th dport map @ip6",
            "fib daddr type local jump dnat",
            "ct status dnat",
        ] {
            assert!(s.contains(want), "missing {want:?} in\n{s}");
        }
        let b = ("net1", "ctr2", "eth0");
        let e = h
            .add(
                b,
                &[
                    m(6, Some("10.9.9.9"), 18080, "10.213.1.3", 80),
                    m(6, None, 18081, "10.213.1.3", 80),
                ],
                &all,
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "host port 18080/tcp is already published by net1/ctr1/eth0; choose another host port or remove that container first"
        );
        assert_eq!(list(), s, "nothing half-made");
        // b's DEL after its failed ADD keeps a's mapping.
        h.del(b, Some(&[m(6, None, 18080, "10.213.1.3", 80)]), None, &all)
            .unwrap();
        h.check(a, &maps, &all).unwrap();
        h.del(
            a,
            Some(&maps),
            Some(&[
                "10.213.1.2".parse().unwrap(),
                "fd00:213::2".parse().unwrap(),
            ]),
            &all,
        )
        .unwrap();
        assert!(h.list().unwrap().is_empty(), "{}", list());
        h.del(a, Some(&maps), None, &all).unwrap();
        h.del(a, None, None, &all).unwrap();
    });
}

#[test]
fn internal_bridges() {
    in_netns(|| {
        let mut t = HostPorts::new().unwrap();
        assert!(t.internal_bridges().unwrap().is_empty());
        t.set_internal("cnm-br1", true).unwrap();
        t.set_internal("cnm-br1", true).unwrap();
        t.set_internal("cnm-br2", true).unwrap();
        let s = list();
        assert!(
            s.contains("iifname @internal iifname . oifname != @internal_self counter packets 0 bytes 0 drop"),
            "{s}"
        );
        let mut b = t.internal_bridges().unwrap();
        b.sort();
        assert_eq!(b, vec!["cnm-br1", "cnm-br2"]);
        t.set_internal("cnm-br1", false).unwrap();
        t.set_internal("cnm-br1", false).unwrap();
        assert_eq!(t.internal_bridges().unwrap(), vec!["cnm-br2"]);
    });
}

#[test]
fn docker_user_dnat_accept() {
    in_netns(|| {
        // Without DOCKER-USER nothing happens.
        ensure_dnat_accept("cnm-br1").unwrap();
        run("iptables", &["-N", "DOCKER-USER"]);
        run("iptables", &["-A", "DOCKER-USER", "-j", "RETURN"]);
        ensure_dnat_accept("cnm-br1").unwrap();
        ensure_dnat_accept("cnm-br1").unwrap();
        let s = run("iptables", &["-S", "DOCKER-USER"]);
        println!("{s}");
        assert_eq!(s.matches("--ctstate DNAT").count(), 1, "{s}");
        assert!(
            s.contains("-A DOCKER-USER -o cnm-br1 -m conntrack --ctstate DNAT -m comment --comment \"cnm-shim dnat cnm-br1\" -j ACCEPT"),
            "{s}"
        );
        remove_dnat_accept("cnm-br1").unwrap();
        remove_dnat_accept("cnm-br1").unwrap();
        let s = run("iptables", &["-S", "DOCKER-USER"]);
        assert!(!s.contains("DNAT"), "{s}");
    });
}
