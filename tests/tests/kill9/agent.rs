//! kill -9 of the cluster agent (cnm-agent) in the middle of a reconcile: 50 simulated remote
//! hosts' blocks appear (and others go) in etcd, the agent is killed while it programs them,
//! etcd changes again while it is down, and after its restart the kernel state of its VXLAN
//! link (permanent neighbours, FDB entries, onlink routes) converges to exactly the etcd state:
//! nothing missing, nothing stale.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cni_tests::chain::Rng;
use cni_tests::cluster::{
    sim_hosts, wait_for, Cluster, Entries, HostNl, SimHost, SPEC_N1, STEADY_TIMING,
};

const SIMS: usize = 400;
const BATCH: usize = 50;
const ROUNDS: usize = 8;

fn want(sims: &[SimHost], live: &BTreeSet<usize>) -> Entries {
    Entries {
        neigh: live
            .iter()
            .map(|&i| (sims[i].tunnel, sims[i].mac))
            .collect(),
        fdb: live.iter().map(|&i| (sims[i].mac, sims[i].vtep)).collect(),
        routes: live
            .iter()
            .map(|&i| (sims[i].block, 26, sims[i].tunnel))
            .collect(),
    }
}

/// Creates the `adds` and deletes the `dels` blocks in etcd.
fn write(c: &Cluster, sims: &[SimHost], adds: &[usize], dels: &[usize]) {
    let mut etcd = c.etcd_http();
    for &i in adds {
        assert!(
            etcd.create(&sims[i].key, &sims[i].value, sims[i].lease),
            "claim of {}",
            sims[i].key
        );
    }
    for &i in dels {
        assert!(etcd.delete(&sims[i].key), "delete of {}", sims[i].key);
    }
}

/// Picks `n` distinct members of `from` at random.
fn pick(rng: &mut Rng, from: &BTreeSet<usize>, n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = from.iter().copied().collect();
    let mut out = Vec::new();
    while out.len() < n && !v.is_empty() {
        out.push(v.swap_remove(rng.below(v.len() as u64) as usize));
    }
    out
}

#[test]
fn hf_kill9_agent_mid_reconcile_converges_to_etcd() {
    let seed = Rng::seed();
    let mut rng = Rng::new(seed);
    let mut c = Cluster::with_timing(1, SPEC_N1, &[], STEADY_TIMING);
    let mut nl = HostNl::open(&c.hosts[0].ns);
    wait_for("the VXLAN link on h1", Duration::from_secs(20), || {
        nl.vx_index().is_some()
    });
    let sims = sim_hosts(SIMS, &mut c.etcd_http());
    let all: BTreeSet<usize> = (0..SIMS).collect();
    let mut live = BTreeSet::new();

    // Round 0 without a kill: how long 50 blocks take from the first write to programmed.
    let adds = pick(&mut rng, &all, BATCH);
    let t0 = Instant::now();
    write(&c, &sims, &adds, &[]);
    live.extend(adds);
    let goal = want(&sims, &live);
    wait_for("50 blocks programmed", Duration::from_secs(60), || {
        nl.entries() == goal
    });
    let programming = t0.elapsed();
    eprintln!("kill9 agent: seed {seed}; 50 blocks written and programmed in {programming:?}");

    let mut mid = 0;
    for round in 1..=ROUNDS {
        let before = nl.entries();
        let free: BTreeSet<usize> = all.difference(&live).copied().collect();
        let adds = pick(&mut rng, &free, BATCH);
        let dels = pick(&mut rng, &live, BATCH * 4 / 5);
        // The writes run while the delay runs: the kill lands somewhere in writing+programming.
        let delay = rng.duration(programming);
        let mut d = c.hosts[0].agent.take().expect("agent running");
        let (killed_at, at_kill) = std::thread::scope(|s| {
            let writer = s.spawn(|| write(&c, &sims, &adds, &dels));
            std::thread::sleep(delay);
            d.grace = Duration::ZERO;
            // SAFETY: kill(2) of our own child process (the agent; `ip netns exec` execs it).
            unsafe { libc::kill(d.child.id() as i32, libc::SIGKILL) };
            let _ = d.child.wait();
            let at_kill = nl.entries();
            writer.join().expect("etcd writer");
            (delay, at_kill)
        });
        drop(d);
        for i in &dels {
            live.remove(i);
        }
        live.extend(adds.iter().copied());
        let after = want(&sims, &live);
        let partial = at_kill != before && at_kill != after;
        if partial {
            mid += 1;
        }
        // etcd changes while the agent is down: its restart must notice both directions.
        let free: BTreeSet<usize> = all.difference(&live).copied().collect();
        let adds2 = pick(&mut rng, &free, 5);
        let dels2 = pick(&mut rng, &live, 5);
        write(&c, &sims, &adds2, &dels2);
        for i in &dels2 {
            live.remove(i);
        }
        live.extend(adds2);
        let goal = want(&sims, &live);
        c.start_agent(0);
        let t = Instant::now();
        let deadline = Duration::from_secs(60);
        while nl.entries() != goal && t.elapsed() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let got = nl.entries();
        if got != goal {
            c.dump_logs();
        }
        let stale = got.routes.difference(&goal.routes).count()
            + got.neigh.difference(&goal.neigh).count()
            + got.fdb.difference(&goal.fdb).count();
        let missing = goal.routes.difference(&got.routes).count()
            + goal.neigh.difference(&got.neigh).count()
            + goal.fdb.difference(&got.fdb).count();
        eprintln!(
            "kill9 agent: round {round}: killed {killed_at:?} into writing {} adds + {} deletes ({}), converged in {:?}: {stale} stale, {missing} missing entries ({} blocks live)",
            adds.len(),
            dels.len(),
            if partial { "mid-reconcile" } else { "before or after the reconcile" },
            t.elapsed(),
            live.len()
        );
        assert_eq!(
            (stale, missing),
            (0, 0),
            "round {round}: the kernel state after the restart is not the etcd state"
        );
    }
    eprintln!(
        "kill9 agent: {ROUNDS} kills ({mid} mid-reconcile), each restart converged to exactly the etcd state (0 stale, 0 missing)"
    );
    assert!(
        mid * 4 >= ROUNDS,
        "only {mid} of {ROUNDS} kills landed mid-reconcile"
    );
}
