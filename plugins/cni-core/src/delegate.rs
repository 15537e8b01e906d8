//! Delegation: find a plugin (e.g. the IPAM named by `ipam.type`) in CNI_PATH and run it with
//! the same stdin and environment, only CNI_COMMAND changed, as libcni's `invoke` does.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command as Proc, Stdio};

use serde_json::Value;

use crate::env::Command;
use crate::error::CniError;
use crate::skel::Request;
use crate::types::CniResult;
use crate::{json, result};

/// The first executable file named `name` in the `:`-separated `cni_path`.
pub fn find(name: &str, cni_path: &str) -> Result<PathBuf, CniError> {
    use std::os::unix::fs::PermissionsExt;
    if name.is_empty() {
        return Err(CniError::internal("no plugin name provided"));
    }
    if name.contains('/') {
        return Err(CniError::config(format!(
            "plugin name {name:?} must be a file name, not a path"
        )));
    }
    for dir in cni_path.split(':').filter(|d| !d.is_empty()) {
        let p = PathBuf::from(dir).join(name);
        if let Ok(md) = std::fs::metadata(&p) {
            if md.is_file() && md.permissions().mode() & 0o111 != 0 {
                return Ok(p);
            }
        }
    }
    Err(CniError::internal(format!(
        "failed to find plugin {name:?} in path [{}]",
        cni_path.split(':').collect::<Vec<_>>().join(" ")
    )))
}

/// Runs `name` for `verb` and returns its stdout; a failure is relayed with the child's code.
pub fn exec(name: &str, verb: Command, req: &Request) -> Result<Vec<u8>, CniError> {
    let path = find(name, &req.env.path)?;
    let mut child = Proc::new(&path)
        .env("CNI_COMMAND", verb.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::internal(format!("failed to exec {}: {e}", path.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin that exits without reading stdin gives EPIPE here; its exit status says more.
        let _ = stdin.write_all(&req.stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::internal(format!("failed to wait for {}: {e}", path.display())))?;
    if !out.stderr.is_empty() {
        let _ = std::io::stderr().write_all(&out.stderr);
    }
    if out.status.success() {
        return Ok(out.stdout);
    }
    // Relay the child's own error object when it printed one.
    if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
        let f = json::fold_keys(&v);
        if let Some(code) = json::get(&f, "code").and_then(Value::as_u64) {
            let msg = json::get(&f, "msg").and_then(Value::as_str).unwrap_or("");
            let det = json::get(&f, "details")
                .and_then(Value::as_str)
                .unwrap_or("");
            return Err(CniError::with_code(code as u32, msg).with_details(det));
        }
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(CniError::internal(format!(
        "netplugin failed: {:?}: {}",
        stderr.trim(),
        out.status
    )))
}

/// Delegated ADD: the child's result (any version) as the 1.x model.
pub fn add(name: &str, req: &Request) -> Result<CniResult, CniError> {
    let out = exec(name, Command::Add, req)?;
    result::parse_bytes(&out, &req.cni_version)
}

/// Delegated DEL / CHECK / GC / STATUS.
pub fn run(name: &str, verb: Command, req: &Request) -> Result<(), CniError> {
    exec(name, verb, req).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_rules() {
        assert_eq!(find("", "/bin").unwrap_err().msg, "no plugin name provided");
        assert!(find("sh", "/nonexistent:/bin").is_ok());
        assert!(find("definitely-not-a-plugin", "/bin").is_err());
        assert!(find("../bin/sh", "/bin").is_err());
    }
}
