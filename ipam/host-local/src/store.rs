//! The on-disk store, byte-compatible with the reference's `backend/disk`, so the Go and Rust
//! plugins can share one data directory at the same time:
//!
//! ```text
//! <dataDir>/<network>/            0755, created by ADD/DEL/CHECK
//!     lock                        flock(LOCK_EX) target, created O_CREAT|O_RDONLY 0750
//!     <ip>                        one file per reservation, named by the canonical address
//!                                 (Go's net.IP.String()), content "<TrimSpace(id)>\r\n<ifname>",
//!                                 mode 0600; the reference creates it O_RDWR|O_CREAT|O_EXCL,
//!                                 we link() it in complete (see `NetDir::reserve`)
//!     last_reserved_ip.<N>        "<ip>" (no newline), rewritten in place after each reservation
//! ```
//!
//! Legacy files (written before ifnames existed) hold only `<id>`. The `O_EXCL` create (or our
//! `link`, which fails the same way) is what makes concurrent Go and Rust writers safe;
//! everything else (the index) is only a hint.
//!
//! `NetDir` holds the lock (std's `File::lock` is `flock`, so it interlocks with Go's
//! go-filemutex) for its whole lifetime: one lock per call, never per range set.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use cni_core::{CniError, Code};

use crate::range::canonical;

pub const LOCK_FILE: &str = "lock";
pub const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
const LINE_BREAK: &[u8] = b"\r\n";

/// Go's `strings.TrimSpace` over file content: Unicode white space at both ends.
pub fn go_trim(b: &[u8]) -> &[u8] {
    let b = b.trim_ascii();
    match std::str::from_utf8(b) {
        Ok(s) => s.trim().as_bytes(),
        Err(_) => b,
    }
}

/// Who a reservation file belongs to: its exact (trimmed) content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner(Vec<u8>);

impl Owner {
    /// The current format: `<TrimSpace(id)>\r\n<ifname>`.
    pub fn attachment(id: &str, ifname: &str) -> Owner {
        let id = go_trim(id.as_bytes());
        let mut v = Vec::with_capacity(id.len() + 2 + ifname.len());
        v.extend_from_slice(id);
        v.extend_from_slice(LINE_BREAK);
        v.extend_from_slice(ifname.as_bytes());
        Owner(v)
    }

    /// The legacy, id-only format.
    pub fn legacy(id: &str) -> Owner {
        Owner(go_trim(id.as_bytes()).to_vec())
    }

    /// From a file's raw content.
    pub fn from_content(raw: &[u8]) -> Owner {
        Owner(go_trim(raw).to_vec())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The container ID: everything before the first CRLF.
    pub fn container_id(&self) -> &[u8] {
        self.split().0
    }

    /// `(id, Some(ifname))`, or `(id, None)` for a legacy owner.
    pub fn split(&self) -> (&[u8], Option<&[u8]>) {
        match self.0.windows(2).position(|w| w == LINE_BREAK) {
            Some(i) => (&self.0[..i], Some(&self.0[i + 2..])),
            None => (&self.0, None),
        }
    }
}

/// Parses a directory entry name as a reservation: only canonical address names count, since
/// those are the only names either implementation creates.
pub fn ip_of_name(name: &str) -> Option<IpAddr> {
    let ip: IpAddr = name.parse().ok()?;
    (canonical(ip) == ip && ip.to_string() == name).then_some(ip)
}

fn io_err(what: &str, path: &Path, e: &io::Error) -> CniError {
    CniError::new(Code::Io, format!("{what} {}: {e}", path.display()))
}

/// The network's data directory, locked.
#[derive(Debug)]
pub struct NetDir {
    path: PathBuf,
    /// The directory itself, for its mtime (see `index`).
    handle: File,
    /// Held (flock'ed) until drop.
    _lock: File,
}

impl NetDir {
    /// `mkdir -p <dataDir>/<name>`, then takes the lock (blocking, like the reference).
    pub fn open(data_dir: &Path, name: &str) -> Result<NetDir, CniError> {
        let path = data_dir.join(name);
        let handle = match File::open(&path) {
            Ok(h) => h,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&path)
                    .map_err(|e| {
                        io_err("cannot create the data directory", &path, &e)
                            .with_details("ipam.dataDir must name a writable directory")
                    })?;
                File::open(&path).map_err(|e| io_err("cannot open", &path, &e))?
            }
            Err(e) => return Err(io_err("cannot open the data directory", &path, &e)),
        };
        let md = handle
            .metadata()
            .map_err(|e| io_err("cannot stat", &path, &e))?;
        if !md.is_dir() {
            return Err(CniError::new(
                Code::Io,
                format!("data directory {} is not a directory", path.display()),
            )
            .with_details("ipam.dataDir must name a writable directory"));
        }
        let lock_path = path.join(LOCK_FILE);
        let lock = lock_current(&lock_path)?;
        // The lock file can be removed by hand while a call holds it, and the next caller then
        // locks a new file: our own calls also lock the directory itself, which no `rm` can
        // replace (the Go plugin only takes `lock`; against it, O_EXCL still keeps addresses
        // unique). Always after `lock`, so no two orders ever wait on each other.
        handle
            .lock()
            .map_err(|e| io_err("cannot lock", &path, &e))?;
        Ok(NetDir {
            path,
            handle,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn ip_path(&self, ip: IpAddr) -> PathBuf {
        self.path.join(ip.to_string())
    }

    /// Creates the reservation file, complete; `Ok(false)` if the address is taken.
    ///
    /// The owner is written into an unnamed file (`O_TMPFILE`) which is then linked to the
    /// address's name: `link` fails with `EEXIST` exactly where the reference's `O_EXCL` create
    /// does, and the name never exists without its owner. The reference's create-then-write
    /// leaves an empty file when killed in between: it names no container, so the DEL of the
    /// killed ADD's container cannot find it, and only GC releases it. Where the filesystem has
    /// no `O_TMPFILE` (or `/proc` is not mounted), that create-then-write is the fallback.
    pub fn reserve(&self, ip: IpAddr, owner: &Owner) -> Result<bool, CniError> {
        let p = self.ip_path(ip);
        let unnamed = self
            .unnamed(owner)
            .map_err(|e| io_err("cannot write reservation", &p, &e))?;
        if let Some(f) = unnamed {
            let fd = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
            // Any other failure than "taken" falls back, which reports a real error as its own.
            if let Ok(linked) = link_new(&fd, &p, true) {
                return Ok(linked);
            }
        }
        let mut f = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io_err("cannot create reservation", &p, &e)),
        };
        crate::crash::point("reserve");
        if let Err(e) = f.write_all(owner.bytes()) {
            drop(f);
            let _ = fs::remove_file(&p);
            return Err(io_err("cannot write reservation", &p, &e));
        }
        Ok(true)
    }

    /// A new file in the directory, holding `owner` and not linked to any name; `None` where
    /// the filesystem cannot make one (the caller then creates the file by name).
    fn unnamed(&self, owner: &Owner) -> io::Result<Option<File>> {
        let Ok(mut f) = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o600)
            .open(&self.path)
        else {
            return Ok(None);
        };
        crate::crash::point("reserve");
        f.write_all(owner.bytes())?;
        Ok(Some(f))
    }

    /// Makes an already written file (a recycled spare, see `pool`) the reservation of `ip`:
    /// `link` fails with `EEXIST` exactly where `O_EXCL` would. `Ok(false)` if taken.
    pub fn reserve_linked(&self, ip: IpAddr, spare: &Path) -> io::Result<bool> {
        link_new(spare, &self.ip_path(ip), false)
    }

    /// Removes a reservation file; a missing one is fine (DEL is idempotent).
    pub fn release(&self, ip: IpAddr) -> Result<(), CniError> {
        let p = self.ip_path(ip);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("cannot remove reservation", &p, &e)),
        }
    }

    /// The owner recorded in an address's file, `None` if there is no such file.
    pub fn owner_of(&self, ip: IpAddr) -> io::Result<Option<Owner>> {
        read_small(&self.ip_path(ip)).map(|c| c.map(|c| Owner::from_content(&c)))
    }

    pub fn last_reserved(&self, range_id: usize) -> Option<IpAddr> {
        last_reserved_at(&self.path, range_id)
    }

    /// Rewrites `last_reserved_ip.<N>` in place with the same resulting bytes as Go's
    /// `os.WriteFile`, but without `O_TRUNC`: truncating to zero frees the data block, which
    /// costs as much as creating a file on ext4. Overwrite, then cut any longer old tail.
    pub fn set_last_reserved(&self, range_id: usize, ip: IpAddr) -> Result<(), CniError> {
        let p = self.path.join(format!("{LAST_RESERVED_PREFIX}{range_id}"));
        let text = ip.to_string();
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&p)
            .and_then(|f| {
                let old = f.metadata()?.len();
                f.write_all_at(text.as_bytes(), 0)?;
                if old > text.len() as u64 {
                    f.set_len(text.len() as u64)?;
                }
                Ok(())
            })
            .map_err(|e| io_err("cannot write", &p, &e))
    }

    /// Every reservation with its owner: the full scan the index exists to avoid.
    pub fn scan(&self) -> io::Result<Vec<(IpAddr, Owner)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.path)? {
            let e = e?;
            let Some(ip) = e.file_name().to_str().and_then(ip_of_name) else {
                continue;
            };
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            // A file removed between listing and reading is simply not there any more.
            if let Some(c) = read_small(&e.path())? {
                out.push((ip, Owner::from_content(&c)));
            }
        }
        Ok(out)
    }

    pub fn used_ips(&self) -> io::Result<Vec<IpAddr>> {
        used_ips_at(&self.path)
    }

    /// The directory's mtime as (seconds, nanoseconds).
    pub fn mtime(&self) -> io::Result<(i64, u32)> {
        let md = self.handle.metadata()?;
        Ok((md.mtime(), md.mtime_nsec() as u32))
    }

    pub fn set_mtime(&self, (sec, nsec): (i64, u32)) -> io::Result<()> {
        let secs = u64::try_from(sec).map_err(|_| io::Error::other("negative mtime"))?;
        self.handle
            .set_modified(UNIX_EPOCH + Duration::new(secs, nsec))
    }
}

/// `link(src, dst)`; `Ok(false)` when `dst` exists. `follow`: `src` is a symlink to the file
/// to link (the `/proc/self/fd` name of an unnamed file, which plain `link` would not follow).
fn link_new(src: &Path, dst: &Path, follow: bool) -> io::Result<bool> {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let (src, dst) = (c(src)?, c(dst)?);
    let flags = if follow { libc::AT_SYMLINK_FOLLOW } else { 0 };
    // SAFETY: both paths are NUL-terminated and outlive the call; AT_FDCWD resolves them as
    // link(2) does.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            src.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    match io::Error::last_os_error() {
        e if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        e => Err(e),
    }
}

/// Locks `lock`, and makes sure the file locked is the one the path names when we get it: a
/// caller that opened it before someone removed it would otherwise hold a lock nobody else
/// takes.
fn lock_current(lock_path: &Path) -> Result<File, CniError> {
    for _ in 0..16 {
        let lock = open_lock(lock_path).map_err(|e| {
            io_err("cannot open the lock file", lock_path, &e)
                .with_details("ipam.dataDir must name a writable directory")
        })?;
        lock.lock()
            .map_err(|e| io_err("cannot lock", lock_path, &e))?;
        let held = lock
            .metadata()
            .map_err(|e| io_err("cannot stat", lock_path, &e))?;
        match fs::metadata(lock_path) {
            Ok(m) if m.ino() == held.ino() && m.dev() == held.dev() => return Ok(lock),
            // Removed or replaced while we waited: lock the current one.
            _ => continue,
        }
    }
    Err(CniError::new(
        Code::TryAgainLater,
        format!("the lock file {} keeps being replaced", lock_path.display()),
    ))
}

fn open_lock(p: &Path) -> io::Result<File> {
    // Read-only with O_CREAT, as go-filemutex: std only adds O_CREAT with write access.
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CREAT)
        .mode(0o750)
        .open(p)
}

/// Takes the reference's `FileLock` on a path: a directory means `<dir>/lock`.
pub fn lock_path(p: &Path) -> io::Result<File> {
    let target = if fs::metadata(p)?.is_dir() {
        p.join(LOCK_FILE)
    } else {
        p.to_path_buf()
    };
    let f = open_lock(&target)?;
    f.lock()?;
    Ok(f)
}

/// A whole small file, `None` if it does not exist.
fn read_small(p: &Path) -> io::Result<Option<Vec<u8>>> {
    let mut f = match File::open(p) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut v = Vec::with_capacity(128);
    f.read_to_end(&mut v)?;
    Ok(Some(v))
}

/// `last_reserved_ip.<N>` parsed as Go does (`net.ParseIP` of the exact content).
pub fn last_reserved_at(dir: &Path, range_id: usize) -> Option<IpAddr> {
    let c = read_small(&dir.join(format!("{LAST_RESERVED_PREFIX}{range_id}"))).ok()??;
    std::str::from_utf8(&c)
        .ok()?
        .parse::<IpAddr>()
        .ok()
        .map(canonical)
}

/// The addresses reserved in `dir`, from the names alone.
pub fn used_ips_at(dir: &Path) -> io::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        if let Some(ip) = e?.file_name().to_str().and_then(ip_of_name) {
            out.push(ip);
        }
    }
    Ok(out)
}

/// Whether an address has a reservation file (for STATUS, which takes no lock).
pub fn is_reserved_at(dir: &Path, ip: IpAddr) -> bool {
    fs::symlink_metadata(dir.join(ip.to_string())).is_ok()
}

/// The set of used addresses as numbers, for the allocator's dense-region fallback.
pub fn used_set(ips: &[IpAddr], v4: bool) -> HashSet<u128> {
    ips.iter()
        .filter(|ip| ip.is_ipv4() == v4)
        .map(|ip| crate::range::to_u128(*ip))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::os::unix::fs::PermissionsExt;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn owner_format_and_trim() {
        assert_eq!(Owner::attachment("dummy", "eth0").bytes(), b"dummy\r\neth0");
        assert_eq!(
            Owner::attachment("   dummy\n ", "eth0").bytes(),
            b"dummy\r\neth0"
        );
        assert_eq!(Owner::legacy(" dummy\t").bytes(), b"dummy");
        assert_eq!(
            Owner::from_content(b"dummy\r\neth0\n"),
            Owner::attachment("dummy", "eth0")
        );
        assert_eq!(
            Owner::from_content(b"\xc2\xa0dummy\r\n"),
            Owner::legacy("dummy")
        );
        let o = Owner::attachment("c1", "eth0");
        assert_eq!(o.split(), (&b"c1"[..], Some(&b"eth0"[..])));
        assert_eq!(Owner::legacy("c1").split(), (&b"c1"[..], None));
        assert_eq!(o.container_id(), b"c1");
    }

    #[test]
    fn names() {
        assert_eq!(ip_of_name("10.1.2.3"), Some(ip("10.1.2.3")));
        assert_eq!(ip_of_name("2001:db8::2"), Some(ip("2001:db8::2")));
        assert_eq!(ip_of_name("2001:DB8::2"), None);
        assert_eq!(ip_of_name("2001:db8:0::2"), None);
        assert_eq!(ip_of_name("::ffff:10.1.2.3"), None);
        assert_eq!(ip_of_name("lock"), None);
        assert_eq!(ip_of_name("last_reserved_ip.0"), None);
    }

    #[test]
    fn byte_compatible_files() {
        let t = TempDir::new("store");
        let d = NetDir::open(t.path(), "mynet").unwrap();
        let o = Owner::attachment("dummy", "eth0");
        assert!(d.reserve(ip("10.1.2.2"), &o).unwrap());
        assert!(!d.reserve(ip("10.1.2.2"), &o).unwrap());
        assert!(d.reserve(ip("2001:db8:1::2"), &o).unwrap());
        d.set_last_reserved(0, ip("10.1.2.2")).unwrap();
        d.set_last_reserved(1, ip("2001:db8:1::2")).unwrap();
        let net = t.path().join("mynet");
        assert_eq!(fs::read(net.join("10.1.2.2")).unwrap(), b"dummy\r\neth0");
        assert_eq!(
            fs::read(net.join("2001:db8:1::2")).unwrap(),
            b"dummy\r\neth0"
        );
        assert_eq!(
            fs::read(net.join("last_reserved_ip.0")).unwrap(),
            b"10.1.2.2"
        );
        assert_eq!(
            fs::read(net.join("last_reserved_ip.1")).unwrap(),
            b"2001:db8:1::2"
        );
        let mode = |p: &str| fs::metadata(net.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("10.1.2.2") & !0o022, 0o600);
        assert_eq!(mode("last_reserved_ip.0") & !0o022, 0o600);
        assert!(fs::metadata(net.join("lock")).unwrap().is_file());
        assert_eq!(d.last_reserved(0), Some(ip("10.1.2.2")));
        assert_eq!(d.last_reserved(7), None);
        // Rewritten in place: shorter content leaves no tail, longer content fits.
        d.set_last_reserved(0, ip("10.1.2.9")).unwrap();
        assert_eq!(
            fs::read(net.join("last_reserved_ip.0")).unwrap(),
            b"10.1.2.9"
        );
        d.set_last_reserved(0, ip("10.1.2.100")).unwrap();
        assert_eq!(
            fs::read(net.join("last_reserved_ip.0")).unwrap(),
            b"10.1.2.100"
        );
        d.set_last_reserved(0, ip("10.1.2.9")).unwrap();
        assert_eq!(
            fs::read(net.join("last_reserved_ip.0")).unwrap(),
            b"10.1.2.9"
        );
        let mut s = d.scan().unwrap();
        s.sort_by_key(|(i, _)| *i);
        assert_eq!(
            s,
            vec![
                (ip("10.1.2.2"), o.clone()),
                (ip("2001:db8:1::2"), o.clone())
            ]
        );
        assert_eq!(d.owner_of(ip("10.1.2.2")).unwrap(), Some(o.clone()));
        d.release(ip("10.1.2.2")).unwrap();
        d.release(ip("10.1.2.2")).unwrap();
        assert_eq!(d.owner_of(ip("10.1.2.2")).unwrap(), None);
        let mut used = d.used_ips().unwrap();
        used.sort();
        assert_eq!(used, vec![ip("2001:db8:1::2")]);
        // last_reserved is parsed exactly: a trailing newline is not an address.
        fs::write(net.join("last_reserved_ip.3"), "10.1.2.3\n").unwrap();
        assert_eq!(d.last_reserved(3), None);
        // The lock file's mtime and content are untouched by locking.
        assert_eq!(fs::read(net.join("lock")).unwrap(), b"");
    }

    #[test]
    fn unwritable_data_dir_is_an_io_error_naming_the_path() {
        let t = TempDir::new("store-bad");
        let file = t.path().join("afile");
        fs::write(&file, "x").unwrap();
        let e = NetDir::open(&file, "net").unwrap_err();
        assert_eq!(e.code, 5);
        assert!(e.msg.contains(&file.display().to_string()), "{}", e.msg);
        let e = NetDir::open(t.path(), "afile").unwrap_err();
        assert_eq!(e.code, 5);
        assert!(e.msg.contains("is not a directory"), "{}", e.msg);
    }

    #[test]
    fn file_lock_on_file_and_directory() {
        let t = TempDir::new("lock");
        let f = t.path().join("x");
        fs::write(&f, "").unwrap();
        let l1 = lock_path(&f).unwrap();
        // A second lock on the same file must block: try_lock says so.
        let other = File::open(&f).unwrap();
        assert!(other.try_lock().is_err());
        drop(l1);
        assert!(other.try_lock().is_ok());
        drop(other);
        let l2 = lock_path(t.path()).unwrap();
        assert!(t.path().join("lock").is_file());
        let other = File::open(t.path().join("lock")).unwrap();
        assert!(other.try_lock().is_err());
        drop(l2);
        assert!(other.try_lock().is_ok());
    }

    #[test]
    fn netdir_holds_the_lock_until_dropped() {
        let t = TempDir::new("lock2");
        let d = NetDir::open(t.path(), "n").unwrap();
        let other = File::open(t.path().join("n/lock")).unwrap();
        assert!(other.try_lock().is_err());
        drop(d);
        assert!(other.try_lock().is_ok());
    }
}
