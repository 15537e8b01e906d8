//! Releasing the reservations of containers that died with the previous boot. The reference
//! keeps them forever on a persistent `dataDir` (the default `/var/lib/cni/networks`): after a
//! reboot without DEL the range slowly fills with addresses nobody holds.
//!
//! # The marker
//! `<dataDir>/.<network>.rsboot` (outside the network directory, like the index, so the Go
//! plugin never reads it and writing it does not touch the directory's mtime) holds the
//! kernel's boot id (`/proc/sys/kernel/random/boot_id`) of the last boot in which we ran. Every
//! call, holding the flock, reads it: one small read besides the boot id itself. When it names
//! another boot, this is our first call since a reboot, and we sweep:
//!
//! - If the index is sealed (the directory's mtime is still the sentinel of our last call, see
//!   `index`), nothing has created or removed a file since our last call, which was in an
//!   earlier boot: every reservation predates this boot, and all are released. No clock involved.
//! - Otherwise someone else (the Go plugin, or a crash of ours) wrote since, maybe after the
//!   boot, and only the clock can tell: a file is released if its ctime is in a second before
//!   this boot's start (`btime` of `/proc/stat`). A file made after the boot has a ctime at or
//!   after it, unless the wall clock was stepped forward after the file was made (an RTC-less
//!   board syncing NTP late) while the Go plugin, not us, made it: the one case this can get
//!   wrong, documented in docs/host-local.md.
//!
//! # Crash safety
//! The sweep first replaces the marker (write + rename) by a journal: `sweep <boot id>` and one
//! line per file to release with its inode and ctime; then unlinks each listed file whose inode
//! and ctime still match (so a file recreated in between, e.g. by the Go plugin after a crash of
//! ours, is never touched); then replaces the journal by the plain marker. A kill at any point
//! leaves either the old marker (the sweep is recomputed from unchanged files) or the journal
//! (the next call finishes it). The unlinks change the directory's mtime, so the next index
//! open rebuilds it from the files: once per boot.
//!
//! # No marker
//! A missing or unreadable marker (the first call after upgrading from the reference, or a new
//! network) cannot tell which boot any file is from: we record the current boot and release
//! nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::index;
use crate::store::{ip_of_name, NetDir};

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
const SWEEP: &str = "sweep ";

/// Test builds only: a file whose content replaces the kernel's boot id and whose mtime
/// replaces the boot time, to simulate a reboot. Release builds always use the kernel's.
#[cfg(debug_assertions)]
pub const BOOT_ID_OVERRIDE: &str = "CNI_HOST_LOCAL_BOOT_ID_FILE";

pub fn marker_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(format!(".{name}.rsboot"))
}

/// This boot: its id, and (read only when a sweep needs it) its start in seconds since the
/// epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    pub id: String,
    source: Source,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Kernel,
    #[cfg(debug_assertions)]
    Override(PathBuf),
}

impl Boot {
    /// The running kernel's boot, `None` if it cannot be read (no sweep then).
    pub fn current() -> Option<Boot> {
        #[cfg(debug_assertions)]
        if let Some(p) = std::env::var_os(BOOT_ID_OVERRIDE) {
            let id = fs::read_to_string(&p).ok()?.trim().to_string();
            let source = Source::Override(PathBuf::from(p));
            return (!id.is_empty()).then_some(Boot { id, source });
        }
        let id = fs::read_to_string(BOOT_ID).ok()?.trim().to_string();
        (!id.is_empty()).then_some(Boot {
            id,
            source: Source::Kernel,
        })
    }

    /// When this boot started (`btime` of `/proc/stat`).
    pub fn start(&self) -> Option<i64> {
        match &self.source {
            Source::Kernel => fs::read_to_string("/proc/stat")
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("btime "))?
                .trim()
                .parse()
                .ok(),
            #[cfg(debug_assertions)]
            Source::Override(p) => fs::metadata(p).ok().map(|m| m.mtime()),
        }
    }
}

/// What the marker file says.
#[derive(Debug, PartialEq, Eq)]
enum Marker {
    /// No usable marker.
    Missing,
    /// The last boot we ran in.
    Boot(String),
    /// An interrupted sweep for this boot: the files still to release.
    Sweep(String, Vec<Doomed>),
}

/// A file to release, identified by its inode and ctime as well as its name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Doomed {
    ip: IpAddr,
    ino: u64,
    ctime: (i64, i64),
}

fn read_marker(p: &Path) -> Marker {
    let mut s = String::new();
    match File::open(p).and_then(|mut f| f.read_to_string(&mut s)) {
        Ok(_) => {}
        Err(_) => return Marker::Missing,
    }
    let mut lines = s.lines();
    let Some(first) = lines.next() else {
        return Marker::Missing;
    };
    if let Some(id) = first.strip_prefix(SWEEP) {
        let doomed = lines.filter_map(parse_doomed).collect();
        return Marker::Sweep(id.to_string(), doomed);
    }
    if first.is_empty() || first.contains(' ') {
        return Marker::Missing;
    }
    Marker::Boot(first.to_string())
}

fn parse_doomed(l: &str) -> Option<Doomed> {
    let mut f = l.split(' ');
    let ip = ip_of_name(f.next()?)?;
    let ino = f.next()?.parse().ok()?;
    let sec = f.next()?.parse().ok()?;
    let nsec = f.next()?.parse().ok()?;
    Some(Doomed {
        ip,
        ino,
        ctime: (sec, nsec),
    })
}

/// Replaces the marker atomically (a kill leaves the old or the new one, never half).
fn write_marker(p: &Path, content: &str) -> io::Result<()> {
    let tmp = p.with_extension("rsboot.tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(content.as_bytes())?;
    // The rename must not land before the content: a power loss would leave an empty marker
    // (read as missing: harmless, but the sweep would be lost).
    f.sync_data()?;
    drop(f);
    fs::rename(&tmp, p)
}

/// Brings the network directory up to this boot (see the module docs). Best-effort: a sweep
/// that cannot be journaled is not started, and is retried by the next call. Returns how many
/// reservations were released.
pub fn settle(dir: &NetDir, data_dir: &Path, name: &str) -> usize {
    let Some(boot) = Boot::current() else {
        return 0;
    };
    let path = marker_path(data_dir, name);
    let doomed = match read_marker(&path) {
        Marker::Boot(id) if id == boot.id => return 0,
        Marker::Missing => {
            let _ = write_marker(&path, &format!("{}\n", boot.id));
            return 0;
        }
        Marker::Sweep(id, doomed) if id == boot.id => doomed,
        // A marker (or an unfinished sweep) of an earlier boot: sweep for this one.
        Marker::Boot(_) | Marker::Sweep(..) => {
            let sealed = index::is_sealed(dir, data_dir, name);
            let Ok(doomed) = before_boot(dir, &boot, sealed) else {
                return 0;
            };
            let mut j = format!("{SWEEP}{}\n", boot.id);
            for d in &doomed {
                j.push_str(&format!("{} {} {} {}\n", d.ip, d.ino, d.ctime.0, d.ctime.1));
            }
            if write_marker(&path, &j).is_err() {
                return 0;
            }
            doomed
        }
    };
    let mut released = 0;
    for d in &doomed {
        let p = dir.ip_path(d.ip);
        // Under the flock, which the Go plugin takes too: nothing recreates it between the
        // stat and the unlink.
        if fs::symlink_metadata(&p).is_ok_and(|m| {
            m.is_file() && m.ino() == d.ino && (m.ctime(), m.ctime_nsec()) == d.ctime
        }) && fs::remove_file(&p).is_ok()
        {
            released += 1;
        }
    }
    let _ = write_marker(&path, &format!("{}\n", boot.id));
    released
}

/// The reservation files that predate `boot`: all of them when the index is sealed, else those
/// whose ctime is in a second before the boot.
fn before_boot(dir: &NetDir, boot: &Boot, sealed: bool) -> io::Result<Vec<Doomed>> {
    let start = if sealed {
        i64::MAX
    } else {
        boot.start()
            .ok_or_else(|| io::Error::other("boot time unknown"))?
    };
    let mut out = Vec::new();
    for e in fs::read_dir(dir.path())? {
        let e = e?;
        let Some(ip) = e.file_name().to_str().and_then(ip_of_name) else {
            continue;
        };
        let Ok(m) = e.metadata() else { continue };
        if !m.is_file() || m.ctime() >= start {
            continue;
        }
        out.push(Doomed {
            ip,
            ino: m.ino(),
            ctime: (m.ctime(), m.ctime_nsec()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_parsing() {
        let t = crate::testutil::TempDir::new("boot-marker");
        let p = t.path().join("m");
        assert_eq!(read_marker(&p), Marker::Missing);
        write_marker(&p, "abc\n").unwrap();
        assert_eq!(read_marker(&p), Marker::Boot("abc".into()));
        write_marker(
            &p,
            "sweep b2\n10.0.0.2 7 100 5\nnonsense\n2001:db8::1 8 1 2\n",
        )
        .unwrap();
        assert_eq!(
            read_marker(&p),
            Marker::Sweep(
                "b2".into(),
                vec![
                    Doomed {
                        ip: "10.0.0.2".parse().unwrap(),
                        ino: 7,
                        ctime: (100, 5)
                    },
                    Doomed {
                        ip: "2001:db8::1".parse().unwrap(),
                        ino: 8,
                        ctime: (1, 2)
                    }
                ]
            )
        );
        for junk in ["", "\n", "a b\n"] {
            write_marker(&p, junk).unwrap();
            assert_eq!(read_marker(&p), Marker::Missing, "{junk:?}");
        }
        assert!(!p.with_extension("rsboot.tmp").exists());
    }

    #[test]
    fn boot_of_this_kernel_is_readable() {
        let b = Boot::current().expect("boot id");
        assert_eq!(b.id.len(), 36, "{b:?}");
        assert!(b.start().expect("btime") > 1_000_000_000, "{b:?}");
    }
}
