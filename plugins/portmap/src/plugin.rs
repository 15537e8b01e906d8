//! The verbs. ADD/DEL/CHECK each make one `cni_nft::hostport` call; the
//! result is prevResult, printed by the skel in the config's version.

use std::net::IpAddr;

use cni_core::{CniError, CniResult, Code, Plugin, Request};
use cni_nft::hostport::{HostPorts, Mapping, Options};

use crate::config::{self, Conf};

pub struct Portmap;

/// An nftables failure as a CNI error: a conflict or invalid input is the
/// caller's to fix (7), a ruleset that kept changing is worth a retry (11).
fn nft_err(e: cni_nft::Error) -> CniError {
    match e {
        cni_nft::Error::Conflict(m) => CniError::config(m),
        cni_nft::Error::Invalid(m) => CniError::config(format!("portmap: {m}")),
        e @ cni_nft::Error::Protocol(_) => {
            CniError::new(Code::TryAgainLater, format!("portmap: {e}"))
        }
        e => CniError::internal(format!("portmap: {e}")),
    }
}

fn options(conf: &Conf) -> Options {
    Options {
        snat: conf.snat,
        masq_all: conf.masq_all,
        lane4: conf.lane4.clone(),
        lane6: conf.lane6.clone(),
    }
}

fn owner(req: &Request) -> (&str, &str, &str) {
    (&req.name, &req.env.container_id, &req.env.ifname)
}

fn engine() -> Result<HostPorts, CniError> {
    HostPorts::new().map_err(nft_err)
}

/// Lets 127.0.0.1:<hostPort> reach the container: `route_localnet=1` on
/// the host-side interface of prevResult (the bridge), check-then-set.
fn route_localnet(prev: &CniResult) -> Result<(), CniError> {
    let Some(host_if) = prev.interfaces.iter().find(|i| i.sandbox.is_empty()) else {
        return Ok(());
    };
    let key = format!("net/ipv4/conf/{}/route_localnet", host_if.name);
    match cni_netlink::sysctl_get(&key) {
        Ok(v) if v.trim() == "1" => Ok(()),
        Ok(_) => cni_netlink::sysctl_set(&key, "1").map(|_| ()).map_err(|e| {
            CniError::internal(format!(
                "portmap: set {key}=1 (needed for host loopback to reach published ports): {e}"
            ))
        }),
        // The interface is gone or not ours to see: loopback access is a convenience.
        Err(_) => Ok(()),
    }
}

impl Plugin for Portmap {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let conf = config::load(req)?;
        let Some(prev) = req.prev_result()? else {
            return Err(CniError::config("must be called as chained plugin"));
        };
        if conf.ports.is_empty() {
            return Ok(prev);
        }
        let ips = config::container_ips(&prev, &req.env.ifname);
        let maps = config::mappings(&conf.ports, &ips);
        if maps.is_empty() {
            return Ok(prev);
        }
        if conf.snat && maps.iter().any(|m| m.dest.is_ipv4()) {
            route_localnet(&prev)?;
        }
        engine()?
            .add(owner(req), &maps, &options(&conf))
            .map_err(nft_err)?;
        Ok(prev)
    }

    /// With portMappings: exactly this owner's elements, located by key
    /// (and the container addresses of prevResult when present). Without:
    /// every element tagged with this attachment. Missing state is success.
    fn del(&self, req: &Request) -> Result<(), CniError> {
        let conf = config::load(req)?;
        let mut h = engine()?;
        let r = if conf.ports.is_empty() {
            h.del(owner(req), None, None, &options(&conf))
        } else {
            let prev = req.prev_result().ok().flatten();
            let ips: Option<Vec<IpAddr>> = prev.map(|p| config::container_ips(&p, &req.env.ifname));
            let ips = ips.filter(|v| !v.is_empty());
            // Keys only need the host side; both families' maps are looked at.
            let any = [IpAddr::from([0u8; 4]), IpAddr::from([0u8; 16])];
            let maps: Vec<Mapping> = config::mappings(&conf.ports, &any);
            h.del(owner(req), Some(&maps), ips.as_deref(), &options(&conf))
        };
        // Closing a socket whose transaction deleted elements waits ~10 ms for the kernel's
        // deferred cleanup: a detached process holds it instead (see cni_core::detach).
        cni_core::detach::linger_detached(h);
        r.map_err(nft_err)
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let conf = config::load(req)?;
        let Some(prev) = req.prev_result()? else {
            return Err(CniError::config("Required prevResult missing"));
        };
        if conf.ports.is_empty() {
            return Ok(());
        }
        let ips = config::container_ips(&prev, &req.env.ifname);
        let maps = config::mappings(&conf.ports, &ips);
        if maps.is_empty() {
            return Ok(());
        }
        engine()?
            .check(owner(req), &maps, &options(&conf))
            .map_err(|e| nft_err(e).context("portmap CHECK"))
    }

    /// Removes the elements of this network whose attachment is not valid.
    fn gc(&self, req: &Request) -> Result<(), CniError> {
        config::load(req)?;
        let valid = cni_core::gc::valid_attachments(&req.conf)?;
        engine()?
            .gc(&req.name, &|id, ifname| valid.keeps(id, ifname))
            .map(|_| ())
            .map_err(nft_err)
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        config::load(req).map(|_| ())
    }
}
