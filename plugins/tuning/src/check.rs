//! CHECK: the configured sysctls and link attributes are what the container has, with the
//! reference's messages.

use cni_core::{CniError, Request};
use cni_netlink::{fmt_mac, sysctl_get, NetNs, Netlink};

use crate::config::{self, Conf};
use crate::errors::{bad_netns, nl, sysctl_err};

pub fn check(req: &Request) -> Result<(), CniError> {
    let conf = config::load(req)?;
    if req.prev_result()?.is_none() {
        return Err(CniError::config("Required prevResult missing"));
    }
    let netns = &req.env.netns;
    let ns = NetNs::open(netns).map_err(|e| bad_netns(netns, e))?;
    ns.run(|| verify(req, &conf))
        .map_err(|e| bad_netns(netns, e))?
}

/// Values compare with whitespace runs folded: the kernel prints vectors with tabs
/// (`net.ipv4.tcp_rmem`), configs usually have spaces.
fn same(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

fn verify(req: &Request, conf: &Conf) -> Result<(), CniError> {
    let ifname = &req.env.ifname;
    let fail = |m: String| Err(CniError::internal(m));
    for (k, want) in &conf.sysctl {
        let cur = sysctl_get(&k.path).map_err(|e| sysctl_err(k, e))?;
        if !same(want, &cur) {
            return fail(format!(
                "Error: Tuning configured value of {} is {want}, current value is {cur}",
                k.file()
            ));
        }
    }
    let mut sock = Netlink::new().map_err(nl)?;
    let Some(link) = sock.link_by_name(ifname).map_err(nl)? else {
        return fail(format!("Cannot find container link {ifname}"));
    };
    if let Some((raw, mac)) = &conf.mac {
        let cur = link.mac.map(|m| fmt_mac(&m)).unwrap_or_default();
        if link.mac != Some(*mac) {
            return fail(format!(
                "Error: Tuning configured Ethernet of {ifname} is {raw}, current value is {cur}"
            ));
        }
    }
    if conf.promisc != link.is_promisc() {
        return fail(format!(
            "Error: Tuning link {ifname} configured promisc is {}, current value is {}",
            conf.promisc,
            u8::from(link.is_promisc())
        ));
    }
    if let Some(m) = conf.mtu.filter(|m| *m != link.mtu) {
        return fail(format!(
            "Error: Tuning configured MTU of {ifname} is {m}, current value is {}",
            link.mtu
        ));
    }
    if let Some(a) = conf.allmulti.filter(|a| *a != link.is_allmulti()) {
        return fail(format!(
            "Error: Tuning configured all-multicast mode of {ifname} is {a}, current value is {}",
            link.is_allmulti()
        ));
    }
    if let Some(q) = conf.txqlen.filter(|q| *q != link.txqlen) {
        return fail(format!(
            "Error: Tuning configured Transmit Queue Length of {ifname} is {q}, current value is {}",
            link.txqlen
        ));
    }
    Ok(())
}
