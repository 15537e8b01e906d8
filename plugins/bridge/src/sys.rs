//! The seam between what ADD and DEL decide (what to create, in which order, what to undo on
//! failure, what to remove; check-then-set) and the machine they act on. [`Links`] is the
//! rtnetlink of one network namespace; [`Sys`] adds the host's netns, the container's, sysctls,
//! IPAM and the firewall. [`Real`] is the only implementation the plugin uses (plain netlink and
//! nf_tables calls, statically dispatched: the seam costs nothing); unit tests of the planning
//! logic drive the same code through a recording fake without root.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use cni_core::{CniError, CniResult, Command, Request};
use cni_netlink::{
    Address, BridgeVlan, Family, LinkInfo, LinkUpdate, Mac, NetNs, Netlink, Result as NlResult,
    Route, Veth,
};

use crate::config::Conf;
use crate::container::Iface;
use crate::errors::nl;
use crate::firewall::{self, Port};

/// The netlink requests bridge makes in one network namespace.
pub trait Links {
    fn link_by_name(&mut self, name: &str) -> NlResult<Option<LinkInfo>>;
    fn link_by_index(&mut self, index: u32) -> NlResult<Option<LinkInfo>>;
    fn create_bridge(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        vlan_filtering: bool,
        mac: Option<Mac>,
    ) -> NlResult<LinkInfo>;
    fn create_veth(&mut self, v: &Veth<'_>) -> NlResult<LinkInfo>;
    fn update_link(&mut self, index: u32, u: &LinkUpdate<'_>) -> NlResult<()>;
    fn set_up(&mut self, index: u32) -> NlResult<()>;
    fn delete_link(&mut self, index: u32) -> NlResult<()>;
    fn set_bridge_port(&mut self, index: u32, hairpin: bool, isolated: bool) -> NlResult<()>;
    fn addresses(&mut self, index: Option<u32>, family: Option<Family>) -> NlResult<Vec<Address>>;
    fn add_address(&mut self, index: u32, ip: IpAddr, prefix: u8, nodad: bool) -> NlResult<()>;
    fn del_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> NlResult<()>;
    fn add_route(&mut self, r: &Route) -> NlResult<()>;
    fn append_route(&mut self, r: &Route) -> NlResult<()>;
    fn bridge_vlan_list(&mut self, port: u32) -> NlResult<Vec<BridgeVlan>>;
    fn bridge_vlan_add(
        &mut self,
        port: u32,
        vid: u16,
        pvid: bool,
        untagged: bool,
        master: bool,
    ) -> NlResult<()>;
    fn bridge_vlan_add_range(
        &mut self,
        port: u32,
        vids: RangeInclusive<u16>,
        untagged: bool,
        master: bool,
    ) -> NlResult<()>;
    fn bridge_vlan_del(&mut self, port: u32, vid: u16) -> NlResult<()>;
}

/// Everything else ADD and DEL do to the machine.
pub trait Sys {
    type Links: Links;
    /// A socket in the host (the plugin's own) netns.
    fn open_host(&mut self) -> Result<Self::Links, CniError>;
    /// Sets a host sysctl unless it already has `value` (check-then-set).
    fn sysctl_set(&mut self, name: &str, value: &str) -> NlResult<bool>;
    /// One setns window into the container: opens its socket and sets the interface's
    /// sysctls (with IPv6: IPv6 enabled, keep_addr_on_down and DAD).
    fn enter_container(&mut self, ns: &NetNs, iface: Iface<'_>) -> Result<Self::Links, CniError>;
    /// A socket in the container's netns.
    fn open_container(&mut self, ns: &NetNs) -> Result<Self::Links, CniError>;
    fn ipam_add(&mut self, conf: &Conf, req: &Request) -> Result<CniResult, CniError>;
    fn ipam(&mut self, conf: &Conf, verb: Command, req: &Request) -> Result<(), CniError>;
    fn firewall_setup(
        &mut self,
        conf: &Conf,
        req: &Request,
        port: &Port<'_>,
        result: &CniResult,
    ) -> Result<(), CniError>;
    fn firewall_teardown(
        &mut self,
        conf: &Conf,
        req: &Request,
        ips: Option<&[IpAddr]>,
    ) -> Result<(), CniError>;
    /// Ends a DEL: deletes link `index` through `sock` without making the caller wait
    /// (see [`crate::reaper`]).
    fn finish_del(&mut self, doomed: Option<(Self::Links, u32)>);
    fn sleep(&mut self, d: Duration);
}

/// The machine: netlink, /proc/sys, the IPAM plugin and nf_tables.
pub struct Real;

impl Links for Netlink {
    fn link_by_name(&mut self, name: &str) -> NlResult<Option<LinkInfo>> {
        Netlink::link_by_name(self, name)
    }
    fn link_by_index(&mut self, index: u32) -> NlResult<Option<LinkInfo>> {
        Netlink::link_by_index(self, index)
    }
    fn create_bridge(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        vlan_filtering: bool,
        mac: Option<Mac>,
    ) -> NlResult<LinkInfo> {
        Netlink::create_bridge(self, name, mtu, vlan_filtering, mac)
    }
    fn create_veth(&mut self, v: &Veth<'_>) -> NlResult<LinkInfo> {
        Netlink::create_veth(self, v)
    }
    fn update_link(&mut self, index: u32, u: &LinkUpdate<'_>) -> NlResult<()> {
        Netlink::update_link(self, index, u)
    }
    fn set_up(&mut self, index: u32) -> NlResult<()> {
        Netlink::set_up(self, index)
    }
    fn delete_link(&mut self, index: u32) -> NlResult<()> {
        Netlink::delete_link(self, index)
    }
    fn set_bridge_port(&mut self, index: u32, hairpin: bool, isolated: bool) -> NlResult<()> {
        Netlink::set_bridge_port(self, index, hairpin, isolated)
    }
    fn addresses(&mut self, index: Option<u32>, family: Option<Family>) -> NlResult<Vec<Address>> {
        Netlink::addresses(self, index, family)
    }
    fn add_address(&mut self, index: u32, ip: IpAddr, prefix: u8, nodad: bool) -> NlResult<()> {
        Netlink::add_address(self, index, ip, prefix, nodad)
    }
    fn del_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> NlResult<()> {
        Netlink::del_address(self, index, ip, prefix)
    }
    fn add_route(&mut self, r: &Route) -> NlResult<()> {
        Netlink::add_route(self, r)
    }
    fn append_route(&mut self, r: &Route) -> NlResult<()> {
        Netlink::append_route(self, r)
    }
    fn bridge_vlan_list(&mut self, port: u32) -> NlResult<Vec<BridgeVlan>> {
        Netlink::bridge_vlan_list(self, port)
    }
    fn bridge_vlan_add(
        &mut self,
        port: u32,
        vid: u16,
        pvid: bool,
        untagged: bool,
        master: bool,
    ) -> NlResult<()> {
        Netlink::bridge_vlan_add(self, port, vid, pvid, untagged, master)
    }
    fn bridge_vlan_add_range(
        &mut self,
        port: u32,
        vids: RangeInclusive<u16>,
        untagged: bool,
        master: bool,
    ) -> NlResult<()> {
        Netlink::bridge_vlan_add_range(self, port, vids, untagged, master)
    }
    fn bridge_vlan_del(&mut self, port: u32, vid: u16) -> NlResult<()> {
        Netlink::bridge_vlan_del(self, port, vid)
    }
}

impl Sys for Real {
    type Links = Netlink;

    fn open_host(&mut self) -> Result<Netlink, CniError> {
        Netlink::new().map_err(nl)
    }

    fn sysctl_set(&mut self, name: &str, value: &str) -> NlResult<bool> {
        cni_netlink::sysctl_set(name, value)
    }

    fn enter_container(&mut self, ns: &NetNs, iface: Iface<'_>) -> Result<Netlink, CniError> {
        crate::container::enter(ns, iface)
    }

    fn open_container(&mut self, ns: &NetNs) -> Result<Netlink, CniError> {
        Netlink::new_in_netns(ns).map_err(nl)
    }

    fn ipam_add(&mut self, conf: &Conf, req: &Request) -> Result<CniResult, CniError> {
        crate::ipam::add(conf, req)
    }

    fn ipam(&mut self, conf: &Conf, verb: Command, req: &Request) -> Result<(), CniError> {
        crate::ipam::run(conf, verb, req)
    }

    fn firewall_setup(
        &mut self,
        conf: &Conf,
        req: &Request,
        port: &Port<'_>,
        result: &CniResult,
    ) -> Result<(), CniError> {
        firewall::setup(conf, &req.env.container_id, &req.env.ifname, port, result)
    }

    fn firewall_teardown(
        &mut self,
        conf: &Conf,
        req: &Request,
        ips: Option<&[IpAddr]>,
    ) -> Result<(), CniError> {
        firewall::teardown(conf, &req.env.container_id, &req.env.ifname, ips)
    }

    fn finish_del(&mut self, doomed: Option<(Netlink, u32)>) {
        crate::reaper::finish(doomed)
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d)
    }
}
