//! nfnetlink framing on top of the shared netlink layer
//! (`cni_netlink::nl::frame`): the `nfgenmsg` header after each `nlmsghdr`.

use cni_netlink::nl::frame::{self, Msg};

use crate::sys::*;

/// Message type for an nf_tables operation.
pub fn nft_type(op: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | op
}

/// Starts a message (nlmsghdr + nfgenmsg) at the end of `buf`; returns its
/// offset for [`frame::end`]. `res_id` is host order, written big-endian.
pub fn begin(buf: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
    let at = frame::begin(buf, ty, flags, seq);
    buf.push(family);
    buf.push(NFNETLINK_V0);
    buf.extend_from_slice(&res_id.to_be_bytes());
    at
}

pub use frame::end;

/// nf_tables attributes of a received message (payload after the nfgenmsg
/// header).
pub fn nft_attrs<'a>(m: &Msg<'a>) -> &'a [u8] {
    m.payload.get(NFGENMSG_LEN..).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr;

    #[test]
    fn build_and_parse() {
        let mut buf = Vec::new();
        let at = begin(
            &mut buf,
            nft_type(NFT_MSG_GETTABLE),
            NLM_F_REQUEST,
            7,
            1,
            0x0a,
        );
        attr::AttrWriter::new(&mut buf).put_str(NFTA_TABLE_NAME, "t");
        end(&mut buf, at);
        // nfgenmsg: family, version, res_id big-endian.
        assert_eq!(&buf[16..20], &[1, NFNETLINK_V0, 0, 0x0a]);
        let msgs: Vec<_> = frame::messages(&buf).collect();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].seq, 7);
        assert_eq!(msgs[0].ty, 0x0a01);
        assert_eq!(
            attr::find_str(nft_attrs(&msgs[0]), NFTA_TABLE_NAME).as_deref(),
            Some("t")
        );
    }
}
