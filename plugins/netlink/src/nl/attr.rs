//! Netlink attribute (TLV) encoding and bounds-checked decoding.
//!
//! Layout: `u16 nla_len` (host order, header included), `u16 nla_type`
//! (host order, flags in the top two bits), payload, padding to 4 bytes.
//! nf_tables integer payloads are big-endian ([`AttrWriter::put_be32`]).

use super::frame::align;

/// Attribute header length (`struct nlattr`).
pub const NLA_HDRLEN: usize = 4;
/// Nested-attribute flag in `nla_type`.
pub const NLA_F_NESTED: u16 = 1 << 15;
/// `nla_type` without the NESTED and NET_BYTEORDER flags.
pub const NLA_TYPE_MASK: u16 = !((1 << 15) | (1 << 14));

/// Appends attributes to a message buffer. Nesting is tracked by offsets so
/// the buffer can be the message being built.
pub struct AttrWriter<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> AttrWriter<'a> {
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        AttrWriter { buf }
    }

    pub fn put(&mut self, ty: u16, data: &[u8]) {
        let len = NLA_HDRLEN + data.len();
        // Attribute payloads built here are at most a few hundred bytes.
        let len16 = u16::try_from(len).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align(self.buf.len()), 0);
    }

    pub fn put_be32(&mut self, ty: u16, v: u32) {
        self.put(ty, &v.to_be_bytes());
    }

    pub fn put_be64(&mut self, ty: u16, v: u64) {
        self.put(ty, &v.to_be_bytes());
    }

    /// NUL-terminated string, as nf_tables expects (NLA_STRING with
    /// maxlen; the kernel accepts the terminating NUL).
    pub fn put_str(&mut self, ty: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.put(ty, &v);
    }

    /// Starts a nested attribute; returns its offset for [`Self::end_nest`].
    pub fn begin_nest(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        at
    }

    pub fn end_nest(&mut self, at: usize) {
        let len = self.buf.len() - at;
        let len16 = u16::try_from(len).unwrap_or(u16::MAX);
        self.buf[at..at + 2].copy_from_slice(&len16.to_ne_bytes());
    }

    /// Writes a nested attribute whose content is produced by `f`.
    pub fn nest(&mut self, ty: u16, f: impl FnOnce(&mut AttrWriter<'_>)) {
        let at = self.begin_nest(ty);
        f(&mut AttrWriter::new(self.buf));
        self.end_nest(at);
    }
}

/// Iterator over the attributes in a byte slice. Stops (without panicking)
/// at the first malformed header; [`Attrs::malformed`] tells it apart from
/// the end.
pub struct Attrs<'a> {
    rest: &'a [u8],
    malformed: bool,
}

impl<'a> Attrs<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Attrs {
            rest: data,
            malformed: false,
        }
    }

    /// Whether iteration stopped at bytes that are not an attribute (a
    /// length shorter than the header or past the end, or a trailing stub
    /// shorter than a header) rather than at the end of the data.
    pub fn malformed(&self) -> bool {
        self.malformed
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let Some(hdr) = self.rest.get(..NLA_HDRLEN) else {
            self.malformed |= !self.rest.is_empty();
            self.rest = &[];
            return None;
        };
        let len = usize::from(u16::from_ne_bytes([hdr[0], hdr[1]]));
        let ty = u16::from_ne_bytes([hdr[2], hdr[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > self.rest.len() {
            self.rest = &[];
            self.malformed = true;
            return None;
        }
        let payload = &self.rest[NLA_HDRLEN..len];
        self.rest = self.rest.get(align(len)..).unwrap_or(&[]);
        Some((ty, payload))
    }
}

/// First attribute of type `ty`.
pub fn find(data: &[u8], ty: u16) -> Option<&[u8]> {
    Attrs::new(data).find(|(t, _)| *t == ty).map(|(_, p)| p)
}

pub fn be32(p: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(p.get(..4)?.try_into().ok()?))
}

pub fn be64(p: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(p.get(..8)?.try_into().ok()?))
}

/// Host-order integer payloads of exactly their size (rtnetlink), as
/// netlink_packet_core reads them: a payload of another length is None.
pub fn ne_u8(p: &[u8]) -> Option<u8> {
    Some(u8::from_ne_bytes(p.try_into().ok()?))
}

pub fn ne_u32(p: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(p.try_into().ok()?))
}

pub fn ne_i32(p: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(p.try_into().ok()?))
}

/// A string attribute as netlink_packet_core reads it: one trailing NUL
/// dropped, the rest must be UTF-8 (None if not).
pub fn strict_str(p: &[u8]) -> Option<&str> {
    let p = p.strip_suffix(&[0]).unwrap_or(p);
    std::str::from_utf8(p).ok()
}

/// A NUL-terminated (or not) string attribute, lossily decoded.
pub fn string(p: &[u8]) -> String {
    let end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
    String::from_utf8_lossy(&p[..end]).into_owned()
}

pub fn find_str(data: &[u8], ty: u16) -> Option<String> {
    find(data, ty).map(string)
}

pub fn find_be32(data: &[u8], ty: u16) -> Option<u32> {
    find(data, ty).and_then(be32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_nested() {
        let mut buf = Vec::new();
        let mut w = AttrWriter::new(&mut buf);
        w.put_str(1, "abc");
        w.nest(2, |w| {
            w.put_be32(1, 0x0102_0304);
        });
        let attrs: Vec<_> = Attrs::new(&buf).collect();
        assert_eq!(attrs.len(), 2);
        assert_eq!(string(attrs[0].1), "abc");
        assert_eq!(attrs[1].0, 2);
        assert_eq!(find_be32(attrs[1].1, 1), Some(0x0102_0304));
    }

    #[test]
    fn malformed_is_not_a_panic() {
        let data = [0xff, 0xff, 1, 0, 0];
        assert_eq!(Attrs::new(&data).count(), 0);
        assert_eq!(Attrs::new(&[2, 0, 1, 0]).count(), 0);
        assert_eq!(be32(&[1, 2]), None);
    }

    #[test]
    fn malformed_is_told_from_the_end() {
        let mut buf = Vec::new();
        AttrWriter::new(&mut buf).put(1, &[7]);
        let walk = |data: &[u8]| {
            let mut it = Attrs::new(data);
            let n = (&mut it).count();
            (n, it.malformed())
        };
        assert_eq!(walk(&buf), (1, false));
        assert_eq!(walk(&[]), (0, false));
        // Unpadded last attribute: still well formed.
        assert_eq!(walk(&buf[..5]), (1, false));
        // A stub shorter than a header after a good attribute.
        let mut stub = buf.clone();
        stub.extend_from_slice(&[1, 0]);
        assert_eq!(walk(&stub), (1, true));
        // Length past the end; length shorter than the header.
        assert_eq!(walk(&[9, 0, 1, 0, 0]), (0, true));
        assert_eq!(walk(&[3, 0, 1, 0]), (0, true));
    }

    #[test]
    fn exact_integers_and_strict_strings() {
        assert_eq!(ne_u8(&[5]), Some(5));
        assert_eq!(ne_u8(&[5, 0]), None);
        assert_eq!(ne_u32(&7u32.to_ne_bytes()), Some(7));
        assert_eq!(ne_u32(&[1, 2, 3]), None);
        assert_eq!(ne_u32(&[0; 8]), None);
        assert_eq!(ne_i32(&(-1i32).to_ne_bytes()), Some(-1));
        assert_eq!(strict_str(b"eth0\0"), Some("eth0"));
        assert_eq!(strict_str(b"eth0"), Some("eth0"));
        assert_eq!(strict_str(b""), Some(""));
        assert_eq!(strict_str(b"a\0b\0"), Some("a\0b"));
        assert_eq!(strict_str(&[0xff, 0]), None);
    }
}
