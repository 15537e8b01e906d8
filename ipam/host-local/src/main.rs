//! The `host-local` binary. `no_main`: the C runtime calls `main` directly, skipping std's
//! start-up (which, among other things, reads /proc/self/maps to place a stack guard): about a
//! tenth of a millisecond of every call, on a path measured in single milliseconds.

#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
use std::ffi::{c_char, c_int};

// SAFETY: the only symbol named `main` in the binary (`no_main` removes std's); the C runtime
// calls it once with the process arguments, which we do not touch.
#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    cni_core::skel::run(&host_local::HostLocal::default(), "host-local")
}
