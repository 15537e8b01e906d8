//! The one home of what every test of the suite needs, whatever crate it lives in: unique names
//! (parallel tests and test binaries never collide), temporary directories and network
//! namespaces removed on drop (also when a test panics), background processes killed with their
//! whole process group, polling with a deadline, threads sharing a test's netns, the members of an
//! nftables set as `nft -j` shows them, the cgroups container engines leave, and loud failure when a dependency is missing.
//!
//! It depends on no crate of the workspace, so every crate can take it as a dev-dependency.

mod cgroup;
mod names;
mod netns;
mod nft;
mod proc;
mod stats;
mod tempdir;
mod wait;

pub use cgroup::remove_cgroup;
pub use names::unique;
pub use netns::{
    concurrently, current_netns, enter_netns, in_netns, in_private_netns, unshare_net, Netns,
    DETACHED_DELETE_GRACE,
};
pub use nft::nft_set_members;
pub use proc::{have, require, require_root, run_ok, sh, Daemon};
pub use stats::{drift, percentile, tenths, trend_drift};
pub use tempdir::TempDir;
pub use wait::{poll_until, wait_for};
