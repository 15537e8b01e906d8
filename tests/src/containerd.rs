//! A private containerd for tests, driven with `ctr run --cni` the way a user does.
//!
//! containerd runs as the test's own daemon: its own root, state, socket and ctr namespace
//! under a temp dir, inside the test's throwaway "host" netns, and in a private mount
//! namespace where `/etc/cni/net.d` and `/opt/cni/bin` (the fixed paths `ctr run --cni`
//! reads, through go-cni's defaults) are bind mounts of the test's own directories. The mount
//! points are made on tmpfs-backed overlays of `/etc` and `/opt` inside that namespace, so the
//! machine's real directories are never touched (nor even created); `/var/lib`, where go-cni's
//! libcni keeps its result cache (`/var/lib/cni/results`), is such an overlay too. Every `ctr` runs in the
//! same mount and network namespaces (`nsenter`), because `ctr run --cni` execs the CNI
//! plugins itself: ADD when the task starts, DEL (with an empty `CNI_NETNS`) when it exits.
//!
//! Dropping the harness kills the tasks (their `ctr run` processes do the DEL), containerd and
//! its shims; the mount namespace disappears with its last process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{unique, wait_for, Netns, TempDir};

/// The image every container runs (built offline by `scripts/busybox-image.sh`).
pub const IMAGE: &str = "cnitest/busybox:latest";

pub struct Containerd {
    pub dir: TempDir,
    /// Bind-mounted on `/etc/cni/net.d` for containerd and ctr.
    pub conf_dir: PathBuf,
    /// Bind-mounted on `/opt/cni/bin`.
    pub bin_dir: PathBuf,
    /// ctr namespace (`-n`): also names runc's state dir, so it is unique.
    pub namespace: String,
    host_netns: String,
    daemon: Option<Child>,
    runs: BTreeMap<String, Child>,
    image: Option<String>,
}

impl Containerd {
    /// Starts containerd in `host` with empty conf and bin dirs (see [`Containerd::install`]).
    pub fn start(host: &Netns, prefix: &str) -> Containerd {
        let dir = TempDir::new(&format!("{prefix}ctrd"));
        let d = dir.str().to_string();
        let conf_dir = dir.path().join("net.d");
        let bin_dir = dir.path().join("bin");
        for p in [&conf_dir, &bin_dir, &dir.path().join("ovl")] {
            std::fs::create_dir_all(p).expect("create dir");
        }
        std::fs::write(
            dir.path().join("containerd.toml"),
            config(&d, "root", "state"),
        )
        .expect("write config");
        // Runs in the new mount namespace, then becomes containerd (same PID, so
        // /proc/<pid>/ns/mnt names the namespace for ctr).
        let script = format!(
            "set -e\n\
             mount -t tmpfs cnitest {d}/ovl\n\
             mkdir -p {d}/ovl/eu {d}/ovl/ew {d}/ovl/ou {d}/ovl/ow\n\
             mount -t overlay cnitest -o lowerdir=/etc,upperdir={d}/ovl/eu,workdir={d}/ovl/ew /etc\n\
             mount -t overlay cnitest -o lowerdir=/opt,upperdir={d}/ovl/ou,workdir={d}/ovl/ow /opt\n\
             mkdir -p {d}/ovl/vu {d}/ovl/vw\n\
             mount -t overlay cnitest -o lowerdir=/var/lib,upperdir={d}/ovl/vu,workdir={d}/ovl/vw /var/lib\n\
             mkdir -p /etc/cni/net.d /opt/cni/bin\n\
             mount --bind {conf} /etc/cni/net.d\n\
             mount --bind {bin} /opt/cni/bin\n\
             exec containerd --config {d}/containerd.toml\n",
            conf = conf_dir.display(),
            bin = bin_dir.display(),
        );
        let log = std::fs::File::create(dir.path().join("containerd.log")).expect("log");
        let child = std::os::unix::process::CommandExt::process_group(
            Command::new("unshare")
                .args(["--mount", "--propagation", "private", "--"])
                .arg("nsenter")
                .arg(format!("--net={}", host.path_str()))
                .args(["sh", "-c", &script])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log),
            0,
        )
        .spawn()
        .expect("spawn containerd");
        let mut c = Containerd {
            conf_dir,
            bin_dir,
            namespace: unique(&format!("{prefix}ns")),
            host_netns: host.path_str().to_string(),
            daemon: Some(child),
            runs: BTreeMap::new(),
            image: None,
            dir,
        };
        let sock = c.dir.path().join("containerd.sock");
        wait_for("containerd", Duration::from_secs(30), || {
            if let Some(Ok(Some(st))) = c.daemon.as_mut().map(|d| d.try_wait()) {
                panic!("containerd exited ({st}): {}", c.log());
            }
            sock.exists() && c.ctr(&["version"]).status.success()
        });
        c
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Links `name` → `target` in the bin dir (`/opt/cni/bin` for ctr).
    pub fn install(&self, name: &str, target: &Path) {
        let link = self.bin_dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link).expect("symlink plugin");
    }

    /// Replaces the conf dir's content with one conflist (`ctr run --cni` uses the first file).
    pub fn set_conflist(&self, conflist: &serde_json::Value) {
        for e in std::fs::read_dir(&self.conf_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_file(e.path());
        }
        std::fs::write(
            self.conf_dir.join("10-test.conflist"),
            serde_json::to_vec_pretty(conflist).expect("encode"),
        )
        .expect("write conflist");
    }

    fn ctr_cmd(&self, args: &[&str]) -> Command {
        let pid = self.daemon.as_ref().map(|d| d.id()).unwrap_or(0);
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount=/proc/{pid}/ns/mnt"))
            .arg(format!("--net={}", self.host_netns))
            .arg("ctr")
            .arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .args(["-n", &self.namespace])
            .args(args);
        c
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_cmd(args).output().expect("exec ctr")
    }

    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Imports the busybox image once; returns its reference.
    pub fn image(&mut self) -> String {
        if let Some(i) = &self.image {
            return i.clone();
        }
        let tar = self.dir.path().join("busybox.tar");
        crate::busybox_image(&tar, IMAGE);
        self.ctr_ok(&["image", "import", tar.to_str().expect("utf-8 path")]);
        let r = format!("docker.io/{IMAGE}");
        assert!(
            self.ctr_ok(&["image", "ls", "-q"]).lines().any(|l| l == r),
            "imported image {r} not listed"
        );
        self.image = Some(r.clone());
        r
    }

    /// `ctr run --rm --cni <image> <name> <cmd...>` in the background (it stays until the task
    /// exits, then runs CNI DEL and removes the container); waits until the task runs.
    pub fn run(&mut self, name: &str, cmd: &[&str]) {
        let image = self.image();
        let mut args = vec!["run", "--rm", "--cni", &image, name];
        args.extend_from_slice(cmd);
        let log = std::fs::File::create(self.dir.path().join(format!("run-{name}.log")))
            .expect("run log");
        let child = self
            .ctr_cmd(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn ctr run");
        self.runs.insert(name.to_string(), child);
        wait_for(&format!("task {name}"), Duration::from_secs(60), || {
            if let Some(Ok(Some(st))) = self.runs.get_mut(name).map(|c| c.try_wait()) {
                panic!("ctr run {name} exited ({st}): {}", self.run_log(name));
            }
            self.ctr(&["task", "ls"])
                .stdout
                .split(|b| *b == b'\n')
                .any(|l| {
                    let l = String::from_utf8_lossy(l);
                    l.split_whitespace().next() == Some(name) && l.contains("RUNNING")
                })
        });
    }

    pub fn run_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("run-{name}.log"))).unwrap_or_default()
    }

    /// `ctr task exec` in container `name`: success and stdout.
    pub fn exec(&self, name: &str, cmd: &[&str]) -> (bool, String) {
        let id = unique("x");
        let mut args = vec!["task", "exec", "--exec-id", &id, name];
        args.extend_from_slice(cmd);
        let out = self.ctr(&args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    pub fn ping(&self, name: &str, addr: &str) -> bool {
        self.exec(name, &["ping", "-c", "1", "-W", "2", addr]).0
    }

    /// The IPv4 address of the container's eth0.
    pub fn ipv4(&self, name: &str) -> String {
        let (ok, out) = self.exec(name, &["ip", "-o", "-4", "addr", "show", "eth0"]);
        assert!(ok, "ip addr in {name}");
        out.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .unwrap_or_else(|| panic!("no IPv4 address on eth0 of {name}: {out}"))
            .to_string()
    }

    /// Kills the task and waits for its `ctr run` to finish (CNI DEL, container removal).
    pub fn stop(&mut self, name: &str) {
        let _ = self.ctr(&["task", "kill", "-s", "KILL", name]);
        if let Some(mut c) = self.runs.remove(name) {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if !matches!(c.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
                panic!("ctr run {name} did not exit after its task was killed");
            }
            let st = c.wait().expect("wait ctr run");
            // ctr run reports the task's exit status (137 = SIGKILL); anything it logged
            // besides that (e.g. a failed CNI DEL) is a failure.
            let log = self.run_log(name);
            assert!(
                !log.to_lowercase().contains("error") && !log.contains("failed"),
                "ctr run {name} ({st}) logged: {log}"
            );
        }
    }
}

/// The config of a containerd of its own under `dir`: root and state in its subdirectories
/// `root` and `state`, socket `dir/containerd.sock`, no CRI, no debug or metrics listener.
pub fn config(dir: &str, root: &str, state: &str) -> String {
    format!(
        "version = 2\nroot = \"{dir}/{root}\"\nstate = \"{dir}/{state}\"\n\
         disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
         [grpc]\n  address = \"{dir}/containerd.sock\"\n\
         [ttrpc]\n  address = \"{dir}/containerd.sock.ttrpc\"\n\
         [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n"
    )
}

/// Kills (SIGKILL) the containerd shims serving the containerd of socket `sock`: they are
/// daemonized children of it, outside its process group, and may outlive it (found by the
/// socket in their command line).
pub fn kill_shims_of(sock: &Path) {
    let sock = sock.to_string_lossy();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<libc::pid_t>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.starts_with("/usr/bin/containerd-shim") && cmd.contains(&*sock) {
            // SAFETY: kill(2) by PID on a shim of a containerd the test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let names: Vec<String> = self.runs.keys().cloned().collect();
        for n in names {
            let _ = self.ctr(&["task", "kill", "-s", "KILL", &n]);
            if let Some(mut c) = self.runs.remove(&n) {
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if let Some(mut d) = self.daemon.take() {
            let pgid = d.id() as libc::pid_t;
            // SAFETY: kill(2) on the process group of our own child (process_group(0)).
            unsafe { libc::kill(-pgid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(d.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            // SAFETY: as above.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = d.wait();
        }
        kill_shims_of(&self.dir.path().join("containerd.sock"));
        // runc's state dir of our ctr namespace (the v2 shim's default root).
        let _ = std::fs::remove_dir(Path::new("/run/containerd/runc").join(&self.namespace));
        // containerd's cgroup parent of the namespace's containers.
        crate::remove_cgroup(&self.namespace);
    }
}
