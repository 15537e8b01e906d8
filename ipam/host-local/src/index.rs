//! The reservation index: what makes ADD, DEL and CHECK cost the same at 20,000 reservations as
//! at 10, while the Go plugin may write into the same directory.
//!
//! # Truth and hint
//! The truth is always the reservation files (`store`): their `O_EXCL` create is what keeps Go and
//! Rust from handing out one address twice. The index only answers "which files belong to this
//! owner?" without reading every file, and every answer is verified against the files before it
//! is used.
//!
//! # Layout
//! One file, `<dataDir>/.<network>.rsindex`: outside the network directory (Go's `filepath.Walk`
//! never sees it), hidden, and never a network's name (those cannot start with '.'). It is an
//! open-addressing hash table, updated in place with `pread`/`pwrite`:
//! - a 64-byte header: magic, the stamp (below), the slot count (a power of two), the numbers
//!   of used and live slots, and the number of spare inodes in the pool (see `pool`), which is
//!   trusted only together with the stamp;
//! - 128-byte slots: state (empty, live, deleted), the first 16 bytes of sha256(owner) as key, and
//!   the owner's addresses (up to six; more is marked "overflow" and looked up by scanning).
//!   The owner is the trimmed file content, so `id\r\nifname` and legacy `id` entries are both
//!   simply "files with this content".
//!
//! The table is rebuilt (from one scan of the files) when it is more than half used, so a
//! lookup touches one or two slots.
//!
//! # Detecting foreign writes in O(1)
//! Any create or delete in the network directory changes its mtime. After every change *we* make
//! (holding the flock) we set the mtime ourselves to a sentinel — the current second plus a
//! random nanosecond — and record it as the stamp. At the start of every call (holding the flock)
//! the mtime must equal the stamp; otherwise someone else (the Go plugin, an admin, or a crash of
//! ours) changed the directory, and the index is rebuilt with one full scan before use. A natural
//! mtime equals a random-nanosecond sentinel with negligible probability, which also defeats
//! coarse kernel timestamps (two writes in one clock tick leave the mtime unchanged, so recording
//! the natural mtime would miss the second). Order of our writes: reservation file → slot →
//! mtime sentinel → stamp; a crash anywhere leaves mtime ≠ stamp, i.e. a rebuild, never a wrong
//! answer. A rebuild first invalidates the stamp, so an interrupted rebuild is redone.
//!
//! # Refinements over the first design, and limits
//! - The first design kept one symlink per owner and a `STAMP` symlink in a hidden directory.
//!   On this machine's ext4 every inode creation (file or symlink) costs ~0.45 ms, the same as
//!   the reservation file itself, so that design tripled the unavoidable cost of an ADD. The
//!   single table file creates no inode per call: a lookup is a `pread`, an update a `pwrite`.
//! - A slot that contradicts the files (which the stamp should make impossible) also triggers a
//!   rebuild. If the index cannot be written at all (read-only, EPERM on the mtime), lookups fall
//!   back to a scan: slower, never wrong.
//! - Filesystems that cannot store nanosecond mtimes (FAT, 1-second ext3) never match a sentinel,
//!   so every call rebuilds: correct, but O(N). So does a directory shared over NFS, whose cached
//!   attributes could otherwise hide a remote write; host-local is node-local anyway.
//! - In a mixed deployment, the first Rust call after each Go write pays one scan (as every Go
//!   call always does).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::store::{NetDir, Owner};

const MAGIC: &[u8; 8] = b"HLRSIX01";
const HEADER: u64 = 64;
const SLOT: usize = 128;
const MAX_IPS: usize = 6;
const EMPTY: u8 = 0;
const LIVE: u8 = 1;
const DELETED: u8 = 2;
const OVERFLOW: u8 = 255;
const MIN_SLOTS: u32 = 64;
/// A stamp no mtime can have (nanoseconds < 10^9).
const NO_STAMP: (i64, u32) = (0, u32::MAX);

/// Where a network's index lives.
pub fn index_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(format!(".{name}.rsindex"))
}

/// Whether nothing but us changed `dir` since our last call: the index's stamp is still its
/// mtime. Reads the header only (no repair).
pub fn is_sealed(dir: &NetDir, data_dir: &Path, name: &str) -> bool {
    let mut b = [0u8; HEADER as usize];
    let header = File::open(index_path(data_dir, name))
        .and_then(|f| f.read_exact_at(&mut b, 0))
        .ok()
        .and_then(|_| Header::decode(&b));
    matches!((header, dir.mtime()), (Some(h), Ok(m)) if h.stamp == m)
}

/// The key of an owner: the first 16 bytes of sha256 of its content.
pub fn key(owner: &Owner) -> [u8; 16] {
    let d = Sha256::digest(owner.bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

/// A sentinel mtime: this second, a random nanosecond, and never the current mtime.
fn sentinel(current: Option<(i64, u32)>) -> (i64, u32) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut n = 0u64;
    loop {
        // RandomState is seeded from the OS RNG: no unsafe, no extra dependency.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n);
        let s = (now, (h.finish() % 1_000_000_000) as u32);
        if Some(s) != current {
            return s;
        }
        n += 1;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    stamp: (i64, u32),
    nslots: u32,
    used: u32,
    live: u32,
    /// Spare inodes in the pool (see `pool`).
    spares: u32,
}

impl Header {
    fn encode(&self) -> [u8; HEADER as usize] {
        let mut b = [0u8; HEADER as usize];
        b[..8].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&self.stamp.0.to_le_bytes());
        b[16..20].copy_from_slice(&self.stamp.1.to_le_bytes());
        b[20..24].copy_from_slice(&self.nslots.to_le_bytes());
        b[24..28].copy_from_slice(&self.used.to_le_bytes());
        b[28..32].copy_from_slice(&self.live.to_le_bytes());
        b[32..36].copy_from_slice(&self.spares.to_le_bytes());
        b
    }

    fn decode(b: &[u8; HEADER as usize]) -> Option<Header> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut sec = [0u8; 8];
        sec.copy_from_slice(&b[8..16]);
        let h = Header {
            stamp: (i64::from_le_bytes(sec), u32_at(16)),
            nslots: u32_at(20),
            used: u32_at(24),
            live: u32_at(28),
            spares: u32_at(32),
        };
        let sane = &b[..8] == MAGIC
            && h.nslots.is_power_of_two()
            && h.nslots >= MIN_SLOTS
            && h.used < h.nslots
            && h.live <= h.used
            && h.spares <= crate::pool::CAP;
        sane.then_some(h)
    }
}

/// One slot, decoded. `ips: None` means overflow (look up by scanning).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    state: u8,
    key: [u8; 16],
    ips: Option<Vec<IpAddr>>,
}

impl Slot {
    fn encode(&self) -> [u8; SLOT] {
        let mut b = [0u8; SLOT];
        b[0] = self.state;
        b[2..18].copy_from_slice(&self.key);
        match &self.ips {
            Some(ips) if ips.len() <= MAX_IPS => {
                b[1] = ips.len() as u8;
                for (i, ip) in ips.iter().enumerate() {
                    let at = 18 + i * 17;
                    match ip {
                        IpAddr::V4(a) => {
                            b[at] = 4;
                            b[at + 1..at + 5].copy_from_slice(&a.octets());
                        }
                        IpAddr::V6(a) => {
                            b[at] = 6;
                            b[at + 1..at + 17].copy_from_slice(&a.octets());
                        }
                    }
                }
            }
            _ => b[1] = OVERFLOW,
        }
        b
    }

    fn decode(b: &[u8; SLOT]) -> Option<Slot> {
        let mut key = [0u8; 16];
        key.copy_from_slice(&b[2..18]);
        let n = b[1];
        let ips = if n == OVERFLOW {
            None
        } else if n as usize <= MAX_IPS {
            let mut v = Vec::with_capacity(n as usize);
            for i in 0..n as usize {
                let at = 18 + i * 17;
                let mut o = [0u8; 16];
                o.copy_from_slice(&b[at + 1..at + 17]);
                v.push(match b[at] {
                    4 => IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3])),
                    6 => IpAddr::V6(Ipv6Addr::from(o)),
                    _ => return None,
                });
            }
            Some(v)
        } else {
            return None;
        };
        matches!(b[0], EMPTY | LIVE | DELETED).then_some(Slot {
            state: b[0],
            key,
            ips,
        })
    }
}

fn home(key: &[u8; 16], nslots: u32) -> u32 {
    let mut h = [0u8; 4];
    h.copy_from_slice(&key[..4]);
    u32::from_le_bytes(h) & (nslots - 1)
}

fn slot_offset(i: u32) -> u64 {
    HEADER + i as u64 * SLOT as u64
}

fn bad_data() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "corrupt index slot")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The table matches the files; lookups use it.
    Synced,
    /// Cannot be trusted or written: lookups scan.
    Unusable,
}

/// Where a key is, or where it would go.
enum Probe {
    Found(u32, Slot),
    Absent { free: u32, fresh: bool },
}

/// The index of one locked network directory.
#[derive(Debug)]
pub struct Index {
    path: PathBuf,
    file: Option<File>,
    header: Header,
    state: State,
    /// Rebuilds done by this call (for tests and diagnostics).
    pub repairs: u32,
}

impl Index {
    /// An index not yet trusted, for a caller that rebuilds it from its own scan
    /// ([`Index::reset`]).
    pub fn detached(data_dir: &Path, name: &str) -> Index {
        Index {
            path: index_path(data_dir, name),
            file: None,
            header: Header {
                stamp: NO_STAMP,
                nslots: MIN_SLOTS,
                used: 0,
                live: 0,
                spares: 0,
            },
            state: State::Unusable,
            repairs: 0,
        }
    }

    /// Opens the index and brings it in sync with `dir` (rebuilding it if the directory changed
    /// behind our back). Never fails: an index that cannot be used makes lookups scan.
    pub fn open(dir: &NetDir, data_dir: &Path, name: &str) -> Index {
        let mut ix = Index::detached(data_dir, name);
        let file = OpenOptions::new().read(true).write(true).open(&ix.path);
        if let Ok(f) = file {
            let mut b = [0u8; HEADER as usize];
            let header = f
                .read_exact_at(&mut b, 0)
                .ok()
                .and_then(|_| Header::decode(&b));
            if let (Some(h), Ok(m)) = (header, dir.mtime()) {
                ix.header = h;
                if h.stamp == m {
                    ix.state = State::Synced;
                }
            }
            ix.file = Some(f);
        }
        if ix.state != State::Synced {
            ix.repair(dir);
        }
        ix
    }

    pub fn is_synced(&self) -> bool {
        self.state == State::Synced
    }

    /// Spares in the pool, as recorded with the stamp (0 unless synced).
    pub fn spares(&self) -> u32 {
        if self.is_synced() {
            self.header.spares
        } else {
            0
        }
    }

    /// Records the pool's size; written with the next stamp.
    pub fn set_spares(&mut self, n: u32) {
        self.header.spares = n;
    }

    fn read_slot(&self, i: u32) -> io::Result<Slot> {
        let f = self.file.as_ref().ok_or_else(bad_data)?;
        let mut b = [0u8; SLOT];
        f.read_exact_at(&mut b, slot_offset(i))?;
        Slot::decode(&b).ok_or_else(bad_data)
    }

    fn write_slot(&self, i: u32, s: &Slot) -> io::Result<()> {
        let f = self.file.as_ref().ok_or_else(bad_data)?;
        f.write_all_at(&s.encode(), slot_offset(i))
    }

    fn write_header(&self) -> io::Result<()> {
        let f = self.file.as_ref().ok_or_else(bad_data)?;
        f.write_all_at(&self.header.encode(), 0)
    }

    /// Linear probing from the key's home slot.
    fn probe(&self, key: &[u8; 16]) -> io::Result<Probe> {
        let n = self.header.nslots;
        let mut i = home(key, n);
        let mut tomb = None;
        for _ in 0..n {
            let s = self.read_slot(i)?;
            match s.state {
                EMPTY => {
                    return Ok(Probe::Absent {
                        free: tomb.unwrap_or(i),
                        fresh: tomb.is_none(),
                    })
                }
                LIVE if s.key == *key => return Ok(Probe::Found(i, s)),
                DELETED if tomb.is_none() => tomb = Some(i),
                _ => {}
            }
            i = (i + 1) & (n - 1);
        }
        // Never full (rebuilt at half), but a corrupt header could say otherwise.
        Err(bad_data())
    }

    /// The addresses reserved by `owner`, verified against the files.
    pub fn lookup(&mut self, dir: &NetDir, owner: &Owner) -> io::Result<Vec<IpAddr>> {
        let mut rebuilt = false;
        while self.state == State::Synced {
            let ips = match self.probe(&key(owner)) {
                Ok(Probe::Absent { .. }) => return Ok(Vec::new()),
                Ok(Probe::Found(_, Slot { ips: None, .. })) => break,
                Ok(Probe::Found(_, Slot { ips: Some(ips), .. })) => Some(ips),
                Err(_) => None,
            };
            if let Some(ips) = ips {
                if self.verify(dir, owner, &ips)? {
                    return Ok(ips);
                }
            }
            if rebuilt {
                break;
            }
            // The slot contradicts the files: the index is wrong; rebuild it and ask again.
            self.repair(dir);
            rebuilt = true;
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

    /// Records that `owner` now holds exactly `ips` (none: the slot is freed). The files must
    /// already say so: a table that grows is rebuilt from them.
    pub fn record(&mut self, dir: &NetDir, owner: &Owner, ips: &[IpAddr]) {
        if self.state != State::Synced {
            return;
        }
        if self.try_record(dir, owner, ips).is_err() {
            self.state = State::Unusable;
        }
    }

    fn try_record(&mut self, dir: &NetDir, owner: &Owner, ips: &[IpAddr]) -> io::Result<()> {
        let k = key(owner);
        let slot = |state| Slot {
            state,
            key: k,
            ips: Some(ips.to_vec()),
        };
        match self.probe(&k)? {
            Probe::Found(i, _) if ips.is_empty() => {
                self.write_slot(i, &slot(DELETED))?;
                self.header.live = self.header.live.saturating_sub(1);
            }
            Probe::Found(i, _) => self.write_slot(i, &slot(LIVE))?,
            Probe::Absent { .. } if ips.is_empty() => {}
            Probe::Absent { fresh: true, .. }
                if self.header.used.saturating_add(1).saturating_mul(2) > self.header.nslots =>
            {
                // Half full: rebuild bigger, from the files (which already hold `ips`).
                self.rebuild(dir)?;
            }
            Probe::Absent { free, fresh } => {
                self.write_slot(free, &slot(LIVE))?;
                self.header.live = self.header.live.saturating_add(1);
                if fresh {
                    self.header.used = self.header.used.saturating_add(1);
                }
            }
        }
        Ok(())
    }

    /// Seals our changes to the directory: sets its mtime to a fresh sentinel and records it.
    /// Without a synced index there is nothing to seal: the next call rebuilds.
    pub fn commit(&mut self, dir: &NetDir) {
        if self.state != State::Synced {
            return;
        }
        if self.write_stamp(dir).is_err() {
            self.state = State::Unusable;
        }
    }

    fn write_stamp(&mut self, dir: &NetDir) -> io::Result<()> {
        let s = sentinel(dir.mtime().ok());
        dir.set_mtime(s)?;
        self.header.stamp = s;
        self.write_header()
    }

    /// Rebuilds the index from one full scan (see the module docs).
    pub fn repair(&mut self, dir: &NetDir) {
        self.repairs += 1;
        self.state = match self.rebuild(dir) {
            Ok(()) => State::Synced,
            Err(_) => State::Unusable,
        };
    }

    fn rebuild(&mut self, dir: &NetDir) -> io::Result<()> {
        let reservations = dir.scan()?;
        self.rebuild_from(dir, reservations)
    }

    /// Rewrites the whole table from `reservations` and seals it.
    fn rebuild_from(&mut self, dir: &NetDir, reservations: Vec<(IpAddr, Owner)>) -> io::Result<()> {
        if self.file.is_none() {
            if fs::symlink_metadata(&self.path).is_ok_and(|m| m.is_dir()) {
                fs::remove_dir_all(&self.path)?;
            }
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&self.path)?;
            self.file = Some(f);
        }
        // Invalidate first, so an interrupted rebuild is redone by the next call.
        self.header.stamp = NO_STAMP;
        self.write_header()?;

        let mut owners: HashMap<[u8; 16], Vec<IpAddr>> = HashMap::new();
        for (ip, owner) in reservations {
            owners.entry(key(&owner)).or_default().push(ip);
        }
        let live = owners.len() as u32;
        let nslots = (live.saturating_mul(3).saturating_add(MIN_SLOTS))
            .checked_next_power_of_two()
            .ok_or_else(|| io::Error::other("index too large"))?;
        let mut table = vec![0u8; nslots as usize * SLOT];
        for (k, mut ips) in owners {
            ips.sort();
            let mut i = home(&k, nslots);
            while table[i as usize * SLOT] != EMPTY {
                i = (i + 1) & (nslots - 1);
            }
            let s = Slot {
                state: LIVE,
                key: k,
                ips: Some(ips),
            };
            table[i as usize * SLOT..(i as usize + 1) * SLOT].copy_from_slice(&s.encode());
        }
        let f = self.file.as_ref().ok_or_else(bad_data)?;
        f.set_len(HEADER + table.len() as u64)?;
        f.write_all_at(&table, HEADER)?;
        // Pool names from before are not trusted after a rebuild (see `pool`).
        self.header = Header {
            stamp: NO_STAMP,
            nslots,
            used: live,
            live,
            spares: 0,
        };
        self.write_stamp(dir)
    }

    /// Seals an index rebuilt from a scan the caller already did (GC).
    pub fn reset(&mut self, dir: &NetDir, reservations: Vec<(IpAddr, Owner)>) {
        self.state = match self.rebuild_from(dir, reservations) {
            Ok(()) => State::Synced,
            Err(_) => State::Unusable,
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

    fn stamp_of(t: &TempDir) -> (i64, u32) {
        let b = fs::read(t.path().join(".net.rsindex")).unwrap();
        let mut h = [0u8; HEADER as usize];
        h.copy_from_slice(&b[..HEADER as usize]);
        Header::decode(&h).unwrap().stamp
    }

    #[test]
    fn key_is_truncated_sha256_of_the_content() {
        let k = key(&Owner::attachment("dummy", "eth0"));
        assert_ne!(k, key(&Owner::legacy("dummy")));
        // sha256("abc") = ba7816bf 8f01cfea 414140de 5dae2223 …
        assert_eq!(
            key(&Owner::legacy("abc")),
            [
                0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae,
                0x22, 0x23
            ]
        );
    }

    #[test]
    fn slot_and_header_round_trip() {
        let s = Slot {
            state: LIVE,
            key: [7; 16],
            ips: Some(vec![ip("10.0.0.2"), ip("fd00::2"), ip("255.255.255.255")]),
        };
        assert_eq!(Slot::decode(&s.encode()), Some(s));
        let many: Vec<IpAddr> = (0..7).map(|i| ip(&format!("10.0.0.{i}"))).collect();
        let o = Slot {
            state: LIVE,
            key: [1; 16],
            ips: Some(many),
        };
        assert_eq!(Slot::decode(&o.encode()).unwrap().ips, None);
        let h = Header {
            stamp: (1_700_000_000, 123_456_789),
            nslots: 128,
            used: 5,
            live: 3,
            spares: 2,
        };
        assert_eq!(Header::decode(&h.encode()), Some(h));
        let mut bad = h.encode();
        bad[0] = b'X';
        assert_eq!(Header::decode(&bad), None);
        let bad = Header { nslots: 100, ..h }.encode();
        assert_eq!(Header::decode(&bad), None);
        let bad = Header { spares: 1000, ..h }.encode();
        assert_eq!(Header::decode(&bad), None);
    }

    #[test]
    fn fresh_index_is_built_and_stamped() {
        let t = TempDir::new("ix-fresh");
        let d = setup(&t);
        let ix = Index::open(&d, t.path(), "net");
        assert!(ix.is_synced());
        assert_eq!(ix.repairs, 1);
        assert_eq!(stamp_of(&t), d.mtime().unwrap());
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
        ix.record(&d, &o, &[ip("10.0.0.2"), ip("fd00::2")]);
        ix.commit(&d);
        let mut ix = Index::open(&d, t.path(), "net");
        assert_eq!(ix.repairs, 0);
        assert_eq!(
            ix.lookup(&d, &o).unwrap(),
            vec![ip("10.0.0.2"), ip("fd00::2")]
        );
        assert!(ix.lookup(&d, &Owner::legacy("c1")).unwrap().is_empty());
        d.release(ip("10.0.0.2")).unwrap();
        d.release(ip("fd00::2")).unwrap();
        ix.record(&d, &o, &[]);
        ix.commit(&d);
        let mut ix = Index::open(&d, t.path(), "net");
        assert_eq!(ix.repairs, 0);
        assert!(ix.lookup(&d, &o).unwrap().is_empty());
        assert_eq!(ix.header.live, 0);
    }

    #[test]
    fn table_grows_and_reuses_deleted_slots() {
        let t = TempDir::new("ix-grow");
        let d = setup(&t);
        let mut ix = Index::open(&d, t.path(), "net");
        assert_eq!(ix.header.nslots, MIN_SLOTS);
        let mut owners = Vec::new();
        for i in 0..200u32 {
            let o = Owner::attachment(&format!("c{i}"), "eth0");
            let a = IpAddr::V4(Ipv4Addr::from(0x0a00_0002 + i));
            assert!(d.reserve(a, &o).unwrap());
            ix.record(&d, &o, &[a]);
            owners.push((o, a));
        }
        ix.commit(&d);
        assert!(ix.header.nslots >= 400, "{:?}", ix.header);
        let mut ix = Index::open(&d, t.path(), "net");
        assert_eq!(ix.repairs, 0);
        for (o, a) in &owners {
            assert_eq!(ix.lookup(&d, o).unwrap(), vec![*a]);
        }
        // Churn: delete and add many; `used` stays bounded by reuse and rebuilds.
        for (i, (o, a)) in owners.iter().enumerate() {
            d.release(*a).unwrap();
            ix.record(&d, o, &[]);
            let n = Owner::attachment(&format!("n{i}"), "eth0");
            assert!(d.reserve(*a, &n).unwrap());
            ix.record(&d, &n, &[*a]);
        }
        ix.commit(&d);
        assert!(ix.header.used * 2 <= ix.header.nslots);
        assert_eq!(ix.header.live, 200);
        let mut ix = Index::open(&d, t.path(), "net");
        assert_eq!(ix.repairs, 0);
        assert_eq!(
            ix.lookup(&d, &Owner::attachment("n7", "eth0")).unwrap(),
            vec![owners[7].1]
        );
        assert!(ix.lookup(&d, &owners[7].0).unwrap().is_empty());
    }

    #[test]
    fn foreign_write_triggers_repair() {
        let t = TempDir::new("ix-foreign");
        let d = setup(&t);
        let mut ix = Index::open(&d, t.path(), "net");
        let mine = Owner::attachment("mine", "eth0");
        assert!(d.reserve(ip("10.0.0.2"), &mine).unwrap());
        ix.record(&d, &mine, &[ip("10.0.0.2")]);
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
        assert_eq!(
            ix.lookup(&d, &Owner::legacy("old")).unwrap(),
            vec![ip("10.0.0.4")]
        );
        assert!(ix.lookup(&d, &mine).unwrap().is_empty());
        assert_eq!(ix.repairs, 1);
    }

    #[test]
    fn foreign_write_within_the_same_clock_tick_is_still_seen() {
        // A coarse clock gives a second write in the same tick the same mtime; here a foreign
        // write that lands in the sentinel's own second with a tick-aligned nanosecond.
        let t = TempDir::new("ix-tick");
        let d = setup(&t);
        drop(Index::open(&d, t.path(), "net"));
        let sealed = d.mtime().unwrap();
        fs::write(t.path().join("net/10.0.0.9"), "x\r\neth0").unwrap();
        d.set_mtime((sealed.0, 0)).unwrap();
        let mut ix = Index::open(&d, t.path(), "net");
        assert_eq!(ix.repairs, 1);
        assert_eq!(
            ix.lookup(&d, &Owner::attachment("x", "eth0")).unwrap(),
            vec![ip("10.0.0.9")]
        );
    }

    #[test]
    fn wrong_slot_is_detected_by_verification() {
        let t = TempDir::new("ix-verify");
        let d = setup(&t);
        let mut ix = Index::open(&d, t.path(), "net");
        let o = Owner::attachment("a", "eth0");
        assert!(d.reserve(ip("10.0.0.5"), &o).unwrap());
        // A lying slot (stamp still valid): points at a file of someone else.
        assert!(d
            .reserve(ip("10.0.0.6"), &Owner::attachment("b", "eth0"))
            .unwrap());
        ix.record(&d, &o, &[ip("10.0.0.6")]);
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
        let ix = Index::open(&d, t.path(), "net");
        let o = Owner::attachment("a", "eth0");
        assert!(d.reserve(ip("10.0.0.5"), &o).unwrap());
        // Crash after the file, before the slot and the stamp.
        drop(ix);
        let mut ix = Index::open(&d, t.path(), "net");
        assert_eq!(ix.repairs, 1);
        assert_eq!(ix.lookup(&d, &o).unwrap(), vec![ip("10.0.0.5")]);
        // Crash after slot + mtime, before the stamp.
        assert!(d.reserve(ip("10.0.0.6"), &o).unwrap());
        ix.record(&d, &o, &[ip("10.0.0.5"), ip("10.0.0.6")]);
        d.set_mtime(sentinel(None)).unwrap();
        drop(ix);
        assert_eq!(Index::open(&d, t.path(), "net").repairs, 1);
        // Crash in the middle of a rebuild: the stamp was invalidated first.
        let mut ix = Index::open(&d, t.path(), "net");
        assert_eq!(ix.repairs, 0);
        ix.header.stamp = NO_STAMP;
        ix.write_header().unwrap();
        drop(ix);
        assert_eq!(Index::open(&d, t.path(), "net").repairs, 1);
    }

    #[test]
    fn garbage_index_file_is_rebuilt() {
        let t = TempDir::new("ix-garbage");
        let d = setup(&t);
        fs::write(t.path().join("net/10.0.0.7"), "z").unwrap();
        fs::write(t.path().join(".net.rsindex"), b"not an index at all").unwrap();
        let mut ix = Index::open(&d, t.path(), "net");
        assert_eq!(ix.repairs, 1);
        assert!(ix.is_synced());
        assert_eq!(
            ix.lookup(&d, &Owner::legacy("z")).unwrap(),
            vec![ip("10.0.0.7")]
        );
        // A directory in its place (an older layout) is replaced too.
        drop(ix);
        fs::remove_file(t.path().join(".net.rsindex")).unwrap();
        fs::create_dir(t.path().join(".net.rsindex")).unwrap();
        fs::write(t.path().join(".net.rsindex/x"), "").unwrap();
        let ix = Index::open(&d, t.path(), "net");
        assert!(ix.is_synced());
        assert!(t.path().join(".net.rsindex").is_file());
    }

    #[test]
    fn overflowing_owner_falls_back_to_scan() {
        let t = TempDir::new("ix-overflow");
        let d = setup(&t);
        let o = Owner::legacy("many");
        let mut want = Vec::new();
        for i in 0..9u16 {
            let a: IpAddr = format!("2001:db8::{:x}", i + 1).parse().unwrap();
            fs::write(t.path().join("net").join(a.to_string()), "many").unwrap();
            want.push(a);
        }
        let mut ix = Index::open(&d, t.path(), "net");
        assert!(matches!(
            ix.probe(&key(&o)).unwrap(),
            Probe::Found(_, Slot { ips: None, .. })
        ));
        let mut got = ix.lookup(&d, &o).unwrap();
        got.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn unusable_index_still_answers_by_scanning() {
        let t = TempDir::new("ix-unusable");
        let d = setup(&t);
        // The index path leads nowhere that can be created.
        std::os::unix::fs::symlink("/nonexistent/dir/index", t.path().join(".net.rsindex"))
            .unwrap();
        fs::write(t.path().join("net/10.0.0.8"), "a\r\neth0").unwrap();
        let mut ix = Index::open(&d, t.path(), "net");
        assert!(!ix.is_synced());
        assert_eq!(
            ix.lookup(&d, &Owner::attachment("a", "eth0")).unwrap(),
            vec![ip("10.0.0.8")]
        );
        ix.record(&d, &Owner::attachment("a", "eth0"), &[]);
        ix.commit(&d);
        assert!(!ix.is_synced());
    }
}
