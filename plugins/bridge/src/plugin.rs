//! The verb table: ADD, DEL, CHECK, GC and STATUS for the skel.

use cni_core::{CniError, CniResult, Command, Plugin, Request};

use crate::{add, check, config, del, firewall};

pub struct Bridge;

impl Plugin for Bridge {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        add::add(req)
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        del::del(req)
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        check::check(req)
    }

    /// Removes the masquerade state of attachments not in the valid list, then forwards GC to
    /// IPAM; errors are collected, not short-circuited (spec: GC continues on errors).
    fn gc(&self, req: &Request) -> Result<(), CniError> {
        let conf = config::load(req)?;
        let valid = cni_core::gc::valid_attachments(&req.conf)?;
        let mut errs = Vec::new();
        if let Err(e) = firewall::gc(&conf, &valid) {
            errs.push(e.to_string());
        }
        if conf.l3() {
            if let Err(e) = crate::ipam::run(&conf, Command::Gc, req) {
                errs.push(e.to_string());
            }
        }
        cni_core::gc::outcome(errs)
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let conf = config::load(req)?;
        if conf.l3() {
            crate::ipam::run(&conf, Command::Status, req)?;
        }
        Ok(())
    }
}
