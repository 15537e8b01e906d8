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

mod attr;
pub mod batch;
pub mod error;
pub mod expr;
pub mod firewall;
pub mod forward;
pub mod hostport;
pub mod masq;
mod msg;
pub mod owner;
pub mod query;
pub mod socket;
pub mod spoofchk;
mod sys;
pub mod types;
mod udata;
pub mod vxlan_guard;

pub use batch::{Batch, Create};
pub use error::{Error, Failure, Result};
pub use expr::{CmpOp, Expr, MetaKey, Verdict};
pub use socket::NftSocket;
pub use types::*;
pub use udata::MAX_COMMENT;
