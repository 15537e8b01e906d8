//! Turning netlink, netns and sysctl failures into CNI errors that name the object and the fix.

use cni_core::{CniError, Code};

use crate::sysctl::SysctlKey;

pub fn nl(e: cni_netlink::Error) -> CniError {
    CniError::internal(e.to_string())
}

/// CNI_NETNS that cannot be opened or entered.
pub fn bad_netns(path: &str, e: cni_netlink::Error) -> CniError {
    CniError::new(
        Code::InvalidEnv,
        format!("failed to open netns {path:?}: {e}"),
    )
}

/// A sysctl that cannot be read or written in the container's netns. A name that does not
/// exist there (a global sysctl only the host has, a typo, an absent interface) or a value the
/// kernel refuses is the config's fault (code 7).
pub fn sysctl_err(k: &SysctlKey, e: cni_netlink::Error) -> CniError {
    match e.errno() {
        Some(libc::ENOENT) => CniError::config(format!(
            "invalid net sysctl key: {:?}: {} does not exist in the container's network namespace \
             (only per-namespace net.* sysctls can be set; check the name)",
            k.raw,
            k.file()
        )),
        Some(libc::EISDIR) => CniError::config(format!(
            "invalid net sysctl key: {:?}: {} is a directory, not a sysctl",
            k.raw,
            k.file()
        )),
        Some(libc::EINVAL) | Some(libc::ERANGE) => CniError::config(format!(
            "sysctl {:?}: the kernel refused the value: {e}",
            k.raw
        )),
        _ => CniError::internal(format!("sysctl {:?}: {e}", k.raw)),
    }
}
