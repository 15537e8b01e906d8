//! Integration tests of the `bridge` plugin: the built binary is exec'd the way a runtime does
//! (CNI_* env, config on stdin, conflist chaining with prevResult for CHECK/DEL), every test in
//! its own throwaway host netns and container netns, all removed on drop even when a test fails.
//!
//! Needs root, `ip`, `bridge`, `nft`, `iptables`, `busybox` and the binaries built first
//! (`cargo build --workspace --bins`, as scripts/test.sh does).

mod common;

mod bad_input;
mod check;
mod concurrency;
mod connectivity;
mod del;
mod docker;
mod features;
mod firewall;
mod leak;
mod rollback;
mod verbs;
mod versions;
