//! The CNI `tuning` meta plugin: sysctls and link attributes (MAC, MTU, promiscuous and
//! all-multicast mode, transmit queue length) of the container interface a main plugin made.
//!
//! One module per job: `config` (keys, overrides, validation), `sysctl` (key resolution and the
//! allow-list), `link` (the attributes), `backup` (the saved originals), `errors`, and one
//! module per verb.

pub mod add;
pub mod backup;
pub mod check;
pub mod config;
pub mod del;
pub mod errors;
pub mod link;
pub mod plugin;
pub mod sysctl;
