//! The verb table for the skel, and GC.

use cni_core::skel::{nothing, Verbs};
use cni_core::{CniError, Request};

use crate::backup;
use crate::{add, check, config, del};

pub const TUNING: Verbs = Verbs {
    add: add::add,
    del: del::del,
    check: check::check,
    gc,
    status: nothing,
};

/// Removes the saved files of this network's attachments that are not in
/// `cni.dev/valid-attachments` (the link is gone; there is nothing to restore). Files of
/// other networks sharing the directory, and the Go plugin's (no `network` key), are left
/// alone.
fn gc(req: &Request) -> Result<(), CniError> {
    let dir = config::data_dir(req)?;
    let valid = cni_core::gc::valid_attachments(&req.conf)?;
    let entries = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(CniError::internal(format!("GC: read {dir}: {e}"))),
    };
    backup::remove_stale_temps(std::path::Path::new(&dir), None);
    let mut errs = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") {
            continue;
        }
        let kept = valid.0.iter().any(|a| match &a.ifname {
            Some(ifname) => name == format!("{}_{ifname}.json", a.container_id),
            None => name.starts_with(&format!("{}_", a.container_id)),
        });
        if kept {
            continue;
        }
        let p = e.path();
        let ours = backup::read_raw(&p)
            .ok()
            .flatten()
            .and_then(|b| backup::parse(&b))
            .is_some_and(|s| s.network == req.name);
        if ours {
            if let Err(e) = backup::remove(&p) {
                errs.push(e.msg);
            }
        }
    }
    cni_core::gc::outcome(errs)
}
