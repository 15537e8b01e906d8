//! `/proc/sys` access. Files under `/proc/sys/net` bind to the netns of the
//! thread that opens them, so call these inside `with_netns` for container
//! sysctls.

use std::io::Read;
use std::os::unix::fs::FileExt;

use crate::error::{Error, Result};

/// Read a sysctl, e.g. `net/ipv4/ip_forward` (slash-separated, relative to
/// `/proc/sys`), trimmed of the trailing newline.
pub fn sysctl_get(name: &str) -> Result<String> {
    let path = sysctl_path(name)?;
    let s = std::fs::read_to_string(&path)
        .map_err(|e| Error::from_io(&e, format!("sysctl: read {name}")))?;
    Ok(s.trim().to_string())
}

/// Set a sysctl unless it already has `value`; returns whether it wrote.
/// Reading first skips a write (and its side effects, e.g. a route flush on
/// `ip_forward`) in the common already-set case. Read and write share one
/// open: each open of a `/proc/sys` path is a walk that, for a new device or
/// netns, misses every cache.
pub fn sysctl_set(name: &str, value: &str) -> Result<bool> {
    let path = sysctl_path(name)?;
    let set_ctx = || format!("sysctl: set {name} to {value:?}");
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
    {
        Ok(f) => f,
        // Not writable here (a read-only setting or /proc/sys): fine if already set.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EACCES | libc::EPERM | libc::EROFS)
            ) =>
        {
            if sysctl_get(name)? == value.trim() {
                return Ok(false);
            }
            return Err(Error::from_io(&e, set_ctx()));
        }
        Err(e) => return Err(Error::from_io(&e, format!("sysctl: read {name}"))),
    };
    let mut cur = String::new();
    // `take`: a plain read loop (File's own read_to_string would stat for a size hint).
    (&f).take(u64::MAX)
        .read_to_string(&mut cur)
        .map_err(|e| Error::from_io(&e, format!("sysctl: read {name}")))?;
    if cur.trim() == value.trim() {
        return Ok(false);
    }
    // At offset 0: the kernel ignores a write at a later offset (sysctl_writes_strict).
    f.write_all_at(value.as_bytes(), 0)
        .map_err(|e| Error::from_io(&e, set_ctx()))?;
    Ok(true)
}

/// `/proc/sys/<name>`; rejects names that could escape `/proc/sys` (an
/// interface name is often part of `name`).
fn sysctl_path(name: &str) -> Result<String> {
    let bad = name.is_empty()
        || name.contains('\0')
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(Error::invalid(
            format!("sysctl: {name:?}"),
            "invalid name; want a relative slash-separated path like net/ipv4/ip_forward",
        ));
    }
    Ok(format!("/proc/sys/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_escaping_names() {
        for n in [
            "",
            "/net/ipv4/ip_forward",
            "net/../../etc/passwd",
            "net//x",
            "net/.",
            "a\0b",
        ] {
            let e = sysctl_path(n).unwrap_err();
            assert_eq!(e.errno(), Some(libc::EINVAL), "{n:?}");
        }
        assert_eq!(
            sysctl_path("net/ipv6/conf/br0.100/accept_ra").unwrap(),
            "/proc/sys/net/ipv6/conf/br0.100/accept_ra"
        );
    }
}
