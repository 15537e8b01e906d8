//! End-to-end harness: a private dockerd (Debian's docker.io, its own containerd, data-root,
//! exec-root, pidfile and API socket under a temp dir), running with the shim inside a private
//! network namespace, so docker0, the bridges, iptables and nftables state of the test never
//! touch the host. Everything is removed on drop, also when a test panics.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cni_tests::{bin, bin_dir, unique, wait_for, Daemon, Netns, TempDir};
use serde_json::Value;

pub const IMAGE: &str = "cnmtest/busybox:latest";

/// One dockerd at a time per test binary: a dockerd start costs seconds of CPU on a
/// 2-core machine, and the docker CLI has no retry on slow daemons.
static SERIAL: Mutex<()> = Mutex::new(());

/// Fails the test, naming the fix, when the machine cannot run the end-to-end tests: a missing
/// dependency is a failure (CI installs them all), never a silent pass.
pub fn require() {
    cni_tests::require(&[
        "dockerd",
        "containerd",
        "docker",
        "nsenter",
        "busybox",
        "curl",
    ]);
}

/// Debian's docker.io CLI (matches the 20.10 daemon: a newer CLI refuses e.g. `--mac-address`
/// against API 1.41); any `docker` on PATH otherwise.
pub fn docker_cli() -> &'static str {
    if Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    }
}

/// A dockerd + cnm-shim world.
pub struct World {
    pub name: String,
    pub ns: Arc<Netns>,
    pub dir: TempDir,
    /// A private mount namespace (bind-mounted file) shared by this world's containerd,
    /// dockerd and shim, with its own tmpfs on /run/docker/plugins: several worlds then each
    /// see only their own shim under one plugin name.
    mnt: Option<PathBuf>,
    containerd: Option<Daemon>,
    dockerd: Option<Daemon>,
    shim: Option<Daemon>,
    /// Extra cnm-shim flags (e.g. `--cni-conf-dir`), set before `start_shim`.
    pub shim_extra: Vec<String>,
    _serial: Option<MutexGuard<'static, ()>>,
}

impl World {
    pub fn new(tag: &str) -> World {
        let mut w = World::without_shim(tag);
        w.start_shim();
        w
    }

    /// containerd + dockerd + image, no shim yet.
    pub fn without_shim(tag: &str) -> World {
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let name = unique(&format!("cnm{tag}"));
        let ns = Arc::new(Netns::new(&format!("cnm{tag}")));
        let mut w = World::unstarted(tag, name, ns, Vec::new(), Some(serial));
        w.start_docker();
        w
    }

    /// One of several worlds of a test ("hosts"): containerd + dockerd + image in the given
    /// netns and in a private mount namespace, the shim (plugin `name`, the same on every
    /// host) started with `shim_extra`.
    pub fn on_host(tag: &str, name: &str, ns: Arc<Netns>, shim_extra: &[String]) -> World {
        let mut w = World::unstarted(tag, name.to_string(), ns, shim_extra.to_vec(), None);
        w.private_mounts();
        w.start_docker();
        w.start_shim();
        w
    }

    /// Nothing running yet: only the world's directory exists.
    fn unstarted(
        tag: &str,
        name: String,
        ns: Arc<Netns>,
        shim_extra: Vec<String>,
        serial: Option<MutexGuard<'static, ()>>,
    ) -> World {
        World {
            name,
            ns,
            dir: TempDir::new(&format!("cnm{tag}")),
            mnt: None,
            containerd: None,
            dockerd: None,
            shim: None,
            shim_extra,
            _serial: serial,
        }
    }

    /// containerd, dockerd and the test image.
    fn start_docker(&mut self) {
        self.start_containerd();
        self.start_dockerd();
        self.load_image();
    }

    /// A persistent mount namespace (its nsfs bind-mounted on a file of the world's dir,
    /// which must sit on a private mount) with a tmpfs over /run/docker/plugins.
    fn private_mounts(&mut self) {
        let d = self.path("mnt");
        std::fs::create_dir_all(&d).unwrap();
        let ds = d.to_str().unwrap();
        cni_tests::sh(&["mount", "--bind", ds, ds]);
        cni_tests::sh(&["mount", "--make-private", ds]);
        let f = d.join("ns");
        std::fs::write(&f, b"").unwrap();
        let fs = format!("--mount={}", f.display());
        cni_tests::sh(&["unshare", &fs, "--propagation", "private", "true"]);
        std::fs::create_dir_all("/run/docker/plugins").unwrap();
        cni_tests::sh(&[
            "nsenter",
            &fs,
            "mount",
            "-t",
            "tmpfs",
            "cnmplugins",
            "/run/docker/plugins",
        ]);
        self.mnt = Some(f);
    }

    /// Where the test process reaches the shim's socket (through the shim's mount namespace).
    fn socket_seen(&self) -> PathBuf {
        match (&self.mnt, &self.shim) {
            (Some(_), Some(s)) => PathBuf::from(format!(
                "/proc/{}/root{}",
                s.child.id(),
                self.socket().display()
            )),
            _ => self.socket(),
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn socket(&self) -> PathBuf {
        PathBuf::from(format!("/run/docker/plugins/{}.sock", self.name))
    }

    fn in_ns(&self, program: &Path) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.ns.path_str()));
        if let Some(m) = &self.mnt {
            c.arg(format!("--mount={}", m.display()));
        }
        c.arg(program);
        c
    }

    fn start_containerd(&mut self) {
        let conf = cni_tests::containerd::config(self.dir.str(), "ctrd", "ctrd-state");
        std::fs::write(self.path("containerd.toml"), conf).unwrap();
        let mut c = match &self.mnt {
            // dockerd mounts the containers' root filesystems in its mount namespace, where
            // containerd (runc) must see them.
            Some(m) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--mount={}", m.display())).arg("containerd");
                c
            }
            None => Command::new("containerd"),
        };
        c.arg("--config").arg(self.path("containerd.toml"));
        self.containerd = Some(Daemon::spawn_logged(c, &self.path("containerd.log")));
        let sock = self.path("containerd.sock");
        wait_for("containerd", Duration::from_secs(30), || sock.exists());
    }

    pub fn start_dockerd(&mut self) {
        self.start_dockerd_with(&[]);
    }

    /// Starts dockerd with extra daemon flags (e.g. `--live-restore`).
    pub fn start_dockerd_with(&mut self, extra: &[&str]) {
        let mut c = self.in_ns(Path::new("/usr/sbin/dockerd"));
        c.arg("--data-root")
            .arg(self.path("data"))
            .arg("--exec-root")
            .arg(self.path("exec"))
            .arg("--pidfile")
            .arg(self.path("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", self.path("docker.sock").display()))
            .arg("--containerd")
            .arg(self.path("containerd.sock"))
            .arg("--cgroup-parent")
            .arg(self.cgroup_parent())
            .args(extra);
        self.dockerd = Some(Daemon::spawn_logged(c, &self.path("dockerd.log")));
        wait_for("dockerd", Duration::from_secs(60), || {
            self.docker(&["version", "--format", "{{.Server.Version}}"])
                .status
                .success()
        });
    }

    /// The cgroup dockerd puts the world's containers under (not the host's `/docker`), named
    /// after the world's unique directory and removed with the world.
    fn cgroup_parent(&self) -> String {
        self.dir
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .expect("world dir name")
            .to_string()
    }

    /// SIGTERM to dockerd and wait until it exited.
    pub fn stop_dockerd(&mut self) {
        if let Some(mut d) = self.dockerd.take() {
            d.stop(Duration::from_secs(60));
        }
    }

    pub fn kill9_dockerd(&mut self) {
        if let Some(mut d) = self.dockerd.take() {
            d.kill9();
        }
    }

    fn load_image(&self) {
        let tar = self.path("busybox.tar");
        cni_tests::busybox_image(&tar, IMAGE);
        self.docker_ok(&["load", "-i", tar.to_str().unwrap()]);
    }

    pub fn start_shim(&mut self) {
        self.start_shim_env(&[]);
    }

    /// Starts the shim the way systemd's socket activation does: `systemd-socket-activate`
    /// owns the socket and execs the shim with it as fd 3 on the first connection.
    pub fn start_shim_activated(&mut self) {
        let mut c = self.in_ns(Path::new("/usr/bin/systemd-socket-activate"));
        c.arg("-l").arg(self.socket()).arg(bin("cnm-shim"));
        self.shim_args(&mut c);
        self.shim = Some(Daemon::spawn_logged(c, &self.path("shim.log")));
        let sock = self.socket();
        wait_for("activation socket", Duration::from_secs(30), || {
            sock.exists()
        });
    }

    fn shim_args(&self, c: &mut Command) {
        c.args(["--name", &self.name, "--state-dir"])
            .arg(self.path("shim"))
            .arg("--cni-path")
            .arg(bin_dir())
            .args(["--exec-timeout", "30", "--debug"])
            .args(&self.shim_extra);
    }

    /// Starts the shim with extra environment (e.g. `CNM_SHIM_CRASH_AT`).
    pub fn start_shim_env(&mut self, env: &[(&str, &str)]) {
        let _ = bin("bridge");
        let _ = bin("host-local");
        let mut c = self.in_ns(&bin("cnm-shim"));
        self.shim_args(&mut c);
        for (k, v) in env {
            c.env(k, v);
        }
        self.shim = Some(Daemon::spawn_logged(c, &self.path("shim.log")));
        let sock = self.socket_seen();
        wait_for("cnm-shim socket", Duration::from_secs(30), || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
    }

    /// Waits up to `timeout` for the shim to exit by itself; true if it did.
    pub fn wait_shim_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.shim.as_mut().map(|s| s.child.try_wait()) {
                Some(Ok(Some(_))) | None => {
                    self.shim = None;
                    return true;
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        false
    }

    /// A docker command run on its own thread (for crashing the shim while it runs).
    /// `network create` of network `name` with this world's shim as network and IPAM driver,
    /// `extra` (e.g. `--subnet`) before the name: arguments for [`World::docker`].
    pub fn net_create_args<'a>(&'a self, name: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec![
            "network",
            "create",
            "-d",
            &self.name,
            "--ipam-driver",
            &self.name,
        ];
        a.extend_from_slice(extra);
        a.push(name);
        a
    }

    pub fn docker_bg(&self, args: &[&str]) -> std::thread::JoinHandle<Output> {
        let host = format!("unix://{}", self.path("docker.sock").display());
        let cfg = self.path("docker-cli");
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        std::thread::spawn(move || {
            Command::new(docker_cli())
                .env("DOCKER_HOST", host)
                .env("DOCKER_CONFIG", cfg)
                .args(&args)
                .output()
                .expect("exec docker")
        })
    }

    pub fn kill9_shim(&mut self) {
        if let Some(mut s) = self.shim.take() {
            s.kill9();
        }
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(docker_cli())
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.path("docker.sock").display()),
            )
            .env("DOCKER_CONFIG", self.path("docker-cli"))
            .args(args)
            .output()
            .expect("exec docker")
    }

    /// Runs docker, panicking with stderr (and the shim log tail) on failure.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        if !out.status.success() {
            panic!(
                "docker {args:?} failed: {}\n--- shim log tail ---\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.shim_log_tail(40)
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn docker_err(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            !out.status.success(),
            "docker {args:?} unexpectedly succeeded"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn inspect(&self, obj: &str) -> Value {
        let s = self.docker_ok(&["inspect", obj]);
        let v: Value = serde_json::from_str(&s).expect("inspect JSON");
        v[0].clone()
    }

    /// `docker exec <c> <args>`, success flag and stdout.
    pub fn exec(&self, c: &str, args: &[&str]) -> (bool, String) {
        let mut a = vec!["exec", c];
        a.extend_from_slice(args);
        let out = self.docker(&a);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    pub fn ping(&self, c: &str, target: &str) -> bool {
        self.exec(c, &["ping", "-c", "1", "-W", "2", target]).0
    }

    pub fn shim_log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.path("shim.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn state(&self) -> Value {
        let s = std::fs::read_to_string(self.path("shim/state.json")).unwrap_or_default();
        serde_json::from_str(&s).unwrap_or(Value::Null)
    }

    /// IPs reserved in the host-local store of the shim.
    pub fn store(&self) -> Vec<String> {
        let mut v: Vec<String> = cni_tests::host_local_reservations(
            &self.path("shim/ipam"),
            &format!("cnm-{}", self.name),
        )
        .into_iter()
        .collect();
        v.sort();
        v
    }

    /// Links of the world's netns.
    pub fn links(&self) -> Vec<String> {
        self.ns.link_names().into_iter().collect()
    }

    /// The whole nftables ruleset of the world's netns, as text.
    pub fn ruleset(&self) -> String {
        self.ns.sh(&["nft", "list", "ruleset"])
    }

    /// Appends a marker to the shim log (helps reading failures).
    pub fn mark(&self, what: &str) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path("shim.log"))
        {
            let _ = writeln!(f, "===== {what} =====");
        }
    }

    fn unmount_all(&self) {
        let dir = self.dir.str().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<String> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&dir))
            .map(str::to_string)
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = Command::new("umount").args(["-l", &p]).status();
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // A panic here (during the unwinding of a failed test) would abort the whole test
        // binary and skip the rest of the cleanup.
        let this = &mut *self;
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            this.remove_containers_and_networks()
        }));
        self.stop_dockerd();
        if let Some(mut s) = self.shim.take() {
            s.stop(Duration::from_secs(5));
        }
        if let Some(mut c) = self.containerd.take() {
            c.stop(Duration::from_secs(10));
        }
        // Shims of containers that outlived dockerd.
        cni_tests::containerd::kill_shims_of(&self.path("containerd.sock"));
        cni_tests::remove_cgroup(&self.cgroup_parent());
        self.unmount_all();
        let _ = std::fs::remove_file(self.socket());
        if std::env::var_os("CNM_KEEP_LOGS").is_some() {
            let keep = std::env::temp_dir().join(format!("{}-logs", self.name));
            let _ = std::fs::create_dir_all(&keep);
            for f in [
                "shim.log",
                "dockerd.log",
                "containerd.log",
                "shim/state.json",
            ] {
                let _ = std::fs::copy(self.path(f), keep.join(f.replace('/', "_")));
            }
        }
    }
}

impl World {
    fn remove_containers_and_networks(&mut self) {
        if self.dockerd.is_some() {
            if self.shim.is_none() {
                self.start_shim();
            }
            let ids = self.docker(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.docker(&["rm", "-f", id]);
            }
            let nets = self.docker(&["network", "ls", "-q", "--filter", "type=custom"]);
            for id in String::from_utf8_lossy(&nets.stdout).split_whitespace() {
                let _ = self.docker(&["network", "rm", id]);
            }
        }
    }
}
