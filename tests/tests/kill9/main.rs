//! kill -9 at random points of ADD and DEL of every plugin of the suite (bridge with its
//! host-local, host-local alone, portmap, firewall, tuning, loopback), then what a runtime runs
//! next: DEL with the same arguments, or (after a failed ADD whose sandbox is gone) GC with the
//! attachments still valid. Workers run in parallel so concurrent ADDs share the small address
//! ranges. Afterwards nothing is left in the kernel, host-local's dataDir, tuning's dataDir or
//! the cache, and no address was ever handed to two live attachments.
//!
//! Kills land mid-call: the delay is drawn uniformly from [0, p75] of that plugin's measured
//! duration for that verb, measured in the same run under the same load.
//!
//! Not repeated here: cnm-shim's kill tests (cnm-shim/tests/restart.rs) and the cluster plugin's
//! (tests/tests/cluster). The cluster agent's kill is in `agent.rs`.

mod agent;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cni_tests::chain::{result_ips, runtime_conf, settle, Rng, SuiteHost};
use cni_tests::libcni::{Cni, Faults, GcArgs, GcAttachment, KillPlan, NetworkConfigList};
use cni_tests::{percentile, unique, Netns};

const WORKERS: usize = 4;
/// Stop once this many kills hit a running plugin.
const MID_CALL_GOAL: u32 = 210;
/// Fail loudly instead of looping forever when kills keep missing.
const MAX_ITERATIONS: u32 = 900;
/// Live attachments each worker keeps, so ADDs run against occupied ranges.
const KEEP: usize = 2;

/// What gets killed: plugin (its CNI_PATH name), the list it runs in, whole process group.
const TARGETS: &[(&str, usize, bool)] = &[
    ("bridge", CHAIN, false),
    // The group: bridge together with the host-local it runs as IPAM.
    ("bridge", CHAIN, true),
    ("portmap", CHAIN, false),
    ("firewall", CHAIN, false),
    ("tuning", CHAIN, false),
    ("host-local", HOST_LOCAL, false),
    ("loopback", LOOPBACK, false),
];
const CHAIN: usize = 0;
const HOST_LOCAL: usize = 1;
const LOOPBACK: usize = 2;

/// Durations measured per (plugin, verb), and the kill counters.
#[derive(Default)]
struct Stats {
    took: Mutex<HashMap<(String, String), Vec<Duration>>>,
    kills: AtomicU32,
    mid_call: AtomicU32,
    per_target: Mutex<HashMap<String, (u32, u32)>>,
}

/// One worker's fault plan: at most one armed kill at a time.
struct WorkerFaults {
    stats: Arc<Stats>,
    armed: Mutex<Option<(&'static str, &'static str, bool)>>,
    /// Whether the armed kill was planned, and whether it hit a running plugin.
    outcome: Mutex<(bool, bool)>,
    rng: Mutex<Rng>,
}

impl WorkerFaults {
    fn arm(&self, plugin: &'static str, verb: &'static str, group: bool) {
        *self.armed.lock().unwrap() = Some((plugin, verb, group));
        *self.outcome.lock().unwrap() = (false, false);
    }
    /// Disarms; returns (planned, hit mid-call).
    fn disarm(&self) -> (bool, bool) {
        *self.armed.lock().unwrap() = None;
        *self.outcome.lock().unwrap()
    }
}

impl Faults for WorkerFaults {
    fn plan(&self, plugin: &str, command: &str) -> Option<KillPlan> {
        let mut armed = self.armed.lock().unwrap();
        let (p, v, group) = (*armed)?;
        if p != plugin || v != command {
            return None;
        }
        *armed = None;
        let p90 = {
            let mut took = self.stats.took.lock().unwrap();
            let v = took.entry((plugin.into(), command.into())).or_default();
            percentile(&mut v.clone(), 75)
        };
        self.outcome.lock().unwrap().0 = true;
        Some(KillPlan {
            delay: self.rng.lock().unwrap().duration(p90),
            group,
        })
    }

    fn done(&self, plugin: &str, command: &str, took: Duration, killed_mid_call: bool) {
        let mut outcome = self.outcome.lock().unwrap();
        if outcome.0 && !outcome.1 {
            // The one planned execution of this arming.
            if killed_mid_call {
                outcome.1 = true;
            }
        }
        if !killed_mid_call {
            let mut t = self.stats.took.lock().unwrap();
            t.entry((plugin.into(), command.into()))
                .or_default()
                .push(took);
        }
    }
}

/// A live attachment.
struct Live {
    list: usize,
    ns: Netns,
    id: String,
    port: Option<u16>,
    ips: Vec<String>,
}

struct World {
    sh: SuiteHost,
    lists: Vec<NetworkConfigList>,
    bridge: String,
    stats: Arc<Stats>,
    /// (network, address) -> container of every address a successful ADD returned and no DEL
    /// has started to release.
    live_ips: Mutex<HashMap<(String, String), String>>,
    /// (list, container) of every live attachment: GC's valid attachments.
    registry: Mutex<BTreeSet<(usize, String)>>,
    /// Normal work holds it shared; GC (which would remove attachments still being added)
    /// holds it exclusively, as a runtime serializes GC with sandbox setup.
    gate: RwLock<()>,
    next_port: AtomicU16,
    iterations: AtomicU32,
    gcs: AtomicU32,
    failures: Mutex<Vec<String>>,
    duplicates: Mutex<Vec<String>>,
}

impl World {
    fn fail(&self, msg: String) {
        eprintln!("kill9 FAILURE: {msg}");
        self.failures.lock().unwrap().push(msg);
    }

    fn register(&self, list: usize, id: &str, ips: &[String]) {
        let net = &self.lists[list].name;
        let mut live = self.live_ips.lock().unwrap();
        // loopback's 127.0.0.1/::1 are every container's own.
        for ip in ips.iter().filter(|_| list != LOOPBACK) {
            if let Some(other) = live.insert((net.clone(), ip.clone()), id.to_string()) {
                self.duplicates
                    .lock()
                    .unwrap()
                    .push(format!("{ip} in {net}: handed to {other} and {id}"));
            }
        }
        self.registry.lock().unwrap().insert((list, id.to_string()));
    }

    fn release(&self, att: &Live) {
        let net = &self.lists[att.list].name;
        let mut live = self.live_ips.lock().unwrap();
        for ip in &att.ips {
            live.remove(&(net.clone(), ip.clone()));
        }
    }

    fn unregister(&self, att: &Live) {
        self.registry
            .lock()
            .unwrap()
            .remove(&(att.list, att.id.clone()));
    }

    fn new_attachment(&self, list: usize) -> (Netns, String, Option<u16>) {
        let ns = Netns::new("hfk");
        let id = unique("hfk");
        let port = (list == CHAIN).then(|| self.next_port.fetch_add(1, Ordering::Relaxed));
        (ns, id, port)
    }

    /// After a successful DEL the container keeps nothing of ours but lo (the veth goes in a
    /// detached process, so give it a moment).
    fn check_container_clean(&self, ns: &Netns, what: &str) {
        if !ns.link_gone_after_del("eth0") {
            self.fail(format!("{what}: eth0 still in the container after DEL"));
        }
    }

    /// A normal DEL (no fault) that must succeed.
    fn del(&self, cni: &Cni, att: Live, what: &str) {
        self.release(&att);
        let rt = runtime_conf(&att.ns, &att.id, att.port);
        if let Err(e) = cni.del_network_list(&self.lists[att.list], &rt) {
            self.fail(format!("{what}: DEL {}: {e}", att.id));
        }
        self.check_container_clean(&att.ns, what);
        self.unregister(&att);
    }

    /// GC of every network with the live attachments as valid, then every reservation must
    /// belong to a live attachment.
    fn gc(&self, cni: &Cni) {
        let _excl = self.gate.write().unwrap();
        self.gcs.fetch_add(1, Ordering::Relaxed);
        let reg = self.registry.lock().unwrap().clone();
        for (i, list) in self.lists.iter().enumerate() {
            let valid: Vec<GcAttachment> = reg
                .iter()
                .filter(|(l, _)| *l == i)
                .map(|(_, id)| GcAttachment {
                    container_id: id.clone(),
                    ifname: "eth0".into(),
                })
                .collect();
            if let Err(e) = cni.gc_network_list(list, GcArgs::List(&valid)) {
                self.fail(format!("GC of {}: {e}", list.name));
            }
        }
        // Exactly the live addresses stay reserved.
        let live = self.live_ips.lock().unwrap().clone();
        for list in [CHAIN, HOST_LOCAL] {
            let net = &self.lists[list].name;
            let reserved = cni_tests::host_local_reservations(self.sh.data.path(), net);
            let want: BTreeSet<String> = live
                .keys()
                .filter(|(n, _)| n == net)
                .map(|(_, ip)| ip.clone())
                .collect();
            if reserved != want {
                self.fail(format!(
                    "after GC, {net} reserves {reserved:?}, the live attachments hold {want:?}"
                ));
            }
        }
    }
}

fn worker(w: Arc<World>, seed: u64) {
    let faults = Arc::new(WorkerFaults {
        stats: w.stats.clone(),
        armed: Mutex::new(None),
        outcome: Mutex::new((false, false)),
        rng: Mutex::new(Rng::new(seed ^ 0x9e37)),
    });
    let cni = w.sh.cni().with_faults(faults.clone());
    let mut rng = Rng::new(seed);
    let mut mine: Vec<Live> = Vec::new();
    loop {
        if w.stats.mid_call.load(Ordering::Relaxed) >= MID_CALL_GOAL
            || w.iterations.fetch_add(1, Ordering::Relaxed) >= MAX_ITERATIONS
        {
            break;
        }
        let (plugin, list, group) = TARGETS[rng.below(TARGETS.len() as u64) as usize];
        let target = format!("{plugin}{} ", if group { "+ipam" } else { "" });
        let shared = w.gate.read().unwrap();
        if rng.below(2) == 0 {
            // kill during ADD.
            let (ns, id, port) = w.new_attachment(list);
            let rt = runtime_conf(&ns, &id, port);
            faults.arm(plugin, "ADD", group);
            let r = cni.add_network_list(&w.lists[list], &rt);
            let (planned, hit) = faults.disarm();
            count(&w.stats, &(target + "ADD"), planned, hit);
            match r {
                Ok(res) => {
                    if hit {
                        w.fail(format!("ADD {id} succeeded although {plugin} was killed"));
                    }
                    let ips = result_ips(&res);
                    w.register(list, &id, &ips);
                    mine.push(Live {
                        list,
                        ns,
                        id,
                        port,
                        ips,
                    });
                }
                Err(e) if !hit => w.fail(format!("ADD {id} failed without a kill: {e}")),
                Err(_) if rng.below(3) == 0 => {
                    // The runtime gives the sandbox up (netns gone) and later GCs.
                    drop(ns);
                    drop(shared);
                    w.gc(&cni);
                    continue;
                }
                Err(_) => {
                    // The runtime's DEL with the same arguments (no cached result).
                    if let Err(e) = cni.del_network_list(&w.lists[list], &rt) {
                        w.fail(format!("DEL after killed ADD ({plugin}) of {id}: {e}"));
                    }
                    w.check_container_clean(&ns, &format!("DEL after killed ADD of {plugin}"));
                }
            }
        } else {
            // kill during DEL: of a live attachment of this list, or a fresh one.
            let att = match mine.iter().position(|a| a.list == list) {
                Some(i) => mine.remove(i),
                None => {
                    let (ns, id, port) = w.new_attachment(list);
                    let rt = runtime_conf(&ns, &id, port);
                    match cni.add_network_list(&w.lists[list], &rt) {
                        Ok(res) => {
                            let ips = result_ips(&res);
                            w.register(list, &id, &ips);
                            Live {
                                list,
                                ns,
                                id,
                                port,
                                ips,
                            }
                        }
                        Err(e) => {
                            w.fail(format!("ADD {id} (no fault): {e}"));
                            continue;
                        }
                    }
                }
            };
            w.release(&att);
            let rt = runtime_conf(&att.ns, &att.id, att.port);
            faults.arm(plugin, "DEL", group);
            let r = cni.del_network_list(&w.lists[list], &rt);
            let (planned, hit) = faults.disarm();
            count(&w.stats, &(target + "DEL"), planned, hit);
            match r {
                Ok(()) if hit => w.fail(format!("DEL {} succeeded although killed", att.id)),
                Ok(()) => {}
                Err(e) if !hit => w.fail(format!("DEL {} failed without a kill: {e}", att.id)),
                Err(_) => {
                    // The runtime retries the DEL (the cache is still there).
                    if let Err(e) = cni.del_network_list(&w.lists[list], &rt) {
                        w.fail(format!("DEL retry after killed DEL ({plugin}): {e}"));
                    }
                }
            }
            w.check_container_clean(&att.ns, &format!("DEL after killed DEL of {plugin}"));
            w.unregister(&att);
        }
        while mine.len() > KEEP {
            let att = mine.remove(0);
            w.del(&cni, att, "releasing a kept attachment");
        }
        drop(shared);
    }
    // Under the gate like every other call: a GC of another worker checks the reservations
    // against the live addresses, which a DEL drops before its call.
    let _shared = w.gate.read().unwrap();
    for att in mine.drain(..) {
        w.del(&cni, att, "final DEL");
    }
}

fn count(stats: &Stats, target: &str, planned: bool, hit: bool) {
    if !planned {
        return;
    }
    stats.kills.fetch_add(1, Ordering::Relaxed);
    let mut t = stats.per_target.lock().unwrap();
    let e = t.entry(target.to_string()).or_default();
    e.0 += 1;
    if hit {
        stats.mid_call.fetch_add(1, Ordering::Relaxed);
        e.1 += 1;
    }
}

#[test]
fn hf_kill9_every_plugin_add_del_then_del_or_gc_leaves_nothing() {
    let seed = Rng::seed();
    eprintln!("kill9: seed {seed} (HF_SEED={seed} replays the schedule)");
    let sh = SuiteHost::new("hfk");
    let bridge = unique("hfkbr");
    let lists = vec![
        sh.chain(&unique("hfkc"), &bridge, "10.77.0.0/27", "fd77:77::/123"),
        sh.host_local(&unique("hfkh"), "10.78.0.0/27"),
        sh.loopback(&unique("hfkl")),
    ];
    let stats = Arc::new(Stats::default());
    let w = Arc::new(World {
        sh,
        lists,
        bridge,
        stats: stats.clone(),
        live_ips: Mutex::new(HashMap::new()),
        registry: Mutex::new(BTreeSet::new()),
        gate: RwLock::new(()),
        next_port: AtomicU16::new(21000),
        iterations: AtomicU32::new(0),
        gcs: AtomicU32::new(0),
        failures: Mutex::new(Vec::new()),
        duplicates: Mutex::new(Vec::new()),
    });

    // Measure every plugin's ADD and DEL durations first (no kills), 3 cycles per list.
    {
        let faults = Arc::new(WorkerFaults {
            stats: stats.clone(),
            armed: Mutex::new(None),
            outcome: Mutex::new((false, false)),
            rng: Mutex::new(Rng::new(seed)),
        });
        let cni = w.sh.cni().with_faults(faults);
        for _ in 0..3 {
            for list in [CHAIN, HOST_LOCAL, LOOPBACK] {
                let (ns, id, port) = w.new_attachment(list);
                let rt = runtime_conf(&ns, &id, port);
                let res = cni
                    .add_network_list(&w.lists[list], &rt)
                    .unwrap_or_else(|e| panic!("warm-up ADD: {e}"));
                w.register(list, &id, &result_ips(&res));
                w.del(
                    &cni,
                    Live {
                        list,
                        ns,
                        id,
                        port,
                        ips: result_ips(&res),
                    },
                    "warm-up",
                );
            }
        }
    }

    let started = Instant::now();
    let threads: Vec<_> = (0..WORKERS)
        .map(|i| {
            let w = w.clone();
            std::thread::spawn(move || worker(w, seed.wrapping_add(i as u64 * 7919)))
        })
        .collect();
    for t in threads {
        t.join().expect("worker panicked");
    }
    let elapsed = started.elapsed();

    let nets: Vec<&str> = w.lists.iter().map(|l| l.name.as_str()).collect();
    let left = settle(10, || w.sh.leftovers(&nets, &[&w.bridge]));
    let kills = stats.kills.load(Ordering::Relaxed);
    let mid = stats.mid_call.load(Ordering::Relaxed);
    let dups = w.duplicates.lock().unwrap().clone();
    let failures = w.failures.lock().unwrap().clone();
    {
        let mut took = stats.took.lock().unwrap();
        let mut keys: Vec<_> = took.keys().cloned().collect();
        keys.sort();
        for k in keys {
            let v = took.get_mut(&k).unwrap();
            eprintln!(
                "kill9: {} {} p50 {:?} p90 {:?} ({} runs)",
                k.0,
                k.1,
                percentile(v, 50),
                percentile(v, 90),
                v.len()
            );
        }
        let per = stats.per_target.lock().unwrap();
        let mut per: Vec<_> = per.iter().collect();
        per.sort();
        for (t, (k, m)) in per {
            eprintln!("kill9:   {t}: {k} kills, {m} mid-call");
        }
    }
    eprintln!(
        "kill9: {kills} kills ({mid} mid-call) in {} iterations, {} GCs, {:?}; {} leaks, {} duplicate addresses, {} failures",
        w.iterations.load(Ordering::Relaxed).min(MAX_ITERATIONS),
        w.gcs.load(Ordering::Relaxed),
        elapsed,
        left.len(),
        dups.len(),
        failures.len()
    );
    for l in &left {
        eprintln!("kill9: LEFT BEHIND: {l}");
    }
    assert!(failures.is_empty(), "failures: {failures:#?}");
    assert!(dups.is_empty(), "duplicate addresses: {dups:#?}");
    assert!(left.is_empty(), "left behind: {left:#?}");
    assert!(
        mid >= 200,
        "only {mid} of {kills} kills landed mid-call (goal 200)"
    );
}
