//! `cnm-agent status`: a person's view of every cluster network on this host, from the files
//! the agent publishes (`<run-dir>/<net>/status.json`) and host-local's store (used/free
//! addresses are counted now, not taken from the agent). Files rather than a query to the
//! daemon: it works while the agent is down or wedged (the age and PID liveness are shown),
//! needs no etcd credentials and no socket, and shows exactly what the CNI plugin sees.

use std::path::{Path, PathBuf};

use clap::Parser;
use cni_cluster::model;

use crate::obs::NetStatus;

#[derive(Parser, Debug)]
#[command(
    name = "cnm-agent status",
    bin_name = "cnm-agent status",
    about = "Show this host's cluster networks: blocks, peers, etcd and lease health"
)]
struct StatusArgs {
    /// The agent's --run-dir.
    #[arg(long, default_value = model::DEFAULT_RUN_DIR)]
    run_dir: PathBuf,
    /// Only this network (repeatable).
    #[arg(long = "network")]
    networks: Vec<String>,
    /// Print the raw status.json objects (one JSON array) instead of text.
    #[arg(long)]
    json: bool,
}

/// Exit code: 0 all networks ok, 1 nothing published / unreadable, 2 some network not ok
/// (degraded, expired, lost, or the agent is not running).
pub fn main(args: impl Iterator<Item = String>) -> i32 {
    let a = match StatusArgs::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    let nets = match load(&a.run_dir, &a.networks) {
        Ok(n) if !n.is_empty() => n,
        Ok(_) => {
            eprintln!(
                "cnm-agent status: no network published under {} (is cnm-agent running with --run-dir {}?)",
                a.run_dir.display(),
                a.run_dir.display()
            );
            return 1;
        }
        Err(e) => {
            eprintln!("cnm-agent status: {e}");
            return 1;
        }
    };
    let now = crate::obs::now();
    let mut all_ok = true;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&nets).unwrap_or_default()
        );
    }
    for n in &nets {
        let alive = pid_alive(n.pid);
        all_ok &= alive && n.state == "ok";
        if !a.json {
            print!("{}", render(n, &a.run_dir, now, alive));
        }
    }
    if all_ok {
        0
    } else {
        2
    }
}

fn load(run_dir: &Path, only: &[String]) -> Result<Vec<NetStatus>, String> {
    let names: Vec<String> = if only.is_empty() {
        let rd =
            std::fs::read_dir(run_dir).map_err(|e| format!("read {}: {e}", run_dir.display()))?;
        let mut v: Vec<String> = rd
            .flatten()
            .filter(|d| crate::obs::status_path(run_dir, &d.file_name().to_string_lossy()).exists())
            .map(|d| d.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    } else {
        only.to_vec()
    };
    names
        .iter()
        .map(|n| model::read_json(&crate::obs::status_path(run_dir, n)))
        .collect()
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: kill(2) with signal 0 sends nothing; it only checks that the process exists.
    pid != 0 && (unsafe { libc::kill(pid as libc::pid_t, 0) } == 0)
}

fn ago(now: u64, t: u64) -> String {
    if t == 0 {
        "never".into()
    } else {
        format!("{}s ago", now.saturating_sub(t))
    }
}

/// The text form of one network (also used by the tests).
pub fn render(n: &NetStatus, run_dir: &Path, now: u64, alive: bool) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let reserved = model::reserved_ips(run_dir, &n.network);
    let subnet = n.subnet.map(|s| s.to_string()).unwrap_or_default();
    let _ = writeln!(
        o,
        "network {}  subnet {subnet}  blocks /{}  vni {}",
        n.network, n.block_len, n.vni
    );
    let _ = writeln!(
        o,
        "  host {}  vtep {}  state {}  agent pid {} ({})",
        n.host,
        n.vtep.map(|v| v.to_string()).unwrap_or_default(),
        n.state.to_uppercase(),
        n.pid,
        if alive {
            "running"
        } else {
            "NOT RUNNING: this view is stale"
        }
    );
    let e = &n.etcd;
    let _ = writeln!(
        o,
        "  etcd {}{}: {}  leader {}  member {}  version {}  last contact {}  errors {}",
        e.endpoints.join(","),
        if e.tls { " (tls)" } else { "" },
        if e.reachable {
            "reachable"
        } else {
            "UNREACHABLE"
        },
        or_dash(&e.leader),
        or_dash(&e.member),
        or_dash(&e.version),
        ago(now, e.last_contact),
        e.errors
    );
    if !e.reachable && !e.error.is_empty() {
        let _ = writeln!(o, "    last error: {}", e.error);
    }
    let l = &n.lease;
    let _ = writeln!(
        o,
        "  lease {}  ttl left {}s of {}s (as of {})  keep-alive failures {}{}",
        or_dash(&l.id),
        l.left(now),
        l.granted_ttl,
        ago(now, l.checked),
        l.keepalive_failures,
        if l.presumed_expired {
            "  PRESUMED EXPIRED: peers have probably withdrawn this host"
        } else {
            ""
        }
    );
    let _ = writeln!(o, "  this host's blocks:");
    if n.blocks.is_empty() {
        let _ = writeln!(o, "    (none)");
    }
    let (mut tu, mut tf) = (0, 0);
    for b in &n.blocks {
        let used = reserved.iter().filter(|ip| b.contains(**ip)).count();
        let free = model::free_in(b, &reserved);
        (tu, tf) = (tu + used, tf + free);
        let _ = writeln!(
            o,
            "    {:<20} used {used:>4}  free {free:>4}",
            b.to_string()
        );
    }
    if n.blocks.len() > 1 {
        let _ = writeln!(o, "    {:<20} used {tu:>4}  free {tf:>4}", "total");
    }
    for lb in &n.lost {
        let used = reserved.iter().filter(|ip| lb.cidr.contains(**ip)).count();
        let _ = writeln!(
            o,
            "    LOST {:<15} used {used:>4}  ({})",
            lb.cidr.to_string(),
            lb.reason
        );
    }
    let peers: Vec<_> = n.hosts.iter().filter(|h| !h.this_host).collect();
    let _ = writeln!(o, "  peers ({}):", peers.len());
    if peers.is_empty() {
        let _ = writeln!(o, "    (none)");
    } else {
        let _ = writeln!(
            o,
            "    {:<12} {:<16} {:<11} BLOCKS",
            "HOST", "VTEP", "PROGRAMMED"
        );
    }
    for h in peers {
        let blocks: Vec<String> = h.blocks.iter().map(|b| b.to_string()).collect();
        let prog = if h.programmed == h.blocks.len() {
            "yes".to_string()
        } else {
            format!("NO ({}/{})", h.programmed, h.blocks.len())
        };
        let _ = writeln!(
            o,
            "    {:<12} {:<16} {:<11} {}",
            h.host,
            h.vtep.map(|v| v.to_string()).unwrap_or_default(),
            prog,
            blocks.join(" ")
        );
    }
    let r = &n.reconcile;
    let _ = writeln!(
        o,
        "  reconcile: {} runs, {} errors, last {:.1} ms {}{}",
        r.count,
        r.errors,
        r.last_seconds * 1000.0,
        ago(now, r.last_at),
        if r.last_error.is_empty() {
            String::new()
        } else {
            format!("; last error: {}", r.last_error)
        }
    );
    o
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}
