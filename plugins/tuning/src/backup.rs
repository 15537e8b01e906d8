//! The saved originals of a tuned link: `<dataDir>/<containerID>_<ifname>.json`, the
//! reference's file and JSON shape (`mac`, `promisc`, `mtu`, `allmulti`, `txQLen`), so the Go
//! and Rust plugins can DEL each other's attachments. One extra key, `network`, lets GC of one
//! network leave the files of other networks sharing the directory alone (Go ignores it).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use cni_core::CniError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promisc: Option<bool>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtu: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allmulti: Option<bool>,
    #[serde(
        rename = "txQLen",
        alias = "txqlen",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub txqlen: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

pub fn path(data_dir: &str, container_id: &str, ifname: &str) -> PathBuf {
    Path::new(data_dir).join(format!("{container_id}_{ifname}.json"))
}

/// JSON as Go's `json.MarshalIndent(v, "", " ")` prints it.
fn to_json(s: &Saved) -> Vec<u8> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    // Serializing plain fields into a Vec cannot fail.
    let _ = s.serialize(&mut ser);
    out
}

/// The raw bytes of an existing file (so a failed ADD can put back exactly what was there).
pub fn read_raw(p: &Path) -> Result<Option<Vec<u8>>, CniError> {
    match std::fs::read(p) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CniError::internal(format!(
            "failed to read {}: {e}",
            p.display()
        ))),
    }
}

/// Parses a saved file; None when it is not valid JSON of the expected shape.
pub fn parse(bytes: &[u8]) -> Option<Saved> {
    serde_json::from_slice(bytes).ok()
}

/// Writes atomically (temp file + rename), creating `dataDir` if needed.
pub fn write(p: &Path, s: &Saved) -> Result<(), CniError> {
    write_raw(p, &to_json(s))
}

pub fn write_raw(p: &Path, bytes: &[u8]) -> Result<(), CniError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let err = |what: &str, e: std::io::Error| {
        CniError::internal(format!(
            "failed to {what} {}: {e}; check that dataDir is a writable directory",
            p.display()
        ))
    };
    if let Some(dir) = p.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| err("create the directory of", e))?;
    }
    let tmp = p.with_extension(format!("json.tmp{}", std::process::id()));
    let res = (|| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        std::fs::rename(&tmp, p)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(err("save", e));
    }
    Ok(())
}

/// Removes the temp files (`<file>.tmp<pid>`, see [`write_raw`]) whose writer is gone: a
/// tuning killed between writing and renaming leaves one. Only those of the file `only` when
/// given (DEL of one attachment), else every one in `dir` (GC). A live writer's file is left
/// alone; failures are ignored (best-effort cleanup).
pub fn remove_stale_temps(dir: &Path, only: Option<&Path>) {
    let prefix = only.and_then(|p| p.file_name()).map(|n| {
        let mut n = n.to_string_lossy().into_owned();
        n.push_str(".tmp");
        n
    });
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((base, pid)) = name.rsplit_once(".json.tmp") else {
            continue;
        };
        if prefix
            .as_deref()
            .is_some_and(|p| p != format!("{base}.json.tmp"))
        {
            continue;
        }
        let Ok(pid) = pid.parse::<libc::pid_t>() else {
            continue;
        };
        // SAFETY: kill(2) with signal 0 only checks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Removes the file; a missing one is fine.
pub fn remove(p: &Path) -> Result<(), CniError> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CniError::internal(format!(
            "failed to remove {}: {e}",
            p.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temps_of_dead_writers_go() {
        let dir = std::env::temp_dir().join(format!("tuning-temps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // pid_max is at most 2^22: this writer cannot exist.
        let dead = dir.join("c1_eth0.json.tmp1073741823");
        let other = dir.join("c2_eth0.json.tmp1073741823");
        let live = dir.join(format!("c1_eth0.json.tmp{}", std::process::id()));
        for f in [&dead, &other, &live] {
            std::fs::write(f, b"{").unwrap();
        }
        remove_stale_temps(&dir, Some(&path(dir.to_str().unwrap(), "c1", "eth0")));
        assert!(!dead.exists() && other.exists() && live.exists());
        remove_stale_temps(&dir, None);
        assert!(!other.exists() && live.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn go_shape() {
        let s = Saved {
            mac: "02:00:00:00:00:01".into(),
            promisc: Some(false),
            mtu: 1500,
            allmulti: Some(true),
            txqlen: Some(1000),
            network: String::new(),
        };
        assert_eq!(
            String::from_utf8(to_json(&s)).unwrap(),
            "{\n \"mac\": \"02:00:00:00:00:01\",\n \"promisc\": false,\n \"mtu\": 1500,\n \"allmulti\": true,\n \"txQLen\": 1000\n}"
        );
        assert_eq!(parse(&to_json(&s)), Some(s));
        // What the Go plugin writes when only the MTU was tuned.
        let go = parse(b"{\n \"mtu\": 9000\n}").unwrap();
        assert_eq!(go.mtu, 9000);
        assert_eq!(go.promisc, None);
        assert!(parse(b"garbage").is_none());
    }
}
