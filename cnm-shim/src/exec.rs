//! Runs a CNI plugin the way a runtime does (CNI_* environment, network config on stdin, result
//! or error object on stdout), with a hard time limit: dockerd has no timeout on plugin calls,
//! so a hung plugin must not hang docker. On timeout the plugin's whole process group (it may
//! have exec'd its IPAM plugin) is killed.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::err;
use crate::error::Result;

/// One plugin invocation.
pub struct Call<'a> {
    pub plugin: &'a str,
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub args: &'a str,
    pub conf: &'a Value,
}

/// Where plugins are found and how long they may run.
#[derive(Debug, Clone)]
pub struct Runner {
    pub cni_path: String,
    pub timeout: Duration,
}

impl Runner {
    /// Runs the plugin and returns its stdout (the result for ADD).
    pub fn run(&self, c: &Call<'_>) -> Result<Vec<u8>> {
        let path = cni_core::delegate::find(c.plugin, &self.cni_path).map_err(|e| {
            err!(
                "{} (install the cni-rs plugins there or pass --cni-path)",
                e.msg
            )
        })?;
        let what = format!("{} {} for {}", c.plugin, c.command, c.container_id);
        let stdin = serde_json::to_vec(c.conf).unwrap_or_default();
        let started = Instant::now();
        let mut cmd = Command::new(&path);
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("CNI_COMMAND", c.command)
            .env("CNI_CONTAINERID", c.container_id)
            .env("CNI_NETNS", c.netns)
            .env("CNI_IFNAME", c.ifname)
            .env("CNI_ARGS", c.args)
            .env("CNI_PATH", &self.cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| err!("{what}: cannot exec {}: {e}", path.display()))?;
        let pid = child.id() as libc::pid_t;
        if let Some(mut si) = child.stdin.take() {
            // A plugin that exits without reading gives EPIPE; its exit status says more.
            let _ = si.write_all(&stdin);
        }
        let (mut so, mut se) = (child.stdout.take(), child.stderr.take());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut errb = Vec::new();
            // Drain stderr on its own thread so a chatty plugin cannot block on a full pipe.
            let err_thread = se.take().map(|mut e| {
                std::thread::spawn(move || {
                    let mut b = Vec::new();
                    let _ = e.read_to_end(&mut b);
                    b
                })
            });
            if let Some(o) = so.as_mut() {
                let _ = o.read_to_end(&mut out);
            }
            if let Some(t) = err_thread {
                errb = t.join().unwrap_or_default();
            }
            let status = child.wait();
            let _ = tx.send((status, out, errb));
        });
        let (status, out, errb) = match rx.recv_timeout(self.timeout) {
            Ok(v) => v,
            Err(_) => {
                // SAFETY: kill(2) on the process group we created for this child
                // (`process_group(0)`); no memory is involved.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                let _ = rx.recv_timeout(Duration::from_secs(5));
                return Err(err!(
                    "{what} did not finish within {}s and was killed; check the host (e.g. a stuck netlink or nftables lock) or raise --exec-timeout",
                    self.timeout.as_secs()
                ));
            }
        };
        let status = status.map_err(|e| err!("{what}: wait: {e}"))?;
        crate::debug!("{what}: {} in {} ms", status, started.elapsed().as_millis());
        let stderr = String::from_utf8_lossy(&errb);
        if !stderr.trim().is_empty() {
            crate::debug!("{what} stderr: {}", stderr.trim());
        }
        if status.success() {
            return Ok(out);
        }
        Err(plugin_error(&what, &out, &stderr, status))
    }
}

/// The plugin's own error object when it printed one, else its stderr.
fn plugin_error(
    what: &str,
    stdout: &[u8],
    stderr: &str,
    status: std::process::ExitStatus,
) -> crate::error::Error {
    if let Ok(v) = serde_json::from_slice::<Value>(stdout) {
        let msg = v.get("msg").and_then(Value::as_str).unwrap_or("");
        let details = v.get("details").and_then(Value::as_str).unwrap_or("");
        let code = v.get("code").and_then(Value::as_u64).unwrap_or(0);
        if !msg.is_empty() {
            let det = if details.is_empty() || details == msg {
                String::new()
            } else {
                format!(" ({details})")
            };
            return err!("{what} failed: {msg}{det} [CNI error {code}]");
        }
    }
    err!("{what} failed ({status}): {}", stderr.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &std::path::Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn call<'a>(plugin: &'a str, conf: &'a Value) -> Call<'a> {
        Call {
            plugin,
            command: "ADD",
            container_id: "c1",
            netns: "/x",
            ifname: "eth0",
            args: "",
            conf,
        }
    }

    #[test]
    fn result_error_and_timeout() {
        let dir = std::env::temp_dir().join(format!("cnm-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        script(
            &dir,
            "ok",
            "cat >/dev/null; echo \"{\\\"cmd\\\":\\\"$CNI_COMMAND\\\"}\"",
        );
        script(
            &dir,
            "bad",
            "echo '{\"code\":7,\"msg\":\"invalid config\",\"details\":\"key x\"}'; exit 1",
        );
        script(&dir, "noisy", "echo boom >&2; exit 3");
        script(&dir, "slow", "sleep 30");
        let r = Runner {
            cni_path: dir.to_str().unwrap().into(),
            timeout: Duration::from_millis(500),
        };
        let conf = serde_json::json!({"a": 1});
        assert_eq!(r.run(&call("ok", &conf)).unwrap(), b"{\"cmd\":\"ADD\"}\n");
        let e = r.run(&call("bad", &conf)).unwrap_err();
        assert!(e.0.contains("invalid config (key x) [CNI error 7]"), "{e}");
        let e = r.run(&call("noisy", &conf)).unwrap_err();
        assert!(e.0.contains("boom"), "{e}");
        let t = Instant::now();
        let e = r.run(&call("slow", &conf)).unwrap_err();
        assert!(e.0.contains("did not finish"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
        let e = r.run(&call("missing", &conf)).unwrap_err();
        assert!(e.0.contains("--cni-path"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
