//! The verb table: ADD, DEL, CHECK, GC and STATUS for the skel.

use cni_core::skel::Verbs;
use cni_core::{CniError, Command, Request};

use crate::{add, check, config, del, firewall};

pub const BRIDGE: Verbs = Verbs {
    add: add::add,
    del: del::del,
    check: check::check,
    gc,
    status,
};

/// Removes the masquerade state of attachments not in the valid list and the forwarding state
/// of a bridge that is gone, then forwards GC to IPAM; errors are collected, not
/// short-circuited (spec: GC continues on errors).
fn gc(req: &Request) -> Result<(), CniError> {
    let conf = config::load(req)?;
    let valid = cni_core::gc::valid_attachments(&req.conf)?;
    let mut errs = Vec::new();
    if let Err(e) = firewall::gc(&conf, &valid) {
        errs.push(e.to_string());
    }
    let bridge = cni_netlink::Netlink::new().and_then(|mut nl| nl.link_by_name(&conf.bridge));
    match bridge {
        Ok(Some(_)) => {}
        Ok(None) => {
            if let Err(e) = firewall::gc_gone_bridge(&conf.bridge) {
                errs.push(e.to_string());
            }
        }
        Err(e) => errs.push(format!("GC: look up bridge {:?}: {e}", conf.bridge)),
    }
    if conf.l3() {
        if let Err(e) = crate::ipam::run(&conf, Command::Gc, req) {
            errs.push(e.to_string());
        }
    }
    cni_core::gc::outcome(errs)
}

fn status(req: &Request) -> Result<(), CniError> {
    let conf = config::load(req)?;
    if conf.l3() {
        crate::ipam::run(&conf, Command::Status, req)?;
    }
    Ok(())
}
