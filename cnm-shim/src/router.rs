//! Maps plugin protocol methods (the URL path) to handlers and results to HTTP replies:
//! success is 200 with a JSON body (never empty: dockerd fails on an empty body with `EOF`),
//! errors are 500 `{"Err": msg}`, which both driver kinds show as
//! `<Method>: <msg>` in the docker CLI, and unknown methods are 404.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use crate::api::decode;
use crate::error::Result;
use crate::http::{Request, Response};
use crate::shim::Shim;
use crate::{endpoint, ipam, network, ports};

/// Every method whose request body is decoded (the fuzz targets feed each of them, picked by
/// index: the order is part of their seed corpora, so append only).
pub const DECODED: [&str; 12] = [
    "NetworkDriver.CreateNetwork",
    "NetworkDriver.DeleteNetwork",
    "NetworkDriver.CreateEndpoint",
    "NetworkDriver.DeleteEndpoint",
    "NetworkDriver.EndpointOperInfo",
    "NetworkDriver.Join",
    "NetworkDriver.ProgramExternalConnectivity",
    "NetworkDriver.RevokeExternalConnectivity",
    "IpamDriver.RequestPool",
    "IpamDriver.ReleasePool",
    "IpamDriver.RequestAddress",
    "IpamDriver.ReleaseAddress",
];

/// The one of `DECODED` that may come without arguments: it only reads, and an empty one asks
/// about no endpoint.
const BODY_OPTIONAL: &str = "NetworkDriver.EndpointOperInfo";

fn dispatch(shim: &Arc<Shim>, method: &str, body: &[u8]) -> Option<Result<Value>> {
    // dockerd retries a call whose connection broke (the shim was restarted while handling
    // it) with the request body already consumed, i.e. empty. Acting on it would mean acting
    // on defaults (RequestPool would pick a default pool): fail it instead; docker then rolls
    // back the operation.
    let empty = body.iter().all(u8::is_ascii_whitespace);
    // Except DeleteEndpoint: refusing it would leave docker with an endpoint it failed to
    // delete, holding its address (and the container on the network) while ours is gone or
    // going (a `Deleting` record is finished at startup). Answered as done, docker goes on
    // with ReleaseAddress, which also removes an endpoint whose deletion never reached us.
    if method == "NetworkDriver.DeleteEndpoint" && empty {
        crate::warn!(
            "empty {method} request (dockerd re-sent a call interrupted by a restart): done; the endpoint goes with its ReleaseAddress"
        );
        return Some(Ok(json!({})));
    }
    if DECODED.contains(&method) && method != BODY_OPTIONAL && empty {
        return Some(Err(crate::err!(
            "empty {method} request: dockerd re-sent a call that cnm-shim could not finish (it was restarted meanwhile); run the docker command again"
        )));
    }
    Some(match method {
        "Plugin.Activate" => Ok(json!({"Implements": ["NetworkDriver", "IpamDriver"]})),
        "NetworkDriver.GetCapabilities" => {
            // "global" connectivity: containers of a cluster network reach other hosts.
            // Scope stays "local" (dockerd without swarm refuses global-scope drivers).
            Ok(json!({"Scope": "local", "ConnectivityScope": "global"}))
        }
        "NetworkDriver.CreateNetwork" => {
            decode(method, body).and_then(|r| network::create(shim, r))
        }
        "NetworkDriver.DeleteNetwork" => {
            decode(method, body).and_then(|r| network::delete(shim, r))
        }
        "NetworkDriver.CreateEndpoint" => {
            decode(method, body).and_then(|r| endpoint::create(shim, r))
        }
        "NetworkDriver.DeleteEndpoint" => {
            decode(method, body).and_then(|r| endpoint::delete(shim, r))
        }
        "NetworkDriver.EndpointOperInfo" => {
            decode(method, body).map(|r| endpoint::oper_info(shim, r))
        }
        "NetworkDriver.Join" => decode(method, body).and_then(|r| endpoint::join(shim, r)),
        "NetworkDriver.Leave" => Ok(json!({})),
        "NetworkDriver.ProgramExternalConnectivity" => {
            decode(method, body).and_then(|r| ports::program(shim, r))
        }
        "NetworkDriver.RevokeExternalConnectivity" => {
            decode(method, body).and_then(|r| ports::revoke(shim, r))
        }
        // Only sent with swarm or a cluster store: nothing to do for a local driver.
        "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => Ok(json!({})),
        "NetworkDriver.AllocateNetwork" => Ok(json!({"Options": {}})),
        "NetworkDriver.FreeNetwork" => Ok(json!({})),
        "IpamDriver.GetCapabilities" => Ok(ipam::capabilities()),
        "IpamDriver.GetDefaultAddressSpaces" => Ok(ipam::address_spaces()),
        "IpamDriver.RequestPool" => decode(method, body).and_then(|r| ipam::request_pool(shim, r)),
        "IpamDriver.ReleasePool" => decode(method, body).and_then(|r| ipam::release_pool(shim, r)),
        "IpamDriver.RequestAddress" => {
            decode(method, body).and_then(|r| ipam::request_address(shim, r))
        }
        "IpamDriver.ReleaseAddress" => {
            decode(method, body).and_then(|r| ipam::release_address(shim, r))
        }
        _ => return None,
    })
}

pub fn handle(shim: &Arc<Shim>, req: &Request) -> Response {
    let method = req.path.trim_start_matches('/');
    if req.method != "POST" {
        return Response::json(
            405,
            &json!({"Err": format!("cnm-shim: {} {} is not supported; the plugin protocol uses POST", req.method, req.path)}),
        );
    }
    let started = Instant::now();
    crate::debug!("{method} <- {}", String::from_utf8_lossy(&req.body).trim());
    // A handler that panics must still answer (dockerd would otherwise wait forever).
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        dispatch(shim, method, &req.body)
    }))
    .unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Some(Err(crate::err!(
            "internal error (panic: {msg}); see the cnm-shim log"
        )))
    });
    let ms = started.elapsed().as_millis();
    match out {
        None => {
            crate::warn!("unknown method {method}");
            Response::json(
                404,
                &json!({"Err": format!("cnm-shim does not implement {method}")}),
            )
        }
        Some(Ok(v)) => {
            crate::debug!("{method} -> {v} ({ms} ms)");
            Response::json(200, &v)
        }
        Some(Err(e)) => {
            crate::warn!("{method} failed ({ms} ms): {e}");
            Response::json(500, &json!({"Err": e.0}))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn every_decoded_method_decodes_its_body() {
        let dir = std::env::temp_dir().join(format!("cnm-router-{}", std::process::id()));
        let args = ["--state-dir", dir.to_str().unwrap()].map(String::from);
        let cfg = Config::from_args(args).unwrap().unwrap();
        let shim = Arc::new(Shim::new(cfg).unwrap());
        for method in DECODED {
            // Not JSON: refused by the decoder, before the handler touches anything.
            let req = Request {
                method: "POST".into(),
                path: format!("/{method}"),
                headers: Vec::new(),
                body: b"[".to_vec(),
                http10: false,
            };
            let r = handle(&shim, &req);
            let body = String::from_utf8_lossy(&r.body);
            assert!(
                r.status == 500 && body.contains(&format!("cannot decode the {method} request")),
                "{method}: {} {body}",
                r.status
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
