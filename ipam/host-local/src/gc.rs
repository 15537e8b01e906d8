//! GC (spec 1.1.0), which the reference lacks: release every reservation whose
//! (containerID, ifname) is not in `cni.dev/valid-attachments` (read by `cni_core::gc`: an
//! empty or missing list releases everything, as libcni means it). Only reservation files are considered (never `lock`, `last_reserved_ip.*` or the
//! index). A legacy id-only file is kept if any valid attachment has its container ID, so the
//! first GC after an upgrade does not wipe pre-upgrade reservations that DEL would still find.
//! GC is rare, so it scans the directory, and then rebuilds the index from that scan.

use cni_core::gc::valid_attachments;
use cni_core::{CniError, Code, Request};

use crate::config::IpamConfig;
use crate::index::Index;
use crate::store::go_trim;

/// Runs GC on the network directory of `conf`.
pub fn run(req: &Request, conf: &IpamConfig) -> Result<(), CniError> {
    let valid = valid_attachments(&req.conf)?;
    let dir = crate::verbs::open_dir(conf)?;
    let all = dir.scan().map_err(|e| {
        CniError::new(
            Code::Io,
            format!("cannot read {}: {e}", dir.path().display()),
        )
    })?;
    let mut kept = Vec::with_capacity(all.len());
    let mut errors = Vec::new();
    for (ip, owner) in all {
        let keep = match owner.split() {
            (id, Some(ifname)) => valid.keeps(&lossy(id), &lossy(ifname)),
            (id, None) => valid.keeps_container(&lossy(id)),
        };
        if keep {
            kept.push((ip, owner));
        } else if let Err(e) = dir.release(ip) {
            errors.push(e.msg);
            kept.push((ip, owner));
        }
    }
    Index::detached(&conf.data_dir, &conf.name).reset(&dir, kept);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(Code::Io, errors.join("; ")))
    }
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(go_trim(b))
}
