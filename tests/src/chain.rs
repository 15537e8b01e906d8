//! The whole suite chained as a runtime runs it (bridge + host-local -> portmap -> firewall ->
//! tuning, plus loopback and host-local on their own) through the libcni runner inside a
//! throwaway host netns, and the leak inspection the fault, world and soak tests share: what is
//! left in the kernel (links, bridge ports, nftables set/map elements), in host-local's dataDir,
//! in tuning's dataDir and in the runtime's result cache.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::libcni::{conf_list_from_bytes, Cni, NetworkConfigList, RuntimeConf};
use crate::suite::suite_plugin_dir;
use crate::{host_local_reservations, nft_set_elements, Netns, PluginDir, TempDir};

/// One throwaway host with the suite's plugins, a host-local dataDir, a tuning dataDir and a
/// result cache, all removed on drop.
pub struct SuiteHost {
    pub host: Netns,
    pub data: TempDir,
    pub tuning: TempDir,
    pub cache: TempDir,
    pub plugins: PluginDir,
}

impl SuiteHost {
    /// `tag` starts every name (netns, directories): the helper's prefix, so parallel test
    /// binaries never share state.
    pub fn new(tag: &str) -> SuiteHost {
        let host = Netns::new(tag);
        // Routed traffic between the bridge and the remote side (port mappings) needs it.
        host.sh(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        SuiteHost {
            host,
            data: TempDir::new(&format!("{tag}d")),
            tuning: TempDir::new(&format!("{tag}t")),
            cache: TempDir::new(&format!("{tag}c")),
            plugins: suite_plugin_dir(),
        }
    }

    /// A libcni runner executing the plugins inside the host netns.
    pub fn cni(&self) -> Cni {
        Cni::new(vec![self.plugins.path().into()], self.cache.path()).in_netns(&self.host.path)
    }

    /// bridge (dual-stack host-local, gateway, masquerade) -> portmap -> firewall -> tuning.
    pub fn chain(
        &self,
        net: &str,
        bridge: &str,
        subnet4: &str,
        subnet6: &str,
    ) -> NetworkConfigList {
        self.chain_with_portmap(net, bridge, subnet4, subnet6, json!({}))
    }

    /// [`SuiteHost::chain`] with `portmap`'s keys (e.g. `conditionsV4`) added to its plugin.
    pub fn chain_with_portmap(
        &self,
        net: &str,
        bridge: &str,
        subnet4: &str,
        subnet6: &str,
        portmap: Value,
    ) -> NetworkConfigList {
        let mut pm = json!({"type": "portmap", "capabilities": {"portMappings": true}});
        for (k, v) in portmap.as_object().into_iter().flatten() {
            pm[k] = v.clone();
        }
        list(json!({
            "cniVersion": "1.1.0",
            "name": net,
            "plugins": [
                {
                    "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true,
                    "ipam": {
                        "type": "host-local", "dataDir": self.data.str(),
                        "ranges": [[{"subnet": subnet4}], [{"subnet": subnet6}]]
                    }
                },
                pm,
                {"type": "firewall", "backend": "nftables"},
                {"type": "tuning", "dataDir": self.tuning.str(), "mtu": 1400, "promisc": true}
            ]
        }))
    }

    /// bridge (IPv4 host-local, gateway, masquerade) -> portmap: the common runtime network.
    pub fn bridge_portmap(&self, net: &str, bridge: &str, subnet4: &str) -> NetworkConfigList {
        list(json!({
            "cniVersion": "1.1.0",
            "name": net,
            "plugins": [
                {
                    "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true,
                    "ipam": {"type": "host-local", "dataDir": self.data.str(), "ranges": [[{"subnet": subnet4}]]}
                },
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        }))
    }

    /// host-local alone, as a runtime (or a plugin delegating) calls it.
    pub fn host_local(&self, net: &str, subnet4: &str) -> NetworkConfigList {
        list(json!({
            "cniVersion": "1.1.0",
            "name": net,
            "plugins": [{
                "type": "host-local",
                "ipam": {"type": "host-local", "dataDir": self.data.str(), "ranges": [[{"subnet": subnet4}]]}
            }]
        }))
    }

    pub fn loopback(&self, net: &str) -> NetworkConfigList {
        list(json!({"cniVersion": "1.1.0", "name": net, "plugins": [{"type": "loopback"}]}))
    }

    /// Everything left behind that belongs to no attachment, as readable lines (empty: no
    /// leak). Call it when no attachment of `nets` is live. `bridges` may stay (shared state).
    pub fn leftovers(&self, nets: &[&str], bridges: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for l in self.host.link_names() {
            if l != "lo" && !bridges.contains(&l.as_str()) {
                out.push(format!("host link {l}"));
            }
        }
        for br in bridges {
            let ports = self.host.ip_json(&["link", "show", "master", br]);
            for p in ports.as_array().into_iter().flatten() {
                out.push(format!("port {} on bridge {br}", p["ifname"]));
            }
        }
        for net in nets {
            for ip in host_local_reservations(self.data.path(), net) {
                out.push(format!("host-local reservation {ip} in {net}"));
            }
        }
        // Bridge names stay in sets as long as the bridge does (shared, not per attachment).
        for e in nft_set_elements(&self.host.nft_ruleset()) {
            if !bridges.contains(&e.as_str()) {
                out.push(format!("nftables element {e}"));
            }
        }
        for dir in [self.tuning.path(), &self.cache.path().join("results")] {
            for f in files(dir) {
                out.push(format!("file {f}"));
            }
        }
        out
    }
}

fn files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn list(v: Value) -> NetworkConfigList {
    conf_list_from_bytes(v.to_string().as_bytes()).expect("valid conflist")
}

/// The runtime arguments of one attachment (`eth0` in `ns`), publishing `host_port` (TCP, to
/// container port 80) when given.
pub fn runtime_conf(ns: &Netns, id: &str, host_port: Option<u16>) -> RuntimeConf {
    let mut caps = Map::new();
    if let Some(p) = host_port {
        caps.insert(
            "portMappings".into(),
            json!([{"hostPort": p, "containerPort": 80, "protocol": "tcp"}]),
        );
    }
    RuntimeConf {
        container_id: id.into(),
        netns: ns.path_str().into(),
        ifname: "eth0".into(),
        args: vec![],
        capability_args: caps,
    }
}

/// The addresses (without prefix) of a 0.3.0+ result.
pub fn result_ips(r: &Value) -> Vec<String> {
    r["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["address"].as_str())
        .map(|a| a.split('/').next().unwrap_or("").to_string())
        .collect()
}

/// Waits up to `secs` for `leftovers` to become empty (bridge DEL deletes the veth in a
/// detached process, so the link disappears a little after the DEL returned); returns what is
/// still left.
pub fn settle(secs: u64, mut leftovers: impl FnMut() -> Vec<String>) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let left = leftovers();
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A small deterministic PRNG (xorshift64*) for fault schedules; the seed is printed so a
/// failing schedule can be replayed (`HF_SEED`).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The seed from `HF_SEED`, else from the clock.
    pub fn seed() -> u64 {
        std::env::var("HF_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[0, max]`.
    pub fn duration(&mut self, max: std::time::Duration) -> std::time::Duration {
        let us = max.as_micros() as u64;
        std::time::Duration::from_micros(self.below(us + 1))
    }
}

/// CPU time (user + system) of every waited-for child process so far: what a run costs on a
/// machine of its own, whatever the load around it (shared CI runners, parallel builds).
pub fn children_cpu() -> std::time::Duration {
    // SAFETY: getrusage(2) fills the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_CHILDREN is a valid `who`.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| {
        std::time::Duration::from_secs(t.tv_sec as u64)
            + std::time::Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
