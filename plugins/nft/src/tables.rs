//! The names of our nftables tables, in one place (the uninstall script
//! removes `cni_rs`, `cni_rs_*` and `cnm_*`).

/// `inet cni_rs`: ipMasq ([`crate::masq`]) and bridge isolation
/// ([`crate::forward`]); `bridge cni_rs`: macspoofchk ([`crate::spoofchk`]).
pub const MAIN: &str = "cni_rs";
/// `inet cni_rs_ports`: published ports ([`crate::hostport`]).
pub const PORTS: &str = "cni_rs_ports";
/// `inet cni_rs_fw`: the firewall plugin ([`crate::firewall`]).
pub const FIREWALL: &str = "cni_rs_fw";
/// `ip cnm_vxlan`: cnm-agent's VXLAN guard ([`crate::vxlan_guard`]).
pub const VXLAN_GUARD: &str = "cnm_vxlan";
