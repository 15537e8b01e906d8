//! The `cluster` CNI meta plugin and the files it shares with `cnm-agent`.
//!
//! `model` is the contract between the two: the network config the agent publishes
//! (`<runDir>/<net>/network.json`), the host's leased blocks with a health state
//! (`<runDir>/<net>/blocks.json`), and how a block maps to a host-local range. `plugin` is the
//! exec'd plugin: it never talks to etcd, it reads those files and runs `bridge` + `host-local`
//! in-process.

pub mod model;
pub mod plugin;
