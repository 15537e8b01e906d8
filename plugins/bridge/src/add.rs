//! ADD: validate everything, allocate through IPAM, then build the bridge, the veth pair, the
//! container's addresses and routes, the gateway and the masquerade state — and undo what this
//! call made if any later step fails (the reference leaves the veth behind).

use std::time::Duration;

use cni_core::version::{family, ResultFamily};
use cni_core::{CniError, CniResult, Command, Interface, Request};
use cni_netlink::{LinkInfo, NetNs, OperState, Veth};

use crate::config::{self, format_mac, Conf};
use crate::errors::{bad_netns, NlContext};
use crate::sys::{Links, Real, Sys};
use crate::{container, firewall, gateway, host, ids, port};

/// What this call created, undone in reverse order on failure.
#[derive(Default)]
struct Undo {
    ipam: bool,
    host_veth: Option<u32>,
    firewall: bool,
}

impl Undo {
    fn run<S: Sys>(&self, sys: &mut S, req: &Request, conf: &Conf, hnl: &mut S::Links) {
        if self.firewall {
            if let Err(e) = sys.firewall_teardown(conf, req, None) {
                eprintln!("bridge: rollback: {e}");
            }
        }
        if let Some(idx) = self.host_veth {
            // Deleting one end removes the pair, including the container side.
            if let Err(e) = hnl.delete_link(idx) {
                if !e.is_not_found() {
                    eprintln!("bridge: rollback: delete host veth: {e}");
                }
            }
        }
        if self.ipam {
            if let Err(e) = sys.ipam(conf, Command::Del, req) {
                eprintln!("bridge: rollback: IPAM DEL: {e}");
            }
        }
    }
}

pub fn add(req: &Request) -> Result<CniResult, CniError> {
    add_with(&mut Real, req)
}

/// ADD against any [`Sys`] (the plugin passes [`Real`]; unit tests a recording fake).
pub fn add_with<S: Sys>(sys: &mut S, req: &Request) -> Result<CniResult, CniError> {
    let conf = config::load(req)?;
    if !conf.l3() && family(&req.cni_version) == ResultFamily::V02 {
        // The reference discovers this only after building everything.
        return Err(CniError::config(format!(
            "cannot convert: no valid IP addresses: an L2-only bridge (no \"ipam\") has no result in cniVersion {}; use 0.3.0 or later",
            req.cni_version
        )));
    }
    let ns = NetNs::open(&req.env.netns).map_err(|e| bad_netns(&req.env.netns, e))?;
    let mut hnl = sys.open_host()?;
    // Validate the bridge name against the host before mutating anything.
    let existing = hnl
        .link_by_name(&conf.bridge)
        .ctx(|| "look up bridge".into())?;
    if let Some(br) = existing.as_ref().filter(|b| !b.is_bridge()) {
        return Err(CniError::config(format!(
            "{:?} already exists but is not a bridge (kind {}); set \"bridge\" to another name or remove that link",
            conf.bridge,
            br.kind.as_deref().unwrap_or("none")
        )));
    }

    let mut undo = Undo::default();
    let res = build(sys, req, &conf, &ns, &mut hnl, existing, &mut undo);
    if res.is_err() {
        undo.run(sys, req, &conf, &mut hnl);
    }
    res
}

fn build<S: Sys>(
    sys: &mut S,
    req: &Request,
    conf: &Conf,
    ns: &NetNs,
    hnl: &mut S::Links,
    existing_bridge: Option<LinkInfo>,
    undo: &mut Undo,
) -> Result<CniResult, CniError> {
    // IPAM first: its config errors and exhaustion then cost nothing to undo.
    let mut result = CniResult::default();
    if conf.l3() {
        result = sys.ipam_add(conf, req)?;
        undo.ipam = true;
        if result.ips.is_empty() {
            return Err(CniError::internal("IPAM plugin returned missing IP config"));
        }
    }
    let gws = gateway::calc(&mut result, conf);

    let br = host::ensure_bridge(sys, hnl, conf, existing_bridge)?;
    let (hveth, cont_mac) = create_veth(sys, hnl, ns, &br, conf, &req.env.ifname)?;
    undo.host_veth = Some(hveth.index);
    port::configure(hnl, &hveth, conf)?;

    let ifname = &req.env.ifname;
    let iface = container::Iface {
        name: ifname,
        v6: result.ips.iter().any(|i| i.address.is_ipv6()),
        enable_dad: conf.enable_dad,
    };
    // One setns window: the container-side socket and the interface's sysctls.
    let mut cnl = sys.enter_container(ns, iface)?;
    let cnl = &mut cnl;
    // The host end reports its peer's ifindex (IFLA_LINK): no lookup needed.
    let cidx = match hveth.link {
        Some(i) => i,
        None => {
            cnl.link_by_name(ifname)
                .ctx(|| format!("look up {ifname:?} in the container"))?
                .ok_or_else(|| {
                    CniError::internal(format!("{ifname:?} vanished from the container"))
                })?
                .index
        }
    };

    let mut interfaces = vec![
        Interface {
            name: br.name.clone(),
            mac: br.mac.map(|m| format_mac(&m)).unwrap_or_default(),
            ..Default::default()
        },
        Interface {
            name: hveth.name.clone(),
            mac: hveth.mac.map(|m| format_mac(&m)).unwrap_or_default(),
            ..Default::default()
        },
        Interface {
            name: ifname.clone(),
            mac: format_mac(&cont_mac),
            sandbox: req.env.netns.clone(),
            ..Default::default()
        },
    ];

    if conf.l3() {
        let routes = gateway::container_routes(&result);
        container::configure(cnl, cidx, ifname, &result, &routes, conf.enable_dad)?;
        if conf.is_gateway {
            let all: Vec<_> = gws.v4.iter().chain(gws.v6.iter()).cloned().collect();
            let gw_link = if conf.vlan != 0 {
                let l = port::ensure_vlan_gateway_if(hnl, &br, conf.vlan, conf.mtu)?;
                interfaces.push(Interface {
                    name: l.name.clone(),
                    mac: l.mac.map(|m| format_mac(&m)).unwrap_or_default(),
                    ..Default::default()
                });
                l
            } else {
                br.clone()
            };
            host::ensure_gateway_addrs(sys, hnl, &gw_link, &all, conf.force_address)?;
        }
    } else if !conf.disable_container_interface {
        cnl.set_up(cidx).ctx(|| format!("set {ifname:?} up"))?;
    }

    undo.firewall = true;
    let port = firewall::Port {
        bridge: &br.name,
        host_veth: &hveth.name,
        container_mac: cont_mac,
    };
    sys.firewall_setup(conf, req, &port, &result)?;

    if !conf.disable_container_interface {
        wait_port_up(sys, hnl, &hveth)?;
    }

    result.interfaces = interfaces;
    if !conf.dns.is_empty() {
        result.dns = conf.dns.clone();
    }
    Ok(result)
}

/// Creates the veth pair in one request: the host end (random `vethXXXXXXXX`, enslaved to the
/// bridge, up) and the container end created directly in the container netns under its final
/// name. Retries on a host-name collision.
fn create_veth<S: Sys>(
    sys: &mut S,
    hnl: &mut S::Links,
    ns: &NetNs,
    br: &LinkInfo,
    conf: &Conf,
    ifname: &str,
) -> Result<(LinkInfo, cni_netlink::Mac), CniError> {
    let cont_mac = conf.mac.unwrap_or_else(ids::random_mac);
    let mut last = None;
    let mut waited = false;
    for _ in 0..10 {
        let name = ids::host_veth_name();
        let v = Veth {
            name: &name,
            peer_name: ifname,
            peer_netns: Some(std::os::fd::AsFd::as_fd(ns)),
            mtu: (conf.mtu != 0).then_some(conf.mtu),
            mac: Some(ids::random_mac()),
            peer_mac: Some(cont_mac),
            master: Some(br.index),
            up: true,
        };
        match hnl.create_veth(&v) {
            Ok(l) => {
                let _ = sys.sysctl_set(&format!("net/ipv6/conf/{name}/accept_ra"), "0");
                return Ok((l, cont_mac));
            }
            // Either our random host name collided (retry), or the container name exists:
            // possibly still being deleted by a DEL that just returned (see `reaper`).
            Err(e) if e.is_exists() => {
                let host_taken = hnl
                    .link_by_name(&name)
                    .ctx(|| format!("look up {name:?}"))?
                    .is_some();
                if !host_taken {
                    if waited {
                        return Err(duplicate(ifname, ns));
                    }
                    let mut cnl = sys.open_container(ns)?;
                    wait_ifname_free(sys, &mut cnl, ifname, ns)?;
                    waited = true;
                }
                last = Some(e)
            }
            Err(e) => {
                return Err(CniError::internal(format!(
                    "failed to create veth pair {name}/{ifname} on bridge {:?}: {e}",
                    br.name
                )))
            }
        }
    }
    Err(CniError::internal(format!(
        "failed to create a veth for {ifname:?}: names kept colliding: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// The reference waits for the host port to be operationally up before returning, so the
/// first packets of the container are not lost; we poll with short sleeps instead of 50 ms.
fn wait_port_up<S: Sys>(sys: &mut S, hnl: &mut S::Links, hveth: &LinkInfo) -> Result<(), CniError> {
    let mut waited = Duration::ZERO;
    let mut step = Duration::from_millis(1);
    loop {
        let l = hnl
            .link_by_index(hveth.index)
            .ctx(|| format!("look up {:?}", hveth.name))?
            .ok_or_else(|| CniError::internal(format!("host veth {:?} vanished", hveth.name)))?;
        if l.oper_state == OperState::Up {
            return Ok(());
        }
        if waited >= Duration::from_millis(2500) {
            return Err(CniError::internal(format!(
                "bridge port in error state: {:?} ({:?} did not come up)",
                l.oper_state, hveth.name
            )));
        }
        sys.sleep(step);
        waited += step;
        step = (step * 2).min(Duration::from_millis(100));
    }
}

fn duplicate(ifname: &str, ns: &NetNs) -> CniError {
    CniError::internal(format!(
        "container veth name {ifname:?} already exists in {}; DEL the previous attachment first",
        ns.path().display()
    ))
}

/// A DEL finishes deleting its veth in the background (see `reaper`), so an ADD that follows
/// at once may still see the old name for a few milliseconds: wait briefly before calling it a
/// duplicate.
fn wait_ifname_free<S: Sys>(
    sys: &mut S,
    cnl: &mut S::Links,
    ifname: &str,
    ns: &NetNs,
) -> Result<(), CniError> {
    let mut waited = Duration::ZERO;
    loop {
        let present = cnl
            .link_by_name(ifname)
            .ctx(|| format!("look up {ifname:?} in the container"))?
            .is_some();
        if !present {
            return Ok(());
        }
        if waited >= Duration::from_millis(1500) {
            return Err(duplicate(ifname, ns));
        }
        sys.sleep(Duration::from_millis(5));
        waited += Duration::from_millis(5);
    }
}
