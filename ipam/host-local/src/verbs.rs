//! ADD, DEL, CHECK and STATUS: validate everything first, then take the lock once for the whole
//! call, consult the index, touch the files, and seal the index.

use std::net::IpAddr;

use cni_core::{CniError, CniResult, Code, Dns, Request};

use crate::allocator;
use crate::config::{self, IpamConfig};
use crate::dns;
use crate::index::Index;
use crate::pool::Pool;
use crate::store::{NetDir, Owner};

/// Locks the network directory and releases what the previous boot left (see `boot`): every
/// verb that takes the lock comes through here.
pub fn open_dir(conf: &IpamConfig) -> Result<NetDir, CniError> {
    let dir = NetDir::open(&conf.data_dir, &conf.name)?;
    crate::boot::settle(&dir, &conf.data_dir, &conf.name);
    Ok(dir)
}

/// A locked network directory with its index and pool of spare inodes.
struct Session {
    dir: NetDir,
    index: Index,
    pool: Pool,
}

impl Session {
    fn open(conf: &IpamConfig) -> Result<Session, CniError> {
        let dir = open_dir(conf)?;
        let index = Index::open(&dir, &conf.data_dir, &conf.name);
        let pool = Pool::new(
            &conf.data_dir,
            &conf.name,
            index.spares(),
            index.is_synced(),
        );
        Ok(Session { dir, index, pool })
    }

    /// Seals the call's changes (see `index`), with the pool's new size.
    fn commit(&mut self) {
        self.index.set_spares(self.pool.count());
        self.index.commit(&self.dir);
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
    let ips = match allocator::allocate(&s.dir, &conf, &plan, &owner, &mut s.pool) {
        Ok(ips) => ips,
        Err((e, clean)) => {
            // The files are as before this call: the index still describes them.
            if clean {
                s.commit();
            }
            return Err(e);
        }
    };
    held.extend(ips.iter().map(|c| c.address.ip()));
    s.index.record(&s.dir, &owner, &held);
    s.commit();
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
        // Keep the inode for the next ADD when the pool has room (see `pool`).
        if s.pool.give(&s.dir.ip_path(ip)) {
            continue;
        }
        if let Err(e) = s.dir.release(ip) {
            errors.push(e.msg);
            left.push(ip);
        }
    }
    s.index.record(&s.dir, &owner, &left);
    s.commit();
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
    if !s
        .lookup(&Owner::attachment(id, &req.env.ifname))?
        .is_empty()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use cni_core::{Command, Env};
    use std::fs;

    fn request(t: &TempDir, id: &str, command: Command) -> Request {
        let raw = serde_json::json!({"cniVersion": "1.0.0", "name": "mynet",
            "ipam": {"subnet": "10.1.2.0/24", "dataDir": t.path()}});
        Request {
            env: Env {
                container_id: id.to_string(),
                ifname: "eth0".to_string(),
                ..Default::default()
            },
            command,
            stdin: Vec::new(),
            conf: cni_core::json::fold_keys(&raw),
            cni_version: "1.0.0".to_string(),
            name: "mynet".to_string(),
        }
    }

    #[test]
    fn container_id_whitespace_is_trimmed_and_del_still_finds_it() {
        // The skel refuses such IDs; the library still behaves as the reference's.
        let t = TempDir::new("verbs-trim");
        let r = add(&request(&t, "   dummy\n ", Command::Add), "/unused").unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.1.2.2/24");
        let f = t.path().join("mynet/10.1.2.2");
        assert_eq!(fs::read(&f).unwrap(), b"dummy\r\neth0");
        check(&request(&t, "dummy", Command::Check), "/unused").unwrap();
        del(&request(&t, "   dummy\n ", Command::Del), "/unused").unwrap();
        assert!(!f.exists());
    }

    #[test]
    fn add_del_cycle_keeps_the_index_sealed() {
        let t = TempDir::new("verbs-sealed");
        for i in 0..5 {
            let id = format!("c{i}");
            add(&request(&t, &id, Command::Add), "/unused").unwrap();
            del(&request(&t, &id, Command::Del), "/unused").unwrap();
        }
        let dir = NetDir::open(t.path(), "mynet").unwrap();
        let ix = Index::open(&dir, t.path(), "mynet");
        assert!(ix.is_synced());
        assert_eq!(ix.repairs, 0, "our own writes never force a rebuild");
        assert!(ix.spares() >= 1);
    }
}
