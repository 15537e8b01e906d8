//! DEL: put back the saved originals and remove the file. Best-effort and idempotent: no file,
//! no netns or no link is success, and a file that cannot be used is removed, not kept forever.

use std::path::Path;

use cni_core::{CniError, Request};
use cni_netlink::{parse_mac, NetNs, Netlink};

use crate::backup::{self, Saved};
use crate::config;
use crate::link::{self, Attr};

pub fn del(req: &Request) -> Result<(), CniError> {
    // A config whose dataDir is unusable made no file at ADD: nothing to undo.
    let Ok(dir) = config::data_dir(req) else {
        return Ok(());
    };
    let p = backup::path(&dir, &req.env.container_id, &req.env.ifname);
    // An ADD killed while saving left a temp file instead.
    backup::remove_stale_temps(Path::new(&dir), Some(&p));
    let Some(bytes) = backup::read_raw(&p)? else {
        return Ok(());
    };
    match backup::parse(&bytes) {
        Some(saved) => restore(req, &saved),
        None => eprintln!(
            "tuning: {} is not a saved-state file; removing it",
            p.display()
        ),
    }
    backup::remove(&p)
}

/// Restores in the reference's order (MTU, MAC, promisc, allmulti, then txQLen); failures are
/// reported on stderr and do not fail DEL (the link usually goes away right after).
fn restore(req: &Request, saved: &Saved) {
    let netns = &req.env.netns;
    if netns.is_empty() || !Path::new(netns).exists() {
        return;
    }
    let ifname = &req.env.ifname;
    let run = || -> Result<(), String> {
        let mut sock = Netlink::new().map_err(|e| e.to_string())?;
        let Some(l) = sock.link_by_name(ifname).map_err(|e| e.to_string())? else {
            return Ok(());
        };
        let mut errs = Vec::new();
        for a in attrs(saved) {
            if let Err(e) = link::set(&mut sock, &l, a, ifname) {
                errs.push(format!("failed to restore {}", e.msg));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    };
    let res = NetNs::open(netns)
        .and_then(|ns| ns.run(run))
        .map_err(|e| e.to_string())
        .and_then(|r| r);
    if let Err(e) = res {
        eprintln!("tuning: DEL of {ifname} in {netns}: {e}");
    }
}

fn attrs(s: &Saved) -> Vec<Attr> {
    let mut v = Vec::new();
    if s.mtu != 0 {
        v.push(Attr::Mtu(s.mtu));
    }
    if let Ok(m) = parse_mac(&s.mac) {
        v.push(Attr::Mac(m));
    }
    if let Some(p) = s.promisc {
        v.push(Attr::Promisc(p));
    }
    if let Some(a) = s.allmulti {
        v.push(Attr::Allmulti(a));
    }
    if let Some(q) = s.txqlen {
        v.push(Attr::TxQLen(q));
    }
    v
}
