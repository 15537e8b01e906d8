//! Recycled reservation inodes. On this machine's ext4, creating a file costs ~0.45 ms (more
//! than everything else an ADD does, process start-up aside), while `rename` and `link` cost
//! ~20 µs. So DEL moves a released reservation file into `<dataDir>/.<network>.rspool/<k>`
//! instead of unlinking it, and ADD rewrites such a spare with the new owner's content and
//! `link`s it to the address's name — which fails with `EEXIST` exactly where `O_EXCL` would,
//! so the Go plugin's exclusion still holds, and the file appears already complete.
//!
//! Safety: a spare is only rewritten when its link count is 1, i.e. it is reachable only from
//! the pool (a crash between `link` and the pool name's `unlink` leaves a count of 2: that name
//! is dropped instead). The number of spares lives in the index header and is only trusted when
//! the index is in sync; every rebuild resets it to 0, so stale pool names are never reused (a
//! later DEL's `rename` replaces them). Without a synced index the pool is not used at all.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::store::Owner;

/// Spares kept at most; more DELs unlink as usual.
pub const CAP: u32 = 32;

pub fn pool_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(format!(".{name}.rspool"))
}

#[derive(Debug)]
pub struct Pool {
    dir: PathBuf,
    count: u32,
    enabled: bool,
    /// The top spare, already holding the owner's content.
    ready: Option<PathBuf>,
}

impl Pool {
    /// `count` spares as recorded by a synced index; `enabled: false` never touches the pool.
    pub fn new(data_dir: &Path, name: &str, count: u32, enabled: bool) -> Pool {
        Pool {
            dir: pool_path(data_dir, name),
            count: if enabled { count.min(CAP) } else { 0 },
            enabled,
            ready: None,
        }
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    fn name(&self, k: u32) -> PathBuf {
        self.dir.join(k.to_string())
    }

    /// A spare rewritten with `owner`'s content (the same for every candidate address of one
    /// ADD), or `None`: then create the file as usual.
    pub fn prepare(&mut self, owner: &Owner) -> Option<&Path> {
        if self.ready.is_none() {
            while self.count > 0 {
                let p = self.name(self.count - 1);
                match rewrite(&p, owner) {
                    Ok(true) => {
                        self.ready = Some(p);
                        break;
                    }
                    // Linked elsewhere, or unusable: drop this name (never the inode's others).
                    Ok(false) | Err(_) => {
                        let _ = fs::remove_file(&p);
                        self.count -= 1;
                    }
                }
            }
        }
        self.ready.as_deref()
    }

    /// The prepared spare now is a reservation: drop its pool name.
    pub fn consumed(&mut self) {
        if let Some(p) = self.ready.take() {
            let _ = fs::remove_file(p);
            self.count -= 1;
        }
    }

    /// Linking failed for a reason other than "taken": stop using the pool in this call.
    pub fn disable(&mut self) {
        self.enabled = false;
        self.ready = None;
    }

    /// Moves a released reservation file into the pool; `false`: the caller unlinks it.
    pub fn give(&mut self, file: &Path) -> bool {
        if !self.enabled || self.count >= CAP || self.ready.is_some() {
            return false;
        }
        let target = self.name(self.count);
        let moved = match fs::rename(file, &target) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && file.exists() => {
                // The pool directory does not exist yet.
                fs::create_dir(&self.dir)
                    .or_else(|e| {
                        if e.kind() == io::ErrorKind::AlreadyExists {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .and_then(|_| fs::rename(file, &target))
            }
            other => other,
        };
        if moved.is_ok() {
            self.count += 1;
        }
        moved.is_ok()
    }
}

/// Rewrites a spare in place with `owner`'s content and mode 0600; `Ok(false)` if it is not a
/// lone regular file.
fn rewrite(p: &Path, owner: &Owner) -> io::Result<bool> {
    let f: File = OpenOptions::new().read(true).write(true).open(p)?;
    let md = f.metadata()?;
    if !md.is_file() || md.nlink() != 1 {
        return Ok(false);
    }
    let content = owner.bytes();
    f.write_all_at(content, 0)?;
    if md.len() > content.len() as u64 {
        f.set_len(content.len() as u64)?;
    }
    if md.mode() & 0o7777 != 0o600 {
        f.set_permissions(Permissions::from_mode(0o600))?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn give_prepare_consume() {
        let t = TempDir::new("pool");
        let mut p = Pool::new(t.path(), "n", 0, true);
        assert!(p.prepare(&Owner::legacy("x")).is_none());
        let f = t.path().join("10.0.0.9");
        fs::write(&f, "someone-much-longer\r\neth0").unwrap();
        fs::set_permissions(&f, Permissions::from_mode(0o644)).unwrap();
        assert!(p.give(&f));
        assert!(!f.exists());
        assert_eq!(p.count(), 1);
        let o = Owner::attachment("c1", "eth0");
        let spare = p.prepare(&o).unwrap().to_path_buf();
        assert_eq!(fs::read(&spare).unwrap(), b"c1\r\neth0");
        assert_eq!(
            fs::metadata(&spare).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::hard_link(&spare, t.path().join("10.0.0.10")).unwrap();
        p.consumed();
        assert_eq!(p.count(), 0);
        assert!(!spare.exists());
        assert_eq!(fs::read(t.path().join("10.0.0.10")).unwrap(), b"c1\r\neth0");
    }

    #[test]
    fn a_spare_linked_elsewhere_is_never_rewritten() {
        let t = TempDir::new("pool-nlink");
        let mut p = Pool::new(t.path(), "n", 0, true);
        let f = t.path().join("a");
        fs::write(&f, "live\r\neth0").unwrap();
        assert!(p.give(&f));
        // As after a crash between link and unlink: the spare is also a live reservation.
        fs::hard_link(p.name(0), t.path().join("10.0.0.5")).unwrap();
        assert!(p.prepare(&Owner::legacy("new")).is_none());
        assert_eq!(p.count(), 0);
        assert_eq!(
            fs::read(t.path().join("10.0.0.5")).unwrap(),
            b"live\r\neth0"
        );
    }

    #[test]
    fn disabled_and_full_pools_are_not_used() {
        let t = TempDir::new("pool-off");
        let f = t.path().join("a");
        fs::write(&f, "x").unwrap();
        let mut off = Pool::new(t.path(), "n", 5, false);
        assert_eq!(off.count(), 0);
        assert!(!off.give(&f));
        let mut full = Pool::new(t.path(), "n", CAP, true);
        assert!(!full.give(&f));
        assert!(f.exists());
        // A recorded count whose names are gone degrades to "no spares".
        let mut ghost = Pool::new(t.path(), "n", 3, true);
        assert!(ghost.prepare(&Owner::legacy("x")).is_none());
        assert_eq!(ghost.count(), 0);
    }
}
