//! The link attributes tuning changes, one netlink request each, so a failure names the
//! attribute and a rollback knows exactly what was applied.

use cni_core::CniError;
use cni_netlink::{fmt_mac, LinkInfo, LinkUpdate, Mac, Netlink};

use crate::config::Conf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    Mac(Mac),
    Promisc(bool),
    Mtu(u32),
    Allmulti(bool),
    TxQLen(u32),
}

impl Attr {
    /// The configured changes, in the reference's order (MAC, promisc, MTU, allmulti, txQLen).
    pub fn wanted(conf: &Conf) -> Vec<Attr> {
        let mut v = Vec::new();
        if let Some((_, m)) = conf.mac {
            v.push(Attr::Mac(m));
        }
        if conf.promisc {
            v.push(Attr::Promisc(true));
        }
        if let Some(m) = conf.mtu {
            v.push(Attr::Mtu(m));
        }
        if let Some(a) = conf.allmulti {
            v.push(Attr::Allmulti(a));
        }
        if let Some(q) = conf.txqlen {
            v.push(Attr::TxQLen(q));
        }
        v
    }

    /// The same attribute as the link has it now.
    pub fn current(self, link: &LinkInfo) -> Attr {
        match self {
            Attr::Mac(_) => Attr::Mac(link.mac.unwrap_or_default()),
            Attr::Promisc(_) => Attr::Promisc(link.is_promisc()),
            Attr::Mtu(_) => Attr::Mtu(link.mtu),
            Attr::Allmulti(_) => Attr::Allmulti(link.is_allmulti()),
            Attr::TxQLen(_) => Attr::TxQLen(link.txqlen),
        }
    }

    /// The netlink change that sets this attribute.
    pub fn update(self) -> LinkUpdate<'static> {
        let mut u = LinkUpdate::default();
        match self {
            Attr::Mac(m) => u.mac = Some(m),
            Attr::Promisc(p) => u.promisc = Some(p),
            Attr::Mtu(m) => u.mtu = Some(m),
            Attr::Allmulti(a) => u.allmulti = Some(a),
            Attr::TxQLen(q) => u.txqlen = Some(q),
        }
        u
    }

    pub fn describe(self) -> String {
        match self {
            Attr::Mac(m) => format!("MAC address {}", fmt_mac(&m)),
            Attr::Promisc(p) => format!("promiscuous mode {}", on_off(p)),
            Attr::Mtu(m) => format!("MTU {m}"),
            Attr::Allmulti(a) => format!("all-multicast mode {}", on_off(a)),
            Attr::TxQLen(q) => format!("transmit queue length {q}"),
        }
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// Sets one attribute unless the link already has it.
pub fn set(nl: &mut Netlink, link: &LinkInfo, attr: Attr, ifname: &str) -> Result<bool, CniError> {
    if attr.current(link) == attr {
        return Ok(false);
    }
    nl.update_link(link.index, &attr.update()).map_err(|e| {
        CniError::internal(format!(
            "failed to set {} on {ifname:?}: {e}",
            attr.describe()
        ))
    })?;
    Ok(true)
}
