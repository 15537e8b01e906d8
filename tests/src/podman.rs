//! A private podman for tests, on its CNI network backend (`network_backend = "cni"`), which
//! runs our plugins through its vendored libcni the way a podman user's machine does.
//!
//! podman is daemonless, so what must stay private is where it writes. Every podman command
//! runs (`nsenter`) in the test's throwaway "host" netns and in one mount namespace held by a
//! `sleep` process, in which:
//! - `/var/lib` is a tmpfs-backed overlay: podman's libcni keeps its result cache in
//!   `/var/lib/cni/results` and host-local's default `dataDir` is `/var/lib/cni/networks`;
//! - `/run/netns` (the container netns podman creates) and `/dev/shm` (its lock file) are
//!   tmpfs;
//! - storage (vfs), run root, temp dir, network configs and the CNI bin dir are the test's
//!   own directories, named in a `containers.conf` of the test's;
//! - containers run under a cgroup parent of the test's, removed with it.
//!
//! Dropping the harness removes every container (podman runs the CNI DELs), then kills the
//! holder: the mount namespace and its tmpfs go with it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::{remove_cgroup, unique, wait_for, Netns, TempDir};

/// The image every container runs (built offline by `scripts/busybox-image.sh`).
pub const IMAGE: &str = "cnitest/busybox:latest";

pub struct Podman {
    pub dir: TempDir,
    /// `cni_plugin_dirs`: links to the plugins under test (see [`Podman::install`]).
    pub bin_dir: PathBuf,
    /// `network_config_dir`: where `podman network create` writes its conflists.
    pub conf_dir: PathBuf,
    host_netns: String,
    holder: Child,
    cgroup: String,
}

impl Podman {
    /// Starts the mount-namespace holder and writes the configuration; `host` is the netns
    /// every podman command (and so every bridge and published port) lives in.
    pub fn start(host: &Netns, prefix: &str) -> Podman {
        crate::require(&["podman", "nsenter", "unshare", "busybox"]);
        let dir = TempDir::new(&format!("{prefix}pod"));
        let d = dir.str().to_string();
        let bin_dir = dir.path().join("bin");
        let conf_dir = dir.path().join("net.d");
        for p in ["bin", "net.d", "tmp", "root", "run", "ovl"] {
            std::fs::create_dir_all(dir.path().join(p)).expect("create dir");
        }
        let cgroup = unique(&format!("{prefix}cg"));
        std::fs::write(
            dir.path().join("containers.conf"),
            format!(
                "[containers]\n\
                 # The sandbox refuses podman's default nofile/nproc raise.\n\
                 default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
                 [network]\n\
                 network_backend = \"cni\"\n\
                 cni_plugin_dirs = [\"{bin}\"]\n\
                 network_config_dir = \"{conf}\"\n\
                 [engine]\n\
                 tmp_dir = \"{d}/tmp\"\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n",
                bin = bin_dir.display(),
                conf = conf_dir.display(),
            ),
        )
        .expect("write containers.conf");
        let script = format!(
            "set -e\n\
             mount -t tmpfs cnitest {d}/ovl\n\
             mkdir -p {d}/ovl/vu {d}/ovl/vw\n\
             mount -t overlay cnitest -o lowerdir=/var/lib,upperdir={d}/ovl/vu,workdir={d}/ovl/vw /var/lib\n\
             mount -t tmpfs cnitest /run/netns\n\
             mount -t tmpfs cnitest /dev/shm\n\
             touch {d}/ready\n\
             exec sleep infinity\n"
        );
        let holder = std::os::unix::process::CommandExt::process_group(
            Command::new("unshare")
                .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                .arg(&script)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
            0,
        )
        .spawn()
        .expect("spawn mount namespace holder");
        let ready = dir.path().join("ready");
        let mut p = Podman {
            bin_dir,
            conf_dir,
            host_netns: host.path_str().to_string(),
            holder,
            cgroup,
            dir,
        };
        wait_for("podman's mount namespace", Duration::from_secs(10), || {
            if let Ok(Some(st)) = p.holder.try_wait() {
                panic!("mount namespace holder exited ({st})");
            }
            ready.exists()
        });
        p
    }

    /// Links `name` → `target` in the CNI bin dir.
    pub fn install(&self, name: &str, target: &Path) {
        let link = self.bin_dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link).expect("symlink plugin");
    }

    /// A path as podman (and the plugins it runs) see it, readable from the test.
    pub fn inside(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.holder.id()))
    }

    /// `podman <args>` with the test's storage, configuration and namespaces.
    pub fn podman(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        Command::new("nsenter")
            .arg(format!("--mount=/proc/{}/ns/mnt", self.holder.id()))
            .arg(format!("--net={}", self.host_netns))
            .arg("podman")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .stdin(Stdio::null())
            .output()
            .expect("exec podman")
    }

    /// `podman <args>`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.podman(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Loads the busybox image (built offline) and returns its name.
    pub fn load_image(&self) -> String {
        let tar = self.dir.path().join("busybox.tar");
        crate::busybox_image(&tar, IMAGE);
        self.ok(&["load", "-q", "-i", tar.to_str().expect("utf-8 path")]);
        format!("localhost/{IMAGE}")
    }

    /// The test's cgroup parent (`--cgroup-parent`), removed with the harness.
    pub fn cgroup_parent(&self) -> String {
        format!("/{}", self.cgroup)
    }

    /// `podman run -d --name <name> <flags...> <image> <cmd...>` under the test's cgroup parent;
    /// podman's stderr when it fails.
    pub fn run_detached(
        &self,
        name: &str,
        flags: &[&str],
        image: &str,
        cmd: &[&str],
    ) -> Result<(), String> {
        let parent = self.cgroup_parent();
        let mut args = vec!["run", "-d", "--name", name, "--cgroup-parent", &parent];
        args.extend_from_slice(flags);
        args.push(image);
        args.extend_from_slice(cmd);
        let out = self.podman(&args);
        match out.status.success() {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    }

    /// The container's address on `network` (`podman inspect`).
    pub fn ip(&self, name: &str, network: &str) -> String {
        self.ok(&[
            "inspect",
            name,
            "--format",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
        ])
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // DEL for every attachment of every container, run by podman itself.
        let _ = self.podman(&["rm", "-a", "-f", "-t", "0"]);
        // SAFETY: kill(2) on the process group of our own child (process_group(0)).
        unsafe { libc::kill(-(self.holder.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.holder.wait();
        remove_cgroup(&self.cgroup);
    }
}
