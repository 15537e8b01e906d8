//! Docker networks that span hosts (`-o cluster=<name>`): the network is a cluster network of
//! cnm-agent (etcd block leases + VXLAN), joined through the agent's local socket; the shim
//! never talks to etcd. Once joined, the Docker network is a [`CniBinding`] whose bridge
//! config is the one the `cluster` CNI plugin builds ([`cni_cluster::plugin::bridge_config`]):
//! same bridge, MTU, anycast gateway and host-local store (`<run-dir>/<net>/ipam/<net>`) as
//! CNI containers of that network on this host, with one range per block this host holds,
//! re-read at every allocation (the agent leases more blocks as they fill up).
//!
//! The IPAM driver never sees `-o`: at RequestPool the shim asks the agent whether a cluster
//! network has that subnet ([`Hint`]), so a later host's gateway request answers the anycast
//! gateway; on the first host the config does not exist yet and the default (the subnet's
//! first address) is what the join then writes.

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::{IpNetwork, Ipv4Network};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::api::CreateNetwork;
use crate::cniconf::CniBinding;
use crate::config::Config;
use crate::err;
use crate::error::Result;
use crate::ipam::{GLOBAL_SPACE, LOCAL_SPACE};
use crate::state::State;

/// `-o cluster=<name>`; `-o cluster.block=`, `cluster.vni=`, `cluster.port=` set (on the
/// first host) or check (on later hosts) those fields of the cluster config.
pub const OPT_CLUSTER: &str = "cluster";
const SUB_OPTS: [&str; 3] = ["block", "vni", "port"];
/// A join waits for etcd and for the host's first block.
const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

/// What RequestPool learned from the agent: the cluster network that has the pool's subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hint {
    pub network: String,
    pub gateway: IpAddr,
}

/// One request to the agent, one answer; `ok: false` becomes the error.
fn call(cfg: &Config, req: Value) -> Result<Value> {
    let sock = &cfg.agent_socket;
    let io = |e: std::io::Error| {
        err!(
            "cnm-agent at {}: {e}; is cnm-agent running on this host (--socket {})?",
            sock.display(),
            sock.display()
        )
    };
    let mut s = UnixStream::connect(sock).map_err(io)?;
    s.set_read_timeout(Some(AGENT_TIMEOUT)).map_err(io)?;
    s.set_write_timeout(Some(AGENT_TIMEOUT)).map_err(io)?;
    s.write_all(format!("{req}\n").as_bytes()).map_err(io)?;
    let mut line = String::new();
    BufReader::new(s.take_limit())
        .read_line(&mut line)
        .map_err(io)?;
    let v: Value = serde_json::from_str(line.trim())
        .map_err(|e| err!("cnm-agent at {}: unreadable answer ({e})", sock.display()))?;
    if v["ok"] != json!(true) {
        return Err(err!(
            "{}",
            v["error"]
                .as_str()
                .unwrap_or("cnm-agent refused the request")
        ));
    }
    Ok(v)
}

trait TakeLimit {
    fn take_limit(self) -> std::io::Take<UnixStream>;
}
impl TakeLimit for UnixStream {
    fn take_limit(self) -> std::io::Take<UnixStream> {
        std::io::Read::take(self, 1 << 20)
    }
}

/// RequestPool: the cluster network whose subnet this is, when an agent runs here and knows
/// one. No agent (or no answer) means an ordinary pool.
pub fn lookup(cfg: &Config, subnet: &IpNetwork) -> Option<Hint> {
    if !subnet.is_ipv4() || !cfg.agent_socket.exists() {
        return None;
    }
    match call(cfg, json!({"op": "lookup", "subnet": subnet.to_string()})) {
        Ok(v) => Some(Hint {
            network: v["network"].as_str()?.to_string(),
            gateway: v["config"]["gateway"].as_str()?.parse().ok()?,
        }),
        Err(e) => {
            crate::warn!("cluster lookup of {subnet}: {e}");
            None
        }
    }
}

/// The gateway request of a pool with a hint: the anycast gateway (`--gateway` must equal it).
pub fn gateway(h: &Hint, want: Option<IpAddr>) -> Result<IpAddr> {
    match want {
        Some(w) if w != h.gateway => Err(err!(
            "--gateway {w} contradicts cluster network {}: its anycast gateway is {}; drop --gateway or use {}",
            h.network,
            h.gateway,
            h.gateway
        )),
        _ => Ok(h.gateway),
    }
}

/// `-o cluster=` and `-o cluster.*=` taken out of the generic options.
pub fn take_options(
    generic: &mut Map<String, Value>,
) -> Result<Option<(String, Map<String, Value>)>> {
    let name = match generic.remove(OPT_CLUSTER) {
        None => None,
        Some(Value::String(n)) if !n.is_empty() => Some(n),
        Some(v) => {
            return Err(err!(
                "network option cluster={v}: give the name of a cluster network"
            ))
        }
    };
    let mut sub = Map::new();
    for k in SUB_OPTS {
        if let Some(v) = generic.remove(&format!("{OPT_CLUSTER}.{k}")) {
            let n: u64 = v
                .as_str()
                .and_then(|s| s.parse().ok())
                .or_else(|| v.as_u64())
                .ok_or_else(|| err!("network option cluster.{k}={v}: give a number"))?;
            sub.insert(k.to_string(), json!(n));
        }
    }
    match name {
        Some(n) => Ok(Some((n, sub))),
        None if !sub.is_empty() => Err(err!(
            "network options cluster.{}: add -o cluster=<name>",
            sub.keys().next().map(String::as_str).unwrap_or("*")
        )),
        None => Ok(None),
    }
}

fn command(cfg: &Config, net: &str, subnet: &str) -> String {
    format!(
        "docker network create -d {d} --ipam-driver {d} -o cluster={net} --subnet {subnet} <name>",
        d = cfg.name
    )
}

/// CreateNetwork without `-o cluster`: refused when the pool is a cluster network's.
pub fn check_unbound(cfg: &Config, s: &State, req: &CreateNetwork) -> Result<()> {
    for d in &req.ipv4_data {
        if let Some(h) = s
            .pools
            .values()
            .find(|p| p.subnet.to_string() == d.pool)
            .and_then(|p| p.cluster.as_ref())
        {
            return Err(err!(
                "subnet {} is cluster network {}'s; to join it add -o cluster={}: {}; otherwise choose another --subnet",
                d.pool,
                h.network,
                h.network,
                command(cfg, &h.network, &d.pool)
            ));
        }
    }
    Ok(())
}

/// CreateNetwork with `-o cluster=<name>`: validates the Docker side, joins through the
/// agent (which creates or checks the cluster config in etcd) and returns the binding.
pub fn join(
    cfg: &Config,
    s: &State,
    name: &str,
    sub: &Map<String, Value>,
    req: &CreateNetwork,
    internal: bool,
) -> Result<CniBinding> {
    let d = match req.ipv4_data.as_slice() {
        [d] => d,
        _ => {
            return Err(err!(
                "cluster={name}: give exactly one IPv4 --subnet (the cluster network's): {}",
                command(cfg, name, "<cluster subnet>")
            ))
        }
    };
    let cmd = command(cfg, name, &d.pool);
    if !req.ipv6_data.is_empty() {
        return Err(err!(
            "cluster={name}: cluster networks are IPv4 only; drop --ipv6"
        ));
    }
    if internal {
        return Err(err!(
            "--internal cannot be used with -o cluster={name}: the network reaches other hosts; drop --internal"
        ));
    }
    if d.address_space != LOCAL_SPACE && d.address_space != GLOBAL_SPACE {
        return Err(err!(
            "cluster={name}: the addresses must come from this host's blocks, not Docker's IPAM driver (address space {:?}); add --ipam-driver {}: {cmd}",
            d.address_space,
            cfg.name
        ));
    }
    let subnet: Ipv4Network = d
        .pool
        .parse()
        .map_err(|e| err!("cluster={name}: subnet {:?}: {e}", d.pool))?;
    let pool = s.pools.values().find(|p| p.subnet == IpNetwork::V4(subnet));
    if let Some(h) = pool.and_then(|p| p.cluster.as_ref()) {
        if h.network != name {
            return Err(err!(
                "subnet {subnet} is cluster network {}'s, not {name}'s; use -o cluster={} or another --subnet",
                h.network,
                h.network
            ));
        }
    }
    if pool.is_some_and(|p| p.range.is_some()) {
        return Err(err!(
            "cluster={name}: --ip-range cannot be used: addresses come from this host's blocks; drop --ip-range"
        ));
    }
    let mut r = json!({"op": "join", "network": name, "subnet": subnet.to_string()});
    if !d.gateway.is_empty() {
        let gw = crate::pool::parse_addr(&d.gateway, "gateway")?.ip();
        r["gateway"] = json!(gw.to_string());
    }
    for (k, v) in sub {
        r[k] = v.clone();
    }
    let v = call(cfg, r).map_err(|e| e.context(format!("cannot join cluster network {name}")))?;
    let run_dir = PathBuf::from(
        v["run_dir"]
            .as_str()
            .unwrap_or(cni_cluster::model::DEFAULT_RUN_DIR),
    );
    let b = binding(name, &run_dir)?;
    crate::info!("joined cluster network {name} (config {})", v["config"]);
    Ok(b)
}

/// DeleteNetwork: tells the agent the Docker network is gone (it leaves the cluster network
/// when nothing else on this host uses it). Best-effort.
pub fn leave(cfg: &Config, name: &str) {
    match call(cfg, json!({"op": "leave", "network": name})) {
        Ok(v) => crate::info!("cnm-agent: {}", v["message"].as_str().unwrap_or("")),
        Err(e) => crate::warn!("leave cluster network {name}: {e}"),
    }
}

/// A binding to cluster network `name` with the bridge config of this moment.
pub fn binding(name: &str, run_dir: &Path) -> Result<CniBinding> {
    let (bridge, _) = cni_cluster::plugin::bridge_config(run_dir, name, crate::cni::CNI_VERSION)
        .map_err(|e| err!("cluster network {name}: {}", e.msg))?;
    Ok(CniBinding {
        network: name.to_string(),
        file: cni_cluster::model::network_path(run_dir, name),
        bridge,
        cluster: Some(run_dir.to_path_buf()),
    })
}

/// The binding with its ranges re-read from the host's current blocks (other bindings as is).
pub fn current(b: &CniBinding) -> Result<std::borrow::Cow<'_, CniBinding>> {
    match &b.cluster {
        Some(run) => binding(&b.network, run).map(std::borrow::Cow::Owned),
        None => Ok(std::borrow::Cow::Borrowed(b)),
    }
}

/// `--ip` on a cluster network must lie in a block this host holds.
pub fn check_address(b: &CniBinding, ip: IpAddr) -> Result<()> {
    let (Some(run), IpAddr::V4(v4)) = (&b.cluster, ip) else {
        return Ok(());
    };
    let blocks = cni_cluster::plugin::usable_blocks(run, &b.network)
        .map_err(|e| err!("cluster network {}: {}", b.network, e.msg))?;
    if blocks.iter().any(|blk| blk.contains(v4)) {
        return Ok(());
    }
    let list: Vec<String> = blocks.iter().map(ToString::to_string).collect();
    Err(err!(
        "address {ip} is not in this host's blocks of cluster network {} ({}): other addresses of the subnet belong to other hosts; drop --ip or use an address of those blocks",
        b.network,
        if list.is_empty() { "none yet".to_string() } else { list.join(", ") }
    ))
}

/// After the bridge plugin's ADD: what the `cluster` plugin does after its own
/// ([`cni_cluster::plugin::finish_add`]: proxy ARP, forwarding from the VXLAN link).
pub fn after_add(b: &CniBinding) -> Result<()> {
    let Some(run) = &b.cluster else {
        return Ok(());
    };
    let net: cni_cluster::model::LocalNetwork =
        cni_cluster::model::read_json(&b.file).map_err(|e| {
            err!(
                "cluster network {}: {e}; is cnm-agent running? (--agent-socket {})",
                b.network,
                run.display()
            )
        })?;
    cni_cluster::plugin::finish_add(&b.bridge_name(), &net).map_err(|e| err!("{}", e.msg))
}
