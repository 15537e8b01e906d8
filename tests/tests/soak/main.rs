//! Soak: thousands of ADD/DEL cycles of bridge -> portmap over several networks, 16 in
//! parallel, through the libcni runner with our built binaries, each attachment publishing a
//! port. Zero failures, zero leaks at the end, and no slowdown: the median cycle time of the
//! last tenth stays within 1.2x of the first tenth's (every tenth is printed).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cni_tests::chain::{children_cpu, percentile, runtime_conf, settle, SuiteHost};
use cni_tests::{unique, Netns};

/// `HF_SOAK_CYCLES` overrides (a quick local run).
fn cycles() -> u32 {
    std::env::var("HF_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000)
}
const PARALLEL: usize = 16;
const NETWORKS: usize = 4;

#[test]
fn hf_soak_5000_add_del_cycles_16_parallel_4_networks() {
    let sh = Arc::new(SuiteHost::new("hfs"));
    let bridges: Vec<String> = (0..NETWORKS).map(|_| unique("hfsbr")).collect();
    let lists: Arc<Vec<_>> = Arc::new(
        bridges
            .iter()
            .enumerate()
            .map(|(i, br)| sh.bridge_portmap(&unique("hfsn"), br, &format!("10.90.{i}.0/24")))
            .collect(),
    );
    let cycles = cycles();
    let next = Arc::new(AtomicU32::new(0));
    // (completion order, cycle time)
    let times = Arc::new(Mutex::new(Vec::<Duration>::with_capacity(cycles as usize)));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let started = Instant::now();
    let cpu0 = children_cpu();
    let workers: Vec<_> = (0..PARALLEL)
        .map(|w| {
            let (sh, lists, next, times, failures) = (
                sh.clone(),
                lists.clone(),
                next.clone(),
                times.clone(),
                failures.clone(),
            );
            std::thread::spawn(move || {
                let cni = sh.cni();
                // One pod sandbox per worker, re-attached every cycle.
                let ns = Netns::new("hfsc");
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= cycles {
                        break;
                    }
                    let list = &lists[n as usize % NETWORKS];
                    let port = 23000 + w as u16;
                    let rt = runtime_conf(&ns, &format!("hfs-{w}-{n}"), Some(port));
                    let t = Instant::now();
                    let r = cni
                        .add_network_list(list, &rt)
                        .and_then(|_| cni.del_network_list(list, &rt));
                    let took = t.elapsed();
                    match r {
                        Ok(()) => times.lock().unwrap().push(took),
                        Err(e) => {
                            eprintln!("soak FAILURE: cycle {n}: {e}");
                            failures.lock().unwrap().push(format!("cycle {n}: {e}"));
                        }
                    }
                    // The veth goes in a detached process; the next ADD must not race it.
                    if !ns.link_gone_within("eth0", Duration::from_secs(5)) {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("cycle {n}: eth0 still in the sandbox after DEL"));
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("soak worker panicked");
    }
    let elapsed = started.elapsed();
    let cpu = children_cpu() - cpu0;
    let nets: Vec<&str> = lists.iter().map(|l| l.name.as_str()).collect();
    let brs: Vec<&str> = bridges.iter().map(String::as_str).collect();
    let left = settle(10, || sh.leftovers(&nets, &brs));
    let times = times.lock().unwrap().clone();
    let failures = failures.lock().unwrap().clone();
    let tenth = (times.len() / 10).max(1);
    let mut p50s = Vec::new();
    for (i, chunk) in times.chunks(tenth).take(10).enumerate() {
        let p50 = percentile(&mut chunk.to_vec(), 50);
        eprintln!(
            "soak: tenth {}: p50 {:?} p90 {:?}",
            i + 1,
            p50,
            percentile(&mut chunk.to_vec(), 90)
        );
        p50s.push(p50);
    }
    for l in &left {
        eprintln!("soak: LEFT BEHIND: {l}");
    }
    let ratio = p50s.last().unwrap().as_secs_f64() / p50s[0].as_secs_f64();
    eprintln!(
        "soak: {} ADD/DEL cycles ({PARALLEL} parallel, {NETWORKS} networks, bridge+portmap) in {elapsed:?} ({:.0}/s; plugin CPU {cpu:?}, {:?} per cycle): {} failures, {} leaks, last/first tenth p50 {ratio:.2}",
        times.len(),
        times.len() as f64 / elapsed.as_secs_f64(),
        cpu / times.len().max(1) as u32,
        failures.len(),
        left.len()
    );
    assert!(failures.is_empty(), "failures: {failures:#?}");
    assert!(left.is_empty(), "left behind: {left:#?}");
    assert!(
        ratio <= 1.2,
        "the last tenth's p50 is {ratio:.2}x the first's (at most 1.2x): something accumulates"
    );
}
