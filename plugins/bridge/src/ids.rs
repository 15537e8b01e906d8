//! Random and derived identifiers: host veth names and MAC addresses.

use cni_netlink::Mac;

/// Fills `buf` from the kernel's CSPRNG; falls back to time and pid mixing if getrandom fails
/// (it does not on Linux >= 3.17).
fn random_bytes(buf: &mut [u8]) {
    if cni_core::random::fill(buf).is_ok() {
        return;
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(std::process::id()) << 32);
    let mut x = seed | 1;
    for b in buf.iter_mut() {
        // xorshift64: only a fallback, uniqueness is still checked by the kernel (EEXIST).
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

/// `veth` + 8 hex digits, the reference's host-side name format.
pub fn host_veth_name() -> String {
    let mut b = [0u8; 4];
    random_bytes(&mut b);
    format!("veth{:02x}{:02x}{:02x}{:02x}", b[0], b[1], b[2], b[3])
}

/// A random locally administered unicast MAC, as the kernel's `eth_random_addr`.
pub fn random_mac() -> Mac {
    let mut m = [0u8; 6];
    random_bytes(&mut m);
    cni_netlink::local_unicast(m)
}

/// A stable MAC for a bridge, derived from its name. Pinning the bridge MAC stops the kernel
/// from following the lowest port MAC (ARP churn as containers come and go) and from resetting
/// it to zero when the last port leaves (the reference's "could not set bridge's mac").
pub fn bridge_mac(bridge: &str) -> Mac {
    // FNV-1a 64: stable across builds and releases, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bridge.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [0x02 | (b[0] & 0xfc), b[1], b[2], b[3], b[4], b[5]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_macs() {
        let n = host_veth_name();
        assert_eq!(n.len(), 12);
        assert!(n.starts_with("veth"));
        assert_ne!(host_veth_name(), host_veth_name());
        for _ in 0..100 {
            let m = random_mac();
            assert_eq!(m[0] & 1, 0);
            assert_eq!(m[0] & 2, 2);
        }
        assert_eq!(bridge_mac("cni0"), bridge_mac("cni0"));
        assert_ne!(bridge_mac("cni0"), bridge_mac("cni1"));
        assert_eq!(bridge_mac("x")[0] & 3, 2);
    }
}
