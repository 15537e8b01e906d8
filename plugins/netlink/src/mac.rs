//! MAC addresses: the one parser and formatter of the workspace.

/// An Ethernet address.
pub type Mac = [u8; 6];

/// Parses a MAC as Go's `net.ParseMAC` does for 6-byte addresses (`:`/`-` separated or
/// dotted `xxxx.xxxx.xxxx`), and refuses what the kernel would reject on an Ethernet link (multicast, all zeros).
/// The error is the reason, ready for the caller's error type.
pub fn parse_mac(s: &str) -> std::result::Result<Mac, String> {
    let bad = || format!("invalid MAC address {s:?}: use six hex bytes like \"02:42:ac:11:00:02\"");
    let hex: String = if s.len() == 17 {
        let sep = s.as_bytes()[2];
        if sep != b':' && sep != b'-' {
            return Err(bad());
        }
        let parts: Vec<&str> = s.split(sep as char).collect();
        if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
            return Err(bad());
        }
        parts.concat()
    } else if s.len() == 14 {
        let parts: Vec<&str> = s.split('.').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.len() != 4) {
            return Err(bad());
        }
        parts.concat()
    } else {
        return Err(bad());
    };
    let mut mac = [0u8; 6];
    for (i, b) in mac.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 == 1 {
        return Err(format!(
            "invalid MAC address {s:?}: it is a multicast address; the first byte must be even"
        ));
    }
    if mac == [0; 6] {
        return Err(format!("invalid MAC address {s:?}: all zeros"));
    }
    Ok(mac)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses [`fmt_mac`]'s form back (`aa:bb:cc:dd:ee:ff`, as this suite stores
/// MACs in state files, rule comments and etcd); `None` if it is anything
/// else. No unicast check: it reads records, not user input.
pub fn parse_mac_record(s: &str) -> Option<Mac> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in m.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

/// A random locally administered unicast MAC, as the kernel's
/// `eth_random_addr`, from the bytes given.
pub fn local_unicast(mut m: Mac) -> Mac {
    m[0] = (m[0] & 0xfe) | 0x02;
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_parse() {
        let m = [0x02, 0, 0xab, 1, 2, 0xff];
        assert_eq!(fmt_mac(&m), "02:00:ab:01:02:ff");
        assert_eq!(parse_mac_record(&fmt_mac(&m)), Some(m));
        assert_eq!(parse_mac("02:00:AB:01:02:FF"), Ok(m));
        for bad in [
            "02:00:ab:01:02",
            "02:00:ab:01:02:ff:00",
            "2:0:ab:1:2:ff",
            "zz:00:ab:01:02:ff",
            "",
        ] {
            assert_eq!(parse_mac_record(bad), None, "{bad}");
        }
        // Records may hold any address; user input must be unicast, not zero.
        assert_eq!(
            parse_mac_record("01:00:5e:00:00:01"),
            Some([1, 0, 0x5e, 0, 0, 1])
        );
        assert!(parse_mac("01:00:5e:00:00:01")
            .unwrap_err()
            .contains("multicast"));
        assert!(parse_mac("00:00:00:00:00:00")
            .unwrap_err()
            .contains("all zeros"));
        assert_eq!(local_unicast([0xff; 6])[0], 0xfe);
    }
}
