//! The verbs. State lives in `cni_nft::firewall` (our table) and, on hosts whose iptables
//! `filter` would drop forwarded traffic, in `cni_nft::forward` (accept rules for the bridge).

use std::net::IpAddr;

use cni_core::{CniError, CniResult, Code, Plugin, Request};
use cni_nft::firewall::{Attachment, Firewall as FwState};

use crate::config::{self, Conf, Ingress};

/// The versions the reference speaks (0.4.0 and up), plus 1.1.0.
pub const VERSIONS: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];

pub struct Firewall;

fn nft_err(e: cni_nft::Error) -> CniError {
    match e {
        cni_nft::Error::Invalid(m) => CniError::config(m),
        e => CniError::internal(e.to_string()),
    }
}

/// prevResult, required by ADD and CHECK (the reference's message).
fn required_prev(req: &Request) -> Result<CniResult, CniError> {
    req.prev_result()?
        .ok_or_else(|| CniError::config("missing prevResult from earlier plugin"))
}

fn ips_of(r: &CniResult) -> Vec<IpAddr> {
    r.ips.iter().map(|i| i.address.ip()).collect()
}

/// The host-side interface of the attachment (the bridge for `bridge`): the first interface
/// of prevResult without a sandbox, as the reference takes `interfaces[0]`.
fn host_iface(r: &CniResult) -> Option<&str> {
    r.interfaces
        .iter()
        .find(|i| i.sandbox.is_empty() && !i.name.is_empty())
        .map(|i| i.name.as_str())
}

/// The bridge for `same-bridge`, or the reference's error when prevResult has none.
fn same_bridge<'a>(conf: &Conf, r: &'a CniResult) -> Result<Option<&'a str>, CniError> {
    match conf.ingress {
        Ingress::Open => Ok(None),
        Ingress::SameBridge => host_iface(r).map(Some).ok_or_else(|| {
            CniError::config(
                "interface needs to be set for ingress policy \"same-bridge\", make sure to chain \"firewall\" plugin with \"bridge\"",
            )
        }),
    }
}

fn attachment<'a>(
    conf: &'a Conf,
    req: &'a Request,
    ips: &'a [IpAddr],
    bridge: Option<&'a str>,
) -> Attachment<'a> {
    Attachment {
        network: &conf.name,
        container_id: &req.env.container_id,
        ifname: &req.env.ifname,
        ips,
        same_bridge: bridge,
        admin_chain: &conf.admin_chain,
    }
}

impl Plugin for Firewall {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let conf = config::load(req)?;
        let prev = required_prev(req)?;
        let bridge = same_bridge(&conf, &prev)?;
        let ips = ips_of(&prev);
        if ips.is_empty() {
            return Ok(prev); // nothing to allow, as the reference
        }
        let a = attachment(&conf, req, &ips, bridge);
        let mut fw = FwState::new().map_err(nft_err)?;
        fw.add(&a)
            .map_err(|e| nft_err(e).context("failed to add firewall state"))?;
        if let Some(iface) = host_iface(&prev) {
            if let Err(e) = cni_nft::forward::ensure_iface_accept(iface) {
                // Leave nothing of this attachment behind.
                let _ = fw.del(a.network, a.container_id, a.ifname, Some(&ips), bridge);
                return Err(nft_err(e).context(format!(
                    "failed to accept forwarded traffic of {iface:?} in iptables filter"
                )));
            }
        }
        Ok(prev)
    }

    /// Removes this attachment's elements: by prevResult's IPs when given, otherwise by tag.
    /// Needs no netns, so an empty or dead CNI_NETNS is fine.
    fn del(&self, req: &Request) -> Result<(), CniError> {
        let conf = config::load(req)?;
        let prev = req.prev_result()?;
        let ips = prev.as_ref().map(ips_of);
        let bridge = prev.as_ref().and_then(host_iface);
        let mut fw = FwState::new().map_err(nft_err)?;
        fw.del(
            &conf.name,
            &req.env.container_id,
            &req.env.ifname,
            ips.as_deref(),
            bridge,
        )
        .map_err(|e| nft_err(e).context("failed to remove firewall state"))
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let conf = config::load(req)?;
        let prev = required_prev(req)?;
        let bridge = same_bridge(&conf, &prev)?;
        let ips = ips_of(&prev);
        if ips.is_empty() {
            return Ok(());
        }
        let mut missing = FwState::new()
            .and_then(|mut fw| fw.check(&attachment(&conf, req, &ips, bridge)))
            .map_err(nft_err)?;
        if let Some(iface) = host_iface(&prev) {
            missing.extend(cni_nft::forward::iface_accept_missing(iface).map_err(nft_err)?);
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(CniError::new(
            Code::Internal,
            format!(
                "firewall state of container {} ({}) is incomplete",
                req.env.container_id, req.env.ifname
            ),
        )
        .with_details(format!(
            "missing: {}; run DEL and ADD again to restore it",
            missing.join("; ")
        )))
    }

    fn gc(&self, req: &Request) -> Result<(), CniError> {
        let conf = config::load(req)?;
        let valid = cni_core::gc::valid_attachments(&req.conf)?;
        let keep = |id: &str, ifname: &str| valid.keeps(id, ifname);
        FwState::new()
            .and_then(|mut fw| fw.gc(&conf.name, &keep))
            .map(|_| ())
            .map_err(|e| nft_err(e).context("GC of firewall state"))
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        config::load(req).map(|_| ())
    }

    fn versions(&self) -> &'static [&'static str] {
        VERSIONS
    }
}
