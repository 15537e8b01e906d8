use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// Runs a command quietly; whether it succeeded (false when it could not start).
pub fn run_ok(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    run_ok(&["sh", "-c", &format!("command -v {program}")])
}

/// Fails the test unless it runs as root: the tests create namespaces, links and nftables state.
pub fn require_root() {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "these tests need root (scripts/test.sh runs them as root)"
    );
}

/// Fails the test, naming the fix, when a program it needs is missing: CI installs every
/// dependency, so a missing one is a failure, never a silent pass.
pub fn require(programs: &[&str]) {
    require_root();
    for p in programs {
        assert!(
            have(p),
            "{p} is not installed: run scripts/test.sh, which installs every package the tests need"
        );
    }
}

/// A background process in its own process group. Dropping it stops it (SIGTERM, then SIGKILL
/// after `grace`) and kills whatever of its group is left, also when a test panics.
pub struct Daemon {
    pub child: Child,
    pub grace: Duration,
    /// Whether SIGTERM goes to the whole group (helpers that must not outlive it) or only to
    /// the leader (daemons such as dockerd that shut their children down themselves).
    term_group: bool,
}

impl Daemon {
    /// Starts `cmd`; SIGTERM on drop goes to the whole group.
    pub fn spawn(mut cmd: Command) -> std::io::Result<Daemon> {
        cmd.process_group(0);
        Ok(Daemon {
            child: cmd.spawn()?,
            grace: Duration::from_secs(10),
            term_group: true,
        })
    }

    /// Starts `cmd` with stdout and stderr appended to `log` and stdin closed; SIGTERM goes to
    /// the leader only, so a daemon can stop its own children in order.
    pub fn spawn_logged(mut cmd: Command, log: &Path) -> Daemon {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        cmd.stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup log fd"))
            .stderr(f)
            .process_group(0);
        Daemon {
            child: cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")),
            grace: Duration::from_secs(20),
            term_group: false,
        }
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `sig` to the leader.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child; no memory is shared with the callee.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    /// SIGTERM, then SIGKILL to the group after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let pgid = self.child.id() as libc::pid_t;
        let target = if self.term_group { -pgid } else { pgid };
        // SAFETY: kill(2) on our own child or its process group (made by `process_group(0)`).
        unsafe { libc::kill(target, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && self.alive() {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
    }

    /// SIGKILL to the whole group, and reap the leader.
    pub fn kill9(&mut self) {
        // SAFETY: kill(2) on the process group we created; no memory involved.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.alive() {
            self.stop(self.grace);
        } else {
            // The leader is gone; helpers it left in the group are not.
            self.kill9();
        }
    }
}
