//! A recording fake of [`Sys`] for unit tests of ADD/DEL planning: an in-memory host and
//! container netns, a log of every mutating call (and of lookups that matter to the plan), and
//! failure injection by log prefix. The integration tests (tests/tests/bridge.rs) cover the
//! real kernel; this only checks what the verbs decide.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::rc::Rc;
use std::time::Duration;

use cni_core::{CniError, CniResult, Command, IpConfig, Request};
use cni_netlink::{
    Address, BridgeVlan, Error, Family, LinkInfo, LinkUpdate, Mac, NetNs, OperState,
    Result as NlResult, Route, Veth,
};

use crate::config::Conf;
use crate::container::Iface;
use crate::firewall::Port;
use crate::sys::{Links, Sys};

#[derive(Default)]
pub struct State {
    /// Every mutating call, in order, e.g. `host: create_bridge cni0`.
    pub log: Vec<String>,
    /// Links by netns: "host" or "container".
    pub links: HashMap<&'static str, Vec<LinkInfo>>,
    pub addrs: HashMap<&'static str, Vec<Address>>,
    pub sysctls: HashMap<String, String>,
    /// A call whose log line starts with one of these fails with the errno.
    pub fail: Vec<(String, i32)>,
    /// Failures of the non-netlink steps (IPAM, firewall) by log prefix.
    pub fail_cni: Vec<String>,
    /// What IPAM ADD returns.
    pub ipam: Vec<IpConfig>,
    next_index: u32,
}

impl State {
    fn record(&mut self, line: String) -> NlResult<()> {
        let errno = self
            .fail
            .iter()
            .find(|(p, _)| line.starts_with(p.as_str()))
            .map(|(_, e)| *e);
        self.log.push(line.clone());
        match errno {
            Some(e) => Err(Error::from_errno(e, line)),
            None => Ok(()),
        }
    }

    fn record_cni(&mut self, line: String) -> Result<(), CniError> {
        let fails = self.fail_cni.iter().any(|p| line.starts_with(p.as_str()));
        self.log.push(line.clone());
        if fails {
            return Err(CniError::internal(format!("{line}: injected failure")));
        }
        Ok(())
    }

    fn new_link(&mut self, ns: &'static str, name: &str, kind: &str) -> LinkInfo {
        self.next_index += 1;
        let l = LinkInfo {
            index: self.next_index,
            name: name.into(),
            kind: Some(kind.into()),
            mac: None,
            mtu: 1500,
            txqlen: 1000,
            flags: 0,
            master: None,
            oper_state: OperState::Down,
            link: None,
            link_netnsid: None,
            bridge_port: None,
            vlan_filtering: None,
            vxlan: None,
        };
        self.links.entry(ns).or_default().push(l.clone());
        l
    }

    fn find(&mut self, ns: &'static str, index: u32) -> Option<&mut LinkInfo> {
        self.links
            .get_mut(ns)
            .and_then(|v| v.iter_mut().find(|l| l.index == index))
    }

    /// Adds an existing host link (a bridge left by an earlier ADD, a stray link...).
    pub fn host_link(&mut self, name: &str, kind: &str, up: bool, mac: Option<Mac>) -> LinkInfo {
        let mut l = self.new_link("host", name, kind);
        let stored = self.find("host", l.index).expect("just added");
        if up {
            stored.flags |= libc::IFF_UP as u32;
        }
        stored.mac = mac;
        l.flags = stored.flags;
        l.mac = mac;
        l
    }

    pub fn host_addr(&mut self, index: u32, ip: IpAddr, prefix_len: u8) {
        self.addrs.entry("host").or_default().push(Address {
            index,
            ip,
            prefix_len,
            flags: 0,
            scope: 0,
        });
    }
}

/// The fake machine; clones share one [`State`].
#[derive(Clone, Default)]
pub struct Fake(pub Rc<RefCell<State>>);

impl Fake {
    pub fn state(&self) -> std::cell::RefMut<'_, State> {
        self.0.borrow_mut()
    }

    pub fn log(&self) -> Vec<String> {
        self.0.borrow().log.clone()
    }

    fn links(&self, ns: &'static str) -> FakeLinks {
        FakeLinks {
            ns,
            st: self.0.clone(),
        }
    }
}

/// One netns of the fake.
pub struct FakeLinks {
    ns: &'static str,
    st: Rc<RefCell<State>>,
}

impl FakeLinks {
    fn rec(&self, what: String) -> NlResult<()> {
        let line = format!("{}: {what}", self.ns);
        self.st.borrow_mut().record(line)
    }
}

impl Links for FakeLinks {
    fn link_by_name(&mut self, name: &str) -> NlResult<Option<LinkInfo>> {
        let st = self.st.borrow();
        let all = st.links.get(self.ns).map(Vec::as_slice).unwrap_or(&[]);
        Ok(all.iter().find(|l| l.name == name).cloned())
    }

    fn link_by_index(&mut self, index: u32) -> NlResult<Option<LinkInfo>> {
        Ok(self.st.borrow_mut().find(self.ns, index).map(|l| l.clone()))
    }

    fn create_bridge(
        &mut self,
        name: &str,
        _mtu: Option<u32>,
        vlan_filtering: bool,
        mac: Option<Mac>,
    ) -> NlResult<LinkInfo> {
        self.rec(format!(
            "create_bridge {name} vlan_filtering={vlan_filtering}"
        ))?;
        let mut st = self.st.borrow_mut();
        let index = st.new_link(self.ns, name, "bridge").index;
        let l = st.find(self.ns, index).expect("just added");
        l.mac = mac;
        Ok(l.clone())
    }

    fn create_veth(&mut self, v: &Veth<'_>) -> NlResult<LinkInfo> {
        self.rec(format!(
            "create_veth peer={} master={:?} up={}",
            v.peer_name, v.master, v.up
        ))?;
        let mut st = self.st.borrow_mut();
        let peer = st.new_link("container", v.peer_name, "veth");
        let p = st.find("container", peer.index).expect("just added");
        p.mac = v.peer_mac;
        let index = st.new_link(self.ns, v.name, "veth").index;
        let l = st.find(self.ns, index).expect("just added");
        l.master = v.master;
        l.mac = v.mac;
        l.link = Some(peer.index);
        if v.up {
            l.flags |= libc::IFF_UP as u32;
            l.oper_state = OperState::Up;
        }
        Ok(l.clone())
    }

    fn update_link(&mut self, index: u32, u: &LinkUpdate<'_>) -> NlResult<()> {
        self.rec(format!(
            "update_link {index} up={:?} promisc={:?} mac={} master={:?} arp_notify={:?}",
            u.up,
            u.promisc,
            u.mac.is_some(),
            u.master,
            u.arp_notify
        ))?;
        let mut st = self.st.borrow_mut();
        if let Some(l) = st.find(self.ns, index) {
            if u.up == Some(true) {
                l.flags |= libc::IFF_UP as u32;
            }
            if u.mac.is_some() {
                l.mac = u.mac;
            }
        }
        Ok(())
    }

    fn set_up(&mut self, index: u32) -> NlResult<()> {
        self.rec(format!("set_up {index}"))
    }

    fn delete_link(&mut self, index: u32) -> NlResult<()> {
        self.rec(format!("delete_link {index}"))?;
        // A veth goes with its peer, whichever end is deleted (indexes are unique across the
        // fake's namespaces; the host end records its peer's).
        let mut st = self.st.borrow_mut();
        let peer = st.find(self.ns, index).and_then(|l| l.link);
        for v in st.links.values_mut() {
            v.retain(|l| l.index != index && Some(l.index) != peer && l.link != Some(index));
        }
        Ok(())
    }

    fn set_bridge_port(&mut self, index: u32, hairpin: bool, isolated: bool) -> NlResult<()> {
        self.rec(format!(
            "set_bridge_port {index} hairpin={hairpin} isolated={isolated}"
        ))
    }

    fn addresses(&mut self, index: Option<u32>, family: Option<Family>) -> NlResult<Vec<Address>> {
        let st = self.st.borrow();
        let all = st.addrs.get(self.ns).map(Vec::as_slice).unwrap_or(&[]);
        Ok(all
            .iter()
            .filter(|a| index.is_none_or(|i| a.index == i))
            .filter(|a| family.is_none_or(|f| Family::of(&a.ip) == f))
            .cloned()
            .collect())
    }

    fn add_address(&mut self, index: u32, ip: IpAddr, prefix: u8, _nodad: bool) -> NlResult<()> {
        self.rec(format!("add_address {index} {ip}/{prefix}"))?;
        let mut st = self.st.borrow_mut();
        let v = st.addrs.entry(self.ns).or_default();
        if v.iter().any(|a| a.index == index && a.ip == ip) {
            return Err(Error::from_errno(libc::EEXIST, "add address"));
        }
        v.push(Address {
            index,
            ip,
            prefix_len: prefix,
            flags: 0,
            scope: 0,
        });
        Ok(())
    }

    fn del_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> NlResult<()> {
        self.rec(format!("del_address {index} {ip}/{prefix}"))?;
        if let Some(v) = self.st.borrow_mut().addrs.get_mut(self.ns) {
            v.retain(|a| !(a.index == index && a.ip == ip));
        }
        Ok(())
    }

    fn add_route(&mut self, r: &Route) -> NlResult<()> {
        self.rec(format!("add_route {}", r.describe()))
    }

    fn append_route(&mut self, r: &Route) -> NlResult<()> {
        self.rec(format!("append_route {}", r.describe()))
    }

    fn bridge_vlan_list(&mut self, _port: u32) -> NlResult<Vec<BridgeVlan>> {
        Ok(Vec::new())
    }

    fn bridge_vlan_add(
        &mut self,
        port: u32,
        vid: u16,
        pvid: bool,
        untagged: bool,
        _master: bool,
    ) -> NlResult<()> {
        self.rec(format!(
            "bridge_vlan_add {port} {vid} pvid={pvid} untagged={untagged}"
        ))
    }

    fn bridge_vlan_add_range(
        &mut self,
        port: u32,
        vids: RangeInclusive<u16>,
        _untagged: bool,
        _master: bool,
    ) -> NlResult<()> {
        self.rec(format!(
            "bridge_vlan_add_range {port} {}-{}",
            vids.start(),
            vids.end()
        ))
    }

    fn bridge_vlan_del(&mut self, port: u32, vid: u16) -> NlResult<()> {
        self.rec(format!("bridge_vlan_del {port} {vid}"))
    }
}

impl Sys for Fake {
    type Links = FakeLinks;

    fn open_host(&mut self) -> Result<FakeLinks, CniError> {
        Ok(self.links("host"))
    }

    fn sysctl_set(&mut self, name: &str, value: &str) -> NlResult<bool> {
        let mut st = self.state();
        if st.sysctls.get(name).map(String::as_str) == Some(value) {
            return Ok(false); // check-then-set: no write
        }
        st.record(format!("sysctl {name}={value}"))?;
        st.sysctls.insert(name.into(), value.into());
        Ok(true)
    }

    fn enter_container(&mut self, _ns: &NetNs, iface: Iface<'_>) -> Result<FakeLinks, CniError> {
        let Iface { name, v6, .. } = iface;
        self.state()
            .record_cni(format!("enter container {name} v6={v6}"))?;
        Ok(self.links("container"))
    }

    fn open_container(&mut self, _ns: &NetNs) -> Result<FakeLinks, CniError> {
        Ok(self.links("container"))
    }

    fn ipam_add(&mut self, _conf: &Conf, _req: &Request) -> Result<CniResult, CniError> {
        let mut st = self.state();
        st.record_cni("ipam ADD".into())?;
        Ok(CniResult {
            ips: st.ipam.clone(),
            ..Default::default()
        })
    }

    fn ipam(&mut self, _conf: &Conf, verb: Command, _req: &Request) -> Result<(), CniError> {
        self.state().record_cni(format!("ipam {verb:?}"))
    }

    fn firewall_setup(
        &mut self,
        _conf: &Conf,
        _req: &Request,
        port: &Port<'_>,
        result: &CniResult,
    ) -> Result<(), CniError> {
        let ips: Vec<String> = result.ips.iter().map(|i| i.address.to_string()).collect();
        self.state().record_cni(format!(
            "firewall setup bridge={} ips={}",
            port.bridge,
            ips.join(",")
        ))
    }

    fn firewall_teardown(
        &mut self,
        _conf: &Conf,
        _req: &Request,
        ips: Option<&[IpAddr]>,
    ) -> Result<(), CniError> {
        self.state()
            .record_cni(format!("firewall teardown ips={ips:?}"))
    }

    fn finish_del(&mut self, doomed: Option<(FakeLinks, u32)>) {
        if let Some((mut sock, index)) = doomed {
            let _ = sock.delete_link(index);
        }
    }

    fn sleep(&mut self, _d: Duration) {}
}
