//! `cnm-shim`: a Docker remote NetworkDriver + IpamDriver (legacy plugin protocol over a unix
//! socket) whose every endpoint is built by exec'ing the CNI `bridge` plugin with `host-local`
//! as IPAM, exactly as a CNI runtime does.
//!
//! Modules, one job each: `http` (HTTP/1.1 requests and replies), `server` (connections:
//! threads, timeouts, cap), `listen` (socket activation / bind),
//! `api` (protocol bodies), `router` (method dispatch, error replies), `ipam` (IpamDriver),
//! `network` and `endpoint` (NetworkDriver), `ports` (`-p`), `portplan` (`-p` planning, pure), `bind`/`cniconf` (networks shared with CNI), `cluster` (networks across hosts through cnm-agent), `cni` (plugin configs and
//! host-local calls), `exec` (bounded plugin execution), `netns` (temporary netns, links),
//! `state` (persistence), `reconcile` (startup repair), `pool` (address math), `netopts`
//! (`-o` options), `locks`, `shim` (shared context), `config`, `log`, `error`.

pub mod api;
pub mod bind;
pub mod cluster;
pub mod cni;
pub mod cniconf;
pub mod config;
pub mod endpoint;
pub mod error;
pub mod exec;
pub mod http;
pub mod ipam;
pub mod listen;
pub mod locks;
pub mod log;
pub mod netns;
pub mod netopts;
pub mod network;
pub mod pool;
pub mod portplan;
pub mod ports;
pub mod reconcile;
pub mod router;
pub mod server;
pub mod shim;
pub mod state;
