//! The verb table: ADD, DEL, CHECK, GC and STATUS for the skel.

use cni_core::{CniError, CniResult, Command, Plugin, Request};
use serde_json::Value;

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
        let valid = valid_attachments(&req.conf)?;
        let mut errs = Vec::new();
        if let Err(e) = firewall::gc(&conf, &valid) {
            errs.push(e.to_string());
        }
        if conf.l3() {
            if let Err(e) = crate::ipam::run(&conf, Command::Gc, req) {
                errs.push(e.to_string());
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(CniError::internal(errs.join("; ")))
        }
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let conf = config::load(req)?;
        if conf.l3() {
            crate::ipam::run(&conf, Command::Status, req)?;
        }
        Ok(())
    }
}

/// `cni.dev/valid-attachments` (or the older `cni.dev/attachments`) as (containerID, ifname).
pub fn valid_attachments(conf: &Value) -> Result<Vec<(String, String)>, CniError> {
    let list = cni_core::json::get(conf, "cni.dev/valid-attachments")
        .or_else(|| cni_core::json::get(conf, "cni.dev/attachments"));
    let Some(list) = list.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let arr = list
        .as_array()
        .ok_or_else(|| CniError::config("cni.dev/valid-attachments must be a list"))?;
    arr.iter()
        .map(|a| {
            let id = cni_core::json::get(a, "containerID").and_then(Value::as_str);
            let ifname = cni_core::json::get(a, "ifname").and_then(Value::as_str);
            match (id, ifname) {
                (Some(i), Some(f)) => Ok((i.to_string(), f.to_string())),
                _ => Err(CniError::config(
                    "each cni.dev/valid-attachments entry needs string \"containerID\" and \"ifname\"",
                )),
            }
        })
        .collect()
}
