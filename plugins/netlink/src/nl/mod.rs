//! The one netlink layer of the workspace: socket, message framing, error
//! and extended-ack parsing, attribute (TLV) encoding. The rtnetlink client
//! of this crate ([`crate::Netlink`]) and the nf_tables client (`cni-nft`,
//! its transactions and dumps) both speak through it; each adds only its own
//! message bodies and its own error type.
//!
//! - [`frame`]: `nlmsghdr` building and bounds-checked splitting of a
//!   datagram, `NLMSG_ERROR`/`NLMSG_DONE` decoding with the kernel's
//!   extended-ack message, the `NLM_F_*` flags.
//! - [`attr`]: attribute writer (with nesting) and iterator.
//! - [`sock`]: the blocking socket: send (EINTR retried, send buffer grown
//!   for big batches), receive one datagram (EINTR retried, truncation and
//!   timeout reported), sequence numbers, buffer sizing against ENOBUFS.

pub mod attr;
pub mod frame;
pub mod sock;

pub use frame::{messages, Msg, Status};
pub use sock::NlSocket;
