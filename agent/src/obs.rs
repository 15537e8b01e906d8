//! What the agent knows about itself, per network, for people and monitoring: one registry
//! that the network tasks update, rendered as Prometheus text (`--metrics-listen`) and
//! written as `<run-dir>/<net>/status.json` (read by `cnm-agent status`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::{Mutex, OnceLock};

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

/// `<run-dir>/<net>/status.json`: the agent's view of one network, rewritten atomically when
/// it changes. Times are Unix seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetStatus {
    pub network: String,
    pub host: String,
    pub pid: u32,
    pub vtep: Option<Ipv4Addr>,
    pub subnet: Option<Ipv4Network>,
    pub block_len: u8,
    pub vni: u32,
    /// `ok`, `degraded`, `lost` (as in blocks.json) or `expired` (lease presumed gone).
    pub state: String,
    pub etcd: EtcdView,
    pub lease: LeaseView,
    /// This host's blocks.
    pub blocks: Vec<Ipv4Network>,
    pub lost: Vec<cni_cluster::model::LostBlock>,
    /// Every host with a block in etcd (this one included).
    pub hosts: Vec<HostView>,
    pub reconcile: ReconcileView,
    /// Addresses in this host's blocks, as counted by the agent from host-local's store.
    pub used: usize,
    pub free: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EtcdView {
    pub endpoints: Vec<String>,
    pub tls: bool,
    pub reachable: bool,
    pub error: String,
    /// Hex member IDs from `maintenance status` (empty until the first answer).
    pub member: String,
    pub leader: String,
    pub version: String,
    pub last_contact: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeaseView {
    /// Hex lease ID.
    pub id: String,
    pub granted_ttl: i64,
    /// TTL etcd reported at `checked` (grant, reuse or keep-alive answer).
    pub ttl: i64,
    pub checked: u64,
    /// Not renewed for longer than its TTL while etcd is unreachable: peers have probably
    /// withdrawn this host's blocks.
    pub presumed_expired: bool,
    pub keepalive_failures: u64,
}

impl LeaseView {
    /// Seconds left at `now`, as far as this host can tell.
    pub fn left(&self, now: u64) -> i64 {
        if self.id.is_empty() {
            return 0;
        }
        (self.ttl - now.saturating_sub(self.checked) as i64).max(0)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostView {
    pub host: String,
    pub vtep: Option<Ipv4Addr>,
    pub blocks: Vec<Ipv4Network>,
    /// Blocks whose route is on this host's VXLAN link (always 0 for this host itself).
    pub programmed: usize,
    pub this_host: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReconcileView {
    pub count: u64,
    pub errors: u64,
    pub seconds_sum: f64,
    pub last_seconds: f64,
    pub last_at: u64,
    pub last_error: String,
    pub routes_added: u64,
    pub routes_removed: u64,
}

pub fn status_path(run_dir: &std::path::Path, net: &str) -> std::path::PathBuf {
    cni_cluster::model::net_dir(run_dir, net).join("status.json")
}

fn registry() -> &'static Mutex<BTreeMap<String, NetStatus>> {
    static R: OnceLock<Mutex<BTreeMap<String, NetStatus>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(BTreeMap::new()))
}

static ETCD: OnceLock<(Vec<String>, bool)> = OnceLock::new();

/// The etcd endpoints and whether TLS is on, shown in every network's status.
pub fn set_etcd(endpoints: &[String], tls: bool) {
    let _ = ETCD.set((endpoints.to_vec(), tls));
}

/// Updates the entry of `net` (created on first use).
pub fn update<T>(net: &str, f: impl FnOnce(&mut NetStatus) -> T) -> T {
    let mut g = registry().lock().unwrap_or_else(|p| p.into_inner());
    let e = g.entry(net.to_string()).or_insert_with(|| {
        let (endpoints, tls) = ETCD.get().cloned().unwrap_or_default();
        NetStatus {
            network: net.to_string(),
            pid: std::process::id(),
            etcd: EtcdView {
                endpoints,
                tls,
                ..Default::default()
            },
            ..Default::default()
        }
    });
    f(e)
}

pub fn now() -> u64 {
    crate::keys::now()
}

/// Escapes a Prometheus label value.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text exposition format 0.0.4 of every network.
pub fn render() -> String {
    let nets: Vec<NetStatus> = {
        let g = registry().lock().unwrap_or_else(|p| p.into_inner());
        g.values().cloned().collect()
    };
    let now = now();
    type Get = fn(&NetStatus, u64) -> f64;
    let families: &[(&str, &str, &str, Get)] = &[
        (
            "cnm_agent_blocks_owned",
            "gauge",
            "Blocks this host holds.",
            |n, _| n.blocks.len() as f64,
        ),
        (
            "cnm_agent_blocks_lost",
            "gauge",
            "Blocks this host lost to another host while containers still use them.",
            |n, _| n.lost.len() as f64,
        ),
        (
            "cnm_agent_addresses_used",
            "gauge",
            "Addresses reserved by host-local in this host's blocks.",
            |n, _| n.used as f64,
        ),
        (
            "cnm_agent_addresses_free",
            "gauge",
            "Free addresses in this host's blocks.",
            |n, _| n.free as f64,
        ),
        (
            "cnm_agent_peer_hosts",
            "gauge",
            "Other hosts holding blocks of the network.",
            |n, _| n.hosts.iter().filter(|h| !h.this_host).count() as f64,
        ),
        (
            "cnm_agent_peer_blocks",
            "gauge",
            "Blocks of other hosts (desired routes).",
            |n, _| {
                n.hosts
                    .iter()
                    .filter(|h| !h.this_host)
                    .map(|h| h.blocks.len())
                    .sum::<usize>() as f64
            },
        ),
        (
            "cnm_agent_peer_blocks_programmed",
            "gauge",
            "Blocks of other hosts with a route on the VXLAN link.",
            |n, _| n.hosts.iter().map(|h| h.programmed).sum::<usize>() as f64,
        ),
        (
            "cnm_agent_reconcile_total",
            "counter",
            "Data plane reconciliations.",
            |n, _| n.reconcile.count as f64,
        ),
        (
            "cnm_agent_reconcile_errors_total",
            "counter",
            "Failed data plane reconciliations.",
            |n, _| n.reconcile.errors as f64,
        ),
        (
            "cnm_agent_reconcile_duration_seconds_sum",
            "counter",
            "Total time spent reconciling the data plane.",
            |n, _| n.reconcile.seconds_sum,
        ),
        (
            "cnm_agent_reconcile_last_duration_seconds",
            "gauge",
            "Duration of the last reconciliation.",
            |n, _| n.reconcile.last_seconds,
        ),
        (
            "cnm_agent_dataplane_entries_added_total",
            "counter",
            "Routes, ARP and FDB entries added.",
            |n, _| n.reconcile.routes_added as f64,
        ),
        (
            "cnm_agent_dataplane_entries_removed_total",
            "counter",
            "Routes, ARP and FDB entries removed.",
            |n, _| n.reconcile.routes_removed as f64,
        ),
        (
            "cnm_agent_etcd_reachable",
            "gauge",
            "1 when the last etcd call succeeded.",
            |n, _| f64::from(u8::from(n.etcd.reachable)),
        ),
        (
            "cnm_agent_etcd_errors_total",
            "counter",
            "Failed etcd calls.",
            |n, _| n.etcd.errors as f64,
        ),
        (
            "cnm_agent_etcd_last_contact_timestamp_seconds",
            "gauge",
            "Unix time of the last successful etcd call.",
            |n, _| n.etcd.last_contact as f64,
        ),
        (
            "cnm_agent_lease_keepalive_failures_total",
            "counter",
            "Lease keep-alive rounds that failed.",
            |n, _| n.lease.keepalive_failures as f64,
        ),
        (
            "cnm_agent_lease_ttl_seconds",
            "gauge",
            "Seconds left on the block lease, as far as this host knows.",
            |n, now| n.lease.left(now) as f64,
        ),
        (
            "cnm_agent_lease_presumed_expired",
            "gauge",
            "1 when the lease was not renewed for longer than its TTL.",
            |n, _| f64::from(u8::from(n.lease.presumed_expired)),
        ),
    ];
    let mut out = String::new();
    let _ = writeln!(out, "# HELP cnm_agent_info Agent version and host.");
    let _ = writeln!(out, "# TYPE cnm_agent_info gauge");
    if let Some(n) = nets.first() {
        let _ = writeln!(
            out,
            "cnm_agent_info{{version=\"{}\",host=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            esc(&n.host)
        );
    }
    for (name, kind, help, get) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for n in &nets {
            let _ = writeln!(
                out,
                "{name}{{network=\"{}\"}} {}",
                esc(&n.network),
                get(n, now)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        update("t\"1", |s| {
            s.host = "h1".into();
            s.blocks = vec!["10.1.0.0/26".parse().unwrap()];
            s.free = 60;
            s.lease = LeaseView {
                id: "1".into(),
                ttl: 10,
                checked: now(),
                ..Default::default()
            };
        });
        let t = render();
        assert!(t.contains("# TYPE cnm_agent_blocks_owned gauge\n"), "{t}");
        assert!(
            t.contains("cnm_agent_blocks_owned{network=\"t\\\"1\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("cnm_agent_addresses_free{network=\"t\\\"1\"} 60\n"),
            "{t}"
        );
        assert!(t.contains("cnm_agent_info{version="), "{t}");
        let left: f64 = t
            .lines()
            .find(|l| l.starts_with("cnm_agent_lease_ttl_seconds{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!((9.0..=10.0).contains(&left), "{left}");
    }

    #[test]
    fn lease_left_counts_down() {
        let l = LeaseView {
            id: "a".into(),
            ttl: 4,
            checked: 100,
            ..Default::default()
        };
        assert_eq!(l.left(101), 3);
        assert_eq!(l.left(200), 0);
        assert_eq!(LeaseView::default().left(0), 0);
    }
}
