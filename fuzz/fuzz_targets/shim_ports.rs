//! The shim's `-p` plan (`cnm_shim::portplan`) of a ProgramExternalConnectivity body: the first
//! byte picks the endpoint's families, the network's host IP, another endpoint's ports and the
//! host's free ports; the rest is the body dockerd posts.
//!
//! Invariants (see `cni_fuzz::ports`): no panic, errors say something, every mapping is a valid
//! port and protocol to the container's address of its family, clashes with nothing, and is
//! what its entry asked for; an entry that can be published alone is, exactly as given.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    cni_fuzz::ports::run(sel, rest);
});
