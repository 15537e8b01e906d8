//! The CNI `portmap` plugin (chained after a main plugin): publishes
//! `runtimeConfig.portMappings` through the shared nftables engine
//! `cni_nft::hostport`, one transaction per call whatever the number of
//! mappings on the node.
//!
//! One module per job: `config` (parse + validate; conditionsV4/V6 are
//! translated by `cni_nft::conditions`), `plugin` (the verbs).

pub mod config;
pub mod plugin;
