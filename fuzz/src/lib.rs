//! Shared checks of the fuzz targets: what every error a parser returns must look like.

use cni_core::CniError;

pub mod ports;

/// Codes a parser of untrusted input may answer with (SPEC.md's table, libcni's 8, Go's 999).
const KNOWN_CODES: &[u32] = &[1, 2, 3, 4, 5, 6, 7, 8, 11, 50, 51, 999];

/// A CNI error must carry a well-known code from `allowed` and a message that says something.
pub fn check_cni_error(e: &CniError, allowed: &[u32], what: &str) {
    assert!(
        KNOWN_CODES.contains(&e.code),
        "{what}: unknown CNI code {}: {e:?}",
        e.code
    );
    assert!(
        allowed.contains(&e.code),
        "{what}: code {} not in {allowed:?}: {e:?}",
        e.code
    );
    assert!(!e.msg.trim().is_empty(), "{what}: empty message: {e:?}");
    // The error JSON printed on stdout must always parse and carry the same code.
    let v: serde_json::Value = serde_json::from_str(&e.to_json(Some("1.1.0")))
        .unwrap_or_else(|err| panic!("{what}: error JSON does not parse: {err}: {e:?}"));
    assert_eq!(v["code"].as_u64(), Some(u64::from(e.code)), "{what}");
    assert_eq!(v["msg"].as_str(), Some(e.msg.as_str()), "{what}");
}

/// The input as UTF-8, as the CNI runtime and dockerd hand strings over (`None` otherwise).
pub fn utf8(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// The request-body decoding of every cnm-shim endpoint, followed by the pure validation each
/// handler does before touching anything (option parsing, subnet and address parsing, pool
/// arithmetic). Shared by `shim_bodies` (raw bodies) and `shim_http` (bodies of parsed
/// requests). Errors must name something; accepted values must satisfy their bounds.
pub mod shim {
    use std::net::IpAddr;

    use cnm_shim::api::{self, decode};
    use cnm_shim::error::Error;
    use cnm_shim::{cluster, netopts, pool};
    use ipnetwork::IpNetwork;
    use serde_json::{Map, Value};

    fn check_err(e: &Error, what: &str) {
        assert!(!e.0.trim().is_empty(), "{what}: empty error message");
    }

    fn ok_or_check<T>(r: Result<T, Error>, what: &str) -> Option<T> {
        r.map_err(|e| check_err(&e, what)).ok()
    }

    fn check_subnet(s: &str, what: &str) -> Option<IpNetwork> {
        let n = ok_or_check(pool::parse_subnet(s, what), what)?;
        assert_eq!(n.ip(), n.network(), "{what} {s}: host bits accepted");
        // The default gateway is a usable address whenever the subnet has host addresses.
        let gw = pool::first_host(&n);
        assert!(n.contains(gw), "{what} {n}: default gateway {gw} outside");
        let has_hosts = if n.is_ipv4() {
            n.prefix() <= 30
        } else {
            n.prefix() <= 127
        };
        if has_hosts {
            assert!(pool::usable(&n, gw), "{what} {n}: gateway {gw} not usable");
        }
        Some(n)
    }

    fn check_addr(s: &str, what: &str) -> Option<IpAddr> {
        let a = ok_or_check(pool::parse_addr(s, what), what)?;
        Some(a.ip())
    }

    /// `network::create`'s option handling, in its order.
    fn create_network_options(options: &Map<String, Value>) {
        let empty = Map::new();
        let mut generic = options
            .get(api::OPT_GENERIC)
            .and_then(Value::as_object)
            .unwrap_or(&empty)
            .clone();
        generic.remove(cnm_shim::bind::OPT_CNI_NETWORK);
        if ok_or_check(cluster::take_options(&mut generic), "cluster options").is_none() {
            return;
        }
        if let Some(o) = ok_or_check(netopts::parse(&generic), "network options") {
            if let Some(b) = &o.bridge {
                assert!(netopts::check_ifname("bridge", b).is_ok(), "{b:?}");
            }
            assert!(o.mtu == 0 || (68..=65535).contains(&o.mtu), "mtu {}", o.mtu);
            assert!(o.vlan <= 4094, "vlan {}", o.vlan);
            assert!(!(o.hairpin && o.promisc));
            // Persisted in the shim's state file: must read back the same.
            let saved = serde_json::to_vec(&o).expect("NetOpts serializes");
            let back: netopts::NetOpts = serde_json::from_slice(&saved).expect("reads back");
            assert_eq!(back, o);
        }
    }

    fn ipam_data(d: &[api::IpamData], what: &str) {
        for x in d {
            let subnet = check_subnet(&x.pool, what);
            if !x.gateway.is_empty() {
                let gw = check_addr(&x.gateway, "gateway");
                if let (Some(n), Some(gw)) = (subnet, gw) {
                    let _ = pool::usable(&n, gw);
                }
            }
        }
    }

    /// Decodes `body` as `method`'s request and runs the handler's pure checks.
    pub fn body(method: &str, body: &[u8]) {
        match method {
            "NetworkDriver.CreateNetwork" => {
                if let Some(r) = ok_or_check(decode::<api::CreateNetwork>(method, body), method) {
                    create_network_options(&r.options);
                    ipam_data(&r.ipv4_data, "IPv4 subnet");
                    ipam_data(&r.ipv6_data, "IPv6 subnet");
                }
            }
            "NetworkDriver.DeleteNetwork" => {
                let _ = ok_or_check(decode::<api::NetworkRef>(method, body), method);
            }
            "NetworkDriver.CreateEndpoint" => {
                if let Some(r) = ok_or_check(decode::<api::CreateEndpoint>(method, body), method) {
                    for a in [&r.interface.address, &r.interface.address_ipv6] {
                        if !a.is_empty() {
                            check_addr(a, "endpoint address");
                        }
                    }
                    port_map(&r.options);
                }
            }
            "NetworkDriver.DeleteEndpoint"
            | "NetworkDriver.EndpointOperInfo"
            | "NetworkDriver.Join"
            | "NetworkDriver.ProgramExternalConnectivity"
            | "NetworkDriver.RevokeExternalConnectivity" => {
                if let Some(r) = ok_or_check(decode::<api::EndpointRef>(method, body), method) {
                    port_map(&r.options);
                }
            }
            "IpamDriver.RequestPool" => {
                if let Some(r) = ok_or_check(decode::<api::RequestPool>(method, body), method) {
                    request_pool(&r);
                }
            }
            "IpamDriver.ReleasePool" => {
                let _ = ok_or_check(decode::<api::PoolRef>(method, body), method);
            }
            "IpamDriver.RequestAddress" => {
                if let Some(r) = ok_or_check(decode::<api::RequestAddress>(method, body), method) {
                    if !r.address.is_empty() {
                        check_addr(&r.address, "requested address");
                    }
                }
            }
            "IpamDriver.ReleaseAddress" => {
                if let Some(r) = ok_or_check(decode::<api::ReleaseAddress>(method, body), method) {
                    check_addr(&r.address, "released address");
                }
            }
            _ => {}
        }
    }

    /// `ports::program`'s decoding of the port map option.
    fn port_map(options: &Map<String, Value>) {
        if let Some(v) = options.get(api::OPT_PORTMAP).filter(|v| !v.is_null()) {
            let _ = serde_json::from_value::<Vec<api::PortBinding>>(v.clone());
        }
    }

    /// `ipam::request_pool`'s parsing and range arithmetic.
    fn request_pool(r: &api::RequestPool) {
        if r.pool.is_empty() {
            return;
        }
        let Some(subnet) = check_subnet(&r.pool, "--subnet") else {
            return;
        };
        if r.sub_pool.is_empty() {
            return;
        }
        let Some(range) = check_subnet(&r.sub_pool, "--ip-range") else {
            return;
        };
        if range.is_ipv4() != subnet.is_ipv4()
            || !subnet.contains(range.network())
            || range.prefix() < subnet.prefix()
        {
            return;
        }
        let (start, end) = pool::range_bounds(&subnet, &range);
        assert_eq!(start.is_ipv4(), subnet.is_ipv4());
        assert_eq!(end.is_ipv4(), subnet.is_ipv4());
    }
}
