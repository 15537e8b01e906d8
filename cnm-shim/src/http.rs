//! HTTP/1.1 on the wire for Docker's plugin protocol: reading one request (head parsed by
//! `httparse`, the parser hyper uses; body by `Content-Length`), bounded in size and time,
//! and writing a reply, always with a JSON body, protocol errors included. The Host header is
//! never looked at (dockerd sends it empty). Connections and threads are `server`'s job.
//!
//! Why `httparse` and not hyper: the shim is synchronous throughout (handlers exec CNI
//! plugins and wait on locks for seconds), and its peer is one local dockerd with a handful
//! of connections. hyper would bring an async runtime only to hand every call to a blocking
//! thread; `httparse` gives the same well-tested request parsing with no dependencies.
//!
//! Chunked bodies are refused (411): dockerd's plugin client (`pkg/plugins/client.go`) always
//! encodes its arguments into a `bytes.Buffer` first, so Go's HTTP client sends a
//! `Content-Length` (`0` for argument-less calls).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Media type of every reply (dockerd ignores it; it is what the protocol names).
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// Request line + headers. dockerd's are ~200 bytes (six short headers, an empty Host).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Header fields per request; dockerd sends six.
pub const MAX_HEADERS: usize = 64;
/// A request body. dockerd's are mostly under 1 KiB, but a `docker run -p` with port ranges
/// sends one binding per port in CreateEndpoint and ProgramExternalConnectivity (~100 bytes
/// of JSON each): publishing every TCP and UDP port is ~13 MB, the largest honest request.
/// The body buffer grows with what arrives, not with what `Content-Length` announces.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// HTTP/1.0 (no keep-alive unless asked for).
    pub http10: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the connection ends after the reply.
    pub fn wants_close(&self) -> bool {
        let c = self.header("connection");
        let has =
            |t: &str| c.is_some_and(|v| v.split(',').any(|x| x.trim().eq_ignore_ascii_case(t)));
        has("close") || (self.http10 && !has("keep-alive"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, v: &serde_json::Value) -> Response {
        Response {
            status,
            body: serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec()),
        }
    }

    /// A protocol error, in the form dockerd shows to the user (`{"Err": ...}`).
    pub fn error(status: u16, msg: &str) -> Response {
        Response::json(
            status,
            &serde_json::json!({ "Err": format!("cnm-shim: {msg}") }),
        )
    }
}

/// Why no request was read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer went away or the connection failed: nothing to answer.
    Io(io::Error),
    /// No request started within the idle timeout: close quietly.
    Idle,
    /// A bad, oversized or too slow request: answered with `status` and `{"Err": msg}`, then
    /// the connection is closed (what follows on it cannot be trusted to be a request).
    Bad { status: u16, msg: String },
}

fn bad(status: u16, msg: impl Into<String>) -> ReadError {
    ReadError::Bad {
        status,
        msg: msg.into(),
    }
}

/// A byte source whose blocking reads can be bounded in time.
pub trait Source: Read {
    fn set_read_timeout(&mut self, t: Option<Duration>) -> io::Result<()>;
}

impl Source for UnixStream {
    fn set_read_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, t)
    }
}

/// In-memory input (unit tests, fuzzing): never blocks.
impl Source for io::Cursor<Vec<u8>> {
    fn set_read_timeout(&mut self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
}

/// A connection's input: the source and the bytes read from it but not consumed yet (a
/// pipelined next request).
pub struct Input<S> {
    src: S,
    buf: Vec<u8>,
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl<S: Source> Input<S> {
    pub fn new(src: S) -> Input<S> {
        Input {
            src,
            buf: Vec::new(),
        }
    }

    /// Appends what one read returns (0 at end of stream), waiting at most `wait`.
    fn fill(&mut self, wait: Duration) -> io::Result<usize> {
        // A zero timeout means "none" to setsockopt: never pass it.
        self.src
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.src.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads more of a started request, which must be complete by `deadline`.
    fn more(&mut self, deadline: Instant, what: &str) -> Result<(), ReadError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(too_slow(what));
        }
        match self.fill(left) {
            Ok(0) => Err(bad(
                400,
                format!("connection closed in the middle of the {what}"),
            )),
            Ok(_) => Ok(()),
            Err(e) if timed_out(&e) => Err(too_slow(what)),
            Err(e) => Err(ReadError::Io(e)),
        }
    }

    /// Reads the next request. `Ok(None)` at a clean end of stream between requests;
    /// [`ReadError::Idle`] when none starts within `idle`. Once its first byte is in,
    /// `started` is called and the whole request must arrive within `complete_within`.
    pub fn read_request(
        &mut self,
        idle: Duration,
        complete_within: Duration,
        started: impl FnOnce(),
    ) -> Result<Option<Request>, ReadError> {
        if self.buf.is_empty() {
            match self.fill(idle) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if timed_out(&e) => return Err(ReadError::Idle),
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
        started();
        let deadline = Instant::now() + complete_within;
        let mut scanned = 0;
        let (mut req, head_len, body_len) = loop {
            if blank_line_since(&self.buf, scanned) {
                if let Some(parsed) = parse_head(&self.buf)? {
                    break parsed;
                }
            }
            if self.buf.len() > MAX_HEADER_BYTES {
                return Err(headers_too_large());
            }
            scanned = self.buf.len();
            self.more(deadline, "request headers")?;
        };
        self.buf.drain(..head_len);
        while self.buf.len() < body_len {
            self.more(deadline, "request body")?;
        }
        req.body = self.buf.drain(..body_len).collect();
        Ok(Some(req))
    }
}

/// Whether an empty line (the end of a head) may have arrived since `from`. The head is
/// parsed again only then, so one trickling in byte by byte costs linear, not quadratic, time.
fn blank_line_since(buf: &[u8], from: usize) -> bool {
    let tail = &buf[from.saturating_sub(2)..];
    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
}

fn too_slow(what: &str) -> ReadError {
    bad(
        408,
        format!("the {what} did not arrive in time; send each request whole"),
    )
}

fn headers_too_large() -> ReadError {
    bad(
        431,
        format!("request headers exceed {MAX_HEADER_BYTES} bytes or {MAX_HEADERS} fields"),
    )
}

/// Parses a complete request head at the start of `buf`: the request (without body), the
/// head's length, and the body's. `Ok(None)` while the head is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(Request, usize, usize)>, ReadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut p = httparse::Request::new(&mut fields);
    let head_len = match p.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(headers_too_large()),
        Err(httparse::Error::Version) => {
            return Err(bad(505, "only HTTP/1.0 and HTTP/1.1 are spoken here"))
        }
        Err(e) => return Err(bad(400, format!("malformed request: {e}"))),
    };
    if head_len > MAX_HEADER_BYTES {
        return Err(headers_too_large());
    }
    let mut headers = Vec::with_capacity(p.headers.len());
    for h in p.headers.iter() {
        let v = std::str::from_utf8(h.value)
            .map_err(|_| bad(400, format!("header {:?} is not UTF-8", h.name)))?;
        headers.push((h.name.to_ascii_lowercase(), v.trim().to_string()));
    }
    let target = p.path.unwrap_or("/");
    let req = Request {
        method: p.method.unwrap_or("").to_string(),
        path: target.split('?').next().unwrap_or("").to_string(),
        headers,
        body: Vec::new(),
        http10: p.version == Some(0),
    };
    if req.header("transfer-encoding").is_some() {
        return Err(bad(
            411,
            "Transfer-Encoding (chunked bodies) is not supported; send a Content-Length",
        ));
    }
    // Several Content-Length fields must agree (RFC 9112 §6.3); none means no body.
    let mut len: Option<usize> = None;
    for (_, v) in req.headers.iter().filter(|(k, _)| k == "content-length") {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(400, format!("invalid Content-Length {v:?}")));
        }
        // All digits: a value too big for usize is too big for us.
        let n: usize = v.parse().unwrap_or(usize::MAX);
        if len.is_some_and(|l| l != n) {
            return Err(bad(400, "conflicting Content-Length fields"));
        }
        len = Some(n);
    }
    let len = len.unwrap_or(0);
    if len > MAX_BODY_BYTES {
        return Err(bad(
            413,
            format!("request body of {len} bytes exceeds the {MAX_BODY_BYTES}-byte limit"),
        ));
    }
    Ok(Some((req, head_len, len)))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

pub fn write_response<W: Write>(w: &mut W, resp: &Response, close: bool) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n",
        resp.status,
        reason(resp.status),
        resp.body.len()
    )
    .into_bytes();
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&resp.body);
    w.write_all(&out)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const T: Duration = Duration::from_secs(1);

    fn input(raw: &[u8]) -> Input<Cursor<Vec<u8>>> {
        Input::new(Cursor::new(raw.to_vec()))
    }

    fn parse(raw: &str) -> Result<Option<Request>, ReadError> {
        input(raw.as_bytes()).read_request(T, T, || {})
    }

    fn status_of(raw: &[u8]) -> u16 {
        match input(raw).read_request(T, T, || {}) {
            Err(ReadError::Bad { status, .. }) => status,
            other => panic!(
                "{:?}: {other:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(80)])
            ),
        }
    }

    #[test]
    fn docker_style_requests() {
        // What dockerd sends: empty Host, no Content-Type, sometimes no body at all.
        let raw = "POST /Plugin.Activate HTTP/1.1\r\nHost: \r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: 0\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\nAccept-Encoding: gzip\r\n\r\n";
        let r = parse(raw).unwrap().unwrap();
        assert_eq!(r.path, "/Plugin.Activate");
        assert!(r.body.is_empty() && !r.wants_close());
        let raw =
            "POST /NetworkDriver.Join?x=1 HTTP/1.1\r\nHost: \r\nContent-Length: 3\r\n\r\n{}\n";
        let r = parse(raw).unwrap().unwrap();
        assert_eq!(
            (r.path.as_str(), r.body.as_slice()),
            ("/NetworkDriver.Join", &b"{}\n"[..])
        );
        assert_eq!(r.header("host"), Some(""));
    }

    #[test]
    fn hs_keep_alive_pipelined_and_close() {
        let raw = "POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}\r\nPOST /b HTTP/1.1\r\nConnection: close\r\ncontent-length: 7\r\n\r\n{\"a\":1}";
        let mut c = input(raw.as_bytes());
        let a = c.read_request(T, T, || {}).unwrap().unwrap();
        assert_eq!((a.path.as_str(), a.body.as_slice()), ("/a", &b"{}"[..]));
        // The stray CRLF between requests is tolerated (RFC 9112 §2.2).
        let b = c.read_request(T, T, || {}).unwrap().unwrap();
        assert_eq!(b.body, b"{\"a\":1}");
        assert!(b.wants_close());
        assert!(c.read_request(T, T, || {}).unwrap().is_none());
        let r = parse("POST /a HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(r.wants_close());
        let r = parse("POST /a HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!r.wants_close());
    }

    #[test]
    fn garbage_is_rejected_with_status() {
        for (raw, status) in [
            ("NONSENSE\r\n\r\n", 400),
            ("POST /a SPDY/3\r\n\r\n", 505),
            ("POST /a HTTP/2.0\r\n\r\n", 505),
            ("POST /a HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
            ("POST /a HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (
                "POST /a HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
                400,
            ),
            (
                "POST /a HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n",
                413,
            ),
            (
                "POST /a HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                413,
            ),
            ("POST /a HTTP/1.1\r\nbad header\r\n\r\n", 400),
            (
                "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
                411,
            ),
        ] {
            assert_eq!(status_of(raw.as_bytes()), status, "{raw:?}");
        }
        assert_eq!(status_of(b"POST /a HTTP/1.1\r\nX: \xff\r\n\r\n"), 400);
        // Truncated mid-body: the in-memory source ends like a closed connection.
        assert_eq!(
            status_of(b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}"),
            400
        );
    }

    #[test]
    fn hs_limits_are_exact() {
        let head = |extra: usize| {
            let mut h = b"POST /a HTTP/1.1\r\nX: ".to_vec();
            h.resize(h.len() + extra, b'y');
            h.extend_from_slice(b"\r\n\r\n");
            h
        };
        // A head of exactly the limit passes, one byte more does not.
        let fixed = head(0).len();
        let ok = head(MAX_HEADER_BYTES - fixed);
        assert_eq!(ok.len(), MAX_HEADER_BYTES);
        assert!(input(&ok).read_request(T, T, || {}).unwrap().is_some());
        assert_eq!(status_of(&head(MAX_HEADER_BYTES - fixed + 1)), 431);
        // A head that never ends is cut at the limit, not read forever.
        let mut endless = b"POST /a HTTP/1.1\r\nX: ".to_vec();
        endless.resize(4 * MAX_HEADER_BYTES, b'y');
        assert_eq!(status_of(&endless), 431);
        let many = |n: usize| {
            let mut h = "POST /a HTTP/1.1\r\n".to_string();
            for i in 0..n {
                h.push_str(&format!("X-{i}: v\r\n"));
            }
            h.push_str("\r\n");
            h
        };
        assert!(parse(&many(MAX_HEADERS)).unwrap().is_some());
        assert_eq!(status_of(many(MAX_HEADERS + 1).as_bytes()), 431);
        let body = |n: usize| format!("POST /a HTTP/1.1\r\nContent-Length: {n}\r\n\r\n");
        let mut full = body(MAX_BODY_BYTES).into_bytes();
        full.resize(full.len() + MAX_BODY_BYTES, b' ');
        assert_eq!(
            input(&full)
                .read_request(T, T, || {})
                .unwrap()
                .unwrap()
                .body
                .len(),
            MAX_BODY_BYTES
        );
        assert_eq!(status_of(body(MAX_BODY_BYTES + 1).as_bytes()), 413);
    }

    /// A source that hands out one byte per read, like a client trickling its request.
    struct Trickle(Cursor<Vec<u8>>);

    impl Read for Trickle {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            let n = b.len().min(1);
            self.0.read(&mut b[..n])
        }
    }

    impl Source for Trickle {
        fn set_read_timeout(&mut self, _: Option<Duration>) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn hs_byte_by_byte_requests_parse_in_linear_time() {
        let mut raw = b"POST /NetworkDriver.Join HTTP/1.1\r\nContent-Length: 2\r\n".to_vec();
        for i in 0..MAX_HEADERS - 1 {
            raw.extend_from_slice(format!("X-{i}: {}\r\n", "v".repeat(900)).as_bytes());
        }
        raw.extend_from_slice(b"\r\n{}");
        assert!(raw.len() < MAX_HEADER_BYTES && raw.len() > MAX_HEADER_BYTES / 2);
        let t = Instant::now();
        let mut input = Input::new(Trickle(Cursor::new(raw)));
        let r = input
            .read_request(T, Duration::from_secs(60), || {})
            .unwrap()
            .unwrap();
        assert_eq!(r.body, b"{}");
        // ~58 000 reads; re-parsing the head after each would take ~58 000 parses of up to 58 KB.
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    #[test]
    fn response_is_json_with_length() {
        let mut out = Vec::new();
        let r = Response::json(500, &serde_json::json!({"Err": "x"}));
        write_response(&mut out, &r, false).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 500 Internal Server Error\r\n"));
        assert!(s.contains("Content-Length: 11\r\n"));
        assert!(s.ends_with("\r\n\r\n{\"Err\":\"x\"}"));
        let e = Response::error(413, "too big");
        assert_eq!(e.body, br#"{"Err":"cnm-shim: too big"}"#);
    }
}
