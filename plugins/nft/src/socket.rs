//! The NETLINK_NETFILTER socket: the shared netlink socket
//! (`cni_netlink::nl::NlSocket`) with nf_tables' buffer sizes and reply
//! timeout, and this crate's error contexts.

use std::time::Duration;

use cni_netlink::nl::{Msg, NlSocket};

use crate::error::{Error, Result};
use crate::sys::NETLINK_NETFILTER;

/// Large enough for any nf_tables reply: the kernel sizes a dump's datagrams
/// by the reader's largest receive, capped at 32 KiB, and our single replies
/// (an element, a chain, an error with its ext-ack) are far smaller. Small
/// enough for the plugins' arena (`cni_core::arena::BIG`) and under glibc
/// malloc's mmap threshold: no mmap/munmap pair per socket.
const RECV_BUF: usize = 64 * 1024;
/// Receive buffer: per-message ACKs of a big batch must not overflow it.
const RCVBUF_BYTES: usize = 1 << 20;
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// A connected netfilter netlink socket. Not shared between threads; open
/// one per operation (opening costs a few microseconds).
pub struct NftSocket {
    sock: NlSocket,
}

impl NftSocket {
    /// Opens a socket in the calling thread's network namespace.
    pub fn new() -> Result<Self> {
        let ctx = "open NETLINK_NETFILTER socket";
        let mut sock =
            NlSocket::open(NETLINK_NETFILTER, RECV_BUF).map_err(|e| Error::io(ctx, e))?;
        sock.set_rcvbuf(RCVBUF_BYTES);
        sock.set_recv_timeout(REPLY_TIMEOUT)
            .map_err(|e| Error::io(ctx, e))?;
        Ok(NftSocket { sock })
    }

    /// Reserves `n` consecutive sequence numbers; returns the first.
    pub(crate) fn alloc_seq(&mut self, n: u32) -> u32 {
        self.sock.next_seq(n)
    }

    pub(crate) fn send(&self, bytes: &[u8], what: &str) -> Result<()> {
        self.sock
            .send(bytes)
            .map_err(|e| Error::io(format!("send {what}"), e))
    }

    /// Makes room for `n` ACKs in the receive buffer (ENOBUFS otherwise).
    pub(crate) fn reserve_acks(&self, n: usize) {
        self.sock.reserve_acks(n)
    }

    /// Receives datagrams and passes each message to `f` until `f` returns
    /// `Ok(true)` (done) or an error.
    pub(crate) fn recv_until(
        &mut self,
        what: &str,
        f: impl FnMut(Msg<'_>) -> Result<bool>,
    ) -> Result<()> {
        let io_err = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::TimedOut {
                Error::io(format!("waiting for the kernel's reply to {what}"), e)
            } else {
                Error::io(format!("receive reply to {what}"), e)
            }
        };
        self.sock.recv_until(io_err, f)
    }
}
