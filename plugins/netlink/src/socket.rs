//! The blocking NETLINK_ROUTE socket: serialize, send, read replies.
//!
//! One socket per network namespace: a netlink socket stays bound to the
//! netns it was created in, so `new_in_netns` costs one setns round trip and
//! every later request is a plain send/recv.

use std::os::fd::AsFd;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_DONE, NLMSG_ERROR,
    NLMSG_OVERRUN, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_MULTIPART, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::error::{Error, Result};
use crate::netns::with_netns;

/// Receive buffer. The kernel sizes dump datagrams to at most ~32 KiB; the
/// extra room covers single replies for links with many attributes.
const RX_BUF_LEN: usize = 64 * 1024;
/// Dumps interrupted by concurrent changes (NLM_F_DUMP_INTR) are retried.
const DUMP_RETRIES: usize = 5;

/// Not exported by netlink-packet-core 0.9 for the error message header.
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;

/// A blocking rtnetlink socket bound to one network namespace.
pub struct Netlink {
    sock: Socket,
    seq: u32,
    rx: Vec<u8>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").field("seq", &self.seq).finish()
    }
}

impl Netlink {
    /// Socket in the calling thread's current network namespace.
    pub fn new() -> Result<Self> {
        let ctx = "netlink: open NETLINK_ROUTE socket";
        let sock = Socket::new(NETLINK_ROUTE).map_err(|e| Error::from_io(&e, ctx))?;
        // Strict checking makes the kernel honour dump filters (ifindex,
        // table) instead of silently dumping everything.
        sock.set_netlink_get_strict_chk(true)
            .map_err(|e| Error::from_io(&e, ctx))?;
        // Best effort (old kernels lack them): kernel error strings, and no
        // echo of our whole request inside every error reply.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        // Connected to the kernel: replies from anyone else are refused.
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| Error::from_io(&e, ctx))?;
        Ok(Netlink {
            sock,
            seq: 0,
            rx: vec![0; RX_BUF_LEN],
        })
    }

    /// Socket inside the network namespace `netns` (e.g. an open
    /// `/var/run/netns/x`). The calling thread enters the netns only for the
    /// `socket()` call and is always switched back.
    pub fn new_in_netns(netns: impl AsFd) -> Result<Self> {
        with_netns(netns, Netlink::new)?
    }

    /// Request that is answered by an ACK (or an error); `flags` adds
    /// NLM_F_CREATE/EXCL/... Messages the kernel sends before the ACK (for
    /// NLM_F_ECHO) are returned.
    pub(crate) fn ack(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_ACK | flags)?;
        let mut out = Vec::new();
        self.recv(seq, Until::Ack, &mut |m| out.push(m))?;
        Ok(out)
    }

    /// Non-dump GET: exactly one reply message (or an error).
    pub(crate) fn get(&mut self, msg: RouteNetlinkMessage) -> Result<RouteNetlinkMessage> {
        let seq = self.send(msg, 0)?;
        let mut out = None;
        self.recv(seq, Until::FirstMessage, &mut |m| out = Some(m))?;
        out.ok_or_else(|| Error::msg("netlink", "kernel sent no reply to a GET request"))
    }

    /// Dump request; `f` maps (and filters) each reply. Retried when the
    /// kernel flags the dump as inconsistent (NLM_F_DUMP_INTR).
    pub(crate) fn dump<T>(
        &mut self,
        msg: RouteNetlinkMessage,
        mut f: impl FnMut(RouteNetlinkMessage) -> Option<T>,
    ) -> Result<Vec<T>> {
        for _ in 0..DUMP_RETRIES {
            let seq = self.send(msg.clone(), NLM_F_DUMP)?;
            let mut out = Vec::new();
            let interrupted = self.recv(seq, Until::Done, &mut |m| {
                if let Some(t) = f(m) {
                    out.push(t)
                }
            })?;
            if !interrupted {
                return Ok(out);
            }
        }
        Err(
            Error::os(libc::EINTR, "netlink: dump").with_detail(Some(format!(
                "interrupted by concurrent changes {DUMP_RETRIES} times in a row; retry later"
            ))),
        )
    }

    /// Serialize into a fresh zeroed buffer (a reused buffer leaks stale
    /// padding bytes: netavark's EINVAL bug) and send.
    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let len = packet.buffer_len();
        if len > u32::MAX as usize || len < 16 {
            return Err(Error::invalid(
                "netlink: send",
                format!("bad request length {len}"),
            ));
        }
        let mut buf = vec![0u8; len];
        packet.serialize(&mut buf);
        loop {
            match self.sock.send(&buf, 0) {
                Ok(n) if n == len => return Ok(self.seq),
                Ok(n) => {
                    return Err(Error::msg(
                        "netlink: send",
                        format!("short send: {n} of {len} bytes"),
                    ))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::from_io(&e, "netlink: send")),
            }
        }
    }

    /// Read datagrams until the reply to `seq` is complete. Returns whether
    /// any message carried NLM_F_DUMP_INTR.
    fn recv(
        &mut self,
        seq: u32,
        until: Until,
        sink: &mut dyn FnMut(RouteNetlinkMessage),
    ) -> Result<bool> {
        let mut state = Reply::default();
        loop {
            let n = loop {
                match self.sock.recv(&mut &mut self.rx[..], libc::MSG_TRUNC) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::from_io(&e, "netlink: receive")),
                }
            };
            if n > self.rx.len() {
                return Err(Error::msg(
                    "netlink: receive",
                    format!("reply of {n} bytes truncated to {} bytes", self.rx.len()),
                ));
            }
            if let Some(res) = state.datagram(&self.rx[..n], seq, until, sink) {
                return res;
            }
        }
    }
}

/// Progress through one reply, which may span several datagrams.
#[derive(Default)]
struct Reply {
    interrupted: bool,
    /// A decode failure is remembered, and reading continues to the end of
    /// the reply so the socket stays in sync for the next request.
    failed: Option<Error>,
}

impl Reply {
    /// Handle one datagram; Some(result) once the reply is complete.
    /// Messages for other sequence numbers (left over after an earlier
    /// error) are skipped.
    fn datagram(
        &mut self,
        data: &[u8],
        seq: u32,
        until: Until,
        sink: &mut dyn FnMut(RouteNetlinkMessage),
    ) -> Option<Result<bool>> {
        let mut off = 0;
        while off < data.len() {
            // Cannot find the next message boundary: drop the datagram.
            let buf = NetlinkBuffer::new_checked(&data[off..]).ok()?;
            let raw = &data[off..off + buf.length() as usize];
            off += (raw.len() + 3) & !3;
            if buf.sequence_number() != seq {
                continue;
            }
            let flags = buf.flags();
            self.interrupted |= flags & NLM_F_DUMP_INTR != 0;
            let res = match buf.message_type() {
                NLMSG_ERROR => error_reply(buf.payload(), flags),
                NLMSG_DONE => done_reply(buf.payload()).map(|()| self.interrupted),
                NLMSG_OVERRUN => Err(Error::msg("netlink: receive", "kernel reported overrun")),
                _ => {
                    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(raw) {
                        Ok(m) => {
                            if let NetlinkPayload::InnerMessage(inner) = m.payload {
                                sink(inner)
                            }
                        }
                        // An undecodable NLM_F_ECHO copy must not turn a
                        // change the kernel ACKed into an error.
                        Err(_) if until == Until::Ack => {}
                        Err(e) => {
                            self.failed.get_or_insert_with(|| {
                                Error::msg("netlink: decode kernel reply", e.to_string())
                            });
                        }
                    }
                    if until != Until::FirstMessage || flags & NLM_F_MULTIPART != 0 {
                        continue;
                    }
                    Ok(self.interrupted)
                }
            };
            return Some(match (self.failed.take(), res) {
                (_, Err(e)) | (Some(e), Ok(_)) => Err(e),
                (None, ok) => ok,
            });
        }
        None
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Until {
    /// NLMSG_ERROR with code 0.
    Ack,
    /// NLMSG_DONE.
    Done,
    /// The single reply of a non-dump GET.
    FirstMessage,
}

/// NLMSG_ERROR payload: i32 -errno, the echoed request header (only the
/// header thanks to NETLINK_CAP_ACK) and optional ext-ack attributes.
fn error_reply(payload: &[u8], flags: u16) -> Result<bool> {
    let Some(code) = payload.get(..4) else {
        return Err(Error::msg("netlink", "truncated error reply"));
    };
    let code = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
    if code == 0 {
        return Ok(false);
    }
    let echoed = &payload[4..];
    let tlvs_at = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        // Whole request echoed: its own header says how long it is.
        echoed
            .get(..4)
            .map(|l| u32::from_ne_bytes([l[0], l[1], l[2], l[3]]) as usize)
            .map_or(echoed.len(), |l| (l + 3) & !3)
    };
    let detail = if flags & NLM_F_ACK_TLVS != 0 {
        echoed.get(tlvs_at..).and_then(ext_ack_msg)
    } else {
        None
    };
    Err(Error::os(code.saturating_neg(), "netlink").with_detail(detail))
}

/// NLMSG_DONE payload: i32 status (negative errno if the dump failed) and
/// optional ext-ack attributes.
fn done_reply(payload: &[u8]) -> Result<()> {
    let code = payload
        .get(..4)
        .map_or(0, |c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
    if code >= 0 {
        return Ok(());
    }
    let detail = payload.get(4..).and_then(ext_ack_msg);
    Err(Error::os(code.saturating_neg(), "netlink: dump").with_detail(detail))
}

/// Find NLMSGERR_ATTR_MSG (a NUL-terminated string) in ext-ack attributes.
fn ext_ack_msg(mut tlvs: &[u8]) -> Option<String> {
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if len < 4 || len > tlvs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let s = &tlvs[4..len];
            let s = s.split(|&b| b == 0).next().unwrap_or(s);
            return Some(String::from_utf8_lossy(s).into_owned()).filter(|s| !s.is_empty());
        }
        tlvs = tlvs.get((len + 3) & !3..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_ack_parsing() {
        let mut tlv = vec![];
        let msg = b"Unknown device type\0";
        tlv.extend_from_slice(&((4 + msg.len()) as u16).to_ne_bytes());
        tlv.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        tlv.extend_from_slice(msg);
        assert_eq!(ext_ack_msg(&tlv).as_deref(), Some("Unknown device type"));
        assert_eq!(ext_ack_msg(&tlv[..3]), None);
        // Length field pointing past the end must not panic.
        let bad = [200u8, 0, 1, 0, b'x'];
        assert_eq!(ext_ack_msg(&bad), None);
    }

    /// A netlink message: header plus payload, padded to 4 bytes.
    fn nlmsg(mtype: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&(16 + payload.len() as u32).to_ne_bytes());
        m.extend_from_slice(&mtype.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize((m.len() + 3) & !3, 0);
        m
    }

    /// RTM_NEWADDR for 10.0.0.1/24 on ifindex 2.
    fn newaddr(flags: u16, seq: u32) -> Vec<u8> {
        let body = [2, 24, 0, 0, 2, 0, 0, 0, 8, 0, 2, 0, 10, 0, 0, 1];
        nlmsg(20, flags, seq, &body)
    }

    #[test]
    fn multipart_dump_with_intr_and_stale_replies() {
        let multi = NLM_F_MULTIPART;
        let mut got = 0;
        let mut sink = |_m: RouteNetlinkMessage| got += 1;
        let mut r = Reply::default();
        // A stale ACK for seq 6 and the first part of the dump for seq 7.
        let mut d1 = nlmsg(NLMSG_ERROR, 0, 6, &[0; 20]);
        d1.extend(newaddr(multi, 7));
        assert!(r.datagram(&d1, 7, Until::Done, &mut sink).is_none());
        // Second datagram: one more entry flagged DUMP_INTR, then DONE.
        let mut d2 = newaddr(multi | NLM_F_DUMP_INTR, 7);
        d2.extend(nlmsg(NLMSG_DONE, multi, 7, &0i32.to_ne_bytes()));
        assert_eq!(r.datagram(&d2, 7, Until::Done, &mut sink), Some(Ok(true)));
        assert_eq!(got, 2);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut sink = |_m: RouteNetlinkMessage| {};
        // Truncated header: datagram dropped.
        let mut r = Reply::default();
        assert!(r.datagram(&[1, 2, 3], 1, Until::Done, &mut sink).is_none());
        // Length field larger than the datagram.
        let mut bad = newaddr(NLM_F_MULTIPART, 1);
        bad[0] = 200;
        assert!(r.datagram(&bad, 1, Until::Done, &mut sink).is_none());
        // Undecodable RTM_NEWADDR (body too short): reported once the dump ends.
        let mut d = nlmsg(20, NLM_F_MULTIPART, 1, &[2]);
        d.extend(nlmsg(NLMSG_DONE, NLM_F_MULTIPART, 1, &0i32.to_ne_bytes()));
        let res = r.datagram(&d, 1, Until::Done, &mut sink).unwrap();
        assert!(res
            .unwrap_err()
            .to_string()
            .starts_with("netlink: decode kernel reply"));
        // ... but ignored while waiting for an ACK (an NLM_F_ECHO copy).
        let mut d = nlmsg(20, 0, 2, &[2]);
        d.extend(nlmsg(NLMSG_ERROR, 0, 2, &[0; 20]));
        let mut r = Reply::default();
        assert_eq!(r.datagram(&d, 2, Until::Ack, &mut sink), Some(Ok(false)));
    }

    #[test]
    fn error_reply_codes() {
        assert_eq!(error_reply(&0i32.to_ne_bytes(), 0), Ok(false));
        let mut p = (-17i32).to_ne_bytes().to_vec();
        p.extend_from_slice(&[0u8; 16]);
        let e = error_reply(&p, NLM_F_CAPPED).unwrap_err();
        assert!(e.is_exists());
        assert!(error_reply(&[1, 2], 0).is_err());
        assert!(done_reply(&[]).is_ok());
        assert_eq!(
            done_reply(&(-19i32).to_ne_bytes()).unwrap_err().errno(),
            Some(19)
        );
    }
}
