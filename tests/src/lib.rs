//! Helpers for integration tests and benchmarks: locate the built binaries, create throwaway
//! network namespaces (removed on drop, also when a test fails), and run plugins exactly as a
//! runtime does (CNI_* env + JSON on stdin), optionally inside a throwaway "host" netns so
//! bridges and nftables state never touch the real host.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

pub mod bench;
pub mod chain;
pub mod cluster;
pub mod containerd;
pub mod etcd_http;
pub mod interrupt;
pub mod libcni;
pub mod suite;

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

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique short name: `<prefix><pid mod 1e5><counter>`, so parallel tests and test binaries
/// never collide, and interface names built from it stay within 15 characters.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}{n}", std::process::id() % 100_000)
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    pub name: String,
    pub path: PathBuf,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        Netns::named(&unique(prefix))
    }

    /// A netns of exactly this name (e.g. CRI's `cni-<uuid>`).
    pub fn named(name: &str) -> Netns {
        let name = name.to_string();
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns {
            path: PathBuf::from(format!("/run/netns/{name}")),
            name,
        };
        // Loopback up so local tools behave; the plugins never rely on it.
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("utf-8 path")
    }

    /// `ip -n <ns> ARGS...`, panicking with stderr on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// `ip -j -n <ns> ARGS...` parsed as JSON.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut v = vec!["ip", "-j", "-n", &self.name];
        v.extend_from_slice(args);
        serde_json::from_str(&sh(&v)).unwrap_or(Value::Null)
    }

    /// Runs any command inside the netns; returns the raw output (does not panic).
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("spawn ip netns exec")
    }

    /// `busybox ping` from this netns; true when a reply came back.
    pub fn ping(&self, addr: &str) -> bool {
        self.exec(&["busybox", "ping", "-c", "1", "-W", "1", addr])
            .status
            .success()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs a command, panicking with its stderr when it fails; returns stdout.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let p = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn str(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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

/// Makes the child of `cmd` enter the network namespace `netns` (an open nsfs file, which
/// must stay open until the spawn) before it execs.
pub fn setns_before_exec(cmd: &mut Command, netns: &File) {
    let fd = netns.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only calls setns(2),
    // which is async-signal-safe; `fd` stays open in the child (inherited, not CLOEXEC'd
    // until exec).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
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
    if let Some(f) = &host_file {
        setns_before_exec(&mut cmd, f);
    }
    let mut child = cmd.spawn().expect("spawn plugin");
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
    pub fn path(&self) -> &str {
        self.0.str()
    }
}

// ---------------------------------------------------------------------------------------------
// Inspection helpers: what a plugin left in a namespace, on disk, or in nftables.
// ---------------------------------------------------------------------------------------------

impl Netns {
    /// Runs a command inside the netns, panicking with stderr on failure; returns stdout.
    pub fn sh(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// Names of every link in the netns.
    pub fn link_names(&self) -> std::collections::BTreeSet<String> {
        self.ip_json(&["link", "show"])
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["ifname"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `ip -j -d link show dev NAME`, or None when the link does not exist.
    pub fn link(&self, name: &str) -> Option<Value> {
        let out = Command::new("ip")
            .args(["-j", "-d", "-n", &self.name, "link", "show", "dev", name])
            .output()
            .expect("spawn ip");
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?.first().cloned()
    }

    /// Whether link `name` is gone within `timeout`. Plugins delete veths in a detached
    /// process (the kernel's RCU wait would otherwise be on the DEL path), so a DEL returns
    /// before the link is gone.
    pub fn link_gone_within(&self, name: &str, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.link(name).is_none() {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Global (non link-local) addresses of `dev` as "ip/prefix"; empty when `dev` is absent.
    pub fn addrs(&self, dev: &str) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-j", "-n", &self.name, "addr", "show", "dev", dev])
            .output()
            .expect("spawn ip");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let mut res = Vec::new();
        for l in v.as_array().into_iter().flatten() {
            for a in l["addr_info"].as_array().into_iter().flatten() {
                if a["scope"] == "global" {
                    res.push(format!(
                        "{}/{}",
                        a["local"].as_str().unwrap_or(""),
                        a["prefixlen"]
                    ));
                }
            }
        }
        res
    }

    /// The netns's whole nftables ruleset as `nft -j` prints it.
    pub fn nft_ruleset(&self) -> Value {
        serde_json::from_str(&self.sh(&["nft", "-j", "list", "ruleset"])).unwrap_or(Value::Null)
    }
}

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

/// A background process in its own process group, terminated (SIGTERM, then SIGKILL after
/// `grace`) together with everything it spawned when dropped, also when a test panics.
pub struct Daemon {
    pub child: std::process::Child,
    pub grace: std::time::Duration,
}

impl Daemon {
    pub fn spawn(mut cmd: Command) -> std::io::Result<Daemon> {
        cmd.process_group(0);
        Ok(Daemon {
            child: cmd.spawn()?,
            grace: std::time::Duration::from_secs(10),
        })
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's process group (created by `process_group(0)`);
        // no memory is shared with the callee.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + self.grace;
        while std::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // SAFETY: as above; SIGKILL whatever of the group is left (helpers of the daemon).
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Runs `f` on a new thread inside the netns at `path` (sockets it creates stay in that
/// netns after it returns).
pub fn in_netns<T: Send + 'static>(path: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = File::open(path).unwrap_or_else(|e| panic!("open netns {path}: {e}"));
    std::thread::spawn(move || {
        // SAFETY: setns(2) on a valid open netns fd, affecting only this new thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("netns thread")
}
