//! Request bodies of Docker's remote NetworkDriver and IpamDriver protocols (libnetwork
//! `drivers/remote/api` and `ipams/remote/api`), as dockerd 20.10 sends them. Every field is
//! optional and `null` means its default: dockerd omits empty fields and sends `null` for
//! absent maps (e.g. `RequestAddress.Options`). An empty body is `{}`.

use std::collections::BTreeMap;

use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::err;
use crate::error::Result;

/// `null` (or absent) → `T::default()`.
fn nd<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> std::result::Result<T, D::Error> {
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// Decodes a request body; an empty body is an empty object.
pub fn decode<T: DeserializeOwned>(method: &str, body: &[u8]) -> Result<T> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| err!("cannot decode the {method} request: {e}"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct IpamData {
    #[serde(rename = "AddressSpace", deserialize_with = "nd")]
    pub address_space: String,
    #[serde(rename = "Pool", deserialize_with = "nd")]
    pub pool: String,
    #[serde(rename = "Gateway", deserialize_with = "nd")]
    pub gateway: String,
    #[serde(rename = "AuxAddresses", deserialize_with = "nd")]
    pub aux_addresses: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID", deserialize_with = "nd")]
    pub network_id: String,
    #[serde(rename = "Options", deserialize_with = "nd")]
    pub options: Map<String, Value>,
    #[serde(rename = "IPv4Data", deserialize_with = "nd")]
    pub ipv4_data: Vec<IpamData>,
    #[serde(rename = "IPv6Data", deserialize_with = "nd")]
    pub ipv6_data: Vec<IpamData>,
}

/// Every call that only names a network (DeleteNetwork, FreeNetwork).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NetworkRef {
    #[serde(rename = "NetworkID", deserialize_with = "nd")]
    pub network_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EndpointInterface {
    #[serde(rename = "Address", deserialize_with = "nd")]
    pub address: String,
    #[serde(rename = "AddressIPv6", deserialize_with = "nd")]
    pub address_ipv6: String,
    #[serde(rename = "MacAddress", deserialize_with = "nd")]
    pub mac_address: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID", deserialize_with = "nd")]
    pub network_id: String,
    #[serde(rename = "EndpointID", deserialize_with = "nd")]
    pub endpoint_id: String,
    #[serde(rename = "Interface", deserialize_with = "nd")]
    pub interface: EndpointInterface,
    #[serde(rename = "Options", deserialize_with = "nd")]
    pub options: Map<String, Value>,
}

/// Every call that names an endpoint: DeleteEndpoint, EndpointOperInfo, Join, Leave,
/// Program/RevokeExternalConnectivity (Join and Program carry Options too).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EndpointRef {
    #[serde(rename = "NetworkID", deserialize_with = "nd")]
    pub network_id: String,
    #[serde(rename = "EndpointID", deserialize_with = "nd")]
    pub endpoint_id: String,
    #[serde(rename = "SandboxKey", deserialize_with = "nd")]
    pub sandbox_key: String,
    #[serde(rename = "Options", deserialize_with = "nd")]
    pub options: Map<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RequestPool {
    #[serde(rename = "AddressSpace", deserialize_with = "nd")]
    pub address_space: String,
    #[serde(rename = "Pool", deserialize_with = "nd")]
    pub pool: String,
    #[serde(rename = "SubPool", deserialize_with = "nd")]
    pub sub_pool: String,
    #[serde(rename = "Options", deserialize_with = "nd")]
    pub options: BTreeMap<String, String>,
    #[serde(rename = "V6", deserialize_with = "nd")]
    pub v6: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PoolRef {
    #[serde(rename = "PoolID", deserialize_with = "nd")]
    pub pool_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RequestAddress {
    #[serde(rename = "PoolID", deserialize_with = "nd")]
    pub pool_id: String,
    #[serde(rename = "Address", deserialize_with = "nd")]
    pub address: String,
    #[serde(rename = "Options", deserialize_with = "nd")]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ReleaseAddress {
    #[serde(rename = "PoolID", deserialize_with = "nd")]
    pub pool_id: String,
    #[serde(rename = "Address", deserialize_with = "nd")]
    pub address: String,
}

/// `Options["RequestAddressType"]` of the gateway request.
pub const GATEWAY_REQUEST: &str = "com.docker.network.gateway";
pub const OPT_GENERIC: &str = "com.docker.network.generic";
pub const OPT_INTERNAL: &str = "com.docker.network.internal";
pub const OPT_ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
pub const OPT_PORTMAP: &str = "com.docker.network.portmap";

/// One `com.docker.network.portmap` entry.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct PortBinding {
    #[serde(rename = "Proto", deserialize_with = "nd")]
    pub proto: u8,
    #[serde(rename = "IP", deserialize_with = "nd")]
    pub ip: String,
    #[serde(rename = "Port", deserialize_with = "nd")]
    pub port: u16,
    #[serde(rename = "HostIP", deserialize_with = "nd")]
    pub host_ip: String,
    #[serde(rename = "HostPort", deserialize_with = "nd")]
    pub host_port: u16,
    #[serde(rename = "HostPortEnd", deserialize_with = "nd")]
    pub host_port_end: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bodies exactly as captured from dockerd 20.10 (docker-observed-calls.jsonl).
    #[test]
    fn observed_bodies() {
        let c: CreateNetwork = decode("CreateNetwork", br#"{"NetworkID": "fb5da4de", "Options": {"com.docker.network.enable_ipv6": true,
   "com.docker.network.generic": {"com.example.x": "1"}, "com.docker.network.internal": true},
 "IPv4Data": [{"AddressSpace": "rsch-local", "Gateway": "10.213.3.1/24", "Pool": "10.213.3.0/24"}],
 "IPv6Data": [{"AddressSpace": "rsch-local", "Gateway": "fd00:213:3::1/64", "Pool": "fd00:213:3::/64"}]}"#).unwrap();
        assert_eq!(c.ipv6_data[0].gateway, "fd00:213:3::1/64");
        assert!(c.ipv4_data[0].aux_addresses.is_empty());
        let r: RequestAddress = decode(
            "RequestAddress",
            br#"{"PoolID": "rsch/10.99.0.0/24", "Address": "10.99.0.5", "Options": null}"#,
        )
        .unwrap();
        assert!(r.options.is_empty());
        let e: CreateEndpoint = decode("CreateEndpoint", br#"{"NetworkID": "38914c25", "EndpointID": "453c8a55",
 "Interface": {"Address": "10.213.8.2/24", "AddressIPv6": "", "MacAddress": ""},
 "Options": {"com.docker.network.endpoint.exposedports": [{"Proto": 17, "Port": 81}],
             "com.docker.network.portmap": [{"Proto": 17, "IP": "", "Port": 81, "HostIP": "", "HostPort": 18081, "HostPortEnd": 18081}]}}"#).unwrap();
        assert_eq!(e.interface.address, "10.213.8.2/24");
        let pm: Vec<PortBinding> = serde_json::from_value(e.options[OPT_PORTMAP].clone()).unwrap();
        assert_eq!(pm[0].host_port, 18081);
        let p: RequestPool = decode("RequestPool", b"").unwrap();
        assert!(!p.v6 && p.pool.is_empty());
        let j: EndpointRef = decode("Join", br#"{"NetworkID":"a","EndpointID":"b","SandboxKey":"/var/run/docker/netns/x","Options":null}"#).unwrap();
        assert_eq!(j.sandbox_key, "/var/run/docker/netns/x");
        assert!(decode::<RequestPool>("RequestPool", b"[").is_err());
    }
}
