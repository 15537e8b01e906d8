//! `nlmsghdr` framing: building request headers, splitting a received
//! datagram into messages (bounds-checked, never panics), and decoding the
//! kernel's status replies (`NLMSG_ERROR`, `NLMSG_DONE`) with the
//! extended-ack message. Protocol-independent: rtnetlink and nfnetlink
//! messages both go through here.

use super::attr::Attrs;

/// `sizeof(struct nlmsghdr)`.
pub const NLMSG_HDRLEN: usize = 16;

// Control message types.
pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;

// Flags of every request.
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTIPART: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_ECHO: u16 = 0x8;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
// GET requests.
pub const NLM_F_ROOT: u16 = 0x100;
pub const NLM_F_MATCH: u16 = 0x200;
pub const NLM_F_DUMP: u16 = NLM_F_ROOT | NLM_F_MATCH;
// NEW requests.
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
// NLMSG_ERROR replies: request echo capped to its header (NETLINK_CAP_ACK),
// extended-ack attributes follow (NETLINK_EXT_ACK).
pub const NLM_F_CAPPED: u16 = 0x100;
pub const NLM_F_ACK_TLVS: u16 = 0x200;

/// Extended-ack attribute: the kernel's error string (NUL-terminated).
pub const NLMSGERR_ATTR_MSG: u16 = 1;

/// NLMSG_ALIGN / NLA_ALIGN: messages and attributes start on 4 bytes.
pub const fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// Starts a message at the end of `buf` (its 4-byte-aligned end): writes the
/// header with a placeholder length; returns the message's offset for
/// [`end`]. The family header and attributes are appended by the caller.
pub fn begin(buf: &mut Vec<u8>, ty: u16, flags: u16, seq: u32) -> usize {
    buf.resize(align(buf.len()), 0);
    let at = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, patched in end()
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel fills it
    at
}

/// Finishes the message started at `at`: patches its length and pads the
/// buffer so a next message starts aligned.
pub fn end(buf: &mut Vec<u8>, at: usize) {
    let len = u32::try_from(buf.len() - at).unwrap_or(u32::MAX);
    buf[at..at + 4].copy_from_slice(&len.to_ne_bytes());
    buf.resize(align(buf.len()), 0);
}

/// Rewrites the sequence number of the message at `at` (batches number their
/// messages only when they are sent).
pub fn set_seq(buf: &mut [u8], at: usize, seq: u32) {
    buf[at + 8..at + 12].copy_from_slice(&seq.to_ne_bytes());
}

/// One received message.
#[derive(Debug, Clone, Copy)]
pub struct Msg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    /// Everything after the nlmsghdr.
    pub payload: &'a [u8],
    /// The whole message, header included (for typed decoders).
    pub raw: &'a [u8],
}

/// A decoded `NLMSG_ERROR` (an ACK when `errno` is 0) or `NLMSG_DONE` status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Positive errno; 0 means success.
    pub errno: i32,
    /// Sequence number of the request answered: from the echoed request
    /// header when present (each message of a batch is answered by its own
    /// NLMSG_ERROR), else the reply's own.
    pub seq: u32,
    /// The kernel's extended-ack message, if it sent one.
    pub ext_msg: Option<String>,
}

impl<'a> Msg<'a> {
    /// For NLMSG_ERROR: the status; `None` for other types or a payload too
    /// short to hold the error code.
    ///
    /// Payload: i32 -errno, the echoed request (only its header with
    /// NLM_F_CAPPED), then ext-ack attributes when NLM_F_ACK_TLVS is set.
    pub fn error(&self) -> Option<Status> {
        if self.ty != NLMSG_ERROR {
            return None;
        }
        let code = i32::from_ne_bytes(self.payload.get(..4)?.try_into().ok()?);
        let echoed = &self.payload[4..];
        let seq = echoed
            .get(8..12)
            .map_or(self.seq, |s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]));
        let mut ext_msg = None;
        if self.flags & NLM_F_ACK_TLVS != 0 {
            let tlvs_at = if self.flags & NLM_F_CAPPED != 0 {
                NLMSG_HDRLEN
            } else {
                // Whole request echoed: its own header says how long it is.
                echoed.get(..4).map_or(echoed.len(), |l| {
                    align((u32::from_ne_bytes([l[0], l[1], l[2], l[3]]) as usize).max(NLMSG_HDRLEN))
                })
            };
            ext_msg = echoed.get(tlvs_at..).and_then(ext_ack_msg);
        }
        Some(Status {
            errno: code.checked_neg().unwrap_or(i32::MAX),
            seq,
            ext_msg,
        })
    }

    /// For NLMSG_DONE: the dump's status (i32, negative errno if the dump
    /// failed, then optional ext-ack attributes). A missing status is success.
    pub fn done(&self) -> Option<Status> {
        if self.ty != NLMSG_DONE {
            return None;
        }
        let code = self
            .payload
            .get(..4)
            .map_or(0, |c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
        if code >= 0 {
            return Some(Status {
                errno: 0,
                seq: self.seq,
                ext_msg: None,
            });
        }
        Some(Status {
            errno: code.checked_neg().unwrap_or(i32::MAX),
            seq: self.seq,
            ext_msg: self.payload.get(4..).and_then(ext_ack_msg),
        })
    }
}

/// NLMSGERR_ATTR_MSG in ext-ack attributes, if present and not empty.
pub fn ext_ack_msg(tlvs: &[u8]) -> Option<String> {
    Attrs::new(tlvs)
        .find(|(t, _)| *t == NLMSGERR_ATTR_MSG)
        .map(|(_, p)| super::attr::string(p))
        .filter(|s| !s.is_empty())
}

/// Iterates the messages in one datagram; stops at the first malformed one
/// (its length field cannot be trusted to find the next).
pub struct Msgs<'a> {
    rest: &'a [u8],
}

pub fn messages(buf: &[u8]) -> Msgs<'_> {
    Msgs { rest: buf }
}

impl<'a> Iterator for Msgs<'a> {
    type Item = Msg<'a>;

    fn next(&mut self) -> Option<Msg<'a>> {
        let hdr = self.rest.get(..NLMSG_HDRLEN)?;
        let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        if len < NLMSG_HDRLEN || len > self.rest.len() {
            self.rest = &[];
            return None;
        }
        let raw = &self.rest[..len];
        let msg = Msg {
            ty: u16::from_ne_bytes([hdr[4], hdr[5]]),
            flags: u16::from_ne_bytes([hdr[6], hdr[7]]),
            seq: u32::from_ne_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]),
            payload: &raw[NLMSG_HDRLEN..],
            raw,
        };
        self.rest = self.rest.get(align(len)..).unwrap_or(&[]);
        Some(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::super::attr::{find_str, AttrWriter};
    use super::*;

    /// A message as the kernel sends it: header plus payload, padded.
    fn nlmsg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        let at = begin(&mut m, ty, flags, seq);
        m.extend_from_slice(payload);
        end(&mut m, at);
        m
    }

    #[test]
    fn alignment() {
        assert_eq!([0, 1, 3, 4, 5, 16, 17].map(align), [0, 4, 4, 4, 8, 16, 20]);
        // An odd-length message: length field unpadded, next one aligned.
        let mut buf = nlmsg(20, 0, 1, &[1, 2, 3]);
        assert_eq!(buf.len(), 20);
        assert_eq!(u32::from_ne_bytes(buf[..4].try_into().unwrap()), 19);
        buf.extend(nlmsg(21, 0, 2, &[]));
        let got: Vec<_> = messages(&buf)
            .map(|m| (m.ty, m.seq, m.payload.len()))
            .collect();
        assert_eq!(got, [(20, 1, 3), (21, 2, 0)]);
        // begin() pads a buffer left unaligned by the caller.
        let mut b = vec![9u8];
        assert_eq!(begin(&mut b, 1, 0, 0), 4);
    }

    #[test]
    fn build_attrs_and_parse() {
        let mut buf = Vec::new();
        let at = begin(&mut buf, 0x0a01, NLM_F_REQUEST, 7);
        buf.extend_from_slice(&[1, 0, 0, 0]); // a 4-byte family header
        AttrWriter::new(&mut buf).put_str(1, "t");
        end(&mut buf, at);
        set_seq(&mut buf, at, 9);
        let msgs: Vec<_> = messages(&buf).collect();
        assert_eq!(msgs.len(), 1);
        assert_eq!((msgs[0].ty, msgs[0].flags, msgs[0].seq), (0x0a01, 1, 9));
        assert_eq!(msgs[0].raw, &buf[..]);
        assert_eq!(find_str(&msgs[0].payload[4..], 1).as_deref(), Some("t"));
    }

    #[test]
    fn truncated_input_yields_nothing() {
        assert_eq!(messages(&[1, 2, 3]).count(), 0);
        let mut short = [0u8; 16];
        short[0] = 200; // length past the end
        assert_eq!(messages(&short).count(), 0);
        short[0] = 8; // length shorter than a header
        assert_eq!(messages(&short).count(), 0);
        // A good message followed by garbage: the good one is kept.
        let mut d = nlmsg(NLMSG_DONE, NLM_F_MULTIPART, 3, &0i32.to_ne_bytes());
        d.extend_from_slice(&[0xff; 7]);
        assert_eq!(messages(&d).count(), 1);
    }

    /// An NLMSG_ERROR datagram recorded from the kernel (x86_64, 6.x; strace
    /// of `ip link add x type nosuchkind`, NETLINK_EXT_ACK set, no
    /// NETLINK_CAP_ACK, so the whole 60-byte request is echoed before the
    /// ext-ack attribute): EOPNOTSUPP with "Unknown device type".
    const RECORDED_EXTACK: [u8; 104] = [
        0x68, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x02, 0x43, 0xb4, 0x0f, 0x6b, 0x58, 0x61, 0x00,
        0x00, 0xa1, 0xff, 0xff, 0xff, 0x3c, 0x00, 0x00, 0x00, 0x10, 0x00, 0x05, 0x06, 0x43, 0xb4,
        0x0f, 0x6b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x03, 0x00, 0x78, 0x00, 0x00, 0x00,
        0x14, 0x00, 0x12, 0x00, 0x0e, 0x00, 0x01, 0x00, 0x6e, 0x6f, 0x73, 0x75, 0x63, 0x68, 0x6b,
        0x69, 0x6e, 0x64, 0x00, 0x00, 0x18, 0x00, 0x01, 0x00, 0x55, 0x6e, 0x6b, 0x6e, 0x6f, 0x77,
        0x6e, 0x20, 0x64, 0x65, 0x76, 0x69, 0x63, 0x65, 0x20, 0x74, 0x79, 0x70, 0x65, 0x00,
    ];

    #[test]
    fn error_with_extack_from_recorded_bytes() {
        let m = messages(&RECORDED_EXTACK).next().unwrap();
        assert_eq!(m.done(), None);
        assert_eq!(
            m.error(),
            Some(Status {
                errno: libc::EOPNOTSUPP,
                seq: 0x6b0f_b443,
                ext_msg: Some("Unknown device type".into()),
            })
        );
    }

    #[test]
    fn error_variants() {
        // Plain ACK: errno 0, seq from the echoed header.
        let mut ack = 0i32.to_ne_bytes().to_vec();
        ack.extend(nlmsg(16, NLM_F_REQUEST | NLM_F_ACK, 42, &[]));
        let m = nlmsg(NLMSG_ERROR, NLM_F_CAPPED, 42, &ack);
        let st = messages(&m).next().unwrap().error().unwrap();
        assert_eq!((st.errno, st.seq, st.ext_msg), (0, 42, None));

        // Uncapped: the whole request (21 bytes, padded to 24) echoed before
        // the ext-ack attributes.
        let mut p = (-17i32).to_ne_bytes().to_vec();
        p.extend(nlmsg(16, 0, 8, &[7; 5]));
        AttrWriter::new(&mut p).put_str(NLMSGERR_ATTR_MSG, "exists");
        let m = nlmsg(NLMSG_ERROR, NLM_F_ACK_TLVS, 8, &p);
        let st = messages(&m).next().unwrap().error().unwrap();
        assert_eq!(st.errno, libc::EEXIST);
        assert_eq!(st.ext_msg.as_deref(), Some("exists"));

        // Without NLM_F_ACK_TLVS trailing bytes are not read as ext-ack.
        let m = nlmsg(NLMSG_ERROR, 0, 8, &p);
        assert_eq!(messages(&m).next().unwrap().error().unwrap().ext_msg, None);

        // Error code only (no echoed header): seq of the reply itself.
        let m = nlmsg(NLMSG_ERROR, 0, 11, &(-1i32).to_ne_bytes());
        let st = messages(&m).next().unwrap().error().unwrap();
        assert_eq!((st.errno, st.seq), (libc::EPERM, 11));

        // Truncated error code; i32::MIN does not overflow.
        let m = nlmsg(NLMSG_ERROR, 0, 1, &[1, 2]);
        assert_eq!(messages(&m).next().unwrap().error(), None);
        let m = nlmsg(NLMSG_ERROR, 0, 1, &i32::MIN.to_ne_bytes());
        assert_eq!(
            messages(&m).next().unwrap().error().unwrap().errno,
            i32::MAX
        );
    }

    #[test]
    fn done_status() {
        let m = nlmsg(NLMSG_DONE, NLM_F_MULTIPART, 3, &[]);
        assert_eq!(messages(&m).next().unwrap().done().unwrap().errno, 0);
        let mut p = (-19i32).to_ne_bytes().to_vec();
        AttrWriter::new(&mut p).put_str(NLMSGERR_ATTR_MSG, "no device");
        let m = nlmsg(NLMSG_DONE, NLM_F_MULTIPART | NLM_F_ACK_TLVS, 3, &p);
        let st = messages(&m).next().unwrap().done().unwrap();
        assert_eq!(st.errno, libc::ENODEV);
        assert_eq!(st.ext_msg.as_deref(), Some("no device"));
    }

    #[test]
    fn ext_ack_parsing() {
        let mut tlv = vec![];
        AttrWriter::new(&mut tlv).put_str(NLMSGERR_ATTR_MSG, "Unknown device type");
        assert_eq!(ext_ack_msg(&tlv).as_deref(), Some("Unknown device type"));
        assert_eq!(ext_ack_msg(&tlv[..3]), None);
        // Length field pointing past the end must not panic.
        assert_eq!(ext_ack_msg(&[200, 0, 1, 0, b'x']), None);
        // Empty message, and another attribute first (NLMSGERR_ATTR_OFFS).
        let mut tlv = vec![];
        let mut w = AttrWriter::new(&mut tlv);
        w.put(2, &20u32.to_ne_bytes());
        w.put_str(NLMSGERR_ATTR_MSG, "");
        assert_eq!(ext_ack_msg(&tlv), None);
    }
}
