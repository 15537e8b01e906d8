//! ADD, DEL, CHECK and STATUS: validate everything first, then take the lock once for the whole
//! call, consult the index, touch the files, and seal the index.

use std::net::IpAddr;

use cni_core::{CniError, CniResult, Code, Dns, Request};

use crate::allocator;
use crate::config::{self, IpamConfig};
use crate::dns;
use crate::index::Index;
use crate::store::{NetDir, Owner};

/// A locked network directory with its index.
struct Session {
    dir: NetDir,
    index: Index,
}

impl Session {
    fn open(conf: &IpamConfig) -> Result<Session, CniError> {
        let dir = NetDir::open(&conf.data_dir, &conf.name)?;
        let index = Index::open(&dir, &conf.data_dir, &conf.name);
        Ok(Session { dir, index })
    }

    fn lookup(&mut self, owner: &Owner) -> Result<Vec<IpAddr>, CniError> {
        self.index.lookup(&self.dir, owner).map_err(|e| {
            CniError::new(
                Code::Io,
                format!("cannot read {}: {e}", self.dir.path().display()),
            )
        })
    }
}

pub fn add(req: &Request, default_data_dir: &str) -> Result<CniResult, CniError> {
    let conf = config::load(req, default_data_dir)?;
    let dns = match &conf.resolv_conf {
        Some(p) => dns::parse_file(p)?,
        None => Dns::default(),
    };
    let plan = allocator::plan(&conf)?;
    let id = &req.env.container_id;
    let owner = Owner::attachment(id, &req.env.ifname);
    let mut s = Session::open(&conf)?;
    let mut held = s.lookup(&owner)?;
    let legacy = s.lookup(&Owner::legacy(id))?;
    let all_held: Vec<IpAddr> = held.iter().chain(&legacy).copied().collect();
    allocator::check_duplicates(&conf, &plan, &all_held, id)?;
    let ips = match allocator::allocate(&s.dir, &conf, &plan, &owner) {
        Ok(ips) => ips,
        Err((e, clean)) => {
            // The files are as before this call: the index still describes them.
            if clean {
                s.index.commit(&s.dir);
            }
            return Err(e);
        }
    };
    held.extend(ips.iter().map(|c| c.address.ip()));
    s.index.record(&owner, &held);
    s.index.commit(&s.dir);
    Ok(CniResult {
        cni_version: conf.cni_version,
        interfaces: Vec::new(),
        ips,
        routes: conf.routes,
        dns,
    })
}

pub fn del(req: &Request, default_data_dir: &str) -> Result<(), CniError> {
    let conf = config::load(req, default_data_dir)?;
    let id = &req.env.container_id;
    let mut s = Session::open(&conf)?;
    let mut owner = Owner::attachment(id, &req.env.ifname);
    let mut ips = s.lookup(&owner)?;
    if ips.is_empty() {
        // Files written before ifnames were recorded.
        owner = Owner::legacy(id);
        ips = s.lookup(&owner)?;
    }
    if ips.is_empty() {
        return Ok(());
    }
    let mut errors = Vec::new();
    let mut left = Vec::new();
    for ip in ips {
        if let Err(e) = s.dir.release(ip) {
            errors.push(e.msg);
            left.push(ip);
        }
    }
    s.index.record(&owner, &left);
    s.index.commit(&s.dir);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(Code::Io, errors.join(";")))
    }
}

pub fn check(req: &Request, default_data_dir: &str) -> Result<(), CniError> {
    let conf = config::load(req, default_data_dir)?;
    let id = &req.env.container_id;
    let mut s = Session::open(&conf)?;
    if !s.lookup(&Owner::attachment(id, &req.env.ifname))?.is_empty()
        || !s.lookup(&Owner::legacy(id))?.is_empty()
    {
        return Ok(());
    }
    Err(CniError::internal(format!(
        "host-local: Failed to find address added by container {id}"
    )))
}

/// Code 50 when a range set has no free address: ADD needs one from every set.
pub fn status(req: &Request, default_data_dir: &str) -> Result<(), CniError> {
    let conf = config::load(req, default_data_dir)?;
    let net_dir = conf.data_dir.join(&conf.name);
    let full: Vec<String> = conf
        .range_sets
        .iter()
        .enumerate()
        .filter(|(idx, set)| allocator::set_is_full(&net_dir, set, *idx))
        .map(|(_, set)| set.to_string())
        .collect();
    if full.is_empty() {
        return Ok(());
    }
    let sets = if full.len() == 1 { "set" } else { "sets" };
    Err(CniError::new(
        Code::NotAvailable,
        format!(
            "no IP addresses available in range {sets}: {}",
            full.join("; ")
        ),
    )
    .with_details(format!(
        "network {:?} cannot service ADD until addresses are released",
        conf.name
    )))
}
