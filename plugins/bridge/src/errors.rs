//! Turning netlink and I/O failures into CNI errors that name the object and the fix.

use cni_core::{CniError, Code};

pub fn nl(e: cni_netlink::Error) -> CniError {
    CniError::internal(e.to_string())
}

pub trait NlContext<T> {
    /// Maps a netlink error to a CNI error prefixed with what we were doing.
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, CniError>;
}

impl<T> NlContext<T> for Result<T, cni_netlink::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, CniError> {
        self.map_err(|e| CniError::internal(format!("{}: {e}", what())))
    }
}

/// CNI_NETNS that cannot be opened or is not a network namespace.
pub fn bad_netns(path: &str, e: cni_netlink::Error) -> CniError {
    CniError::new(
        Code::InvalidEnv,
        format!("failed to open netns {path:?}: {e}"),
    )
}
