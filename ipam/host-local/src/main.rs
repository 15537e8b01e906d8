//! The `host-local` binary: a plugin's C `main` (see `cni_core::plugin_main`).

#![cfg_attr(not(test), no_main)]

cni_core::plugin_main!(host_local::HostLocal::default(), "host-local");
