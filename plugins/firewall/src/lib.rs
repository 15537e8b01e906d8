//! The `firewall` meta plugin: a drop-in for the reference plugin, chained after `bridge`,
//! programming native nf_tables through `cni_nft::firewall` (one transaction per ADD/DEL).

pub mod config;
pub mod plugin;
