//! Network namespace handles and switching the current thread between them.
//!
//! `setns(CLONE_NEWNET)` only affects the calling thread; threads spawned
//! while inside a netns inherit it, so do not spawn threads in `with_netns`.

use std::{
    fs::File,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use nix::sched::{setns, CloneFlags};

use crate::error::{Error, Result};

/// The calling thread's netns (`/proc/self` would name the main thread's).
pub const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

const NSFS_MAGIC: i64 = 0x6e73_6673;
const PROC_SUPER_MAGIC: i64 = 0x9fa0;
/// `_IO(0xb7, 0x3)`: which kind of namespace an nsfs fd refers to.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// An open, validated network namespace (e.g. `CNI_NETNS`).
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Open `path` and check that it really is a network namespace
    /// (nsfs or, on old kernels, procfs; and NS_GET_NSTYPE when available).
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs> {
        let path = path.as_ref();
        let ctx = || format!("netns: open {}", path.display());
        let file = File::open(path).map_err(|e| Error::from_io(&e, ctx()))?;
        let fs = nix::sys::statfs::fstatfs(&file).map_err(|e| Error::os(e as i32, ctx()))?;
        let magic = fs.filesystem_type().0 as i64;
        if magic != NSFS_MAGIC && magic != PROC_SUPER_MAGIC {
            return Err(Error::invalid(
                ctx(),
                format!(
                    "not a namespace file (filesystem magic {magic:#x}); pass a bind-mounted \
                     netns like /var/run/netns/NAME or /proc/PID/ns/net"
                ),
            ));
        }
        if magic == NSFS_MAGIC {
            // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd,
            // which `file` keeps open for the duration of the call.
            let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
            // -1 (ENOTTY before Linux 4.11): fall back to setns() rejecting it.
            if kind >= 0 && kind != libc::CLONE_NEWNET {
                return Err(Error::invalid(
                    ctx(),
                    format!("namespace type {kind:#x} is not a network namespace (want */ns/net)"),
                ));
            }
        }
        Ok(NetNs {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The calling thread's current network namespace.
    pub fn current() -> Result<NetNs> {
        NetNs::open(THREAD_NETNS)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Whether this is the calling thread's own netns (a CNI_NETNS that is
    /// the host netns would make the plugin configure the host).
    pub fn is_current(&self) -> Result<bool> {
        is_current_netns(&self.file)
    }

    /// Run `f` with the calling thread inside this netns (see [`with_netns`]).
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        with_netns(&self.file, f)
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Whether `ns` refers to the calling thread's current netns (same st_dev
/// and st_ino as `/proc/thread-self/ns/net`).
pub fn is_current_netns(ns: &File) -> Result<bool> {
    let ctx = "netns: compare with the current netns";
    let a = ns.metadata().map_err(|e| Error::from_io(&e, ctx))?;
    let b = std::fs::metadata(THREAD_NETNS).map_err(|e| Error::from_io(&e, ctx))?;
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

/// Run `f` with the calling thread switched into `netns`, then switch back,
/// also when `f` panics. Only the setns into `netns` can fail; failing to
/// switch back aborts the process, because continuing would apply host
/// changes inside the container's netns.
pub fn with_netns<T>(netns: impl AsFd, f: impl FnOnce() -> T) -> Result<T> {
    let orig =
        File::open(THREAD_NETNS).map_err(|e| Error::from_io(&e, "netns: open current netns"))?;
    setns(netns.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|e| Error::os(e as i32, "netns: enter network namespace (setns)"))?;
    let _back = Restore(orig);
    Ok(f())
}

/// Switches the thread back to the saved netns when dropped.
struct Restore(File);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = setns(self.0.as_fd(), CloneFlags::CLONE_NEWNET) {
            eprintln!("netns: cannot switch back to the original network namespace: {e}; aborting");
            std::process::abort();
        }
    }
}
