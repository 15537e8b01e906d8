//! The `host-local` IPAM plugin: a drop-in for the reference plugin that shares its on-disk
//! store byte for byte (so Go and Rust can run against one data directory at the same time),
//! adds GC and STATUS, and costs the same per call at 20,000 reservations as at 10 (see
//! [`index`]).
//!
//! Modules, one job each: `config` (the IPAM config and its validation), `range` (range math and
//! iteration order), `allocator` (round-robin and requested addresses), `store` (the reference's
//! file format and lock), `index` (the O(1) lookup hint), `pool` (recycled inodes), `boot` (releasing what a reboot left
//! behind), `dns` (resolv.conf), `gc`, `verbs` (ADD/DEL/CHECK/STATUS glue), and `crash` (the
//! tests' kill points).

pub mod allocator;
pub mod boot;
pub mod config;
pub mod crash;
pub mod dns;
pub mod gc;
pub mod index;
pub mod pool;
pub mod range;
pub mod store;
pub mod verbs;

#[cfg(test)]
pub(crate) mod testutil;

use cni_core::{CniError, CniResult, Plugin, Request};

/// The plugin. `default_data_dir` is used when the config has no `ipam.dataDir`.
#[derive(Debug, Clone)]
pub struct HostLocal {
    pub default_data_dir: String,
}

impl Default for HostLocal {
    fn default() -> Self {
        HostLocal {
            default_data_dir: config::DEFAULT_DATA_DIR.to_string(),
        }
    }
}

impl Plugin for HostLocal {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        verbs::add(req, &self.default_data_dir)
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        verbs::del(req, &self.default_data_dir)
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        verbs::check(req, &self.default_data_dir)
    }

    fn gc(&self, req: &Request) -> Result<(), CniError> {
        let conf = config::load(req, &self.default_data_dir)?;
        gc::run(req, &conf)
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        verbs::status(req, &self.default_data_dir)
    }
}
