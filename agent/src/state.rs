//! The agent's local memory of a network (`<state-dir>/<net>/state.json`): the lease ID to
//! renew after a restart (never re-granted while the old one may live), the blocks to prefer
//! when claiming again, and the tunnel IP to keep.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalState {
    pub lease: Option<i64>,
    pub tunnel_ip: Option<Ipv4Addr>,
    pub blocks: Vec<Ipv4Network>,
}

pub fn path(state_dir: &Path, net: &str) -> PathBuf {
    state_dir.join(net).join("state.json")
}

impl LocalState {
    /// The saved state, or the empty one when missing or unreadable (logged by the caller).
    pub fn load(p: &Path) -> Result<LocalState, String> {
        match std::fs::read(p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("decode {}: {e}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LocalState::default()),
            Err(e) => Err(format!("read {}: {e}", p.display())),
        }
    }

    pub fn save(&self, p: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        cni_cluster::model::write_atomic(p, &bytes)
    }
}
