//! Error type: every kernel error names the object and the operation, and
//! common errnos carry a hint for the fix.

use std::fmt;
use std::io;

/// One rejected message of a batch (or of a single request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Index of the operation in the batch (order of the builder calls).
    pub index: usize,
    /// Positive errno.
    pub errno: i32,
    /// What was attempted, e.g. `add element 10.1.2.3 to set inet cni_rs masq4`.
    pub op: String,
    /// Kernel extended-ack message, if it sent one.
    pub detail: Option<String>,
}

#[derive(Debug)]
pub enum Error {
    /// The kernel rejected one or more operations; the whole transaction
    /// was rolled back.
    Kernel(Vec<Failure>),
    /// Socket-level failure (open, send, receive, timeout).
    Io { context: String, source: io::Error },
    /// The kernel answered something this crate cannot interpret.
    Protocol(String),
    /// Invalid input from the caller.
    Invalid(String),
    /// The request conflicts with state another owner holds (e.g. a host
    /// port already published); the message names the holder.
    Conflict(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    #[cfg(test)]
    pub(crate) fn single(op: impl Into<String>, errno: i32) -> Self {
        Error::Kernel(vec![Failure {
            index: 0,
            errno,
            op: op.into(),
            detail: None,
        }])
    }

    /// errno of the first failure, if this is a kernel or socket error.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel(f) => f.first().map(|f| f.errno),
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    pub fn failures(&self) -> &[Failure] {
        match self {
            Error::Kernel(f) => f,
            _ => &[],
        }
    }

    /// True when every failure is ENOENT (object missing).
    pub fn is_not_found(&self) -> bool {
        let f = self.failures();
        !f.is_empty() && f.iter().all(|f| f.errno == libc::ENOENT)
    }
}

/// `strerror` without Rust's " (os error N)" suffix.
pub(crate) fn strerror(errno: i32) -> String {
    let s = io::Error::from_raw_os_error(errno).to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn hint(errno: i32) -> Option<&'static str> {
    match errno {
        libc::EPERM => Some("run as root or with CAP_NET_ADMIN in this network namespace"),
        libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT => {
            Some("the kernel lacks nf_tables support (CONFIG_NF_TABLES / module nf_tables)")
        }
        libc::EOPNOTSUPP => Some(
            "the kernel lacks a needed nf_tables module (nft_chain_nat, nft_masq, nft_compat, ...)",
        ),
        libc::ENOBUFS => Some("the netlink receive buffer overflowed; retry"),
        _ => None,
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nftables: {}: {}", self.op, strerror(self.errno))?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        if let Some(h) = hint(self.errno) {
            write!(f, "; {h}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Kernel(fs) => match fs.split_first() {
                Some((first, rest)) => {
                    write!(f, "{first}")?;
                    if !rest.is_empty() {
                        write!(f, " (and {} more:", rest.len())?;
                        for r in rest.iter().take(3) {
                            write!(f, " {}: {};", r.op, strerror(r.errno))?;
                        }
                        write!(f, ")")?;
                    }
                    Ok(())
                }
                None => write!(f, "nftables: transaction failed without an error report"),
            },
            Error::Io { context, source } => write!(f, "nftables: {context}: {source}"),
            Error::Protocol(m) => write!(f, "nftables: unexpected kernel reply: {m}"),
            Error::Invalid(m) => write!(f, "nftables: {m}"),
            Error::Conflict(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_object() {
        let e = Error::single(
            "add element 10.1.2.3 to set inet cni_rs masq4",
            libc::ENOENT,
        );
        assert_eq!(
            e.to_string(),
            "nftables: add element 10.1.2.3 to set inet cni_rs masq4: No such file or directory"
        );
        assert!(e.is_not_found());
        let e = Error::single("add table inet cni_rs", libc::EPERM);
        assert!(e.to_string().contains("CAP_NET_ADMIN"));
    }
}
