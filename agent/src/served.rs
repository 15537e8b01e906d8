//! The networks this agent serves, each driven by its own [`Net`] task with its own stop
//! signal: the ones named by `--network` (or found in etcd at start) and the ones joined at
//! run time through the local socket (`crate::sock`, for cnm-shim). A joined network is
//! remembered by a marker file `<state-dir>/<net>/joined`, so a restarted agent serves it again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use cni_cluster::model::NetConfig;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::net::{Net, Settings};
use crate::store::Etcd;

/// Why a network is served: only a joined one is left on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `--network` or discovered in etcd at start.
    Flag,
    /// Joined through the socket (a Docker network).
    Join,
}

struct Entry {
    config: NetConfig,
    origin: Origin,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<()>>,
}

pub struct Served {
    pub settings: Settings,
    pub etcd: Etcd,
    nets: Mutex<BTreeMap<String, Entry>>,
}

/// The marker of a network joined through the socket.
pub fn marker(state_dir: &Path, net: &str) -> PathBuf {
    state_dir.join(net).join("joined")
}

/// Networks joined through the socket before a restart.
pub fn joined(state_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(state_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("joined").exists())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

impl Served {
    pub fn new(settings: Settings, etcd: Etcd) -> Served {
        Served {
            settings,
            etcd,
            nets: Mutex::new(BTreeMap::new()),
        }
    }

    /// Starts serving `name` unless it already is; returns the config it is served with.
    /// A joined network that is also a `--network` one stays a `Flag` one.
    pub async fn start(&self, name: &str, config: NetConfig, origin: Origin) -> NetConfig {
        let mut nets = self.nets.lock().await;
        if let Some(e) = nets.get(name) {
            return e.config.clone();
        }
        let (tx, rx) = watch::channel(false);
        let n = Net::new(
            name.to_string(),
            self.settings.clone(),
            self.etcd.clone(),
            config.clone(),
        );
        info!(network = name, ?origin, "serving network");
        nets.insert(
            name.to_string(),
            Entry {
                config: config.clone(),
                origin,
                stop: tx,
                task: tokio::spawn(n.run(rx)),
            },
        );
        config
    }

    /// Stops serving a joined network (the task leaves cleanly when no container is left).
    /// A `--network` one is kept; the answer says which happened.
    pub async fn leave(&self, name: &str) -> String {
        let entry = {
            let mut nets = self.nets.lock().await;
            match nets.get(name).map(|e| e.origin) {
                None => return format!("network {name} is not served by this agent"),
                Some(Origin::Flag) => {
                    return format!("network {name} stays: it is served by --network")
                }
                Some(Origin::Join) => nets.remove(name).expect("checked above"),
            }
        };
        let _ = std::fs::remove_file(marker(&self.settings.state_dir, name));
        stop(name, entry).await;
        format!("left network {name}")
    }

    /// Stops every network (agent shutdown).
    pub async fn stop_all(&self) {
        let all = std::mem::take(&mut *self.nets.lock().await);
        for (_, e) in all.iter() {
            let _ = e.stop.send(true);
        }
        for (name, e) in all {
            stop(&name, e).await;
        }
    }
}

async fn stop(name: &str, e: Entry) {
    let _ = e.stop.send(true);
    match e.task.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => error!(network = %name, "{err:#}"),
        Err(err) => error!(network = %name, "task: {err}"),
    }
}
