//! Soak through docker: hundreds of `docker run --rm -p` on a cnm network, 8 at a time. Zero
//! failures, and nothing left once they are gone: no reservation, no endpoint in the shim's
//! state, no veth, no published-port or masquerade state mentioning the network's addresses.
//! Prints the rate, so CI logs show what a docker run costs end to end.

mod checks;
mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{World, IMAGE};

/// `HF_DOCKER_RUNS` overrides (a quick local run).
fn runs() -> u32 {
    std::env::var("HF_DOCKER_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

const PARALLEL: u16 = 8;
const SUBNET: &str = "10.214.0.0/24";

#[test]
fn hf_soak_docker_run_rm_publish_8_parallel() {
    common::require();
    let w = World::new("hfs");
    checks::create_net(&w, "hfsoak", SUBNET);
    let total = runs();
    let next = AtomicU32::new(0);
    let failures = Mutex::new(Vec::<String>::new());
    let times = Mutex::new(Vec::<Duration>::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..PARALLEL {
            let (w, next, failures, times) = (&w, &next, &failures, &times);
            s.spawn(move || {
                // One published port per thread: its runs follow each other.
                let publish = format!("{}:80", 24000 + t);
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    let t0 = Instant::now();
                    let out = w.docker(&[
                        "run",
                        "--rm",
                        "-p",
                        &publish,
                        "--network",
                        "hfsoak",
                        IMAGE,
                        "sleep",
                        "0",
                    ]);
                    if out.status.success() {
                        times.lock().unwrap().push(t0.elapsed());
                    } else {
                        let e = format!("run {n}: {}", checks::stderr(&out));
                        eprintln!("docker soak FAILURE: {e}");
                        failures.lock().unwrap().push(e);
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let failures = failures.lock().unwrap().clone();
    let times = times.lock().unwrap().clone();
    let tenths = cni_tests::tenths(&times);
    for (i, (p50, p90)) in tenths.iter().enumerate() {
        eprintln!("docker soak: tenth {}: p50 {p50:?} p90 {p90:?}", i + 1);
    }
    let ratio = cni_tests::drift(&tenths);
    let trend = cni_tests::trend_drift(&times);
    let mut sorted = times.clone();
    eprintln!(
        "docker soak: {} of {total} `docker run --rm -p` ({PARALLEL} parallel) in {elapsed:?}: {:.1} runs/s, p50 {:?} p90 {:?}, {} failures, last/first tenth p50 {ratio:.2}, along the trend {trend:.2}",
        times.len(),
        times.len() as f64 / elapsed.as_secs_f64(),
        cni_tests::percentile(&mut sorted, 50),
        cni_tests::percentile(&mut sorted, 90),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed runs: {failures:#?}\n{}",
        w.shim_log_tail(40)
    );
    // The last tenth within 1.2x of the first, read off the fitted trend: 50 runs a tenth
    // leave the tenths' own medians 10-20% apart from noise alone (0.88-1.17x measured here
    // on a flat run).
    assert!(
        trend <= 1.2,
        "docker run latency grows over the soak: {trend:.2}x along the trend (at most 1.2x)"
    );

    // Every container is gone (--rm): nothing of theirs may stay while the network exists.
    // Endpoint veths are `cnm` + 12 characters (the bridge is `cnm-...`).
    let stray = || -> Vec<String> {
        w.links()
            .into_iter()
            .filter(|l| l.len() == 15 && l.starts_with("cnm") && !l.starts_with("cnm-"))
            .collect()
    };
    checks::eventually(10, || stray().is_empty() && w.store().is_empty());
    assert!(stray().is_empty(), "veths left behind: {:?}", stray());
    assert!(w.store().is_empty(), "reservations left: {:?}", w.store());
    let eps = w.state()["endpoints"].as_object().map_or(0, |o| o.len());
    assert_eq!(eps, 0, "endpoints left in the shim's state");
    let rules = w.ruleset();
    let per_container: Vec<&str> = rules
        .lines()
        .filter(|l| l.contains("10.214.0.") && !l.contains(SUBNET))
        .collect();
    assert!(
        per_container.is_empty(),
        "nftables still hold per-container state of the network: {per_container:#?}\n{rules}"
    );
    for t in 0..PARALLEL {
        let port = (24000 + t).to_string();
        assert!(
            !rules.contains(&port),
            "nftables still publish port {port}:\n{rules}"
        );
    }
    w.docker_ok(&["network", "rm", "hfsoak"]);
    checks::check_all_clean(&w, &["10.214."]);
}
