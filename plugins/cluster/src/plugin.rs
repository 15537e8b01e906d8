//! The exec'd `cluster` meta plugin: turns the host's leased blocks into a `bridge` +
//! `host-local` config and runs the suite's bridge in-process (which itself runs host-local
//! in-process when it sits next to this binary). No etcd call on any path.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cni_core::{json, CniError, CniResult, Code, Command, Plugin, Request};
use ipnetwork::Ipv4Network;
use serde_json::{json as j, Map, Value};

use crate::model::{self, Health, HostBlocks, LocalNetwork};

pub struct Cluster;

/// How long an ADD waits for the agent to lease a block when every block is full and etcd
/// is reachable (the agent claims ahead of need, so this is the rare race).
const WAIT_FOR_BLOCK: Duration = Duration::from_secs(5);

/// The keys of our own conflist entry.
struct Conf {
    network: String,
    run_dir: PathBuf,
}

fn load(req: &Request) -> Result<Conf, CniError> {
    let s = |k: &str| -> Result<Option<String>, CniError> {
        match json::get(&req.conf, k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(CniError::new(
                Code::Decoding,
                format!("key {k:?} must be a string"),
            )),
        }
    };
    let network = s("network")?.unwrap_or_else(|| req.name.clone());
    if network.contains('/') || network.starts_with('.') {
        return Err(CniError::config(format!(
            "network {network:?} is not a valid cluster network name (no '/', no leading '.')"
        )));
    }
    if let Some(d) = json::get(&req.conf, "delegate") {
        if !d.is_object() && !d.is_null() {
            return Err(CniError::new(
                Code::Decoding,
                "key \"delegate\" must be an object of bridge keys",
            ));
        }
    }
    let run_dir = s("runDir")?.unwrap_or_else(|| model::DEFAULT_RUN_DIR.to_string());
    Ok(Conf {
        network,
        run_dir: PathBuf::from(run_dir),
    })
}

/// What the agent published, or a try-later error that names the missing piece.
fn published(c: &Conf) -> Result<(LocalNetwork, HostBlocks), CniError> {
    let hint = |e: String| {
        CniError::new(
            Code::TryAgainLater,
            format!(
                "cluster network {}: {e} (is cnm-agent running with --network {} --run-dir {}?)",
                c.network,
                c.network,
                c.run_dir.display()
            ),
        )
    };
    let net: LocalNetwork =
        model::read_json(&model::network_path(&c.run_dir, &c.network)).map_err(hint)?;
    let blocks: HostBlocks =
        model::read_json(&model::blocks_path(&c.run_dir, &c.network)).map_err(hint)?;
    Ok((net, blocks))
}

/// Blocks the host may allocate from now (held and not lost).
fn usable(b: &HostBlocks) -> Vec<Ipv4Network> {
    b.blocks
        .iter()
        .filter(|c| !b.lost.iter().any(|l| l.cidr == **c))
        .copied()
        .collect()
}

fn has_room(c: &Conf, b: &HostBlocks) -> bool {
    let reserved = model::reserved_ips(&c.run_dir, &c.network);
    usable(b)
        .iter()
        .any(|blk| model::free_in(blk, &reserved) > 0)
}

fn get_ci<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    m.iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(k))
        .map(|(_, v)| v)
}

fn remove_ci(m: &mut Map<String, Value>, k: &str) -> Option<Value> {
    let key = m.keys().find(|key| key.eq_ignore_ascii_case(k)).cloned()?;
    m.remove(&key)
}

/// The bridge config for the delegate call: our conflist entry without our own keys, with the
/// `delegate` keys merged in, `type: bridge`, and host-local ranges = one per host block.
fn delegate_conf(
    req: &Request,
    c: &Conf,
    net: Option<&LocalNetwork>,
    blocks: &[Ipv4Network],
) -> Result<Map<String, Value>, CniError> {
    let raw = json::parse(&req.stdin)?;
    let Value::Object(m) = raw else {
        return Err(CniError::new(
            Code::Decoding,
            "network config must be a JSON object",
        ));
    };
    Ok(build_delegate(m, c, net, blocks))
}

/// [`delegate_conf`] on an already parsed conflist entry.
fn build_delegate(
    mut m: Map<String, Value>,
    c: &Conf,
    net: Option<&LocalNetwork>,
    blocks: &[Ipv4Network],
) -> Map<String, Value> {
    for k in ["type", "network", "runDir"] {
        remove_ci(&mut m, k);
    }
    let delegate = match remove_ci(&mut m, "delegate") {
        Some(Value::Object(d)) => d,
        _ => Map::new(),
    };
    let mut user_ipam = Map::new();
    for (k, v) in delegate {
        if k.eq_ignore_ascii_case("ipam") {
            if let Value::Object(i) = v {
                user_ipam = i;
            }
            continue;
        }
        if k.eq_ignore_ascii_case("type") || k.eq_ignore_ascii_case("name") {
            continue;
        }
        remove_ci(&mut m, &k);
        m.insert(k, v);
    }
    m.insert("type".into(), j!("bridge"));
    let set_default = |m: &mut Map<String, Value>, k: &str, v: Value| {
        if get_ci(m, k).is_none() {
            m.insert(k.into(), v);
        }
    };
    let (subnet, gateway) = match net {
        Some(n) => (n.config.subnet, Some(n.config.gateway)),
        // DEL/GC without the agent's files: host-local releases by container ID, so any valid
        // range will do.
        None => ("192.0.2.0/24".parse().expect("literal"), None),
    };
    if let Some(n) = net {
        set_default(&mut m, "bridge", j!(n.config.bridge_name()));
        set_default(&mut m, "mtu", j!(n.mtu));
    }
    set_default(&mut m, "isGateway", j!(true));
    let ranges: Vec<Value> = if blocks.is_empty() {
        vec![j!({"subnet": subnet.to_string()})]
    } else {
        blocks
            .iter()
            .map(|b| {
                let (s, e) = model::block_range(b);
                let mut r = j!({"subnet": subnet.to_string(), "rangeStart": s.to_string(), "rangeEnd": e.to_string()});
                if let Some(g) = gateway {
                    r["gateway"] = j!(g.to_string());
                }
                r
            })
            .collect()
    };
    let mut ipam = Map::new();
    ipam.insert("type".into(), j!("host-local"));
    ipam.insert(
        "dataDir".into(),
        j!(model::ipam_dir(&c.run_dir, &c.network).to_string_lossy()),
    );
    ipam.insert("ranges".into(), j!([ranges]));
    for k in ["routes", "resolvConf"] {
        if let Some(v) = get_ci(&user_ipam, k) {
            ipam.insert(k.into(), v.clone());
        }
    }
    m.insert("ipam".into(), Value::Object(ipam));
    m
}

/// The request the delegate sees: same env and version, our rewritten config.
fn delegate_req(req: &Request, conf: Map<String, Value>) -> Request {
    let v = Value::Object(conf);
    Request {
        env: req.env.clone(),
        command: req.command,
        stdin: serde_json::to_vec(&v).unwrap_or_default(),
        conf: json::fold_keys(&v),
        cni_version: req.cni_version.clone(),
        name: req.name.clone(),
    }
}

fn bridge_of(d: &Map<String, Value>) -> Option<String> {
    get_ci(d, "bridge")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Files of the agent, or None when missing (DEL/GC stay best-effort without them).
fn published_opt(c: &Conf) -> Option<(LocalNetwork, HostBlocks)> {
    published(c).ok()
}

/// Waits until the host has a block with room; try-later error otherwise.
fn wait_for_room(c: &Conf) -> Result<(LocalNetwork, HostBlocks), CniError> {
    let deadline = Instant::now() + WAIT_FOR_BLOCK;
    loop {
        let (net, b) = published(c)?;
        if has_room(c, &b) {
            return Ok((net, b));
        }
        if !b.etcd_reachable {
            let why = if b.etcd_error.is_empty() {
                String::new()
            } else {
                format!(" (etcd: {})", b.etcd_error)
            };
            return Err(CniError::new(
                Code::TryAgainLater,
                format!(
                    "cluster network {}: no free IP in this host's blocks and etcd unreachable{why}; retry when etcd is back",
                    c.network
                ),
            ));
        }
        if Instant::now() >= deadline {
            return Err(CniError::new(
                Code::TryAgainLater,
                format!(
                    "cluster network {}: no free IP in this host's {} block(s) and cnm-agent leased no new one within {}s (max blocks per host reached, or the subnet is full)",
                    c.network,
                    usable(&b).len(),
                    WAIT_FOR_BLOCK.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The container addresses of a prevResult that no held block covers, with why.
fn outside_blocks(prev: &CniResult, b: &HostBlocks) -> Vec<String> {
    let held = usable(b);
    prev.ips
        .iter()
        .filter_map(|ip| match ip.address.ip() {
            IpAddr::V4(a) if !held.iter().any(|h| h.contains(a)) => {
                Some(match b.lost.iter().find(|l| l.cidr.contains(a)) {
                    Some(l) => format!(
                        "{a} is in block {} which this host lost: {}",
                        l.cidr, l.reason
                    ),
                    None => format!("{a} is in no block leased to host {}", b.host),
                })
            }
            _ => None,
        })
        .collect()
}

/// proxy_arp on the bridge, answered at once (the kernel delays proxied ARP replies by up to
/// 0.8 s by default, which loses the first packets of every new flow).
pub fn set_proxy_arp(bridge: &str) -> Result<(), CniError> {
    for (k, v) in [
        (format!("net/ipv4/neigh/{bridge}/proxy_delay"), "0"),
        (format!("net/ipv4/conf/{bridge}/proxy_arp"), "1"),
    ] {
        cni_netlink::sysctl_set(&k, v)
            .map_err(|e| CniError::internal(format!("set {k} on bridge {bridge}: {e}")))?;
    }
    Ok(())
}

/// For other runtimes (cnm-shim's Docker networks): the `bridge` config this plugin would
/// delegate to for a conflist `{"name": <network>, "type": "cluster"}` (same bridge, MTU,
/// anycast gateway, host-local store and one range per usable block of this host), waiting
/// like ADD does when every block is full. After an ADD with it, call [`set_proxy_arp`].
pub fn bridge_config(
    run_dir: &Path,
    network: &str,
    cni_version: &str,
) -> Result<(Value, LocalNetwork), CniError> {
    let c = Conf {
        network: network.to_string(),
        run_dir: run_dir.to_path_buf(),
    };
    let (net, blocks) = wait_for_room(&c)?;
    let mut m = Map::new();
    m.insert("cniVersion".into(), j!(cni_version));
    m.insert("name".into(), j!(network));
    let d = build_delegate(m, &c, Some(&net), &usable(&blocks));
    Ok((Value::Object(d), net))
}

/// The blocks this host may allocate from now (held and not lost), for a caller that must
/// check a requested address before asking host-local.
pub fn usable_blocks(run_dir: &Path, network: &str) -> Result<Vec<Ipv4Network>, CniError> {
    let c = Conf {
        network: network.to_string(),
        run_dir: run_dir.to_path_buf(),
    };
    Ok(usable(&published(&c)?.1))
}

/// What every ADD on a cluster bridge needs besides the bridge plugin's own work (shared by
/// this plugin and cnm-shim): proxy ARP ([`set_proxy_arp`]), and on a host whose FORWARD
/// chain dockerd set to drop, `-i vx-<vni> -j ACCEPT` in DOCKER-USER (the bridge plugin only
/// accepts what comes *from* the bridge, and what comes back; a new flow from another host
/// arrives on the VXLAN link). cnm-agent removes that rule with the link.
pub fn finish_add(bridge: &str, net: &LocalNetwork) -> Result<(), CniError> {
    set_proxy_arp(bridge)?;
    let vx = net.config.vxlan_name();
    cni_nft::forward::ensure_iface_accept(&vx)
        .map(drop)
        .map_err(|e| CniError::internal(format!("accept forwarding from {vx}: {e}")))
}

/// The bridge request for DEL and GC: they must work whatever the agent published (nothing,
/// or blocks lost since), so the blocks are taken as found, possibly none.
fn best_effort_delegate(req: &Request) -> Result<Request, CniError> {
    let c = load(req)?;
    let p = published_opt(&c);
    let blocks = p
        .as_ref()
        .map(|(_, b)| b.blocks.clone())
        .unwrap_or_default();
    let d = delegate_conf(req, &c, p.as_ref().map(|(n, _)| n), &blocks)?;
    Ok(delegate_req(req, d))
}

impl Plugin for Cluster {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let c = load(req)?;
        let (net, blocks) = wait_for_room(&c)?;
        let d = delegate_conf(req, &c, Some(&net), &usable(&blocks))?;
        let bridge = bridge_of(&d).unwrap_or_else(|| net.config.bridge_name());
        let dreq = delegate_req(req, d);
        let res = cni_bridge::plugin::BRIDGE.add(&dreq)?;
        // Remote blocks are reached through the host (routes via the VXLAN link): the bridge
        // answers ARP for them, since every container sees the whole subnet as on-link.
        if let Err(e) = finish_add(&bridge, &net) {
            let _ = cni_bridge::plugin::BRIDGE.del(&Request {
                command: Command::Del,
                ..dreq
            });
            return Err(e);
        }
        Ok(res)
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        cni_bridge::plugin::BRIDGE.del(&best_effort_delegate(req)?)
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let c = load(req)?;
        let (net, blocks) = published(&c)?;
        if let Some(prev) = req.prev_result()? {
            let bad = outside_blocks(&prev, &blocks);
            if !bad.is_empty() {
                return Err(CniError::internal(format!(
                    "cluster network {}: {}",
                    c.network,
                    bad.join("; ")
                )));
            }
        }
        let d = delegate_conf(req, &c, Some(&net), &blocks.blocks)?;
        cni_bridge::plugin::BRIDGE.check(&delegate_req(req, d))
    }

    fn gc(&self, req: &Request) -> Result<(), CniError> {
        cni_bridge::plugin::BRIDGE.gc(&best_effort_delegate(req)?)
    }

    /// 50 when the host cannot serve an ADD (nothing published, or no room and etcd down);
    /// 51 when a block with containers in it was lost to another host, or the lease was not
    /// renewed for longer than its TTL (peers have probably withdrawn this host).
    fn status(&self, req: &Request) -> Result<(), CniError> {
        let c = load(req)?;
        let (net, blocks) = published(&c).map_err(|e| CniError::new(Code::NotAvailable, e.msg))?;
        if blocks.state == Health::Lost || !blocks.lost.is_empty() {
            let lost: Vec<String> = blocks
                .lost
                .iter()
                .map(|l| format!("{} ({})", l.cidr, l.reason))
                .collect();
            return Err(CniError::new(
                Code::LimitedConnectivity,
                format!(
                    "cluster network {}: host {} lost block(s) in use: {}; containers there have no cross-host traffic, recreate them",
                    c.network,
                    blocks.host,
                    lost.join(", ")
                ),
            ));
        }
        if !has_room(&c, &blocks) && !blocks.etcd_reachable {
            return Err(CniError::new(
                Code::NotAvailable,
                format!(
                    "cluster network {}: no free IP in this host's blocks and etcd unreachable ({})",
                    c.network, blocks.etcd_error
                ),
            ));
        }
        if blocks.lease_expired {
            return Err(CniError::new(
                Code::LimitedConnectivity,
                format!(
                    "cluster network {}: host {} could not renew its block lease for longer than its TTL (etcd: {}); other hosts have probably withdrawn its blocks, so cross-host traffic may be cut until the agent reaches etcd again",
                    c.network, blocks.host, blocks.etcd_error
                ),
            ));
        }
        let d = delegate_conf(req, &c, Some(&net), &usable(&blocks))?;
        cni_bridge::plugin::BRIDGE.status(&delegate_req(req, d))
    }
}
