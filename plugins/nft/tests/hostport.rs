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

/// One container on two networks that both publish its ports (podman `--network a,b -p`,
/// `podman network connect`): the second attachment's ADD, CHECK and DEL succeed and leave
/// the first one's mapping alone; a different container is still refused.
#[test]
fn a_second_attachment_of_the_same_container_shares_its_ports() {
    in_netns(|| {
        let mut h = HostPorts::new().unwrap();
        let opts = Options {
            snat: true,
            ..Default::default()
        };
        let (a, b, on_a, on_b) = two_attachments();
        h.add(a, &on_a, &opts).unwrap();
        h.add(b, &on_b, &opts).unwrap();
        h.add(b, &on_b, &opts).unwrap(); // idempotent
        let s = list();
        for want in [
            "tcp . 18080 comment \"neta ctr1 eth0\" : 10.213.1.2 . 80",
            "tcp . 18081 comment \"neta ctr1 eth0\" : 10.213.1.2 . 81",
            "tcp . 18082 comment \"netb ctr1 eth1\" : 10.214.1.2 . 82",
            "10.214.1.2 . 10.214.1.2 comment \"netb ctr1 eth1\"",
            "0.0.0.0 . tcp . 18080 . 10.214.1.2 comment \"netb ctr1 eth1\" : 80",
        ] {
            assert!(s.contains(want), "missing {want:?} in\n{s}");
        }
        assert!(!s.contains("10.214.1.2 . 80"), "b took a's port:\n{s}");
        h.check(a, &on_a, &opts).unwrap();
        h.check(b, &on_b, &opts).unwrap();
        let e = h
            .add(
                ("neta", "ctr2", "eth0"),
                &[m(6, None, 18080, "10.213.1.3", 80)],
                &opts,
            )
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("already published by neta/ctr1/eth0"),
            "{e}"
        );
        // b goes first (podman network disconnect): a keeps serving.
        h.del(b, Some(&on_b), None, &opts).unwrap();
        let s = list();
        assert!(s.contains("10.213.1.2 . 80") && !s.contains("18082"), "{s}");
        assert!(!s.contains("netb"), "b left elements:\n{s}");
        h.check(a, &on_a, &opts).unwrap();
        h.del(a, Some(&on_a), None, &opts).unwrap();
        assert!(h.list().unwrap().is_empty(), "{}", list());
    });
}

/// Container ctr1 on neta (eth0) and netb (eth1), both asked for 18080 and 18081; 18082
/// only on netb.
#[allow(clippy::type_complexity)]
fn two_attachments() -> (
    (&'static str, &'static str, &'static str),
    (&'static str, &'static str, &'static str),
    Vec<Mapping>,
    Vec<Mapping>,
) {
    (
        ("neta", "ctr1", "eth0"),
        ("netb", "ctr1", "eth1"),
        vec![
            m(6, None, 18080, "10.213.1.2", 80),
            m(6, Some("10.9.9.9"), 18081, "10.213.1.2", 81),
        ],
        vec![
            m(6, None, 18080, "10.214.1.2", 80),
            m(6, Some("10.9.9.9"), 18081, "10.214.1.2", 81),
            m(6, None, 18082, "10.214.1.2", 82),
        ],
    )
}

/// The holder goes first (`podman network disconnect` of the first network, or GC of its
/// attachment): the other attachment of the container takes the ports over, and then
/// removes them with its own DEL.
#[test]
fn the_standby_attachment_takes_over_when_the_holder_goes() {
    for by_gc in [false, true] {
        in_netns(move || {
            let mut h = HostPorts::new().unwrap();
            let opts = Options::default();
            let (a, b, on_a, on_b) = two_attachments();
            h.add(a, &on_a, &opts).unwrap();
            // A table made by a version without standby sets: b's ADD makes them.
            for set in ["standby4", "standby6"] {
                let st = std::process::Command::new("nft")
                    .args(["delete", "set", "inet", TABLE, set])
                    .status()
                    .unwrap();
                assert!(st.success());
            }
            h.add(b, &on_b, &opts).unwrap();
            if by_gc {
                let gone = h.gc("neta", &|_, _| false).unwrap();
                assert_eq!(gone, ["neta ctr1 eth0"]);
            } else {
                h.del(a, Some(&on_a), None, &opts).unwrap();
            }
            let s = list();
            for want in [
                "tcp . 18080 comment \"netb ctr1 eth1\" : 10.214.1.2 . 80",
                "10.9.9.9 . tcp . 18081 comment \"netb ctr1 eth1\" : 10.214.1.2 . 81",
                "tcp . 18082 comment \"netb ctr1 eth1\" : 10.214.1.2 . 82",
            ] {
                assert!(s.contains(want), "gc={by_gc}: missing {want:?} in\n{s}");
            }
            let left = h.list().unwrap();
            assert!(
                left.iter().all(|o| !o.set.starts_with("standby")
                    && o.element.comment.as_deref() == Some("netb ctr1 eth1")),
                "gc={by_gc}: {left:?}"
            );
            h.check(b, &on_b, &opts).unwrap();
            // Another container is refused by the new holder's name.
            let e = h
                .add(
                    ("netc", "ctr2", "eth0"),
                    &[m(6, None, 18080, "10.215.1.3", 80)],
                    &opts,
                )
                .unwrap_err();
            assert!(e.to_string().contains("netb/ctr1/eth1"), "{e}");
            h.del(b, Some(&on_b), None, &opts).unwrap();
            assert!(h.list().unwrap().is_empty(), "gc={by_gc}: {}", list());
        });
    }
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

fn lane(conds: &[&str], v6: bool) -> Option<cni_nft::hostport::Lane> {
    let conds: Vec<String> = conds.iter().map(|s| s.to_string()).collect();
    Some(
        cni_nft::conditions::parse(&conds, v6)
            .unwrap()
            .expect("conditions"),
    )
}

/// The lane chain whose jump in `dnat` carries `conds` (as `nft list` prints them).
fn lane_chain(listing: &str, conds: &str) -> String {
    let line = listing
        .lines()
        .find(|l| l.contains(conds) && l.contains("jump lane"))
        .unwrap_or_else(|| panic!("no jump for {conds:?} in\n{listing}"));
    let at = line.find("jump ").unwrap() + 5;
    line[at..].split_whitespace().next().unwrap().to_string()
}

/// `dnat` is a keyword of nft's language: only its JSON input can name that chain.
fn flush_dnat_chain() {
    use std::io::Write;
    let mut c = std::process::Command::new("nft")
        .args(["-j", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("exec nft");
    let flush = format!(
        r#"{{"nftables":[{{"flush":{{"chain":{{"family":"inet","table":"{TABLE}","name":"dnat"}}}}}}]}}"#
    );
    c.stdin.take().unwrap().write_all(flush.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success(), "nft -j flush chain dnat");
}

/// Every hand-made flush of the table or of one of its chains: CHECK fails, naming the
/// chain, for exactly the owners whose ports it unmapped, and the next ADD, by an owner
/// without conditions that has nothing to add, rebuilds the table as it was, every lane
/// (with its conditions) included.
#[test]
fn any_flush_is_repaired_with_every_lane() {
    in_netns(|| {
        let mut h = HostPorts::new().unwrap();
        let opts = [
            Options {
                snat: true,
                lane4: lane(&["-s", "10.1.0.0/16"], false),
                lane6: lane(&["ip6 saddr fd01::/64"], true),
                ..Default::default()
            },
            Options {
                lane4: lane(&["-i", "eth+", "!", "-d", "10.9.9.9"], false),
                ..Default::default()
            },
            Options {
                masq_all: true,
                ..Default::default()
            },
        ];
        let owners = [
            ("n1", "a", "eth0"),
            ("n2", "b", "eth0"),
            ("n3", "c", "eth0"),
        ];
        let maps = [
            vec![
                m(6, None, 18001, "10.213.1.2", 80),
                m(6, None, 18001, "fd00:213::2", 80),
            ],
            vec![m(17, Some("10.1.1.1"), 18002, "10.213.1.3", 53)],
            vec![m(6, None, 18003, "10.213.1.4", 80)],
        ];
        for i in 0..3 {
            h.add(owners[i], &maps[i], &opts[i]).unwrap();
        }
        let whole = list();
        let a4 = lane_chain(&whole, "ip saddr 10.1.0.0/16");
        let a6 = lane_chain(&whole, "ip6 saddr fd01::/64");
        let b4 = lane_chain(&whole, "iifname \"eth*\"");
        let all = [true, true, true];
        // (the chain flushed, `None` for the whole table; whose CHECK fails)
        let cases = [
            (None, all),
            (Some("dnat"), all),
            (Some("prerouting"), all),
            (Some("output"), all),
            (Some("postrouting"), all),
            (Some("forward"), all),
            (Some(a4.as_str()), [true, false, false]),
            (Some(a6.as_str()), [true, false, false]),
            (Some(b4.as_str()), [false, true, false]),
        ];
        for (flushed, concerned) in cases {
            let how = match flushed {
                None => {
                    nft(&["flush", "table", "inet", TABLE]);
                    "flush table".to_string()
                }
                Some("dnat") => {
                    flush_dnat_chain();
                    "flush chain dnat".to_string()
                }
                Some(c) => {
                    nft(&["flush", "chain", "inet", TABLE, c]);
                    format!("flush chain {c}")
                }
            };
            let chain = flushed.unwrap_or("dnat");
            assert_ne!(list(), whole, "`nft {how}` changed the table");
            for i in 0..3 {
                match (h.check(owners[i], &maps[i], &opts[i]), concerned[i]) {
                    (Err(e), true) => {
                        let e = e.to_string();
                        assert!(
                            e.contains(&format!("chain {chain} ")) && e.contains("the next ADD"),
                            "after `nft {how}`, CHECK of {i}: {e}"
                        );
                    }
                    (Ok(()), false) => {}
                    (r, _) => panic!("after `nft {how}`, CHECK of {i}: {r:?}"),
                }
            }
            // A repeated ADD of the owner without conditions: all its elements exist.
            h.add(owners[2], &maps[2], &opts[2]).unwrap();
            assert_eq!(list(), whole, "after `nft {how}` and one ADD");
            for i in 0..3 {
                h.check(owners[i], &maps[i], &opts[i])
                    .unwrap_or_else(|e| panic!("after `nft {how}` and one ADD, CHECK of {i}: {e}"));
            }
        }
        for i in 0..3 {
            h.del(owners[i], Some(&maps[i]), None, &opts[i]).unwrap();
        }
        assert!(h.list().unwrap().is_empty(), "{}", list());
    });
}

/// The handle of every chain (`nft -a`): a rebuilt chain gets a new one.
fn chain_handles() -> Vec<String> {
    nft(&["-a", "list", "table", "inet", TABLE])
        .lines()
        .filter(|l| l.trim_start().starts_with("chain "))
        .map(|l| l.trim().to_string())
        .collect()
}

/// A new lane in a whole table is added beside the others: nothing is rebuilt.
#[test]
fn a_new_lane_rebuilds_nothing() {
    in_netns(|| {
        let mut h = HostPorts::new().unwrap();
        let mut add_lane = |i: u8| {
            let opts = Options {
                lane4: lane(&["-s", &format!("10.{i}.0.0/16")], false),
                ..Default::default()
            };
            let maps = [m(6, None, 18000 + u16::from(i), "10.213.1.2", 80)];
            h.add(("n", &format!("c{i}"), "eth0"), &maps, &opts)
                .unwrap();
        };
        add_lane(1);
        let before = chain_handles();
        add_lane(2);
        let after = chain_handles();
        assert_eq!(after.len(), before.len() + 1, "{after:?}");
        assert_eq!(
            after[..before.len()],
            before[..],
            "the existing chains were kept"
        );
    });
}
