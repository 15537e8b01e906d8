//! The plugin socket under bad clients: a real cnm-shim process (in its own netns, state in a
//! temp dir, no dockerd needed) on a real unix socket, driven with raw bytes. Oversized
//! requests get their JSON error and the daemon keeps serving; silent, trickling and
//! unfinished requests neither block other clients nor stay open past the timeouts; at the
//! connection cap the longest-waiting connections make room for new ones.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cni_tests::{bin, bin_dir, Daemon, Netns, TempDir};
use serde_json::Value;

/// The limits of cnm_shim::http / cnm_shim::server, restated: the test checks the numbers.
const MAX_HEADER_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
const MAX_CONNECTIONS: usize = 64;
const TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn hs_limits_match_the_daemon() {
    assert_eq!(cnm_shim::http::MAX_HEADER_BYTES, MAX_HEADER_BYTES);
    assert_eq!(cnm_shim::http::MAX_HEADERS, MAX_HEADERS);
    assert_eq!(cnm_shim::http::MAX_BODY_BYTES, MAX_BODY_BYTES);
    assert_eq!(cnm_shim::server::MAX_CONNECTIONS, MAX_CONNECTIONS);
    assert_eq!(cnm_shim::server::REQUEST_TIMEOUT, TIMEOUT);
    assert_eq!(cnm_shim::server::FIRST_REQUEST_TIMEOUT, TIMEOUT);
}

struct Shim {
    proc: Daemon,
    sock: PathBuf,
    dir: TempDir,
    _ns: Netns,
}

impl Shim {
    fn start(tag: &str) -> Shim {
        let ns = Netns::new(&format!("hs{tag}"));
        let dir = TempDir::new(&format!("hs{tag}"));
        let sock = dir.path().join("shim.sock");
        let log = std::fs::File::create(dir.path().join("shim.log")).unwrap();
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", ns.path_str()))
            .arg(bin("cnm-shim"))
            .args(["--name", &format!("hs{tag}"), "--socket"])
            .arg(&sock)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--cni-path")
            .arg(bin_dir())
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut proc = Daemon::spawn(c).expect("spawn cnm-shim");
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(&sock).is_err() {
            assert!(proc.alive(), "cnm-shim exited:\n{}", log_of(&dir));
            assert!(
                Instant::now() < deadline,
                "cnm-shim did not listen:\n{}",
                log_of(&dir)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Let the shim see the probe connections end (the socket count is a baseline).
        std::thread::sleep(Duration::from_millis(300));
        Shim {
            proc,
            sock,
            dir,
            _ns: ns,
        }
    }

    fn connect(&self) -> UnixStream {
        UnixStream::connect(&self.sock).expect("connect to the shim")
    }

    fn log(&self) -> String {
        log_of(&self.dir)
    }

    /// Open sockets of the shim process: the listener plus one per connection (a connection
    /// has several fds, one socket).
    fn sockets(&self) -> usize {
        let fds = format!("/proc/{}/fd", self.proc.child.id());
        std::fs::read_dir(&fds)
            .unwrap_or_else(|e| panic!("{fds}: {e}"))
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter(|t| t.to_string_lossy().starts_with("socket:"))
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    }

    /// The socket count once `ok` holds (or after 5 s).
    fn sockets_when(&self, ok: impl Fn(usize) -> bool) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n = self.sockets();
            if ok(n) || Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A real request on a new connection, answered within `within`.
    fn activate(&self, within: Duration) {
        let t = Instant::now();
        let mut s = self.connect();
        s.set_read_timeout(Some(within)).unwrap();
        let (status, v) = call(&mut s, ACTIVATE).unwrap_or_else(|e| {
            panic!(
                "Plugin.Activate: {e} after {:?}\n{}",
                t.elapsed(),
                self.log()
            )
        });
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["Implements"][0], "NetworkDriver", "{v}");
        assert!(t.elapsed() < within, "took {:?}", t.elapsed());
    }
}

fn log_of(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.path().join("shim.log")).unwrap_or_default()
}

/// What dockerd sends (`docker-remote-driver.md` §1.4).
const ACTIVATE: &[u8] = b"POST /Plugin.Activate HTTP/1.1\r\nHost: \r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: 0\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\nAccept-Encoding: gzip\r\n\r\n";

/// Sends `raw` (a write cut short by the server closing is fine: the reply is what counts)
/// and reads one reply: status and JSON body.
fn call(s: &mut UnixStream, raw: &[u8]) -> Result<(u16, Value), String> {
    let _ = s.write_all(raw);
    read_reply(s)
}

fn read_reply(s: &mut UnixStream) -> Result<(u16, Value), String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err(format!("closed without a reply ({} bytes)", buf.len())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|x| x.parse().ok())
        .ok_or(format!("bad status line in {head:?}"))?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|x| x.trim().parse().ok())
        .ok_or(format!("no Content-Length in {head:?}"))?;
    while buf.len() < head_end + len {
        match s.read(&mut chunk) {
            Ok(0) => return Err("closed inside the reply body".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read body: {e}")),
        }
    }
    let v = serde_json::from_slice(&buf[head_end..head_end + len])
        .map_err(|e| format!("reply body is not JSON: {e}"))?;
    Ok((status, v))
}

/// Whether the server has closed `s` (end of stream within `wait`).
fn closed_within(s: &mut UnixStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 512];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue, // a reply before the close (408)
            // Closed with some of our request unread: a unix socket reports a reset.
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

#[test]
fn hs_oversized_requests_get_json_errors_and_the_daemon_keeps_serving() {
    let mut shim = Shim::start("big");
    let base = shim.sockets();
    let mut long_head = b"POST /Plugin.Activate HTTP/1.1\r\nX-Pad: ".to_vec();
    long_head.resize(long_head.len() + MAX_HEADER_BYTES, b'a');
    long_head.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    let mut many = "POST /Plugin.Activate HTTP/1.1\r\n".to_string();
    for i in 0..=MAX_HEADERS {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let big_body = format!(
        "POST /NetworkDriver.CreateNetwork HTTP/1.1\r\nContent-Length: {}\r\n\r\n{{",
        MAX_BODY_BYTES + 1
    );
    let chunked = "POST /NetworkDriver.CreateNetwork HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
    for (what, raw, status, says) in [
        (
            "head over 64 KiB",
            long_head,
            431,
            "request headers exceed 65536 bytes",
        ),
        ("65 header fields", many.into_bytes(), 431, "or 64 fields"),
        (
            "body over 16 MiB",
            big_body.into_bytes(),
            413,
            "exceeds the 16777216-byte limit",
        ),
        (
            "chunked body",
            chunked.as_bytes().to_vec(),
            411,
            "send a Content-Length",
        ),
        (
            "not HTTP/1",
            b"POST / HTTP/3.0\r\n\r\n".to_vec(),
            505,
            "HTTP/1.1",
        ),
    ] {
        let mut s = shim.connect();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (st, v) = call(&mut s, &raw).unwrap_or_else(|e| panic!("{what}: {e}\n{}", shim.log()));
        let err = v["Err"].as_str().unwrap_or_default();
        eprintln!("{what}: {st} {v}");
        assert_eq!(st, status, "{what}: {v}");
        assert!(
            err.starts_with("cnm-shim: ") && err.contains(says),
            "{what}: {v}"
        );
        assert!(
            closed_within(&mut s, Duration::from_secs(5)),
            "{what}: connection left open"
        );
        shim.activate(Duration::from_secs(5));
    }
    // Keep-alive still works: two calls on one connection, the second after a pause.
    let mut s = shim.connect();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(call(&mut s, ACTIVATE).unwrap().0, 200);
    std::thread::sleep(Duration::from_millis(300));
    let caps =
        b"POST /NetworkDriver.GetCapabilities HTTP/1.1\r\nHost: \r\nContent-Length: 0\r\n\r\n";
    let (st, v) = call(&mut s, caps).unwrap();
    assert_eq!((st, v["Scope"].as_str()), (200, Some("local")), "{v}");
    drop(s);
    assert!(shim.proc.alive(), "{}", shim.log());
    // Every connection of this test is gone from the daemon.
    assert_eq!(
        shim.sockets_when(|n| n <= base),
        base,
        "connections left open in the shim"
    );
    // The log says what was refused, with RFC 3339 timestamps.
    let log = shim.log();
    let line = log
        .lines()
        .find(|l| l.contains("bad request (431)"))
        .unwrap_or_else(|| panic!("no 431 logged:\n{log}"));
    let ts = line.split(' ').next().unwrap();
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
        "timestamp {ts:?} in {line:?}"
    );
}

#[test]
fn hs_slow_and_half_open_clients_neither_block_others_nor_stay_open() {
    let mut shim = Shim::start("slow");
    let base = shim.sockets();
    const N: usize = 8;
    let started = Instant::now();
    // Connects and sends nothing.
    let mut silent: Vec<UnixStream> = (0..N).map(|_| shim.connect()).collect();
    // A complete head announcing a body that never ends.
    let unfinished: Vec<UnixStream> = (0..N)
        .map(|_| {
            let mut s = shim.connect();
            s.write_all(
                b"POST /NetworkDriver.CreateNetwork HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"Netw",
            )
            .unwrap();
            s
        })
        .collect();
    // One byte every 300 ms of an otherwise good request (~40 s for the whole of it).
    let trickle: Vec<_> = (0..N)
        .map(|_| {
            let s = shim.connect();
            let mut w = s.try_clone().unwrap();
            let t = std::thread::spawn(move || {
                for b in ACTIVATE {
                    if w.write_all(&[*b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            });
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            (s, t)
        })
        .collect();
    let open = shim.sockets_when(|n| n >= base + 3 * N) - base;
    assert_eq!(open, 3 * N, "the bad clients are connected");
    // Meanwhile real requests from another client are answered at once.
    for _ in 0..5 {
        shim.activate(Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(200));
    }
    // Silent connections are closed after the first-request timeout, unfinished and
    // trickling requests get a 408 after the request timeout.
    for s in &mut silent {
        let left =
            (started + TIMEOUT + Duration::from_secs(8)).saturating_duration_since(Instant::now());
        assert!(
            closed_within(s, left),
            "silent connection still open after {:?}",
            started.elapsed()
        );
    }
    let silent_closed = started.elapsed();
    let mut slow = unfinished;
    slow.extend(trickle.iter().map(|(s, _)| s.try_clone().unwrap()));
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let (st, v) = read_reply(s)
            .unwrap_or_else(|e| panic!("slow client: {e} after {:?}", started.elapsed()));
        assert_eq!(st, 408, "{v}");
        assert!(
            v["Err"]
                .as_str()
                .unwrap()
                .contains("did not arrive in time"),
            "{v}"
        );
        assert!(closed_within(s, Duration::from_secs(5)));
    }
    let all_closed = started.elapsed();
    eprintln!(
        "{N} silent closed by {silent_closed:?}, {N} unfinished + {N} trickling answered 408 by {all_closed:?}"
    );
    // The timeouts, not something else, closed them.
    assert!(
        silent_closed >= TIMEOUT - Duration::from_millis(500),
        "{silent_closed:?}"
    );
    assert!(
        all_closed < TIMEOUT + Duration::from_secs(10),
        "{all_closed:?}"
    );
    for (_, t) in trickle {
        t.join().unwrap();
    }
    assert_eq!(
        shim.sockets_when(|n| n <= base),
        base,
        "connections left open in the shim"
    );
    shim.activate(Duration::from_secs(2));
    assert!(shim.proc.alive());
}

#[test]
fn hs_at_the_connection_cap_the_longest_waiting_make_room() {
    let mut shim = Shim::start("cap");
    let base = shim.sockets();
    const EXTRA: usize = 16;
    let mut conns: Vec<UnixStream> = Vec::new();
    for _ in 0..MAX_CONNECTIONS + EXTRA {
        conns.push(shim.connect());
    }
    // A real client still gets through, at once.
    shim.activate(Duration::from_secs(2));
    // Room was made by closing the oldest silent connections (one per newcomer), no others.
    let closed: Vec<usize> = conns
        .iter_mut()
        .enumerate()
        .filter_map(|(i, s)| closed_within(s, Duration::from_millis(20)).then_some(i))
        .collect();
    eprintln!("closed to make room: {closed:?}");
    assert_eq!(closed, (0..=EXTRA).collect::<Vec<_>>(), "{}", shim.log());
    assert!(shim
        .log()
        .contains("64 connections open: closing the one idle"));
    let open = shim.sockets_when(|n| n <= base + MAX_CONNECTIONS) - base;
    eprintln!("connections open in the shim: {open}");
    assert_eq!(
        open,
        MAX_CONNECTIONS - 1,
        "the cap is full but for the closed test client"
    );
    assert!(shim.proc.alive());
}
