//! FORWARD helper against the real kernel, with a simulated dockerd
//! (iptables-nft FORWARD policy DROP + DOCKER-USER), each test in its own
//! netns.

mod common;

use cni_nft::forward::{ensure_bridge_forwarding, remove_bridge_forwarding};
use cni_nft::Family;
use common::*;

fn simulate_dockerd() {
    run("iptables", &["-P", "FORWARD", "DROP"]);
    run("iptables", &["-N", "DOCKER-USER"]);
    run("iptables", &["-A", "DOCKER-USER", "-j", "RETURN"]);
    run("iptables", &["-A", "FORWARD", "-j", "DOCKER-USER"]);
    run("ip6tables", &["-P", "FORWARD", "DROP"]);
    run("ip6tables", &["-N", "DOCKER-USER"]);
    run("ip6tables", &["-A", "FORWARD", "-j", "DOCKER-USER"]);
}

#[test]
fn without_docker_only_our_table() {
    in_netns(|| {
        let s = ensure_bridge_forwarding("br0", true).unwrap();
        assert!(s.changed);
        assert!(s.docker_user.is_empty());
        let s = ensure_bridge_forwarding("br0", true).unwrap();
        assert!(!s.changed);
        ensure_bridge_forwarding("br1", true).unwrap();
        let t = list_table();
        println!("{t}");
        assert!(t.contains("iifname @fwd_isolated oifname @fwd_isolated iifname . oifname != @fwd_isolated_self counter packets 0 bytes 0 drop"), "{t}");
        assert!(
            t.contains("elements = { \"br0\",") && t.contains("\"br1\" . \"br1\""),
            "{t}"
        );
        assert_eq!(rule_count(), 1);
        ensure_bridge_forwarding("br1", false).unwrap();
        assert!(!list_table().contains("\"br1\""));
        // No iptables tables were created.
        assert!(!nft(&["list", "tables"]).contains("filter"));
    });
}

#[test]
fn docker_user_rules_are_iptables_compatible_and_idempotent() {
    in_netns(|| {
        simulate_dockerd();
        let s = ensure_bridge_forwarding("br0", true).unwrap();
        assert_eq!(s.docker_user, vec![Family::Ip, Family::Ip6]);
        assert!(s.changed);
        let s = ensure_bridge_forwarding("br0", true).unwrap();
        assert!(!s.changed);
        let v4 = run("iptables", &["-S", "DOCKER-USER"]);
        println!("{v4}");
        assert_eq!(
            v4,
            "-N DOCKER-USER\n\
             -A DOCKER-USER -i br0 -m comment --comment \"cni-rs bridge br0\" -j ACCEPT\n\
             -A DOCKER-USER -o br0 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"cni-rs bridge br0\" -j ACCEPT\n\
             -A DOCKER-USER -j RETURN\n"
        );
        let v6 = run("ip6tables", &["-S", "DOCKER-USER"]);
        assert!(
            v6.contains(
                "-A DOCKER-USER -i br0 -m comment --comment \"cni-rs bridge br0\" -j ACCEPT"
            ),
            "{v6}"
        );
        // iptables itself can still edit the chain (dockerd does).
        run(
            "iptables",
            &[
                "-C",
                "DOCKER-USER",
                "-i",
                "br0",
                "-m",
                "comment",
                "--comment",
                "cni-rs bridge br0",
                "-j",
                "ACCEPT",
            ],
        );
        run(
            "iptables",
            &["-A", "DOCKER-USER", "-i", "x", "-j", "ACCEPT"],
        );
        // Removal.
        remove_bridge_forwarding("br0").unwrap();
        let v4 = run("iptables", &["-S", "DOCKER-USER"]);
        assert!(!v4.contains("br0"), "{v4}");
        assert!(!list_table().contains("\"br0\""));
    });
}

#[test]
fn concurrent_ensure_makes_no_duplicates() {
    in_netns(|| {
        simulate_dockerd();
        for r in concurrently(16, |i| {
            ensure_bridge_forwarding(&format!("br{}", i % 4), true)
        }) {
            r.expect("concurrent ensure failed");
        }
        let v4 = run("iptables", &["-S", "DOCKER-USER"]);
        assert_eq!(v4.lines().count(), 1 + 4 * 2 + 1, "{v4}");
        assert_eq!(rule_count(), 1, "{}", list_table());
    });
}
