//! containerd's own CNI caller against our plugins: `ctr run --rm --cni` (go-cni/libcni) with
//! only loopback, bridge, host-local and portmap in its bin dir. Two containers talk, a
//! published port answers from the host netns and from 127.0.0.1, and after both exited
//! nothing is left: no reservation, no nftables set element, no port on the bridge.
//!
//! Needs root, containerd 1.6 + ctr, runc, nsenter/unshare, nft and busybox; the binaries built
//! first (`cargo build --workspace --bins`).

use std::path::Path;

use cni_tests::containerd::Containerd;
use cni_tests::{bin, nft_set_elements, unique, Netns, TempDir};
use serde_json::{json, Value};

fn conflist(net: &str, bridge: &str, data_dir: &Path, ports: Option<Value>) -> Value {
    let mut plugins = vec![
        json!({"type": "loopback"}),
        json!({
            "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true,
            "ipam": {"type": "host-local", "dataDir": data_dir,
                     "ranges": [[{"subnet": "10.233.7.0/24"}]]}
        }),
    ];
    if let Some(p) = ports {
        // ctr has no -p: a literal runtimeConfig (no `capabilities`, so libcni leaves it).
        plugins.push(json!({"type": "portmap", "runtimeConfig": {"portMappings": p}}));
    }
    json!({"cniVersion": "1.0.0", "name": net, "plugins": plugins})
}

/// `nc` from the host netns; the reply line.
fn fetch(host: &Netns, addr: &str, port: u16) -> String {
    let out = host.exec(&["sh", "-c", &format!("echo | busybox nc -w 3 {addr} {port}")]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn ctr_run_cni_connectivity_ports_and_cleanup() {
    let t0 = std::time::Instant::now();
    let host = Netns::new("ctrh");
    let store = TempDir::new("ctrstore");
    let mut c = Containerd::start(&host, "ctr");
    c.install("bridge", &bin("bridge"));
    c.install("host-local", &bin("host-local"));
    c.install("loopback", &bin("loopback"));
    c.install("portmap", &bin("portmap"));
    let net = unique("ctrnet");
    let br = unique("ctrbr");
    let ports = json!([{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]);
    c.set_conflist(&conflist(&net, &br, store.path(), Some(ports)));
    let a = "srv";
    c.run(
        a,
        &[
            "sh",
            "-c",
            "while true; do echo hello-from-srv | nc -l -p 8080; done",
        ],
    );
    // The second container without the port mapping (the host port is taken).
    c.set_conflist(&conflist(&net, &br, store.path(), None));
    c.run("cli", &["sleep", "3600"]);
    let (ip_a, ip_b) = (c.ipv4(a), c.ipv4("cli"));
    assert_ne!(ip_a, ip_b);
    let (lo_ok, lo) = c.exec(a, &["ip", "-o", "addr", "show", "lo"]);
    assert!(lo_ok && lo.contains("127.0.0.1"), "loopback not up: {lo}");
    assert!(c.ping("cli", &ip_a), "cli cannot reach srv {ip_a}");
    assert!(c.ping(a, &ip_b), "srv cannot reach cli {ip_b}");
    assert!(c.ping(a, "10.233.7.1"), "srv cannot reach its gateway");
    let (ok, out) = c.exec("cli", &["sh", "-c", &format!("echo | nc -w 3 {ip_a} 8080")]);
    assert!(ok && out.contains("hello-from-srv"), "direct: {out}");
    // Published port: from the host netns (bridge address = a local address) and 127.0.0.1.
    assert_eq!(fetch(&host, "10.233.7.1", 18080), "hello-from-srv");
    assert_eq!(fetch(&host, "127.0.0.1", 18080), "hello-from-srv");
    let reserved = cni_tests::host_local_reservations(store.path(), &net);
    assert_eq!(
        reserved.iter().cloned().collect::<Vec<_>>(),
        {
            let mut v = vec![ip_a.clone(), ip_b.clone()];
            v.sort();
            v
        },
        "one reservation per container"
    );
    let ports_on_bridge = |h: &Netns| {
        h.sh(&["ip", "-o", "link", "show", "master", &br])
            .lines()
            .count()
    };
    assert_eq!(ports_on_bridge(&host), 2);

    c.stop(a);
    c.stop("cli");
    assert!(
        cni_tests::host_local_reservations(store.path(), &net).is_empty(),
        "reservations left: {:?}",
        cni_tests::host_local_reservations(store.path(), &net)
    );
    assert_eq!(ports_on_bridge(&host), 0, "ports left on {br}");
    let left: Vec<String> = nft_set_elements(&host.nft_ruleset())
        .into_iter()
        .filter(|e| e.contains(&net) || e.contains(&ip_a) || e.contains(&ip_b))
        .collect();
    assert!(left.is_empty(), "nftables elements left: {left:?}");
    let rules = host.sh(&["sh", "-c", "iptables-save 2>/dev/null; nft list ruleset"]);
    assert!(
        !rules.contains(&ip_a) && !rules.contains("18080"),
        "port mapping state left:\n{rules}"
    );
    eprintln!("ctr_run_cni: {:.1} s", t0.elapsed().as_secs_f64());
}
