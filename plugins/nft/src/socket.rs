//! The NETLINK_NETFILTER socket: open, send, and a receive loop that hands
//! every message to a callback until the callback says it is done.

use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_sys::{Socket, SocketAddr};

use crate::error::{Error, Result};
use crate::msg::{self, NlMsg};
use crate::sys::NETLINK_NETFILTER;

/// Large enough for any nf_tables message (dump replies are at most a few
/// pages per datagram).
const RECV_BUF: usize = 256 * 1024;
const RCVBUF_BYTES: usize = 1 << 20;
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// A connected netfilter netlink socket. Not shared between threads; open
/// one per operation (opening costs a few microseconds).
pub struct NftSocket {
    sock: Socket,
    seq: u32,
    rbuf: Vec<u8>,
}

impl NftSocket {
    /// Opens a socket in the calling thread's network namespace.
    pub fn new() -> Result<Self> {
        let ctx = "open NETLINK_NETFILTER socket";
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| Error::io(ctx, e))?;
        sock.bind_auto().map_err(|e| Error::io(ctx, e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| Error::io(ctx, e))?;
        // Best effort: a larger buffer keeps per-message ACKs of a big batch
        // from overflowing; extended ACKs give kernel error strings; capped
        // ACKs keep error replies small.
        let _ = sock.set_rx_buf_sz(RCVBUF_BYTES);
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        set_recv_timeout(&sock, REPLY_TIMEOUT).map_err(|e| Error::io(ctx, e))?;
        let seq = seed();
        Ok(NftSocket {
            sock,
            seq,
            rbuf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Reserves `n` consecutive sequence numbers; returns the first.
    pub(crate) fn alloc_seq(&mut self, n: u32) -> u32 {
        let first = self.seq;
        self.seq = self.seq.wrapping_add(n.max(1));
        first
    }

    pub(crate) fn send(&self, bytes: &[u8], what: &str) -> Result<()> {
        // A batch is one datagram, limited by the send buffer (~200 KiB by
        // default): grow it for a big one (thousands of elements).
        if bytes.len() > SMALL_SEND {
            grow_send_buf(&self.sock, bytes.len() + 4096);
        }
        let n = self
            .sock
            .send(bytes, 0)
            .map_err(|e| Error::io(format!("send {what}"), e))?;
        if n != bytes.len() {
            return Err(Error::Protocol(format!(
                "short send of {what}: {n} of {} bytes",
                bytes.len()
            )));
        }
        Ok(())
    }

    /// Makes room for `n` ACKs in the receive buffer (each is a separate
    /// skb of ~1 KiB truesize): a batch of thousands of operations would
    /// otherwise overflow it (ENOBUFS). Best effort, like the send side.
    pub(crate) fn reserve_acks(&self, n: usize) {
        let need = n.saturating_mul(ACK_TRUESIZE);
        if need > RCVBUF_BYTES {
            set_buf(&self.sock, need, [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF]);
        }
    }

    /// Receives datagrams and passes each message to `f` until `f` returns
    /// `Ok(true)` (done) or an error.
    pub(crate) fn recv_until(
        &mut self,
        what: &str,
        mut f: impl FnMut(NlMsg<'_>) -> Result<bool>,
    ) -> Result<()> {
        let mut buf = std::mem::take(&mut self.rbuf);
        let res = (|| loop {
            buf.clear();
            buf.reserve(RECV_BUF);
            let n = match self.sock.recv(&mut buf, libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Err(Error::io(
                        format!("waiting for the kernel's reply to {what}"),
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
                    ));
                }
                Err(e) => return Err(Error::io(format!("receive reply to {what}"), e)),
            };
            if n > buf.len() {
                return Err(Error::Protocol(format!(
                    "reply to {what} truncated ({n} bytes)"
                )));
            }
            for m in msg::messages(&buf) {
                if f(m)? {
                    return Ok(());
                }
            }
        })();
        self.rbuf = buf;
        res
    }
}

fn seed() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (std::process::id() << 16) ^ t
}

/// Receive-buffer accounting per ACK message (skb truesize, generous).
const ACK_TRUESIZE: usize = 1280;

/// Datagrams up to this size always fit the default send buffer.
const SMALL_SEND: usize = 64 * 1024;

/// Best effort: SO_SNDBUFFORCE (root, past net.core.wmem_max), else SO_SNDBUF.
fn grow_send_buf(sock: &Socket, bytes: usize) {
    set_buf(sock, bytes, [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF]);
}

fn set_buf(sock: &Socket, bytes: usize, opts: [libc::c_int; 2]) {
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    for opt in opts {
        // SAFETY: the fd is owned by `sock` and open; `v` is a c_int that
        // outlives the call and its exact size is passed.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

fn set_recv_timeout(sock: &Socket, d: Duration) -> std::io::Result<()> {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: the fd is owned by `sock` and open; `tv` is a valid timeval
    // that outlives the call and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
