//! Docker networks that span hosts (`-o cluster=<name>`) through cnm-shim + cnm-agent, no
//! swarm: an etcd netns and two netns "hosts" on an underlay (`cni_tests::cluster`), each
//! host running a real cnm-agent, containerd, dockerd and cnm-shim (the dockerds in private
//! mount namespaces, so both shims answer to the same plugin name). Needs root, docker.io,
//! etcd and etcdctl; `cargo build --workspace --bins` first.

mod common;

use std::time::{Duration, Instant};

use cni_tests::cluster::{wait_for, Cluster, NET, VNI};
use common::{World, IMAGE};

fn ip_of(w: &World, c: &str) -> String {
    let v = w.inspect(c);
    let n = v["NetworkSettings"]["Networks"]
        .as_object()
        .and_then(|m| m.values().next().cloned())
        .expect("one network");
    assert_eq!(n["Gateway"], "10.250.0.1", "anycast gateway in Join: {n}");
    n["IPAddress"].as_str().expect("IPAddress").to_string()
}

fn in_blocks(c: &Cluster, i: usize, ip: &str) -> bool {
    let ip: std::net::Ipv4Addr = ip.parse().unwrap();
    c.blocks(i)["blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|b| {
            b.as_str()
                .and_then(|b| b.parse::<ipnetwork::Ipv4Network>().ok())
                .is_some_and(|b| b.contains(ip))
        })
}

#[test]
fn docker_networks_across_hosts() {
    let t0 = Instant::now();
    let mut c = Cluster::new(2, "", &[]);
    let name = cni_tests::unique("cnmcl");
    let worlds: Vec<World> = (0..2)
        .map(|i| {
            let sock = c.hosts[i].run.path().join("agent.sock");
            wait_for("agent socket", Duration::from_secs(20), || sock.exists());
            let extra = ["--agent-socket".to_string(), sock.display().to_string()];
            World::on_host(&format!("cl{i}"), &name, c.hosts[i].ns.clone(), &extra)
        })
        .collect();
    eprintln!("setup: {:?}", t0.elapsed());
    let create = |w: &World, subnet: &str, vni: u32| {
        let vni = format!("cluster.vni={vni}");
        let cl = format!("cluster={NET}");
        w.docker(&w.net_create_args("cl", &["-o", &cl, "-o", &vni, "--subnet", subnet]))
    };
    let out = create(&worlds[0], "10.250.0.0/16", VNI);
    assert!(
        out.status.success(),
        "first create: {out:?}\n{}",
        worlds[0].shim_log_tail(30)
    );
    // Mismatches on the second host are refused, naming the field and both values.
    for (subnet, vni, want) in [
        (
            "10.251.0.0/16",
            VNI,
            "subnet: etcd has 10.250.0.0/16, this host wants 10.251.0.0/16",
        ),
        (
            "10.250.0.0/16",
            5000,
            "vni: etcd has 4097, this host wants 5000",
        ),
    ] {
        let out = create(&worlds[1], subnet, vni);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "mismatch {want:?}: {err}"
        );
    }
    assert!(worlds[1]
        .docker(&["network", "ls", "-q", "--filter", "name=^cl$"])
        .stdout
        .is_empty());
    let out = create(&worlds[1], "10.250.0.0/16", VNI);
    assert!(
        out.status.success(),
        "second create: {out:?}\n{}",
        worlds[1].shim_log_tail(30)
    );
    eprintln!("networks: {:?}", t0.elapsed());

    for w in &worlds {
        w.docker_ok(&[
            "run",
            "-d",
            "--name",
            "ca",
            "--network",
            "cl",
            IMAGE,
            "sleep",
            "600",
        ]);
    }
    let ips: Vec<String> = worlds.iter().map(|w| ip_of(w, "ca")).collect();
    for (i, ip) in ips.iter().enumerate() {
        assert!(
            in_blocks(&c, i, ip),
            "{ip} not in host {i}'s blocks: {}",
            c.blocks(i)
        );
    }
    // A CNI container of the same cluster network on host 0: same bridge, same store.
    let (_, cni_ip) = c.add_container(0);
    let br = format!("cnm-{VNI}");
    let ports = c.hosts[0].ns.ip(&["-o", "link", "show", "master", &br]);
    assert_eq!(
        ports.lines().count(),
        2,
        "docker + CNI container on {br}: {ports}"
    );
    let store = c.hosts[0].run.path().join(NET).join("ipam").join(NET);
    let held: Vec<String> =
        cni_tests::host_local_reservations(&c.hosts[0].run.path().join(NET).join("ipam"), NET)
            .into_iter()
            .collect();
    assert!(
        held.contains(&ips[0]) && held.contains(&cni_ip),
        "{held:?} in {}",
        store.display()
    );
    let conv = c.converge();
    eprintln!("converged after {conv:?}; containers {ips:?} + CNI {cni_ip}");
    let ping = |w: &World, ip: &str| {
        let ok = (0..3).any(|_| w.ping("ca", ip));
        assert!(ok, "ping {ip} from {}", w.name);
    };
    ping(&worlds[0], &ips[1]);
    ping(&worlds[1], &ips[0]);
    ping(&worlds[1], &cni_ip);
    ping(&worlds[0], &cni_ip);
    eprintln!("pings: {:?}", t0.elapsed());

    // --ip outside this host's blocks is refused by name.
    let other = {
        let b: ipnetwork::Ipv4Network = c.blocks(1)["blocks"][0].as_str().unwrap().parse().unwrap();
        b.nth(5).unwrap().to_string()
    };
    let out = worlds[0].docker(&[
        "run",
        "-d",
        "--name",
        "cx",
        "--network",
        "cl",
        "--ip",
        &other,
        IMAGE,
        "true",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not in this host's blocks"),
        "--ip {other}: {err}"
    );
    let _ = worlds[0].docker(&["rm", "-f", "cx"]);

    // Removal: containers, the CNI container, the networks; then the agents leave.
    let cni_ns = c.containers.remove(0);
    c.cni(0, "DEL", &cni_ns.name, cni_ns.path_str(), &c.conf(0))
        .expect_ok();
    drop(cni_ns);
    for w in &worlds {
        w.docker_ok(&["rm", "-f", "ca"]);
        w.docker_ok(&["network", "rm", "cl"]);
    }
    let vx = format!("vx-{VNI}");
    wait_for(
        "vx links gone after network rm",
        Duration::from_secs(10),
        || c.hosts.iter().all(|h| !h.ns.link_names().contains(&vx)),
    );
    wait_for("only the config key left", Duration::from_secs(10), || {
        c.keys() == [format!("/cnm/v1/nets/{NET}/config")]
    });
    assert!(
        cni_tests::host_local_reservations(&c.hosts[0].run.path().join(NET).join("ipam"), NET)
            .is_empty()
    );
    drop(worlds);
    for h in &mut c.hosts {
        h.agent = None;
    }
    for h in &c.hosts {
        assert!(
            !h.ns.link_names().iter().any(|l| l.starts_with("vx-")),
            "{:?}",
            h.ns.link_names()
        );
        assert!(!h.run.path().join("agent.sock").exists());
        let rules = h.ns.sh(&["nft", "list", "ruleset"]);
        assert!(
            !rules.contains(&vx),
            "forwarding rules for {vx} left:\n{rules}"
        );
    }
    assert_eq!(c.keys(), [format!("/cnm/v1/nets/{NET}/config")]);
    eprintln!("total: {:?}", t0.elapsed());
}
