//! Benchmark of cluster networks (cnm-agent + `cluster` plugin + kernel VXLAN), in one run on
//! one machine, everything in throwaway namespaces with its own etcd (the cluster test
//! harness, `cni_tests::cluster`), removed at the end, also on failure or Ctrl-C:
//!
//! 1. scale: N simulated hosts register one block each (claim txn on their own lease, written
//!    straight into etcd as an agent does); time until one real agent has programmed them all
//!    (3 kernel entries per remote block, checked by netlink dump), then the same for withdrawing
//!    them (deliberate release: key deleted while the lease lives);
//! 2. join convergence: a new host (netns + agent) starts; time until its first container
//!    accepts TCP connections from containers on every other host (p50/p90 over repetitions);
//! 3. ADD/DEL latency of the `cluster` plugin against our `bridge` + `host-local` with the same
//!    options on a single-host network, interleaved on the same host;
//! 4. TCP throughput (iperf3) container to container across hosts over VXLAN against host to
//!    host over the bare underlay.
//!
//! Prints a table and writes the figures as JSON.
//! Usage: cni-bench-cluster [--sim-hosts N] [--join-reps N] [--iterations N]
//!                          [--iperf-seconds S] [--iperf-rounds N] [--json FILE]
//!                          [--agent-arg FLAG]...   (extra cnm-agent flags, e.g. --no-guard)
//! The binaries it runs (cnm-agent, cluster, bridge, host-local) are taken from the directory
//! of this executable (scripts/bench-cluster.sh builds them in release mode).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cni_tests::bench::{loadavg, ms, quantile, Better, Report};
use cni_tests::cluster::{
    sim_hosts, wait_for, Cluster, Entries, HostNl, SPEC_N1, STEADY_TIMING, VX,
};
use cni_tests::{in_netns, interrupt, run, sh, Call, Daemon, Netns, TempDir};
use serde_json::{json, Value};

const PROBE_PORT: u16 = 7777;

struct Opts {
    sim_hosts: usize,
    join_reps: usize,
    iterations: usize,
    iperf_secs: u32,
    iperf_rounds: usize,
    json: PathBuf,
    /// Extra cnm-agent flags for every agent (e.g. --no-guard).
    agent_args: Vec<String>,
}

fn opts() -> Opts {
    let mut o = Opts {
        sim_hosts: 200,
        join_reps: 7,
        iterations: 40,
        iperf_secs: 5,
        iperf_rounds: 3,
        json: PathBuf::from("bench-cluster.json"),
        agent_args: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        let num = |v: String| -> usize { v.parse().unwrap_or_else(|_| usage("bad number")) };
        match a.as_str() {
            "--sim-hosts" => o.sim_hosts = num(val()),
            "--join-reps" => o.join_reps = num(val()),
            "--iterations" => o.iterations = num(val()),
            "--iperf-seconds" => o.iperf_secs = num(val()) as u32,
            "--iperf-rounds" => o.iperf_rounds = num(val()),
            "--json" => o.json = val().into(),
            "--agent-arg" => o.agent_args.push(val()),
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    if !(1..=512).contains(&o.sim_hosts) {
        usage("--sim-hosts must be 1..512 (one /26 each in 10.250.128.0/17)");
    }
    if o.join_reps == 0 || o.iterations == 0 || o.iperf_rounds == 0 || o.iperf_secs == 0 {
        usage("counts must be at least 1");
    }
    o
}

impl Opts {
    fn extra(&self) -> Vec<&str> {
        self.agent_args.iter().map(String::as_str).collect()
    }
}

fn usage(msg: &str) -> ! {
    eprintln!("cni-bench-cluster: {msg}");
    eprintln!(
        "usage: cni-bench-cluster [--sim-hosts N] [--join-reps N] [--iterations N] [--iperf-seconds S] [--iperf-rounds N] [--json FILE] [--agent-arg FLAG]..."
    );
    std::process::exit(2)
}

/// Polls every 5 ms until `f` holds; the time it took (panics after `timeout`).
fn poll(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        interrupt::check();
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    t0.elapsed()
}

// ---------------------------------------------------------------------------------------------
// Kernel state of a host's VXLAN link, read by netlink dump.
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// 1. Scale: N simulated hosts' blocks on one real agent.
// ---------------------------------------------------------------------------------------------

struct Scale {
    hosts: usize,
    write_s: f64,
    program_s: f64,
    entries: (usize, usize, usize),
    guard_vteps: usize,
    reconciles_add: usize,
    cpu_add_s: f64,
    delete_s: f64,
    remove_s: f64,
    reconciles_del: usize,
    cpu_del_s: f64,
    quarantined: usize,
}

/// CPU seconds (user + system) host i's agent has used so far.
fn agent_cpu(c: &mut Cluster, i: usize) -> f64 {
    let pid = c.hosts[i].agent.as_mut().expect("agent").child.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" closing the command name: state is field 3, utime 14, stime 15.
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let ticks = |k: usize| f.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

fn count_updates(c: &Cluster, i: usize) -> usize {
    c.agent_log(i).matches("data plane updated").count()
}

fn scale(o: &Opts) -> Scale {
    eprintln!("== scale: {} simulated hosts on one agent", o.sim_hosts);
    let mut c = Cluster::with_timing(1, SPEC_N1, &o.extra(), STEADY_TIMING);
    let mut etcd = c.etcd_http();
    let mut nl = HostNl::open(&c.hosts[0].ns);
    wait_for("vx link on h1", Duration::from_secs(10), || {
        nl.vx_index().is_some()
    });
    assert_eq!(nl.entries(), Entries::default(), "h1 has no peers yet");
    let sims = sim_hosts(o.sim_hosts, &mut etcd);
    let want = Entries {
        neigh: sims.iter().map(|s| (s.tunnel, s.mac)).collect(),
        fdb: sims.iter().map(|s| (s.mac, s.vtep)).collect(),
        routes: sims.iter().map(|s| (s.block, 26, s.tunnel)).collect(),
    };
    let updates0 = count_updates(&c, 0);
    let cpu0 = agent_cpu(&mut c, 0);

    let t0 = Instant::now();
    for s in &sims {
        assert!(
            etcd.create(&s.key, &s.value, s.lease),
            "claim of {} failed",
            s.key
        );
    }
    let write = t0.elapsed();
    poll(
        "the agent to program every simulated block",
        Duration::from_secs(120),
        || nl.entries() == want,
    );
    let program = t0.elapsed();
    let e = nl.entries();
    let entries = (e.neigh.len(), e.fdb.len(), e.routes.len());
    assert_eq!(
        entries,
        (o.sim_hosts, o.sim_hosts, o.sim_hosts),
        "3 entries per remote block"
    );
    // The VXLAN guard lists every simulated VTEP (the agent syncs it in the same reconcile).
    // (No such set with --agent-arg --no-guard: 0.)
    let set = c.hosts[0]
        .ns
        .exec(&["nft", "-j", "list", "set", "ip", "cnm_vxlan", "vteps_4097"]);
    let set = String::from_utf8_lossy(&set.stdout);
    let guard_vteps = sims
        .iter()
        .filter(|s| set.contains(&format!("\"{}\"", s.vtep)))
        .count();
    std::thread::sleep(Duration::from_millis(200));
    let updates1 = count_updates(&c, 0);
    let cpu1 = agent_cpu(&mut c, 0);

    let t0 = Instant::now();
    for s in &sims {
        assert!(etcd.delete(&s.key), "delete of {} failed", s.key);
    }
    let delete = t0.elapsed();
    poll(
        "the agent to remove every simulated block",
        Duration::from_secs(120),
        || nl.entries() == Entries::default(),
    );
    let remove = t0.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let updates2 = count_updates(&c, 0);
    let cpu2 = agent_cpu(&mut c, 0);
    for s in &sims {
        etcd.revoke(s.lease);
    }
    // A deliberate release (lease alive) must not quarantine anything.
    let quarantined = c.keys().iter().filter(|k| k.contains("/released/")).count();
    Scale {
        hosts: o.sim_hosts,
        write_s: write.as_secs_f64(),
        program_s: program.as_secs_f64(),
        entries,
        guard_vteps,
        reconciles_add: updates1 - updates0,
        cpu_add_s: cpu1 - cpu0,
        delete_s: delete.as_secs_f64(),
        remove_s: remove.as_secs_f64(),
        reconciles_del: updates2 - updates1,
        cpu_del_s: cpu2 - cpu1,
        quarantined,
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Join convergence.
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Join {
    block: Vec<f64>,
    add: Vec<f64>,
    routes: Vec<f64>,
    reach: Vec<f64>,
}

/// The host's blocks from its blocks.json, as (network, prefix).
fn host_blocks(c: &Cluster, i: usize) -> BTreeSet<(Ipv4Addr, u8)> {
    c.blocks(i)["blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| {
            let (ip, len) = b.as_str()?.split_once('/')?;
            Some((ip.parse().ok()?, len.parse().ok()?))
        })
        .collect()
}

/// Blocks until a TCP connection from inside `from` to `to` succeeds.
fn connect_from(from: &Netns, to: SocketAddr) {
    let path = from.path_str().to_string();
    in_netns(&path.clone(), move || {
        let t0 = Instant::now();
        loop {
            if TcpStream::connect_timeout(&to, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20) && !interrupt::interrupted(),
                "no TCP connection to {to} from {path}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

fn join(c: &mut Cluster, base: &[(usize, String)], o: &Opts) -> Join {
    eprintln!("== join convergence: {} repetitions", o.join_reps);
    let mut j = Join::default();
    for rep in 0..o.join_reps {
        let i = c.add_host(&format!("j{rep}"), &o.extra());
        let mut others: Vec<HostNl> = (0..i).map(|k| HostNl::open(&c.hosts[k].ns)).collect();
        let mut mine = HostNl::open(&c.hosts[i].ns);
        let t0 = Instant::now();
        c.start_agent(i);
        poll(
            "the new host's first block",
            Duration::from_secs(20),
            || !host_blocks(c, i).is_empty(),
        );
        j.block.push(ms(t0.elapsed()));
        let (k, ip) = c.add_container(i);
        j.add.push(ms(t0.elapsed()));
        // Every other host routes to the new blocks; the new host routes to every other block.
        let new_blocks = host_blocks(c, i);
        let old_blocks: BTreeSet<(Ipv4Addr, u8)> = (0..i).flat_map(|h| host_blocks(c, h)).collect();
        poll(
            "routes to and from the new host",
            Duration::from_secs(20),
            || {
                others
                    .iter_mut()
                    .all(|n| n.route_dsts().is_superset(&new_blocks))
                    && mine.route_dsts() == old_blocks
            },
        );
        j.routes.push(ms(t0.elapsed()));
        // TCP handshakes from a container on every other host (SYN there, SYN-ACK back).
        let addr: SocketAddr = (ip.parse::<Ipv4Addr>().expect("ip"), PROBE_PORT).into();
        let path = c.containers[k].path_str().to_string();
        let listener =
            in_netns(&path, move || TcpListener::bind(("0.0.0.0", PROBE_PORT))).expect("listen");
        std::thread::scope(|s| {
            for (b, _) in base {
                let from = &c.containers[*b];
                s.spawn(move || connect_from(from, addr));
            }
        });
        j.reach.push(ms(t0.elapsed()));
        drop(listener);
        eprintln!(
            "   rep {rep}: block {:.0} ms, ADD done {:.0} ms, routes {:.0} ms, reachable {:.0} ms",
            j.block[rep], j.add[rep], j.routes[rep], j.reach[rep]
        );
        // Leave: DEL the container, stop the agent (clean release), wait for the peers.
        drop(mine);
        let ns = c.containers.pop().expect("container");
        c.cni(i, "DEL", &ns.name, ns.path_str(), &c.conf(i))
            .expect_ok();
        drop(ns);
        c.remove_host(i);
        poll(
            "peers to withdraw the left host",
            Duration::from_secs(20),
            || {
                others
                    .iter_mut()
                    .all(|n| n.route_dsts().is_disjoint(&new_blocks))
            },
        );
    }
    j
}

// ---------------------------------------------------------------------------------------------
// 3. ADD/DEL latency: cluster plugin against bridge + host-local with the same options.
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Latency {
    cluster_add: Vec<f64>,
    single_add: Vec<f64>,
    cluster_del: Vec<f64>,
    single_del: Vec<f64>,
}

/// The bridge config the cluster plugin delegates on host 0, moved to 10.252.0.0/16 on its own
/// bridge: same keys, same range size, same MTU.
fn single_conf(c: &Cluster, data: &TempDir) -> String {
    let (base, len) = *host_blocks(c, 0).iter().next().expect("a block on h1");
    let size = 1u32 << (32 - len);
    let shift = |a: u32| Ipv4Addr::from((a & 0xff00_ffff) | (252 << 16));
    let b = u32::from(base);
    let mtu = c.hosts[0]
        .ns
        .link(VX)
        .and_then(|l| l["mtu"].as_u64())
        .unwrap_or(1450);
    json!({
        "cniVersion": "1.1.0",
        "name": "single",
        "type": "bridge",
        "bridge": "sbr0",
        "isGateway": true,
        "mtu": mtu,
        "ipam": {
            "type": "host-local",
            "dataDir": data.str(),
            "ranges": [[{
                "subnet": "10.252.0.0/16",
                "rangeStart": shift(b + 1).to_string(),
                "rangeEnd": shift(b + size - 2).to_string(),
                "gateway": "10.252.0.1",
            }]],
        },
    })
    .to_string()
}

fn latency(c: &Cluster, o: &Opts) -> Latency {
    eprintln!(
        "== ADD/DEL latency: {} interleaved pairs on h1",
        o.iterations
    );
    let data = TempDir::new("cbsingle");
    let single = single_conf(c, &data);
    let cluster = c.conf(0);
    let bridge = c.plugins.0.path().join("bridge");
    let call = |plugin: &str, cmd: &str, ns: &Netns| -> f64 {
        let conf = if plugin == "cluster" {
            &cluster
        } else {
            &single
        };
        let t = Instant::now();
        let r = if plugin == "cluster" {
            c.cni(0, cmd, &ns.name, ns.path_str(), conf)
        } else {
            run(
                &Call {
                    container_id: &ns.name,
                    netns: ns.path_str(),
                    ifname: "eth0",
                    cni_path: c.plugins.path(),
                    host: Some(&c.hosts[0].ns),
                    ..Call::new(&bridge, cmd)
                },
                conf,
            )
        };
        let d = ms(t.elapsed());
        r.expect_ok();
        d
    };
    // Warm-up: bridges, gateway addresses, sysctls exist before the timed calls.
    for p in ["cluster", "single"] {
        let ns = Netns::new("cbw");
        call(p, "ADD", &ns);
        call(p, "DEL", &ns);
    }
    let mut l = Latency::default();
    for it in 0..o.iterations {
        interrupt::check();
        let (a, b) = (Netns::new("cbc"), Netns::new("cbs"));
        // Alternate which goes first, so neither always runs right after netns creation.
        let order: [(&str, &Netns); 2] = if it % 2 == 0 {
            [("cluster", &a), ("single", &b)]
        } else {
            [("single", &b), ("cluster", &a)]
        };
        for (p, ns) in order {
            let d = call(p, "ADD", ns);
            (if p == "cluster" {
                &mut l.cluster_add
            } else {
                &mut l.single_add
            })
            .push(d);
        }
        for (p, ns) in order {
            let d = call(p, "DEL", ns);
            (if p == "cluster" {
                &mut l.cluster_del
            } else {
                &mut l.single_del
            })
            .push(d);
        }
    }
    l
}

// ---------------------------------------------------------------------------------------------
// 4. Throughput: VXLAN container to container against the bare underlay.
// ---------------------------------------------------------------------------------------------

/// One iperf3 TCP test from `client` to `server_ip` (an iperf3 server bound there in
/// `server`); received Gbit/s and sender retransmits.
fn iperf(server: &Netns, server_ip: &str, client: &Netns, secs: u32) -> (f64, u64) {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &server.name,
        "iperf3",
        "-s",
        "-1",
        "-B",
        server_ip,
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let _srv = Daemon::spawn(cmd).expect("spawn iperf3 server");
    let t0 = Instant::now();
    loop {
        interrupt::check();
        let out = client.exec(&["iperf3", "-c", server_ip, "-t", &secs.to_string(), "-J"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if let (true, Some(bps)) = (
            out.status.success(),
            v["end"]["sum_received"]["bits_per_second"].as_f64(),
        ) {
            let retr = v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
            return (bps / 1e9, retr);
        }
        // The server may not listen yet.
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "iperf3 to {server_ip} failed: {} {} {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[derive(Default)]
struct Throughput {
    vxlan: Vec<f64>,
    underlay: Vec<f64>,
    vxlan_retr: u64,
    underlay_retr: u64,
}

fn throughput(c: &Cluster, base: &[(usize, String)], o: &Opts) -> Throughput {
    eprintln!(
        "== throughput: {} rounds of {} s, underlay and VXLAN alternating",
        o.iperf_rounds, o.iperf_secs
    );
    let mut t = Throughput::default();
    let (a, _) = &base[0];
    let (b, ipb) = &base[1];
    for r in 0..o.iperf_rounds {
        for kind in if r % 2 == 0 {
            ["underlay", "vxlan"]
        } else {
            ["vxlan", "underlay"]
        } {
            if kind == "underlay" {
                let (g, n) = iperf(
                    &c.hosts[1].ns,
                    &c.hosts[1].ul_ip,
                    &c.hosts[0].ns,
                    o.iperf_secs,
                );
                t.underlay.push(g);
                t.underlay_retr += n;
            } else {
                let (g, n) = iperf(&c.containers[*b], ipb, &c.containers[*a], o.iperf_secs);
                t.vxlan.push(g);
                t.vxlan_retr += n;
            }
            eprintln!(
                "   round {r} {kind}: {:.2} Gbit/s",
                if kind == "underlay" {
                    t.underlay[r]
                } else {
                    t.vxlan[r]
                }
            );
        }
    }
    t
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn main() {
    interrupt::install();
    let o = opts();
    let load_before = loadavg();
    let t_all = Instant::now();
    let sc = scale(&o);

    let mut c = Cluster::with_timing(3, SPEC_N1, &o.extra(), STEADY_TIMING);
    c.converge();
    let base: Vec<(usize, String)> = (0..3).map(|h| c.add_container(h)).collect();
    let jn = join(&mut c, &base, &o);
    let lat = latency(&c, &o);
    let tp = throughput(&c, &base, &o);
    drop(c);
    let load_after = loadavg();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = sh(&["uname", "-r"]).trim().to_string();

    let r = |a: f64, b: f64| a / b;
    println!(
        "cluster benchmark: {cores} cores, kernel {kernel}, load average {load_before} (before) / {load_after} (after), {:.0} s",
        t_all.elapsed().as_secs_f64()
    );
    println!("{:<58} {:>12}", "scale: one agent, remote blocks", "");
    println!(
        "{:<58} {:>12}",
        "  simulated hosts (1 block + lease each)", sc.hosts
    );
    println!(
        "{:<58} {:>9.3} s",
        "  claim txns written (sequential)", sc.write_s
    );
    println!(
        "{:<58} {:>9.3} s",
        "  programmed (first write -> all entries)", sc.program_s
    );
    println!(
        "{:<58} {:>12}",
        "  kernel entries neigh/fdb/route",
        format!("{}/{}/{}", sc.entries.0, sc.entries.1, sc.entries.2)
    );
    println!("{:<58} {:>12}", "  guard set VTEPs", sc.guard_vteps);
    println!(
        "{:<58} {:>12}",
        "  reconciles (data plane updates) while adding", sc.reconciles_add
    );
    println!(
        "{:<58} {:>9.3} s",
        "  agent CPU time while adding", sc.cpu_add_s
    );
    println!(
        "{:<58} {:>9.3} s",
        "  keys deleted (sequential)", sc.delete_s
    );
    println!(
        "{:<58} {:>9.3} s",
        "  removed (first delete -> no entry left)", sc.remove_s
    );
    println!(
        "{:<58} {:>12}",
        "  reconciles while removing", sc.reconciles_del
    );
    println!(
        "{:<58} {:>9.3} s",
        "  agent CPU time while removing", sc.cpu_del_s
    );
    println!(
        "{:<58} {:>12}",
        "  quarantine markers after deliberate release", sc.quarantined
    );
    println!(
        "join convergence ({} reps, agent start -> TCP from every other host)",
        o.join_reps
    );
    for (name, v) in [
        ("  block leased (blocks.json)", &jn.block),
        ("  first container ADD done", &jn.add),
        ("  routes on every host", &jn.routes),
        ("  reachable from containers on all 3 hosts", &jn.reach),
    ] {
        println!(
            "{:<58} {:>6.0} / {:>4.0} ms (p50/p90)",
            name,
            quantile(v, 0.5),
            quantile(v, 0.9)
        );
    }
    println!(
        "ADD/DEL latency, {} interleaved pairs on one host     cluster   single  cluster/single",
        o.iterations
    );
    for (name, cl, si) in [
        ("  ADD", &lat.cluster_add, &lat.single_add),
        ("  DEL", &lat.cluster_del, &lat.single_del),
    ] {
        for (p, label) in [(0.5, "p50"), (0.95, "p95")] {
            println!(
                "{:<42} {:>7.2} ms {:>6.2} ms {:>8.2}x",
                format!("{name} {label}"),
                quantile(cl, p),
                quantile(si, p),
                r(quantile(cl, p), quantile(si, p))
            );
        }
    }
    let (vx, ul) = (mean(&tp.vxlan), mean(&tp.underlay));
    println!(
        "TCP throughput (iperf3, {} x {} s each)",
        o.iperf_rounds, o.iperf_secs
    );
    println!(
        "{:<42} {:>7.2} Gbit/s (retransmits {})",
        "  underlay host -> host", ul, tp.underlay_retr
    );
    println!(
        "{:<42} {:>7.2} Gbit/s (retransmits {})",
        "  VXLAN container -> container", vx, tp.vxlan_retr
    );
    println!("{:<42} {:>7.2}", "  ratio VXLAN/underlay", r(vx, ul));

    let dist = |v: &[f64]| json!({"p50": quantile(v, 0.5), "p90": quantile(v, 0.9), "p95": quantile(v, 0.95), "samples": v});
    let out = json!({
        "machine": {"cores": cores, "kernel": kernel, "loadavg_before": load_before, "loadavg_after": load_after},
        "duration_s": t_all.elapsed().as_secs_f64(),
        "scale": {
            "simulated_hosts": sc.hosts,
            "write_s": sc.write_s,
            "program_s": sc.program_s,
            "entries": {"neigh": sc.entries.0, "fdb": sc.entries.1, "route": sc.entries.2},
            "guard_vteps": sc.guard_vteps,
            "reconciles_add": sc.reconciles_add,
            "agent_cpu_add_s": sc.cpu_add_s,
            "delete_s": sc.delete_s,
            "remove_s": sc.remove_s,
            "reconciles_remove": sc.reconciles_del,
            "agent_cpu_remove_s": sc.cpu_del_s,
            "quarantine_markers": sc.quarantined,
        },
        "join_ms": {
            "repetitions": o.join_reps,
            "block_leased": dist(&jn.block),
            "first_add_done": dist(&jn.add),
            "routes_everywhere": dist(&jn.routes),
            "reachable": dist(&jn.reach),
        },
        "latency_ms": {
            "iterations": o.iterations,
            "cluster_add": dist(&lat.cluster_add),
            "single_add": dist(&lat.single_add),
            "cluster_del": dist(&lat.cluster_del),
            "single_del": dist(&lat.single_del),
            "add_p50_ratio": r(quantile(&lat.cluster_add, 0.5), quantile(&lat.single_add, 0.5)),
            "add_p95_ratio": r(quantile(&lat.cluster_add, 0.95), quantile(&lat.single_add, 0.95)),
        },
        "throughput_gbit_s": {
            "seconds_per_run": o.iperf_secs,
            "underlay": tp.underlay,
            "vxlan": tp.vxlan,
            "underlay_mean": ul,
            "vxlan_mean": vx,
            "ratio": r(vx, ul),
            "underlay_retransmits": tp.underlay_retr,
            "vxlan_retransmits": tp.vxlan_retr,
        },
    });
    let mut rep = Report::new(
        "cluster",
        json!({"simulated_hosts": sc.hosts, "join_reps": o.join_reps, "iterations": o.iterations,
               "iperf_seconds": o.iperf_secs, "iperf_rounds": o.iperf_rounds}),
    );
    let g = "cluster join convergence";
    rep.row(
        g,
        "block leased p50",
        "ms",
        Better::Lower,
        quantile(&jn.block, 0.5),
        None,
    );
    rep.row(
        g,
        "first ADD done p50",
        "ms",
        Better::Lower,
        quantile(&jn.add, 0.5),
        None,
    );
    rep.row(
        g,
        "routes on every host p50",
        "ms",
        Better::Lower,
        quantile(&jn.routes, 0.5),
        None,
    );
    rep.row(
        g,
        "reachable from all hosts p50",
        "ms",
        Better::Lower,
        quantile(&jn.reach, 0.5),
        None,
    );
    rep.row(
        g,
        "reachable from all hosts p90",
        "ms",
        Better::Lower,
        quantile(&jn.reach, 0.9),
        None,
    );
    let g = format!("cluster scale ({} simulated hosts)", sc.hosts);
    rep.row(
        &g,
        "all blocks programmed",
        "s",
        Better::Lower,
        sc.program_s,
        None,
    );
    rep.row(
        &g,
        "all blocks removed",
        "s",
        Better::Lower,
        sc.remove_s,
        None,
    );
    let g = "cluster plugin vs single-host bridge";
    let single = "bridge (single host)";
    for (name, cl, si) in [
        ("ADD", &lat.cluster_add, &lat.single_add),
        ("DEL", &lat.cluster_del, &lat.single_del),
    ] {
        for (p, label) in [(0.5, "p50"), (0.95, "p95")] {
            rep.row(
                g,
                &format!("{name} {label}"),
                "ms",
                Better::Lower,
                quantile(cl, p),
                Some((single, quantile(si, p))),
            );
        }
    }
    rep.row(
        "cross-host throughput",
        "TCP container to container (VXLAN)",
        "Gbit/s",
        Better::Higher,
        vx,
        Some(("host to host (underlay)", ul)),
    );
    rep.write();
    let mut out = out;
    out["rows"] = rep.to_json()["rows"].clone();
    std::fs::write(
        &o.json,
        serde_json::to_string_pretty(&out).expect("json") + "\n",
    )
    .unwrap_or_else(|e| panic!("write {}: {e}", o.json.display()));
    println!("figures written to {}", o.json.display());
}
