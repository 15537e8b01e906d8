//! Assertions shared by `restart.rs` and `parallel.rs`: docker's view against the container's
//! real interface, the shim's state and host-local store against the live attachments, and
//! "nothing left" (links, reservations, state, nftables) once everything was removed.
#![allow(dead_code)]

use std::process::Output;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::{World, IMAGE};

/// Polls `f` until it holds or `secs` passed; returns its last value.
pub fn eventually(secs: u64, f: impl Fn() -> bool) -> bool {
    cni_tests::poll_until(Duration::from_secs(secs), f)
}

/// Joins a `docker_bg` thread, failing the test if the docker command hangs.
pub fn join_bg(w: &World, what: &str, h: JoinHandle<Output>, secs: u64) -> Output {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !h.is_finished() {
        assert!(
            Instant::now() < deadline,
            "{what}: docker still running after {secs} s (a call that never got an answer)\n{}",
            w.shim_log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    h.join().expect("docker thread")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

pub fn create_net(w: &World, name: &str, subnet: &str) {
    w.docker_ok(&w.net_create_args(name, &["--subnet", subnet]));
}

pub fn run_args<'a>(name: &'a str, net: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "-d",
        "--name",
        name,
        "--network",
        net,
        IMAGE,
        "sleep",
        "600",
    ]
}

pub fn run_sleeper(w: &World, name: &str, net: &str) {
    w.docker_ok(&run_args(name, net));
}

pub fn running(w: &World, c: &str) -> bool {
    let o = w.docker(&["inspect", "-f", "{{.State.Running}}", c]);
    String::from_utf8_lossy(&o.stdout).trim() == "true"
}

pub fn exists(w: &World, c: &str) -> bool {
    w.docker(&["inspect", "-f", "{{.Id}}", c]).status.success()
}

/// The IPv4 address docker reports for `c` on `net`, after checking that the container really
/// has it, with that MAC, on one of its interfaces. Returns the address (no prefix).
pub fn checked_ip(w: &World, c: &str, net: &str) -> String {
    let v = w.inspect(c);
    let n = &v["NetworkSettings"]["Networks"][net];
    let ip = n["IPAddress"].as_str().unwrap_or("").to_string();
    let len = &n["IPPrefixLen"];
    let mac = n["MacAddress"].as_str().unwrap_or("").to_string();
    assert!(!ip.is_empty(), "{c}: no address on {net} in docker inspect");
    let (ok, out) = w.exec(c, &["ip", "-o", "addr", "show"]);
    assert!(ok, "{c}: docker exec failed");
    let line = out
        .lines()
        .find(|l| l.contains(&format!(" {ip}/{len} ")))
        .unwrap_or_else(|| panic!("{c}: docker says {ip}/{len}, the container has:\n{out}"));
    let dev = line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':');
    let (_, real) = w.exec(c, &["cat", &format!("/sys/class/net/{dev}/address")]);
    assert_eq!(
        mac,
        real.trim(),
        "{c}/{dev}: MAC in docker inspect vs interface"
    );
    ip
}

/// Running containers attached to one of the shim's networks: (name, IPv4, network).
pub fn live_attachments(w: &World) -> Vec<(String, String, String)> {
    let ids = w.docker_ok(&["ps", "-q"]);
    let mut out = Vec::new();
    for id in ids.split_whitespace() {
        let v = w.inspect(id);
        let name = v["Name"].as_str().unwrap_or("").trim_start_matches('/');
        for (net, n) in v["NetworkSettings"]["Networks"]
            .as_object()
            .into_iter()
            .flatten()
        {
            if w.inspect(net)["Driver"].as_str() != Some(w.name.as_str()) {
                continue;
            }
            let ip = n["IPAddress"].as_str().unwrap_or("").to_string();
            out.push((name.to_string(), ip, net.clone()));
        }
    }
    out
}

fn endpoint_links(w: &World) -> Vec<String> {
    w.links()
        .into_iter()
        .filter(|l| l.len() == 15 && l.starts_with("cnm") && !l.starts_with("cnm-"))
        .collect()
}

fn n_endpoints(w: &World) -> usize {
    w.state()["endpoints"].as_object().map_or(0, |o| o.len())
}

/// The shim agrees with docker: the store holds exactly the running containers' addresses,
/// the state exactly one endpoint per attachment, no endpoint link lies in the host netns,
/// and every running container has the interface docker says and reaches its gateway.
pub fn check_consistent(w: &World, what: &str) {
    let live = live_attachments(w);
    let mut want: Vec<String> = live.iter().map(|(_, ip, _)| ip.clone()).collect();
    want.sort();
    // The shim converges within its unclaimed-reservation grace (20 s, swept every 2 s): a
    // RequestAddress whose reply a kill cut off holds its address until then.
    let ok = eventually(30, || {
        w.store() == want && n_endpoints(w) == live.len() && endpoint_links(w).is_empty()
    });
    assert!(
        ok,
        "{what}: shim disagrees with docker\n live attachments: {live:?}\n store: {:?}\n \
         endpoints in state: {}\n endpoint links: {:?}\n--- shim log ---\n{}",
        w.store(),
        n_endpoints(w),
        endpoint_links(w),
        w.shim_log_tail(60)
    );
    for (c, ip, net) in &live {
        assert_eq!(&checked_ip(w, c, net), ip);
        let gw = w.inspect(c)["NetworkSettings"]["Networks"][net]["Gateway"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(
            w.ping(c, &gw),
            "{what}: {c} ({ip}) cannot reach its gateway {gw}"
        );
    }
}

/// Nothing of the shim's is left: links, host-local reservations, state entries, nftables
/// (masquerade elements in `table inet cni_rs`, the shim's own port table, bridge names, and
/// any of `test_addrs`).
pub fn check_all_clean(w: &World, test_addrs: &[&str]) {
    let clean_links = || w.links().iter().all(|l| l == "lo" || l == "docker0");
    eventually(5, || clean_links() && w.store().is_empty());
    let links = w.links();
    assert!(clean_links(), "links left behind: {links:?}");
    assert!(w.store().is_empty(), "reservations left: {:?}", w.store());
    let st = w.state();
    for k in ["networks", "endpoints", "pools", "reservations"] {
        assert!(
            st[k].as_object().is_none_or(|o| o.is_empty()),
            "state still has {k}: {}",
            st[k]
        );
    }
    let rules = w.ruleset();
    let mut forbidden = vec!["cnm-".to_string(), format!("cnm_{}", w.name)];
    forbidden.extend(test_addrs.iter().map(|a| a.to_string()));
    for bad in forbidden {
        assert!(
            !rules.contains(&bad),
            "nftables still mention {bad:?}:\n{rules}"
        );
    }
}

/// Removes every container (with the shim up), then the given networks.
pub fn remove_all(w: &World, nets: &[&str]) {
    let ids = w.docker_ok(&["ps", "-aq"]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut a = vec!["rm", "-f"];
        a.extend_from_slice(&ids);
        w.docker_ok(&a);
    }
    for n in nets {
        w.docker_ok(&["network", "rm", n]);
    }
}
