//! In-process nf_tables client over NETLINK_NETFILTER: hand-built nfnetlink
//! messages, no `nft`/`iptables` exec and no C library.
//!
//! Low level: [`Batch`] (one atomic transaction), [`Expr`] (rule
//! expressions), [`query`] (existence checks and dumps), [`NftSocket`].
//! High level: [`masq::MasqSetup`] (ipMasq state for the bridge plugin) and
//! [`forward`] (FORWARD accept/isolation for hosts running dockerd),
//! [`firewall::Firewall`] (the `firewall` plugin's state),
//! [`spoofchk::SpoofChk`] (`macspoofchk`, bridge family) and
//! [`hostport::HostPorts`] (published ports: the `portmap` plugin and
//! cnm-shim's `-p`, one engine).
//!
//! Socket, message framing, error/ext-ack parsing and attribute encoding are
//! `cni_netlink::nl`, the one netlink layer shared with the rtnetlink client;
//! this crate adds the nfnetlink header, batches and nf_tables bodies.

// Netlink attributes (TLVs), from the shared layer.
use cni_netlink::nl::attr;

pub mod batch;
pub mod conditions;
pub mod error;
pub mod expr;
pub mod firewall;
pub mod forward;
pub mod hostport;
pub mod masq;
mod msg;
pub mod owner;
pub mod query;
mod retry;
pub mod socket;
pub mod spoofchk;
mod sys;
pub mod tables;
pub mod types;
mod udata;
pub mod vxlan_guard;

pub use batch::{Batch, Create};
pub use error::{Error, Failure, Result};
pub use expr::{CmpOp, Expr, MetaKey, Verdict};
pub use socket::NftSocket;
pub use types::*;
pub use udata::MAX_COMMENT;
