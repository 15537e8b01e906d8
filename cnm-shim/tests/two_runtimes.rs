//! One network for two runtimes: containerd containers (`ctr run --cni`, libcni) and Docker
//! containers (dockerd + cnm-shim, `-o cni.network`) on the same CNI network (one conflist,
//! one bridge, one host-local store), all inside one throwaway host netns.
//!
//! Needs root, dockerd 20.10, containerd 1.6 + ctr, nsenter/unshare, busybox and the binaries
//! built first (`cargo build --workspace --bins`).

mod common;

use std::collections::BTreeSet;

use cni_tests::containerd::Containerd;
use cni_tests::{bin, unique, TempDir};
use common::{World, IMAGE};
use serde_json::json;

const SUBNET: &str = "10.234.9.0/24";
const GATEWAY: &str = "10.234.9.1";

fn reservations(store: &TempDir, net: &str) -> BTreeSet<String> {
    cni_tests::host_local_reservations(store.path(), net)
}

/// Every file of the store other than `lock` and `last_reserved_ip.*`.
fn other_files(store: &TempDir, net: &str) -> Vec<String> {
    std::fs::read_dir(store.path().join(net))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
        .collect()
}

fn ip_of(w: &World, c: &str, net: &str) -> String {
    w.inspect(c)["NetworkSettings"]["Networks"][net]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string()
}

fn drun(w: &World, name: &str, net: &str) {
    w.docker_ok(&split(&format!(
        "run -d --name {name} --network {net} {IMAGE} sleep 3600"
    )));
}

fn split(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

fn set(v: &[&String]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn docker_and_containerd_share_one_network() {
    let t0 = std::time::Instant::now();
    let mut w = World::without_shim("2rt");
    let mut c = Containerd::start(&w.ns, "2rt");
    c.install("bridge", &bin("bridge"));
    c.install("host-local", &bin("host-local"));
    c.install("loopback", &bin("loopback"));
    let store = TempDir::new("2rtstore");
    let net = unique("shared");
    let br = unique("br2rt");
    let conflist = json!({
        "cniVersion": "1.0.0", "name": net,
        "plugins": [
            {"type": "loopback"},
            {"type": "bridge", "bridge": br, "isGateway": true, "ipMasq": true, "mtu": 1400,
             "ipam": {"type": "host-local", "dataDir": store.path(),
                      "ranges": [[{"subnet": SUBNET}]]}}
        ]
    });
    c.set_conflist(&conflist);
    let file = c.conf_dir.join("10-test.conflist");
    let file = file.to_str().unwrap();
    w.shim_extra = vec!["--cni-conf-dir".into(), c.conf_dir.display().to_string()];
    w.start_shim();
    let d = w.name.clone();

    // containerd side first: it creates the bridge.
    c.run("c1", &["sleep", "3600"]);
    c.run("c2", &["sleep", "3600"]);
    let (ip_c1, ip_c2) = (c.ipv4("c1"), c.ipv4("c2"));

    // Refusals, each naming what to do.
    let create_err = |args: String| w.docker_err(&split(&format!("network create -d {d} {args}")));
    let bind = format!("--ipam-driver {d} --subnet {SUBNET} -o cni.network={net}");
    let e = create_err(format!("-o cni.network={net} x1"));
    assert!(
        e.contains(&format!("--ipam-driver {d} --subnet {SUBNET}")),
        "default IPAM not refused with the command: {e}"
    );
    let e = create_err(format!(
        "{bind} -o com.docker.network.bridge.name=otherbr x2"
    ));
    assert!(
        e.contains("otherbr") && e.contains(&br) && e.contains(file),
        "bridge contradiction: {e}"
    );
    let e = create_err(format!("{bind} -o mtu=1500 x3"));
    assert!(
        e.contains("1500") && e.contains("1400") && e.contains(file),
        "mtu: {e}"
    );
    let e = create_err(format!(
        "--ipam-driver {d} --ipam-opt cni.network={net} --subnet 10.234.10.0/24 x4"
    ));
    assert!(
        e.contains("10.234.10.0/24") && e.contains(SUBNET) && e.contains(file),
        "subnet contradiction: {e}"
    );
    let e = create_err(format!("{bind} --gateway 10.234.9.254 x5"));
    assert!(
        e.contains("10.234.9.254") && e.contains(GATEWAY),
        "gateway: {e}"
    );
    let e = create_err(format!(
        "--ipam-driver {d} --ipam-opt cni.network=nosuchnet x6"
    ));
    assert!(
        e.contains("nosuchnet") && e.contains(&net),
        "unknown network: {e}"
    );
    // Without --subnet dockerd refuses the pool the IPAM driver chose (the bridge routes it).
    let e = create_err(format!(
        "--ipam-driver {d} --ipam-opt cni.network={net} -o cni.network={net} x7"
    ));
    assert!(
        e.contains(&format!("--subnet {SUBNET}")),
        "no --subnet: {e}"
    );
    // Without -o cni.network the subnet is refused (it is the CNI network's).
    let e = create_err(format!("--ipam-driver {d} --subnet {SUBNET} x8"));
    assert!(
        e.contains(&format!("-o cni.network={net}")),
        "no -o cni.network: {e}"
    );
    assert_eq!(
        reservations(&store, &net),
        set(&[&ip_c1, &ip_c2]),
        "refusals touched the store"
    );

    // The minimal working command (a --subnet equal to the conflist's binds the pool).
    w.docker_ok(&split(&format!("network create -d {d} {bind} dn")));
    drun(&w, "d1", "dn");
    drun(&w, "d2", "dn");
    let (ip_d1, ip_d2) = (ip_of(&w, "d1", "dn"), ip_of(&w, "d2", "dn"));
    let all = set(&[&ip_c1, &ip_c2, &ip_d1, &ip_d2]);
    assert_eq!(all.len(), 4, "an address was handed out twice: {all:?}");
    assert_eq!(reservations(&store, &net), all);
    assert_eq!(
        other_files(&store, &net).len(),
        4,
        "{:?}",
        other_files(&store, &net)
    );
    // Same bridge, same options.
    let (_, mtu) = w.exec("d1", &["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(mtu.trim(), "1400");
    assert_eq!(
        w.inspect("d1")["NetworkSettings"]["Networks"]["dn"]["Gateway"],
        GATEWAY
    );
    let ports = w.ns.sh(&["ip", "-o", "link", "show", "master", &br]);
    assert_eq!(ports.lines().count(), 4, "{ports}");

    // Both ways, both runtimes.
    assert!(w.ping("d1", &ip_c1), "docker -> containerd");
    assert!(c.ping("c1", &ip_d1), "containerd -> docker");
    assert!(w.ping("d1", &ip_d2) && c.ping("c2", &ip_c1));

    // The shim restarts (reconciliation) with containerd's reservations in the shared store:
    // it must keep them and its own.
    w.kill9_shim();
    w.start_shim();
    assert_eq!(
        reservations(&store, &net),
        all,
        "reconcile changed the shared store"
    );
    // A new docker container after the restart gets a fifth address.
    drun(&w, "d3", "dn");
    let ip_d3 = ip_of(&w, "d3", "dn");
    assert!(!all.contains(&ip_d3));
    assert!(c.ping("c2", &ip_d3));

    // Docker side stops: containerd's reservations are intact, traffic still flows.
    for x in ["d1", "d2", "d3"] {
        w.docker_ok(&["rm", "-f", x]);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while reservations(&store, &net) != set(&[&ip_c1, &ip_c2])
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(reservations(&store, &net), set(&[&ip_c1, &ip_c2]));
    w.docker_ok(&["network", "rm", "dn"]);
    assert_eq!(reservations(&store, &net), set(&[&ip_c1, &ip_c2]));
    assert!(
        w.ns.link(&br).is_some(),
        "network rm deleted the shared bridge"
    );
    assert!(
        c.ping("c1", &ip_c2),
        "containerd traffic broken by the docker side"
    );
    // A second bind, with the explicit --ipam-opt form, while containerd still runs.
    w.docker_ok(&split(&format!(
        "network create -d {d} --ipam-driver {d} --ipam-opt cni.network={net} --subnet {SUBNET} -o cni.network={net} dn2"
    )));
    drun(&w, "d4", "dn2");
    let ip_d4 = w.inspect("d4")["NetworkSettings"]["Networks"]["dn2"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(w.ping("d4", &ip_c1));

    // containerd side stops while docker's container lives: docker's reservation is intact.
    c.stop("c1");
    c.stop("c2");
    assert_eq!(reservations(&store, &net), set(&[&ip_d4]));
    w.docker_ok(&["rm", "-f", "d4"]);
    w.docker_ok(&["network", "rm", "dn2"]);
    assert!(
        other_files(&store, &net).is_empty(),
        "store not empty: {:?}",
        other_files(&store, &net)
    );
    let ports = w.ns.sh(&["ip", "-o", "link", "show", "master", &br]);
    assert!(ports.trim().is_empty(), "ports left on {br}: {ports}");
    let left: Vec<String> = cni_tests::nft_set_elements(&w.ns.nft_ruleset())
        .into_iter()
        .filter(|e| e.contains(&net) || e.starts_with("10.234.9."))
        .collect();
    assert!(left.is_empty(), "nftables elements left: {left:?}");
    eprintln!("two runtimes: {:.1} s", t0.elapsed().as_secs_f64());
}
