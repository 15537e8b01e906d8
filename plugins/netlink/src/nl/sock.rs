//! The blocking netlink socket every protocol of the workspace uses
//! (NETLINK_ROUTE, NETLINK_NETFILTER): open, sequence numbers, send, receive
//! one datagram. Errors are `io::Error`s; each protocol client adds its own
//! context (the object and operation) when it converts them.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_sys::{Socket, SocketAddr};

use super::frame::{messages, Msg};

/// Receive-buffer accounting per ACK message (skb truesize, generous).
const ACK_TRUESIZE: usize = 1280;

/// Datagrams up to this size always fit the default send buffer.
const SMALL_SEND: usize = 64 * 1024;

/// A connected netlink socket. Not shared between threads; one per request
/// sequence (opening costs a few microseconds).
pub struct NlSocket {
    sock: Socket,
    seq: u32,
    /// Receive buffer; its capacity is the largest datagram accepted. Kept
    /// uninitialized (the kernel writes into the spare capacity): zeroing
    /// 64 KiB or more would fault in every page of it, in every short-lived
    /// plugin process, for replies that are mostly under 2 KiB.
    rx: Vec<u8>,
    /// SO_RCVBUF asked for with [`NlSocket::set_rcvbuf`] (0: kernel default).
    rcvbuf: usize,
}

impl std::fmt::Debug for NlSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NlSocket").field("seq", &self.seq).finish()
    }
}

impl NlSocket {
    /// Opens a `protocol` socket in the calling thread's network namespace,
    /// connected to the kernel (replies from anyone else are refused;
    /// connect also binds a port id). `rx_len` bounds one received datagram.
    pub fn open(protocol: isize, rx_len: usize) -> io::Result<Self> {
        let sock = Socket::new(protocol)?;
        // Best effort (old kernels lack them): kernel error strings, and no
        // echo of our whole request inside every error reply.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(NlSocket {
            sock,
            seq: seed(),
            rx: Vec::with_capacity(rx_len),
            rcvbuf: 0,
        })
    }

    /// The underlying socket, for protocol-specific options.
    pub fn socket(&self) -> &Socket {
        &self.sock
    }

    /// Reserves `n` consecutive sequence numbers; returns the first.
    pub fn next_seq(&mut self, n: u32) -> u32 {
        let first = self.seq;
        self.seq = self.seq.wrapping_add(n.max(1));
        first
    }

    /// A receive timeout: [`NlSocket::recv`] then fails with
    /// `ErrorKind::TimedOut` instead of blocking forever.
    pub fn set_recv_timeout(&self, d: Duration) -> io::Result<()> {
        // `as _`: the field types differ between libcs (the libc crate deprecates naming
        // musl's time_t).
        let tv = libc::timeval {
            tv_sec: d.as_secs() as _,
            tv_usec: d.subsec_micros() as _,
        };
        // SAFETY: the fd is owned by `sock` and open; `tv` is a valid timeval
        // that outlives the call and its exact size is passed.
        let rc = unsafe {
            libc::setsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Best effort: a receive buffer of `bytes` (SO_RCVBUF, capped by
    /// net.core.rmem_max), so bursts of replies do not overflow (ENOBUFS).
    pub fn set_rcvbuf(&mut self, bytes: usize) {
        if self.sock.set_rx_buf_sz(bytes).is_ok() {
            self.rcvbuf = bytes;
        }
    }

    /// Makes room for `n` ACKs in the receive buffer (each is a separate
    /// skb of ~1 KiB truesize): a batch of thousands of operations would
    /// otherwise overflow it (ENOBUFS). Best effort, like the send side.
    pub fn reserve_acks(&self, n: usize) {
        let need = n.saturating_mul(ACK_TRUESIZE);
        if need > self.rcvbuf {
            set_buf(&self.sock, need, [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF]);
        }
    }

    /// Sends one datagram (one request, or a whole batch). EINTR is retried;
    /// a short send is an error.
    pub fn send(&self, bytes: &[u8]) -> io::Result<()> {
        // A batch is one datagram, limited by the send buffer (~200 KiB by
        // default): grow it for a big one (thousands of elements).
        if bytes.len() > SMALL_SEND {
            set_buf(
                &self.sock,
                bytes.len() + 4096,
                [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF],
            );
        }
        loop {
            match self.sock.send(bytes, 0) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => {
                    return Err(io::Error::other(format!(
                        "short send: {n} of {} bytes",
                        bytes.len()
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Receives one datagram. EINTR is retried; a timeout (see
    /// [`NlSocket::set_recv_timeout`]) is `ErrorKind::TimedOut`; a datagram
    /// larger than the buffer is an error (never silently cut).
    pub fn recv(&mut self) -> io::Result<&[u8]> {
        let cap = self.rx.capacity();
        let n = loop {
            self.rx.clear();
            // `Vec<u8>` as `BufMut`: the kernel writes into the spare capacity
            // and the length advances by what fits.
            match self.sock.recv(&mut self.rx, libc::MSG_TRUNC) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
                }
                Err(e) => return Err(e),
            }
        };
        if n > cap {
            return Err(io::Error::other(format!(
                "reply of {n} bytes truncated to {cap} bytes"
            )));
        }
        Ok(&self.rx[..n])
    }

    /// Receives datagrams and passes each message to `f` until `f` returns
    /// `Ok(true)` (done) or an error; socket errors go through `io_err`.
    pub fn recv_until<E>(
        &mut self,
        io_err: impl Fn(io::Error) -> E,
        mut f: impl FnMut(Msg<'_>) -> Result<bool, E>,
    ) -> Result<(), E> {
        loop {
            for m in messages(self.recv().map_err(&io_err)?) {
                if f(m)? {
                    return Ok(());
                }
            }
        }
    }
}

/// First sequence number: differs between processes and sockets, so a reply
/// is never mistaken for one to an earlier socket's request.
fn seed() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (std::process::id() << 16) ^ t
}

/// Best effort: the first option that succeeds (the FORCE variant needs
/// CAP_NET_ADMIN but passes the net.core.*mem_max cap).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_are_reserved_in_blocks() {
        let mut s = NlSocket {
            sock: Socket::new(netlink_sys::protocols::NETLINK_ROUTE).unwrap(),
            seq: u32::MAX - 1,
            rx: vec![],
            rcvbuf: 0,
        };
        assert_eq!(s.next_seq(3), u32::MAX - 1);
        assert_eq!(s.next_seq(1), 1);
        assert_eq!(s.next_seq(0), 2);
        assert_eq!(s.next_seq(1), 3);
    }
}
