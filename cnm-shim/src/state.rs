//! Everything dockerd will not replay, persisted as one JSON document (`state.json`) replaced
//! atomically (write a temporary file, rename it over the old one) on every change, so a
//! `kill -9` at any point leaves either the old or the new state on disk. There is no fsync:
//! it would cost ~10 ms per change (several per `docker run`), and it only protects against
//! an OS crash, after which every container and endpoint is gone anyway and reconciliation
//! repairs whatever the (old but consistent: rename-over flushes data first on ext4/xfs)
//! state says.
//!
//! External effects follow a write-ahead discipline: the intent (a `Creating`/`Deleting`
//! phase, an `Allocating` reservation) is persisted *before* the effect, the outcome after it.
//! Startup reconciliation ([`crate::reconcile`]) finishes or undoes whatever a crash left
//! half-done.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cni::StoreRef;
use crate::cniconf::CniBinding;
use crate::err;
use crate::error::{Ctx, Result};
use crate::netopts::NetOpts;

pub const STATE_FILE: &str = "state.json";
const VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Creating,
    Ready,
    Deleting,
}

/// One subnet of a network as CreateNetwork gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub pool: IpNetwork,
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub phase: Phase,
    pub bridge: String,
    /// The bridge existed before the network (`-o bridge=` of a bridge made elsewhere): it is
    /// never deleted.
    pub bridge_preexisted: bool,
    pub internal: bool,
    /// Its subnets were pools of our IPAM driver when it was created.
    #[serde(default)]
    pub ipam: bool,
    pub v4: Option<Subnet>,
    pub v6: Option<Subnet>,
    pub opts: NetOpts,
    /// Bound to a CNI network (`-o cni.network`): its bridge, options and host-local store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniBinding>,
}

/// A reservation (host-local `CNI_CONTAINERID`) an endpoint took over from `RequestAddress`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub handle: String,
    pub ip: IpAddr,
}

/// A published port as programmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMap {
    pub proto: u8,
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub dest: IpAddr,
    pub dest_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub network: String,
    pub phase: Phase,
    /// Host-side name of the container end between CreateEndpoint and Join, and after Leave.
    pub link: String,
    pub addr4: Option<IpNetwork>,
    pub addr6: Option<IpNetwork>,
    pub mac: String,
    /// The bridge network config used for ADD (without per-call `args`).
    pub conf: Value,
    /// The bridge's ADD result, the `prevResult` of DEL.
    pub result: Option<Value>,
    /// `RequestAddress` reservations this endpoint converted into its own.
    pub converted: Vec<Held>,
    pub ports: Vec<PortMap>,
    /// `CNI_IFNAME` of its bridge and host-local calls.
    #[serde(default = "default_ifname")]
    pub ifname: String,
}

fn default_ifname() -> String {
    crate::cni::IFNAME.to_string()
}

/// An IPAM pool (`RequestPool`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub id: String,
    pub address_space: String,
    pub subnet: IpNetwork,
    /// `--ip-range`: where dynamic addresses come from.
    pub range: Option<IpNetwork>,
    pub gateway: Option<IpAddr>,
    pub v6: bool,
    /// UNIX seconds of the RequestPool.
    #[serde(default)]
    pub created: u64,
    /// The CNI network whose store the pool's addresses come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniBinding>,
    /// The cluster network with this subnet, as cnm-agent knew it at RequestPool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::Hint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResPhase {
    /// host-local ADD in flight (or interrupted): whatever it holds is released at startup.
    Allocating,
    Held,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResIp {
    pub ip: IpAddr,
    /// Docker sent ReleaseAddress for it.
    pub released: bool,
}

/// What host-local holds under one `CNI_CONTAINERID` (ifname always `eth0`): a `RequestAddress`
/// handle, or an endpoint ID once the endpoint exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub handle: String,
    pub phase: ResPhase,
    /// The pool of an `Allocating` request.
    pub pool: Option<String>,
    pub ips: Vec<ResIp>,
    /// The live endpoint using these addresses.
    pub endpoint: Option<String>,
    /// The shared store it is in (a bound network's); `None`: the shim's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreRef>,
    /// UNIX seconds since it waits for docker's next call about it: its RequestAddress (next:
    /// CreateEndpoint) or its endpoint's removal (next: ReleaseAddress); 0 = unknown (state of
    /// an older version: never swept as unclaimed).
    #[serde(default)]
    pub waiting_since: u64,
    /// The network whose `--aux-address` this is (its CreateNetwork listed it): held for the
    /// network's lifetime, never swept as unclaimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aux_of: Option<String>,
}

impl Reservation {
    /// No longer needed: docker released every address and no endpoint uses it.
    pub fn finished(&self) -> bool {
        self.phase == ResPhase::Held
            && self.endpoint.is_none()
            && self.ips.iter().all(|i| i.released)
    }

    pub fn holds(&self, ip: &IpAddr) -> bool {
        self.ips.iter().any(|i| &i.ip == ip && !i.released)
    }

    /// Held for no endpoint and no `--aux-address`, and still not released `grace` seconds
    /// after `waiting_since`, or after `started` (the shim's start: calls docker was retrying
    /// while the shim was down arrive within seconds of it). Docker has no use for such an
    /// address: the reply to its RequestAddress, or its ReleaseAddress after the endpoint's
    /// deletion, was lost to a crash.
    pub fn unclaimed(&self, now: u64, started: u64, grace: u64) -> bool {
        self.phase == ResPhase::Held
            && self.endpoint.is_none()
            && self.aux_of.is_none()
            && self.waiting_since != 0
            && self.ips.iter().any(|i| !i.released)
            && now.saturating_sub(self.waiting_since.max(started)) >= grace
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub version: u32,
    #[serde(default)]
    pub networks: BTreeMap<String, Network>,
    #[serde(default)]
    pub endpoints: BTreeMap<String, Endpoint>,
    #[serde(default)]
    pub pools: BTreeMap<String, Pool>,
    #[serde(default)]
    pub reservations: BTreeMap<String, Reservation>,
}

impl State {
    /// The held, unreleased reservation of `ip` not yet owned by an endpoint.
    pub fn pending_for(&self, ip: &IpAddr) -> Option<&Reservation> {
        self.reservations
            .values()
            .find(|r| r.phase == ResPhase::Held && r.endpoint.is_none() && r.holds(ip))
    }

    /// The held reservation docker still has `ip` under (pending or endpoint-owned).
    pub fn holder_of(&self, ip: &IpAddr) -> Option<&Reservation> {
        self.reservations
            .values()
            .find(|r| r.phase == ResPhase::Held && r.holds(ip))
    }

    /// A network docker forgot while the shim was away (its DeleteNetwork never arrived): it
    /// used our IPAM and docker has released its pools since.
    pub fn is_dead(&self, n: &Network) -> bool {
        n.ipam
            && [&n.v4, &n.v6]
                .into_iter()
                .flatten()
                .all(|sn| !self.pools.values().any(|p| p.subnet == sn.pool))
    }

    /// Our pool containing `ip`.
    pub fn pool_of(&self, ip: &IpAddr) -> Option<&Pool> {
        self.pools.values().find(|p| p.subnet.contains(*ip))
    }
}

/// The on-disk location of the state.
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Loads the state; a missing file is an empty state. A corrupt file is an error that
    /// names the file (the daemon refuses to start rather than forget what it owns).
    pub fn load(&self) -> Result<State> {
        std::fs::create_dir_all(&self.dir)
            .ctx(|| format!("create state dir {}", self.dir.display()))?;
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State {
                    version: VERSION,
                    ..Default::default()
                })
            }
            Err(e) => return Err(err!("read {}: {e}", path.display())),
        };
        let s: State = serde_json::from_slice(&bytes).map_err(|e| {
            err!(
                "{} is corrupt ({e}); move it aside to start with an empty state (networks and containers made before then must be recreated)",
                path.display()
            )
        })?;
        if s.version > VERSION {
            return Err(err!(
                "{} was written by a newer cnm-shim (state version {}); upgrade cnm-shim",
                path.display(),
                s.version
            ));
        }
        Ok(s)
    }

    /// Atomically replaces the state on disk.
    pub fn save(&self, s: &State) -> Result<()> {
        let path = self.path();
        let tmp = self.dir.join(format!(".{STATE_FILE}.tmp"));
        let mut doc = s.clone();
        doc.version = VERSION;
        let bytes = serde_json::to_vec_pretty(&doc).ctx(|| "encode state")?;
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            drop(f);
            std::fs::rename(&tmp, &path)
        };
        write().ctx(|| {
            format!(
                "save state to {} (is the state dir writable and the disk not full?)",
                path.display()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_corruption() {
        let dir = std::env::temp_dir().join(format!("cnm-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::new(&dir);
        let mut s = store.load().unwrap();
        assert!(s.networks.is_empty());
        s.reservations.insert(
            "h1".into(),
            Reservation {
                handle: "h1".into(),
                phase: ResPhase::Held,
                pool: None,
                ips: vec![ResIp {
                    ip: "10.1.0.2".parse().unwrap(),
                    released: false,
                }],
                endpoint: None,
                store: None,
                waiting_since: 0,
                aux_of: None,
            },
        );
        s.pools.insert(
            "p".into(),
            Pool {
                id: "p".into(),
                address_space: "x".into(),
                subnet: "10.1.0.0/24".parse().unwrap(),
                range: None,
                gateway: None,
                v6: false,
                created: 0,
                cni: None,
                cluster: None,
            },
        );
        store.save(&s).unwrap();
        let back = store.load().unwrap();
        assert_eq!(back.reservations, s.reservations);
        let ip: IpAddr = "10.1.0.2".parse().unwrap();
        assert_eq!(back.pending_for(&ip).unwrap().handle, "h1");
        assert_eq!(back.pool_of(&ip).unwrap().id, "p");
        std::fs::write(store.path(), b"{not json").unwrap();
        let e = store.load().unwrap_err();
        assert!(
            e.0.contains("corrupt") && e.0.contains("move it aside"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unclaimed_reservations() {
        let mut r = Reservation {
            handle: "cnm-req-1".into(),
            phase: ResPhase::Held,
            pool: Some("p".into()),
            ips: vec![ResIp {
                ip: "10.1.0.2".parse().unwrap(),
                released: false,
            }],
            endpoint: None,
            store: None,
            waiting_since: 1000,
            aux_of: None,
        };
        assert!(!r.unclaimed(1019, 0, 20), "within the grace period");
        assert!(r.unclaimed(1020, 0, 20));
        assert!(!r.unclaimed(1020, 1010, 20), "grace restarts with the shim");
        assert!(r.unclaimed(1030, 1010, 20));
        for f in [
            |r: &mut Reservation| r.endpoint = Some("e".into()),
            |r: &mut Reservation| r.aux_of = Some("n".into()),
            |r: &mut Reservation| r.waiting_since = 0,
            |r: &mut Reservation| r.ips[0].released = true,
        ] {
            let mut x = r.clone();
            f(&mut x);
            assert!(!x.unclaimed(5000, 0, 20), "{x:?}");
        }
        r.phase = ResPhase::Allocating;
        assert!(!r.unclaimed(5000, 0, 20));
    }
}
