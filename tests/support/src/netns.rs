use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{poll_until, sh, unique};

/// How long a link deleted by a DEL's detached process may take to go. Link deletion waits for
/// the kernel's rtnl lock, which the teardown of many namespaces (an earlier test's backlog,
/// finished asynchronously by the kernel) can hold for seconds; a link that leaked never goes.
pub const DETACHED_DELETE_GRACE: Duration = Duration::from_secs(30);

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
        crate::require_root();
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

    /// Runs a command inside the netns, panicking with stderr on failure; returns stdout.
    pub fn sh(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// `busybox ping` from this netns; true when a reply came back.
    pub fn ping(&self, addr: &str) -> bool {
        self.exec(&["busybox", "ping", "-c", "1", "-W", "1", addr])
            .status
            .success()
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
    pub fn link_gone_within(&self, name: &str, timeout: Duration) -> bool {
        poll_until(timeout, || self.link(name).is_none())
    }

    /// [`Netns::link_gone_within`] the time a detached delete may take on a busy machine
    /// ([`DETACHED_DELETE_GRACE`]).
    pub fn link_gone_after_del(&self, name: &str) -> bool {
        self.link_gone_within(name, DETACHED_DELETE_GRACE)
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

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs `f` on a new thread inside the netns at `path` (sockets it creates stay in that
/// netns after it returns); a panic in `f` is the caller's.
pub fn in_netns<T: Send + 'static>(path: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = File::open(path).unwrap_or_else(|e| panic!("open netns {path}: {e}"));
    join(std::thread::spawn(move || {
        enter_netns(&file);
        f()
    }))
}

/// Runs `f` on a new thread that first unshares its network namespace. The namespace
/// disappears when the thread (and any child it spawned) exits, also when `f` panics.
pub fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    join(std::thread::spawn(move || {
        unshare_net();
        f()
    }))
}

fn join<T>(h: std::thread::JoinHandle<T>) -> T {
    match h.join() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Moves the calling thread into a new, empty network namespace.
pub fn unshare_net() {
    // SAFETY: unshare(2) only changes the calling thread's namespaces; no memory is shared.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET): {} (tests need root)",
        std::io::Error::last_os_error()
    );
}

/// Handle on the calling thread's network namespace, to move other threads into it.
pub fn current_netns() -> File {
    File::open("/proc/thread-self/ns/net").expect("open /proc/thread-self/ns/net")
}

/// Moves the calling thread into the netns `ns`.
pub fn enter_netns(ns: &File) {
    // SAFETY: `ns` is an open namespace fd; setns(2) affects only the calling thread.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// Runs `f(0)` .. `f(n - 1)` at once, each on its own thread in the calling thread's netns (a
/// race of concurrent callers); their results in that order once all have finished. A panic in
/// `f` is the caller's.
pub fn concurrently<T: Send + 'static>(
    n: usize,
    f: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let f = std::sync::Arc::new(f);
    let ns = current_netns();
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (ns, f) = (ns.try_clone().expect("dup netns fd"), f.clone());
            std::thread::spawn(move || {
                enter_netns(&ns);
                f(i)
            })
        })
        .collect();
    threads.into_iter().map(join).collect()
}
