//! nlmsghdr + nfgenmsg framing: building nf_tables messages and splitting a
//! received datagram into messages (bounds-checked, never panics).

use crate::attr::{self, Attrs};
use crate::sys::*;

const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;

/// Message type for an nf_tables operation.
pub fn nft_type(op: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | op
}

/// Starts a message (nlmsghdr + nfgenmsg) at the end of `buf`; returns its
/// offset for [`end`]. `res_id` is host order, written big-endian.
pub fn begin(buf: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, patched in end()
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: kernel fills
    buf.push(family);
    buf.push(NFNETLINK_V0);
    buf.extend_from_slice(&res_id.to_be_bytes());
    at
}

/// Patches the length of the message started at `at`.
pub fn end(buf: &mut [u8], at: usize) {
    let len = u32::try_from(buf.len() - at).unwrap_or(u32::MAX);
    buf[at..at + 4].copy_from_slice(&len.to_ne_bytes());
}

/// One received netlink message.
#[derive(Debug, Clone, Copy)]
pub struct NlMsg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    /// Everything after the nlmsghdr.
    pub payload: &'a [u8],
}

impl<'a> NlMsg<'a> {
    /// nf_tables attributes (payload after the nfgenmsg header).
    pub fn nft_attrs(&self) -> &'a [u8] {
        self.payload.get(NFGENMSG_LEN..).unwrap_or(&[])
    }

    /// For NLMSG_ERROR: (errno as a positive number, 0 = ACK; seq of the
    /// request it answers; extended-ack message if any).
    pub fn error(&self) -> Option<NlError> {
        if self.ty != NLMSG_ERROR {
            return None;
        }
        let code = i32::from_ne_bytes(self.payload.get(..4)?.try_into().ok()?);
        let orig = self.payload.get(4..4 + NLMSG_HDRLEN)?;
        let orig_len = u32::from_ne_bytes(orig[..4].try_into().ok()?) as usize;
        let seq = u32::from_ne_bytes(orig[8..12].try_into().ok()?);
        let mut ext_msg = None;
        if self.flags & NLM_F_ACK_TLVS != 0 {
            let tlv_at = if self.flags & NLM_F_CAPPED != 0 {
                4 + NLMSG_HDRLEN
            } else {
                4 + orig_len.max(NLMSG_HDRLEN)
            };
            if let Some(tlvs) = self.payload.get(tlv_at..) {
                ext_msg = Attrs::new(tlvs)
                    .find(|(t, _)| *t == NLMSGERR_ATTR_MSG)
                    .map(|(_, p)| attr::string(p));
            }
        }
        Some(NlError {
            errno: code.checked_neg().unwrap_or(i32::MAX),
            seq,
            ext_msg,
        })
    }
}

/// Decoded NLMSG_ERROR.
#[derive(Debug, Clone)]
pub struct NlError {
    /// Positive errno; 0 means success (an ACK).
    pub errno: i32,
    pub seq: u32,
    pub ext_msg: Option<String>,
}

/// Iterates the messages in one datagram; stops at the first malformed one.
pub struct Msgs<'a> {
    rest: &'a [u8],
}

pub fn messages(buf: &[u8]) -> Msgs<'_> {
    Msgs { rest: buf }
}

impl<'a> Iterator for Msgs<'a> {
    type Item = NlMsg<'a>;

    fn next(&mut self) -> Option<NlMsg<'a>> {
        let hdr = self.rest.get(..NLMSG_HDRLEN)?;
        let len = u32::from_ne_bytes(hdr[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > self.rest.len() {
            self.rest = &[];
            return None;
        }
        let msg = NlMsg {
            ty: u16::from_ne_bytes(hdr[4..6].try_into().ok()?),
            flags: u16::from_ne_bytes(hdr[6..8].try_into().ok()?),
            seq: u32::from_ne_bytes(hdr[8..12].try_into().ok()?),
            payload: &self.rest[NLMSG_HDRLEN..len],
        };
        self.rest = self.rest.get((len + 3) & !3..).unwrap_or(&[]);
        Some(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_parse() {
        let mut buf = Vec::new();
        let at = begin(&mut buf, nft_type(NFT_MSG_GETTABLE), NLM_F_REQUEST, 7, 1, 0);
        crate::attr::AttrWriter::new(&mut buf).put_str(NFTA_TABLE_NAME, "t");
        end(&mut buf, at);
        let msgs: Vec<_> = messages(&buf).collect();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].seq, 7);
        assert_eq!(
            attr::find_str(msgs[0].nft_attrs(), NFTA_TABLE_NAME).as_deref(),
            Some("t")
        );
    }

    #[test]
    fn truncated_input_yields_nothing() {
        assert_eq!(messages(&[1, 2, 3]).count(), 0);
        assert_eq!(
            messages(&[200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).count(),
            0
        );
    }
}
