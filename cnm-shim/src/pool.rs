//! Address arithmetic for pools: docker's CIDR strings, gateways, `--ip-range` bounds for
//! host-local, overlap checks and default pool selection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use crate::err;
use crate::error::Result;

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(v))
    } else {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    }
}

fn bits(ip: &IpAddr) -> u8 {
    if ip.is_ipv6() {
        128
    } else {
        32
    }
}

/// The network of `ip/prefix` (host bits cleared).
pub fn network_of(ip: IpAddr, prefix: u8) -> Result<IpNetwork> {
    let n = IpNetwork::new(ip, prefix).map_err(|e| err!("{ip}/{prefix}: {e}"))?;
    IpNetwork::new(n.network(), prefix).map_err(|e| err!("{ip}/{prefix}: {e}"))
}

/// A subnet as docker writes it (`10.1.0.0/24`); host bits must be zero.
pub fn parse_subnet(s: &str, what: &str) -> Result<IpNetwork> {
    let n: IpNetwork = s
        .parse()
        .map_err(|_| err!("{what} {s:?} is not a CIDR subnet like 10.213.1.0/24"))?;
    if n.ip() != n.network() {
        return Err(err!(
            "{what} {s:?} has host bits set; use {}/{}",
            n.network(),
            n.prefix()
        ));
    }
    Ok(n)
}

/// An address with prefix as docker writes it (`10.1.0.1/24`), or a plain address.
pub fn parse_addr(s: &str, what: &str) -> Result<IpNetwork> {
    if let Ok(n) = s.parse::<IpNetwork>() {
        if s.contains('/') {
            return Ok(n);
        }
    }
    s.parse::<IpAddr>()
        .map(|ip| IpNetwork::new(ip, bits(&ip)).expect("full prefix is valid"))
        .map_err(|_| err!("{what} {s:?} is not an IP address"))
}

/// The first address after the network address (docker's default gateway). A /32 or /128
/// has no other address: its only one (not the address past the end of the space, which
/// overflowed for `ffff:...:ffff/128`; found by fuzzing).
pub fn first_host(net: &IpNetwork) -> IpAddr {
    let first = to_u128(net.network()).saturating_add(1).min(last_addr(net));
    from_u128(first, net.is_ipv6())
}

/// The last address of `net` (all host bits set).
fn last_addr(net: &IpNetwork) -> u128 {
    let host_bits = u32::from(bits(&net.ip()) - net.prefix());
    let mask = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    to_u128(net.network()) | mask
}

/// The last address usable by a host: the IPv4 broadcast address is not.
fn last_host(net: &IpNetwork) -> u128 {
    let last = last_addr(net);
    if net.is_ipv4() && net.prefix() <= 30 {
        last - 1
    } else {
        last
    }
}

/// Whether `ip` may be given to a host in `net` (not the network or IPv4 broadcast address).
pub fn usable(net: &IpNetwork, ip: IpAddr) -> bool {
    net.contains(ip) && ip != net.network() && to_u128(ip) <= last_host(net)
}

/// host-local `rangeStart`/`rangeEnd` for dynamic allocation from `range` inside `subnet`.
pub fn range_bounds(subnet: &IpNetwork, range: &IpNetwork) -> (IpAddr, IpAddr) {
    let start = if range.network() == subnet.network() {
        first_host(subnet)
    } else {
        range.network()
    };
    let end = last_addr(range).min(last_host(subnet));
    (start, from_u128(end, range.is_ipv6()))
}

pub fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a.contains(b.network()) || b.contains(a.network()))
}

/// The first `size`-bit subnet of `base` overlapping none of `taken`.
pub fn pick_default(base: &IpNetwork, size: u8, taken: &[IpNetwork]) -> Option<IpNetwork> {
    let step = 1u128 << (bits(&base.ip()) - size);
    let count = 1u128 << (size - base.prefix());
    (0..count)
        .map(|i| to_u128(base.network()) + i * step)
        .filter_map(|v| IpNetwork::new(from_u128(v, base.is_ipv6()), size).ok())
        .find(|c| !taken.iter().any(|t| overlaps(c, t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parsing() {
        assert_eq!(parse_subnet("10.1.0.0/24", "x").unwrap(), n("10.1.0.0/24"));
        assert!(parse_subnet("10.1.0.1/24", "x")
            .unwrap_err()
            .0
            .contains("10.1.0.0/24"));
        assert_eq!(parse_addr("10.1.0.1/24", "x").unwrap(), n("10.1.0.1/24"));
        assert_eq!(parse_addr("fd00::5", "x").unwrap(), n("fd00::5/128"));
        assert!(parse_addr("nope", "x").is_err());
    }

    #[test]
    fn hosts_and_ranges() {
        let s = n("10.1.0.0/24");
        assert_eq!(first_host(&s), ip("10.1.0.1"));
        assert!(usable(&s, ip("10.1.0.254")));
        assert!(!usable(&s, ip("10.1.0.255")) && !usable(&s, ip("10.1.0.0")));
        assert!(!usable(&s, ip("10.2.0.1")));
        assert_eq!(
            range_bounds(&s, &n("10.1.0.128/25")),
            (ip("10.1.0.128"), ip("10.1.0.254"))
        );
        assert_eq!(
            range_bounds(&s, &n("10.1.0.0/25")),
            (ip("10.1.0.1"), ip("10.1.0.127"))
        );
        assert_eq!(
            range_bounds(&s, &n("10.1.0.64/26")),
            (ip("10.1.0.64"), ip("10.1.0.127"))
        );
        let s6 = n("fd00:1::/64");
        assert_eq!(first_host(&s6), ip("fd00:1::1"));
        // Found by fuzzing (fuzz/regressions/shim_bodies): the last /128 and /32 of the space.
        let top6 = n("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128");
        assert_eq!(first_host(&top6), top6.ip());
        let top4 = n("255.255.255.255/32");
        assert_eq!(first_host(&top4), top4.ip());
        assert!(usable(&s6, ip("fd00:1::ffff:ffff:ffff:ffff")));
        assert_eq!(
            range_bounds(&s6, &n("fd00:1::100/120")),
            (ip("fd00:1::100"), ip("fd00:1::1ff"))
        );
    }

    #[test]
    fn overlap_and_default() {
        assert!(overlaps(&n("10.0.0.0/8"), &n("10.1.0.0/24")));
        assert!(!overlaps(&n("10.1.0.0/24"), &n("10.1.1.0/24")));
        assert!(!overlaps(&n("10.0.0.0/8"), &n("fd00::/8")));
        let base = n("172.30.0.0/16");
        assert_eq!(pick_default(&base, 24, &[]), Some(n("172.30.0.0/24")));
        assert_eq!(
            pick_default(&base, 24, &[n("172.30.0.0/24"), n("172.30.1.0/25")]),
            Some(n("172.30.2.0/24"))
        );
        assert_eq!(
            pick_default(&n("10.0.0.0/24"), 24, &[n("10.0.0.0/8")]),
            None
        );
    }
}
