//! The world changing underneath the built `host-local` binary: a reboot without DEL, a full
//! filesystem, damaged reservation files, the lock file or the whole data directory removed by
//! hand, an ADD killed while it creates a reservation, and an absurd stdin. The Go reference shares the directory where it matters.

mod common;

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::*;

const BOOT_ENV: &str = "CNI_HOST_LOCAL_BOOT_ID_FILE";

/// A simulated kernel boot: the file's content is the boot id, its mtime the boot time (the
/// test-build override of `boot.rs`).
struct FakeBoot(PathBuf);

impl FakeBoot {
    fn new(t: &TempDir) -> FakeBoot {
        let b = FakeBoot(t.join("boot_id"));
        b.reboot("boot-0", SystemTime::now() - Duration::from_secs(3600));
        b
    }

    fn reboot(&self, id: &str, at: SystemTime) {
        fs::write(&self.0, id).unwrap();
        fs::File::options()
            .write(true)
            .open(&self.0)
            .unwrap()
            .set_modified(at)
            .unwrap();
    }

    fn str(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

/// One call of `bin` under the fake boot.
fn call(bin: &str, boot: &FakeBoot, cmd: &str, ns: &str, id: &str, stdin: &str) -> Out {
    exec(
        bin,
        &[
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", ns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
            (BOOT_ENV, boot.str()),
        ],
        stdin,
    )
}

fn owners(dir: &Path) -> HashSet<String> {
    ip_files(dir)
        .iter()
        .map(|f| {
            let c = fs::read_to_string(dir.join(f)).unwrap();
            c.split("\r\n").next().unwrap().to_string()
        })
        .collect()
}

fn set(ids: &[&str]) -> HashSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// Waits into the next wall-clock second, so files made before and after differ in ctime's
/// seconds (the resolution of the kernel's boot time).
fn next_second() {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    std::thread::sleep(Duration::from_nanos(
        1_000_000_000 - now.subsec_nanos() as u64 + 1000,
    ));
}

#[test]
fn hl_reboot_releases_reservations_of_the_previous_boot_only() {
    let go = reference_binary();
    let t = TempDir::new("hostlocal-reboot");
    let ns = Netns::new();
    let boot = FakeBoot::new(&t);
    let c = conf("1.0.0", "rb", "10.31.0.0/24", t.str());
    let dir = t.join("rb");
    let marker = t.join(".rb.rsboot");

    // Boot 0, only our plugin ran: the index is sealed, so every file predates boot 1.
    call(OURS, &boot, "ADD", ns.path(), "a1", &c).ok();
    call(OURS, &boot, "ADD", ns.path(), "a2", &c).ok();
    assert_eq!(fs::read_to_string(&marker).unwrap(), "boot-0\n");
    boot.reboot("boot-1", SystemTime::now());
    let r = call(OURS, &boot, "ADD", ns.path(), "b1", &c).ok();
    assert_eq!(owners(&dir), set(&["b1"]), "a1, a2 died with boot 0");
    assert_eq!(fs::read_to_string(&marker).unwrap(), "boot-1\n");
    // Round-robin goes on from the pointer: b1 did not take a freed address of a1/a2.
    assert_eq!(first_ip(&r), "10.31.0.4");
    call(OURS, &boot, "ADD", ns.path(), "b2", &c).ok();
    // The Go plugin on the same directory, after us: it allocates, CHECKs and DELs ours.
    let g = call(go, &boot, "ADD", ns.path(), "g1", &c).ok();
    assert_eq!(first_ip(&g), "10.31.0.6");
    call(go, &boot, "CHECK", ns.path(), "b2", &c).ok();
    call(go, &boot, "DEL", ns.path(), "b2", &c).ok();
    assert_eq!(owners(&dir), set(&["b1", "g1"]));
    // A call in the same boot releases nothing.
    call(OURS, &boot, "CHECK", ns.path(), "b1", &c).ok();
    assert_eq!(owners(&dir), set(&["b1", "g1"]));

    // Reboot into boot 2, and the Go plugin runs first: the directory changed since our last
    // call, so only the clock tells, and the Go file made after the boot must survive.
    next_second();
    boot.reboot("boot-2", SystemTime::now());
    next_second();
    call(go, &boot, "ADD", ns.path(), "g2", &c).ok();
    call(OURS, &boot, "ADD", ns.path(), "c1", &c).ok();
    assert_eq!(
        owners(&dir),
        set(&["g2", "c1"]),
        "b1 and g1 died with boot 1"
    );
    // And the Go plugin still works on the swept directory.
    call(go, &boot, "DEL", ns.path(), "c1", &c).ok();
    call(go, &boot, "ADD", ns.path(), "g3", &c).ok();
    call(OURS, &boot, "DEL", ns.path(), "g3", &c).ok();
    call(OURS, &boot, "DEL", ns.path(), "g2", &c).ok();
    assert!(ip_files(&dir).is_empty());
}

#[test]
fn hl_reboot_without_a_marker_releases_nothing() {
    // The first call after upgrading from the reference: no marker, so no file's boot is known.
    let go = reference_binary();
    let t = TempDir::new("hostlocal-upgrade");
    let ns = Netns::new();
    let boot = FakeBoot::new(&t);
    let c = conf("1.0.0", "up", "10.32.0.0/24", t.str());
    let dir = t.join("up");
    call(go, &boot, "ADD", ns.path(), "old", &c).ok();
    next_second();
    boot.reboot("boot-1", SystemTime::now());
    call(OURS, &boot, "ADD", ns.path(), "new", &c).ok();
    assert_eq!(owners(&dir), set(&["old", "new"]));
    assert_eq!(
        fs::read_to_string(t.join(".up.rsboot")).unwrap(),
        "boot-1\n"
    );
    // From now on the marker knows: the next reboot releases both.
    boot.reboot("boot-2", SystemTime::now() + Duration::from_secs(1));
    call(OURS, &boot, "ADD", ns.path(), "newer", &c).ok();
    assert_eq!(owners(&dir), set(&["newer"]));
}

#[test]
fn hl_reboot_sweep_killed_midway_is_finished_by_the_next_call() {
    // The state a kill -9 leaves after the journal is written and one file is unlinked; and a
    // listed address the Go plugin re-reserved since (same name, new inode): never touched.
    let go = reference_binary();
    let t = TempDir::new("hostlocal-sweepkill");
    let ns = Netns::new();
    let boot = FakeBoot::new(&t);
    let c = conf("1.0.0", "sk", "10.33.0.0/24", t.str());
    let dir = t.join("sk");
    for id in ["p1", "p2", "p3"] {
        call(OURS, &boot, "ADD", ns.path(), id, &c).ok();
    }
    let ident = |ip: &str| {
        let m = fs::metadata(dir.join(ip)).unwrap();
        format!("{ip} {} {} {}\n", m.ino(), m.ctime(), m.ctime_nsec())
    };
    let journal = format!(
        "sweep boot-1\n{}{}{}",
        ident("10.33.0.2"),
        ident("10.33.0.3"),
        ident("10.33.0.4")
    );
    fs::write(t.join(".sk.rsboot"), journal).unwrap();
    boot.reboot("boot-1", SystemTime::now());
    fs::remove_file(dir.join("10.33.0.2")).unwrap(); // done before the kill
                                                     // The Go plugin got 10.33.0.3 back for a new container after the crash.
    call(go, &boot, "DEL", ns.path(), "p2", &c).ok();
    fs::write(dir.join("last_reserved_ip.0"), "10.33.0.2").unwrap();
    let g = call(go, &boot, "ADD", ns.path(), "fresh", &c).ok();
    assert_eq!(first_ip(&g), "10.33.0.3");
    call(OURS, &boot, "CHECK", ns.path(), "fresh", &c).ok();
    assert_eq!(owners(&dir), set(&["fresh"]), "p3 released, fresh kept");
    assert_eq!(
        fs::read_to_string(t.join(".sk.rsboot")).unwrap(),
        "boot-1\n"
    );
}

/// A tmpfs of `size`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn new(at: PathBuf, size: &str) -> Tmpfs {
        fs::create_dir_all(&at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "mount tmpfs on {} failed: tests need root",
            at.display()
        );
        Tmpfs(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the filesystem of `dir` with one file; returns it.
fn fill(dir: &Path) -> PathBuf {
    let p = dir.join("filler");
    let mut f = fs::File::create(&p).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        if let Err(e) = f.write_all(&chunk) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            break;
        }
    }
    p
}

#[test]
fn hl_full_filesystem_fails_cleanly_and_recovers() {
    let t = TempDir::new("hostlocal-full");
    let ns = Netns::new();
    let mnt = Tmpfs::new(t.join("mnt"), "256k");
    let data = mnt.0.join("data");
    let c = conf("1.0.0", "full", "10.34.0.0/24", data.to_str().unwrap());
    let dir = data.join("full");
    Call::new(ns.path(), "first").add(&c).ok();
    let filler = fill(&mnt.0);
    let before: Vec<String> = ip_files(&dir);
    let (code, msg) = Call::new(ns.path(), "second").add(&c).err();
    assert_eq!(code, 5, "{msg}");
    assert!(
        msg.contains(dir.to_str().unwrap()),
        "names the directory: {msg}"
    );
    assert!(msg.contains("No space left"), "{msg}");
    assert_eq!(ip_files(&dir), before, "no half-written reservation");
    // DEL and CHECK of what exists still work on the full filesystem.
    Call::new(ns.path(), "first").check(&c).ok();
    Call::new(ns.path(), "first").del(&c).ok();
    fs::remove_file(filler).unwrap();
    let r = Call::new(ns.path(), "second").add(&c).ok();
    assert_eq!(owners(&dir), set(&["second"]));
    Call::new(ns.path(), "second").check(&c).ok();
    assert!(!first_ip(&r).is_empty());
}

#[test]
fn hl_damaged_reservation_files() {
    let t = TempDir::new("hostlocal-damaged");
    let ns = Netns::new();
    let c = conf("1.1.0", "dmg", "10.35.0.0/24", t.str());
    let dir = t.join("dmg");
    for id in ["t1", "g1", "ok"] {
        Call::new(ns.path(), id).add(&c).ok();
    }
    fs::write(dir.join("10.35.0.2"), "").unwrap(); // truncated
    fs::write(dir.join("10.35.0.3"), b"\xff\x00garbage\r\n\r\n\xfe").unwrap();
    // ADD does not reuse the damaged addresses and knows the others.
    let r = Call::new(ns.path(), "new").add(&c).ok();
    assert_eq!(first_ip(&r), "10.35.0.5");
    let (code, _) = Call::new(ns.path(), "ok").add(&c).err();
    assert_eq!(code, 999, "duplicate ADD still refused");
    // CHECK reports the attachments whose file no longer names them; DEL is idempotent.
    let (code, msg) = Call::new(ns.path(), "t1").check(&c).err();
    assert_eq!(code, 999);
    assert!(msg.contains("t1"), "{msg}");
    Call::new(ns.path(), "t1").del(&c).ok();
    Call::new(ns.path(), "g1").del(&c).ok();
    Call::new(ns.path(), "ok").check(&c).ok();
    // GC releases the damaged files: they belong to no valid attachment.
    let gc = c.replacen(
        '{',
        r#"{"cni.dev/valid-attachments":[{"containerID":"ok","ifname":"eth0"},{"containerID":"new","ifname":"eth0"}],"#,
        1,
    );
    network_verb(OURS, "GC", &gc).ok();
    assert_eq!(ip_files(&dir), ["10.35.0.4", "10.35.0.5"]);
    Call::new(ns.path(), "ok").del(&c).ok();
    Call::new(ns.path(), "new").del(&c).ok();
    assert!(ip_files(&dir).is_empty());
}

#[test]
fn hl_add_killed_while_creating_its_reservation_leaves_nothing_after_del() {
    // A runtime whose ADD was killed runs DEL with the same container ID; DEL finds that ID's
    // reservations by their content, so a file named before its content is written would be
    // nobody's and stay forever. The kill lands exactly there (the `reserve` crash point).
    let t = TempDir::new("hostlocal-killadd");
    let ns = Netns::new();
    let c = conf("1.0.0", "ka", "10.39.0.0/24", t.str());
    let dir = t.join("ka");
    let live = first_ip(&Call::new(ns.path(), "live").add(&c).ok());
    let killed = Call {
        crash_at: "reserve",
        ..Call::new(ns.path(), "killed")
    };
    let out = killed.add(&c);
    assert_eq!(out.code, -1, "killed by the crash point: {out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    // What the kill left is the previous reservations, plus at most complete ones.
    for f in ip_files(&dir) {
        let content = fs::read(dir.join(&f)).unwrap();
        assert!(!content.is_empty(), "{f} was left empty by the kill");
    }
    killed.del(&c).ok();
    assert_eq!(ip_files(&dir), [live.as_str()]);
    // The store still works: the next ADD and the DELs leave nothing.
    let r = Call::new(ns.path(), "next").add(&c).ok();
    assert_ne!(first_ip(&r), live);
    Call::new(ns.path(), "next").del(&c).ok();
    Call::new(ns.path(), "live").del(&c).ok();
    assert!(ip_files(&dir).is_empty());
}

/// Network `lk` (10.36.0.0/16) in a new data dir, with one attachment, `x0` (10.36.0.2).
fn network_x0(prefix: &str) -> (TempDir, Netns, String) {
    let t = TempDir::new(prefix);
    let ns = Netns::new();
    let c = conf("1.0.0", "lk", "10.36.0.0/16", t.str());
    Call::new(ns.path(), "x0").add(&c).ok();
    (t, ns, c)
}

#[test]
fn hl_lock_file_removed_between_calls() {
    let (t, ns, c) = network_x0("hostlocal-lockrm");
    let dir = t.join("lk");
    fs::remove_file(dir.join("lock")).unwrap();
    Call::new(ns.path(), "x1").add(&c).ok();
    assert!(dir.join("lock").is_file());
    assert_eq!(owners(&dir), set(&["x0", "x1"]));
}

/// Whether process `pid` waits for a flock on inode `ino` (a `->` line of /proc/locks).
fn waits_for_flock(pid: u32, ino: u64) -> bool {
    let locks = fs::read_to_string("/proc/locks").unwrap();
    locks.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // "1: -> FLOCK  ADVISORY  WRITE <pid> <maj>:<min>:<ino> 0 EOF"
        f.get(1) == Some(&"->")
            && f.get(2) == Some(&"FLOCK")
            && f.get(5) == Some(&pid.to_string().as_str())
            && f.get(6).and_then(|d| d.rsplit(':').next()) == Some(ino.to_string().as_str())
    })
}

/// Waits until `call` is seen blocked on a flock of `file`, then checks that it stays blocked
/// a while. Fails at once if it finishes instead: it ran while `file` was held.
fn assert_waits_for(mut call: Running, file: &Path) -> Running {
    let ino = fs::metadata(file).unwrap().ino();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !waits_for_flock(call.pid(), ino) {
        if call.finished() {
            panic!(
                "the call ran while {} was locked: {:?}",
                file.display(),
                call.wait()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the call neither waits for {} nor finishes",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        waits_for_flock(call.pid(), ino),
        "the call stopped waiting for {}",
        file.display()
    );
    call
}

/// `rm lock` while a call holds it lets the next caller create and lock a new lock file; only
/// the lock on the directory itself keeps the two apart. The test holds both locks exactly as
/// a call in flight does (`NetDir::open`), so no timing decides the outcome.
#[test]
fn hl_lock_file_removed_during_a_call_still_excludes() {
    let (t, ns, c) = network_x0("hostlocal-lockrm-held");
    let (dir, lock) = (t.join("lk"), t.join("lk/lock"));
    let held = host_local::store::NetDir::open(t.path(), "lk").unwrap();
    let old_lock = fs::metadata(&lock).unwrap().ino();
    fs::remove_file(&lock).unwrap();

    let next = Call::new(ns.path(), "x1").start("ADD", &c);
    let next = assert_waits_for(next, &dir);
    // It got past the lock file: it made and locked a new one, which nobody else holds.
    assert_ne!(fs::metadata(&lock).unwrap().ino(), old_lock);
    assert_eq!(owners(&dir), set(&["x0"]));

    drop(held);
    let r = next.wait().ok();
    assert_eq!(first_ip(&r), "10.36.0.3");
    assert_eq!(owners(&dir), set(&["x0", "x1"]));
    // The index stayed right: CHECK and DEL find it.
    let call = Call::new(ns.path(), "x1");
    call.check(&c).ok();
    call.del(&c).ok();
    assert_eq!(owners(&dir), set(&["x0"]));
}

/// A caller waiting for a lock file that is removed meanwhile must, once it gets it, lock the
/// new one: a caller that only takes `lock` (the Go plugin, here the test with the reference's
/// `FileLock`) may be holding that by then.
#[test]
fn hl_lock_file_replaced_while_waiting_is_locked_anew() {
    let (t, ns, c) = network_x0("hostlocal-lockrm-wait");
    let (dir, lock) = (t.join("lk"), t.join("lk/lock"));
    let held = host_local::store::NetDir::open(t.path(), "lk").unwrap();

    let next = Call::new(ns.path(), "x1").start("ADD", &c);
    let next = assert_waits_for(next, &lock);
    fs::remove_file(&lock).unwrap();
    let go = host_local::store::lock_path(&dir).unwrap();
    drop(held);
    let next = assert_waits_for(next, &lock);
    assert_eq!(owners(&dir), set(&["x0"]));

    drop(go);
    let r = next.wait().ok();
    assert_eq!(first_ip(&r), "10.36.0.3");
    assert_eq!(owners(&dir), set(&["x0", "x1"]));
}
#[test]
fn hl_data_dir_deleted_by_hand() {
    let t = TempDir::new("hostlocal-rmdata");
    let ns = Netns::new();
    let data = t.join("data");
    let c = conf("1.0.0", "gone", "10.37.0.0/24", data.to_str().unwrap());
    Call::new(ns.path(), "a").add(&c).ok();
    Call::new(ns.path(), "b").add(&c).ok();
    Call::new(ns.path(), "b").del(&c).ok(); // leaves a spare in the pool
                                            // Only the network directory: index, pool and marker outside it remain.
    fs::remove_dir_all(data.join("gone")).unwrap();
    let r = Call::new(ns.path(), "c").add(&c).ok();
    assert_eq!(first_ip(&r), "10.37.0.2");
    Call::new(ns.path(), "a").del(&c).ok();
    Call::new(ns.path(), "c").check(&c).ok();
    // The whole data directory.
    fs::remove_dir_all(&data).unwrap();
    Call::new(ns.path(), "c").del(&c).ok();
    assert_eq!(
        Call::new(ns.path(), "c").check(&c).err().0,
        999,
        "nothing is held any more"
    );
    let r = Call::new(ns.path(), "d").add(&c).ok();
    assert_eq!(first_ip(&r), "10.37.0.2");
    assert_eq!(owners(&data.join("gone")), set(&["d"]));
}

#[test]
// The child is reaped by `wait_rusage` (wait4), which std's `wait` cannot replace: it gives
// the child's own peak RSS.
#[allow(clippy::zombie_processes)]
fn hl_stdin_over_the_limit_is_refused_fast_and_small() {
    let t = TempDir::new("hostlocal-bigstdin");
    let ns = Netns::new();
    let c = conf("1.0.0", "big", "10.38.0.0/24", t.str());
    // A valid config followed by 50 MB of white space: it would parse, if read whole.
    let start = Instant::now();
    let mut child = Command::new(OURS)
        .env_clear()
        .envs([
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "big"),
            ("CNI_NETNS", ns.path()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(c.as_bytes());
        let pad = vec![b' '; 1 << 20];
        for _ in 0..50 {
            if input.write_all(&pad).is_err() {
                return false; // the plugin stopped reading: EPIPE
            }
        }
        true
    });
    let mut out = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
    let (status, maxrss_kib) = wait_rusage(child.id() as i32);
    let elapsed = start.elapsed();
    let wrote_all = writer.join().unwrap();
    println!(
        "50 MB stdin: exit {status}, {elapsed:?}, peak RSS {maxrss_kib} KiB, stdin read whole: {wrote_all}"
    );
    assert_eq!(status, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["code"], 7, "{v}");
    assert!(v["msg"].as_str().unwrap().contains("8 MiB limit"), "{v}");
    assert!(!wrote_all, "the plugin must stop reading at the limit");
    assert!(maxrss_kib < 40 * 1024, "peak RSS {maxrss_kib} KiB");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    assert!(ip_files(&t.join("big")).is_empty());
}

/// Reaps `pid`, returning its exit code and peak resident set (`ru_maxrss`, KiB).
fn wait_rusage(pid: i32) -> (i32, i64) {
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own unreaped child; both pointers are valid for the call.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    (libc::WEXITSTATUS(status), ru.ru_maxrss)
}
