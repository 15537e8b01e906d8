//! podman on its CNI backend with only our plugins in `cni_plugin_dirs`: the conflists
//! `podman network create` writes (bridge, portmap, firewall, tuning; cniVersion 0.4.0), a
//! container on two networks publishing a port (each network's portmap is asked for it), a
//! static IP (`--ip`, the `ips` capability), `network disconnect`/`connect` (of the network
//! holding the port too: the other takes it over) and `restart` of a running container, a port conflict with another container, and nothing left after `rm`.
//!
//! Needs root, podman 4 (with conmon and runc), nsenter/unshare, nft and busybox; the binaries
//! built first (`cargo build --workspace --bins`).

use cni_tests::podman::Podman;
use std::time::Duration;

use cni_tests::{bin, host_local_reservations, nft_set_elements, poll_until, unique, Netns};
use serde_json::Value;

/// `nc` from the host netns; the reply line, retried for a few seconds while the container's
/// server (started with the container) is not listening yet.
fn fetch(host: &Netns, addr: &str, port: u16) -> String {
    let mut got = String::new();
    poll_until(Duration::from_secs(10), || {
        // podman's conmon listens on published host ports to reserve them: a port without
        // DNAT connects there and never answers, so the whole exchange is time-limited.
        let cmd = format!("echo | timeout 5 busybox nc -w 3 {addr} {port}");
        let out = host.exec(&["sh", "-c", &cmd]);
        got = String::from_utf8_lossy(&out.stdout).trim().to_string();
        !got.is_empty()
    });
    got
}

/// The published ports' claims as `nft` lists them (their comments name the holder).
fn nft_claims(host: &Netns) -> String {
    host.sh(&["nft", "list", "set", "inet", "cni_rs_ports", "claims"])
}

/// The bridge podman picked for `net`, from the conflist it wrote.
fn bridge_of(p: &Podman, net: &str) -> String {
    let conf: Value = serde_json::from_slice(
        &std::fs::read(p.conf_dir.join(format!("{net}.conflist"))).expect("podman's conflist"),
    )
    .expect("conflist is JSON");
    let types: Vec<&str> = conf["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .filter_map(|p| p["type"].as_str())
        .collect();
    assert_eq!(types, ["bridge", "portmap", "firewall", "tuning"], "{conf}");
    conf["plugins"][0]["bridge"]
        .as_str()
        .expect("bridge name")
        .to_string()
}

#[test]
fn podman_cni_backend_two_networks_ports_static_ip_and_cleanup() {
    let t0 = std::time::Instant::now();
    let host = Netns::new("podh");
    host.ip(&["link", "set", "lo", "up"]);
    let p = Podman::start(&host, "pd");
    for plugin in [
        "bridge",
        "host-local",
        "portmap",
        "firewall",
        "tuning",
        "loopback",
    ] {
        p.install(plugin, &bin(plugin));
    }
    let image = p.load_image();
    let (net_a, net_b) = (unique("pda"), unique("pdb"));
    p.ok(&["network", "create", "--subnet", "10.236.1.0/24", &net_a]);
    p.ok(&["network", "create", "--subnet", "10.236.2.0/24", &net_b]);
    let (br_a, br_b) = (bridge_of(&p, &net_a), bridge_of(&p, &net_b));

    // One container on both networks publishing one port: both portmaps are asked for it.
    let two_nets = format!("{net_a},{net_b}");
    let srv_cmd = [
        "sh",
        "-c",
        "while true; do echo hello-from-srv | nc -l -p 80; done",
    ];
    p.run_detached(
        "srv",
        &["--network", &two_nets, "-p", "18080:80"],
        &image,
        &srv_cmd,
    )
    .unwrap_or_else(|e| panic!("podman run on two networks with -p: {e}"));
    let (srv_a, srv_b) = (p.ip("srv", &net_a), p.ip("srv", &net_b));
    assert!(
        srv_a.starts_with("10.236.1.") && srv_b.starts_with("10.236.2."),
        "{srv_a} {srv_b}"
    );
    // A static address through runtimeConfig.ips.
    p.run_detached(
        "cli",
        &["--network", &net_a, "--ip", "10.236.1.50"],
        &image,
        &["sleep", "3600"],
    )
    .unwrap_or_else(|e| panic!("podman run --ip: {e}"));
    assert_eq!(p.ip("cli", &net_a), "10.236.1.50");

    let talk = |p: &Podman| {
        p.ok(&["exec", "cli", "ping", "-c", "1", "-W", "2", &srv_a]);
        let got = p.ok(&[
            "exec",
            "cli",
            "sh",
            "-c",
            &format!("echo | nc -w 3 {srv_a} 80"),
        ]);
        assert_eq!(got, "hello-from-srv");
    };
    talk(&p);
    assert_eq!(
        fetch(&host, "10.236.1.1", 18080),
        "hello-from-srv",
        "published port"
    );

    // Another container asking for the same host port is refused by name, and its attempt
    // leaves nothing behind.
    let err = p
        .run_detached(
            "thief",
            &["--network", &net_b, "-p", "18080:80"],
            &image,
            &["sleep", "60"],
        )
        .expect_err("a second holder of 18080 was accepted");
    assert!(err.contains("18080/tcp is already published by"), "{err}");
    let _ = p.podman(&["rm", "-f", "-t", "0", "thief"]);

    // A running container leaves and rejoins a network, then restarts (DEL + ADD of both).
    p.ok(&["network", "disconnect", &net_b, "srv"]);
    p.ok(&["network", "connect", &net_b, "srv"]);
    assert_eq!(
        fetch(&host, "10.236.1.1", 18080),
        "hello-from-srv",
        "after reconnect"
    );
    // The network whose attachment holds the port goes: the other one takes the port over.
    p.ok(&["network", "disconnect", &net_a, "srv"]);
    assert_eq!(
        fetch(&host, "10.236.1.1", 18080),
        "hello-from-srv",
        "after the holding network left"
    );
    let held_by = nft_claims(&host);
    assert!(
        held_by.contains(&net_b) && !held_by.contains(&net_a),
        "{held_by}"
    );
    p.ok(&["network", "connect", &net_a, "srv"]);
    p.ok(&["restart", "-t", "0", "srv"]);
    let srv_a2 = p.ip("srv", &net_a);
    assert_eq!(
        fetch(&host, "10.236.1.1", 18080),
        "hello-from-srv",
        "after restart ({srv_a} -> {srv_a2})"
    );

    // Where podman's host-local and libcni keep state (read before the removal, so the
    // checks after it cannot pass by looking in the wrong place).
    let data = p.inside("/var/lib/cni/networks");
    let srv_a2 = p.ip("srv", &net_a);
    let held = host_local_reservations(&data, &net_a);
    assert!(
        held.contains(&srv_a2) && held.contains("10.236.1.50"),
        "reservations of {net_a}: {held:?}"
    );
    let cache = || {
        std::fs::read_dir(p.inside("/var/lib/cni/results"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(cache().len(), 3, "libcni cache: {:?}", cache());

    p.ok(&["rm", "-f", "-t", "0", "srv", "cli"]);
    let mut left = Vec::new();
    for net in [&net_a, &net_b] {
        for ip in host_local_reservations(&data, net) {
            left.push(format!("reservation {ip} in {net}"));
        }
    }
    for br in [&br_a, &br_b] {
        let ports = host.ip_json(&["link", "show", "master", br]);
        for port in ports.as_array().into_iter().flatten() {
            left.push(format!("port {} on {br}", port["ifname"]));
        }
    }
    for e in nft_set_elements(&host.nft_ruleset()) {
        if e != br_a && e != br_b {
            left.push(format!("nftables element {e}"));
        }
    }
    left.extend(cache().into_iter().map(|f| format!("libcni cache {f}")));
    assert!(left.is_empty(), "left behind after podman rm: {left:#?}");
    p.ok(&["network", "rm", &net_a, &net_b]);
    eprintln!("podman: scenario took {:?}", t0.elapsed());
}

/// A pod: its infra container holds the netns and the published port, the app container
/// joins it; `pod stop` and `pod start` run DEL and ADD again, `pod rm` leaves nothing.
#[test]
fn podman_pod_publishes_through_its_infra_container() {
    let host = Netns::new("podp");
    host.ip(&["link", "set", "lo", "up"]);
    let p = Podman::start(&host, "pp");
    for plugin in ["bridge", "host-local", "portmap", "firewall", "tuning"] {
        p.install(plugin, &bin(plugin));
    }
    let image = p.load_image();
    // The infra image: busybox sleeping (no pause image offline).
    p.ok(&["create", "--name", "base", &image, "sleep", "3600"]);
    p.ok(&[
        "commit",
        "-q",
        "--change",
        "CMD [\"sleep\",\"3600\"]",
        "base",
        "localhost/cnitest/pause:latest",
    ]);
    p.ok(&["rm", "base"]);
    let net = unique("pdp");
    p.ok(&["network", "create", "--subnet", "10.236.7.0/24", &net]);
    let br = bridge_of(&p, &net);
    p.ok(&[
        "pod",
        "create",
        "--name",
        "pod1",
        "--network",
        &net,
        "-p",
        "18090:80",
        "--infra-image",
        "localhost/cnitest/pause:latest",
        "--cgroup-parent",
        &p.cgroup_parent(),
    ]);
    p.run_detached(
        "app",
        &["--pod", "pod1"],
        &image,
        &[
            "sh",
            "-c",
            "while true; do echo hello-from-pod | nc -l -p 80; done",
        ],
    )
    .unwrap_or_else(|e| panic!("podman run --pod: {e}"));
    assert_eq!(fetch(&host, "10.236.7.1", 18090), "hello-from-pod");
    p.ok(&["pod", "stop", "-t", "0", "pod1"]);
    p.ok(&["pod", "start", "pod1"]);
    assert_eq!(
        fetch(&host, "10.236.7.1", 18090),
        "hello-from-pod",
        "after pod stop and start"
    );
    let data = p.inside("/var/lib/cni/networks");
    assert_eq!(
        host_local_reservations(&data, &net).len(),
        1,
        "one address per pod"
    );
    p.ok(&["pod", "rm", "-f", "-t", "0", "pod1"]);
    let mut left: Vec<String> = host_local_reservations(&data, &net)
        .into_iter()
        .map(|ip| format!("reservation {ip}"))
        .collect();
    left.extend(
        nft_set_elements(&host.nft_ruleset())
            .into_iter()
            .filter(|e| *e != br)
            .map(|e| format!("nftables element {e}")),
    );
    let ports = host.ip_json(&["link", "show", "master", &br]);
    left.extend(
        ports
            .as_array()
            .into_iter()
            .flatten()
            .map(|port| format!("port {} on {br}", port["ifname"])),
    );
    assert!(left.is_empty(), "left behind after pod rm: {left:#?}");
    p.ok(&["network", "rm", &net]);
}
