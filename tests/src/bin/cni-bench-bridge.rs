//! Benchmark of the bridge plugin, ours and the reference side by side in one run, each with
//! its own host-local and ipMasq, inside throwaway namespaces: sequential ADD and DEL latency
//! (p50/p95, as a runtime sees it: fork+exec of the plugin included; the two take turns in
//! rounds), then N ADDs with J in parallel (wall time, failures, duplicate IPs).
//!
//! Usage: cni-bench-bridge [--ours DIR] [--reference DIR] [--iterations N] [--parallel N]
//!                         [--jobs J] [--check-targets]
//! `--ours` defaults to the directory of this executable (target/release when built with
//! `cargo build --release --workspace --bins`, as scripts/bench-bridge.sh does).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cni_tests::bench::{loadavg, ms, percentile, Better, Cli, Impls, Report, World};
use cni_tests::{run, unique, with_prev_result, Call, Netns, Reply};
use serde_json::{json, Value};

struct Opts {
    impls: Impls,
    iterations: usize,
    parallel: usize,
    jobs: usize,
    check_targets: bool,
}

const CLI: Cli = Cli {
    prog: "cni-bench-bridge",
    synopsis:
        "[--ours DIR] [--reference DIR] [--iterations N] [--parallel N] [--jobs J] [--check-targets]",
};

fn opts() -> Opts {
    let mut o = Opts {
        impls: Impls::default(),
        iterations: 100,
        parallel: 40,
        jobs: 16,
        check_targets: false,
    };
    CLI.parse(|a, val| {
        match a {
            "--iterations" => o.iterations = CLI.num(val(), "N"),
            "--parallel" => o.parallel = CLI.num(val(), "N"),
            "--jobs" => o.jobs = CLI.num(val(), "J"),
            "--check-targets" => o.check_targets = true,
            _ => return o.impls.flag(a, val),
        }
        true
    });
    o
}

/// One implementation's world: bridge + host-local.
struct Bench {
    w: World,
    conf: Value,
}

impl Bench {
    fn new(dir: &Path) -> Bench {
        let w = World::new(&CLI, dir, &["bridge", "host-local"], "bb");
        let conf = w.bridge_conf("benchnet", "bbr0");
        Bench { w, conf }
    }

    fn call(&self, cmd: &str, ns: &Netns, id: &str, conf: &Value) -> (Duration, Reply) {
        self.w.call("bridge", cmd, ns.path_str(), id, conf)
    }

    fn add(&self, ns: &Netns, id: &str) -> (Duration, Result<Value, String>) {
        let (d, r) = self.call("ADD", ns, id, &self.conf);
        let res = if r.ok() {
            serde_json::from_str(&r.stdout).map_err(|e| e.to_string())
        } else {
            Err(format!("{} {}", r.stdout.trim(), r.stderr.trim()))
        };
        (d, res)
    }

    fn del(&self, ns: &Netns, id: &str, prev: &Value) -> (Duration, Result<(), String>) {
        let (d, r) = self.call("DEL", ns, id, &with_prev_result(&self.conf, prev));
        let res = if r.ok() {
            Ok(())
        } else {
            Err(format!("{} {}", r.stdout.trim(), r.stderr.trim()))
        };
        (d, res)
    }
}

#[derive(Default)]
struct Figures {
    /// p50 of a bare `VERSION` exec of the bridge binary: the process-spawn floor of every
    /// call on this machine, to read the other figures against.
    exec_p50: f64,
    add_p50: f64,
    add_p95: f64,
    del_p50: f64,
    del_p95: f64,
    par_wall: f64,
    par_failures: usize,
    par_dups: usize,
    seq_failures: usize,
}

/// Waits (up to 1 s) until no process named `bridge` runs: ours finishes a DEL in a detached
/// process (see the plugin's `reaper`), whose work must not land in the next ADD. Polls
/// without sleeping, so the next call does not start on a CPU waking from idle.
fn wait_plugins_gone() {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(1) && plugin_running("bridge") {
        std::thread::yield_now();
    }
}

fn plugin_running(comm: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten()
        .any(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == comm))
}

fn first_ip(r: &Value) -> Option<String> {
    r["ips"][0]["address"].as_str().map(str::to_string)
}

/// ADD/DELs per round of the sequential part: the two implementations take turns by rounds
/// (the one going first alternates too), so a slow spell of the machine hits both alike.
const ROUND: usize = 10;

/// p50 of a bare `VERSION` exec.
fn exec_floor(b: &Bench) -> f64 {
    let mut execs: Vec<f64> = (0..20)
        .map(|_| {
            let t = Instant::now();
            run(
                &Call::new(&b.w.dir.join("bridge"), "VERSION"),
                r#"{"cniVersion":"1.0.0"}"#,
            );
            ms(t.elapsed())
        })
        .collect();
    execs.sort_by(f64::total_cmp);
    percentile(&execs, 0.5)
}

/// Creates the bridge, gateway address and masquerade tables once.
fn warm_up(label: &str, b: &Bench) {
    let ns = Netns::new("bbc");
    match b.add(&ns, "warmup") {
        (_, Ok(r)) => {
            let _ = b.del(&ns, "warmup", &r);
        }
        (_, Err(e)) => eprintln!("{label}: warm-up ADD failed: {e}"),
    }
    wait_plugins_gone();
}

/// The sequential ADD/DEL latencies of one implementation.
#[derive(Default)]
struct Sequential {
    adds: Vec<f64>,
    dels: Vec<f64>,
    failures: usize,
}

impl Sequential {
    /// One ADD/DEL pair per netns of `nss` (numbered from `first`). Each pair runs on a quiet
    /// node: the container netns were made beforehand (the kernel tears a netns down in the
    /// background, which would land in the next ADD), and the next ADD waits until this DEL
    /// has really finished (ours finishes deleting the veth after DEL returns; that work must
    /// not hide in the next ADD either).
    fn round(&mut self, label: &str, b: &Bench, nss: &[Netns], first: usize) {
        for (k, ns) in nss.iter().enumerate() {
            let i = first + k;
            let id = format!("seq{i}");
            let (d, r) = b.add(ns, &id);
            match r {
                Ok(res) => {
                    self.adds.push(ms(d));
                    let (d, r) = b.del(ns, &id, &res);
                    match r {
                        Ok(()) => self.dels.push(ms(d)),
                        Err(e) => {
                            self.failures += 1;
                            eprintln!("{label}: DEL {i} failed: {e}");
                        }
                    }
                    wait_plugins_gone();
                }
                Err(e) => {
                    self.failures += 1;
                    eprintln!("{label}: ADD {i} failed: {e}");
                }
            }
        }
    }

    fn into_figures(mut self, f: &mut Figures) {
        self.adds.sort_by(f64::total_cmp);
        self.dels.sort_by(f64::total_cmp);
        (f.add_p50, f.add_p95) = (percentile(&self.adds, 0.5), percentile(&self.adds, 0.95));
        (f.del_p50, f.del_p95) = (percentile(&self.dels, 0.5), percentile(&self.dels, 0.95));
        f.seq_failures = self.failures;
    }
}

/// N ADDs, J at a time, each into its own (pre-created) container netns.
fn parallel(label: &str, b: &Bench, o: &Opts, f: &mut Figures) {
    let nss: Vec<Netns> = (0..o.parallel).map(|_| Netns::new("bbp")).collect();
    let ids: Vec<String> = (0..o.parallel).map(|_| unique("par")).collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Result<Value, String>)>> = Mutex::new(Vec::new());
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..o.jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= nss.len() {
                    break;
                }
                let (_, r) = b.add(&nss[i], &ids[i]);
                results.lock().expect("results lock").push((i, r));
            });
        }
    });
    f.par_wall = t.elapsed().as_secs_f64();
    let results = results.into_inner().expect("results lock");
    let mut seen = BTreeSet::new();
    for (i, r) in &results {
        match r {
            Ok(res) => match first_ip(res) {
                Some(ip) => {
                    if !seen.insert(ip) {
                        f.par_dups += 1;
                    }
                }
                None => f.par_failures += 1,
            },
            Err(e) => {
                f.par_failures += 1;
                eprintln!("{label}: parallel ADD {i} failed: {e}");
            }
        }
    }
    for (i, r) in &results {
        if let Ok(res) = r {
            let _ = b.del(&nss[*i], &ids[*i], res);
        }
    }
}

/// Everything for both implementations: exec floors, warm-ups, the sequential part in
/// alternating rounds, then the parallel part of each. Every part runs on a thread living in
/// the implementation's host netns, as a runtime calls plugins: no helper thread per call in
/// the figures.
fn measure(o: &Opts) -> (Figures, Figures) {
    let sides = [("ours", &o.impls.ours), ("reference", &o.impls.reference)].map(|(label, dir)| {
        eprintln!("== {label}: {}", dir.display());
        (label, Bench::new(dir))
    });
    let mut figs = [Figures::default(), Figures::default()];
    for ((label, b), f) in sides.iter().zip(figs.iter_mut()) {
        f.exec_p50 = b.w.inside(|| exec_floor(b));
        b.w.inside(|| warm_up(label, b));
    }
    let nss: [Vec<Netns>; 2] =
        [0, 1].map(|_| (0..o.iterations).map(|_| Netns::new("bbc")).collect());
    let mut seq = [Sequential::default(), Sequential::default()];
    for (r, first) in (0..o.iterations).step_by(ROUND).enumerate() {
        let range = first..(first + ROUND).min(o.iterations);
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (label, b) = &sides[side];
            let (seq, nss) = (&mut seq[side], &nss[side][range.clone()]);
            b.w.inside(|| seq.round(label, b, nss, first));
        }
    }
    drop(nss);
    for (s, f) in seq.into_iter().zip(figs.iter_mut()) {
        s.into_figures(f);
    }
    for ((label, b), f) in sides.iter().zip(figs.iter_mut()) {
        b.w.inside(|| parallel(label, b, o, f));
    }
    let [ours, reference] = figs;
    (ours, reference)
}

fn main() {
    let o = opts();
    let (ours, reference) = measure(&o);

    println!(
        "bridge + host-local + ipMasq, {} sequential ADD/DEL, {} ADDs {} in parallel (load average {})",
        o.iterations,
        o.parallel,
        o.jobs,
        loadavg()
    );
    println!(
        "{:<26} {:>12} {:>12} {:>10}   target (ours)",
        "metric", "reference", "ours", "ref/ours"
    );
    let mut missed = Vec::new();
    let mut row = |name: &str, unit: &str, r: f64, us: f64, target: Option<f64>| {
        let verdict = match target {
            Some(t) if us <= t => format!("<= {t} {unit}: ok"),
            Some(t) => {
                missed.push(name.to_string());
                format!("<= {t} {unit}: MISSED")
            }
            None => String::new(),
        };
        println!(
            "{:<26} {:>9.2} {unit:<2} {:>9.2} {unit:<2} {:>9.1}x   {verdict}",
            name,
            r,
            us,
            r / us
        );
    };
    row(
        "exec floor (VERSION) p50",
        "ms",
        reference.exec_p50,
        ours.exec_p50,
        None,
    );
    row("ADD p50", "ms", reference.add_p50, ours.add_p50, Some(3.0));
    row("ADD p95", "ms", reference.add_p95, ours.add_p95, None);
    row("DEL p50", "ms", reference.del_p50, ours.del_p50, Some(2.0));
    row("DEL p95", "ms", reference.del_p95, ours.del_p95, None);
    row(
        &format!("{} ADDs x{} wall", o.parallel, o.jobs),
        "s",
        reference.par_wall,
        ours.par_wall,
        Some(0.15),
    );
    println!(
        "{:<26} {:>12} {:>12}",
        "sequential failures", reference.seq_failures, ours.seq_failures
    );
    println!(
        "{:<26} {:>12} {:>12}",
        "parallel failures", reference.par_failures, ours.par_failures
    );
    println!(
        "{:<26} {:>12} {:>12}",
        "parallel duplicate IPs", reference.par_dups, ours.par_dups
    );
    let mut rep = Report::new(
        "bridge",
        json!({"iterations": o.iterations, "parallel": o.parallel, "jobs": o.jobs}),
    );
    let peer = |v: f64| Some(("reference", v));
    let g = "bridge + host-local + ipMasq";
    rep.row(
        g,
        "exec floor p50",
        "ms",
        Better::Lower,
        ours.exec_p50,
        peer(reference.exec_p50),
    );
    rep.row(
        g,
        "ADD p50",
        "ms",
        Better::Lower,
        ours.add_p50,
        peer(reference.add_p50),
    );
    rep.row(
        g,
        "ADD p95",
        "ms",
        Better::Lower,
        ours.add_p95,
        peer(reference.add_p95),
    );
    rep.row(
        g,
        "DEL p50",
        "ms",
        Better::Lower,
        ours.del_p50,
        peer(reference.del_p50),
    );
    rep.row(
        g,
        "DEL p95",
        "ms",
        Better::Lower,
        ours.del_p95,
        peer(reference.del_p95),
    );
    rep.row(
        "parallel ADD",
        &format!("{} ADDs x{} wall", o.parallel, o.jobs),
        "s",
        Better::Lower,
        ours.par_wall,
        peer(reference.par_wall),
    );
    rep.write();
    let broken = ours.seq_failures + ours.par_failures + ours.par_dups;
    if broken > 0 {
        eprintln!("ours: {broken} failures or duplicate IPs");
        std::process::exit(1);
    }
    if o.check_targets && !missed.is_empty() {
        eprintln!("ours missed targets: {}", missed.join(", "));
        std::process::exit(1);
    }
}
