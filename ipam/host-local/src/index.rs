//! The reservation index: what makes ADD, DEL and CHECK cost the same at 20,000 reservations as
//! at 10, while the Go plugin may write into the same directory.
//!
//! # Truth and hint
//! The truth is always the reservation files (`store`): their `O_EXCL` create is what keeps Go and
//! Rust from handing out one address twice. The index only answers "which files belong to this
//! owner?" without reading every file, and every answer is verified against the files.
//!
//! # Layout
//! `<dataDir>/.<network>.rsindex/` — outside the network directory (so Go's `filepath.Walk` never
//! sees it) and hidden; network names cannot start with '.', so it never collides with one.
//! - `<hex sha256(owner)>`: a symlink whose target is the owner's addresses, space-separated
//!   (one `readlink`/`symlink` each). The owner is the trimmed file content, so `id\r\nifname` and
//!   legacy `id` entries are both simply "files with this content". An owner with too many
//!   addresses for one symlink target gets `*`: look it up by scanning.
//! - `STAMP`: a symlink whose target records the network directory's mtime as we last left it.
//!
//! # Detecting foreign writes in O(1)
//! Any create or delete in the network directory changes its mtime. After every change *we* make
//! (holding the flock) we set the mtime ourselves to a sentinel — the current second plus a
//! random nanosecond — and record it in `STAMP`. At the start of every call (holding the flock)
//! the mtime must equal `STAMP`; otherwise someone else (the Go plugin, an admin, or a crash of
//! ours) changed the directory and the index is repaired with one full scan before use. A natural
//! mtime equals a random-nanosecond sentinel with negligible probability, which also defeats
//! coarse kernel timestamps (two writes in one clock tick leave the mtime unchanged, so recording
//! the natural mtime would miss the second). Order of our writes: reservation file → index entry
//! → mtime sentinel → `STAMP`; a crash anywhere leaves mtime ≠ `STAMP`, i.e. a repair, never a
//! wrong answer.
//!
//! # Refinements over the first design (and limits)
//! - Repair is done in place, not in a temp directory swapped in: `STAMP` is removed first, so an
//!   interrupted repair is simply redone, and every reader holds the flock, so nobody sees a half
//!   repair. In place, a repair after one foreign write costs one `readlink` per entry instead of
//!   creating and deleting every entry (20,000 inodes) again.
//! - A lookup whose entry does not match the files (which the stamp should make impossible) also
//!   triggers a repair; if the index cannot be written at all (read-only, EPERM on the mtime),
//!   every lookup falls back to a scan: slower, never wrong.
//! - Filesystems that cannot store nanosecond mtimes (FAT, 1-second ext3) never match a sentinel,
//!   so every call repairs: correct, but O(N). So does a directory shared over NFS, whose cached
//!   attributes could otherwise hide a remote write; host-local is node-local anyway.
//! - In a mixed deployment, the first Rust call after each Go write pays one scan (like every Go
//!   call always does).

use std::collections::HashMap;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::{symlink, DirBuilderExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::store::{NetDir, Owner};

const STAMP: &str = "STAMP";
const STAMP_VERSION: &str = "v1";
/// Whatever does not fit comfortably into one symlink target (PATH_MAX is 4096).
const MAX_TARGET: usize = 3800;
const OVERFLOW: &str = "*";

/// Where a network's index lives.
pub fn index_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(format!(".{name}.rsindex"))
}

/// The entry name of an owner.
pub fn key(owner: &Owner) -> String {
    let digest = Sha256::digest(owner.bytes());
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
        s.push(char::from_digit((b & 15) as u32, 16).unwrap_or('0'));
    }
    s
}

fn is_key(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn target_of(ips: &[IpAddr]) -> String {
    let mut s = String::new();
    for ip in ips {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(&ip.to_string());
    }
    if s.len() > MAX_TARGET {
        OVERFLOW.to_string()
    } else {
        s
    }
}

fn parse_target(t: &str) -> Option<Vec<IpAddr>> {
    t.split(' ').map(|s| s.parse().ok()).collect()
}

fn stamp_text((sec, nsec): (i64, u32)) -> String {
    format!("{STAMP_VERSION}:{sec}.{nsec:09}")
}

/// A sentinel mtime: this second, a random nanosecond, and never the current mtime.
fn sentinel(current: Option<(i64, u32)>) -> (i64, u32) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut n = 0u64;
    loop {
        // RandomState is seeded from the OS RNG; no unsafe, no extra dependency.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u32(std::process::id());
        let s = (now, (h.finish() % 1_000_000_000) as u32);
        if Some(s) != current {
            return s;
        }
        n += 1;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Entries match the files; lookups use them.
    Synced,
    /// Cannot be trusted or written: lookups scan.
    Unusable,
}

/// The index of one locked network directory.
#[derive(Debug)]
pub struct Index {
    path: PathBuf,
    state: State,
    /// Repairs done by this call (for tests and diagnostics).
    pub repairs: u32,
}

impl Index {
    /// Opens the index and brings it in sync with `dir` (repairing it if the directory changed
    /// behind our back). Never fails: an index that cannot be used makes lookups scan.
    pub fn open(dir: &NetDir, data_dir: &Path, name: &str) -> Index {
        let mut ix = Index {
            path: index_path(data_dir, name),
            state: State::Unusable,
            repairs: 0,
        };
        let stamp = fs::read_link(ix.path.join(STAMP)).ok();
        let in_sync = match (dir.mtime(), stamp) {
            (Ok(m), Some(s)) => s.as_os_str() == stamp_text(m).as_str(),
            _ => false,
        };
        if in_sync {
            ix.state = State::Synced;
        } else {
            ix.repair(dir);
        }
        ix
    }

    /// An index not yet trusted, for a caller that rebuilds it from its own scan ([`Index::reset`]).
    pub fn detached(data_dir: &Path, name: &str) -> Index {
        Index {
            path: index_path(data_dir, name),
            state: State::Unusable,
            repairs: 0,
        }
    }

    pub fn is_synced(&self) -> bool {
        self.state == State::Synced
    }

    /// The addresses reserved by `owner`, verified against the files.
    pub fn lookup(&mut self, dir: &NetDir, owner: &Owner) -> io::Result<Vec<IpAddr>> {
        let mut repaired = false;
        while self.state == State::Synced {
            let ips = match fs::read_link(self.path.join(key(owner))) {
                Ok(t) => match t.to_str() {
                    Some(OVERFLOW) => break,
                    Some(t) => parse_target(t),
                    None => None,
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(_) => None,
            };
            if let Some(ips) = ips {
                if self.verify(dir, owner, &ips)? {
                    return Ok(ips);
                }
            }
            if repaired {
                break;
            }
            // The entry contradicts the files: the index is wrong; rebuild it and ask again.
            self.repair(dir);
            repaired = true;
        }
        Ok(dir
            .scan()?
            .into_iter()
            .filter(|(_, o)| o == owner)
            .map(|(ip, _)| ip)
            .collect())
    }

    fn verify(&self, dir: &NetDir, owner: &Owner, ips: &[IpAddr]) -> io::Result<bool> {
        for ip in ips {
            if dir.owner_of(*ip)?.as_ref() != Some(owner) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Records that `owner` now holds exactly `ips` (none: the entry goes).
    pub fn record(&mut self, owner: &Owner, ips: &[IpAddr]) {
        if self.state != State::Synced {
            return;
        }
        if self.write_entry(&key(owner), ips).is_err() {
            self.state = State::Unusable;
        }
    }

    fn write_entry(&self, k: &str, ips: &[IpAddr]) -> io::Result<()> {
        let p = self.path.join(k);
        if ips.is_empty() {
            return match fs::remove_file(&p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let target = target_of(ips);
        match symlink(&target, &p) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Replace atomically: a new link beside it, renamed over it.
                let tmp = self.path.join(format!("{k}.new"));
                let _ = fs::remove_file(&tmp);
                symlink(&target, &tmp)?;
                fs::rename(&tmp, &p)
            }
            other => other,
        }
    }

    /// Seals our changes to the directory: sets its mtime to a fresh sentinel and records it.
    /// Without a synced index there is nothing to seal: the next call repairs.
    pub fn commit(&mut self, dir: &NetDir) {
        if self.state != State::Synced {
            return;
        }
        if self.write_stamp(dir).is_err() {
            self.state = State::Unusable;
        }
    }

    fn write_stamp(&self, dir: &NetDir) -> io::Result<()> {
        let s = sentinel(dir.mtime().ok());
        dir.set_mtime(s)?;
        let tmp = self.path.join(format!("{STAMP}.new"));
        let _ = fs::remove_file(&tmp);
        symlink(stamp_text(s), &tmp)?;
        fs::rename(&tmp, self.path.join(STAMP))
    }

    /// Rebuilds the index from one full scan, in place (see the module docs).
    pub fn repair(&mut self, dir: &NetDir) {
        self.repairs += 1;
        self.state = match self.try_repair(dir) {
            Ok(()) => State::Synced,
            Err(_) => State::Unusable,
        };
    }

    fn try_repair(&self, dir: &NetDir) -> io::Result<()> {
        // First invalidate, so an interrupted repair is redone by the next call.
        match fs::remove_file(self.path.join(STAMP)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)?;
        self.rebuild_from(dir.scan()?)?;
        self.write_stamp(dir)
    }

    /// Makes the entries exactly those of `reservations`, touching only what differs.
    pub fn rebuild_from(&self, reservations: Vec<(IpAddr, Owner)>) -> io::Result<()> {
        let mut want: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for (ip, owner) in reservations {
            want.entry(key(&owner)).or_default().push(ip);
        }
        for ips in want.values_mut() {
            ips.sort();
        }
        for e in fs::read_dir(&self.path)? {
            let e = e?;
            let name = e.file_name();
            let name = name.to_str().unwrap_or("");
            match want.remove(name) {
                Some(ips) if is_key(name) => {
                    let target = target_of(&ips);
                    if fs::read_link(e.path()).ok().as_deref() != Some(Path::new(&target)) {
                        self.write_entry(name, &ips)?;
                    }
                }
                _ if name == STAMP => {}
                // Stale entries, temp links from an interrupted write, anything foreign.
                _ => {
                    if e.file_type()?.is_dir() {
                        fs::remove_dir_all(e.path())?;
                    } else {
                        fs::remove_file(e.path())?;
                    }
                }
            }
        }
        for (k, ips) in want {
            self.write_entry(&k, &ips)?;
        }
        Ok(())
    }

    /// Seals an index just rebuilt from a scan the caller already did (GC).
    pub fn reset(&mut self, dir: &NetDir, reservations: Vec<(IpAddr, Owner)>) {
        let r = fs::remove_file(self.path.join(STAMP))
            .or_else(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .and_then(|_| {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.path)
            })
            .and_then(|_| self.rebuild_from(reservations))
            .and_then(|_| self.write_stamp(dir));
        self.state = if r.is_ok() {
            State::Synced
        } else {
            State::Unusable
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn setup(t: &TempDir) -> NetDir {
        NetDir::open(t.path(), "net").unwrap()
    }

    #[test]
    fn key_is_sha256_hex_of_the_content() {
        let k = key(&Owner::attachment("dummy", "eth0"));
        assert_eq!(k.len(), 64);
        assert!(is_key(&k));
        assert_ne!(k, key(&Owner::legacy("dummy")));
        // sha256("abc")
        assert_eq!(
            key(&Owner::legacy("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn fresh_index_is_built_and_stamped() {
        let t = TempDir::new("ix-fresh");
        let d = setup(&t);
        let ix = Index::open(&d, t.path(), "net");
        assert!(ix.is_synced());
        assert_eq!(ix.repairs, 1);
        let stamp = fs::read_link(t.path().join(".net.rsindex/STAMP")).unwrap();
        assert_eq!(stamp.to_str().unwrap(), stamp_text(d.mtime().unwrap()));
        drop(ix);
        // Nothing changed: the next call trusts it without a scan.
        let ix = Index::open(&d, t.path(), "net");
        assert!(ix.is_synced());
        assert_eq!(ix.repairs, 0);
    }

    #[test]
    fn record_lookup_commit() {
        let t = TempDir::new("ix-rec");
        let d = setup(&t);
        let mut ix = Index::open(&d, t.path(), "net");
        let o = Owner::attachment("c1", "eth0");
        assert!(d.reserve(ip("10.0.0.2"), &o).unwrap());
        assert!(d.reserve(ip("fd00::2"), &o).unwrap());
        ix.record(&o, &[ip("10.0.0.2"), ip("fd00::2")]);
        ix.commit(&d);
        let link = fs::read_link(t.path().join(".net.rsindex").join(key(&o))).unwrap();
        assert_eq!(link.to_str().unwrap(), "10.0.0.2 fd00::2");
        let mut ix = Index::open(&d, t.path(), "net");
        assert_eq!(ix.repairs, 0);
        assert_eq!(ix.lookup(&d, &o).unwrap(), vec![ip("10.0.0.2"), ip("fd00::2")]);
        assert!(ix.lookup(&d, &Owner::legacy("c1")).unwrap().is_empty());
        ix.record(&o, &[]);
        assert!(!t.path().join(".net.rsindex").join(key(&o)).exists());
    }

    #[test]
    fn foreign_write_triggers_repair() {
        let t = TempDir::new("ix-foreign");
        let d = setup(&t);
        let mut ix = Index::open(&d, t.path(), "net");
        let mine = Owner::attachment("mine", "eth0");
        assert!(d.reserve(ip("10.0.0.2"), &mine).unwrap());
        ix.record(&mine, &[ip("10.0.0.2")]);
        ix.commit(&d);
        // "Go" writes a reservation, a legacy one, and deletes ours — all without the index.
        let net = t.path().join("net");
        fs::write(net.join("10.0.0.3"), "go\r\neth0").unwrap();
        fs::write(net.join("10.0.0.4"), "old").unwrap();
        fs::remove_file(net.join("10.0.0.2")).unwrap();
        let mut ix = Index::open(&d, t.path(), "net");
        assert_eq!(ix.repairs, 1);
        assert!(ix.is_synced());
        assert_eq!(
            ix.lookup(&d, &Owner::attachment("go", "eth0")).unwrap(),
            vec![ip("10.0.0.3")]
        );
        assert_eq!(ix.lookup(&d, &Owner::legacy("old")).unwrap(), vec![ip("10.0.0.4")]);
        assert!(ix.lookup(&d, &mine).unwrap().is_empty());
        assert!(!t.path().join(".net.rsindex").join(key(&mine)).exists());
        assert_eq!(ix.repairs, 1);
    }

    #[test]
    fn foreign_write_within_the_same_clock_tick_is_still_seen() {
        // Restoring the natural mtime by hand is what a coarse clock does to two quick writes;
        // the sentinel must still differ.
        let t = TempDir::new("ix-tick");
        let d = setup(&t);
        let ix = Index::open(&d, t.path(), "net");
        drop(ix);
        let sealed = d.mtime().unwrap();
        fs::write(t.path().join("net/10.0.0.9"), "x\r\neth0").unwrap();
        // A writer that lands in the same tick as the sentinel's second, with a coarse ns.
        d.set_mtime((sealed.0, 0)).unwrap();
        let mut ix = Index::open(&d, t.path(), "net");
        assert_eq!(ix.repairs, 1);
        assert_eq!(
            ix.lookup(&d, &Owner::attachment("x", "eth0")).unwrap(),
            vec![ip("10.0.0.9")]
        );
    }

    #[test]
    fn wrong_entry_is_detected_by_verification() {
        let t = TempDir::new("ix-verify");
        let d = setup(&t);
        let mut ix = Index::open(&d, t.path(), "net");
        let o = Owner::attachment("a", "eth0");
        assert!(d.reserve(ip("10.0.0.5"), &o).unwrap());
        // A lying entry (stamp still valid): points at a file of someone else.
        assert!(d.reserve(ip("10.0.0.6"), &Owner::attachment("b", "eth0")).unwrap());
        ix.record(&o, &[ip("10.0.0.6")]);
        ix.commit(&d);
        let mut ix = Index::open(&d, t.path(), "net");
        assert_eq!(ix.repairs, 0);
        assert_eq!(ix.lookup(&d, &o).unwrap(), vec![ip("10.0.0.5")]);
        assert_eq!(ix.repairs, 1);
    }

    #[test]
    fn crash_before_stamp_means_repair() {
        let t = TempDir::new("ix-crash");
        let d = setup(&t);
        let mut ix = Index::open(&d, t.path(), "net");
        let o = Owner::attachment("a", "eth0");
        assert!(d.reserve(ip("10.0.0.5"), &o).unwrap());
        // Crash after the file, before the index entry and the stamp.
        drop(ix);
        let mut ix2 = Index::open(&d, t.path(), "net");
        assert_eq!(ix2.repairs, 1);
        assert_eq!(ix2.lookup(&d, &o).unwrap(), vec![ip("10.0.0.5")]);
        // Crash after entry + mtime, before STAMP: mtime no longer matches the old STAMP.
        ix = ix2;
        assert!(d.reserve(ip("10.0.0.6"), &o).unwrap());
        ix.record(&o, &[ip("10.0.0.5"), ip("10.0.0.6")]);
        d.set_mtime(sentinel(None)).unwrap();
        let ix3 = Index::open(&d, t.path(), "net");
        assert_eq!(ix3.repairs, 1);
    }

    #[test]
    fn repair_cleans_leftovers_and_keeps_good_entries() {
        let t = TempDir::new("ix-leftovers");
        let d = setup(&t);
        let mut ix = Index::open(&d, t.path(), "net");
        let o = Owner::attachment("a", "eth0");
        assert!(d.reserve(ip("10.0.0.5"), &o).unwrap());
        ix.record(&o, &[ip("10.0.0.5")]);
        ix.commit(&d);
        let x = t.path().join(".net.rsindex");
        symlink("junk", x.join("STAMP.new")).unwrap();
        symlink("10.9.9.9", x.join(key(&Owner::legacy("gone")))).unwrap();
        fs::create_dir(x.join("stray")).unwrap();
        fs::write(t.path().join("net/10.0.0.7"), "z").unwrap();
        let mut ix = Index::open(&d, t.path(), "net");
        assert_eq!(ix.repairs, 1);
        let mut names: Vec<String> = fs::read_dir(&x)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let mut want = vec![
            key(&o),
            key(&Owner::legacy("z")),
            "STAMP".to_string(),
        ];
        want.sort();
        assert_eq!(names, want);
        assert_eq!(ix.lookup(&d, &Owner::legacy("z")).unwrap(), vec![ip("10.0.0.7")]);
    }

    #[test]
    fn overflowing_owner_falls_back_to_scan() {
        let t = TempDir::new("ix-overflow");
        let d = setup(&t);
        let o = Owner::legacy("many");
        let mut want = Vec::new();
        for i in 0..200u16 {
            let a: IpAddr = format!("2001:db8:ffff:ffff:ffff:ffff:{:x}:1", i + 1).parse().unwrap();
            fs::write(t.path().join("net").join(a.to_string()), "many").unwrap();
            want.push(a);
        }
        let mut ix = Index::open(&d, t.path(), "net");
        let link = fs::read_link(t.path().join(".net.rsindex").join(key(&o))).unwrap();
        assert_eq!(link.to_str().unwrap(), OVERFLOW);
        let mut got = ix.lookup(&d, &o).unwrap();
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn unusable_index_still_answers_by_scanning() {
        let t = TempDir::new("ix-unusable");
        let d = setup(&t);
        // A file where the index directory should be.
        fs::write(t.path().join(".net.rsindex"), "").unwrap();
        fs::write(t.path().join("net/10.0.0.8"), "a\r\neth0").unwrap();
        let mut ix = Index::open(&d, t.path(), "net");
        assert!(!ix.is_synced());
        assert_eq!(
            ix.lookup(&d, &Owner::attachment("a", "eth0")).unwrap(),
            vec![ip("10.0.0.8")]
        );
        ix.record(&Owner::attachment("a", "eth0"), &[]);
        ix.commit(&d);
    }
}
