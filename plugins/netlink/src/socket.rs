//! The blocking NETLINK_ROUTE socket: serialize, send, read replies.
//!
//! One socket per network namespace: a netlink socket stays bound to the
//! netns it was created in, so `new_in_netns` costs one setns round trip and
//! every later request is a plain send/recv.

use std::os::fd::AsFd;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::NETLINK_ROUTE;

use crate::error::{Error, Result};
use crate::netns::with_netns;
use crate::nl::frame::{
    messages, Msg, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, NLMSG_OVERRUN, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_DUMP_INTR, NLM_F_MULTIPART, NLM_F_REQUEST,
};
use crate::nl::NlSocket;

/// Receive buffer. The kernel sizes dump datagrams to at most ~32 KiB; the
/// extra room covers single replies for links with many attributes.
const RX_BUF_LEN: usize = 64 * 1024;
/// Dumps interrupted by concurrent changes (NLM_F_DUMP_INTR) are retried.
const DUMP_RETRIES: usize = 5;

/// A blocking rtnetlink socket bound to one network namespace.
#[derive(Debug)]
pub struct Netlink {
    sock: NlSocket,
}

impl Netlink {
    /// Socket in the calling thread's current network namespace.
    pub fn new() -> Result<Self> {
        let ctx = "netlink: open NETLINK_ROUTE socket";
        let sock =
            NlSocket::open(NETLINK_ROUTE, RX_BUF_LEN).map_err(|e| Error::from_io(&e, ctx))?;
        // Strict checking makes the kernel honour dump filters (ifindex,
        // table) instead of silently dumping everything.
        sock.socket()
            .set_netlink_get_strict_chk(true)
            .map_err(|e| Error::from_io(&e, ctx))?;
        Ok(Netlink { sock })
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
        let mut out = Vec::new();
        self.ack_raw(msg, flags, &mut |m| {
            out.extend(decode(m)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// [`Self::ack`] handing each message sent before the ACK, undecoded,
    /// to `sink`. A sink error (an undecodable NLM_F_ECHO copy) is ignored:
    /// it must not turn a change the kernel ACKed into an error.
    pub(crate) fn ack_raw(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        sink: &mut dyn FnMut(Msg<'_>) -> Result<()>,
    ) -> Result<()> {
        let seq = self.send(msg, NLM_F_ACK | flags)?;
        self.recv(seq, Until::Ack, sink).map(drop)
    }

    /// Non-dump GET: exactly one reply message (or an error), read by `f`
    /// from its raw bytes.
    pub(crate) fn get_raw<T>(
        &mut self,
        msg: RouteNetlinkMessage,
        mut f: impl FnMut(Msg<'_>) -> Result<T>,
    ) -> Result<T> {
        let seq = self.send(msg, 0)?;
        let mut out = None;
        self.recv(seq, Until::FirstMessage, &mut |m| {
            out = Some(f(m)?);
            Ok(())
        })?;
        out.ok_or_else(|| Error::msg("netlink", "kernel sent no reply to a GET request"))
    }

    /// Dump request; `f` maps (and filters) each reply. Retried when the
    /// kernel flags the dump as inconsistent (NLM_F_DUMP_INTR).
    pub(crate) fn dump<T>(
        &mut self,
        msg: RouteNetlinkMessage,
        mut f: impl FnMut(RouteNetlinkMessage) -> Option<T>,
    ) -> Result<Vec<T>> {
        self.dump_raw(msg, |m| Ok(decode(m)?.and_then(&mut f)))
    }

    /// [`Self::dump`] with each reply decoded (and filtered) by `f` from its
    /// raw bytes. A decode error fails the dump once it has been read to
    /// its end.
    pub(crate) fn dump_raw<T>(
        &mut self,
        msg: RouteNetlinkMessage,
        mut f: impl FnMut(Msg<'_>) -> Result<Option<T>>,
    ) -> Result<Vec<T>> {
        for _ in 0..DUMP_RETRIES {
            let seq = self.send(msg.clone(), NLM_F_DUMP)?;
            let mut out = Vec::new();
            let interrupted = self.recv(seq, Until::Done, &mut |m| {
                out.extend(f(m)?);
                Ok(())
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
        let seq = self.sock.next_seq(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let len = packet.buffer_len();
        if len > u32::MAX as usize || len < NLMSG_HDRLEN {
            return Err(Error::invalid(
                "netlink: send",
                format!("bad request length {len}"),
            ));
        }
        let mut buf = vec![0u8; len];
        packet.serialize(&mut buf);
        self.sock
            .send(&buf)
            .map_err(|e| Error::from_io(&e, "netlink: send"))?;
        Ok(seq)
    }

    /// Read datagrams until the reply to `seq` is complete. Returns whether
    /// any message carried NLM_F_DUMP_INTR.
    fn recv(
        &mut self,
        seq: u32,
        until: Until,
        sink: &mut dyn FnMut(Msg<'_>) -> Result<()>,
    ) -> Result<bool> {
        let mut state = Reply::default();
        loop {
            let data = self
                .sock
                .recv()
                .map_err(|e| Error::from_io(&e, "netlink: receive"))?;
            if let Some(res) = state.datagram(data, seq, until, sink) {
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
    /// error) are skipped; a malformed message drops the rest of the
    /// datagram (its length cannot be trusted).
    fn datagram(
        &mut self,
        data: &[u8],
        seq: u32,
        until: Until,
        sink: &mut dyn FnMut(Msg<'_>) -> Result<()>,
    ) -> Option<Result<bool>> {
        for m in messages(data) {
            if m.seq != seq {
                continue;
            }
            self.interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
            let res = match m.ty {
                NLMSG_ERROR => error_reply(&m),
                NLMSG_DONE => done_reply(&m).map(|()| self.interrupted),
                NLMSG_OVERRUN => Err(Error::msg("netlink: receive", "kernel reported overrun")),
                _ => {
                    match sink(m) {
                        Ok(()) => {}
                        // An undecodable NLM_F_ECHO copy must not turn a
                        // change the kernel ACKed into an error.
                        Err(_) if until == Until::Ack => {}
                        Err(e) => {
                            self.failed.get_or_insert(e);
                        }
                    }
                    if until != Until::FirstMessage || m.flags & NLM_F_MULTIPART != 0 {
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

/// The typed decode of one reply: None for a control message the typed
/// layer does not expose.
pub(crate) fn decode(m: Msg<'_>) -> Result<Option<RouteNetlinkMessage>> {
    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(m.raw) {
        Ok(m) => match m.payload {
            NetlinkPayload::InnerMessage(inner) => Ok(Some(inner)),
            _ => Ok(None),
        },
        Err(e) => Err(decode_error(e)),
    }
}

/// A reply the kernel sent that could not be decoded.
pub(crate) fn decode_error(e: impl std::fmt::Display) -> Error {
    Error::msg("netlink: decode kernel reply", e.to_string())
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

/// NLMSG_ERROR: Ok(false) for an ACK, else the errno with the kernel's
/// ext-ack message.
fn error_reply(m: &Msg<'_>) -> Result<bool> {
    let Some(st) = m.error() else {
        return Err(Error::msg("netlink", "truncated error reply"));
    };
    if st.errno == 0 {
        return Ok(false);
    }
    Err(Error::os(st.errno, "netlink").with_detail(st.ext_msg))
}

/// NLMSG_DONE: the dump's status.
fn done_reply(m: &Msg<'_>) -> Result<()> {
    match m.done() {
        Some(st) if st.errno != 0 => {
            Err(Error::os(st.errno, "netlink: dump").with_detail(st.ext_msg))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A netlink message: header plus payload, padded to 4 bytes.
    fn nlmsg(mtype: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        let at = crate::nl::frame::begin(&mut m, mtype, flags, seq);
        m.extend_from_slice(payload);
        crate::nl::frame::end(&mut m, at);
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
        let mut sink = |m: Msg<'_>| decode(m).map(|_| got += 1);
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
        let mut sink = |m: Msg<'_>| decode(m).map(drop);
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
        use crate::nl::frame::NLM_F_CAPPED;
        let reply = |b: Vec<u8>| error_reply(&messages(&b).next().unwrap());
        assert_eq!(reply(nlmsg(NLMSG_ERROR, 0, 1, &[0; 20])), Ok(false));
        let mut p = (-17i32).to_ne_bytes().to_vec();
        p.extend_from_slice(&[0u8; 16]);
        let e = reply(nlmsg(NLMSG_ERROR, NLM_F_CAPPED, 1, &p)).unwrap_err();
        assert!(e.is_exists());
        assert_eq!(e.to_string(), "netlink: File exists (os error 17)");
        assert!(reply(nlmsg(NLMSG_ERROR, 0, 1, &[1, 2])).is_err());
        let done = |p: &[u8]| done_reply(&messages(&nlmsg(NLMSG_DONE, 0, 1, p)).next().unwrap());
        assert!(done(&[]).is_ok());
        assert_eq!(done(&(-19i32).to_ne_bytes()).unwrap_err().errno(), Some(19));
    }

    /// The kernel's ext-ack text reaches the error.
    #[test]
    fn ext_ack_in_error_text() {
        let mut p = (-95i32).to_ne_bytes().to_vec();
        p.extend(nlmsg(16, 0, 4, &[0; 16]));
        crate::nl::attr::AttrWriter::new(&mut p)
            .put_str(crate::nl::frame::NLMSGERR_ATTR_MSG, "Unknown device type");
        let d = nlmsg(NLMSG_ERROR, crate::nl::frame::NLM_F_ACK_TLVS, 4, &p);
        let mut sink = |m: Msg<'_>| decode(m).map(drop);
        let res = Reply::default().datagram(&d, 4, Until::Ack, &mut sink);
        let e = res.unwrap().unwrap_err();
        assert_eq!(e.errno(), Some(libc::EOPNOTSUPP));
        assert_eq!(e.detail(), Some("Unknown device type"));
    }
}
