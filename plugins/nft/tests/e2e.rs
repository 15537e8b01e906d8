//! End to end: real packets through bridges, veths and our rules.
//!
//! Topology (all in private network namespaces):
//!
//! ```text
//!  c0a 10.88.0.2 ─┐
//!  c0b 10.88.0.3 ─┴ br0 10.88.0.1 ┐
//!  c1  10.99.0.2 ── br1 10.99.0.1 ┤ router (test thread) ── up0 192.168.50.1
//!                                                        outside 192.168.50.2
//! ```
//!
//! UDP datagrams are sent between namespaces; the receiver reports the
//! source address it saw (masqueraded or not), or nothing if dropped.

mod common;

use std::net::SocketAddr;

use cni_nft::forward::ensure_bridge_forwarding;
use cni_nft::masq::MasqSetup;
use common::*;

/// Creates a veth with one end `host_if` in the calling (router) thread's
/// netns and `eth0` in `c`, addressed `addr`, default route via `gw`.
fn attach(
    c: &NsThread,
    host_if: &str,
    master: Option<&str>,
    addr: &'static str,
    gw: Option<&'static str>,
) {
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() }.to_string();
    // Created inside `c`, peer moved to the router thread by its tid.
    let host_if_owned = host_if.to_string();
    c.run(move || {
        run(
            "ip",
            &[
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                &host_if_owned,
                "netns",
                &me,
            ],
        );
        run("ip", &["addr", "add", addr, "dev", "eth0"]);
        run("ip", &["link", "set", "eth0", "up"]);
        if let Some(gw) = gw {
            run("ip", &["route", "add", "default", "via", gw]);
        }
    });
    if let Some(br) = master {
        run("ip", &["link", "set", host_if, "master", br]);
    }
    run("ip", &["link", "set", host_if, "up"]);
}

/// Sends UDP from `from` to `dst` (bound in `to`); returns the source
/// address the receiver saw, or None if nothing arrived within 1s.
fn src(a: Option<SocketAddr>) -> Option<String> {
    a.map(|a| a.ip().to_string())
}

#[test]
fn masquerade_isolation_and_docker_forward_policy() {
    in_netns(|| {
        let (c0a, c0b, c1, outside) = (
            NsThread::new(),
            NsThread::new(),
            NsThread::new(),
            NsThread::new(),
        );
        run("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        for (br, addr) in [("br0", "10.88.0.1/24"), ("br1", "10.99.0.1/24")] {
            run("ip", &["link", "add", br, "type", "bridge"]);
            run("ip", &["addr", "add", addr, "dev", br]);
            run("ip", &["link", "set", br, "up"]);
        }
        attach(&c0a, "v0a", Some("br0"), "10.88.0.2/24", Some("10.88.0.1"));
        attach(&c0b, "v0b", Some("br0"), "10.88.0.3/24", Some("10.88.0.1"));
        attach(&c1, "v1", Some("br1"), "10.99.0.2/24", Some("10.99.0.1"));
        attach(&outside, "up0", None, "192.168.50.2/24", None);
        run("ip", &["addr", "add", "192.168.50.1/24", "dev", "up0"]);

        // No rules: routed with the container's own address.
        assert_eq!(
            src(udp(&c0a, &outside, "192.168.50.2:7001")).as_deref(),
            Some("10.88.0.2")
        );

        // Masquerade c0a's address.
        let mut m = MasqSetup::new().unwrap();
        m.add(
            "net0",
            "c0a",
            "eth0",
            &["10.88.0.2".parse().map(|ip| (ip, 24)).unwrap()],
        )
        .unwrap();
        assert_eq!(
            src(udp(&c0a, &outside, "192.168.50.2:7002")).as_deref(),
            Some("192.168.50.1")
        );
        // Same subnet (bridged): not masqueraded.
        assert_eq!(
            src(udp(&c0a, &c0b, "10.88.0.3:7003")).as_deref(),
            Some("10.88.0.2")
        );
        // c0b has no element: not masqueraded.
        assert_eq!(
            src(udp(&c0b, &outside, "192.168.50.2:7004")).as_deref(),
            Some("10.88.0.3")
        );
        // Other bridge, no isolation yet: reachable.
        assert!(udp(&c0a, &c1, "10.99.0.2:7005").is_some());

        // dockerd: FORWARD policy DROP (br_netfilter is on:
        // bridge-nf-call-iptables=1 in this kernel, per netns).
        run("iptables", &["-P", "FORWARD", "DROP"]);
        run("iptables", &["-N", "DOCKER-USER"]);
        run("iptables", &["-A", "FORWARD", "-j", "DOCKER-USER"]);
        let brnf = std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
            .unwrap_or_default();
        assert_eq!(
            udp(&c0a, &outside, "192.168.50.2:7006"),
            None,
            "DROP policy should block"
        );
        let same_bridge_blocked = udp(&c0a, &c0b, "10.88.0.3:7007").is_none();
        println!("bridge-nf-call-iptables={} same-bridge traffic blocked by DROP policy: {same_bridge_blocked}", brnf.trim());
        if brnf.trim() == "1" {
            assert!(
                same_bridge_blocked,
                "br_netfilter should send bridged traffic through FORWARD"
            );
        }

        ensure_bridge_forwarding("br0", true).unwrap();
        ensure_bridge_forwarding("br1", true).unwrap();
        assert_eq!(
            src(udp(&c0a, &outside, "192.168.50.2:7008")).as_deref(),
            Some("192.168.50.1")
        );
        assert_eq!(
            src(udp(&c0a, &c0b, "10.88.0.3:7009")).as_deref(),
            Some("10.88.0.2")
        );
        assert!(udp(&c1, &outside, "192.168.50.2:7010").is_some());
        // Isolation: br0 <-> br1 dropped in both directions.
        assert_eq!(udp(&c0a, &c1, "10.99.0.2:7011"), None);
        assert_eq!(udp(&c1, &c0b, "10.88.0.3:7012"), None);

        // DEL: back to the container's own address.
        m.del("net0", "c0a", "eth0", None).unwrap();
        assert_eq!(
            src(udp(&c0a, &outside, "192.168.50.2:7013")).as_deref(),
            Some("10.88.0.2")
        );
    });
}
