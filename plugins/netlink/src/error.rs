//! One error type for the crate: an errno (when the kernel or a syscall gave
//! one) plus a context string naming the object and the operation.

use std::{fmt, io};

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from a netlink request, a namespace switch or a sysctl.
///
/// Display looks like
/// `netlink: add address 10.1.2.3/24 to eth0: File exists (os error 17)`,
/// optionally followed by the kernel's extended-ack message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What was being done, e.g. `netlink: add address 10.1.2.3/24 to eth0`.
    context: String,
    /// Positive errno, 0 when the failure was not a syscall/kernel error.
    errno: i32,
    /// Extra detail: kernel ext-ack text, decode error, or a hint.
    detail: Option<String>,
}

impl Error {
    /// Error carrying an errno (positive, e.g. `libc::EEXIST`).
    pub(crate) fn os(errno: i32, context: impl Into<String>) -> Self {
        Error {
            context: context.into(),
            errno,
            detail: None,
        }
    }

    /// Error without an errno (malformed kernel reply, invalid argument text).
    pub(crate) fn msg(context: impl Into<String>, detail: impl Into<String>) -> Self {
        Error {
            context: context.into(),
            errno: 0,
            detail: Some(detail.into()),
        }
    }

    /// Invalid caller input, reported as EINVAL so callers can still match it.
    pub(crate) fn invalid(context: impl Into<String>, detail: impl Into<String>) -> Self {
        Error {
            context: context.into(),
            errno: libc::EINVAL,
            detail: Some(detail.into()),
        }
    }

    pub(crate) fn from_io(e: &io::Error, context: impl Into<String>) -> Self {
        match e.raw_os_error() {
            Some(errno) => Error::os(errno, context),
            None => Error::msg(context, e.to_string()),
        }
    }

    pub(crate) fn with_detail(mut self, detail: Option<String>) -> Self {
        if detail.is_some() {
            self.detail = detail;
        }
        self
    }

    /// Replace the context (requests fail without one; helpers add it).
    pub(crate) fn context(mut self, context: impl Into<String>) -> Self {
        self.context = context.into();
        self
    }

    /// The positive errno, if the failure came from the kernel or a syscall.
    pub fn errno(&self) -> Option<i32> {
        (self.errno != 0).then_some(self.errno)
    }

    /// The named object does not exist: ENOENT, ENODEV (link), ESRCH (route),
    /// EADDRNOTAVAIL (address on delete).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno,
            libc::ENOENT | libc::ENODEV | libc::ESRCH | libc::EADDRNOTAVAIL
        )
    }

    /// The object already exists (EEXIST).
    pub fn is_exists(&self) -> bool {
        self.errno == libc::EEXIST
    }

    /// The kernel's extended-ack message or other detail, if any.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)?;
        if self.errno != 0 {
            write!(f, ": {}", io::Error::from_raw_os_error(self.errno))?;
        }
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        if self.errno == libc::EPERM {
            // The one failure whose fix is always the same.
            f.write_str(" (needs root or CAP_NET_ADMIN/CAP_SYS_ADMIN)")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e.errno {
            0 => io::Error::other(e.to_string()),
            n => io::Error::new(io::Error::from_raw_os_error(n).kind(), e.to_string()),
        }
    }
}
