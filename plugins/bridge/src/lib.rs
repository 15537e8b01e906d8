//! The CNI `bridge` plugin: a Linux bridge per network, a veth pair per attachment.
//!
//! One module per job: `config` (parse + validate), `gateway` (pure gateway/route planning),
//! `host` (bridge and gateway addresses), `port` (hairpin, isolation, VLANs), `container`
//! (inside the netns), `firewall` (masquerade/forwarding), `sys` (the seam between the verbs' planning and the
//! machine), and one module per verb.

pub mod add;
pub mod check;
pub mod config;
pub mod container;
pub mod del;
pub mod errors;
#[cfg(test)]
mod fake;
pub mod firewall;
pub mod gateway;
pub mod host;
pub mod ids;
pub mod ipam;
pub mod iptables;
#[cfg(test)]
mod plan_tests;
pub mod plugin;
pub mod port;
pub mod reaper;
pub mod sys;
