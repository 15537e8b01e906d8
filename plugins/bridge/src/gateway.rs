//! Gateway and route planning from the IPAM result (the reference's `calcGateways` and the route
//! part of `ConfigureIface`), as pure functions so they are unit-tested without a kernel.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use cni_core::{CniResult, Route};

use crate::config::Conf;

/// Gateway addresses (with the subnet's prefix) to put on the bridge, per family.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Gateways {
    pub v4: Vec<IpNetwork>,
    pub v6: Vec<IpNetwork>,
}

/// Network address + 1, the reference's default gateway for a subnet.
pub fn first_host(addr: &IpNetwork) -> IpAddr {
    match addr {
        IpNetwork::V4(n) => IpAddr::V4((u32::from(n.network()).wrapping_add(1)).into()),
        IpNetwork::V6(n) => IpAddr::V6((u128::from(n.network()).wrapping_add(1)).into()),
    }
}

fn default_dst(v4: bool) -> IpNetwork {
    if v4 {
        "0.0.0.0/0".parse().expect("valid literal")
    } else {
        "::/0".parse().expect("valid literal")
    }
}

/// Points every IP at the container interface (index 2), fills missing gateways when the
/// bridge is a gateway, adds default routes for `isDefaultGateway`, and returns the bridge's
/// gateway addresses.
///
/// Unlike the reference, an IPAM default route without `gw` is completed with the gateway
/// instead of being duplicated (the reference then fails with "file exists").
pub fn calc(result: &mut CniResult, conf: &Conf) -> Gateways {
    let mut gws = Gateways::default();
    let mut default_done = [false, false];
    for i in 0..result.ips.len() {
        let v4 = result.ips[i].address.is_ipv4();
        result.ips[i].interface = Some(2);
        if result.ips[i].gateway.is_none() && conf.is_gateway {
            result.ips[i].gateway = Some(first_host(&result.ips[i].address));
        }
        let fam = usize::from(!v4);
        if conf.is_default_gateway && !default_done[fam] {
            let dst = default_dst(v4);
            let gw = result.ips[i].gateway;
            match result.routes.iter_mut().find(|r| r.dst == dst) {
                Some(r) => {
                    if r.gw.is_none() {
                        r.gw = gw;
                    }
                }
                None => result.routes.push(Route::new(dst, gw)),
            }
            default_done[fam] = true;
        }
        if conf.is_gateway {
            if let Some(gw) = result.ips[i].gateway {
                let prefix = result.ips[i].address.prefix();
                if let Ok(n) = IpNetwork::new(gw, prefix) {
                    let list = if v4 { &mut gws.v4 } else { &mut gws.v6 };
                    if !list.contains(&n) {
                        list.push(n);
                    }
                }
            }
        }
    }
    gws
}

/// The routes to program in the container: a route without `gw` goes via the first gateway of
/// its family (as the reference); exact duplicates are dropped so they cannot fail with EEXIST.
pub fn container_routes(result: &CniResult) -> Vec<Route> {
    let gw_of = |v4: bool| {
        result
            .ips
            .iter()
            .filter(|ip| ip.address.is_ipv4() == v4)
            .find_map(|ip| ip.gateway)
    };
    let mut out: Vec<Route> = Vec::new();
    for r in &result.routes {
        let mut r = r.clone();
        if r.gw.is_none() {
            r.gw = gw_of(r.dst.is_ipv4());
        }
        let r = Route {
            dst: IpNetwork::new(r.dst.network(), r.dst.prefix()).unwrap_or(r.dst),
            ..r
        };
        if !out.iter().any(|o| same_route(o, &r)) {
            out.push(r);
        }
    }
    out
}

fn same_route(a: &Route, b: &Route) -> bool {
    a.dst == b.dst
        && a.gw == b.gw
        && a.table.unwrap_or(0) == b.table.unwrap_or(0)
        && a.priority == b.priority
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_core::IpConfig;

    fn conf(gw: bool, default_gw: bool) -> Conf {
        Conf {
            name: "n".into(),
            bridge: "cni0".into(),
            is_gateway: gw || default_gw,
            is_default_gateway: default_gw,
            force_address: false,
            ip_masq: false,
            masq_backend: crate::config::MasqBackend::Nftables,
            mtu: 0,
            hairpin: false,
            promisc: false,
            vlan: 0,
            trunk: None,
            preserve_default_vlan: false,
            macspoofchk: false,
            enable_dad: false,
            disable_container_interface: false,
            port_isolation: false,
            ipam_type: "host-local".into(),
            dns: Default::default(),
            mac: None,
            isolate_bridges: true,
        }
    }

    fn ip(a: &str, gw: Option<&str>) -> IpConfig {
        IpConfig {
            interface: None,
            address: a.parse().unwrap(),
            gateway: gw.map(|g| g.parse().unwrap()),
        }
    }

    #[test]
    fn fills_gateway_and_interface() {
        let mut r = CniResult {
            ips: vec![ip("10.1.2.5/24", None), ip("fd00::5/64", Some("fd00::fe"))],
            ..Default::default()
        };
        let g = calc(&mut r, &conf(true, false));
        assert_eq!(r.ips[0].gateway, Some("10.1.2.1".parse().unwrap()));
        assert_eq!(r.ips[0].interface, Some(2));
        assert_eq!(g.v4, vec!["10.1.2.1/24".parse().unwrap()]);
        assert_eq!(g.v6, vec!["fd00::fe/64".parse().unwrap()]);
        assert!(r.routes.is_empty());
    }

    #[test]
    fn not_gateway_leaves_gateway_empty() {
        let mut r = CniResult {
            ips: vec![ip("10.1.2.5/24", None)],
            ..Default::default()
        };
        let g = calc(&mut r, &conf(false, false));
        assert_eq!(r.ips[0].gateway, None);
        assert_eq!(g, Gateways::default());
    }

    #[test]
    fn default_gateway_added_once_per_family() {
        let mut r = CniResult {
            ips: vec![
                ip("10.1.2.5/24", None),
                ip("10.9.2.5/24", None),
                ip("fd00::5/64", None),
            ],
            ..Default::default()
        };
        calc(&mut r, &conf(false, true));
        let dsts: Vec<String> = r.routes.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(dsts, vec!["0.0.0.0/0", "::/0"]);
        assert_eq!(r.routes[0].gw, Some("10.1.2.1".parse().unwrap()));
    }

    #[test]
    fn ipam_default_route_without_gw_is_completed_not_duplicated() {
        let mut r = CniResult {
            ips: vec![ip("10.1.2.5/24", None)],
            routes: vec![Route::new("0.0.0.0/0".parse().unwrap(), None)],
            ..Default::default()
        };
        calc(&mut r, &conf(false, true));
        assert_eq!(r.routes.len(), 1);
        assert_eq!(r.routes[0].gw, Some("10.1.2.1".parse().unwrap()));
        assert_eq!(container_routes(&r).len(), 1);
    }

    #[test]
    fn container_routes_fill_gw_and_dedupe() {
        let r = CniResult {
            ips: vec![ip("10.1.2.5/24", Some("10.1.2.1"))],
            routes: vec![
                Route::new("0.0.0.0/0".parse().unwrap(), None),
                Route::new(
                    "0.0.0.0/0".parse().unwrap(),
                    Some("10.1.2.1".parse().unwrap()),
                ),
                Route::new(
                    "192.168.0.0/16".parse().unwrap(),
                    Some("10.1.2.9".parse().unwrap()),
                ),
            ],
            ..Default::default()
        };
        let rs = container_routes(&r);
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].gw, Some("10.1.2.1".parse().unwrap()));
    }
}
