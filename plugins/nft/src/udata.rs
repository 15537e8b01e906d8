//! Userdata comments (NFTA_*_USERDATA) in nftables' TLV format, so that
//! `nft list` shows them as `comment "..."`: `u8 type, u8 len, value`,
//! type 0 = comment, value NUL-terminated.

use crate::sys::{NFTNL_UDATA_COMMENT, NFTNL_UDATA_SET_KEYBYTEORDER};

/// NFTNL_UDATA_SET_DATABYTEORDER (libnftnl udata.h).
const NFTNL_UDATA_SET_DATABYTEORDER: u8 = 1;

/// Longest comment that fits NFT_USERDATA_MAXLEN (256) with its TLV header
/// and NUL terminator.
pub const MAX_COMMENT: usize = 253;

/// Encodes a comment; `None` if it is too long or contains a NUL.
pub fn encode_comment(s: &str) -> Option<Vec<u8>> {
    if s.len() > MAX_COMMENT || s.as_bytes().contains(&0) {
        return None;
    }
    let mut v = Vec::with_capacity(s.len() + 3);
    v.push(NFTNL_UDATA_COMMENT);
    v.push((s.len() + 1) as u8);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    Some(v)
}

/// Set userdata telling nft the key byte order (host-order u32 value).
pub fn set_key_byteorder(order: u32) -> Vec<u8> {
    let mut v = vec![NFTNL_UDATA_SET_KEYBYTEORDER, 4];
    v.extend_from_slice(&order.to_ne_bytes());
    v
}

/// Set userdata telling nft the data byte order of a map (host-order u32).
pub fn set_data_byteorder(order: u32) -> Vec<u8> {
    let mut v = vec![NFTNL_UDATA_SET_DATABYTEORDER, 4];
    v.extend_from_slice(&order.to_ne_bytes());
    v
}

/// Extracts the comment TLV from userdata, if present.
pub fn decode_comment(mut data: &[u8]) -> Option<String> {
    while data.len() >= 2 {
        let (ty, len) = (data[0], usize::from(data[1]));
        let value = data.get(2..2 + len)?;
        if ty == NFTNL_UDATA_COMMENT {
            let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
            return Some(String::from_utf8_lossy(&value[..end]).into_owned());
        }
        data = &data[2 + len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let e = encode_comment("hello").unwrap();
        assert_eq!(e, b"\x00\x06hello\x00");
        assert_eq!(decode_comment(&e).as_deref(), Some("hello"));
        assert!(encode_comment(&"x".repeat(254)).is_none());
        assert_eq!(decode_comment(&[0, 200, 1]), None);
        // another TLV first
        assert_eq!(
            decode_comment(b"\x01\x01z\x00\x02a\x00").as_deref(),
            Some("a")
        );
    }
}
