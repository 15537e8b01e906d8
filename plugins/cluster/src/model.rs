//! Files shared by `cnm-agent` (writer) and the `cluster` plugin (reader), and the block
//! arithmetic both sides must agree on.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

/// Default `--run-dir` of the agent and `runDir` of the plugin.
pub const DEFAULT_RUN_DIR: &str = "/run/cnm";

/// The cluster-wide definition of a network, stored once in etcd at
/// `/cnm/v1/nets/<net>/config` by the first creator; every host must agree on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    pub subnet: Ipv4Network,
    /// Prefix length of the per-host blocks.
    pub block: u8,
    pub vni: u32,
    /// The anycast gateway, present on every host's bridge.
    pub gateway: Ipv4Addr,
    /// VXLAN UDP port.
    pub port: u16,
    /// "blocks" (the only mode implemented).
    pub mode: String,
}

impl NetConfig {
    /// Decodes a config read back from etcd and checks it: another host, an older agent or a
    /// hand-made `etcdctl put` may have written it, and the block arithmetic ([`Self::blocks`])
    /// relies on [`Self::validate`] (found by fuzzing: `block` < the subnet's prefix panicked).
    pub fn decode(bytes: &[u8]) -> Result<NetConfig, String> {
        let c: NetConfig = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    /// Checks the invariants; the error names the field and the fix.
    pub fn validate(&self) -> Result<(), String> {
        let s = self.subnet;
        if s.network() != s.ip() {
            return Err(format!(
                "subnet {s} has host bits set; use {}/{}",
                s.network(),
                s.prefix()
            ));
        }
        if self.block < s.prefix() || self.block > 30 {
            return Err(format!(
                "block /{} must be between the subnet's /{} and /30",
                self.block,
                s.prefix()
            ));
        }
        if !s.contains(self.gateway) || self.gateway == s.network() || self.gateway == s.broadcast()
        {
            return Err(format!(
                "gateway {} must be a host address of {s}",
                self.gateway
            ));
        }
        if self.vni == 0 || self.vni > 0xff_ffff {
            return Err(format!("vni {} must be 1..16777215", self.vni));
        }
        if self.mode != "blocks" {
            return Err(format!(
                "mode {:?} is not supported (only \"blocks\")",
                self.mode
            ));
        }
        Ok(())
    }

    /// Every block of the subnet, in order.
    pub fn blocks(&self) -> impl Iterator<Item = Ipv4Network> + '_ {
        let n = 1u64 << (self.block - self.subnet.prefix());
        let size = 1u64 << (32 - self.block);
        let base = u32::from(self.subnet.network()) as u64;
        (0..n).filter_map(move |i| {
            Ipv4Network::new(Ipv4Addr::from((base + i * size) as u32), self.block).ok()
        })
    }

    /// A block may be leased unless it holds the anycast gateway.
    pub fn claimable(&self, b: &Ipv4Network) -> bool {
        !b.contains(self.gateway)
    }

    /// The VXLAN link of this network.
    pub fn vxlan_name(&self) -> String {
        format!("vx-{}", self.vni)
    }

    /// The default bridge name when the conflist's delegate names none.
    pub fn bridge_name(&self) -> String {
        format!("cnm-{}", self.vni)
    }

    /// Describes the first field where `other` differs, for the config-mismatch error.
    pub fn difference(&self, other: &NetConfig) -> Option<String> {
        let d =
            |k: &str, a: String, b: String| Some(format!("{k}: etcd has {a}, this host wants {b}"));
        if self.subnet != other.subnet {
            return d("subnet", self.subnet.to_string(), other.subnet.to_string());
        }
        if self.block != other.block {
            return d("block", self.block.to_string(), other.block.to_string());
        }
        if self.vni != other.vni {
            return d("vni", self.vni.to_string(), other.vni.to_string());
        }
        if self.gateway != other.gateway {
            return d(
                "gateway",
                self.gateway.to_string(),
                other.gateway.to_string(),
            );
        }
        if self.port != other.port {
            return d("port", self.port.to_string(), other.port.to_string());
        }
        if self.mode != other.mode {
            return d("mode", self.mode.clone(), other.mode.clone());
        }
        None
    }
}

/// The first and last address host-local may hand out in a block: the block's own base
/// address is kept for the host's tunnel IP and its last one is never used. A /31 or /32
/// block (only in a hand-edited `blocks.json`) has none: start > end, capacity 0.
pub fn block_range(b: &Ipv4Network) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(b.network());
    let last = u32::from(b.broadcast());
    (
        Ipv4Addr::from(base.saturating_add(1)),
        Ipv4Addr::from(last.saturating_sub(1)),
    )
}

/// How many addresses of a block host-local may hand out.
pub fn block_capacity(b: &Ipv4Network) -> usize {
    let (s, e) = block_range(b);
    // `e` is at most u32::MAX - 1, so `e + 1` cannot overflow.
    (u32::from(e) + 1).saturating_sub(u32::from(s)) as usize
}

/// What the agent publishes in `<runDir>/<net>/network.json`: the etcd config plus this host's
/// view (the MTU follows the underlay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalNetwork {
    pub network: String,
    pub host: String,
    pub config: NetConfig,
    /// Container MTU: underlay MTU minus the 50 bytes of VXLAN over IPv4.
    pub mtu: u32,
}

/// Health of the host's blocks, as the agent sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// etcd reachable, lease alive.
    Ok,
    /// etcd unreachable; the lease is presumed alive (it is renewed with the same ID).
    Degraded,
    /// At least one block this host held now belongs to another host or could not be re-claimed.
    Lost,
}

/// A block this host held and lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostBlock {
    pub cidr: Ipv4Network,
    pub reason: String,
}

/// `<runDir>/<net>/blocks.json`, rewritten atomically (temp file + rename) by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostBlocks {
    pub network: String,
    pub host: String,
    pub state: Health,
    pub etcd_reachable: bool,
    /// The last etcd error while unreachable.
    #[serde(default)]
    pub etcd_error: String,
    pub blocks: Vec<Ipv4Network>,
    #[serde(default)]
    pub lost: Vec<LostBlock>,
    /// The lease was not renewed for longer than its TTL (etcd out of reach): peers have
    /// probably withdrawn this host's blocks, so cross-host traffic may be cut.
    #[serde(default)]
    pub lease_expired: bool,
    /// Unix seconds of the last write.
    pub updated: u64,
}

/// The per-network directory under the run dir.
pub fn net_dir(run_dir: &Path, net: &str) -> PathBuf {
    run_dir.join(net)
}
pub fn blocks_path(run_dir: &Path, net: &str) -> PathBuf {
    net_dir(run_dir, net).join("blocks.json")
}
pub fn network_path(run_dir: &Path, net: &str) -> PathBuf {
    net_dir(run_dir, net).join("network.json")
}
/// host-local's `dataDir` for the network (reservations live in `<this>/<CNI network name>/`).
pub fn ipam_dir(run_dir: &Path, net: &str) -> PathBuf {
    net_dir(run_dir, net).join("ipam")
}

/// Reads and decodes a JSON file; the error names the file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("decode {}: {e}", path.display()))
}

/// Writes a file atomically: readers see the old or the new content, never a partial one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Every address host-local has reserved under the network's IPAM dir (all CNI network names).
pub fn reserved_ips(run_dir: &Path, net: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(ipam_dir(run_dir, net)) else {
        return out;
    };
    for d in rd.flatten() {
        let Ok(files) = std::fs::read_dir(d.path()) else {
            continue;
        };
        out.extend(files.flatten().filter_map(|f| {
            f.file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
        }));
    }
    out
}

/// Free addresses left in `b` given the reservations.
pub fn free_in(b: &Ipv4Network, reserved: &[Ipv4Addr]) -> usize {
    let (s, e) = block_range(b);
    let used = reserved.iter().filter(|ip| (s..=e).contains(*ip)).count();
    block_capacity(b).saturating_sub(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf() -> NetConfig {
        NetConfig {
            subnet: "10.250.0.0/16".parse().unwrap(),
            block: 26,
            vni: 4097,
            gateway: "10.250.0.1".parse().unwrap(),
            port: 4789,
            mode: "blocks".into(),
        }
    }

    #[test]
    fn blocks_and_ranges() {
        let c = conf();
        c.validate().unwrap();
        let all: Vec<_> = c.blocks().collect();
        assert_eq!(all.len(), 1024);
        assert_eq!(all[1].to_string(), "10.250.0.64/26");
        assert!(!c.claimable(&all[0]) && c.claimable(&all[1]));
        let (s, e) = block_range(&all[1]);
        assert_eq!(
            (s.to_string(), e.to_string()),
            ("10.250.0.65".into(), "10.250.0.126".into())
        );
        assert_eq!(block_capacity(&all[1]), 62);
        let r = vec![
            "10.250.0.65".parse().unwrap(),
            "10.250.0.1".parse().unwrap(),
        ];
        assert_eq!(free_in(&all[1], &r), 61);
    }

    #[test]
    fn validation_and_difference() {
        let mut c = conf();
        c.subnet = "10.250.1.0/16".parse().unwrap();
        assert!(c.validate().unwrap_err().contains("host bits"));
        let mut c = conf();
        c.block = 8;
        assert!(c.validate().unwrap_err().contains("block /8"));
        let mut c = conf();
        c.gateway = "10.1.0.1".parse().unwrap();
        assert!(c.validate().is_err());
        let mut o = conf();
        o.vni = 5000;
        assert_eq!(
            conf().difference(&o).unwrap(),
            "vni: etcd has 4097, this host wants 5000"
        );
        assert_eq!(conf().difference(&conf()), None);
    }

    /// Found by fuzzing (fuzz/regressions/agent_values): an etcd config whose block is wider
    /// than its subnet made `blocks()` overflow; `decode` refuses it with the field named.
    #[test]
    fn decode_validates_what_etcd_holds() {
        let good = serde_json::to_vec(&conf()).unwrap();
        assert_eq!(NetConfig::decode(&good).unwrap(), conf());
        let bad = br#"{"subnet":"10.0.0.0/16","block":8,"vni":1,"gateway":"10.0.0.1","port":1,"mode":"blocks"}"#;
        assert!(NetConfig::decode(bad).unwrap_err().contains("block /8"));
        assert!(NetConfig::decode(b"{}")
            .unwrap_err()
            .contains("missing field"));
    }

    /// Found by fuzzing: a /31 or /32 block (a hand-edited blocks.json) underflowed.
    #[test]
    fn tiny_blocks_have_no_capacity() {
        for b in [
            "0.0.0.0/32",
            "255.255.255.255/32",
            "10.0.0.0/31",
            "255.255.255.254/31",
        ] {
            let b: Ipv4Network = b.parse().unwrap();
            assert_eq!(block_capacity(&b), 0, "{b}");
            assert_eq!(free_in(&b, &[]), 0, "{b}");
        }
        assert_eq!(block_capacity(&"255.255.255.252/30".parse().unwrap()), 2);
    }
}
