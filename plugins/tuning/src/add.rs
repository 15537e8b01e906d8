//! ADD: validate everything, save the originals, then apply sysctls and link attributes inside
//! the container netns; any failure puts back what this call changed.

use cni_core::{CniError, CniResult, Request};
use cni_netlink::{fmt_mac, sysctl_get, sysctl_set, NetNs, Netlink};

use crate::backup::{self, Saved};
use crate::config::{self, Conf};
use crate::errors::{bad_netns, nl, sysctl_err};
use crate::link::{self, Attr};
use crate::sysctl::{self, SysctlKey};

/// What was changed so far, undone in reverse on failure.
#[derive(Default)]
struct Undo {
    sysctls: Vec<(SysctlKey, String)>,
    attrs: Vec<Attr>,
    /// The saved file as it was before this call (None: there was none).
    file: Option<(std::path::PathBuf, Option<Vec<u8>>)>,
}

impl Undo {
    fn run(self, nl: &mut Netlink, index: Option<u32>, ifname: &str) {
        let attrs = index.map(|i| (i, self.attrs));
        for (index, old) in attrs
            .iter()
            .flat_map(|(i, a)| a.iter().rev().map(|o| (*i, *o)))
        {
            if let Err(e) = nl.update_link(index, &old.update()) {
                eprintln!(
                    "tuning: rollback: restore {} on {ifname}: {e}",
                    old.describe()
                );
            }
        }
        for (k, old) in self.sysctls.into_iter().rev() {
            if let Err(e) = sysctl_set(&k.path, &old) {
                eprintln!("tuning: rollback: restore {} to {old:?}: {e}", k.file());
            }
        }
        if let Some((p, prev)) = self.file {
            let res = match prev {
                Some(bytes) => backup::write_raw(&p, &bytes),
                None => backup::remove(&p),
            };
            if let Err(e) = res {
                eprintln!("tuning: rollback: {e}");
            }
        }
    }
}

pub fn add(req: &Request) -> Result<CniResult, CniError> {
    let conf = config::load(req)?;
    let keys: Vec<SysctlKey> = conf.sysctl.iter().map(|(k, _)| k.clone()).collect();
    sysctl::check_allowed(&keys, sysctl::ALLOWLIST)?;
    let Some(mut result) = req.prev_result()? else {
        return Err(CniError::config("Required prevResult missing"));
    };
    let netns = &req.env.netns;
    let ns = NetNs::open(netns).map_err(|e| bad_netns(netns, e))?;
    ns.run(|| apply(req, &conf))
        .map_err(|e| bad_netns(netns, e))??;
    if let Some((_, mac)) = conf.mac {
        for i in result
            .interfaces
            .iter_mut()
            .filter(|i| i.name == req.env.ifname)
        {
            i.mac = fmt_mac(&mac);
        }
    }
    Ok(result)
}

/// Runs inside the container netns (`/proc/sys/net` binds to the opener's netns).
fn apply(req: &Request, conf: &Conf) -> Result<(), CniError> {
    let ifname = &req.env.ifname;
    // Validate: every sysctl exists here and is readable; the link exists.
    let mut originals = Vec::with_capacity(conf.sysctl.len());
    for (k, v) in &conf.sysctl {
        let old = sysctl_get(&k.path).map_err(|e| sysctl_err(k, e))?;
        originals.push((k.clone(), v.clone(), old));
    }
    let mut sock = Netlink::new().map_err(nl)?;
    let wanted = Attr::wanted(conf);
    let link = if wanted.is_empty() {
        None
    } else {
        let l = sock.link_by_name(ifname).map_err(nl)?;
        Some(l.ok_or_else(|| {
            CniError::internal(format!(
                "failed to get {ifname:?}: no such link in {}; tuning must run after the plugin that creates it",
                req.env.netns
            ))
        })?)
    };

    let mut undo = Undo::default();
    let res = (|| {
        // The originals are on disk before the first change, so even a crash leaves DEL able
        // to restore them.
        if let Some(link) = &link {
            let p = backup::path(&conf.data_dir, &req.env.container_id, ifname);
            let prev = backup::read_raw(&p)?;
            backup::write(&p, &snapshot(&wanted, link, &req.name))?;
            undo.file = Some((p, prev));
        }
        for (k, v, old) in &originals {
            if sysctl_set(&k.path, v).map_err(|e| sysctl_err(k, e))? {
                undo.sysctls.push((k.clone(), old.clone()));
            }
        }
        if let Some(link) = &link {
            for a in &wanted {
                if link::set(&mut sock, link, *a, ifname)? {
                    undo.attrs.push(a.current(link));
                }
            }
        }
        Ok(())
    })();
    if res.is_err() {
        undo.run(&mut sock, link.as_ref().map(|l| l.index), ifname);
    }
    res
}

/// The originals of the attributes about to change, in the reference's file shape.
fn snapshot(wanted: &[Attr], link: &cni_netlink::LinkInfo, network: &str) -> Saved {
    let mut s = Saved {
        network: network.to_string(),
        ..Default::default()
    };
    for a in wanted {
        match a.current(link) {
            Attr::Mac(m) => s.mac = fmt_mac(&m),
            Attr::Promisc(p) => s.promisc = Some(p),
            Attr::Mtu(m) => s.mtu = m,
            Attr::Allmulti(v) => s.allmulti = Some(v),
            Attr::TxQLen(q) => s.txqlen = Some(q),
        }
    }
    s
}
