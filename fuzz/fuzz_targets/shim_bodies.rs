//! The JSON bodies dockerd posts to cnm-shim, decoded as each endpoint decodes them
//! (`cnm_shim::api::decode`), followed by the handler's pure validation (network options,
//! subnets, addresses, port maps, pool ranges). The first byte picks the endpoint.
//!
//! Invariants (see `cni_fuzz::shim`): no panic, errors name something, accepted options and
//! subnets satisfy their bounds, options persisted in the state file read back the same.
#![no_main]

use cni_fuzz::shim::body;
use cnm_shim::router::DECODED;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    body(DECODED[sel as usize % DECODED.len()], rest);
});
