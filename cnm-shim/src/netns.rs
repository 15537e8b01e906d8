//! Network namespace and link operations of the endpoint design: the `bridge` plugin builds the
//! veth pair with its container end inside a shim-owned temporary netns; the shim then renames
//! that end and moves it back into its own (dockerd's) netns, where docker finds it by name at
//! Join and moves it into the container itself.
//!
//! The temporary netns is never bind-mounted: it lives only as long as the shim holds its fd
//! (plugins reach it as `/proc/<shim pid>/fd/<n>`), so a crash cannot leak it, and the kernel
//! destroys anything left inside it together with it.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};

use cni_netlink::{LinkInfo, LinkUpdate, Netlink};

use crate::err;
use crate::error::{Ctx, Result};

/// This process's network namespace (dockerd's, where SrcName must be).
pub fn current() -> Result<File> {
    File::open(cni_netlink::THREAD_NETNS).ctx(|| "open the shim's network namespace")
}

/// A fresh, empty network namespace held by an fd.
pub struct TempNetns {
    file: File,
}

impl TempNetns {
    pub fn new() -> Result<TempNetns> {
        // unshare() changes only the calling thread; do it on a throwaway thread so no
        // worker thread ever leaves the shim's netns.
        let file = std::thread::spawn(|| -> Result<File> {
            // SAFETY: unshare(2) affects only this (throwaway) thread's namespaces and takes
            // no pointers.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(err!(
                    "cannot create a network namespace: {} (cnm-shim must run as root)",
                    std::io::Error::last_os_error()
                ));
            }
            File::open(cni_netlink::THREAD_NETNS).ctx(|| "open the new network namespace")
        })
        .join()
        .map_err(|_| err!("temporary network namespace thread panicked"))??;
        Ok(TempNetns { file })
    }

    /// The path the plugins open as CNI_NETNS (valid while `self` lives).
    pub fn path(&self) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), self.file.as_raw_fd())
    }

    /// Moves `ifname` from this netns into `target`, renamed `new_name`, in one request (the
    /// kernel takes the new name as it moves the link, and closes it first, so it arrives
    /// down).
    pub fn move_out(&self, ifname: &str, new_name: &str, target: &File) -> Result<()> {
        let ctx = || format!("move {ifname:?} out of the temporary netns as {new_name:?}");
        let mut nl = Netlink::new_in_netns(self.file.as_fd()).ctx(ctx)?;
        let link = nl
            .link_by_name(ifname)
            .ctx(ctx)?
            .ok_or_else(|| err!("{}: the bridge plugin did not create it", ctx()))?;
        let update = LinkUpdate {
            name: Some(new_name),
            netns: Some(target.as_fd()),
            ..Default::default()
        };
        nl.update_link(link.index, &update).ctx(ctx)
    }
}

/// One temporary netns made ahead of time: creating a netns costs a few milliseconds, which
/// then are not on the path of CreateEndpoint. Refilled in the background after each use.
#[derive(Default)]
pub struct SpareNetns {
    spare: std::sync::Arc<std::sync::Mutex<Option<TempNetns>>>,
}

impl SpareNetns {
    pub fn take(&self) -> Result<TempNetns> {
        let ready = self.spare.lock().unwrap_or_else(|p| p.into_inner()).take();
        let spare = self.spare.clone();
        std::thread::spawn(move || {
            if let Ok(ns) = TempNetns::new() {
                spare
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(ns);
            }
        });
        match ready {
            Some(ns) => Ok(ns),
            None => TempNetns::new(),
        }
    }
}

/// Outcome of a background move, awaited by Join.
pub struct MoveSlot {
    done: std::sync::Mutex<Option<Result<()>>>,
    cv: std::sync::Condvar,
}

impl MoveSlot {
    pub fn finish(&self, r: Result<()>) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        self.cv.notify_all();
    }
}

/// Endpoints whose container end is still being moved into the shim's netns.
#[derive(Default)]
pub struct PendingMoves {
    map: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<MoveSlot>>>,
}

impl PendingMoves {
    pub fn start(&self, eid: &str) -> std::sync::Arc<MoveSlot> {
        let slot = std::sync::Arc::new(MoveSlot {
            done: std::sync::Mutex::new(None),
            cv: std::sync::Condvar::new(),
        });
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(eid.to_string(), slot.clone());
        slot
    }

    /// Waits for the move of `eid` and forgets it; `None` if none was pending.
    pub fn wait(&self, eid: &str, timeout: std::time::Duration) -> Option<Result<()>> {
        let slot = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(eid)?;
        let guard = slot.done.lock().unwrap_or_else(|p| p.into_inner());
        let (mut guard, _) = slot
            .cv
            .wait_timeout_while(guard, timeout, |d| d.is_none())
            .unwrap_or_else(|p| p.into_inner());
        Some(guard.take().unwrap_or_else(|| {
            Err(err!(
                "moving the interface out of the temporary netns did not finish within {}s",
                timeout.as_secs()
            ))
        }))
    }
}

/// A link of the shim's netns by name.
pub fn link(name: &str) -> Result<Option<LinkInfo>> {
    let mut nl = Netlink::new().ctx(|| "open netlink")?;
    nl.link_by_name(name).ctx(|| format!("look up link {name}"))
}

/// Every link of the shim's netns.
pub fn links() -> Result<Vec<LinkInfo>> {
    let mut nl = Netlink::new().ctx(|| "open netlink")?;
    nl.dump_links().ctx(|| "list links")
}

/// Deletes link `name` if it exists and is of `kind` ("veth", "bridge"). Returns whether it
/// was deleted. A link of another kind under that name is left alone (and reported).
pub fn delete_link(name: &str, kind: &str) -> Result<bool> {
    let mut nl = Netlink::new().ctx(|| "open netlink")?;
    let Some(l) = nl
        .link_by_name(name)
        .ctx(|| format!("look up link {name}"))?
    else {
        return Ok(false);
    };
    if l.kind.as_deref() != Some(kind) {
        return Err(err!(
            "link {name} is a {} and not a {kind}; it was not made by cnm-shim, so it is left alone",
            l.kind.as_deref().unwrap_or("plain device")
        ));
    }
    match nl.delete_link(l.index) {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(err!("delete link {name}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_netns_is_separate_and_reachable_by_path() {
        // SAFETY: geteuid(2) has no arguments and cannot fail.
        assert!(unsafe { libc::geteuid() } == 0, "this test needs root");
        let t = TempNetns::new().unwrap();
        let ns = cni_netlink::NetNs::open(t.path()).unwrap();
        assert!(!ns.is_current().unwrap());
        let mut nl = Netlink::new_in_netns(&ns).unwrap();
        let names: Vec<String> = nl
            .dump_links()
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(names, vec!["lo".to_string()]);
    }
}
