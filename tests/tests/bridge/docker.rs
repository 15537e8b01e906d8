//! Our bridge on a host where dockerd runs: dockerd sets the FORWARD policy to DROP and
//! br_netfilter makes bridged traffic traverse it, yet containers on our bridge must still reach
//! each other, the gateway, and (with ipMasq) the outside.
//!
//! dockerd runs inside the test's throwaway host netns, entered with `nsenter --net` (not
//! `ip netns exec`, whose fresh /sys hides the cgroup mounts dockerd insists on) within a
//! private mount namespace (`unshare -m`), where a tmpfs hides the machine's
//! /run/containerd so dockerd starts its own containerd instead of sharing the host's. All its
//! files live in a temp dir; its mounts die with the mount namespace.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cni_tests::{wait_for, Daemon, Netns, TempDir};
use serde_json::json;

use crate::common::*;

fn start_dockerd(host: &Netns, dir: &TempDir) -> (Daemon, String) {
    assert!(
        Command::new("dockerd").arg("--version").output().is_ok(),
        "dockerd not installed: apt-get install -y docker.io (scripts/test.sh installs it)"
    );
    let d = dir.str();
    let sock = format!("unix://{d}/docker.sock");
    let script = format!(
        "if [ -d /run/containerd ]; then mount -t tmpfs tmpfs /run/containerd; fi; \
         exec dockerd --data-root {d}/data --exec-root {d}/exec --pidfile {d}/docker.pid \
         -H {sock} --iptables=true --storage-driver vfs"
    );
    let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "nsenter"])
        .arg(format!("--net={}", host.path_str()))
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let mut daemon = Daemon::spawn(cmd).expect("spawn dockerd");
    let log_path = dir.path().join("dockerd.log");
    let ready = || {
        Command::new("docker")
            .args(["-H", &sock, "info"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(
            daemon.alive() && Instant::now() < deadline,
            "dockerd did not come up:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    (daemon, sock)
}

#[test]
fn containers_talk_on_a_host_running_dockerd() {
    let fx = Fx::new();
    let dir = TempDir::new("tbdock");
    // A fresh host forwards nothing; dockerd then enables forwarding and sets the FORWARD
    // policy to DROP. (A new netns inherits ip_forward from the machine, so reset it.)
    fx.host.sh(&["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    // Declared after `fx` and `dir`: dropped (dockerd stopped) before they are removed.
    let (_dockerd, _sock) = start_dockerd(&fx.host, &dir);
    wait_for("FORWARD policy DROP", Duration::from_secs(30), || {
        fx.host
            .sh(&["iptables", "-w", "-S", "FORWARD"])
            .contains("-P FORWARD DROP")
    });
    assert_eq!(
        fx.host
            .sh(&["sysctl", "-n", "net.bridge.bridge-nf-call-iptables"])
            .trim(),
        "1"
    );

    // Control: a plain bridge nobody told dockerd about is cut off, so what follows shows our
    // plugin's doing, not a lenient environment.
    let ctl = format!("{}c", fx.br);
    fx.host.ip(&["link", "add", &ctl, "type", "bridge"]);
    fx.host.ip(&["link", "set", &ctl, "up"]);
    let ctl_ns: Vec<Netns> = (0..2).map(|_| Netns::new("tbk")).collect();
    for (i, ns) in ctl_ns.iter().enumerate() {
        let h = format!("{}k{i}", fx.br);
        fx.host.ip(&[
            "link", "add", &h, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        fx.host.ip(&["link", "set", &h, "master", &ctl, "up"]);
        ns.ip(&[
            "addr",
            "add",
            &format!("10.15.0.{}/24", i + 2),
            "dev",
            "eth0",
        ]);
        ns.ip(&["link", "set", "eth0", "up"]);
    }
    assert!(
        !ping_ok(&ctl_ns[0], "10.15.0.3", 2),
        "control bridge passes traffic: dockerd's FORWARD DROP is not in effect"
    );

    // "Outside": a netns behind a veth of the host, with no route back to the containers, so
    // only masqueraded traffic gets an answer.
    let outside = Netns::new("tbo");
    let up = format!("{}o", fx.br);
    fx.host.ip(&[
        "link",
        "add",
        &up,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &outside.name,
    ]);
    fx.host.ip(&["addr", "add", "192.0.2.1/24", "dev", &up]);
    fx.host
        .ip(&["addr", "add", "2001:db8:99::1/64", "dev", &up, "nodad"]);
    fx.host.ip(&["link", "set", &up, "up"]);
    outside.ip(&["addr", "add", "192.0.2.2/24", "dev", "eth0"]);
    outside.ip(&["addr", "add", "2001:db8:99::2/64", "dev", "eth0", "nodad"]);
    outside.ip(&["link", "set", "eth0", "up"]);

    let conf = fx.conf(
        "1.1.0",
        json!({"isDefaultGateway": true, "ipMasq": true}),
        json!({"ranges": ranges(&["10.14.0.0/24", "fd14::/64"])}),
    );
    let a = fx.attach(&conf);
    let b = fx.attach(&conf);
    for (from, to) in [(&a, &b), (&b, &a)] {
        for ip in to.ips() {
            assert!(ping_ok(&from.ctr, &ip, 3), "{} cannot reach {ip}", from.id);
        }
        for gw in ["10.14.0.1", "fd14::1"] {
            assert!(
                ping_ok(&from.ctr, gw, 3),
                "{} cannot reach gateway {gw}",
                from.id
            );
        }
        for out in ["192.0.2.2", "2001:db8:99::2"] {
            assert!(
                ping_ok(&from.ctr, out, 3),
                "{} cannot reach the outside {out}",
                from.id
            );
        }
    }
    fx.del(&a).expect_ok();
    fx.del(&b).expect_ok();
    assert!(fx.reservations().is_empty());
}
