//! A throwaway multi-host cluster on one machine: an underlay netns with two bridges (VXLAN
//! underlay and control plane), etcd on its own ports and temp data dir inside it, and N
//! netns "hosts" each running a real `cnm-agent`. Everything is removed on drop. Shared by
//! the cluster tests (`tests/tests/cluster`, CNI), `cnm-shim/tests/cluster.rs` (Docker on each
//! host) and the cluster benchmark (`cni-bench-cluster`).

use std::collections::BTreeSet;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cni_netlink::{Family, Netlink, RT_TABLE_MAIN};

use crate::etcd_http::EtcdHttp;
use crate::{bin, run, sh, Call, Daemon, Netns, PluginDir, Reply, TempDir};
use serde_json::{json, Value};

pub const NET: &str = "n1";
pub const VNI: u32 = 4097;
const ETCD_PORT: u16 = 23791;
const ETCD_PEER: u16 = 23801;

pub fn etcd_url() -> String {
    format!("http://192.168.78.1:{ETCD_PORT}")
}

pub struct Etcd {
    pub dir: TempDir,
    pub proc: Option<Daemon>,
}

pub struct Host {
    pub name: String,
    /// Underlay (VTEP) address, 192.168.77.1<slot>.
    pub ul_ip: String,
    /// Shared with whatever else runs in the host (e.g. a dockerd world).
    pub ns: Arc<Netns>,
    pub state: TempDir,
    pub run: TempDir,
    pub log: PathBuf,
    pub agent: Option<Daemon>,
    pub extra: Vec<String>,
}

pub struct Cluster {
    pub hosts: Vec<Host>,
    pub containers: Vec<Netns>,
    pub etcd: Etcd,
    pub plugins: PluginDir,
    pub ul: Netns,
    pub logs: TempDir,
    pub spec: String,
    pub vni: u32,
    /// Agent timing flags (lease TTL, quarantine, resync) given to every agent.
    pub timing: Vec<String>,
    /// Slot of the next host (its addresses end in 1<slot>); never reused, so a peer's stale
    /// underlay ARP entry can never point a new host's address at a removed one's MAC.
    next_slot: usize,
}

/// Agent timing of the tests: short TTLs, so expiry and quarantine fit in a test.
/// The `--network` spec of the benchmark and the agent kill test: one network, 64-address blocks.
pub const SPEC_N1: &str = "n1=10.250.0.0/16,block=26,vni=4097";
/// Production-like agent timing: nothing expires during a run.
pub const STEADY_TIMING: &[&str] = &[
    "--block-ttl",
    "120",
    "--quarantine",
    "120",
    "--resync",
    "30",
];
pub const TEST_TIMING: &[&str] = &["--block-ttl", "4", "--quarantine", "4", "--resync", "2"];

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    // A Ctrl-C during a long wait still tears the cluster down (see `interrupt`).
    test_support::wait_for(what, timeout, || {
        crate::interrupt::check();
        f()
    })
}

impl Cluster {
    /// `spec`: the agent's `--network` value (empty: none, networks come through the agent's
    /// socket `<run>/agent.sock`); `extra`: more agent flags.
    pub fn new(n_hosts: usize, spec: &str, extra: &[&str]) -> Cluster {
        Cluster::with_timing(n_hosts, spec, extra, TEST_TIMING)
    }

    /// As `new`, with agents on a block TTL of `ttl` seconds (quarantine 4 s, resync 2 s).
    pub fn with_ttl(n_hosts: usize, spec: &str, extra: &[&str], ttl: u32) -> Cluster {
        let ttl = ttl.to_string();
        let timing = [
            "--block-ttl",
            ttl.as_str(),
            "--quarantine",
            "4",
            "--resync",
            "2",
        ];
        Cluster::with_timing(n_hosts, spec, extra, &timing)
    }

    /// Like `new`, with the agents' `--block-ttl/--quarantine/--resync` flags given.
    pub fn with_timing(n_hosts: usize, spec: &str, extra: &[&str], timing: &[&str]) -> Cluster {
        let ul = Netns::new("mhul");
        ul.ip(&["link", "add", "ulbr", "type", "bridge"]);
        ul.ip(&["link", "set", "ulbr", "up"]);
        ul.ip(&["link", "add", "mgbr", "type", "bridge"]);
        ul.ip(&["addr", "add", "192.168.78.1/24", "dev", "mgbr"]);
        ul.ip(&["link", "set", "mgbr", "up"]);
        let logs = TempDir::new("mhlogs");
        let mut c = Cluster {
            hosts: Vec::new(),
            containers: Vec::new(),
            etcd: Etcd {
                dir: TempDir::new("mhetcd"),
                proc: None,
            },
            plugins: PluginDir::new(&[
                ("cluster", &bin("cluster")),
                ("bridge", &bin("bridge")),
                ("host-local", &bin("host-local")),
            ]),
            ul,
            logs,
            spec: spec.to_string(),
            vni: spec
                .split("vni=")
                .nth(1)
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(VNI),
            timing: timing.iter().map(|s| s.to_string()).collect(),
            next_slot: 1,
        };
        c.start_etcd();
        for i in 1..=n_hosts {
            c.add_host(&format!("h{i}"), extra);
        }
        for i in 0..n_hosts {
            c.start_agent(i);
        }
        if !spec.is_empty() {
            for i in 0..n_hosts {
                c.wait_blocks(i);
            }
        }
        c
    }

    /// Cuts (or heals) host i's control plane only: its port on `mgbr` goes down (up).
    pub fn partition(&self, i: usize, cut: bool) {
        let slot = self.hosts[i]
            .ul_ip
            .strip_prefix("192.168.77.1")
            .expect("underlay address of the harness");
        let port = format!("mg{slot}");
        self.ul
            .ip(&["link", "set", &port, if cut { "down" } else { "up" }]);
    }

    /// A new host netns wired to both bridges (agent not started); its index in `hosts`.
    pub fn add_host(&mut self, name: &str, extra: &[&str]) -> usize {
        let i = self.next_slot;
        assert!(
            i < 100,
            "at most 99 hosts per cluster (addresses 192.168.77.1<slot>)"
        );
        self.next_slot += 1;
        let ns = Arc::new(Netns::new(&format!("mhh{i}x")));
        for (br, dev, addr) in [
            ("ulbr", "ul0", format!("192.168.77.1{i}/24")),
            ("mgbr", "mg0", format!("192.168.78.1{i}/24")),
        ] {
            let peer = format!("{}{i}", &dev[..2]);
            self.ul.ip(&[
                "link", "add", &peer, "type", "veth", "peer", "name", dev, "netns", &ns.name,
            ]);
            self.ul.ip(&["link", "set", &peer, "master", br, "up"]);
            ns.ip(&["addr", "add", &addr, "dev", dev]);
            ns.ip(&["link", "set", dev, "up"]);
        }
        self.hosts.push(Host {
            log: self.logs.path().join(format!("{name}.log")),
            name: name.to_string(),
            ul_ip: format!("192.168.77.1{i}"),
            ns,
            state: TempDir::new("mhstate"),
            run: TempDir::new("mhrun"),
            agent: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        });
        self.hosts.len() - 1
    }

    /// Stops host i's agent (SIGTERM: a clean leave when no container is attached) and
    /// deletes its netns (with it its underlay veths).
    pub fn remove_host(&mut self, i: usize) {
        let mut h = self.hosts.remove(i);
        h.agent = None;
    }

    /// A client of this cluster's etcd over its JSON gateway.
    pub fn etcd_http(&self) -> EtcdHttp {
        EtcdHttp::new(self.ul.path_str(), &format!("192.168.78.1:{ETCD_PORT}"))
    }

    pub fn start_etcd(&mut self) {
        let log = std::fs::File::create(self.logs.path().join("etcd.log")).expect("etcd log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ul.name, "etcd", "--name", "e"])
            .args(["--data-dir", self.etcd.dir.str()])
            .args([
                "--listen-client-urls",
                &etcd_url(),
                "--advertise-client-urls",
                &etcd_url(),
            ])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{ETCD_PEER}"),
            ])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{ETCD_PEER}"),
            ])
            .args([
                "--initial-cluster",
                &format!("e=http://127.0.0.1:{ETCD_PEER}"),
            ])
            .stdout(Stdio::from(log.try_clone().expect("dup")))
            .stderr(Stdio::from(log));
        let mut d = Daemon::spawn(cmd).expect("spawn etcd");
        d.grace = Duration::from_secs(5);
        self.etcd.proc = Some(d);
        wait_for("etcd healthy", Duration::from_secs(15), || {
            self.etcdctl_ok(&["endpoint", "health"])
        });
    }

    /// Stops etcd (SIGTERM, by PID), keeping its data dir for a restart.
    pub fn stop_etcd(&mut self) {
        self.etcd.proc = None;
    }

    fn etcdctl_ok(&self, args: &[&str]) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ul.name,
                "etcdctl",
                "--endpoints",
                &etcd_url(),
            ])
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    pub fn etcdctl(&self, args: &[&str]) -> String {
        let mut v = vec![
            "ip",
            "netns",
            "exec",
            &self.ul.name,
            "etcdctl",
            "--endpoints",
        ];
        let url = etcd_url();
        v.push(&url);
        v.extend_from_slice(args);
        sh(&v)
    }

    /// Every key under /cnm/v1.
    pub fn keys(&self) -> Vec<String> {
        self.etcdctl(&["get", "--prefix", "/cnm/v1/", "--keys-only"])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    pub fn block_keys(&self) -> Vec<(String, String)> {
        let out = self.etcdctl(&["get", "--prefix", &format!("/cnm/v1/nets/{NET}/blocks/")]);
        let lines: Vec<&str> = out.lines().collect();
        lines
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| {
                let v: Value = serde_json::from_str(c[1]).unwrap_or(Value::Null);
                (
                    c[0].to_string(),
                    v["host"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    pub fn start_agent(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&h.log)
            .expect("log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &h.ns.name])
            .arg(bin("cnm-agent"))
            .args([
                "--etcd",
                &etcd_url(),
                "--host",
                &h.name,
                "--underlay",
                "ul0",
            ])
            .args(["--state-dir", h.state.str(), "--run-dir", h.run.str()])
            .args(&self.timing)
            .args(
                Some(["--network", &self.spec])
                    .filter(|_| !self.spec.is_empty())
                    .into_iter()
                    .flatten(),
            )
            .args(&h.extra)
            .stdout(Stdio::from(log.try_clone().expect("dup")))
            .stderr(Stdio::from(log));
        h.agent = Some(Daemon::spawn(cmd).expect("spawn cnm-agent"));
    }

    pub fn blocks(&self, i: usize) -> Value {
        let p = self.hosts[i].run.path().join(NET).join("blocks.json");
        std::fs::read(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    }

    pub fn wait_blocks(&self, i: usize) {
        wait_for(
            &format!("blocks.json of {}", self.hosts[i].name),
            Duration::from_secs(20),
            || {
                self.blocks(i)["blocks"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
            },
        );
    }

    /// Remote-block routes on host i's VXLAN link.
    pub fn vx_routes(&self, i: usize) -> Vec<String> {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.hosts[i].ns.name,
                "-j",
                "route",
                "show",
                "dev",
                &format!("vx-{}", self.vni),
            ])
            .output()
            .expect("ip");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["gateway"].is_string())
            .filter_map(|r| r["dst"].as_str().map(str::to_string))
            .collect()
    }

    pub fn all_blocks(&self) -> usize {
        (0..self.hosts.len())
            .map(|i| self.blocks(i)["blocks"].as_array().map_or(0, |a| a.len()))
            .sum()
    }

    /// Waits until every host routes to every other host's blocks.
    pub fn converge(&self) -> Duration {
        wait_for("data plane convergence", Duration::from_secs(20), || {
            (0..self.hosts.len()).all(|i| {
                let own = self.blocks(i)["blocks"].as_array().map_or(0, |a| a.len());
                self.vx_routes(i).len() == self.all_blocks() - own
            })
        })
    }

    pub fn conf(&self, i: usize) -> String {
        json!({
            "cniVersion": "1.1.0",
            "name": NET,
            "type": "cluster",
            "network": NET,
            "runDir": self.hosts[i].run.str(),
        })
        .to_string()
    }

    pub fn cni(&self, i: usize, cmd: &str, cid: &str, netns: &str, conf: &str) -> Reply {
        let p = self.plugins.0.path().join("cluster");
        let c = Call {
            container_id: cid,
            netns,
            ifname: "eth0",
            cni_path: self.plugins.path(),
            host: Some(&*self.hosts[i].ns),
            ..Call::new(&p, cmd)
        };
        run(&c, conf)
    }

    /// DEL of container k (its netns name is its container ID) on host i.
    pub fn del_container(&self, i: usize, k: usize) -> Reply {
        let ns = &self.containers[k];
        self.cni(i, "DEL", &ns.name, ns.path_str(), &self.conf(i))
    }

    /// Stops every agent (SIGTERM: a clean leave) once every container is DEL'd, and asserts
    /// that they left nothing behind: no VXLAN link, no guard table, no status file, and in
    /// etcd only the network's config key.
    pub fn stop_agents_leaving_nothing(&mut self) {
        for h in &mut self.hosts {
            h.agent = None;
        }
        for h in &self.hosts {
            let links = h.ns.link_names();
            assert!(
                !links.iter().any(|l| l.starts_with("vx-")),
                "{}: {links:?}",
                h.name
            );
            let tables = h.ns.sh(&["nft", "list", "tables"]);
            assert!(!tables.contains("cnm_vxlan"), "{}: {tables}", h.name);
            let status = h.run.path().join(NET).join("status.json");
            assert!(!status.exists(), "{} left {}", h.name, status.display());
        }
        assert_eq!(self.keys(), vec![format!("/cnm/v1/nets/{NET}/config")]);
    }

    /// A container on host i; returns (index into containers, its IP).
    pub fn add_container(&mut self, i: usize) -> (usize, String) {
        let (k, ip, _) = self.add_container_res(i);
        (k, ip)
    }

    /// As `add_container`, also returning the ADD result.
    pub fn add_container_res(&mut self, i: usize) -> (usize, String, Value) {
        let ns = Netns::new("mhc");
        let r = self
            .cni(i, "ADD", &ns.name.clone(), ns.path_str(), &self.conf(i))
            .expect_ok();
        let ip = r.json()["ips"][0]["address"]
            .as_str()
            .expect("ip")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        self.containers.push(ns);
        (self.containers.len() - 1, ip, r.json())
    }

    pub fn agent_log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.hosts[i].log).unwrap_or_default()
    }

    pub fn dump_logs(&self) {
        for (i, h) in self.hosts.iter().enumerate() {
            eprintln!("----- agent {} -----\n{}", h.name, self.agent_log(i));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for h in &mut self.hosts {
            h.agent = None;
        }
        self.containers.clear();
        self.etcd.proc = None;
    }
}

/// Port of `--metrics-listen 127.0.0.1:<port>` in every host netns (each has its own loopback).
pub const METRICS_PORT: u16 = 9476;

impl Cluster {
    /// `GET /metrics` from host i's agent.
    pub fn scrape(&self, i: usize) -> String {
        http_get(self.hosts[i].ns.path_str(), METRICS_PORT, "/metrics")
    }

    /// The value of the sample `name{network="n1"}` in host i's metrics.
    pub fn metric(&self, i: usize, name: &str) -> f64 {
        sample(&self.scrape(i), name)
    }

    /// `cnm-agent status --run-dir <host i's run dir>`: (exit code, stdout).
    pub fn status_cmd(&self, i: usize) -> (i32, String) {
        let o = Command::new(bin("cnm-agent"))
            .args(["status", "--run-dir", self.hosts[i].run.str()])
            .output()
            .expect("cnm-agent status");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    }
}

/// One HTTP/1.0 GET to 127.0.0.1:port inside the netns at `ns`; the body.
pub fn http_get(ns: &str, port: u16, path: &str) -> String {
    let path = path.to_string();
    crate::in_netns(ns, move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect metrics");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read metrics");
        assert!(
            out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"),
            "{out}"
        );
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    })
}

/// The value of `name{network="n1"}` in a Prometheus text body (panics when absent).
pub fn sample(text: &str, name: &str) -> f64 {
    let prefix = format!("{name}{{network=\"{NET}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix}in:\n{text}"))
}

// ---------------------------------------------------------------------------------------------
// Kernel state of a host's VXLAN link, and simulated remote hosts (shared by the cluster
// benchmark and the agent kill test).
// ---------------------------------------------------------------------------------------------

/// The VXLAN link of [`VNI`].
pub const VX: &str = "vx-4097";

/// What the agent programs per remote block, as sets comparable with the expected ones.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Entries {
    pub neigh: BTreeSet<(Ipv4Addr, [u8; 6])>,
    pub fdb: BTreeSet<([u8; 6], Ipv4Addr)>,
    pub routes: BTreeSet<(Ipv4Addr, u8, Ipv4Addr)>,
}

/// A netlink socket inside a host netns.
pub struct HostNl(pub Netlink);

impl HostNl {
    pub fn open(ns: &Netns) -> HostNl {
        let f = File::open(&ns.path).expect("open host netns");
        HostNl(Netlink::new_in_netns(&f).expect("netlink socket in host netns"))
    }

    pub fn vx_index(&mut self) -> Option<u32> {
        self.0.link_by_name(VX).expect("link dump").map(|l| l.index)
    }

    /// Permanent neighbours, own FDB entries with a destination, and onlink routes via the
    /// VXLAN link (exactly what the agent adds per remote block).
    pub fn entries(&mut self) -> Entries {
        let mut e = Entries::default();
        let Some(idx) = self.vx_index() else { return e };
        for n in self.0.neighbours(idx, Family::V4).expect("neigh dump") {
            if let (true, Some(std::net::IpAddr::V4(ip)), Some(m)) = (n.permanent, n.ip, n.mac) {
                e.neigh.insert((ip, m));
            }
        }
        for n in self.0.fdb(idx).expect("fdb dump") {
            if let (true, Some(m), Some(std::net::IpAddr::V4(ip))) = (n.permanent, n.mac, n.ip) {
                if m != [0; 6] {
                    e.fdb.insert((m, ip));
                }
            }
        }
        for r in self
            .0
            .routes(Family::V4, Some(RT_TABLE_MAIN))
            .expect("route dump")
        {
            if let (
                Some(_),
                true,
                Some((std::net::IpAddr::V4(d), l)),
                Some(std::net::IpAddr::V4(g)),
            ) = (r.oif.filter(|o| *o == idx), r.onlink, r.dst, r.gateway)
            {
                e.routes.insert((d, l, g));
            }
        }
        e
    }

    /// Destinations of the remote-block routes.
    pub fn route_dsts(&mut self) -> BTreeSet<(Ipv4Addr, u8)> {
        self.entries()
            .routes
            .into_iter()
            .map(|(d, l, _)| (d, l))
            .collect()
    }
}

pub struct SimHost {
    pub key: String,
    pub value: String,
    pub lease: i64,
    pub block: Ipv4Addr,
    pub tunnel: Ipv4Addr,
    pub mac: [u8; 6],
    pub vtep: Ipv4Addr,
}

/// `n` simulated remote hosts, one /26 block each (from 10.250.128.0 up), with a lease of
/// 600 s each; nothing is written to etcd yet.
pub fn sim_hosts(n: usize, etcd: &mut EtcdHttp) -> Vec<SimHost> {
    (0..n)
        .map(|i| {
            // /26 blocks from 10.250.128.0 up: far from the first 100 free blocks, where the
            // real agent claims its own.
            let base = u32::from(Ipv4Addr::new(10, 250, 128, 0)) + (i as u32) * 64;
            let block = Ipv4Addr::from(base);
            let mac = [0x02, 0xb0, 0, 0, (i >> 8) as u8, i as u8];
            let vtep = Ipv4Addr::new(10, 99, (i / 250) as u8, (i % 250 + 1) as u8);
            let value = json!({
                "host": format!("sim{i}"),
                "vtep": vtep.to_string(),
                "mac": cni_netlink::fmt_mac(&mac),
                "tunnel_ip": block.to_string(),
            })
            .to_string();
            SimHost {
                key: format!("/cnm/v1/nets/{NET}/blocks/{block}-26"),
                value,
                lease: etcd.grant(600),
                block,
                tunnel: block,
                mac,
                vtep,
            }
        })
        .collect()
}
