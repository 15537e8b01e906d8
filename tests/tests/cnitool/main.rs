//! libcni's own CLI, `cnitool` (libcni 1.3.0, spec 1.1.0, built by scripts/cnitool.sh), drives
//! the suite on conf/40-cnitool.conflist: add, check, status, gc, del, each exit 0 with the
//! right effect. cnitool runs inside a throwaway host netns and a private mount namespace in
//! which the test's cache directory is mounted over /var/lib (cnitool has no cache-dir
//! setting: libcni's default /var/lib/cni is the only one), so the real host is untouched.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cni_tests::suite::{suite_plugin_dir, tcp_delivers};
use cni_tests::{host_local_reservations, Netns, TempDir};
use serde_json::{json, Value};

const NET: &str = "cnirs-tool";
const HOST_PORT: u16 = 18081;

/// Builds (or finds cached) cnitool; a failure fails the test.
fn cnitool() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cnitool.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .expect("run scripts/cnitool.sh");
    assert!(
        out.status.success(),
        "scripts/cnitool.sh could not build cnitool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
    assert!(p.is_file(), "cnitool.sh printed {p:?}, which is not a file");
    p
}

struct World {
    tool: PathBuf,
    host: Netns,
    ctr: Netns,
    netconf: TempDir,
    data: TempDir,
    cache: TempDir,
    plugins: cni_tests::PluginDir,
}

impl World {
    fn new() -> World {
        let w = World {
            tool: cnitool(),
            host: Netns::new("cth"),
            ctr: Netns::new("ctc"),
            netconf: TempDir::new("ctnet"),
            data: TempDir::new("ctdata"),
            cache: TempDir::new("ctcache"),
            plugins: suite_plugin_dir(),
        };
        // conf/40-cnitool.conflist with only the host-local dataDir redirected.
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/40-cnitool.conflist");
        let mut v: Value = serde_json::from_slice(&std::fs::read(src).unwrap()).unwrap();
        assert_eq!(v["name"], NET);
        assert_eq!(v["cniVersion"], "1.1.0");
        v["plugins"][0]["ipam"]["dataDir"] = json!(w.data.path());
        std::fs::write(
            w.netconf.path().join("40-cnitool.conflist"),
            serde_json::to_vec_pretty(&v).unwrap(),
        )
        .unwrap();
        w
    }

    fn run(&self, verb: &str) -> Output {
        let caps = format!(
            r#"{{"portMappings":[{{"hostPort":{HOST_PORT},"containerPort":80,"protocol":"tcp"}}]}}"#
        );
        Command::new("ip")
            .args(["netns", "exec", &self.host.name])
            .args(["unshare", "-m", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$0" /var/lib && exec "$@""#)
            .arg(self.cache.path())
            .arg(&self.tool)
            .args([verb, NET, self.ctr.path_str()])
            .env("NETCONFPATH", self.netconf.path())
            .env("CNI_PATH", self.plugins.0.path())
            .env("CAP_ARGS", caps)
            .output()
            .expect("spawn cnitool")
    }

    fn ok(&self, verb: &str) -> String {
        let out = self.run(verb);
        assert!(
            out.status.success(),
            "cnitool {verb} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn cached(&self) -> Vec<String> {
        std::fs::read_dir(self.cache.path().join("cni/results"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn add(&self) -> (String, String) {
        let r: Value = serde_json::from_str(&self.ok("add")).expect("cnitool add prints a result");
        assert_eq!(r["cniVersion"], "1.1.0");
        let ip = r["ips"][0]["address"].as_str().unwrap().to_string();
        let gw = r["ips"][0]["gateway"].as_str().unwrap().to_string();
        assert!(self.ctr.addrs("eth0").contains(&ip), "{ip} not on eth0");
        assert_eq!(self.cached().len(), 1, "libcni caches the attachment");
        (ip.split('/').next().unwrap().to_string(), gw)
    }

    fn assert_all_gone(&self, ip: &str) {
        assert!(
            self.ctr.link_gone_after_del("eth0"),
            "eth0 still in the container {:?} after DEL",
            cni_tests::DETACHED_DELETE_GRACE
        );
        assert!(host_local_reservations(self.data.path(), NET).is_empty());
        let rules = self.host.sh(&["nft", "list", "ruleset"]);
        assert!(
            !rules.contains(ip),
            "firewall/NAT state of {ip} left:\n{rules}"
        );
        assert!(
            self.cached().is_empty(),
            "cache entries left: {:?}",
            self.cached()
        );
    }
}

#[test]
fn cnitool_add_check_status_gc_del() {
    let w = World::new();
    let (ip, gw) = w.add();
    assert!(
        tcp_delivers(&w.ctr, 80, &w.host, &gw, HOST_PORT),
        "the port mapping {gw}:{HOST_PORT} -> {ip}:80 does not work"
    );
    w.ok("check");
    w.ok("status");

    // `cnitool gc` passes no valid attachments (GCNetworkList(..., nil)): libcni 1.3 counts
    // none of its cached attachments valid, DELs each (this live one too), then sends GC
    // without cni.dev/valid-attachments.
    w.ok("gc");
    w.assert_all_gone(&ip);

    // add again, del: everything goes; a gc after that finds nothing and succeeds.
    let (ip, _) = w.add();
    w.ok("check");
    w.ok("del");
    w.assert_all_gone(&ip);
    w.ok("gc");
    w.assert_all_gone(&ip);
    // DEL is idempotent through libcni too.
    w.ok("del");
}
