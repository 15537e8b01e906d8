//! Benchmark: ADD and DEL latency of our `host-local` and the reference's, side by side, at
//! several numbers of live reservations, exactly as a runtime calls them (one process per call,
//! env + stdin). Prints p50/p95 per size and implementation and the ratio ref/ours.
//!
//! Usage: cni-bench-ipam --ours PATH [--ref PATH] [--sizes 10,1000,20000] [--iters N]
//!                       [--ref-iters-large N] [--netns PATH] [--workdir DIR]
//!
//! Each (size, implementation) gets its own fresh data directory on a /16, pre-populated with
//! `size` reservation files in the reference's format (`<id>\r\n<ifname>`) and a
//! `last_reserved_ip.0` pointing at the last of them. The first call of ours after that sees
//! files it did not write and rebuilds its index once; that one-off cost is reported apart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cni_tests::bench::{Better, Report};

struct Opts {
    ours: String,
    reference: Option<String>,
    sizes: Vec<usize>,
    iters: usize,
    ref_iters_large: usize,
    netns: Option<String>,
    workdir: PathBuf,
}

fn usage() -> ! {
    eprintln!(
        "usage: cni-bench-ipam --ours PATH [--ref PATH] [--sizes 10,1000,20000] [--iters N] \
         [--ref-iters-large N] [--netns PATH] [--workdir DIR]"
    );
    std::process::exit(2)
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        ours: String::new(),
        reference: None,
        sizes: vec![10, 1000, 20000],
        iters: 200,
        ref_iters_large: 30,
        netns: None,
        workdir: std::env::temp_dir(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--ours" => o.ours = val(),
            "--ref" => o.reference = Some(val()),
            "--sizes" => {
                o.sizes = val()
                    .split(',')
                    .map(|s| s.trim().parse().unwrap_or_else(|_| usage()))
                    .collect()
            }
            "--iters" => o.iters = val().parse().unwrap_or_else(|_| usage()),
            "--ref-iters-large" => o.ref_iters_large = val().parse().unwrap_or_else(|_| usage()),
            "--netns" => o.netns = Some(val()),
            "--workdir" => o.workdir = PathBuf::from(val()),
            _ => usage(),
        }
    }
    if o.ours.is_empty() || o.iters == 0 || o.sizes.iter().any(|&s| s > 60000) {
        usage();
    }
    o
}

/// A unique directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(root: &Path, tag: &str) -> Scratch {
        let p = root.join(format!("hl-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create scratch dir");
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A network namespace of our own, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("hl-bench-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "ip netns add {name} failed (needs root)");
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The i-th address after the gateway in 10.100.0.0/16.
fn addr(i: usize) -> String {
    let n = i + 2;
    format!("10.100.{}.{}", n / 256, n % 256)
}

fn populate(dir: &Path, size: usize) {
    let net = dir.join("bench");
    std::fs::create_dir_all(&net).expect("mkdir");
    for i in 0..size {
        std::fs::write(net.join(addr(i)), format!("pre{i}\r\neth0")).expect("write");
    }
    if size > 0 {
        std::fs::write(net.join("last_reserved_ip.0"), addr(size - 1)).expect("write");
    }
}

fn call(bin: &str, cmd: &str, id: &str, netns: &str, stdin: &str) -> Duration {
    let t0 = Instant::now();
    let mut child = Command::new(bin)
        .env_clear()
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output().expect("wait");
    let dt = t0.elapsed();
    if !out.status.success() {
        panic!(
            "{bin} {cmd} {id} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dt
}

#[derive(Clone, Copy)]
struct Stats {
    p50: f64,
    p95: f64,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Stats {
        p50: ms(v[v.len() / 2]),
        p95: ms(v[(v.len() * 95 / 100).min(v.len() - 1)]),
    }
}

struct Run {
    add: Stats,
    del: Stats,
    first: Duration,
}

/// One store of `size` pre-written reservations and the figures measured on it.
struct Store {
    scratch: Scratch,
    conf: String,
    size: usize,
    first: Duration,
    adds: Vec<Duration>,
    dels: Vec<Duration>,
}

impl Store {
    /// Writes the store, then makes the one-off first call (ours rebuilds its index there: the
    /// files were written by someone else).
    fn new(bin: &str, size: usize, netns: &str, root: &Path, tag: &str) -> Store {
        let scratch = Scratch::new(root, &format!("{tag}{size}"));
        populate(&scratch.0, size);
        let conf = format!(
            r#"{{"cniVersion":"1.0.0","name":"bench","type":"bridge","ipam":{{"type":"host-local","subnet":"10.100.0.0/16","dataDir":"{}"}}}}"#,
            scratch.0.display()
        );
        let first = call(bin, "ADD", "warm", netns, &conf);
        call(bin, "DEL", "warm", netns, &conf);
        Store {
            scratch,
            conf,
            size,
            first,
            adds: Vec::new(),
            dels: Vec::new(),
        }
    }

    /// One measured ADD/DEL pair.
    fn step(&mut self, bin: &str, k: usize, netns: &str) {
        let id = format!("b{k}");
        self.adds.push(call(bin, "ADD", &id, netns, &self.conf));
        self.dels.push(call(bin, "DEL", &id, netns, &self.conf));
    }

    /// The figures, after checking that exactly the pre-written reservations are left.
    fn finish(self, tag: &str) -> Run {
        let live = std::fs::read_dir(self.scratch.0.join("bench"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("10.")))
                    .count()
            })
            .unwrap_or(0);
        assert_eq!(live, self.size, "{tag}: reservations leaked or lost");
        Run {
            add: stats(self.adds),
            del: stats(self.dels),
            first: self.first,
        }
    }
}

/// `iters` ADD/DEL pairs on one store of `size` reservations.
fn bench(bin: &str, size: usize, iters: usize, netns: &str, root: &Path, tag: &str) -> Run {
    let mut store = Store::new(bin, size, netns, root, tag);
    for k in 0..iters {
        store.step(bin, k, netns);
    }
    store.finish(tag)
}

/// Ours at every size, interleaved: pair k runs on each store in turn (the order rotating), so
/// a machine that drifts during the run (page cache, other load) weighs on every size alike
/// and the sizes compare with each other, not with the moment they were measured.
fn bench_sizes(bin: &str, sizes: &[usize], iters: usize, netns: &str, root: &Path) -> Vec<Run> {
    let mut stores: Vec<Store> = sizes
        .iter()
        .map(|&size| Store::new(bin, size, netns, root, "ours"))
        .collect();
    let n = stores.len();
    for k in 0..iters {
        for j in 0..n {
            stores[(j + k) % n].step(bin, k, netns);
        }
    }
    stores.into_iter().map(|s| s.finish("ours")).collect()
}

fn main() {
    let o = parse_opts();
    let _own_ns;
    let netns = match &o.netns {
        Some(p) => p.clone(),
        None => {
            let ns = Netns::new();
            let p = format!("/run/netns/{}", ns.0);
            _own_ns = ns;
            p
        }
    };
    // Process start-up floor: the same spawn path, a call that does no work.
    let mut startup = Vec::new();
    for _ in 0..50 {
        let t0 = Instant::now();
        let st = Command::new(&o.ours)
            .env_clear()
            .env("CNI_COMMAND", "VERSION")
            .stdout(Stdio::null())
            .stdin(Stdio::null())
            .status()
            .expect("run ours");
        assert!(st.success());
        startup.push(t0.elapsed());
    }
    let s = stats(startup);
    println!(
        "startup floor (ours, VERSION, spawn+exit): p50 {:.3} ms  p95 {:.3} ms",
        s.p50, s.p95
    );
    println!();
    println!(
        "{:>7}  {:<5} {:>5}  {:>9} {:>9}  {:>9} {:>9}  {:>12}",
        "live", "impl", "iters", "ADD p50", "ADD p95", "DEL p50", "DEL p95", "first call"
    );
    let mut ok = true;
    let mut rep = Report::new(
        "host-local",
        serde_json::json!({"iterations": o.iters, "reference_iterations_large": o.ref_iters_large, "sizes": o.sizes}),
    );
    rep.row(
        "host-local",
        "exec floor p50",
        "ms",
        Better::Lower,
        s.p50,
        None,
    );
    let runs = bench_sizes(&o.ours, &o.sizes, o.iters, &netns, &o.workdir);
    for (&size, ours) in o.sizes.iter().zip(&runs) {
        let row = |name: &str, iters: usize, r: &Run| {
            println!(
                "{size:>7}  {name:<5} {iters:>5}  {:>6.3} ms {:>6.3} ms  {:>6.3} ms {:>6.3} ms  {:>9.3} ms",
                r.add.p50,
                r.add.p95,
                r.del.p50,
                r.del.p95,
                r.first.as_secs_f64() * 1e3
            )
        };
        row("ours", o.iters, ours);
        ok &= ours.add.p50 < 1.5 && ours.del.p50 < 1.5;
        let mut refrun = None;
        if let Some(reference) = &o.reference {
            let iters = if size >= 10000 {
                o.ref_iters_large.min(o.iters)
            } else {
                o.iters
            };
            let r = bench(reference, size, iters, &netns, &o.workdir, "ref");
            row("ref", iters, &r);
            println!(
                "{size:>7}  {:<5} {:>5}  {:>7.1}x {:>8.1}x  {:>7.1}x {:>8.1}x",
                "ratio",
                "",
                r.add.p50 / ours.add.p50,
                r.add.p95 / ours.add.p95,
                r.del.p50 / ours.del.p50,
                r.del.p95 / ours.del.p95
            );
            refrun = Some(r);
        }
        let group = format!("host-local, {size} reservations");
        for (metric, u, r) in [
            ("ADD p50", ours.add.p50, refrun.as_ref().map(|r| r.add.p50)),
            ("ADD p95", ours.add.p95, refrun.as_ref().map(|r| r.add.p95)),
            ("DEL p50", ours.del.p50, refrun.as_ref().map(|r| r.del.p50)),
            ("DEL p95", ours.del.p95, refrun.as_ref().map(|r| r.del.p95)),
        ] {
            let peer = r.map(|r| ("reference", r));
            rep.row(&group, metric, "ms", Better::Lower, u, peer);
        }
    }
    // Flatness: the largest store's p50 against the smallest's (measured interleaved).
    let (small, large) = (
        o.sizes.iter().zip(&runs).min_by_key(|(s, _)| **s),
        o.sizes.iter().zip(&runs).max_by_key(|(s, _)| **s),
    );
    if let (Some((&s0, r0)), Some((&s1, r1))) = (small, large) {
        if s1 > s0 {
            let (fa, fd) = (r1.add.p50 / r0.add.p50, r1.del.p50 / r0.del.p50);
            println!();
            println!(
                "flatness (ours p50 at {s1} / at {s0} reservations): ADD {fa:.2}x  DEL {fd:.2}x  (target <= 1.2x: {})",
                if fa <= 1.2 && fd <= 1.2 { "met" } else { "NOT met" }
            );
            rep.row(
                "host-local",
                &format!("ADD p50 at {s1} / at {s0}"),
                "x",
                Better::Lower,
                fa,
                None,
            );
            rep.row(
                "host-local",
                &format!("DEL p50 at {s1} / at {s0}"),
                "x",
                Better::Lower,
                fd,
                None,
            );
        }
    }
    rep.write();
    println!();
    println!(
        "target (ours ADD and DEL p50 < 1.5 ms at every size): {}",
        if ok { "met" } else { "NOT met" }
    );
}
