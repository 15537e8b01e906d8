//! Shared fixture of the portmap suite: one throwaway "host" netns per test with our bridge
//! (10.250.0.0/24, fd00:250::/64) and a "remote" netns cabled to it (host 192.168.77.1 /
//! fd77::1, remote 192.168.77.2 / fd77::2), the conflist bridge -> portmap run like a
//! runtime does, and a tiny echo (`cni-echo`) in the containers.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cni_tests::{
    bin, run, unique, with_prev_result, Call, Daemon, Netns, PluginDir, Reply, TempDir,
};
use serde_json::{json, Value};

pub const ALL_VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];
pub const HOST4: &str = "192.168.77.1";
pub const HOST6: &str = "fd77::1";
pub const REMOTE4: &str = "192.168.77.2";
pub const GW4: &str = "10.250.0.1";

pub struct Fx {
    pub host: Netns,
    pub remote: Netns,
    pub data: TempDir,
    pub cni: PluginDir,
    pub br: String,
    pub net: String,
}

/// One attachment: container netns, the bridge result and the portmap result.
pub struct Att {
    pub ctr: Netns,
    pub id: String,
    /// The portmap config of the ADD (with runtimeConfig, without prevResult).
    pub pm_conf: Value,
    pub bridge_conf: Value,
    pub result: Value,
    servers: Vec<Daemon>,
}

impl Att {
    pub fn ip4(&self) -> String {
        self.ips()
            .into_iter()
            .find(|i| !i.contains(':'))
            .expect("IPv4 in result")
    }
    pub fn ip6(&self) -> String {
        self.ips()
            .into_iter()
            .find(|i| i.contains(':'))
            .expect("IPv6 in result")
    }
    fn ips(&self) -> Vec<String> {
        let mut out = Vec::new();
        for ip in self.result["ips"].as_array().into_iter().flatten() {
            out.push(
                ip["address"]
                    .as_str()
                    .unwrap_or("")
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .to_string(),
            );
        }
        for k in ["ip4", "ip6"] {
            if let Some(a) = self.result[k]["ip"].as_str() {
                out.push(a.split('/').next().unwrap_or("").to_string());
            }
        }
        out
    }
    /// Starts an echo server for `proto` on `port` in the container.
    pub fn serve(&mut self, proto: &str, port: u16) {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ctr.name])
            .arg(bin("cni-echo"))
            .args(["serve", proto, &port.to_string()]);
        self.servers.push(Daemon::spawn(c).expect("spawn cni-echo"));
    }
}

impl Fx {
    pub fn new() -> Fx {
        let host = Netns::new("tph");
        let remote = Netns::new("tpr");
        let (a, b) = (unique("tpa"), unique("tpb"));
        host.ip(&[
            "link",
            "add",
            &a,
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            &remote.name,
        ]);
        host.ip(&["addr", "add", "192.168.77.1/24", "dev", &a]);
        host.ip(&["addr", "add", "192.168.77.3/24", "dev", &a]);
        host.ip(&["addr", "add", "fd77::1/64", "dev", &a, "nodad"]);
        host.ip(&["link", "set", &a, "up"]);
        remote.ip(&["addr", "add", "192.168.77.2/24", "dev", &b]);
        remote.ip(&["addr", "add", "fd77::2/64", "dev", &b, "nodad"]);
        remote.ip(&["link", "set", &b, "up"]);
        let cni = PluginDir::new(&[
            ("bridge", &bin("bridge")),
            ("host-local", &bin("host-local")),
            ("portmap", &bin("portmap")),
        ]);
        Fx {
            host,
            remote,
            data: TempDir::new("tpdata"),
            cni,
            br: unique("tpbr"),
            net: unique("tpnet"),
        }
    }

    pub fn bridge_conf(&self, version: &str, dual: bool) -> Value {
        let mut ranges = vec![json!([{"subnet": "10.250.0.0/24"}])];
        if dual {
            ranges.push(json!([{"subnet": "fd00:250::/64"}]));
        }
        json!({
            "cniVersion": version,
            "name": self.net,
            "type": "bridge",
            "bridge": self.br,
            "isDefaultGateway": true,
            "hairpinMode": true,
            "ipam": {"type": "host-local", "dataDir": self.data.str(), "ranges": ranges},
        })
    }

    /// The portmap entry of the conflist: `keys` plus runtimeConfig.portMappings = `ports`
    /// (none when null).
    pub fn pm_conf(&self, version: &str, keys: Value, ports: Value) -> Value {
        let mut c = json!({"cniVersion": version, "name": self.net, "type": "portmap"});
        for (k, v) in keys.as_object().into_iter().flatten() {
            c[k] = v.clone();
        }
        if !ports.is_null() {
            c["runtimeConfig"] = json!({ "portMappings": ports });
        }
        c
    }

    pub fn call(&self, plugin: &str, cmd: &str, netns: &str, id: &str, conf: &Value) -> Reply {
        let path: PathBuf = bin(plugin);
        let call = Call::in_host(&path, cmd, &self.host, self.cni.path(), netns, id);
        run(&call, &conf.to_string())
    }

    /// bridge ADD then portmap ADD (prevResult = bridge's result); returns the attachment and
    /// portmap's reply (the bridge part must succeed).
    pub fn try_attach(&self, version: &str, dual: bool, keys: Value, ports: Value) -> (Att, Reply) {
        let ctr = Netns::new("tpc");
        let id = unique("ctr");
        let bridge_conf = self.bridge_conf(version, dual);
        let br = self
            .call("bridge", "ADD", ctr.path_str(), &id, &bridge_conf)
            .expect_ok();
        let prev = br.json();
        let pm_conf = self.pm_conf(version, keys, ports);
        let reply = self.call(
            "portmap",
            "ADD",
            ctr.path_str(),
            &id,
            &with_prev_result(&pm_conf, &prev),
        );
        let att = Att {
            ctr,
            id,
            pm_conf,
            bridge_conf,
            result: prev,
            servers: Vec::new(),
        };
        (att, reply)
    }

    pub fn attach(&self, keys: Value, ports: Value) -> Att {
        let (att, reply) = self.try_attach("1.0.0", true, keys, ports);
        let reply = reply.expect_ok();
        assert_eq!(
            reply.json(),
            att.result,
            "portmap passes prevResult through"
        );
        att
    }

    /// portmap `cmd` for the attachment, as a runtime sends it (prevResult = the result).
    pub fn portmap(&self, cmd: &str, att: &Att, netns: &str) -> Reply {
        let conf = with_prev_result(&att.pm_conf, &att.result);
        self.call("portmap", cmd, netns, &att.id, &conf)
    }

    /// The runtime's DEL of the conflist: portmap, then bridge.
    pub fn detach(&self, att: &Att) {
        self.portmap("DEL", att, att.ctr.path_str()).expect_ok();
        let conf = with_prev_result(&att.bridge_conf, &att.result);
        self.call("bridge", "DEL", att.ctr.path_str(), &att.id, &conf)
            .expect_ok();
    }

    /// `nft list table inet cni_rs_ports` in the host ("" when there is none).
    pub fn table(&self) -> String {
        let out = self
            .host
            .exec(&["nft", "-s", "list", "table", "inet", "cni_rs_ports"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// How many elements carry the owner tag of `att`.
    pub fn owned(&self, att: &Att) -> usize {
        self.table()
            .matches(&format!("comment \"{} {} eth0\"", self.net, att.id))
            .count()
    }

    /// The nf_tables generation of the host netns: +1 per committed transaction.
    pub fn genid(&self) -> u32 {
        cni_tests::in_netns(self.host.path_str(), || {
            let mut s = cni_nft::NftSocket::new().expect("nft socket");
            cni_nft::query::generation(&mut s).expect("generation")
        })
    }
}

/// `cni-echo send` from `ns`: the answer (`<msg> from <peer>`), retried until `wait` passes
/// (addresses may still be settling); `None` when nothing answered.
pub fn send(ns: &Netns, proto: &str, addr: &str, port: u16, wait: Duration) -> Option<String> {
    let deadline = Instant::now() + wait;
    loop {
        let out = ns.exec(&[
            bin("cni-echo").to_str().expect("utf-8"),
            "send",
            proto,
            addr,
            &port.to_string(),
            "hi",
        ]);
        if out.status.success() {
            return Some(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Expects an answer and returns the peer address the container saw.
pub fn reach(ns: &Netns, proto: &str, addr: &str, port: u16) -> String {
    let a = send(ns, proto, addr, port, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{proto} {addr}:{port} did not answer from {}", ns.name));
    a.strip_prefix("hi from ")
        .unwrap_or_else(|| panic!("odd answer {a:?}"))
        .to_string()
}

/// Expects no answer (one attempt).
pub fn unreachable(ns: &Netns, proto: &str, addr: &str, port: u16) {
    if let Some(a) = send(ns, proto, addr, port, Duration::ZERO) {
        panic!("{proto} {addr}:{port} answered {a:?} from {}", ns.name);
    }
}

pub fn tcp(host_port: u16, container_port: u16) -> Value {
    json!({"hostPort": host_port, "containerPort": container_port, "protocol": "tcp"})
}
