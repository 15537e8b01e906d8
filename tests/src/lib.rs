//! Helpers for integration tests and benchmarks: locate the built binaries, create throwaway
//! network namespaces (removed on drop, also when a test fails), and run plugins exactly as a
//! runtime does (CNI_* env + JSON on stdin), optionally inside a throwaway "host" netns so
//! bridges and nftables state never touch the real host.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

pub mod bench;
pub mod chain;
pub mod cluster;
pub mod containerd;
pub mod etcd_http;
pub mod interrupt;
pub mod libcni;
pub mod podman;
pub mod suite;

pub use test_support::{
    drift, have, in_netns, nft_set_members, percentile, poll_until, remove_cgroup, require,
    require_root, sh, tenths, trend_drift, unique, wait_for, Daemon, Netns, TempDir,
    DETACHED_DELETE_GRACE,
};

/// Builds the tests' busybox image archive at `tar` (docker-archive format, for `ctr image
/// import`, `docker load` and `podman load`) with `scripts/busybox-image.sh`: offline, from
/// Debian's busybox-static.
pub fn busybox_image(tar: &Path, tag: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/busybox-image.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(tar)
        .arg(tag)
        .output()
        .expect("run busybox-image.sh");
    assert!(out.status.success(), "busybox-image.sh: {out:?}");
}

/// The directory holding the built binaries (`target/<profile>`), derived from the running
/// test executable (`target/<profile>/deps/<test>`), or `CNI_TEST_BIN_DIR`.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("CNI_TEST_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a built plugin binary; panics with the fix when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not found: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        p.display()
    );
    p
}

/// Debian's reference plugins (package containernetworking-plugins).
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// One plugin invocation, as a runtime makes it.
pub struct Call<'a> {
    pub plugin: &'a Path,
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub cni_path: &'a str,
    pub args: &'a str,
    /// Run the plugin inside this netns (a throwaway "host").
    pub host: Option<&'a Netns>,
    pub extra_env: &'a [(&'a str, &'a str)],
}

impl<'a> Call<'a> {
    pub fn new(plugin: &'a Path, command: &'a str) -> Call<'a> {
        Call {
            plugin,
            command,
            container_id: "",
            netns: "",
            ifname: "",
            cni_path: "",
            args: "",
            host: None,
            extra_env: &[],
        }
    }

    /// A call for `container_id` (ifname `eth0`) in `netns`, run inside the throwaway host
    /// `host` with `cni_path` as CNI_PATH: the call of every chained-plugin test and bench.
    pub fn in_host(
        plugin: &'a Path,
        command: &'a str,
        host: &'a Netns,
        cni_path: &'a str,
        netns: &'a str,
        container_id: &'a str,
    ) -> Call<'a> {
        Call {
            container_id,
            netns,
            ifname: "eth0",
            cni_path,
            host: Some(host),
            ..Call::new(plugin, command)
        }
    }
}

thread_local! {
    /// The netns (device, inode) this thread moved into for good with [`stay_in_netns`].
    static HOME: std::cell::Cell<Option<(u64, u64)>> = const { std::cell::Cell::new(None) };
}

fn netns_id(netns: &File) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = netns.metadata().expect("stat netns");
    (m.dev(), m.ino())
}

/// Moves the calling thread into `netns` for the rest of its life. [`spawn_in_netns`] into that
/// netns from this thread then spawns directly, with no helper thread: what a runtime living
/// in the host netns pays per call. For benchmark drivers, whose figures should be the
/// plugins' and not the harness's.
pub fn stay_in_netns(netns: &File) {
    test_support::enter_netns(netns);
    HOME.set(Some(netns_id(netns)));
}

/// Spawns `cmd` with its child in the network namespace `netns` (an open nsfs file).
///
/// The spawn happens on a short-lived thread that has entered `netns` itself (a thread's
/// network namespace is its own, and a child inherits it), so `Command` keeps its
/// `posix_spawn` (vfork-like) path, as Go runtimes do. A `pre_exec` hook would force a
/// `fork` that copies the whole test process's page tables on every call: in a long run
/// that cost grows with the process and dominated the soak's cycle times.
pub fn spawn_in_netns(cmd: &mut Command, netns: &File) -> std::io::Result<std::process::Child> {
    if HOME.get().is_some_and(|home| home == netns_id(netns)) {
        return cmd.spawn();
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            test_support::enter_netns(netns);
            cmd.spawn()
        })
        .join()
        .expect("spawn thread panicked")
    })
}

/// What a plugin printed.
#[derive(Debug)]
pub struct Reply {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }
    pub fn ok(&self) -> bool {
        self.code == 0
    }
    /// Asserts failure and returns (code, msg) of the error JSON.
    pub fn err(&self) -> (u64, String) {
        assert_ne!(
            self.code, 0,
            "expected failure, got success: {}",
            self.stdout
        );
        let v = self.json();
        (
            v["code"].as_u64().expect("error code"),
            v["msg"].as_str().unwrap_or("").to_string(),
        )
    }
    /// Asserts success, with the error in the panic message.
    pub fn expect_ok(self) -> Reply {
        assert_eq!(
            self.code, 0,
            "plugin failed: stdout={} stderr={}",
            self.stdout, self.stderr
        );
        self
    }
}

pub fn run(call: &Call<'_>, stdin: &str) -> Reply {
    let mut cmd = Command::new(call.plugin);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_NETNS", call.netns)
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_PATH", call.cni_path)
        .env("CNI_ARGS", call.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in call.extra_env {
        cmd.env(k, v);
    }
    let host_file = call
        .host
        .map(|h| File::open(&h.path).expect("open host netns"));
    let mut child = match &host_file {
        Some(f) => spawn_in_netns(&mut cmd, f),
        None => cmd.spawn(),
    }
    .expect("spawn plugin");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .ok();
    let out = child.wait_with_output().expect("wait plugin");
    Reply {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A CNI_PATH directory containing symlinks to the given binaries, removed on drop — so a test
/// can combine our plugins with the reference ones under the names a conflist uses.
pub struct PluginDir(pub TempDir);

impl PluginDir {
    pub fn new(links: &[(&str, &Path)]) -> PluginDir {
        let d = TempDir::new("cnibin");
        for (name, target) in links {
            std::os::unix::fs::symlink(target, d.path().join(name)).expect("symlink plugin");
        }
        PluginDir(d)
    }
    /// Copies of the binaries instead of symlinks, as an install makes them: a benchmark then
    /// runs every implementation from files written the same way (a freshly linked file sits
    /// in the page cache differently from a copied one, and start-up pays for it in faults).
    pub fn copies(files: &[(&str, &Path)]) -> PluginDir {
        let d = TempDir::new("cnibin");
        for (name, src) in files {
            std::fs::copy(src, d.path().join(name)).unwrap_or_else(|e| {
                panic!("copy {} into the bench's CNI_PATH: {e}", src.display())
            });
        }
        PluginDir(d)
    }
    pub fn path(&self) -> &str {
        self.0.str()
    }
}

// ---------------------------------------------------------------------------------------------
// Inspection helpers: what a plugin left in a namespace, on disk, or in nftables.
// ---------------------------------------------------------------------------------------------

/// Every string found in the elements of every set and map of an `nft -j` ruleset (keys,
/// values, and the `val` of commented elements), so a test can ask "is this IP in any set?".
pub fn nft_set_elements(ruleset: &Value) -> Vec<String> {
    fn strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            Value::Object(o) => o
                .iter()
                .filter(|(k, _)| k.as_str() != "comment")
                .for_each(|(_, x)| strings(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for item in ruleset["nftables"].as_array().into_iter().flatten() {
        for kind in ["set", "map"] {
            if let Some(elem) = item[kind].get("elem") {
                strings(elem, &mut out);
            }
        }
    }
    out
}

/// host-local's reservations of `network` under `data_dir`: the files named by an IP.
pub fn host_local_reservations(
    data_dir: &Path,
    network: &str,
) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(data_dir.join(network))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The network config a runtime sends for CHECK/DEL of a conflist: the ADD config plus the
/// cached result as `prevResult`.
pub fn with_prev_result(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}
