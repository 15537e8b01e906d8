//! The `tuning` binary: a plugin's C `main` (see `cni_core::plugin_main`).

#![cfg_attr(not(test), no_main)]

cni_core::plugin_main!(cni_tuning::plugin::TUNING, "tuning");
