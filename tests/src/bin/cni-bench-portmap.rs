//! Benchmark of the chain bridge -> portmap, ours and the reference side by side in one run,
//! inside throwaway namespaces: ADD and DEL latency of the whole chain and of portmap alone
//! (p50, fork+exec included, as a runtime sees it), with 1 and with 1,000 mappings already
//! published on the node.
//!
//! Usage: cni-bench-portmap [--ours DIR] [--reference DIR] [--iterations N] [--node-mappings N]
//! `--ours` defaults to the directory of this executable (target/release when built with
//! `cargo build --release --workspace --bins`, as scripts/bench-portmap.sh does).

use std::path::Path;
use std::time::Instant;

use cni_tests::bench::{loadavg, ms, quantile, Better, Cli, Impls, Report, World};
use cni_tests::{with_prev_result, Netns, Reply};
use serde_json::{json, Value};

struct Opts {
    impls: Impls,
    iterations: usize,
    node_mappings: u16,
}

const CLI: Cli = Cli {
    prog: "cni-bench-portmap",
    synopsis: "[--ours DIR] [--reference DIR] [--iterations N] [--node-mappings N]",
};

fn opts() -> Opts {
    let mut o = Opts {
        impls: Impls::default(),
        iterations: 50,
        node_mappings: 1000,
    };
    CLI.parse(|a, val| {
        match a {
            "--iterations" => o.iterations = CLI.num(val(), "N"),
            "--node-mappings" => o.node_mappings = CLI.num(val(), "N"),
            _ => return o.impls.flag(a, val),
        }
        true
    });
    o
}

/// One implementation's world: bridge, host-local and portmap.
struct Bench {
    w: World,
    bridge: Value,
    label: &'static str,
}

fn ports(from: u16, n: u16) -> Value {
    json!((from..from + n)
        .map(|p| json!({"hostPort": p, "containerPort": 80, "protocol": "tcp"}))
        .collect::<Vec<_>>())
}

impl Bench {
    fn new(label: &'static str, dir: &Path) -> Bench {
        let w = World::new(&CLI, dir, &["bridge", "host-local", "portmap"], "bp");
        let bridge = w.bridge_conf("benchpm", "bpbr0");
        Bench { w, bridge, label }
    }

    fn call(&self, plugin: &str, cmd: &str, netns: &str, id: &str, conf: &Value) -> (f64, Reply) {
        let (d, r) = self.w.call(plugin, cmd, netns, id, conf);
        if !r.ok() {
            eprintln!(
                "{}: {plugin} {cmd} {id} failed: {} {}",
                self.label,
                r.stdout.trim(),
                r.stderr.trim()
            );
        }
        (ms(d), r)
    }

    fn pm_conf(&self, ports: Value) -> Value {
        json!({"cniVersion": "1.0.0", "name": "benchpm", "type": "portmap",
               "runtimeConfig": {"portMappings": ports}})
    }

    /// Publishes `n` mappings of a container that exists only in the prevResult (what the
    /// node already holds), returning the config to DEL them with.
    fn fill(&self, n: u16) -> Value {
        let prev = json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/none"}],
            "ips": [{"address": "10.88.200.5/16", "interface": 0}]});
        let conf = with_prev_result(&self.pm_conf(ports(20000, n)), &prev);
        let t = Instant::now();
        self.call("portmap", "ADD", "/var/run/netns/none", "filler", &conf);
        eprintln!(
            "{}: {n} mappings published in {:.0} ms",
            self.label,
            ms(t.elapsed())
        );
        conf
    }

    /// One chain ADD + DEL; returns (chain ADD, chain DEL, portmap ADD, portmap DEL) in ms.
    fn cycle(&self, i: usize) -> Option<[f64; 4]> {
        let ns = Netns::new("bpc");
        let id = format!("bench{i}");
        let (ba, r) = self.call("bridge", "ADD", ns.path_str(), &id, &self.bridge);
        if !r.ok() {
            return None;
        }
        let prev = r.json();
        let pm = with_prev_result(&self.pm_conf(ports(8080, 2)), &prev);
        let (pa, r) = self.call("portmap", "ADD", ns.path_str(), &id, &pm);
        let ok = r.ok();
        let (pd, _) = self.call("portmap", "DEL", ns.path_str(), &id, &pm);
        let (bd, _) = self.call(
            "bridge",
            "DEL",
            ns.path_str(),
            &id,
            &with_prev_result(&self.bridge, &prev),
        );
        ok.then_some([ba + pa, pd + bd, pa, pd])
    }

    fn measure(&self, iterations: usize) -> [f64; 4] {
        let mut cols: [Vec<f64>; 4] = Default::default();
        for i in 0..iterations {
            if let Some(v) = self.cycle(i) {
                for (c, x) in cols.iter_mut().zip(v) {
                    c.push(x);
                }
            }
        }
        cols.map(|c| quantile(&c, 0.5))
    }
}

fn run_one(label: &'static str, dir: &Path, o: &Opts) -> ([f64; 4], [f64; 4]) {
    let b = Bench::new(label, dir);
    b.cycle(usize::MAX); // warm-up: bridge, tables, chains
    let one = b.fill(1);
    let at1 = b.measure(o.iterations);
    b.call("portmap", "DEL", "/var/run/netns/none", "filler", &one);
    let many = b.fill(o.node_mappings);
    let at_n = b.measure(o.iterations);
    b.call("portmap", "DEL", "/var/run/netns/none", "filler", &many);
    (at1, at_n)
}

fn main() {
    let o = opts();
    let (ours1, ours_n) = run_one("ours", &o.impls.ours, &o);
    let (ref1, ref_n) = run_one("reference", &o.impls.reference, &o);
    println!(
        "bridge -> portmap (2 mappings per container), {} iterations, p50 in ms (load average {})",
        o.iterations,
        loadavg()
    );
    println!(
        "{:<44} {:>10} {:>10} {:>9}",
        "metric", "reference", "ours", "ref/ours"
    );
    let names = ["chain ADD", "chain DEL", "portmap ADD", "portmap DEL"];
    let mut rep = Report::new(
        "portmap",
        json!({"iterations": o.iterations, "node_mappings": o.node_mappings}),
    );
    for (set, r, u) in [
        ("1", &ref1, &ours1),
        (&o.node_mappings.to_string()[..], &ref_n, &ours_n),
    ] {
        for (k, name) in names.iter().enumerate() {
            println!(
                "{:<44} {:>10.2} {:>10.2} {:>8.1}x",
                format!("{name}, {set} mapping(s) on the node"),
                r[k],
                u[k],
                r[k] / u[k]
            );
            rep.row(
                &format!("portmap, {set} mapping(s) on the node"),
                &format!("{name} p50"),
                "ms",
                Better::Lower,
                u[k],
                Some(("reference", r[k])),
            );
        }
    }
    rep.write();
}
