//! Masquerade and forwarding state for the bridge (nftables in-process by default).

use std::net::IpAddr;

use cni_core::{CniError, CniResult};

use crate::config::Conf;

pub fn setup(
    _conf: &Conf,
    _id: &str,
    _ifname: &str,
    _bridge: &str,
    _result: &CniResult,
) -> Result<(), CniError> {
    Ok(())
}

pub fn teardown(
    _conf: &Conf,
    _id: &str,
    _ifname: &str,
    _ips: Option<&[IpAddr]>,
) -> Result<(), CniError> {
    Ok(())
}

pub fn gc(_conf: &Conf, _valid: &[(String, String)]) -> Result<(), CniError> {
    Ok(())
}
