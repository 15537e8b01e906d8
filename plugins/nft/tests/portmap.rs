//! Port mappings and internal isolation (`cni_nft::portmap`, used by cnm-shim)
//! against the real kernel, each test in its own netns; `nft` reads back what
//! was written.

mod common;

use cni_nft::portmap::{ensure_dnat_accept, remove_dnat_accept, Mapping, PortTable};
use common::*;

fn list(table: &str) -> String {
    let out = std::process::Command::new("nft")
        .args(["list", "table", "inet", table])
        .output()
        .expect("exec nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn mappings_replace_and_remove() {
    in_netns(|| {
        let mut t = PortTable::new("cnm_t1").unwrap();
        let m = |host_ip: Option<&str>, hp, dest: &str, dp| Mapping {
            proto: 6,
            host_ip: host_ip.map(|h| h.parse().unwrap()),
            host_port: hp,
            dest: dest.parse().unwrap(),
            dest_port: dp,
        };
        t.set_mappings(
            "ep1",
            &[
                m(None, 18080, "10.213.1.2", 80),
                m(Some("127.0.0.1"), 18081, "10.213.1.2", 81),
                m(None, 18080, "fd00:213::2", 80),
            ],
        )
        .unwrap();
        t.set_mappings(
            "ep2",
            &[Mapping {
                proto: 17,
                ..m(None, 5353, "10.213.1.3", 53)
            }],
        )
        .unwrap();
        let s = list("cnm_t1");
        println!("{s}");
        assert!(
            s.contains("meta nfproto ipv4 tcp dport 18080 counter packets 0 bytes 0 dnat ip to 10.213.1.2:80 comment \"ep1\""),
            "{s}"
        );
        assert!(s.contains("ip daddr 127.0.0.1 tcp dport 18081"), "{s}");
        assert!(s.contains("dnat ip6 to [fd00:213::2]:80"), "{s}");
        assert!(
            s.contains("udp dport 5353 counter packets 0 bytes 0 dnat ip to 10.213.1.3:53"),
            "{s}"
        );
        assert!(s.contains("fib daddr type local jump ports"), "{s}");
        assert!(s.contains("ip saddr 127.0.0.0/8 oifname != \"lo\""), "{s}");
        // Replace: only the new rule of ep1 remains.
        t.set_mappings("ep1", &[m(None, 19000, "10.213.1.2", 90)])
            .unwrap();
        let s = list("cnm_t1");
        assert!(!s.contains("18080") && s.contains("19000"), "{s}");
        assert_eq!(
            t.owners().unwrap(),
            vec!["ep1".to_string(), "ep2".to_string()]
        );
        t.remove("ep1").unwrap();
        t.remove("ep1").unwrap();
        t.remove("never").unwrap();
        assert_eq!(t.owners().unwrap(), vec!["ep2".to_string()]);
        t.delete().unwrap();
        t.delete().unwrap();
        assert!(!t.exists().unwrap());
    });
}

#[test]
fn internal_bridges() {
    in_netns(|| {
        let mut t = PortTable::new("cnm_t2").unwrap();
        assert!(t.internal_bridges().unwrap().is_empty());
        t.set_internal("cnm-br1", true).unwrap();
        t.set_internal("cnm-br1", true).unwrap();
        t.set_internal("cnm-br2", true).unwrap();
        let s = list("cnm_t2");
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
