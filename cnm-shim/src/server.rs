//! The plugin socket's connections: one thread each (dockerd keeps a few keep-alive
//! connections and issues concurrent calls on separate ones), with bounds so that a slow,
//! silent or half-open client cannot hold the daemon:
//!
//! * a request must arrive whole within [`REQUEST_TIMEOUT`] of its first byte (dockerd writes
//!   each request at once: a local socket delivers it in microseconds), else 408 and close;
//! * a connection waiting for a request is closed after [`FIRST_REQUEST_TIMEOUT`] if it never
//!   sent one (dockerd writes right after connecting) and after [`IDLE_TIMEOUT`] between
//!   requests;
//! * at most [`MAX_CONNECTIONS`] connections are open. At the cap a new connection takes the
//!   slot of the one that has been waiting or reading longest; only while every slot is in
//!   a handler (real work, bounded by the exec timeout) does it wait to be accepted.

use std::collections::HashMap;
use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::http::{write_response, Input, ReadError, Request, Response};

/// Open connections at most. dockerd uses one per call in flight (and keeps two idle):
/// even 20 parallel `docker run`s stay far below.
pub const MAX_CONNECTIONS: usize = 64;
/// From a request's first byte to its last.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// From connecting to a request's first byte.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Between requests of a keep-alive connection (dockerd reconnects transparently).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// For writing a reply to a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests (or before the first).
    Waiting,
    /// A request is arriving.
    Reading,
    /// The handler runs.
    Handling,
}

struct Slot {
    /// A handle on the socket, to close it from the accepting thread.
    stream: UnixStream,
    phase: Phase,
    since: Instant,
}

#[derive(Default)]
struct Slots {
    open: Mutex<(u64, HashMap<u64, Slot>)>,
    freed: Condvar,
}

impl Slots {
    fn lock(&self) -> MutexGuard<'_, (u64, HashMap<u64, Slot>)> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for `stream`: a free one, the one of the connection waiting or reading longest
    /// (closed here), or the first freed by a handler.
    fn admit(&self, stream: &UnixStream) -> io::Result<u64> {
        let handle = stream.try_clone()?;
        let mut g = self.lock();
        loop {
            if g.1.len() < MAX_CONNECTIONS {
                g.0 += 1;
                let id = g.0;
                g.1.insert(
                    id,
                    Slot {
                        stream: handle,
                        phase: Phase::Waiting,
                        since: Instant::now(),
                    },
                );
                return Ok(id);
            }
            let victim =
                g.1.iter()
                    .filter(|(_, s)| s.phase != Phase::Handling)
                    .min_by_key(|(_, s)| s.since)
                    .map(|(id, _)| *id);
            match victim {
                Some(id) => {
                    let s = g.1.remove(&id).expect("victim is in the map");
                    crate::warn!(
                        "{MAX_CONNECTIONS} connections open: closing the one {} for {:.1} s",
                        if s.phase == Phase::Waiting {
                            "idle"
                        } else {
                            "sending a request"
                        },
                        s.since.elapsed().as_secs_f64()
                    );
                    // Its thread's read returns end-of-stream and the thread ends.
                    let _ = s.stream.shutdown(std::net::Shutdown::Both);
                }
                None => g = self.freed.wait(g).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }

    fn set(&self, id: u64, phase: Phase) {
        if let Some(s) = self.lock().1.get_mut(&id) {
            // Only a change restarts the clock: a new connection's age counts from its accept.
            if s.phase != phase {
                s.phase = phase;
                s.since = Instant::now();
            }
        }
    }

    fn release(&self, id: u64) {
        self.lock().1.remove(&id);
        self.freed.notify_one();
    }
}

/// Serves one connection until the peer closes it, asks to, goes quiet, or sends garbage.
fn serve_conn(stream: UnixStream, handler: &Handler, slots: &Slots, id: u64) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut input = Input::new(stream);
    let mut idle = FIRST_REQUEST_TIMEOUT;
    loop {
        slots.set(id, Phase::Waiting);
        match input.read_request(idle, REQUEST_TIMEOUT, || slots.set(id, Phase::Reading)) {
            Ok(None) | Err(ReadError::Idle) => return Ok(()),
            Ok(Some(req)) => {
                slots.set(id, Phase::Handling);
                let resp = handler(&req);
                let close = req.wants_close();
                write_response(&mut writer, &resp, close)?;
                if close {
                    return Ok(());
                }
                idle = IDLE_TIMEOUT;
            }
            Err(ReadError::Io(e)) => return Err(e),
            Err(ReadError::Bad { status, msg }) => {
                crate::warn!("bad request ({status}): {msg}; connection closed");
                write_response(&mut writer, &Response::error(status, &msg), true)?;
                return Ok(());
            }
        }
    }
}

/// Accepts connections forever, one thread each.
pub fn serve(listener: UnixListener, handler: Handler) -> ! {
    let slots = Arc::new(Slots::default());
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                crate::warn!("accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let id = match slots.admit(&stream) {
            Ok(id) => id,
            Err(e) => {
                crate::warn!("connection: {e}");
                continue;
            }
        };
        let (h, sl) = (handler.clone(), slots.clone());
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .spawn(move || {
                if let Err(e) = serve_conn(stream, &h, &sl, id) {
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::BrokenPipe
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                    ) {
                        crate::warn!("connection: {e}");
                    }
                }
                sl.release(id);
            });
        if let Err(e) = spawned {
            crate::warn!("cannot start a connection thread: {e}");
            slots.release(id);
        }
    }
}
