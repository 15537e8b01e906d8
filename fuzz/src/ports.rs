//! The shim's `-p` plan (`cnm_shim::portplan`) against an independent statement of what it
//! must produce: every mapping is a valid port of a valid protocol, goes to the container's
//! address of its family, is free of other endpoints' ports and of clashes within the plan,
//! and is exactly what its entry asked for; an entry that can be published alone is.

use std::net::IpAddr;
use std::ops::RangeInclusive;

use cnm_shim::api::{self, decode, PortBinding};
use cnm_shim::portplan::{self, clash, Target, EPHEMERAL, PROTOCOLS};
use cnm_shim::state::PortMap;

/// The selector byte: the endpoint's families (bits 0-1), the network's host IP (bits 2-3),
/// another endpoint's ports (bit 4), which host ports are free (bits 5-7).
pub struct World {
    pub target: Target,
    pub used: Vec<PortMap>,
    busy: u8,
}

impl World {
    pub fn new(sel: u8) -> World {
        let a4: IpAddr = "10.1.0.2".parse().unwrap();
        let a6: IpAddr = "fd00::2".parse().unwrap();
        let (addr4, addr6) = match sel & 3 {
            0 => (Some(a4), None),
            1 => (None, Some(a6)),
            _ => (Some(a4), Some(a6)),
        };
        let host_ip = ["", "127.0.0.1", "0.0.0.0", "::1"][usize::from(sel >> 2 & 3)]
            .parse()
            .ok();
        let used = if sel & 16 != 0 {
            let other: IpAddr = "10.1.0.3".parse().unwrap();
            [(6, 18080), (17, 49153), (6, 8000)]
                .map(|(proto, host_port)| PortMap {
                    proto,
                    host_ip: None,
                    host_port,
                    dest: other,
                    dest_port: 80,
                })
                .to_vec()
        } else {
            Vec::new()
        };
        World {
            target: Target {
                addr4,
                addr6,
                host_ip,
            },
            used,
            busy: sel >> 5,
        }
    }

    /// The host's free ports: all, none, or all but every (n+1)th.
    pub fn free(&self, _proto: u8, port: u16) -> bool {
        match self.busy {
            0 => true,
            7 => false,
            n => !port.is_multiple_of(u16::from(n + 1)),
        }
    }
}

/// What an entry asks for, stated independently of the plan: the host IP, the host ports it
/// may get, the destinations. `None` when it cannot be published on `t`.
fn expected(
    b: &PortBinding,
    t: &Target,
) -> Option<(Option<IpAddr>, RangeInclusive<u16>, Vec<IpAddr>)> {
    if !PROTOCOLS.contains(&b.proto) || b.port == 0 {
        return None;
    }
    let host_ip = if b.host_ip.is_empty() {
        t.host_ip
    } else {
        let h: IpAddr = b.host_ip.parse().ok()?;
        let unicast = match h {
            IpAddr::V4(v4) => !v4.is_multicast() && !v4.is_broadcast(),
            IpAddr::V6(v6) => !v6.is_multicast(),
        };
        Some(unicast.then_some(h)?)
    };
    let ports = match (b.host_port, b.host_port_end) {
        (0, 0) => EPHEMERAL,
        (p, 0) => p..=p,
        (p, e) if p != 0 && e >= p => p..=e,
        _ => return None,
    };
    let dests: Vec<IpAddr> = match host_ip {
        Some(h) if h.is_ipv4() => vec![t.addr4?],
        Some(_) => vec![t.addr6?],
        None => [t.addr4, t.addr6].into_iter().flatten().collect(),
    };
    if dests.is_empty() {
        return None;
    }
    Some((host_ip.filter(|h| !h.is_unspecified()), ports, dests))
}

/// Checks a plan's mappings against the entries they came from (in order, one mapping per
/// destination of each entry).
fn check_plan(bindings: &[PortBinding], w: &World, maps: &[PortMap]) {
    let mut rest = maps;
    for b in bindings {
        let (host_ip, ports, dests) =
            expected(b, &w.target).unwrap_or_else(|| panic!("planned an invalid entry {b:?}"));
        assert!(
            rest.len() >= dests.len(),
            "{b:?}: too few mappings in {maps:?}"
        );
        let (mine, tail) = rest.split_at(dests.len());
        rest = tail;
        let host_port = mine[0].host_port;
        for (m, dest) in mine.iter().zip(&dests) {
            assert!(PROTOCOLS.contains(&m.proto), "{m:?}");
            assert!(m.host_port != 0 && m.dest_port != 0, "{m:?}");
            assert_eq!(
                (m.proto, m.dest_port, m.host_ip, m.dest, m.host_port),
                (b.proto, b.port, host_ip, *dest, host_port),
                "{b:?} planned as {m:?}"
            );
            assert!(ports.contains(&m.host_port), "{b:?}: host port of {m:?}");
            if let Some(h) = m.host_ip {
                assert_eq!(h.is_ipv4(), m.dest.is_ipv4(), "{m:?}");
            }
            assert!(
                !w.used
                    .iter()
                    .any(|u| (u.proto, u.host_port) == (m.proto, m.host_port)),
                "{m:?} takes another endpoint's port"
            );
            // A port picked from a range is one the host has free.
            assert!(
                ports.start() == ports.end() || w.free(m.proto, m.host_port),
                "{m:?}: picked a busy port"
            );
        }
    }
    assert!(rest.is_empty(), "mappings of no entry: {rest:?}");
    for (i, a) in maps.iter().enumerate() {
        for b in &maps[i + 1..] {
            assert!(!clash(a, b), "{a:?} and {b:?} clash");
        }
    }
}

/// One ProgramExternalConnectivity body, planned as `ports::program` plans it.
pub fn run(sel: u8, body: &[u8]) {
    let method = "NetworkDriver.ProgramExternalConnectivity";
    let req = match decode::<api::EndpointRef>(method, body) {
        Ok(r) => r,
        Err(e) => {
            assert!(!e.0.trim().is_empty(), "empty error");
            return;
        }
    };
    let bindings = match portplan::bindings(&req.options) {
        Ok(b) => b,
        Err(e) => {
            assert!(!e.0.trim().is_empty(), "empty error");
            return;
        }
    };
    let w = World::new(sel);
    match portplan::plan(&bindings, &w.target, &w.used, |p, n| w.free(p, n)) {
        Ok(maps) => check_plan(&bindings, &w, &maps),
        Err(e) => assert!(!e.0.trim().is_empty(), "empty error for {bindings:?}"),
    }
    // Each entry alone, on a host with every port free and no other endpoint: published
    // exactly as asked when it can be (the first port of its range), refused otherwise.
    let alone = World {
        used: Vec::new(),
        busy: 0,
        ..w
    };
    for b in bindings.iter().take(16) {
        let r = portplan::plan(std::slice::from_ref(b), &alone.target, &[], |_, _| true);
        match (expected(b, &alone.target), r) {
            (Some((_, ports, _)), Ok(maps)) => {
                check_plan(std::slice::from_ref(b), &alone, &maps);
                assert_eq!(maps[0].host_port, *ports.start(), "{b:?}");
            }
            (Some(_), Err(e)) => panic!("{b:?} refused: {e}"),
            (None, Ok(maps)) => panic!("{b:?} planned as {maps:?}"),
            (None, Err(e)) => assert!(!e.0.trim().is_empty(), "empty error for {b:?}"),
        }
    }
}
