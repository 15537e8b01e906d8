//! Shared fixture of the bridge suite: one throwaway "host" netns per test (bridges, sysctls
//! and nftables never touch the real host), a CNI_PATH with our bridge and an IPAM, a private
//! host-local dataDir, and helpers to ADD/CHECK/DEL like a runtime running a conflist.

use std::collections::BTreeSet;
use std::path::PathBuf;

use cni_tests::{
    bin, host_local_reservations, nft_set_elements, run, unique, with_prev_result, Call, Netns,
    PluginDir, Reply, TempDir, REFERENCE_DIR,
};
use serde_json::{json, Value};

pub const ALL_VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// Debian's reference host-local (speaks cniVersion <= 1.0.0 only).
pub fn reference_ipam() -> PathBuf {
    PathBuf::from(REFERENCE_DIR).join("host-local")
}

/// Our host-local.
pub fn ipam() -> PathBuf {
    bin("host-local")
}

/// One test's world.
pub struct Fx {
    pub host: Netns,
    pub data: TempDir,
    pub cni: PluginDir,
    pub bridge_bin: PathBuf,
    /// Bridge and network names, unique so parallel tests never share host-local state.
    pub br: String,
    pub net: String,
}

/// One attachment made by [`Fx::attach`]: its container netns and the ADD it came from.
pub struct Att {
    pub ctr: Netns,
    pub id: String,
    pub ifname: String,
    pub conf: Value,
    pub result: Value,
}

impl Att {
    /// The attachment's addresses from the result (any version), without prefix.
    pub fn ips(&self) -> Vec<String> {
        result_ips(&self.result)
    }
    pub fn ip4(&self) -> String {
        self.ips()
            .into_iter()
            .find(|i| !i.contains(':'))
            .expect("an IPv4 address in the result")
    }
    pub fn ip6(&self) -> String {
        self.ips()
            .into_iter()
            .find(|i| i.contains(':'))
            .expect("an IPv6 address in the result")
    }
    /// The host end of the veth, from the result.
    pub fn host_veth(&self) -> String {
        self.result["interfaces"][1]["name"]
            .as_str()
            .expect("host veth in result")
            .to_string()
    }
}

/// Addresses (without prefix) of a result in any version's shape.
pub fn result_ips(r: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for ip in r["ips"].as_array().into_iter().flatten() {
        out.push(strip_prefix(ip["address"].as_str().unwrap_or("")));
    }
    for k in ["ip4", "ip6"] {
        if let Some(a) = r[k]["ip"].as_str() {
            out.push(strip_prefix(a));
        }
    }
    out
}

pub fn strip_prefix(cidr: &str) -> String {
    cidr.split('/').next().unwrap_or("").to_string()
}

/// What a test checks is unchanged by a failed or undone call.
#[derive(Debug, PartialEq, Eq)]
pub struct State {
    pub host_links: BTreeSet<String>,
    pub reservations: BTreeSet<String>,
    pub nft_elements: Vec<String>,
}

impl Fx {
    /// Our bridge with [`ipam`] as host-local.
    pub fn new() -> Fx {
        Fx::with_ipam(ipam())
    }

    pub fn with_ipam(ipam: PathBuf) -> Fx {
        let bridge_bin = bin("bridge");
        let cni = PluginDir::new(&[("bridge", &bridge_bin), ("host-local", &ipam)]);
        Fx {
            host: Netns::new("tbh"),
            data: TempDir::new("tbdata"),
            cni,
            bridge_bin,
            br: unique("tbr"),
            net: unique("tnet"),
        }
    }

    /// A network config: `cniVersion`, `name`, `type`, `bridge`, then `keys` (bridge keys, may
    /// override the bridge name), and a host-local `ipam` with `ipam_keys` (ranges, routes...)
    /// unless `ipam_keys` is null (L2-only bridge).
    pub fn conf(&self, version: &str, keys: Value, ipam_keys: Value) -> Value {
        let mut c = json!({
            "cniVersion": version,
            "name": self.net,
            "type": "bridge",
            "bridge": self.br,
        });
        for (k, v) in keys.as_object().into_iter().flatten() {
            c[k] = v.clone();
        }
        if !ipam_keys.is_null() {
            let mut ipam = json!({"type": "host-local", "dataDir": self.data.str()});
            for (k, v) in ipam_keys.as_object().into_iter().flatten() {
                ipam[k] = v.clone();
            }
            c["ipam"] = ipam;
        }
        c
    }

    /// Runs the bridge plugin in the host netns.
    pub fn call(
        &self,
        command: &str,
        netns: &str,
        id: &str,
        ifname: &str,
        conf: &Value,
        args: &str,
    ) -> Reply {
        let call = Call {
            container_id: id,
            netns,
            ifname,
            cni_path: self.cni.path(),
            args,
            host: Some(&self.host),
            ..Call::new(&self.bridge_bin, command)
        };
        let reply = run(&call, &conf.to_string());
        if command == "DEL" && reply.ok() {
            self.settle_del(netns, ifname, conf);
        }
        reply
    }

    /// DEL returns before the kernel has finished deleting the veth (the plugin deletes it in a
    /// detached process): wait until the container end and the prevResult's host end are gone,
    /// so assertions about links see the final state.
    fn settle_del(&self, netns: &str, ifname: &str, conf: &Value) {
        let host_veth = conf["prevResult"]["interfaces"][1]["name"]
            .as_str()
            .map(str::to_string);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let ctr_gone = netns.is_empty()
                || !std::path::Path::new(netns).exists()
                || !cni_tests::sh(&[
                    "ip",
                    "-n",
                    netns.rsplit('/').next().unwrap_or(""),
                    "-o",
                    "link",
                    "show",
                ])
                .lines()
                .any(|l| {
                    l.split(':')
                        .nth(1)
                        .map(|n| n.trim().split('@').next() == Some(ifname))
                        .unwrap_or(false)
                });
            let host_gone = host_veth
                .as_deref()
                .map(|v| self.host.link(v).is_none())
                .unwrap_or(true);
            if (ctr_gone && host_gone) || std::time::Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// ADD in a fresh container netns; panics (with the plugin's error) when it fails.
    pub fn attach(&self, conf: &Value) -> Att {
        self.attach_as(conf, "eth0")
    }

    pub fn attach_as(&self, conf: &Value, ifname: &str) -> Att {
        let ctr = Netns::new("tbc");
        let id = unique("ctr");
        let r = self
            .call("ADD", ctr.path_str(), &id, ifname, conf, "")
            .expect_ok();
        Att {
            ctr,
            id,
            ifname: ifname.to_string(),
            conf: conf.clone(),
            result: r.json(),
        }
    }

    /// The config libcni sends for CHECK/DEL: with the cached result as prevResult from 0.4.0.
    pub fn conf_with_prev(&self, att: &Att) -> Value {
        let v = att.conf["cniVersion"].as_str().unwrap_or("");
        if ["0.1.0", "0.2.0", "0.3.0", "0.3.1"].contains(&v) {
            att.conf.clone()
        } else {
            with_prev_result(&att.conf, &att.result)
        }
    }

    pub fn check(&self, att: &Att) -> Reply {
        let c = self.conf_with_prev(att);
        self.call("CHECK", att.ctr.path_str(), &att.id, &att.ifname, &c, "")
    }

    pub fn del(&self, att: &Att) -> Reply {
        let c = self.conf_with_prev(att);
        self.call("DEL", att.ctr.path_str(), &att.id, &att.ifname, &c, "")
    }

    pub fn reservations(&self) -> BTreeSet<String> {
        host_local_reservations(self.data.path(), &self.net)
    }

    /// Every string in the host netns's nftables set/map elements.
    pub fn nft_elements(&self) -> Vec<String> {
        nft_set_elements(&self.host.nft_ruleset())
    }

    pub fn state(&self) -> State {
        State {
            host_links: self.host.link_names(),
            reservations: self.reservations(),
            nft_elements: self.nft_elements(),
        }
    }

    /// Live MAC of a host-netns link.
    pub fn mac(&self, link: &str) -> String {
        self.host.link(link).expect("link exists")["address"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

/// host-local `ranges` for one subnet per family given.
pub fn ranges(subnets: &[&str]) -> Value {
    Value::Array(
        subnets
            .iter()
            .map(|s| json!([{"subnet": s}]))
            .collect::<Vec<_>>(),
    )
}

/// Pings from `ns` until one reply, at most `tries` times (the first packet may race the
/// neighbour discovery of a just-configured link).
pub fn ping_ok(ns: &Netns, addr: &str, tries: u32) -> bool {
    (0..tries).any(|_| ns.ping(addr))
}

/// Asserts the plugin failed with `code` and a message containing `needle`.
pub fn assert_err(r: &Reply, code: u64, needle: &str) {
    let (c, msg) = r.err();
    assert_eq!(
        c, code,
        "wrong error code for {msg:?} (stderr: {})",
        r.stderr
    );
    assert!(
        msg.contains(needle),
        "error {msg:?} does not mention {needle:?}"
    );
}

/// The container netns has no link but lo.
pub fn assert_empty_netns(ns: &Netns) {
    let links = ns.link_names();
    assert_eq!(
        links,
        BTreeSet::from(["lo".to_string()]),
        "container netns {} still has links",
        ns.name
    );
}
