//! `-p/--publish` planning, pure: dockerd's `com.docker.network.portmap` entries and the
//! endpoint's addresses in, the mappings to program out, or why not. Probing the host for a
//! free port is passed in, so `ports` plans with the real probe and the fuzz target
//! (`fuzz/fuzz_targets/shim_ports.rs`) with its own.
//!
//! An entry is `{"Proto": 6, "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}`:
//! `HostPort` 0 picks a free port of docker's ephemeral range (`-p 80`, `-P`), `HostPortEnd`
//! above `HostPort` a free port of that range (`-p 8000-8010:80`). An empty `HostIP` publishes
//! on every address of both families the container has, `0.0.0.0` or `::` on every address of
//! that family.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::ops::RangeInclusive;

use cni_nft::hostport::proto_name;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::api::{self, PortBinding};
use crate::err;
use crate::error::Result;
use crate::state::{Endpoint, Network, PortMap};

/// Host ports picked for `-p CONTAINERPORT` (host port 0), as docker's own range.
pub const EPHEMERAL: RangeInclusive<u16> = 49153..=65535;

/// The protocols a port is published for (docker's numbers: tcp, udp, sctp).
pub const PROTOCOLS: [u8; 3] = [6, 17, 132];

/// What a plan needs of the endpoint and its network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Target {
    pub addr4: Option<IpAddr>,
    pub addr6: Option<IpAddr>,
    /// The network's host IP (`-o com.docker.network.bridge.host_binding_ipv4`), for entries
    /// without one.
    pub host_ip: Option<IpAddr>,
}

impl Target {
    pub fn of(ep: &Endpoint, net: &Network) -> Target {
        Target {
            addr4: ep.addr4.map(|a| a.ip()),
            addr6: ep.addr6.map(|a| a.ip()),
            host_ip: net.opts.host_ip,
        }
    }
}

/// The port map of a request's options (none when absent or null).
pub fn bindings(options: &Map<String, Value>) -> Result<Vec<PortBinding>> {
    match options.get(api::OPT_PORTMAP) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => Vec::<PortBinding>::deserialize(v)
            .map_err(|e| err!("cannot read the port map ({}): {e}", api::OPT_PORTMAP)),
    }
}

/// One entry, checked: what to listen on and where to send it.
struct Want {
    proto: u8,
    port: u16,
    /// Unspecified addresses are `None` (every local address).
    host_ip: Option<IpAddr>,
    host_ports: RangeInclusive<u16>,
    dests: Vec<IpAddr>,
}

fn check(b: &PortBinding, t: &Target) -> Result<Want> {
    let name = proto_name(b.proto);
    if !PROTOCOLS.contains(&b.proto) {
        return Err(err!(
            "published port {}: unsupported protocol number {} (docker sends 6 for tcp, 17 for udp, 132 for sctp)",
            b.port,
            b.proto
        ));
    }
    if b.port == 0 {
        return Err(err!(
            "published port 0/{name}: 0 is not a container port; give one in 1-65535"
        ));
    }
    let host_ip: Option<IpAddr> = if b.host_ip.is_empty() {
        t.host_ip
    } else {
        let h: IpAddr = b.host_ip.parse().map_err(|_| {
            err!(
                "published port {}/{name}: host IP {:?} is not an address",
                b.port,
                b.host_ip
            )
        })?;
        let broadcast = matches!(h, IpAddr::V4(v4) if v4.is_broadcast());
        if h.is_multicast() || broadcast {
            return Err(err!(
                "published port {}/{name}: host IP {h} is not a unicast address; give one of the host's addresses",
                b.port
            ));
        }
        Some(h)
    };
    let host_ports = match (b.host_port, b.host_port_end) {
        (0, 0) => EPHEMERAL,
        (start, 0) => start..=start,
        (start, end) if start != 0 && end >= start => start..=end,
        (start, end) => {
            return Err(err!(
                "published port {}/{name}: host port range {start}-{end} is not a range of ports (1-65535, lower first)",
                b.port
            ))
        }
    };
    let dests = match host_ip {
        Some(h) => {
            let a = if h.is_ipv4() { t.addr4 } else { t.addr6 };
            vec![a.ok_or_else(|| {
                err!(
                    "cannot publish {}/{name} on {h}: the container has no IPv{} address on this network",
                    b.port,
                    if h.is_ipv4() { 4 } else { 6 }
                )
            })?]
        }
        None => [t.addr4, t.addr6].into_iter().flatten().collect(),
    };
    if dests.is_empty() {
        return Err(err!(
            "cannot publish {}/{name}: the container has no address on this network",
            b.port
        ));
    }
    Ok(Want {
        proto: b.proto,
        port: b.port,
        host_ip: host_ip.filter(|h| !h.is_unspecified()),
        host_ports,
        dests,
    })
}

/// Two mappings of one endpoint that cannot coexist (one host address and port, two targets).
pub fn clash(a: &PortMap, b: &PortMap) -> bool {
    a.proto == b.proto
        && a.host_port == b.host_port
        && a.dest.is_ipv6() == b.dest.is_ipv6()
        && (a.host_ip.is_none() || b.host_ip.is_none() || a.host_ip == b.host_ip)
}

impl Want {
    fn fixed(&self) -> bool {
        self.host_ports.start() == self.host_ports.end()
    }

    fn maps(&self, host_port: u16) -> impl Iterator<Item = PortMap> + '_ {
        self.dests.iter().map(move |&dest| PortMap {
            proto: self.proto,
            host_ip: self.host_ip,
            host_port,
            dest,
            dest_port: self.port,
        })
    }
}

/// The mappings for `bindings` on `t`, in their order, avoiding the (protocol, host port)s of
/// `used` (other endpoints': the shared engine gives one to one endpoint, whatever the host
/// IP). Every entry is checked before any is planned, and entries with one host port before
/// those with a range: a port is picked from a range only if no entry asks for it, no other
/// entry got it, and `free(proto, port)` says the host has it free.
pub fn plan(
    bindings: &[PortBinding],
    t: &Target,
    used: &[PortMap],
    free: impl Fn(u8, u16) -> bool,
) -> Result<Vec<PortMap>> {
    let wants = bindings
        .iter()
        .map(|b| check(b, t))
        .collect::<Result<Vec<Want>>>()?;
    let taken: HashSet<(u8, u16)> = used.iter().map(|u| (u.proto, u.host_port)).collect();
    // The plan's mappings so far, by (protocol, host port).
    let mut planned: HashMap<(u8, u16), Vec<PortMap>> = HashMap::new();
    let mut ports: Vec<u16> = vec![0; wants.len()];
    for (i, w) in wants.iter().enumerate().filter(|(_, w)| w.fixed()) {
        let (p, name) = (*w.host_ports.start(), proto_name(w.proto));
        if taken.contains(&(w.proto, p)) {
            return Err(err!(
                "host port {p}/{name} is already published by another container; choose another -p host port"
            ));
        }
        let mine = planned.entry((w.proto, p)).or_default();
        for m in w.maps(p) {
            if let Some(o) = mine.iter().find(|o| clash(o, &m)) {
                return Err(err!(
                    "host port {p}/{name} is published twice for this container (to ports {} and {}); choose another -p host port",
                    o.dest_port,
                    w.port
                ));
            }
            mine.push(m);
        }
        ports[i] = p;
    }
    for (i, w) in wants.iter().enumerate().filter(|(_, w)| !w.fixed()) {
        let p = w
            .host_ports
            .clone()
            .find(|&p| {
                !taken.contains(&(w.proto, p))
                    && !planned.contains_key(&(w.proto, p))
                    && free(w.proto, p)
            })
            .ok_or_else(|| {
                err!(
                    "no free host port left in {}-{}/{} for container port {}",
                    w.host_ports.start(),
                    w.host_ports.end(),
                    proto_name(w.proto),
                    w.port
                )
            })?;
        planned.insert((w.proto, p), w.maps(p).collect());
        ports[i] = p;
    }
    Ok(wants
        .iter()
        .zip(ports)
        .flat_map(|(w, p)| w.maps(p))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(v6: bool) -> Target {
        Target {
            addr4: Some("10.1.0.2".parse().unwrap()),
            addr6: v6.then(|| "fd00::2".parse().unwrap()),
            host_ip: None,
        }
    }

    fn b(host_ip: &str, hp: u16, p: u16) -> PortBinding {
        PortBinding {
            proto: 6,
            ip: String::new(),
            port: p,
            host_ip: host_ip.into(),
            host_port: hp,
            host_port_end: hp,
        }
    }

    fn all_free(_: u8, _: u16) -> bool {
        true
    }

    #[test]
    fn plans_families_and_conflicts() {
        let m = plan(&[b("", 18080, 80)], &target(true), &[], all_free).unwrap();
        assert_eq!(m.len(), 2); // v4 and v6
        let m4 = plan(&[b("127.0.0.1", 18080, 80)], &target(true), &[], all_free).unwrap();
        assert_eq!(m4.len(), 1);
        assert_eq!(m4[0].host_ip, Some("127.0.0.1".parse().unwrap()));
        let any4 = plan(&[b("0.0.0.0", 18080, 80)], &target(true), &[], all_free).unwrap();
        assert_eq!((any4.len(), any4[0].host_ip), (1, None));
        let e = plan(&[b("", 18080, 80)], &target(false), &m4, all_free).unwrap_err();
        assert!(e.0.contains("already published"), "{e}");
        assert!(plan(&[b("::1", 1, 80)], &target(false), &[], all_free).is_err());
        assert!(plan(&[b("::", 1, 80)], &target(false), &[], all_free).is_err());
        let auto = plan(&[b("", 0, 80)], &target(false), &[], all_free).unwrap();
        assert_eq!(auto[0].host_port, *EPHEMERAL.start());
    }

    #[test]
    fn one_request_cannot_publish_a_host_port_twice() {
        let both = [b("", 8080, 80), b("", 8080, 81)];
        let e = plan(&both, &target(false), &[], all_free).unwrap_err();
        assert!(e.0.contains("twice") && e.0.contains("80 and 81"), "{e}");
        // A port picked from a range is not one another entry asks for, whatever the order.
        let m = plan(
            &[b("", 0, 80), b("", 49153, 81)],
            &target(false),
            &[],
            all_free,
        )
        .unwrap();
        assert_eq!((m[0].host_port, m[1].host_port), (49154, 49153));
        // Two host addresses, one port: fine.
        let two = [b("127.0.0.1", 8080, 80), b("127.0.0.2", 8080, 81)];
        assert_eq!(plan(&two, &target(false), &[], all_free).unwrap().len(), 2);
    }

    #[test]
    fn ranges_pick_a_free_port_of_the_range() {
        let range = |start, end| PortBinding {
            host_port_end: end,
            ..b("", start, 80)
        };
        let m = plan(&[range(8000, 8010)], &target(false), &[], |_, p| p > 8003).unwrap();
        assert_eq!(m[0].host_port, 8004);
        // Two entries of one range get two ports.
        let m = plan(
            &[range(8000, 8001), range(8000, 8001)],
            &target(false),
            &[],
            all_free,
        )
        .unwrap();
        assert_eq!((m[0].host_port, m[1].host_port), (8000, 8001));
        let e = plan(&[range(8000, 8001)], &target(false), &[], |_, _| false).unwrap_err();
        assert!(e.0.contains("8000-8001/tcp"), "{e}");
        assert!(plan(&[range(8001, 8000)], &target(false), &[], all_free).is_err());
        assert!(plan(&[range(0, 8000)], &target(false), &[], all_free).is_err());
    }

    #[test]
    fn refuses_what_cannot_be_published() {
        let t = target(true);
        let bad = [
            PortBinding {
                proto: 1,
                ..b("", 80, 80)
            },
            b("", 80, 0),
            b("nowhere", 80, 80),
            b("224.0.0.1", 80, 80),
            b("255.255.255.255", 80, 80),
        ];
        for x in bad {
            let e = plan(&[b("", 90, 90), x.clone()], &t, &[], all_free).unwrap_err();
            assert!(!e.0.is_empty(), "{x:?}");
        }
        assert!(plan(&[b("", 80, 80)], &Target::default(), &[], all_free).is_err());
        // Found while writing the fuzz target (fuzz/regressions/shim_ports): 0.0.0.0 on an
        // IPv6-only endpoint panicked with host port 0 (the port search looked at the first
        // of no destinations) and published nothing, successfully, with a fixed one.
        let v6_only = Target {
            addr4: None,
            ..target(true)
        };
        for hp in [0, 8080] {
            let e = plan(&[b("0.0.0.0", hp, 80)], &v6_only, &[], all_free).unwrap_err();
            assert!(e.0.contains("no IPv4 address"), "{e}");
        }
    }

    #[test]
    fn reads_the_port_map_option() {
        let o: Map<String, Value> = serde_json::from_str(
            r#"{"com.docker.network.portmap":[{"Proto":17,"IP":"","Port":81,"HostIP":"","HostPort":18081,"HostPortEnd":18081}]}"#,
        )
        .unwrap();
        assert_eq!(bindings(&o).unwrap()[0].host_port, 18081);
        assert!(bindings(&Map::new()).unwrap().is_empty());
        let bad: Map<String, Value> =
            serde_json::from_str(r#"{"com.docker.network.portmap":{"Port":1}}"#).unwrap();
        assert!(bindings(&bad).unwrap_err().0.contains("port map"));
    }
}
