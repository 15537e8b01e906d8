//! Range math, exactly as the reference's `allocator/range.go`, `range_set.go` and `RangeIter`:
//! defaults and validation of one range, membership, overlap, and the round-robin iteration
//! order (which skips each range's gateway and wraps from one range to the next).
//!
//! Addresses are handled as `u128` plus a family flag, so v4 and v6 share one code path.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

/// An address as a number; v4 addresses are `< 2^32`. Callers keep the family separately.
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

pub fn from_u128(v: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

/// Go's `canonicalizeIP`: a v4-mapped v6 address is the v4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// One range: `subnet` holds the network address; `start..=end` is what may be handed out,
/// except `gateway`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub v4: bool,
    pub prefix: u8,
    /// Network address.
    pub net: u128,
    /// Last address of the subnet (the broadcast address for v4).
    pub last: u128,
    pub start: u128,
    pub end: u128,
    pub gateway: u128,
}

/// A range as written in the config, before defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSpec {
    pub subnet: Option<IpNetwork>,
    pub start: Option<IpAddr>,
    pub end: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
}

impl RangeSpec {
    /// Go's `Range.Canonicalize`: validates and fills the defaults, with its messages.
    pub fn canonicalize(&self) -> Result<Range, String> {
        let Some(subnet) = self.subnet else {
            return Err("range has no \"subnet\" (e.g. \"subnet\": \"10.22.0.0/16\")".into());
        };
        let bits: u8 = if subnet.is_ipv4() { 32 } else { 128 };
        let prefix = subnet.prefix();
        if prefix > bits - 2 {
            return Err(format!("Network {subnet} too small to allocate from"));
        }
        let raw_ip = subnet.ip();
        if raw_ip != canonical(raw_ip) {
            // Go canonicalizes a v4-mapped address to 4 bytes while the mask stays 16.
            return Err("IPNet IP and Mask version mismatch".into());
        }
        let v4 = subnet.is_ipv4();
        let mask: u128 = if prefix == 0 {
            0
        } else {
            (!0u128 << (128 - prefix as u32)) >> (128 - bits as u32)
        };
        let hostmask: u128 = if v4 { u32::MAX as u128 } else { u128::MAX } & !mask;
        let ip = to_u128(raw_ip);
        let net = ip & mask;
        if net != ip {
            return Err(format!(
                "Network has host bits set. For a subnet mask of length {prefix} the network \
                 address is {}",
                from_u128(net, v4)
            ));
        }
        let mut r = Range {
            v4,
            prefix,
            net,
            last: net | hostmask,
            start: net + 1,
            end: if v4 {
                (net | hostmask) - 1
            } else {
                net | hostmask
            },
            gateway: net + 1,
        };
        let same_family = |a: IpAddr| a.is_ipv4() == v4;
        if let Some(gw) = self.gateway.map(canonical) {
            if !same_family(gw) || !r.in_subnet(to_u128(gw)) {
                return Err(format!("gateway {gw} not in network {subnet}"));
            }
            r.gateway = to_u128(gw);
        }
        // As the reference: rangeStart is checked against the subnet and the given rangeEnd,
        // so start > end is reported on rangeStart.
        let end_given = self.end.map(canonical);
        if let Some(s) = self.start.map(canonical) {
            let ok = same_family(s)
                && r.in_subnet(to_u128(s))
                && end_given
                    .map(|e| !same_family(e) || to_u128(s) <= to_u128(e))
                    .unwrap_or(true);
            if !ok {
                return Err(format!("RangeStart {s} not in network {subnet}"));
            }
            r.start = to_u128(s);
        }
        if let Some(e) = end_given {
            if !same_family(e) || !r.in_subnet(to_u128(e)) || to_u128(e) < r.start {
                return Err(format!("RangeEnd {e} not in network {subnet}"));
            }
            r.end = to_u128(e);
        }
        Ok(r)
    }
}

impl Range {
    fn in_subnet(&self, x: u128) -> bool {
        self.net <= x && x <= self.last
    }

    /// Whether `ip` may be handed out by this range (inside `rangeStart..=rangeEnd`).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.v4 && self.contains_u(to_u128(ip))
    }

    pub fn contains_u(&self, x: u128) -> bool {
        self.in_subnet(x) && self.start <= x && x <= self.end
    }

    /// Go's `Range.Overlaps` (commutative; different families never overlap).
    pub fn overlaps(&self, o: &Range) -> bool {
        self.v4 == o.v4
            && (self.contains_u(o.start)
                || self.contains_u(o.end)
                || o.contains_u(self.start)
                || o.contains_u(self.end))
    }

    pub fn ip(&self, x: u128) -> IpAddr {
        from_u128(x, self.v4)
    }

    pub fn gateway_ip(&self) -> IpAddr {
        self.ip(self.gateway)
    }

    /// `ip/prefix` with this range's subnet prefix, as the result prints it.
    pub fn with_prefix(&self, x: u128) -> IpNetwork {
        // The prefix was validated against the family, so the fallback is never taken.
        let ip = self.ip(x);
        IpNetwork::new(ip, self.prefix).unwrap_or_else(|_| IpNetwork::from(ip))
    }

    /// How many addresses the range can hand out.
    pub fn capacity(&self) -> u128 {
        let n = self.end - self.start + 1;
        if self.contains_u(self.gateway) {
            n - 1
        } else {
            n
        }
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ip(self.start), self.ip(self.end))
    }
}

/// A range set: one IP is allocated from each set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

impl RangeSet {
    /// Go's `RangeSet.Canonicalize`.
    pub fn canonicalize(specs: &[RangeSpec]) -> Result<RangeSet, String> {
        if specs.is_empty() {
            return Err("empty range set".into());
        }
        let mut out: Vec<Range> = Vec::with_capacity(specs.len());
        for s in specs {
            let r = s.canonicalize()?;
            if out.first().is_some_and(|f| f.v4 != r.v4) {
                return Err("mixed address families".into());
            }
            out.push(r);
        }
        for (i, a) in out.iter().enumerate() {
            for b in &out[i + 1..] {
                if a.overlaps(b) {
                    return Err(format!("subnets {a} and {b} overlap"));
                }
            }
        }
        Ok(RangeSet(out))
    }

    pub fn v4(&self) -> bool {
        self.0[0].v4
    }

    /// The first range that may hand out `ip` (Go's `RangeFor`).
    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.0.iter().find(|r| r.contains(ip))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    pub fn overlaps(&self, o: &RangeSet) -> bool {
        self.0.iter().any(|a| o.0.iter().any(|b| a.overlaps(b)))
    }

    pub fn capacity(&self) -> u128 {
        self.0
            .iter()
            .fold(0u128, |n, r| n.saturating_add(r.capacity()))
    }

    /// The round-robin iterator: starts after `last` when the set contains it, else at the
    /// first range's start.
    pub fn iter_from(&self, last: Option<IpAddr>) -> RangeIter<'_> {
        let mut it = RangeIter {
            set: &self.0,
            idx: 0,
            cur: None,
            start: None,
            done: false,
        };
        if let Some(last) = last.map(canonical) {
            if let Some(i) = self.0.iter().position(|r| r.contains(last)) {
                it.idx = i;
                it.cur = Some(to_u128(last));
            }
        }
        it
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Go's `RangeIter`: yields `(address, range index)`; ends when it comes back to where it
/// started.
#[derive(Debug, Clone)]
pub struct RangeIter<'a> {
    set: &'a [Range],
    idx: usize,
    cur: Option<u128>,
    start: Option<u128>,
    done: bool,
}

impl Iterator for RangeIter<'_> {
    type Item = (u128, usize);

    fn next(&mut self) -> Option<(u128, usize)> {
        if self.done {
            return None;
        }
        // A loop where the reference recurses to skip a gateway.
        loop {
            let r = &self.set[self.idx];
            let Some(cur) = self.cur else {
                self.cur = Some(r.start);
                self.start = self.cur;
                if r.start == r.gateway {
                    continue;
                }
                return Some((r.start, self.idx));
            };
            let next = if cur == r.end {
                self.idx = (self.idx + 1) % self.set.len();
                self.set[self.idx].start
            } else {
                cur + 1
            };
            self.cur = Some(next);
            match self.start {
                None => self.start = Some(next),
                Some(s) if s == next => {
                    self.done = true;
                    return None;
                }
                Some(_) => {}
            }
            if next == self.set[self.idx].gateway {
                continue;
            }
            return Some((next, self.idx));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(subnet: &str) -> RangeSpec {
        RangeSpec {
            subnet: Some(subnet.parse().unwrap()),
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn range(subnet: &str) -> Range {
        spec(subnet).canonicalize().unwrap()
    }

    fn shown(r: &Range) -> (String, String, String) {
        (
            r.ip(r.start).to_string(),
            r.ip(r.end).to_string(),
            r.gateway_ip().to_string(),
        )
    }

    #[test]
    fn defaults() {
        let t = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            shown(&range("192.0.2.0/24")),
            t("192.0.2.1", "192.0.2.254", "192.0.2.1")
        );
        assert_eq!(
            shown(&range("192.0.2.0/25")),
            t("192.0.2.1", "192.0.2.126", "192.0.2.1")
        );
        assert_eq!(
            shown(&range("2001:DB8:1::/64")),
            // RFC 5952, as Go's net.IP.String: one zero group is not shortened to "::".
            t(
                "2001:db8:1::1",
                "2001:db8:1:0:ffff:ffff:ffff:ffff",
                "2001:db8:1::1"
            )
        );
        let r = RangeSpec {
            subnet: Some("192.0.2.0/24".parse().unwrap()),
            start: Some(ip("192.0.2.40")),
            end: Some(ip("192.0.2.50")),
            gateway: Some(ip("192.0.2.254")),
        }
        .canonicalize()
        .unwrap();
        assert_eq!(shown(&r), t("192.0.2.40", "192.0.2.50", "192.0.2.254"));
    }

    #[test]
    fn rejects_with_reference_messages() {
        let err = |s: RangeSpec| s.canonicalize().unwrap_err();
        assert_eq!(
            err(spec("192.0.2.0/31")),
            "Network 192.0.2.0/31 too small to allocate from"
        );
        assert_eq!(
            err(spec("2001:db8::/127")),
            "Network 2001:db8::/127 too small to allocate from"
        );
        assert_eq!(
            err(spec("192.0.2.12/24")),
            "Network has host bits set. For a subnet mask of length 24 the network address is 192.0.2.0"
        );
        assert_eq!(
            err(spec("2001:DB8:1::24:19ff:fee1:c44a/64")),
            "Network has host bits set. For a subnet mask of length 64 the network address is 2001:db8:1::"
        );
        assert_eq!(
            err(spec("2001:DB8:24:19ff::/63")),
            "Network has host bits set. For a subnet mask of length 63 the network address is 2001:db8:24:19fe::"
        );
        assert_eq!(
            err(spec("192.168.127.0/23")),
            "Network has host bits set. For a subnet mask of length 23 the network address is 192.168.126.0"
        );
        assert_eq!(
            err(spec("::ffff:10.0.0.0/104")),
            "IPNet IP and Mask version mismatch"
        );
        let with = |start: Option<&str>, end: Option<&str>, gw: Option<&str>| RangeSpec {
            subnet: Some("192.0.2.0/24".parse().unwrap()),
            start: start.map(ip),
            end: end.map(ip),
            gateway: gw.map(ip),
        };
        assert_eq!(
            err(with(Some("192.0.3.0"), None, None)),
            "RangeStart 192.0.3.0 not in network 192.0.2.0/24"
        );
        assert_eq!(
            err(with(None, Some("192.0.4.0"), None)),
            "RangeEnd 192.0.4.0 not in network 192.0.2.0/24"
        );
        assert_eq!(
            err(with(Some("192.0.2.50"), Some("192.0.2.40"), None)),
            "RangeStart 192.0.2.50 not in network 192.0.2.0/24"
        );
        assert_eq!(
            err(with(None, Some("192.0.2.0"), None)),
            "RangeEnd 192.0.2.0 not in network 192.0.2.0/24"
        );
        assert_eq!(
            err(with(Some("2001:db8::1"), None, None)),
            "RangeStart 2001:db8::1 not in network 192.0.2.0/24"
        );
        assert_eq!(
            err(with(None, None, Some("192.168.1.1"))),
            "gateway 192.168.1.1 not in network 192.0.2.0/24"
        );
        assert_eq!(
            err(with(None, None, Some("2001:db8::1"))),
            "gateway 2001:db8::1 not in network 192.0.2.0/24"
        );
        assert!(err(RangeSpec::default()).contains("subnet"));
        // v4-mapped endpoints are the v4 address, as Go's canonicalizeIP.
        let r = with(Some("::ffff:192.0.2.9"), None, None)
            .canonicalize()
            .unwrap();
        assert_eq!(r.ip(r.start), ip("192.0.2.9"));
    }

    #[test]
    fn contains_honours_start_and_end() {
        let r = RangeSpec {
            subnet: Some("192.0.2.0/24".parse().unwrap()),
            start: Some(ip("192.0.2.40")),
            end: Some(ip("192.0.2.50")),
            gateway: Some(ip("192.0.2.254")),
        }
        .canonicalize()
        .unwrap();
        for (a, want) in [
            ("192.0.3.0", false),
            ("192.0.2.39", false),
            ("192.0.2.40", true),
            ("192.0.2.50", true),
            ("192.0.2.51", false),
            ("2001:db8::40", false),
        ] {
            assert_eq!(r.contains(ip(a)), want, "{a}");
        }
        let r = RangeSpec {
            subnet: Some("2001:DB8:1::/64".parse().unwrap()),
            start: Some(ip("2001:db8:1::40")),
            end: Some(ip("2001:db8:1::50")),
            gateway: None,
        }
        .canonicalize()
        .unwrap();
        for (a, want) in [
            ("2001:db8:2::", false),
            ("2001:db8:1::39", false),
            ("2001:db8:1::40", true),
            ("2001:db8:1::50", true),
            ("2001:db8:1::51", false),
        ] {
            assert_eq!(r.contains(ip(a)), want, "{a}");
        }
    }

    #[test]
    fn overlap_table() {
        let with = |s: &str, start: Option<&str>, end: Option<&str>| {
            RangeSpec {
                subnet: Some(s.parse().unwrap()),
                start: start.map(ip),
                end: end.map(ip),
                gateway: None,
            }
            .canonicalize()
            .unwrap()
        };
        let cases = [
            (range("10.0.0.0/24"), range("10.0.1.0/24"), false),
            (range("0.0.0.0/24"), range("::/24"), false),
            (range("10.0.0.0/24"), range("10.0.0.0/24"), true),
            (range("10.0.0.0/20"), range("10.0.1.0/24"), true),
            (
                with("10.0.0.0/24", None, Some("10.0.0.127")),
                with("10.0.0.0/24", Some("10.0.0.128"), None),
                false,
            ),
            (
                with("10.0.0.0/24", None, Some("10.0.0.127")),
                with("10.0.0.0/24", Some("10.0.0.127"), None),
                true,
            ),
        ];
        for (i, (a, b, want)) in cases.iter().enumerate() {
            assert_eq!(a.overlaps(b), *want, "case {i}");
            assert_eq!(b.overlaps(a), *want, "case {i} commuted");
        }
    }

    #[test]
    fn range_set_rules() {
        let e = RangeSet::canonicalize(&[spec("10.1.0.0/22"), spec("10.1.2.0/24")]).unwrap_err();
        assert_eq!(
            e,
            "subnets 10.1.0.1-10.1.3.254 and 10.1.2.1-10.1.2.254 overlap"
        );
        let e = RangeSet::canonicalize(&[spec("10.1.0.0/24"), spec("2001:db8::/64")]).unwrap_err();
        assert_eq!(e, "mixed address families");
        assert_eq!(RangeSet::canonicalize(&[]).unwrap_err(), "empty range set");
        let s = RangeSet::canonicalize(&[spec("192.168.0.0/24"), spec("172.16.1.0/24")]).unwrap();
        assert!(s.contains(ip("192.168.0.55")));
        assert!(s.contains(ip("172.16.1.254")));
        assert!(!s.contains(ip("192.168.0.0")));
        assert!(!s.contains(ip("172.16.1.255")));
        assert!(!s.contains(ip("10.0.0.1")));
        assert_eq!(
            s.to_string(),
            "192.168.0.1-192.168.0.254,172.16.1.1-172.16.1.254"
        );
        let other = RangeSet::canonicalize(&[spec("172.16.1.0/25")]).unwrap();
        assert!(s.overlaps(&other) && other.overlaps(&s));
        let disjoint = RangeSet::canonicalize(&[spec("10.9.0.0/24")]).unwrap();
        assert!(!s.overlaps(&disjoint));
        assert_eq!(s.capacity(), 506);
    }

    fn collect(set: &RangeSet, last: Option<&str>) -> Vec<String> {
        set.iter_from(last.map(ip))
            .map(|(x, i)| set.0[i].ip(x).to_string())
            .collect()
    }

    #[test]
    fn iterator_reference_tables() {
        let s = RangeSet::canonicalize(&[spec("192.168.1.0/29")]).unwrap();
        let all = [
            "192.168.1.2",
            "192.168.1.3",
            "192.168.1.4",
            "192.168.1.5",
            "192.168.1.6",
        ];
        assert_eq!(collect(&s, None), all);
        assert_eq!(collect(&s, Some("192.168.1.6")), all);
        assert_eq!(
            collect(&s, Some("192.168.1.3")),
            [
                "192.168.1.4",
                "192.168.1.5",
                "192.168.1.6",
                "192.168.1.2",
                "192.168.1.3"
            ]
        );
        // Outside the set: from the beginning.
        assert_eq!(collect(&s, Some("10.0.0.128")), all);
        // Exhausted iterators stay exhausted.
        let mut it = s.iter_from(None);
        assert_eq!(it.by_ref().count(), 5);
        assert_eq!(it.next(), None);
    }

    #[test]
    fn iterator_multi_range() {
        let mk = |sub: &str, a: &str, b: &str| RangeSpec {
            subnet: Some(sub.parse().unwrap()),
            start: Some(ip(a)),
            end: Some(ip(b)),
            gateway: None,
        };
        // The reference's newAllocatorWithMultiRanges (subnet given with host bits is a parse
        // helper quirk there; here the network address).
        let s = RangeSet::canonicalize(&[
            mk("192.168.1.0/30", "192.168.1.0", "192.168.1.3"),
            mk("192.168.2.0/30", "192.168.2.0", "192.168.2.3"),
        ])
        .unwrap();
        // Last reserved at the end of range 1: continue at range 2's start.
        let got = collect(&s, Some("192.168.1.3"));
        assert_eq!(got[0], "192.168.2.0");
        // Gateways (.1) are skipped and everything comes round exactly once.
        assert_eq!(
            got,
            [
                "192.168.2.0",
                "192.168.2.2",
                "192.168.2.3",
                "192.168.1.0",
                "192.168.1.2",
                "192.168.1.3"
            ]
        );
        // No last: first range's start.
        assert_eq!(collect(&s, None)[0], "192.168.1.0");
        // Advance to next subnet, roll over to the first.
        let two = RangeSet::canonicalize(&[spec("10.0.0.0/30"), spec("10.0.1.0/30")]).unwrap();
        assert_eq!(collect(&two, Some("10.0.0.2"))[0], "10.0.1.2");
        let three = RangeSet::canonicalize(&[
            spec("10.0.0.0/30"),
            spec("10.0.1.0/30"),
            spec("10.0.2.0/30"),
        ])
        .unwrap();
        assert_eq!(collect(&three, Some("10.0.2.2"))[0], "10.0.0.2");
    }

    #[test]
    fn iterator_single_address_that_is_the_gateway_terminates() {
        let s = RangeSet::canonicalize(&[RangeSpec {
            subnet: Some("10.0.0.0/30".parse().unwrap()),
            start: Some(ip("10.0.0.1")),
            end: Some(ip("10.0.0.1")),
            gateway: None,
        }])
        .unwrap();
        assert!(collect(&s, None).is_empty());
        assert!(collect(&s, Some("10.0.0.1")).is_empty());
        assert_eq!(s.capacity(), 0);
    }

    #[test]
    fn v6_iteration_and_display() {
        let s = RangeSet::canonicalize(&[spec("2001:db8:1::/64")]).unwrap();
        let first = |last: Option<&str>, n: usize| -> Vec<String> {
            s.iter_from(last.map(ip))
                .take(n)
                .map(|(x, i)| s.0[i].ip(x).to_string())
                .collect()
        };
        assert_eq!(first(None, 2), ["2001:db8:1::2", "2001:db8:1::3"]);
        assert_eq!(
            first(Some("2001:db8:1::ffff:ffff:ffff:ffff"), 1),
            ["2001:db8:1::2"]
        );
        assert_eq!(
            s.0[0].with_prefix(s.0[0].start + 1).to_string(),
            "2001:db8:1::2/64"
        );
    }
}
