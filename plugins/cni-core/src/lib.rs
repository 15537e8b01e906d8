//! The CNI protocol core shared by every plugin binary of the suite.
//!
//! One module per job: `version` (spec versions and feature gates), `error` (the error JSON and
//! codes), `json` (Go `encoding/json`-compatible leniency), `env` (CNI_* variables), `args`
//! (CNI_ARGS), `types` (the 1.x result model), `result` (printing and parsing every result
//! version), `skel` (the main loop of a plugin) `delegate` (running IPAM plugins) and `random`
//! (the CSPRNG reader).

pub mod arena;
pub mod args;
pub mod delegate;
pub mod detach;
pub mod env;
pub mod error;
pub mod gc;
pub mod json;
pub mod random;
pub mod result;
pub mod skel;
pub mod types;
pub mod version;

pub use env::{Command, Env};
pub use error::{CniError, Code};
pub use skel::{Plugin, Request};
pub use types::{CniResult, Dns, Interface, IpConfig, Route};
