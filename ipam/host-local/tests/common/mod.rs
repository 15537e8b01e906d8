//! Helpers for tests that run the plugin binaries exactly as a runtime does: environment
//! variables plus the config on stdin, nothing inherited from the test's own environment.
//! Everything created here (temp dirs, network namespaces, mounts) is removed on drop, also
//! when a test panics.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

pub const OURS: &str = env!("CARGO_BIN_EXE_host-local");
pub const REFERENCE: &str = "/usr/lib/cni/host-local";
pub const VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

pub use test_support::TempDir;

fn sh(prog: &str, args: &[&str]) -> bool {
    let mut v = vec![prog];
    v.extend_from_slice(args);
    test_support::run_ok(&v)
}

/// A container netns that is not the plugin's own, deleted on drop.
pub struct Netns(test_support::Netns);

impl Netns {
    pub fn new() -> Netns {
        Netns(test_support::Netns::new("hlt"))
    }

    pub fn path(&self) -> &str {
        self.0.path_str()
    }
}

/// A read-only bind mount of a directory onto itself, unmounted on drop.
pub struct ReadOnly(PathBuf);

impl ReadOnly {
    pub fn new(dir: &Path) -> ReadOnly {
        let d = dir.to_str().expect("utf-8");
        assert!(
            sh("mount", &["--bind", "-o", "ro", d, d]),
            "read-only bind mount of {d} failed"
        );
        ReadOnly(dir.to_path_buf())
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        sh("umount", &[self.0.to_str().unwrap_or("")]);
    }
}

#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?} (stderr {:?})",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts success and returns the result JSON (ADD) or nothing.
    pub fn ok(&self) -> Value {
        assert_eq!(self.code, 0, "expected success: {self:?}");
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts failure and returns (code, msg).
    pub fn err(&self) -> (u64, String) {
        assert_eq!(self.code, 1, "expected failure: {self:?}");
        let v = self.json();
        (
            v["code"].as_u64().expect("error code"),
            v["msg"].as_str().expect("error msg").to_string(),
        )
    }
}

/// Runs a plugin binary with exactly `env` and `stdin`.
pub fn exec(bin: &str, env: &[(&str, &str)], stdin: &str) -> Out {
    start(bin, env, stdin).wait()
}

/// Starts a plugin binary with exactly `env` and `stdin`, without waiting for it.
pub fn start(bin: &str, env: &[(&str, &str)], stdin: &str) -> Running {
    let mut child = Command::new(bin)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    // A plugin may exit before reading (e.g. VERSION): a broken pipe is fine.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    Running(child)
}

/// A plugin call in flight (its output is small: the pipes never fill).
pub struct Running(std::process::Child);

impl Running {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Whether it has exited, without waiting.
    pub fn finished(&mut self) -> bool {
        self.0.try_wait().expect("try_wait").is_some()
    }

    pub fn wait(self) -> Out {
        let o = self.0.wait_with_output().expect("wait");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// One attachment, as a runtime would describe it.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub bin: &'a str,
    pub netns: &'a str,
    pub id: &'a str,
    pub ifname: &'a str,
    pub args: &'a str,
    /// `CNI_HOST_LOCAL_CRASH_AT`: where the plugin SIGKILLs itself (src/crash.rs).
    pub crash_at: &'a str,
}

impl<'a> Call<'a> {
    pub fn new(netns: &'a str, id: &'a str) -> Call<'a> {
        Call {
            bin: OURS,
            netns,
            id,
            ifname: "eth0",
            args: "",
            crash_at: "",
        }
    }

    pub fn run(&self, cmd: &str, stdin: &str) -> Out {
        self.start(cmd, stdin).wait()
    }

    /// `run` without waiting for the plugin to finish.
    pub fn start(&self, cmd: &str, stdin: &str) -> Running {
        let mut env = vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", self.id),
            ("CNI_NETNS", self.netns),
            ("CNI_IFNAME", self.ifname),
            ("CNI_PATH", "/opt/cni/bin"),
        ];
        if !self.args.is_empty() {
            env.push(("CNI_ARGS", self.args));
        }
        if !self.crash_at.is_empty() {
            env.push(("CNI_HOST_LOCAL_CRASH_AT", self.crash_at));
        }
        start(self.bin, &env, stdin)
    }

    pub fn add(&self, stdin: &str) -> Out {
        self.run("ADD", stdin)
    }
    pub fn del(&self, stdin: &str) -> Out {
        self.run("DEL", stdin)
    }
    pub fn check(&self, stdin: &str) -> Out {
        self.run("CHECK", stdin)
    }
}

/// GC or STATUS: only CNI_COMMAND and CNI_PATH, as libcni sends them.
pub fn network_verb(bin: &str, cmd: &str, stdin: &str) -> Out {
    exec(
        bin,
        &[("CNI_COMMAND", cmd), ("CNI_PATH", "/opt/cni/bin")],
        stdin,
    )
}

/// A config with one v4 subnet in `data_dir`.
pub fn conf(version: &str, name: &str, subnet: &str, data_dir: &str) -> String {
    format!(
        r#"{{"cniVersion":"{version}","name":"{name}","type":"bridge",
            "ipam":{{"type":"host-local","subnet":"{subnet}","dataDir":"{data_dir}"}}}}"#
    )
}

/// The reservation files (names parse as addresses) in a network directory.
pub fn ip_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The address of the first IP in an ADD result, any version.
pub fn first_ip(v: &Value) -> String {
    let a = v["ips"][0]["address"]
        .as_str()
        .or_else(|| v["ip4"]["ip"].as_str())
        .or_else(|| v["ip6"]["ip"].as_str())
        .unwrap_or_else(|| panic!("no address in {v}"));
    a.split('/').next().unwrap_or("").to_string()
}

pub fn reference_binary() -> &'static str {
    assert!(
        Path::new(REFERENCE).is_file(),
        "the reference plugin {REFERENCE} is missing: apt-get install -y containernetworking-plugins"
    );
    REFERENCE
}
