//! The CNI `bridge` plugin: a Linux bridge per network, a veth pair per attachment.

pub mod config;
pub mod gateway;
